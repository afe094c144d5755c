/**
 * Cell cleaning shared by `gm preprocess` and `gm tokenize` (h5ad input): streams a row range of one
 * input in blocks and yields the cells that pass the filters, with their kept genes collapsed onto the
 * plan's gene table (duplicated Ensembl ids summed).
 *
 * Rules (docs/formats.md): keep `is_primary_data == True` when the column exists; refuse negative,
 * NaN/Inf and (unless allowed) non-integer counts; n_counts = total counts over ALL genes of the
 * matrix; drop cells with zero counts, then cells with fewer than minGenes expressed genes (all genes).
 */
import { inputError } from "@gm/core";
import type { CellFile, Column, DataFrame } from "./types.js";
import type { InputPlan } from "./plan.js";

export interface CleanOptions {
  minGenes: number;
  allowNonInteger: boolean;
  /** Rows read per block (bounded memory). */
  blockRows: number;
  /** Obs columns to carry along (read per block). */
  obsColumns: string[];
  /** Emit each cell's genes in ascending gene-table order (preprocess output); tokenize does not need it. */
  sortGenes?: boolean;
  /** Read the obs index (cell ids) with each block; tokenize does not need it. */
  cellIds?: boolean;
}

export interface CleanStats {
  cellsIn: number;
  droppedNotPrimary: number;
  droppedZeroCounts: number;
  droppedMinGenes: number;
  cellsOut: number;
  /** Non-zero values of kept genes in kept cells. */
  nnzOut: number;
}

export function emptyCleanStats(): CleanStats {
  return { cellsIn: 0, droppedNotPrimary: 0, droppedZeroCounts: 0, droppedMinGenes: 0, cellsOut: 0, nnzOut: 0 };
}

export function addCleanStats(a: CleanStats, b: CleanStats): CleanStats {
  return {
    cellsIn: a.cellsIn + b.cellsIn,
    droppedNotPrimary: a.droppedNotPrimary + b.droppedNotPrimary,
    droppedZeroCounts: a.droppedZeroCounts + b.droppedZeroCounts,
    droppedMinGenes: a.droppedMinGenes + b.droppedMinGenes,
    cellsOut: a.cellsOut + b.cellsOut,
    nnzOut: a.nnzOut + b.nnzOut,
  };
}

/** Kept cells of one block, struct-of-arrays. Genes are indices into plan.genes, ascending per cell. */
export interface CleanBlock {
  /** Rows read in this block (kept or not). */
  nRows: number;
  /** Kept cells. */
  nCells: number;
  /** Row of each kept cell within the block's obs frame. */
  obsRows: Int32Array;
  /** Row of each kept cell in the input file. */
  fileRows: Int32Array;
  indptr: Int32Array;
  genes: Int32Array;
  counts: Float32Array;
  nCounts: Float64Array;
  nGenesExpressed: Int32Array;
  /** Obs of the whole block (index + requested columns). */
  obs: DataFrame;
}

