/**
 * Per-cell matrices (`obsm`, e.g. embeddings) in h5ad files: added to a copy of an existing file, read
 * back, or written as a small AnnData file of their own.
 *
 * On-disk conventions, as anndata writes them (checked against anndata's `_io/h5ad.py` and
 * `_io/specs/registry.py`, and against the files under shared/data):
 * - anndata >= 0.8 (root attrs encoding-type "anndata"): `obsm` is a group with encoding-type "dict" /
 *   encoding-version "0.1.0"; a dense entry is a 2-d dataset (n_obs x k) with encoding-type "array" /
 *   encoding-version "0.2.0" (e.g. X_pca in pbmc68k_reduced). Reading dispatches on those attributes.
 * - anndata 0.7 (no root attributes): `obsm` is a plain group and its datasets carry no attributes
 *   (e.g. protein_expression in the scvi-tools PBMC files); current anndata reads attribute-less
 *   groups and datasets as dict and array, so a legacy file keeps its own convention here.
 * - X may be absent: anndata's writer skips `None` elements (`write_elem` returns at once) and its
 *   reader builds `AnnData(**{k: ... for k in f.keys()})`, so a file without X loads with X = None.
 *
 * h5wasm 0.10.3 cannot delete or rename HDF5 links (no H5Ldelete/H5Lmove binding), so an existing
 * obsm entry can only be replaced in place: same shape, floating-point dtype, values overwritten. A
 * different shape is refused with a message that says so.
 *
 * Every write goes through a temporary file next to the output, fsynced and renamed over it; the
 * temporary is removed on any error, so the output is either complete or untouched.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { inputError, tempNameFor, usageError } from "@gm/core";
import { attrString, h5ready, h5wasm, isDataset, isGroup, toFloat64, type H5Dataset, type H5File, type H5Group } from "./h5.js";
import { checkHdf5File, openH5ad } from "./read.js";
import { H5adWriter, type H5adWriteColumn } from "./write.js";

/** One per-cell matrix: `data` is row-major, nRows x nCols with nRows = data.length / nCols. */
export interface ObsmEntry {
  key: string;
  data: Float32Array;
  nCols: number;
}

export interface ObsmMatrix {
  data: Float32Array;
  nRows: number;
  nCols: number;
  /** The dataset's type on disk ("float32", "float64", "int64", ...); data is always float32. */
  dtype: string;
}

/** Values written (and read) per HDF5 call: bounds the copy h5wasm makes inside its heap. */
const BLOCK_VALUES = 1 << 22;
/** Target chunk size in values (1 MiB of float32), whole rows per chunk. */
const CHUNK_VALUES = 1 << 18;

function checkKey(key: string, what: string): void {
  if (typeof key !== "string" || key.length === 0 || key.includes("/") || key === "." || key === "..") {
    throw usageError(`${what} ${JSON.stringify(key)} is not a valid name (non-empty, no '/')`);
  }
}

/** Validate entries against the row count; returns nothing, throws a one-line GmError. */
function checkEntries(file: string, entries: readonly ObsmEntry[], nRows: number): void {
  const seen = new Set<string>();
  for (const e of entries) {
    checkKey(e.key, "obsm key");
    if (seen.has(e.key)) throw usageError(`obsm key '${e.key}' is given twice`);
    seen.add(e.key);
    if (!(e.data instanceof Float32Array)) throw usageError(`obsm '${e.key}': data must be a Float32Array`);
    if (!Number.isInteger(e.nCols) || e.nCols < 1) throw usageError(`obsm '${e.key}': nCols must be a positive integer (got ${e.nCols})`);
    if (e.data.length % e.nCols !== 0) throw usageError(`obsm '${e.key}': ${e.data.length} values are not a whole number of rows of ${e.nCols}`);
    const rows = e.data.length / e.nCols;
    if (rows !== nRows) throw inputError(file, `obsm '${e.key}' has ${rows} rows but the file has ${nRows} cells (n_obs); one row per cell is needed`);
  }
}

