/**
 * Reader for Cell Ranger's HDF5 feature-barcode matrix (`filtered_feature_bc_matrix.h5`).
 *
 * Cell Ranger 3+ layout:            Cell Ranger 2 layout (one group per genome, e.g. "GRCh38"):
 *   /matrix/barcodes   [n_bc]         /<genome>/barcodes, data, indices, indptr, shape
 *   /matrix/data       [nnz]          /<genome>/genes       (feature ids)
 *   /matrix/indices    [nnz] int64    /<genome>/gene_names
 *   /matrix/indptr     [n_bc+1]
 *   /matrix/shape      [n_features, n_bc]
 *   /matrix/features/{id,name,feature_type,genome}
 *
 * The matrix is stored CSC over features x barcodes, i.e. one indptr slice per barcode, which is CSR
 * for cells x genes: a block of cells is one contiguous slice of indices/data, read lazily. Only
 * indptr (8 bytes per cell), the feature table and nothing else is read at open.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { inputError, isGmError } from "@gm/core";
import type { CellFile, CsrBlock, DataFrame, MatrixSource } from "../types.js";
import { h5ready, h5wasm, isDataset, isGroup, takeHdf5Diagnostic, toFloat64, type H5Dataset, type H5File } from "../h5ad/h5.js";
import { TenxCellFile, checkRowRange, featureFrame, sortRows } from "./common.js";

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Check existence, the HDF5 signature and the superblock's end-of-file address before the HDF5 library sees the file. */
function checkHdf5(file: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw inputError(file, code === "ENOENT" ? "file not found; check the path" : `cannot access the file (${code})`);
  }
  if (st.isDirectory()) {
    throw inputError(file, "is a folder, expected a Cell Ranger .h5 file (for a MEX folder with matrix.mtx.gz use the folder reader)");
  }
  if (st.size === 0) throw inputError(file, "file is empty (0 bytes); re-download or re-copy it");
  const fd = fs.openSync(file, "r");
  try {
    let base = -1;
    const sig = Buffer.alloc(8);
    // The superblock may follow a user block of 0, 512, 1024, 2048, ... bytes.
    for (let off = 0; off + 8 <= st.size && off <= 1 << 24; off = off === 0 ? 512 : off * 2) {
      fs.readSync(fd, sig, 0, 8, off);
      if (sig.equals(HDF5_SIGNATURE)) {
        base = off;
        break;
      }
    }
    if (base < 0) {
      throw inputError(file, "not an HDF5 file (no HDF5 signature); expected Cell Ranger's filtered_feature_bc_matrix.h5 — check the file");
    }
    const head = Buffer.alloc(64);
    const n = fs.readSync(fd, head, 0, 64, base);
    const version = head[8];
    let eofPos = -1;
    if ((version === 0 || version === 1) && head[13] === 8) eofPos = (version === 0 ? 24 : 28) + 16;
    else if ((version === 2 || version === 3) && head[9] === 8) eofPos = 12 + 16;
    if (eofPos > 0 && n >= eofPos + 8) {
      const eof = head.readBigUInt64LE(eofPos);
      if (eof !== 0xffffffffffffffffn && BigInt(base) + eof > BigInt(st.size)) {
        throw inputError(file, `file is truncated (${st.size} of ${BigInt(base) + eof} bytes); re-download or re-copy it`);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

function hdf5Failure(file: string, what: string, e: unknown): Error {
  if (isGmError(e)) return e;
  const diag = takeHdf5Diagnostic();
  const detail = diag || (e instanceof Error ? e.message : String(e));
  return inputError(file, `${what}: ${detail} (the file may be corrupt; re-download it)`);
}

function toStrings(v: unknown): string[] {
  if (Array.isArray(v)) return v.map((x) => (x === null || x === undefined ? "" : String(x)));
  if (typeof v === "string") return [v];
  if (v === null || v === undefined) return [];
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>, String);
  return [String(v)];
}

interface Located {
  /** The matrix group's path, e.g. "matrix" or "GRCh38". */
  group: string;
  cellRanger: 2 | 3;
}

/** Find the matrix groups: Cell Ranger 3+ "matrix", else Cell Ranger 2 genome groups. */
function locate(file: string, f: H5File): Located[] {
  const keys = f.keys();
  const has = (g: string, name: string): boolean => {
    const o = f.get(g);
    return isGroup(o) && o.keys().includes(name);
  };
  if (keys.includes("matrix") && isGroup(f.get("matrix"))) return [{ group: "matrix", cellRanger: 3 }];
  const cr2 = keys
    .filter((k) => has(k, "indptr") && has(k, "genes"))
    .sort()
    .map((k) => ({ group: k, cellRanger: 2 as const }));
  if (cr2.length > 0) return cr2;
  const hint = keys.includes("X") && keys.includes("obs") ? " It looks like an AnnData file: open it as .h5ad." : "";
  throw inputError(
    file,
    `not a 10x Cell Ranger HDF5 file: expected a group "matrix" (Cell Ranger 3+) or a genome group with "genes" and "indptr" ` +
      `(Cell Ranger 2), found top-level ${keys.length ? keys.map((k) => `"${k}"`).join(", ") : "nothing"}.${hint}`,
  );
}

interface OpenedMatrix {
  source: MatrixSource;
  var: DataFrame;
  nCells: number;
  barcodes(start: number, end: number): string[];
}

function openMatrix(file: string, f: H5File, loc: Located, isOpen: () => boolean): OpenedMatrix {
  const g = loc.group;
  const dataset = (name: string, what: string): H5Dataset => {
    const o = f.get(`${g}/${name}`);
    if (!isDataset(o)) {
      throw inputError(file, `dataset "${g}/${name}" (${what}) is missing; the file is not a complete Cell Ranger matrix — re-export it`);
    }
    return o;
  };
  const length = (ds: H5Dataset): number => {
    const s = ds.shape;
    if (!s || s.length !== 1) throw inputError(file, `dataset "${ds.path}" must be one-dimensional, has shape [${(s ?? []).join(", ")}]`);
    return s[0];
  };

  const shape = toFloat64(dataset("shape", "matrix dimensions").value);
  if (shape.length !== 2) throw inputError(file, `dataset "${g}/shape" must hold [n_features, n_barcodes], holds ${shape.length} values`);
  const [nGenes, nCells] = [shape[0], shape[1]];

  const barcodesDs = dataset("barcodes", "cell barcodes");
  if (length(barcodesDs) !== nCells) {
    throw inputError(file, `dataset "${g}/barcodes" has ${length(barcodesDs)} entries but "${g}/shape" says ${nCells} barcodes; the file is corrupt`);
  }

  let ids: string[];
  let names: string[];
  let types: string[] | null = null;
  let genomes: string[] | null = null;
  const features = (ds: H5Dataset, what: string): string[] => {
    const v = toStrings(ds.value);
    if (v.length !== nGenes) {
      throw inputError(file, `dataset "${ds.path}" (${what}) has ${v.length} entries but "${g}/shape" says ${nGenes} features; the file is corrupt`);
    }
    return v;
  };
  if (loc.cellRanger === 3) {
    ids = features(dataset("features/id", "feature ids"), "feature ids");
    names = features(dataset("features/name", "feature names"), "feature names");
    const fg = f.get(`${g}/features`);
    const fkeys = isGroup(fg) ? fg.keys() : [];
    if (fkeys.includes("feature_type")) types = features(dataset("features/feature_type", "feature types"), "feature types");
    if (fkeys.includes("genome")) genomes = features(dataset("features/genome", "genomes"), "genomes");
  } else {
    ids = features(dataset("genes", "gene ids"), "gene ids");
    const gk = (f.get(g) as { keys(): string[] }).keys();
    names = gk.includes("gene_names") ? features(dataset("gene_names", "gene names"), "gene names") : ids;
    genomes = ids.map(() => g);
  }
  const varFrame = featureFrame(ids, names, types, genomes);

  const indptrDs = dataset("indptr", "per-barcode offsets");
  const indicesDs = dataset("indices", "feature index of each value");
  const dataDs = dataset("data", "count values");
  const indptr = toFloat64(indptrDs.value);
  const nnz = length(dataDs);
  if (indptr.length !== nCells + 1) {
    throw inputError(file, `dataset "${g}/indptr" has ${indptr.length} entries, expected ${nCells + 1} (barcodes + 1); the file is corrupt`);
  }
  if (length(indicesDs) !== nnz) {
    throw inputError(file, `datasets "${g}/indices" (${length(indicesDs)}) and "${g}/data" (${nnz}) differ in length; the file is corrupt`);
  }
  if (indptr[0] !== 0 || indptr[nCells] !== nnz) {
    throw inputError(file, `dataset "${g}/indptr" must run from 0 to ${nnz} (the length of "${g}/data"), runs from ${indptr[0]} to ${indptr[nCells]}; the file is corrupt`);
  }
  for (let i = 0; i < nCells; i++) {
    if (indptr[i + 1] < indptr[i]) {
      throw inputError(file, `dataset "${g}/indptr" decreases at barcode ${i + 1}; the file is corrupt`);
    }
  }
  const dataType = (dataDs.metadata as { type?: number }).type;
  if (dataType !== 0 && dataType !== 1) {
    throw inputError(file, `dataset "${g}/data" is not numeric (HDF5 type class ${dataType}); expected integer counts`);
  }
  const indType = (indicesDs.metadata as { type?: number }).type;
  if (indType !== 0) {
    throw inputError(file, `dataset "${g}/indices" is not an integer dataset (HDF5 type class ${indType}); the file is corrupt`);
  }

  const readSlice = (ds: H5Dataset, a: number, b: number): unknown => {
    try {
      return ds.slice([[a, b]]);
    } catch (e) {
      throw hdf5Failure(file, `cannot read "${ds.path}" [${a}, ${b})`, e);
    }
  };

  /** Read values [a, b) of indices (validated, as Int32) and data (as Float32, or Float64 when stored so). */
  const readRaw = (a: number, b: number): { indices: Int32Array; data: Float32Array | Float64Array } => {
    const n = b - a;
    const rawIdx = readSlice(indicesDs, a, b) as ArrayLike<number | bigint>;
    if (!rawIdx || rawIdx.length !== n) throw inputError(file, `reading "${g}/indices" [${a}, ${b}) returned ${rawIdx?.length ?? 0} values; the file is corrupt`);
    const indices = new Int32Array(n);
    for (let k = 0; k < n; k++) {
      const x = Number(rawIdx[k]);
      if (!(x >= 0 && x < nGenes)) {
        throw inputError(file, `dataset "${g}/indices" holds feature index ${x} at position ${a + k}, outside 0..${nGenes - 1}; the file is corrupt`);
      }
      indices[k] = x;
    }
    const rawData = readSlice(dataDs, a, b) as ArrayLike<number | bigint>;
    if (!rawData || rawData.length !== n) throw inputError(file, `reading "${g}/data" [${a}, ${b}) returned ${rawData?.length ?? 0} values; the file is corrupt`);
    let data: Float32Array | Float64Array;
    if (rawData instanceof Float32Array || rawData instanceof Float64Array) data = rawData;
    else if (rawData instanceof BigInt64Array || rawData instanceof BigUint64Array) data = Float32Array.from(rawData, Number);
    else data = Float32Array.from(rawData as ArrayLike<number>);
    return { indices, data };
  };

  // h5wasm reopens a dataset on every call, so HDF5's chunk cache never survives between slices and
  // each small read decompresses whole chunks again. Small blocks are therefore served from a
  // read-ahead window of at least one chunk (~64k-256k values, a few MB at most).
  const chunkLen = Math.max((indicesDs.metadata as { chunks?: number[] | null }).chunks?.[0] ?? 0, (dataDs.metadata as { chunks?: number[] | null }).chunks?.[0] ?? 0);
  const windowLen = Math.min(Math.max(chunkLen, 1 << 16), 1 << 18);
  let win: { a: number; b: number; indices: Int32Array; data: Float32Array | Float64Array } | null = null;
  const readValues = (a: number, b: number): { indices: Int32Array; data: Float32Array | Float64Array } => {
    if (b - a >= windowLen) return readRaw(a, b);
    if (!win || a < win.a || b > win.b) {
      const wb = Math.min(nnz, Math.max(b, a + windowLen));
      win = { a, b: wb, ...readRaw(a, wb) };
    }
    return { indices: win.indices.slice(a - win.a, b - win.a), data: win.data.slice(a - win.a, b - win.a) };
  };

  const source: MatrixSource = {
    location: loc.cellRanger === 3 ? "matrix" : g,
    layout: "csc",
    nCells,
    nGenes,
    readBlock(start: number, end: number): CsrBlock {
      if (!isOpen()) throw new Error(`${file}: file is closed`);
      checkRowRange(start, end, nCells);
      const a = indptr[start];
      const b = indptr[end];
      if (b - a > 0x7fffffff) throw new RangeError(`rows [${start}, ${end}) hold ${b - a} values, more than a block can index; read fewer rows`);
      const n = b - a;
      const rel = new Int32Array(end - start + 1);
      for (let i = 0; i <= end - start; i++) rel[i] = indptr[start + i] - a;
      if (n === 0) return { rowStart: start, nRows: end - start, indptr: rel, indices: new Int32Array(0), data: new Float32Array(0) };

      const { indices, data } = readValues(a, b);

      sortRows(rel, end - start, indices, data, nGenes, (row, gene) => {
        throw inputError(file, `dataset "${g}/indices": feature ${gene} (${ids[gene]}) appears twice for barcode ${start + row + 1}; the file is corrupt`);
      });
      return { rowStart: start, nRows: end - start, indptr: rel, indices, data };
    },
  };

  return {
    source,
    var: varFrame,
    nCells,
    barcodes(start: number, end: number): string[] {
      if (!isOpen()) throw new Error(`${file}: file is closed`);
      if (start === end) return [];
      const v = toStrings(readSlice(barcodesDs, start, end));
      if (v.length !== end - start) throw inputError(file, `reading "${g}/barcodes" [${start}, ${end}) returned ${v.length} values; the file is corrupt`);
      return v;
    },
  };
}

/**
 * Open Cell Ranger's `*_feature_bc_matrix.h5` (Cell Ranger 3+, or the Cell Ranger 2 per-genome layout).
 * Count blocks are read lazily; errors are GmErrors naming the file and the problem.
 *
 * Cell Ranger 2 files with several genomes expose the first genome (by name) as "matrix" and every
 * genome also under its own name.
 */
export async function openTenxH5(file: string): Promise<CellFile> {
  checkHdf5(file);
  await h5ready();
  let f: H5File;
  try {
    f = new h5wasm.File(path.resolve(file), "r");
    if (!f.file_id || f.file_id < 0n) throw new Error("open failed");
  } catch (e) {
    throw hdf5Failure(file, "cannot open the HDF5 file", e);
  }
  let open = true;
  try {
    const located = locate(file, f);
    const matrices = new Map<string, { source: MatrixSource; var: DataFrame }>();
    let first: OpenedMatrix | undefined;
    for (const loc of located) {
      const m = openMatrix(file, f, loc, () => open);
      if (!first) {
        first = m;
        matrices.set("matrix", { source: { ...m.source, location: "matrix" }, var: m.var });
      }
      if (loc.cellRanger === 2 && located.length > 1) matrices.set(loc.group, { source: m.source, var: m.var });
      if (m.nCells !== first.nCells) {
        throw inputError(file, `genome groups "${located[0].group}" and "${loc.group}" have different barcode counts; the file is corrupt`);
      }
    }
    const main = first!;
    return new TenxCellFile({
      path: file,
      format: "10x-h5",
      nCells: main.nCells,
      var: main.var,
      barcodes: (start, end) => main.barcodes(start, end),
      matrices,
      close() {
        open = false;
        f.close();
      },
    });
  } catch (e) {
    open = false;
    f.close();
    throw hdf5Failure(file, "cannot read the 10x matrix structure", e);
  }
}
