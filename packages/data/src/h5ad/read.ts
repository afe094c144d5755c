/**
 * AnnData h5ad reading over h5wasm, streaming the count matrix in row blocks.
 *
 * Supported: the current encoding (anndata >= 0.8, every element tagged with encoding-type /
 * encoding-version), the anndata 0.7 layout (no root attributes, dataframe 0.1.0, categorical codes with
 * their categories in `__categories/<col>`), sparse groups tagged the h5sparse way (`h5sparse_format`),
 * CSR, CSC and dense matrices in `X`, `raw/X` and `layers/<name>`. Refused with a clear error: pre-0.7
 * files whose obs/var are HDF5 compound datasets, and files that are not HDF5 or are truncated.
 */
import * as fs from "node:fs";
import { inputError } from "@gm/core";
import type { CellFile, Column, CsrBlock, DataFrame, MatrixSource } from "../types.js";
import {
  attr,
  attrString,
  attrStrings,
  h5ready,
  h5wasm,
  isDataset,
  isGroup,
  takeHdf5Diagnostic,
  toFloat64,
  toInt32,
  toStrings,
  type H5Dataset,
  type H5File,
  type H5Group,
} from "./h5.js";

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * Check the HDF5 signature and the superblock's end-of-file address before handing the file to the
 * HDF5 library, so a non-HDF5 or truncated file gets a precise message.
 */
export function checkHdf5File(path: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw inputError(path, code === "ENOENT" ? "file not found; check the path" : `cannot access file (${code})`);
  }
  if (st.isDirectory()) throw inputError(path, "is a directory, expected an .h5ad/.h5 file");
  if (st.size === 0) throw inputError(path, "file is empty (0 bytes); re-download or re-export it");
  const fd = fs.openSync(path, "r");
  try {
    // The superblock may follow a user block of 0, 512, 1024, 2048, ... bytes.
    let base = -1;
    const sig = Buffer.alloc(8);
    for (let off = 0; off + 8 <= st.size; off = off === 0 ? 512 : off * 2) {
      fs.readSync(fd, sig, 0, 8, off);
      if (sig.equals(HDF5_SIGNATURE)) {
        base = off;
        break;
      }
      if (off > 1 << 24) break;
    }
    if (base < 0) throw inputError(path, "not an HDF5 file (no HDF5 signature); h5ad files are HDF5 — check the file type");
    const head = Buffer.alloc(128);
    const n = fs.readSync(fd, head, 0, 128, base);
    const version = head[8];
    let eofAddr: number | undefined;
    if (version === 0 || version === 1) {
      const sizeOfOffsets = head[13];
      const fixed = version === 0 ? 24 : 28;
      const eofPos = fixed + 2 * sizeOfOffsets;
      if (n >= eofPos + sizeOfOffsets && sizeOfOffsets === 8) eofAddr = Number(head.readBigUInt64LE(eofPos));
    } else if (version === 2 || version === 3) {
      const sizeOfOffsets = head[9];
      const eofPos = 12 + 2 * sizeOfOffsets;
      if (n >= eofPos + sizeOfOffsets && sizeOfOffsets === 8) eofAddr = Number(head.readBigUInt64LE(eofPos));
    }
    if (eofAddr !== undefined && eofAddr !== 0xffffffffffffffff && base + eofAddr > st.size) {
      throw inputError(path, `file is truncated (${st.size} of ${base + eofAddr} bytes); re-download or re-copy it`);
    }
  } finally {
    fs.closeSync(fd);
  }
}

function hdf5Failure(path: string, what: string, e: unknown): Error {
  const diag = takeHdf5Diagnostic();
  const detail = diag || (e instanceof Error ? e.message : String(e));
  return inputError(path, `${what}: ${detail} (the file may be corrupt; re-download it)`);
}

function encodingType(o: { attrs: Record<string, { value: unknown }> }): string | undefined {
  return attrString(o, "encoding-type");
}

function isH5pyBoolEnum(ds: H5Dataset): boolean {
  const md = ds.metadata as { enum_type?: { members?: Record<string, number> } };
  const m = md.enum_type?.members;
  return !!m && Object.keys(m).length === 2 && m.FALSE === 0 && m.TRUE === 1;
}

function isStringDataset(ds: H5Dataset): boolean {
  return (ds.metadata as { type?: number }).type === 3; // H5T_STRING
}

