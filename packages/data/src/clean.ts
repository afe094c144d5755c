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
import type { CellFile, DataFrame } from "./types.js";
import type { InputPlan } from "./plan.js";

export interface CleanOptions {
  minGenes: number;
  allowNonInteger: boolean;
  /** Rows read per block (bounded memory). */
  blockRows: number;
  /** Obs columns to carry along (read per block). */
  obsColumns: string[];
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
  const scratch = new Float64Array(G);
  const touched = new Int32Array(G);
  const wantObs = plan.hasPrimaryColumn ? [...new Set(["is_primary_data", ...opts.obsColumns])] : opts.obsColumns;
  for (let a = rowStart; a < rowEnd; a += opts.blockRows) {
    const b = Math.min(rowEnd, a + opts.blockRows);
    const block = m.readBlock(a, b);
    const obs = file.readObs(wantObs, a, b);
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
    for (let r = 0; r < n; r++) {
      stats.cellsIn++;
      if (primary && !isTrue(primary, r)) {
        stats.droppedNotPrimary++;
        continue;
      }
      const s = block.indptr[r];
      const e = block.indptr[r + 1];
      let total = 0;
      let expressed = 0;
      for (let j = s; j < e; j++) {
        const x = data[j];
        if (!(x >= 0) || x === Infinity) {
          const what = Number.isNaN(x) ? "NaN" : x === Infinity ? "an infinite value" : `a negative value (${x})`;
          throw inputError(file.path, `${plan.countsLocation} holds ${what} at cell ${a + r} (${obs.index[r]}), gene column ${indices[j]}; counts must be non-negative finite numbers`);
        }
        if (x !== Math.floor(x) && !opts.allowNonInteger) {
          throw inputError(file.path, `${plan.countsLocation} holds a non-integer value (${x}) at cell ${a + r} (${obs.index[r]}); raw counts are needed — pick another --counts-layer or pass --allow-non-integer`);
        }
        if (x > 0) {
          total += x;
          expressed++;
        }
      }
      if (total === 0) {
        stats.droppedZeroCounts++;
        continue;
      }
      if (expressed < opts.minGenes) {
        stats.droppedMinGenes++;
        continue;
      }
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
      t.sort();
      for (let q = 0; q < nt; q++) {
        const g = t[q];
        genes[k] = g;
        counts[k++] = scratch[g];
        scratch[g] = 0;
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

function isTrue(col: NonNullable<ReturnType<DataFrame["columns"]["get"]>>, i: number): boolean {
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
