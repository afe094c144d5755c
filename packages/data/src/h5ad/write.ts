/**
 * Writing AnnData (.h5ad) files with h5wasm.
 *
 * Layout follows the anndata on-disk specification (https://anndata.readthedocs.io/en/latest/fileformat-prose.html)
 * as written by anndata >= 0.8 through h5py:
 * - root attrs encoding-type "anndata" / encoding-version "0.1.0";
 * - dataframes (obs, var): group "dataframe" "0.2.0" with attrs `_index` (name of the index dataset)
 *   and `column-order` (string array; an empty float64 array when there are no columns, as h5py writes
 *   an empty list); columns are "string-array" "0.2.0" (variable-length UTF-8), "categorical" "0.2.0"
 *   (group with `codes` int8/int16/int32 as small as fits, -1 = missing, `categories` string-array,
 *   bool attr `ordered`), "array" "0.2.0" (numeric and boolean), "nullable-boolean" "0.1.0";
 * - dict groups "dict" "0.1.0" (obsm, varm, obsp, varp, layers, uns); string scalars "string" "0.2.0";
 * - CSR matrices: group "csr_matrix" "0.1.0", attr `shape` int64 [rows, cols], datasets data
 *   (float32), indices (int32), indptr (int64), chunked and resizable (maxshape unlimited) and appended
 *   in row blocks, so a matrix of any size is written with bounded memory.
 * All attribute strings are scalar variable-length UTF-8 strings, string-array attributes are arrays of
 * them, as h5py writes Python `str` values.
 *
 * Files are created with libver bounds ["earliest", "v114"] (h5py's default lower bound: version-1
 * object headers, symbol-table groups, v1 B-tree chunk indexes), readable by HDF5 >= 1.8 and h5py.
 *
 * Booleans. h5py (hence anndata) stores numpy bool as an HDF5 ENUM {FALSE: 0, TRUE: 1} over int8.
 * h5wasm 0.10.3 cannot create enum types: `dtype_to_metadata` has no enum dtype,
 * `create_h5_datatype_from_metadata` (hdf5_util.cc) handles only STRING, INTEGER, FLOAT, REFERENCE
 * and COMPOUND ("data type not supported" otherwise), no H5T* creation function is exported from the
 * WASM module (EXPORTED_FUNCTIONS has none of H5Tenum_create/H5Tenum_insert), and committed datatypes
 * cannot be created either. Reading enums works (bool enums come back as int8 values with
 * `metadata.enum_type`). So with the default `bools: "enum"` this writer produces genuine h5py bools
 * by a byte-level patch: each bool dataset/attribute is created with a placeholder 1-byte COMPOUND
 * type {"__gm_h5ad_bool_enum_placeholder__": int8} (same storage size, same bytes per element), and
 * after the file is closed the placeholder's version-1 datatype message (92 bytes) is overwritten in
 * place with the version-1 ENUM message h5py writes for bool (38 bytes: base int8, members
 * "FALSE" = 0, "TRUE" = 1; byte-identical to h5py's), the rest zero. Version-1 object headers carry no
 * checksums, and libhdf5 decodes a datatype message from its start whatever trailing bytes the
 * message's allotted size has. The patch is then verified by reopening the file and checking every
 * placeholder reads back as the FALSE/TRUE enum; any mismatch throws. `bools: "int8"` writes plain
 * int8 0/1 "array" datasets (and int8 scalar attributes) instead - what h5wasm can write natively;
 * anndata then loads such columns as int8 rather than bool.
 */
import * as fs from "node:fs";
import h5wasm from "h5wasm/node";

type H5WFile = InstanceType<typeof h5wasm.File>;
type H5WGroup = InstanceType<typeof h5wasm.Group>;
type H5WDataset = InstanceType<typeof h5wasm.Dataset>;