/** Read a whole or partial 1-d column dataset. */
function sliceColumn(ds: H5Dataset, start?: number, end?: number): unknown {
  if (start === undefined) return ds.value;
  return ds.slice([[start, end!]]);
}

/** Slice (or read whole) an int32 column, copying out of the WASM heap. */
function readCodes(ds: H5Dataset, start?: number, end?: number): Int32Array {
  return toInt32(sliceColumn(ds, start, end));
}

class H5adFile implements CellFile {
  readonly format = "h5ad" as const;
  readonly nCells: number;
  readonly var: DataFrame;
  private readonly obsGroup: H5Group;
  private readonly obsIndexName: string;
  private readonly obsColumnNames: string[];
  private readonly categoriesCache = new Map<string, string[]>();
  private rawVar?: DataFrame;

  constructor(
    readonly path: string,
    private readonly file: H5File,
  ) {
    const obs = file.get("obs");
    const varEl = file.get("var");
    if (isDataset(obs) || isDataset(varEl)) {
      throw inputError(
        path,
        "pre-0.7 AnnData layout (obs/var stored as HDF5 compound datasets) is not supported; re-save it with anndata >= 0.8 (anndata.read_h5ad(f).write_h5ad(f2))",
      );
    }
    if (!isGroup(obs) || !isGroup(varEl)) throw inputError(path, "not an AnnData h5ad file (no obs/var groups)");
    this.obsGroup = obs;
    this.obsIndexName = attrString(obs, "_index") ?? "_index";
    const idx = obs.get(this.obsIndexName);
    if (!isDataset(idx)) throw inputError(path, `obs index dataset '${this.obsIndexName}' is missing`);
    this.nCells = (idx.shape ?? [0])[0];
    this.obsColumnNames = this.dataframeColumnNames(obs);
    this.var = this.readDataFrame(varEl, "var");
  }

  private dataframeColumnNames(g: H5Group): string[] {
    const order = attrStrings(g, "column-order") ?? [];
    const index = attrString(g, "_index") ?? "_index";
    const names = order.filter((c) => c.length > 0);
    for (const k of g.keys()) {
      if (k !== index && k !== "__categories" && !names.includes(k)) names.push(k);
    }
    return names;
  }

  private categoriesOf(g: H5Group, name: string, where: string): string[] | undefined {
    const key = `${where}/${name}`;
    const cached = this.categoriesCache.get(key);
    if (cached) return cached;
    const el = g.get(name);
    let cats: string[] | undefined;
    if (isGroup(el) && encodingType(el) === "categorical") {
      const c = el.get("categories");
      if (isDataset(c)) cats = toStrings(c.value);
    } else if (isDataset(el)) {
      // anndata 0.7: codes dataset with a `categories` attribute (an object reference) and the values in __categories/<col>
      const legacy = g.get("__categories");
      if (isGroup(legacy) && legacy.keys().includes(name)) {
        const c = legacy.get(name);
        if (isDataset(c)) cats = toStrings(c.value);
      }
    }
    if (cats) this.categoriesCache.set(key, cats);
    return cats;
  }

  private readColumn(g: H5Group, name: string, where: string, start?: number, end?: number): Column {
    const el = g.get(name);
    const fieldPath = `${where}/${name}`;
    try {
      if (isGroup(el)) {
        const enc = encodingType(el);
        if (enc === "categorical") {
          const codesDs = el.get("codes");
          if (!isDataset(codesDs)) throw inputError(this.path, `${fieldPath}: categorical without codes`);
          return { kind: "categorical", codes: readCodes(codesDs, start, end), categories: this.categoriesOf(g, name, where) ?? [] };
        }
        if (enc === "nullable-integer" || enc === "nullable-boolean" || enc === "nullable-string-array") {
          const values = el.get("values");
          const mask = el.get("mask");
          if (!isDataset(values) || !isDataset(mask)) throw inputError(this.path, `${fieldPath}: nullable column without values/mask`);
          const m = Uint8Array.from(sliceColumn(mask, start, end) as ArrayLike<number>);
          if (enc === "nullable-boolean") return { kind: "bool", values: Uint8Array.from(sliceColumn(values, start, end) as ArrayLike<number>), mask: m };
          if (enc === "nullable-string-array") return { kind: "string", values: toStrings(sliceColumn(values, start, end)) };
          const v = toFloat64(sliceColumn(values, start, end));
          for (let i = 0; i < v.length; i++) if (m[i]) v[i] = NaN;
          return { kind: "number", values: v };
        }
        throw inputError(this.path, `${fieldPath}: unsupported column encoding '${enc ?? "none"}'`);
      }
      if (!isDataset(el)) throw inputError(this.path, `${fieldPath}: column not found`);
      const legacyCats = this.categoriesOf(g, name, where);
      if (legacyCats) return { kind: "categorical", codes: readCodes(el, start, end), categories: legacyCats };
      if (isStringDataset(el)) return { kind: "string", values: toStrings(sliceColumn(el, start, end)) };
      if (isH5pyBoolEnum(el)) return { kind: "bool", values: Uint8Array.from(sliceColumn(el, start, end) as ArrayLike<number>) };
      const md = el.metadata as { type?: number; size?: number };
      if (md.type === 0 /* integer */ || md.type === 1 /* float */) return { kind: "number", values: toFloat64(sliceColumn(el, start, end)) };
      throw inputError(this.path, `${fieldPath}: unsupported column type`);
    } catch (e) {
      if ((e as Error).name === "GmError") throw e;
      throw hdf5Failure(this.path, `cannot read ${fieldPath}`, e);
    }
  }