function setEncoding(o: H5Group | H5Dataset, type: string, version: string): void {
  for (const [name, value] of [
    ["encoding-type", type],
    ["encoding-version", version],
  ] as const) {
    if (attrString(o, name) === value) continue;
    if (o.attrs[name]) o.delete_attribute(name);
    o.create_attribute(name, value, null, "S");
  }
}

/** HDF5 float/integer dataset type as a numpy-style name; undefined for other classes. */
function numericDtype(ds: H5Dataset): string | undefined {
  const md = ds.metadata as { type?: number; size?: number; signed?: boolean };
  if (md.type === 1) return `float${8 * (md.size ?? 0)}`;
  if (md.type === 0) return `${md.signed === false ? "uint" : "int"}${8 * (md.size ?? 0)}`;
  return undefined;
}

/** Write `data` (nRows x nCols, row-major) into a 2-d dataset in row blocks, converting to float64 when the dataset is float64. */
function writeRows(ds: H5Dataset, data: Float32Array, nRows: number, nCols: number, f64: boolean): void {
  const step = Math.max(1, Math.floor(BLOCK_VALUES / nCols));
  for (let a = 0; a < nRows; a += step) {
    const b = Math.min(nRows, a + step);
    const part = data.subarray(a * nCols, b * nCols);
    ds.write_slice([[a, b], []], f64 ? Float64Array.from(part) : part);
  }
}

/**
 * Create `group/name` as a chunked 2-d float32 dataset and fill it block by block. It is created
 * empty and resized once (h5wasm needs the data with the shape otherwise, i.e. the whole matrix in its
 * heap); maxshape is the final shape, so the result looks like an h5py-written fixed-size dataset.
 */
function createMatrix(group: H5Group, name: string, data: Float32Array, nRows: number, nCols: number): H5Dataset {
  const chunkRows = Math.max(1, Math.min(Math.max(nRows, 1), Math.floor(CHUNK_VALUES / nCols)));
  const ds = group.create_dataset({
    name,
    data: new Float32Array(0),
    shape: [0, nCols],
    maxshape: [nRows > 0 ? nRows : null, nCols],
    chunks: [chunkRows, nCols],
    dtype: "<f",
  });
  if (nRows > 0) {
    ds.resize([nRows, nCols]);
    writeRows(ds, data, nRows, nCols, false);
  }
  return ds;
}