let readyPromise: Promise<void> | undefined;
/** h5wasm must finish loading (once per thread) before files can be created. */
export function h5adWriterReady(): Promise<void> {
  if (!readyPromise) readyPromise = h5wasm.ready.then(() => undefined);
  return readyPromise;
}

export type NumericArray =
  | Float64Array
  | Float32Array
  | Int8Array
  | Int16Array
  | Int32Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

/** A dataframe column to write. The read-side `Column` (types.ts) is assignable to it. */
export type H5adWriteColumn =
  | { kind: "string"; values: string[] }
  /** codes index into categories; -1 = missing. */
  | { kind: "categorical"; codes: ArrayLike<number>; categories: string[]; ordered?: boolean }
  | { kind: "number"; values: NumericArray }
  /** values 0/1 (or booleans); with `mask` (1 = missing) it is written as anndata "nullable-boolean". */
  | { kind: "bool"; values: Uint8Array | Int8Array | boolean[]; mask?: Uint8Array };

export interface H5adWriteFrame {
  index: string[];
  /** Column name -> column, in the order to record in `column-order`. */
  columns: Map<string, H5adWriteColumn> | Iterable<[string, H5adWriteColumn]>;
  /** Name of the index dataset (default "_index", like anndata). */
  indexName?: string;
}

export interface H5adWriterOptions {
  /** "enum" (default): h5py/anndata bool (see the header comment); "int8": plain int8 0/1. */
  bools?: "enum" | "int8";
}

export interface H5adCsrOptions {
  /** Number of columns (genes). */
  nCols: number;
  /** gzip the data/indices/indptr chunks (true = level 4, or a level 1-9). Default off: fastest. */
  compression?: boolean | number;
  /** Elements per chunk of data/indices (default 262144 = 1 MiB of float32). */
  chunkElements?: number;
  /** Check every appended row: indices in [0, nCols) and strictly increasing (default true). */
  validate?: boolean;
}

/** The placeholder member name marking a to-be-enum bool datatype (see header comment). */
export const BOOL_PLACEHOLDER_NAME = "__gm_h5ad_bool_enum_placeholder__";
const PLACEHOLDER_DTYPE: [string, string][] = [[BOOL_PLACEHOLDER_NAME, "<b"]];

/** Version-1 COMPOUND datatype message h5wasm/libhdf5 writes for the placeholder under libver "earliest". */
function placeholderMessage(): Buffer {
  const name = Buffer.from(BOOL_PLACEHOLDER_NAME + "\0", "latin1");
  const namePadded = Math.ceil(name.length / 8) * 8;
  const msg = Buffer.alloc(8 + namePadded + 4 + 28 + 12);
  let p = 0;
  msg.set([0x16, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00], p); // v1 compound, 1 member, size 1
  p += 8;
  name.copy(msg, p);
  p += namePadded;
  p += 4 + 28; // byte offset 0, dimensionality 0, reserved, permutation, reserved, 4 dim sizes
  msg.set(INT8_TYPE, p);
  return msg;
}
/** Version-1 INTEGER datatype message: little-endian, signed, 1 byte, offset 0, precision 8. */
const INT8_TYPE = [0x10, 0x08, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00];
/** The version-1 ENUM message h5py writes for numpy bool (byte-identical to h5py output). */
function boolEnumMessage(): Buffer {
  return Buffer.concat([
    Buffer.from([0x18, 0x02, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00]), // v1 enum, 2 members, size 1
    Buffer.from(INT8_TYPE), // base type
    Buffer.from("FALSE\0\0\0TRUE\0\0\0\0", "latin1"), // names, NUL-terminated, padded to 8
    Buffer.from([0x00, 0x01]), // values
  ]);
}

type Placeholder = { path: string; attr?: string };

function joinPath(parent: string, name: string): string {
  if (!name || name.includes("/")) throw new Error(`invalid HDF5 object name ${JSON.stringify(name)}`);
  return parent === "/" ? `/${name}` : `${parent}/${name}`;
}