  private readDataFrame(g: H5Group, where: string, start?: number, end?: number, only?: string[], withIndex = true): DataFrame {
    const indexName = attrString(g, "_index") ?? "_index";
    const idx = g.get(indexName);
    if (!isDataset(idx)) throw inputError(this.path, `${where}: index dataset '${indexName}' is missing`);
    // Variable-length strings are slow to read; callers that only filter rows skip the index.
    const index = withIndex ? toStrings(sliceColumn(idx, start, end)) : [];
    const columns = new Map<string, Column>();
    for (const name of only ?? this.dataframeColumnNames(g)) {
      const el = g.get(name);
      if (el === null || el === undefined) throw inputError(this.path, `${where}/${name}: column not found (available: ${this.dataframeColumnNames(g).join(", ") || "none"})`);
      // Skip columns that are neither datasets nor known groups (e.g. nested dataframes).
      columns.set(name, this.readColumn(g, name, where, start, end));
    }
    return { index, columns };
  }

  obsColumns(): string[] {
    return [...this.obsColumnNames];
  }

  readObs(columns: string[], start: number, end: number, withIndex = true): DataFrame {
    return this.readDataFrame(this.obsGroup, "obs", start, end, columns, withIndex);
  }

  matrixLocations(): string[] {
    const out: string[] = [];
    const x = this.file.get("X");
    if (x) out.push("X");
    const raw = this.file.get("raw");
    if (isGroup(raw) && raw.get("X")) out.push("raw/X");
    const layers = this.file.get("layers");
    if (isGroup(layers)) for (const k of layers.keys()) out.push(`layers/${k}`);
    return out;
  }

  varFor(location: string): DataFrame {
    if (location === "raw/X") {
      if (!this.rawVar) {
        const rv = this.file.get("raw/var");
        if (isDataset(rv)) throw inputError(this.path, "raw/var is an HDF5 compound dataset (pre-0.7 AnnData); re-save with anndata >= 0.8");
        this.rawVar = isGroup(rv) ? this.readDataFrame(rv, "raw/var") : this.var;
      }
      return this.rawVar;
    }
    return this.var;
  }

