/**
 * Shared in-memory shapes for single-cell inputs (h5ad, 10x). Every reader exposes cells as rows and
 * genes as columns, whatever the on-disk orientation, and hands out the count matrix in row blocks so
 * memory stays bounded whatever the file size.
 */

/** One block of rows in CSR form. indptr is relative to the block: indptr[0] = 0, length nRows + 1. */
export interface CsrBlock {
  /** First row of the block in the file's cell order. */
  rowStart: number;
  nRows: number;
  indptr: Int32Array;
  /** Column (gene) index of each stored value, ascending within a row when the source is sorted. */
  indices: Int32Array;
  data: Float32Array | Float64Array;
}

/** A dataframe column as read from h5ad obs/var or 10x features/barcodes. */
export type Column =
  | { kind: "categorical"; codes: Int32Array; categories: string[] }
  | { kind: "string"; values: string[] }
  | { kind: "number"; values: Float64Array }
  | { kind: "bool"; values: Uint8Array; mask?: Uint8Array };

export interface DataFrame {
  /** Row labels (obs_names / var_names / barcodes / feature ids). */
  index: string[];
  /** Column name -> column, in the file's column order. */
  columns: Map<string, Column>;
}

/** A readable count matrix (cells x genes) of one input file. */
export interface MatrixSource {
  /** Where in the file the matrix lives, e.g. "X", "raw/X", "layers/counts", "matrix" (10x). */
  readonly location: string;
  /** "csr" | "csc" | "dense" | "mex" (informative). */
  readonly layout: string;
  readonly nCells: number;
  readonly nGenes: number;
  /** Rows [start, end) as CSR. Explicit zeros may be present; callers skip them. */
  readBlock(start: number, end: number): CsrBlock;
  /** Up to `max` stored values, cheaply (for checking that a matrix holds counts); default: the first rows. */
  sampleValues?(max: number): Float32Array | Float64Array;
}

/** A single-cell file opened for reading. */
export interface CellFile {
  readonly path: string;
  readonly format: "h5ad" | "10x-h5" | "10x-mex";
  readonly nCells: number;
  /** Genes of the root matrix (h5ad `var`; 10x features). */
  readonly var: DataFrame;
  /** Names of obs columns available (h5ad obs; 10x has none besides the barcode index). */
  obsColumns(): string[];
  /** Read obs rows [start, end) of the named columns, plus the index unless withIndex is false (then index is []). */
  readObs(columns: string[], start: number, end: number, withIndex?: boolean): DataFrame;
  /** Candidate matrices by location ("X", "raw/X", "layers/<name>", "matrix"). */
  matrixLocations(): string[];
  /** Open a matrix; its genes are `varFor(location)`. */
  matrix(location: string): MatrixSource;
  /** The gene table that belongs to a matrix location (raw/var for raw/X, var otherwise). */
  varFor(location: string): DataFrame;
  close(): void;
}

/** Helper: the value of a column at row i as a string (for metadata passthrough). */
export function columnValueAsString(col: Column, i: number): string | null {
  switch (col.kind) {
    case "categorical": {
      const c = col.codes[i];
      return c < 0 ? null : col.categories[c];
    }
    case "string":
      return col.values[i];
    case "number": {
      const v = col.values[i];
      return Number.isNaN(v) ? null : String(v);
    }
    case "bool":
      if (col.mask && col.mask[i]) return null;
      return col.values[i] ? "True" : "False";
  }
}