function normalize(path: string): string {
  const p = "/" + path.split("/").filter(Boolean).join("/");
  return p;
}

function splitPath(path: string): [string, string] {
  const p = normalize(path);
  const i = p.lastIndexOf("/");
  return [i <= 0 ? "/" : p.slice(0, i), p.slice(i + 1)];
}

function toInt8Bools(values: Uint8Array | Int8Array | boolean[]): Int8Array {
  const out = new Int8Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = values[i] ? 1 : 0;
  return out;
}

/**
 * An h5ad file being written. Create with `H5adWriter.create`, write the elements, then `close()`
 * (which also turns bool placeholders into h5py bools). On failure call `abort()`.
 */
export class H5adWriter {
  readonly path: string;
  readonly file: H5WFile;
  readonly bools: "enum" | "int8";
  private placeholders: Placeholder[] = [];
  private open = true;

  private constructor(path: string, file: H5WFile, bools: "enum" | "int8") {
    this.path = path;
    this.file = file;
    this.bools = bools;
  }

  /** Create (truncate) `path` and write the root AnnData attributes. */
  static async create(path: string, opts: H5adWriterOptions = {}): Promise<H5adWriter> {
    await h5adWriterReady();
    const file = new h5wasm.File(path, "w", { libver: ["earliest", "v114"] });
    const w = new H5adWriter(path, file, opts.bools ?? "enum");
    w.setEncoding("/", "anndata", "0.1.0");
    return w;
  }

  private obj(path: string): H5WGroup | H5WDataset {
    const o = this.file.get(normalize(path));
    if (!(o instanceof h5wasm.Group) && !(o instanceof h5wasm.Dataset)) throw new Error(`${this.path}: no HDF5 object at ${path}`);
    return o;
  }

  /** Set a scalar UTF-8 string attribute. */
  setStringAttr(path: string, name: string, value: string): void {
    this.obj(path).create_attribute(name, value, null, "S");
  }

  /** Set a string-array attribute (an empty list is written as an empty float64 array, like h5py). */
  setStringArrayAttr(path: string, name: string, values: string[]): void {
    const o = this.obj(path);
    if (values.length === 0) o.create_attribute(name, new Float64Array(0), [0], "<d");
    else o.create_attribute(name, values, [values.length], "S");
  }

  /** Set a scalar bool attribute (h5py bool enum, or int8 with `bools: "int8"`). */
  setBoolAttr(path: string, name: string, value: boolean): void {
    const p = normalize(path);
    const v = Int8Array.of(value ? 1 : 0);
    if (this.bools === "int8") {
      this.obj(p).create_attribute(name, v, [], "<b");
      return;
    }
    this.obj(p).create_attribute(name, new Map([[BOOL_PLACEHOLDER_NAME, v]]), [], PLACEHOLDER_DTYPE);
    this.placeholders.push({ path: p, attr: name });
  }

  /** Set an int64 array attribute. */
  setInt64ArrayAttr(path: string, name: string, values: ArrayLike<number>): void {
    const arr = BigInt64Array.from(Array.from(values, (x) => BigInt(x)));
    this.obj(path).create_attribute(name, arr, [arr.length], "<q");
  }

  setEncoding(path: string, type: string, version: string): void {
    this.setStringAttr(path, "encoding-type", type);
    this.setStringAttr(path, "encoding-version", version);
  }

  /** Create a group (the parent must exist), optionally with encoding attributes. */
  createGroup(path: string, encoding?: [string, string]): H5WGroup {
    const [parent, name] = splitPath(path);
    const g = (this.obj(parent) as H5WGroup).create_group(name);
    if (encoding) this.setEncoding(g.path, encoding[0], encoding[1]);
    return g;
  }

  /** An empty (or to-be-filled) dict group: "dict" "0.1.0". */
  writeDict(path: string): H5WGroup {
    return this.createGroup(path, ["dict", "0.1.0"]);
  }