  matrix(location: string): MatrixSource {
    const el = this.file.get(location);
    if (!el) throw inputError(this.path, `matrix '${location}' not found (available: ${this.matrixLocations().join(", ") || "none"})`);
    const nGenes = this.varFor(location).index.length;
    if (isDataset(el)) {
      const shape = el.shape ?? [];
      if (shape.length !== 2) throw inputError(this.path, `${location}: expected a 2-d matrix, got shape [${shape.join(", ")}]`);
      if ((el.metadata as { type?: number }).type === 6) throw inputError(this.path, `${location}: compound-typed matrix (pre-0.7 AnnData) is not supported; re-save with anndata >= 0.8`);
      return new DenseMatrix(this.path, location, el, shape[0], shape[1]);
    }
    if (!isGroup(el)) throw inputError(this.path, `${location}: not a matrix`);
    const enc = encodingType(el) ?? (attrString(el, "h5sparse_format") ? `${attrString(el, "h5sparse_format")}_matrix` : undefined);
    const shapeAttr = (attr(el, "shape") ?? attr(el, "h5sparse_shape")) as number[] | undefined;
    if (enc !== "csr_matrix" && enc !== "csc_matrix") {
      throw inputError(this.path, `${location}: unsupported matrix encoding '${enc ?? "none"}' (expected csr_matrix, csc_matrix or a dense array)`);
    }
    if (!shapeAttr || shapeAttr.length !== 2) throw inputError(this.path, `${location}: sparse matrix without a shape attribute`);
    const [rows, cols] = shapeAttr.map(Number);
    if (rows !== this.nCells) throw inputError(this.path, `${location}: ${rows} rows but obs has ${this.nCells} cells`);
    if (cols !== nGenes) throw inputError(this.path, `${location}: ${cols} columns but its var table has ${nGenes} genes`);
    const data = el.get("data");
    const indices = el.get("indices");
    const indptr = el.get("indptr");
    if (!isDataset(data) || !isDataset(indices) || !isDataset(indptr)) throw inputError(this.path, `${location}: sparse matrix lacks data/indices/indptr`);
    if (enc === "csr_matrix") return new CsrMatrix(this.path, location, data, indices, indptr, rows, cols);
    return new CscMatrix(this.path, location, data, indices, indptr, rows, cols);
  }

  close(): void {
    this.file.close();
  }
}

class DenseMatrix implements MatrixSource {
  readonly layout = "dense";
  constructor(
    private readonly path: string,
    readonly location: string,
    private readonly ds: H5Dataset,
    readonly nCells: number,
    readonly nGenes: number,
  ) {}

  readBlock(start: number, end: number): CsrBlock {
    let values: Float32Array | Float64Array;
    try {
      const v = this.ds.slice([[start, end], []]);
      values = v instanceof Float32Array || v instanceof Float64Array ? v : toFloat64(v);
    } catch (e) {
      throw hdf5Failure(this.path, `cannot read ${this.location} rows ${start}-${end}`, e);
    }
    const nRows = end - start;
    const G = this.nGenes;
    let nnz = 0;
    for (let i = 0; i < values.length; i++) if (values[i] !== 0) nnz++;
    const indptr = new Int32Array(nRows + 1);
    const indices = new Int32Array(nnz);
    const data = values instanceof Float32Array ? new Float32Array(nnz) : new Float64Array(nnz);
    let k = 0;
    for (let r = 0; r < nRows; r++) {
      const base = r * G;
      for (let g = 0; g < G; g++) {
        const x = values[base + g];
        if (x !== 0) {
          indices[k] = g;
          data[k++] = x;
        }
      }
      indptr[r + 1] = k;
    }
    return { rowStart: start, nRows, indptr, indices, data };
  }
}

/** The three datasets of an AnnData sparse matrix group. */
abstract class SparseMatrix implements MatrixSource {
  abstract readonly layout: string;
  constructor(
    protected readonly path: string,
    readonly location: string,
    protected readonly data: H5Dataset,
    protected readonly indices: H5Dataset,
    protected readonly indptr: H5Dataset,
    readonly nCells: number,
    readonly nGenes: number,
  ) {}
  abstract readBlock(start: number, end: number): CsrBlock;
}

class CsrMatrix extends SparseMatrix {
  readonly layout = "csr";
  constructor(...args: ConstructorParameters<typeof SparseMatrix>) {
    super(...args);
    const { indptr, nCells, path, location } = this;
    const n = (indptr.shape ?? [0])[0];
    if (n !== nCells + 1) throw inputError(path, `${location}/indptr has ${n} entries, expected ${nCells + 1}`);
  }

  readBlock(start: number, end: number): CsrBlock {
    try {
      const ip = toFloat64(this.indptr.slice([[start, end + 1]]));
      const a = ip[0];
      const b = ip[ip.length - 1];
      const nRows = end - start;
      const indptr = new Int32Array(nRows + 1);
      for (let i = 0; i <= nRows; i++) {
        const v = ip[i] - a;
        if (!(v >= 0) || (i > 0 && v < indptr[i - 1])) throw inputError(this.path, `${this.location}/indptr is not non-decreasing at row ${start + i}; the matrix is corrupt`);
        indptr[i] = v;
      }
      const nnzTotal = (this.data.shape ?? [0])[0];
      if (b > nnzTotal) throw inputError(this.path, `${this.location}/indptr points past the end of data (${b} > ${nnzTotal}); the matrix is corrupt`);
      const indices = b > a ? toInt32(this.indices.slice([[a, b]])) : new Int32Array(0);
      const rawData = b > a ? this.data.slice([[a, b]]) : new Float32Array(0);
      const data = rawData instanceof Float32Array || rawData instanceof Float64Array ? rawData : toFloat64(rawData);
      for (let i = 0; i < indices.length; i++) {
        const g = indices[i];
        if (g < 0 || g >= this.nGenes) throw inputError(this.path, `${this.location}/indices holds column ${g} outside [0, ${this.nGenes}); the matrix is corrupt`);
      }
      return { rowStart: start, nRows, indptr, indices, data };
    } catch (e) {
      if ((e as Error).name === "GmError") throw e;
      throw hdf5Failure(this.path, `cannot read ${this.location} rows ${start}-${end}`, e);
    }
  }
}