export function* cleanRows(file: CellFile, plan: InputPlan, opts: CleanOptions, rowStart: number, rowEnd: number, stats: CleanStats): Generator<CleanBlock> {
  const m = file.matrix(plan.countsLocation);
  const colToGene = plan.colToGene;
  const G = plan.genes.length;
  const hasDuplicates = plan.geneStats.duplicateColumns > 0;
  const scratch = new Float64Array(hasDuplicates ? G : 0);
  const touched = new Int32Array(hasDuplicates ? G : 0);
  const wantObs = plan.hasPrimaryColumn ? [...new Set(["is_primary_data", ...opts.obsColumns])] : opts.obsColumns;
  for (let a = rowStart; a < rowEnd; a += opts.blockRows) {
    const b = Math.min(rowEnd, a + opts.blockRows);
    const block = m.readBlock(a, b);
    const obs = file.readObs(wantObs, a, b, opts.cellIds ?? true);
    const primary = plan.hasPrimaryColumn ? obs.columns.get("is_primary_data") : undefined;
    const n = block.nRows;
    const obsRows = new Int32Array(n);
    const fileRows = new Int32Array(n);
    const indptr = new Int32Array(n + 1);
    const nCounts = new Float64Array(n);
    const nGenesExpressed = new Int32Array(n);
    // Upper bound on output size: all stored values of the block.
    const genes = new Int32Array(block.indices.length);
    const counts = new Float32Array(block.indices.length);
    let kept = 0;
    let k = 0;
    const { indices, data } = block;
    const allowNonInteger = opts.allowNonInteger;
    const minGenes = opts.minGenes;
    for (let r = 0; r < n; r++) {
      stats.cellsIn++;
      if (primary && !isTrue(primary, r)) {
        stats.droppedNotPrimary++;
        continue;
      }
      const s = block.indptr[r];
      const e = block.indptr[r + 1];
      const k0 = k;
      let total = 0;
      let expressed = 0;
      let sorted = true;
      let prev = -1;
      // One pass: validate, total over all genes, and (fast path, no duplicated ids) emit kept
      // genes optimistically — rolled back if the cell is dropped.
      for (let j = s; j < e; j++) {
        const x = data[j];
        if (!(x >= 0 && x < Infinity)) throw badValue(file.path, plan.countsLocation, x, a + r, obs.index[r], indices[j]);
        if (x !== Math.floor(x) && !allowNonInteger) throw nonInteger(file.path, plan.countsLocation, x, a + r, obs.index[r]);
        if (x > 0) {
          total += x;
          expressed++;
          if (!hasDuplicates) {
            const g = colToGene[indices[j]];
            if (g >= 0) {
              if (g < prev) sorted = false;
              prev = g;
              genes[k] = g;
              counts[k++] = x;
            }
          }
        }
      }
      if (total === 0) {
        k = k0;
        stats.droppedZeroCounts++;
        continue;
      }
      if (expressed < minGenes) {
        k = k0;
        stats.droppedMinGenes++;
        continue;
      }
      if (!hasDuplicates) {
        if (!sorted && opts.sortGenes) sortPairs(genes, counts, k0, k);
      } else {
        // Collapse kept columns onto gene-table indices (duplicates summed).
        let nt = 0;
        for (let j = s; j < e; j++) {
          const x = data[j];
          if (x === 0) continue;
          const g = colToGene[indices[j]];
          if (g < 0) continue;
          if (scratch[g] === 0) touched[nt++] = g;
          scratch[g] += x;
        }
        const t = touched.subarray(0, nt);
        if (opts.sortGenes) t.sort();
        for (let q = 0; q < nt; q++) {
          const g = t[q];
          genes[k] = g;
          counts[k++] = scratch[g];
          scratch[g] = 0;
        }
      }
      obsRows[kept] = r;
      fileRows[kept] = a + r;
      nCounts[kept] = total;
      nGenesExpressed[kept] = expressed;
      indptr[++kept] = k;
    }
    stats.cellsOut += kept;
    stats.nnzOut += k;
    yield {
      nRows: n,
      nCells: kept,
      obsRows: obsRows.subarray(0, kept),
      fileRows: fileRows.subarray(0, kept),
      indptr: indptr.subarray(0, kept + 1),
      genes: genes.subarray(0, k),
      counts: counts.subarray(0, k),
      nCounts: nCounts.subarray(0, kept),
      nGenesExpressed: nGenesExpressed.subarray(0, kept),
      obs,
    };
  }
}

/** 1 where the is_primary_data column says True, per row of the block. */
export function primaryMask(col: Column, n: number): Uint8Array {
  const m = new Uint8Array(n);
  for (let i = 0; i < n; i++) m[i] = isTrue(col, i) ? 1 : 0;
  return m;
}

function isTrue(col: Column, i: number): boolean {
  switch (col.kind) {
    case "bool":
      return col.values[i] !== 0 && !(col.mask && col.mask[i]);
    case "number":
      return col.values[i] === 1;
    case "categorical": {
      const c = col.codes[i];
      return c >= 0 && /^(true|1)$/i.test(col.categories[c]);
    }
    case "string":
      return /^(true|1)$/i.test(col.values[i]);
  }
}

/** Sort (gene, count) pairs of one cell by gene, in place (genes are unique within a cell). */
function sortPairs(genes: Int32Array, counts: Float32Array, a: number, b: number): void {
  const idx = Array.from({ length: b - a }, (_, i) => a + i);
  idx.sort((x, y) => genes[x] - genes[y]);
  const g = idx.map((i) => genes[i]);
  const c = idx.map((i) => counts[i]);
  for (let i = 0; i < g.length; i++) {
    genes[a + i] = g[i];
    counts[a + i] = c[i];
  }
}

function cellLabel(row: number, id: string | undefined): string {
  return id === undefined ? `cell ${row}` : `cell ${row} (${id})`;
}

export function badValue(file: string, loc: string, x: number, row: number, id: string | undefined, col: number): Error {
  const what = Number.isNaN(x) ? "NaN" : x === Infinity ? "an infinite value" : `a negative value (${x})`;
  return inputError(file, `${loc} holds ${what} at ${cellLabel(row, id)}, gene column ${col}; counts must be non-negative finite numbers`);
}

export function nonInteger(file: string, loc: string, x: number, row: number, id: string | undefined): Error {
  return inputError(file, `${loc} holds a non-integer value (${x}) at ${cellLabel(row, id)}; raw counts are needed — pick another --counts-layer or pass --allow-non-integer`);
}