  /** A string scalar dataset ("string" "0.2.0"), e.g. uns/title. */
  writeString(path: string, value: string): void {
    const [parent, name] = splitPath(path);
    const d = (this.obj(parent) as H5WGroup).create_dataset({ name, data: value, dtype: "S" });
    this.setEncoding(d.path, "string", "0.2.0");
  }

  /** A variable-length UTF-8 string array ("string-array" "0.2.0"). */
  writeStringArray(path: string, values: string[]): void {
    const [parent, name] = splitPath(path);
    for (let i = 0; i < values.length; i++) {
      if (typeof values[i] !== "string") throw new TypeError(`${path}: element ${i} is not a string`);
    }
    const d = (this.obj(parent) as H5WGroup).create_dataset({ name, data: values, shape: [values.length], dtype: "S" });
    this.setEncoding(d.path, "string-array", "0.2.0");
  }

  /** A numeric array ("array" "0.2.0"); the HDF5 type follows the typed array. */
  writeArray(path: string, values: NumericArray): void {
    const [parent, name] = splitPath(path);
    const d = (this.obj(parent) as H5WGroup).create_dataset({ name, data: values, shape: [values.length] });
    this.setEncoding(d.path, "array", "0.2.0");
  }

  /** A boolean array ("array" "0.2.0"): h5py bool enum (default) or int8. */
  writeBoolArray(path: string, values: Uint8Array | Int8Array | boolean[]): void {
    const [parent, name] = splitPath(path);
    const g = this.obj(parent) as H5WGroup;
    const v = toInt8Bools(values);
    let d: H5WDataset;
    if (this.bools === "int8") d = g.create_dataset({ name, data: v, shape: [v.length], dtype: "<b" });
    else {
      d = g.create_dataset({ name, data: new Map([[BOOL_PLACEHOLDER_NAME, v]]), shape: [v.length], dtype: PLACEHOLDER_DTYPE });
      this.placeholders.push({ path: d.path });
    }
    this.setEncoding(d.path, "array", "0.2.0");
  }

  /** Write a whole dataframe group. */
  writeDataFrame(path: string, df: H5adWriteFrame): void {
    const f = this.beginDataFrame(path, df.index, { indexName: df.indexName });
    for (const [name, col] of df.columns) f.addColumn(name, col);
    f.finish();
  }

  /** Start a dataframe group; add columns (possibly much later), then `finish()` writes column-order. */
  beginDataFrame(path: string, index: string[], opts: { indexName?: string } = {}): H5adFrameWriter {
    return new H5adFrameWriter(this, normalize(path), index, opts.indexName ?? "_index");
  }

  /** Start a CSR matrix group at `path` (e.g. "X", "layers/counts"); append rows, then `finish()`. */
  csr(path: string, opts: H5adCsrOptions): H5adCsrWriter {
    return new H5adCsrWriter(this, normalize(path), opts);
  }

  /** @internal used by the frame writer */
  writeColumn(groupPath: string, name: string, col: H5adWriteColumn, nRows: number): void {
    const p = joinPath(groupPath, name);
    const len = col.kind === "categorical" ? col.codes.length : col.values.length;
    if (len !== nRows) throw new Error(`${this.path}: column ${p} has ${len} values, expected ${nRows}`);
    switch (col.kind) {
      case "string":
        this.writeStringArray(p, col.values);
        return;
      case "number":
        this.writeArray(p, col.values);
        return;
      case "bool":
        if (col.mask) {
          if (col.mask.length !== nRows) throw new Error(`${this.path}: column ${p} mask length ${col.mask.length}, expected ${nRows}`);
          this.createGroup(p, ["nullable-boolean", "0.1.0"]);
          this.writeBoolArray(`${p}/values`, col.values);
          this.writeBoolArray(`${p}/mask`, col.mask);
        } else this.writeBoolArray(p, col.values);
        return;
      case "categorical": {
        const n = col.categories.length;
        const Ctor = n <= 127 ? Int8Array : n <= 32767 ? Int16Array : Int32Array;
        const codes = new Ctor(nRows);
        for (let i = 0; i < nRows; i++) {
          const c = col.codes[i];
          if (!Number.isInteger(c) || c < -1 || c >= n) throw new Error(`${this.path}: column ${p} code ${c} at row ${i} outside [-1, ${n})`);
          codes[i] = c;
        }
        this.createGroup(p, ["categorical", "0.2.0"]);
        this.setBoolAttr(p, "ordered", col.ordered ?? false);
        this.writeArray(`${p}/codes`, codes);
        this.writeStringArray(`${p}/categories`, col.categories);
        return;
      }
    }
  }