/**
 * CSC stores genes as the major axis, so a row block needs a transpose. The whole matrix is transposed
 * once in memory, which is bounded by GM_CSC_MAX_BYTES (default 2 GiB, ~12 bytes per non-zero);
 * larger CSC inputs get a clear error asking for a CSR copy.
 */
class CscMatrix extends SparseMatrix {
  readonly layout = "csc";
  private csr?: { indptr: Float64Array; indices: Int32Array; data: Float32Array | Float64Array };

  private transpose() {
    const nnz = (this.data.shape ?? [0])[0];
    const limit = Number(process.env.GM_CSC_MAX_BYTES ?? 2 * 1024 ** 3);
    if (nnz * 12 > limit) {
      throw inputError(
        this.path,
        `${this.location} is a CSC matrix with ${nnz} non-zeros, too large to transpose in memory (limit GM_CSC_MAX_BYTES=${limit}); convert it to CSR first (adata.X = adata.X.tocsr())`,
      );
    }
    try {
      const colPtr = toFloat64(this.indptr.value);
      const rowIdx = nnz > 0 ? toInt32(this.indices.value) : new Int32Array(0);
      const raw = nnz > 0 ? this.data.value : new Float32Array(0);
      const vals = raw instanceof Float32Array || raw instanceof Float64Array ? raw : toFloat64(raw);
      const counts = new Float64Array(this.nCells + 1);
      for (let i = 0; i < nnz; i++) {
        const r = rowIdx[i];
        if (r < 0 || r >= this.nCells) throw inputError(this.path, `${this.location}/indices holds row ${r} outside [0, ${this.nCells}); the matrix is corrupt`);
        counts[r + 1]++;
      }
      for (let r = 0; r < this.nCells; r++) counts[r + 1] += counts[r];
      const fill = counts.slice(0, this.nCells);
      const indices = new Int32Array(nnz);
      const data = vals instanceof Float32Array ? new Float32Array(nnz) : new Float64Array(nnz);
      for (let g = 0; g < this.nGenes; g++) {
        for (let k = colPtr[g]; k < colPtr[g + 1]; k++) {
          const r = rowIdx[k];
          const pos = fill[r]++;
          indices[pos] = g;
          data[pos] = vals[k];
        }
      }
      this.csr = { indptr: counts, indices, data };
    } catch (e) {
      if ((e as Error).name === "GmError") throw e;
      throw hdf5Failure(this.path, `cannot read ${this.location}`, e);
    }
    return this.csr;
  }

  readBlock(start: number, end: number): CsrBlock {
    const csr = this.csr ?? this.transpose();
    const a = csr.indptr[start];
    const b = csr.indptr[end];
    const indptr = new Int32Array(end - start + 1);
    for (let i = 0; i <= end - start; i++) indptr[i] = csr.indptr[start + i] - a;
    return { rowStart: start, nRows: end - start, indptr, indices: csr.indices.slice(a, b), data: csr.data.slice(a, b) };
  }
}

/** Open an h5ad file for streaming reads. Errors are GmErrors naming the file and the problem. */
export async function openH5ad(path: string): Promise<CellFile> {
  await h5ready();
  checkHdf5File(path);
  let file: H5File;
  try {
    file = new h5wasm.File(path, "r");
    if (!file.file_id || file.file_id < 0n) throw new Error("open failed");
  } catch (e) {
    throw hdf5Failure(path, "cannot open HDF5 file", e);
  }
  try {
    return new H5adFile(path, file);
  } catch (e) {
    file.close();
    if ((e as Error).name === "GmError") throw e;
    throw hdf5Failure(path, "cannot read AnnData structure", e);
  }
}
