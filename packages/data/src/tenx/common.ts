/**
 * Pieces shared by the 10x Genomics readers (Cell Ranger HDF5 and MEX): the feature table, the
 * barcode-only obs table, per-row sorting of gene indices and the CellFile wrapper.
 */
import { inputError } from "@gm/core";
import type { CellFile, Column, CsrBlock, DataFrame, MatrixSource } from "../types.js";

/** Feature type Cell Ranger 2 implies (its gene tables have no type column). */
export const DEFAULT_FEATURE_TYPE = "Gene Expression";

/** A categorical column with categories in sorted order (as pandas would build them). */
export function categorical(values: string[]): Column {
  const categories = [...new Set(values)].sort();
  const code = new Map<string, number>();
  categories.forEach((c, i) => code.set(c, i));
  const codes = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) codes[i] = code.get(values[i])!;
  return { kind: "categorical", codes, categories };
}

/**
 * The 10x feature table: index = feature ids (Ensembl), columns feature_name (string),
 * feature_type (categorical) and genome (categorical, when the file records it).
 */
export function featureFrame(ids: string[], names: string[], types: string[] | null, genomes: string[] | null): DataFrame {
  const columns = new Map<string, Column>();
  columns.set("feature_name", { kind: "string", values: names });
  columns.set("feature_type", categorical(types ?? ids.map(() => DEFAULT_FEATURE_TYPE)));
  if (genomes) columns.set("genome", categorical(genomes));
  return { index: ids, columns };
}

export function checkRowRange(start: number, end: number, nRows: number): void {
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > nRows) {
    throw new RangeError(`readBlock(${start}, ${end}): rows must satisfy 0 <= start <= end <= ${nRows}`);
  }
}

let keyScratch = new Float64Array(0);
let dataScratch64 = new Float64Array(0);

/**
 * Sort the gene indices of every row of a CSR block ascending, carrying the values along, in place.
 * Cell Ranger writes each barcode's features in descending order, so descending rows are reversed
 * cheaply; other orders get a general sort. Rows that are already ascending are left untouched.
 * A gene that appears twice in one row is bad input: `onDuplicate(row, gene)` must throw.
 */
export function sortRows(
  indptr: ArrayLike<number>,
  nRows: number,
  indices: Int32Array,
  data: Float32Array | Float64Array,
  nGenes: number,
  onDuplicate: (row: number, gene: number) => never,
): void {
  for (let r = 0; r < nRows; r++) {
    const a = indptr[r];
    const b = indptr[r + 1];
    const n = b - a;
    if (n < 2) continue;
    let asc = true;
    let desc = true;
    for (let k = a + 1; k < b; k++) {
      const d = indices[k] - indices[k - 1];
      if (d <= 0) asc = false;
      if (d >= 0) desc = false;
      if (!asc && !desc) break;
    }
    if (asc) continue;
    if (desc) {
      indices.subarray(a, b).reverse();
      data.subarray(a, b).reverse();
      continue;
    }
    // General case: sort (gene * n + position) keys natively, then gather the values.
    if (nGenes * n < Number.MAX_SAFE_INTEGER) {
      if (keyScratch.length < n) keyScratch = new Float64Array(Math.max(n, keyScratch.length * 2));
      if (dataScratch64.length < n) dataScratch64 = new Float64Array(Math.max(n, dataScratch64.length * 2));
      const keys = keyScratch.subarray(0, n);
      for (let k = 0; k < n; k++) {
        keys[k] = indices[a + k] * n + k;
        dataScratch64[k] = data[a + k];
      }
      keys.sort();
      for (let k = 0; k < n; k++) {
        const key = keys[k];
        const gene = Math.floor(key / n);
        indices[a + k] = gene;
        data[a + k] = dataScratch64[key - gene * n];
      }
    } else {
      const order = Array.from({ length: n }, (_, k) => k).sort((x, y) => indices[a + x] - indices[a + y]);
      const g = Int32Array.from(order, (k) => indices[a + k]);
      const v = Float64Array.from(order, (k) => data[a + k]);
      indices.set(g, a);
      data.set(v, a);
    }
    for (let k = a + 1; k < b; k++) if (indices[k] === indices[k - 1]) onDuplicate(r, indices[k]);
  }
}

export interface TenxParts {
  path: string;
  format: "10x-h5" | "10x-mex";
  nCells: number;
  /** Features of the main matrix ("matrix"). */
  var: DataFrame;
  /** Barcodes [start, end). */
  barcodes(start: number, end: number): string[];
  /** Location -> matrix and its features; "matrix" first. */
  matrices: Map<string, { source: MatrixSource; var: DataFrame }>;
  close(): void;
}

/** The CellFile of a 10x input: obs has only the barcode index; the count matrix lives at "matrix". */
export class TenxCellFile implements CellFile {
  readonly path: string;
  readonly format: "10x-h5" | "10x-mex";
  readonly nCells: number;
  readonly var: DataFrame;
  private closed = false;

  constructor(private readonly parts: TenxParts) {
    this.path = parts.path;
    this.format = parts.format;
    this.nCells = parts.nCells;
    this.var = parts.var;
  }

  obsColumns(): string[] {
    return [];
  }

  readObs(columns: string[], start: number, end: number): DataFrame {
    this.checkOpen();
    checkRowRange(start, end, this.nCells);
    if (columns.length > 0) {
      throw inputError(
        this.path,
        `obs column "${columns[0]}" not found: 10x Cell Ranger output has no cell metadata besides the barcodes; ` +
          `add labels from a separate table or convert to .h5ad`,
      );
    }
    return { index: this.parts.barcodes(start, end), columns: new Map() };
  }

  matrixLocations(): string[] {
    return [...this.parts.matrices.keys()];
  }

  matrix(location: string): MatrixSource {
    this.checkOpen();
    return this.entry(location).source;
  }

  varFor(location: string): DataFrame {
    return this.entry(location).var;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.parts.close();
  }

  private entry(location: string): { source: MatrixSource; var: DataFrame } {
    const e = this.parts.matrices.get(location);
    if (!e) {
      throw inputError(this.path, `no matrix at "${location}"; this 10x file has: ${this.matrixLocations().join(", ")}`);
    }
    return e;
  }

  private checkOpen(): void {
    if (this.closed) throw new Error(`${this.path}: file is closed`);
  }
}

/** Copy rows [start, end) out of a whole-matrix CSR held in memory (global indptr may exceed int32). */
export function sliceCsr(
  indptr: Float64Array,
  indices: Int32Array,
  data: Float32Array,
  start: number,
  end: number,
): CsrBlock {
  const a = indptr[start];
  const out = new Int32Array(end - start + 1);
  for (let i = 0; i <= end - start; i++) out[i] = indptr[start + i] - a;
  const b = indptr[end];
  if (b - a > 0x7fffffff) throw new RangeError(`rows [${start}, ${end}) hold ${b - a} values, more than a block can index; read fewer rows`);
  return { rowStart: start, nRows: end - start, indptr: out, indices: indices.slice(a, b), data: data.slice(a, b) };
}