  /** Close the file and turn bool placeholders into h5py bool enums (verified). Idempotent. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.file.close();
    if (this.placeholders.length > 0) patchBoolPlaceholders(this.path, this.placeholders);
  }

  /** Close without finishing (after an error); never throws. The caller removes the file. */
  abort(): void {
    if (!this.open) return;
    this.open = false;
    try {
      this.file.close();
    } catch {
      /* already broken */
    }
  }
}

/** A dataframe group under construction. */
export class H5adFrameWriter {
  private readonly names: string[] = [];
  private done = false;
  readonly nRows: number;

  constructor(
    private readonly w: H5adWriter,
    readonly path: string,
    index: string[],
    indexName: string,
  ) {
    this.nRows = index.length;
    w.createGroup(path, ["dataframe", "0.2.0"]);
    w.setStringAttr(path, "_index", indexName);
    w.writeStringArray(joinPath(path, indexName), index);
    this.names.push(indexName);
  }

  addColumn(name: string, col: H5adWriteColumn): this {
    if (this.done) throw new Error(`dataframe ${this.path} is already finished`);
    if (this.names.includes(name)) throw new Error(`dataframe ${this.path}: duplicate column ${name}`);
    this.w.writeColumn(this.path, name, col, this.nRows);
    this.names.push(name);
    return this;
  }

  /** Write `column-order` (all columns but the index, in the order added). */
  finish(): void {
    if (this.done) return;
    this.done = true;
    this.w.setStringArrayAttr(this.path, "column-order", this.names.slice(1));
  }
}

type DataArray = Float32Array | Int32Array | BigInt64Array;

/** One growable, chunk-aligned, appendable 1-D dataset. */
class Appender<T extends DataArray> {
  private staged: T;
  private nStaged = 0;
  /** Elements already in the file. */
  written = 0;

  constructor(
    private readonly ds: H5WDataset,
    private readonly make: (n: number) => T,
    private readonly chunk: number,
  ) {
    this.staged = make(Math.max(chunk * 2, 1024));
  }

  get length(): number {
    return this.written + this.nStaged;
  }

  push(src: T, from: number, to: number): void {
    const n = to - from;
    if (n <= 0) return;
    if (this.nStaged + n > this.staged.length) {
      const grown = this.make(Math.max(this.nStaged + n, this.staged.length * 2));
      grown.set(this.staged.subarray(0, this.nStaged) as never);
      this.staged = grown;
    }
    this.staged.set(src.subarray(from, to) as never, this.nStaged);
    this.nStaged += n;
    if (this.nStaged >= this.chunk) this.flush(false);
  }

  /** Write whole chunks (all staged values when `all`). */
  flush(all: boolean): void {
    const n = all ? this.nStaged : this.nStaged - (this.nStaged % this.chunk);
    if (n <= 0) return;
    const start = this.written;
    this.ds.resize([start + n]);
    this.ds.write_slice([[start, start + n]], this.staged.subarray(0, n));
    this.written += n;
    this.staged.copyWithin(0, n, this.nStaged);
    this.nStaged -= n;
  }
}

