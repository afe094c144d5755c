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
import * as os from "node:os";
import * as path from "node:path";
import { isMainThread } from "node:worker_threads";
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

  /** One source per location, kept open: a CSC transpose is paid once per file, not per unit. */
  private readonly matrices = new Map<string, MatrixSource & { close?(): void }>();

  matrix(location: string): MatrixSource {
    let m = this.matrices.get(location);
    if (!m) {
      m = this.openMatrix(location);
      this.matrices.set(location, m);
    }
    return m;
  }

  private openMatrix(location: string): MatrixSource & { close?(): void } {
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
    for (const m of this.matrices.values()) m.close?.();
    this.matrices.clear();
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
 * CSC stores genes as the major axis, so a row block needs a transpose. A matrix whose transpose
 * fits in GM_CSC_MAX_BYTES (default 1 GiB, 12 bytes per non-zero) is transposed once in memory.
 * A larger one is transposed through the disk in one streaming pass: entries are appended to one
 * spill file per range of rows (under GM_TMPDIR or the OS temp folder, removed on close), and a
 * row block loads only the range it needs — memory stays bounded whatever the matrix size.
 */
class CscMatrix extends SparseMatrix {
  readonly layout = "csc";
  /** Rows [rowStart, rowEnd) transposed to CSR (the whole matrix, or the current spill range). */
  private loaded?: { rowStart: number; rowEnd: number; indptr: Float64Array; indices: Int32Array; data: Float32Array | Float64Array };
  private spill?: { dir: string; rowsPerRange: number; counts: Float64Array };

  private get limit(): number {
    return Number(process.env.GM_CSC_MAX_BYTES ?? 1024 ** 3);
  }

  /** The first stored values (a transpose just to sample would read the whole matrix). */
  sampleValues(max: number): Float32Array | Float64Array {
    const n = Math.min(max, this.nnz());
    if (n === 0) return new Float32Array(0);
    const raw = this.data.slice([[0, n]]);
    return raw instanceof Float32Array || raw instanceof Float64Array ? raw : toFloat64(raw);
  }

  private nnz(): number {
    return (this.data.shape ?? [0])[0];
  }

  private checkRow(r: number): void {
    if (r < 0 || r >= this.nCells || !Number.isInteger(r)) throw inputError(this.path, `${this.location}/indices holds row ${r} outside [0, ${this.nCells}); the matrix is corrupt`);
  }

  /** Calls fn(rowIdx, values, colOf) over the matrix in chunks of at most `chunk` entries, in column order. */
  private scan(chunk: number, fn: (rows: Int32Array, vals: Float32Array | Float64Array, cols: Int32Array) => void): void {
    const colPtr = toFloat64(this.indptr.value);
    const nnz = this.nnz();
    let g = 0;
    for (let a = 0; a < nnz; a += chunk) {
      const b = Math.min(nnz, a + chunk);
      const rows = toInt32(this.indices.slice([[a, b]]));
      const raw = this.data.slice([[a, b]]);
      const vals = raw instanceof Float32Array || raw instanceof Float64Array ? raw : toFloat64(raw);
      const cols = new Int32Array(b - a);
      for (let k = a; k < b; k++) {
        while (g < this.nGenes && colPtr[g + 1] <= k) g++;
        cols[k - a] = g;
      }
      fn(rows, vals, cols);
    }
  }

  /** CSR of rows [r0, r1) from entries (rows, cols, vals) given in column order. */
  private toCsr(r0: number, r1: number, rows: Int32Array, cols: Int32Array, vals: Float32Array | Float64Array, f64: boolean) {
    const n = r1 - r0;
    const indptr = new Float64Array(n + 1);
    for (let i = 0; i < rows.length; i++) indptr[rows[i] - r0 + 1]++;
    for (let r = 0; r < n; r++) indptr[r + 1] += indptr[r];
    const fill = indptr.slice(0, n);
    const indices = new Int32Array(rows.length);
    const data = f64 ? new Float64Array(rows.length) : new Float32Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      const p = fill[rows[i] - r0]++;
      indices[p] = cols[i];
      data[p] = vals[i];
    }
    return { rowStart: r0, rowEnd: r1, indptr, indices, data };
  }

  private transposeInMemory() {
    const nnz = this.nnz();
    const rows = new Int32Array(nnz);
    const cols = new Int32Array(nnz);
    let vals: Float32Array | Float64Array | undefined;
    let at = 0;
    this.scan(1 << 22, (r, v, c) => {
      for (let i = 0; i < r.length; i++) this.checkRow(r[i]);
      vals ??= v instanceof Float64Array ? new Float64Array(nnz) : new Float32Array(nnz);
      rows.set(r, at);
      cols.set(c, at);
      vals.set(v, at);
      at += r.length;
    });
    this.loaded = this.toCsr(0, this.nCells, rows, cols, vals ?? new Float32Array(0), vals instanceof Float64Array);
  }

  /** One pass over the matrix, appending (row, col, value) records to one file per row range. */
  private spillToDisk() {
    const nnz = this.nnz();
    const entriesPerRange = Math.max(1, Math.floor(this.limit / 24));
    const rowsPerRange = Math.max(1, Math.floor((this.nCells * entriesPerRange) / Math.max(1, nnz)));
    const ranges = Math.ceil(this.nCells / rowsPerRange);
    const dir = fs.mkdtempSync(path.join(spillRoot(), `gm-csc-${process.pid}-`));
    registerTempDir(dir);
    const BUF = 8192;
    const bufRow = Array.from({ length: ranges }, () => new Int32Array(BUF));
    const bufCol = Array.from({ length: ranges }, () => new Int32Array(BUF));
    const bufVal = Array.from({ length: ranges }, () => new Float64Array(BUF));
    const fill = new Int32Array(ranges);
    const counts = new Float64Array(ranges);
    const fds = Array.from({ length: ranges }, (_, i) => fs.openSync(path.join(dir, `r${i}.bin`), "w"));
    const flush = (i: number) => {
      const n = fill[i];
      if (n === 0) return;
      // record layout: int32 row, int32 col, float64 value (16 bytes)
      const rec = Buffer.alloc(16 * n);
      for (let k = 0; k < n; k++) {
        rec.writeInt32LE(bufRow[i][k], 16 * k);
        rec.writeInt32LE(bufCol[i][k], 16 * k + 4);
        rec.writeDoubleLE(bufVal[i][k], 16 * k + 8);
      }
      fs.writeSync(fds[i], rec);
      counts[i] += n;
      fill[i] = 0;
    };
    try {
      let f64 = false;
      this.scan(1 << 22, (rows, vals, cols) => {
        f64 = vals instanceof Float64Array;
        for (let k = 0; k < rows.length; k++) {
          const r = rows[k];
          this.checkRow(r);
          const i = Math.floor(r / rowsPerRange);
          const p = fill[i]++;
          bufRow[i][p] = r;
          bufCol[i][p] = cols[k];
          bufVal[i][p] = vals[k];
          if (p + 1 === BUF) flush(i);
        }
      });
      for (let i = 0; i < ranges; i++) flush(i);
      this.spillF64 = f64;
    } finally {
      for (const fd of fds) fs.closeSync(fd);
    }
    this.spill = { dir, rowsPerRange, counts };
  }

  private spillF64 = false;

  private loadRange(i: number) {
    const sp = this.spill!;
    const r0 = i * sp.rowsPerRange;
    const r1 = Math.min(this.nCells, r0 + sp.rowsPerRange);
    const n = sp.counts[i];
    const bytes = fs.readFileSync(path.join(sp.dir, `r${i}.bin`));
    const rows = new Int32Array(n);
    const cols = new Int32Array(n);
    const vals = this.spillF64 ? new Float64Array(n) : new Float32Array(n);
    for (let k = 0; k < n; k++) {
      rows[k] = bytes.readInt32LE(16 * k);
      cols[k] = bytes.readInt32LE(16 * k + 4);
      vals[k] = bytes.readDoubleLE(16 * k + 8);
    }
    this.loaded = this.toCsr(r0, r1, rows, cols, vals, this.spillF64);
  }

  /** Rows [start, end) from the loaded CSR (which must cover them). */
  private slice(start: number, end: number) {
    const L = this.loaded!;
    const a = L.indptr[start - L.rowStart];
    const b = L.indptr[end - L.rowStart];
    const indptr = new Int32Array(end - start + 1);
    for (let i = 0; i <= end - start; i++) indptr[i] = L.indptr[start - L.rowStart + i] - a;
    return { indptr, indices: L.indices.slice(a, b), data: L.data.slice(a, b) };
  }

  readBlock(start: number, end: number): CsrBlock {
    try {
      if (!this.loaded && !this.spill) {
        if (this.nnz() * 12 <= this.limit) this.transposeInMemory();
        else this.spillToDisk();
      }
      if (!this.spill) return { rowStart: start, nRows: end - start, ...this.slice(start, end) };
      // a block may span several spill ranges
      const parts: { indptr: Int32Array; indices: Int32Array; data: Float32Array | Float64Array }[] = [];
      for (let r = start; r < end; ) {
        const i = Math.floor(r / this.spill.rowsPerRange);
        if (!this.loaded || this.loaded.rowStart !== i * this.spill.rowsPerRange) this.loadRange(i);
        const stop = Math.min(end, this.loaded!.rowEnd);
        parts.push(this.slice(r, stop));
        r = stop;
      }
      if (parts.length === 1) return { rowStart: start, nRows: end - start, ...parts[0] };
      const nnz = parts.reduce((x, p) => x + p.indices.length, 0);
      const indptr = new Int32Array(end - start + 1);
      const indices = new Int32Array(nnz);
      const data = this.spillF64 ? new Float64Array(nnz) : new Float32Array(nnz);
      let row = 0;
      let at = 0;
      for (const p of parts) {
        for (let i = 1; i < p.indptr.length; i++) indptr[row + i] = p.indptr[i] + at;
        row += p.indptr.length - 1;
        indices.set(p.indices, at);
        data.set(p.data, at);
        at += p.indices.length;
      }
      return { rowStart: start, nRows: end - start, indptr, indices, data };
    } catch (e) {
      if ((e as Error).name === "GmError") throw e;
      throw hdf5Failure(this.path, `cannot read ${this.location}`, e);
    }
  }

  close(): void {
    if (this.spill) fs.rmSync(this.spill.dir, { recursive: true, force: true });
    this.spill = undefined;
    this.loaded = undefined;
  }
}

const spillRoot = () => process.env.GM_TMPDIR ?? os.tmpdir();
const tempDirs = new Set<string>();
let tempHook = false;
/**
 * Spill folders are removed when their matrix is closed, else when the thread exits. Worker threads
 * may be terminated without running exit handlers, so the main thread also removes, when it exits,
 * every spill folder of this process (named gm-csc-<pid>-*).
 */
function registerTempDir(dir: string): void {
  tempDirs.add(dir);
  if (!tempHook) {
    tempHook = true;
    process.once("exit", () => {
      for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
    });
  }
}
if (isMainThread) {
  process.once("exit", () => {
    try {
      for (const n of fs.readdirSync(spillRoot())) if (n.startsWith(`gm-csc-${process.pid}-`)) fs.rmSync(path.join(spillRoot(), n), { recursive: true, force: true });
    } catch {
      /* nothing to clean */
    }
  });
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