/** fsync a closed file by name (h5wasm closes its own descriptor without syncing). */
function fsyncFile(file: string): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Best effort: make the rename durable too. Some file systems refuse fsync on a directory. */
function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch {
    /* not supported here; the data itself is synced */
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

export interface AddObsmResult {
  output: string;
  nObs: number;
  /** Keys written as new datasets. */
  added: string[];
  /** Keys that existed and were overwritten in place. */
  replaced: string[];
  /** Whether the input uses the anndata >= 0.8 encoding (else 0.7: no encoding attributes added). */
  modernEncoding: boolean;
}

/**
 * Write `output` = `input` with `obsm/<key>` set for each entry (n_obs x nCols float32). Everything
 * else of the input is kept byte for byte: the file is copied, then HDF5 appends the new objects.
 * `output` may equal `input` (the replacement is still atomic). An existing key is overwritten in
 * place when it has the same shape and a float dtype (float64 stays float64); otherwise refused.
 */
export async function addObsmToH5ad(input: string, output: string, entries: readonly ObsmEntry[]): Promise<AddObsmResult> {
  if (entries.length === 0) throw usageError("addObsmToH5ad needs at least one obsm entry");
  // Opening through the reader validates the file (HDF5 signature, truncation, AnnData layout) with
  // its precise messages, and gives n_obs.
  const reader = await openH5ad(input);
  const nObs = reader.nCells;
  reader.close();
  checkEntries(input, entries, nObs);

  const out = path.resolve(output);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const tmp = tempNameFor(out);
  let f: H5File | undefined;
  try {
    // A reflink where the file system supports it, a plain copy otherwise.
    fs.copyFileSync(input, tmp, fs.constants.COPYFILE_FICLONE);
    await h5ready();
    // Low bound "earliest": new objects use the oldest encodings (v1 headers, v1 B-tree chunk
    // index), like h5py by default, so the file stays readable by whatever read the input.
    f = new h5wasm.File(tmp, "a", { libver: ["earliest", "latest"] });
    if (!f.file_id || f.file_id < 0n) throw inputError(input, "cannot open the copy for writing");
    const modern = attrString(f, "encoding-type") === "anndata";
    let obsm: H5Group;
    if (f.keys().includes("obsm")) {
      const el = f.get("obsm");
      if (!isGroup(el)) throw inputError(input, "obsm is not an HDF5 group (pre-0.7 AnnData layout); re-save the file with anndata >= 0.8");
      obsm = el;
    } else {
      obsm = f.create_group("obsm");
      if (modern) setEncoding(obsm, "dict", "0.1.0");
    }
    const added: string[] = [];
    const replaced: string[] = [];
    for (const e of entries) {
      let ds: H5Dataset;
      if (obsm.keys().includes(e.key)) {
        const old = obsm.get(e.key);
        const shape = isDataset(old) ? (old.shape ?? []) : [];
        const dtype = isDataset(old) ? numericDtype(old) : undefined;
        if (!isDataset(old) || shape.length !== 2 || shape[0] !== nObs || shape[1] !== e.nCols || (dtype !== "float32" && dtype !== "float64")) {
          const what = isDataset(old) ? `a ${shape.join(" x ")} ${dtype ?? "non-numeric"} dataset` : "a group";
          throw inputError(
            input,
            `obsm/${e.key} already exists as ${what}; it can only be replaced by a float array of the same shape (${nObs} x ${e.nCols}) because HDF5 objects cannot be deleted here — use another key, or delete it first (h5py: del f["obsm/${e.key}"])`,
          );
        }
        writeRows(old, e.data, nObs, e.nCols, dtype === "float64");
        ds = old;
        replaced.push(e.key);
      } else {
        ds = createMatrix(obsm, e.key, e.data, nObs, e.nCols);
        added.push(e.key);
      }
      if (modern) setEncoding(ds, "array", "0.2.0");
    }
    f.close();
    f = undefined;
    fsyncFile(tmp);
    fs.renameSync(tmp, out);
    fsyncDir(path.dirname(out));
    return { output: out, nObs, added, replaced, modernEncoding: modern };
  } catch (e) {
    if (f) {
      try {
        f.close();
      } catch {
        /* already broken */
      }
    }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * Read `obsm/<key>` of an h5ad file as float32 (float32/float64 datasets, and integer ones such as
 * protein counts), in row blocks. A missing key is a GmError listing the keys there are.
 */
export async function readObsm(file: string, key: string): Promise<ObsmMatrix> {
  await h5ready();
  checkHdf5File(file);
  let f: H5File;
  try {
    f = new h5wasm.File(file, "r");
  } catch (e) {
    throw inputError(file, `cannot open HDF5 file: ${(e as Error).message}`);
  }
  try {
    const obsm = f.keys().includes("obsm") ? f.get("obsm") : null;
    const keys = isGroup(obsm) ? obsm.keys() : [];
    if (!isGroup(obsm) || !keys.includes(key)) throw inputError(file, `has no obsm '${key}' (available: ${keys.join(", ") || "none"})`);
    const el = obsm.get(key);
    if (!isDataset(el)) {
      const enc = isGroup(el) ? attrString(el, "encoding-type") : undefined;
      throw inputError(file, `obsm/${key} is ${enc ? `a ${enc}` : "not a dense array"}; only dense numeric arrays are read`);
    }
    const dtype = numericDtype(el);
    if (!dtype) throw inputError(file, `obsm/${key} is not numeric; only dense numeric arrays are read`);
    const shape = el.shape ?? [];
    if (shape.length !== 1 && shape.length !== 2) throw inputError(file, `obsm/${key} has ${shape.length} dimensions; expected a 2-d array`);
    const nRows = shape[0];
    const nCols = shape.length === 2 ? shape[1] : 1;
    const data = new Float32Array(nRows * nCols);
    const step = Math.max(1, Math.floor(BLOCK_VALUES / Math.max(1, nCols)));
    for (let a = 0; a < nRows && nCols > 0; a += step) {
      const b = Math.min(nRows, a + step);
      const v = el.slice(shape.length === 2 ? [[a, b], []] : [[a, b]]);
      data.set(v instanceof Float32Array || v instanceof Float64Array ? v : toFloat64(v), a * nCols);
    }
    return { data, nRows, nCols, dtype };
  } finally {
    f.close();
  }
}

export interface EmbeddingH5adContent {
  /** obs index (cell ids), one per row. */
  obsNames: string[];
  /** obs columns, one value per row, null = missing. Written as categoricals (see writeEmbeddingH5ad). */
  obs?: Record<string, (string | null)[]>;
  obsm: readonly ObsmEntry[];
}

export interface EmbeddingH5adOptions {
  /**
   * Also write X as an empty (n_obs x 0) float32 CSR matrix, for tools that insist on X. Default
   * false: anndata itself omits X when it is None and reads such files with X = None.
   */
  emptyX?: boolean;
}

/**
 * The obs column as anndata's write_h5ad would store it: `strings_to_categoricals` turns a string
 * column into a categorical (categories sorted, as pandas does) when it has fewer distinct values than
 * rows; a column with missing values is a categorical too, the only string encoding of anndata 0.8-0.10
 * that can mark a missing value (code -1).
 */
function obsColumn(values: (string | null)[]): H5adWriteColumn {
  const distinct = new Set<string>();
  let missing = false;
  for (const v of values) {
    if (v === null) missing = true;
    else distinct.add(v);
  }
  if (!missing && distinct.size === values.length) return { kind: "string", values: values as string[] };
  const categories = [...distinct].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const code = new Map(categories.map((c, i) => [c, i]));
  return { kind: "categorical", codes: Int32Array.from(values, (v) => (v === null ? -1 : code.get(v)!)), categories };
}

/**
 * Write a stand-alone AnnData (>= 0.8 encoding) holding only cells: obs (index + string columns),
 * an empty var, the obsm matrices, and the empty dict groups anndata writes (layers, obsp, varm, varp,
 * uns); X is omitted unless `emptyX`. For the combined embeddings of several inputs, whose genes differ.
 */
export async function writeEmbeddingH5ad(output: string, content: EmbeddingH5adContent, opts: EmbeddingH5adOptions = {}): Promise<{ output: string; nObs: number; obsm: string[] }> {
  const n = content.obsNames.length;
  for (let i = 0; i < n; i++) if (typeof content.obsNames[i] !== "string") throw usageError(`obsNames[${i}] is not a string`);
  const obs = Object.entries(content.obs ?? {});
  for (const [name, values] of obs) {
    checkKey(name, "obs column");
    if (name === "_index") throw usageError(`obs column '_index' is reserved for the obs index`);
    if (values.length !== n) throw usageError(`obs column '${name}' has ${values.length} values but there are ${n} obs names`);
  }
  checkEntries(output, content.obsm, n);

  const out = path.resolve(output);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const tmp = tempNameFor(out);
  let w: H5adWriter | undefined;
  try {
    w = await H5adWriter.create(tmp);
    const frame = w.beginDataFrame("obs", content.obsNames);
    for (const [name, values] of obs) frame.addColumn(name, obsColumn(values));
    frame.finish();
    w.writeDataFrame("var", { index: [], columns: new Map() });
    if (opts.emptyX) {
      const x = w.csr("X", { nCols: 0 });
      if (n > 0) x.appendRows(new Int32Array(n + 1), new Int32Array(0), new Float32Array(0), n);
      x.finish();
    }
    const obsm = w.writeDict("obsm");
    for (const e of content.obsm) setEncoding(createMatrix(obsm, e.key, e.data, n, e.nCols), "array", "0.2.0");
    for (const g of ["layers", "obsp", "varm", "varp", "uns"]) w.writeDict(g);
    w.close();
    w = undefined;
    fsyncFile(tmp);
    fs.renameSync(tmp, out);
    fsyncDir(path.dirname(out));
    return { output: out, nObs: n, obsm: content.obsm.map((e) => e.key) };
  } catch (e) {
    w?.abort();
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}