/**
 * Incremental CSR writer: rows are appended in blocks (`appendRows`), written through chunk-aligned
 * staging buffers, so memory stays bounded by a few chunks plus the caller's block.
 */
export class H5adCsrWriter {
  readonly path: string;
  readonly nCols: number;
  private readonly data: Appender<Float32Array>;
  private readonly indices: Appender<Int32Array>;
  private readonly indptr: Appender<BigInt64Array>;
  private readonly validate: boolean;
  private nRows = 0;
  private nnz = 0;
  private done = false;
  private ptrBuf = new BigInt64Array(4096);

  constructor(
    private readonly w: H5adWriter,
    path: string,
    opts: H5adCsrOptions,
  ) {
    if (!Number.isInteger(opts.nCols) || opts.nCols < 0) throw new RangeError(`nCols must be a non-negative integer`);
    this.path = path;
    this.nCols = opts.nCols;
    this.validate = opts.validate ?? true;
    const chunk = Math.max(1024, Math.floor(opts.chunkElements ?? 262144));
    const level = opts.compression === true ? 4 : typeof opts.compression === "number" ? opts.compression : 0;
    const g = w.createGroup(path, ["csr_matrix", "0.1.0"]);
    const make = (name: string, dtype: string, data: DataArray, ch: number): H5WDataset =>
      g.create_dataset({
        name,
        data,
        shape: [0],
        maxshape: [null],
        dtype,
        chunks: [ch],
        ...(level > 0 ? { compression: "gzip" as const, compression_opts: level } : {}),
      });
    const ptrChunk = Math.max(1024, Math.min(chunk, 65536));
    this.data = new Appender(make("data", "<f", new Float32Array(0), chunk), (n) => new Float32Array(n), chunk);
    this.indices = new Appender(make("indices", "<i", new Int32Array(0), chunk), (n) => new Int32Array(n), chunk);
    this.indptr = new Appender(make("indptr", "<q", new BigInt64Array(0), ptrChunk), (n) => new BigInt64Array(n), ptrChunk);
    this.ptrBuf[0] = 0n;
    this.indptr.push(this.ptrBuf, 0, 1);
  }

  get rows(): number {
    return this.nRows;
  }
  get nonzeros(): number {
    return this.nnz;
  }

  /**
   * Append `nRows` rows given as a CSR block: `indptr` relative or absolute into `indices`/`data`
   * (length nRows + 1; only differences are used), column indices ascending within a row.
   */
  appendRows(indptr: ArrayLike<number>, indices: Int32Array, data: Float32Array, nRows = indptr.length - 1): void {
    if (this.done) throw new Error(`${this.path}: CSR writer already finished`);
    if (nRows <= 0) return;
    const base = indptr[0];
    const end = indptr[nRows];
    if (end > indices.length || end > data.length || end < base) throw new RangeError(`${this.path}: indptr exceeds indices/data`);
    if (this.validate) {
      const nc = this.nCols;
      for (let r = 0; r < nRows; r++) {
        const a = indptr[r];
        const b = indptr[r + 1];
        if (b < a) throw new RangeError(`${this.path}: indptr decreases at row ${this.nRows + r}`);
        let prev = -1;
        for (let k = a; k < b; k++) {
          const c = indices[k];
          if (c <= prev || c >= nc) {
            throw new RangeError(`${this.path}: row ${this.nRows + r}: column index ${c} ${c >= nc ? `outside [0, ${nc})` : "not strictly increasing"}`);
          }
          prev = c;
        }
      }
    }
    this.data.push(data, base, end);
    this.indices.push(indices, base, end);
    if (this.ptrBuf.length < nRows) this.ptrBuf = new BigInt64Array(nRows);
    let nnz = this.nnz;
    for (let r = 0; r < nRows; r++) {
      nnz += indptr[r + 1] - indptr[r];
      this.ptrBuf[r] = BigInt(nnz);
    }
    this.indptr.push(this.ptrBuf, 0, nRows);
    this.nnz = nnz;
    this.nRows += nRows;
  }

  /** Flush everything and write the `shape` attribute. Returns the final dimensions. */
  finish(): { rows: number; cols: number; nnz: number } {
    if (!this.done) {
      this.done = true;
      this.data.flush(true);
      this.indices.flush(true);
      this.indptr.flush(true);
      this.w.setInt64ArrayAttr(this.path, "shape", [this.nRows, this.nCols]);
    }
    return { rows: this.nRows, cols: this.nCols, nnz: this.nnz };
  }
}

/**
 * Replace every placeholder COMPOUND datatype message in the closed file by the h5py bool ENUM
 * message, then reopen and verify. Placeholders are created early (obs/var before X), so the scan
 * normally stops after the first few MiB; it falls back to the whole file if verification fails.
 */
export function patchBoolPlaceholders(file: string, placeholders: readonly Placeholder[]): void {
  const from = placeholderMessage();
  const to = Buffer.alloc(from.length);
  boolEnumMessage().copy(to, 0);
  const marker = Buffer.from(BOOL_PLACEHOLDER_NAME + "\0", "latin1");
  const headLen = 8;
  const windowSize = 8 << 20;
  const overlap = from.length + 64;
  const fd = fs.openSync(file, "r+");
  let patched = 0;
  let verified = false;
  try {
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.alloc(windowSize);
    let pos = 0;
    let doneUpTo = 0; // absolute offset before which matches were handled
    while (pos < size) {
      const len = fs.readSync(fd, buf, 0, Math.min(windowSize, size - pos), pos);
      if (len <= 0) break;
      const atEof = pos + len >= size;
      let i = buf.indexOf(marker, 0);
      while (i >= 0 && i < len) {
        const start = i - headLen;
        const abs = pos + start;
        if (abs >= doneUpTo && start >= 0 && (start + from.length <= len || atEof)) {
          if (start + from.length <= len && buf.subarray(start, start + from.length).equals(from)) {
            fs.writeSync(fd, to, 0, to.length, abs);
            to.copy(buf, start);
            patched++;
          }
        }
        i = buf.indexOf(marker, i + 1);
      }
      doneUpTo = atEof ? size : pos + len - overlap;
      if (!verified && patched >= placeholders.length) {
        fs.fsyncSync(fd);
        if (verifyBools(file, placeholders).length === 0) {
          verified = true;
          break;
        }
      }
      if (atEof) break;
      pos = doneUpTo;
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  if (!verified) {
    const bad = verifyBools(file, placeholders);
    if (bad.length > 0) {
      throw new Error(`${file}: could not convert ${bad.length} bool placeholder(s) to HDF5 bool enums (first: ${bad[0]}); write with bools: "int8" instead`);
    }
  }
}

/** Placeholders that do not read back as the {FALSE: 0, TRUE: 1} int8 enum (as "path" or "path@attr"). */
function verifyBools(file: string, placeholders: readonly Placeholder[]): string[] {
  const bad: string[] = [];
  const f = new h5wasm.File(file, "r");
  try {
    const enumClass = 8; // H5T_ENUM
    for (const ph of placeholders) {
      const o = f.get(ph.path);
      let md: { type: number; size: number; enum_type?: { members: Record<string, number> } } | undefined;
      if (ph.attr !== undefined) md = o && "attrs" in o ? (o.attrs[ph.attr]?.metadata as typeof md) : undefined;
      else md = o instanceof h5wasm.Dataset ? (o.metadata as typeof md) : undefined;
      const m = md?.enum_type?.members;
      const ok = md !== undefined && md.type === enumClass && md.size === 1 && m !== undefined && Object.keys(m).length === 2 && m.FALSE === 0 && m.TRUE === 1;
      if (!ok) bad.push(ph.attr !== undefined ? `${ph.path}@${ph.attr}` : ph.path);
    }
  } finally {
    f.close();
  }
  return bad;
}
