/**
 * One preprocess work unit: rows [rowStart, rowEnd) of one input. Produces
 *  - cells/cells-fFFFFF-uUUUUU.arrow: the kept cells (Arrow IPC file format),
 *  - digests/fFFFFF-uUUUUU.tdigest: one crick t-digest per gene of the input's gene table,
 *  - units/fFFFFF-uUUUUU.json: the unit's statistics, written last (its presence marks the unit done).
 * Every file goes through a temporary name and a rename, so a killed run leaves only complete files.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { RecordBatch, Schema, Field, Float64, Int32, List, Float32, Utf8, Struct, makeData, type Data, type DataType } from "apache-arrow";
import { tempNameFor, writeJsonAtomic, writeFileAtomic } from "@gm/core";
import type { CellFile } from "../types.js";
import type { InputPlan } from "../plan.js";
import { cleanRows, emptyCleanStats, type CleanStats } from "../clean.js";
import type { DigestSet } from "../tdigest.js";
import { WasmDigestSet } from "../tdigest-wasm.js";
import { ArrowFileSink } from "../arrow/sink.js";
import { arrowTypeOfColumn, float64Data, int32Data, listFloat32Data, listInt32Data, obsColumnData, utf8Data } from "../arrow/columns.js";

export interface PreprocessSettings {
  minGenes: number;
  targetSum: number;
  log1p: boolean;
  allowNonInteger: boolean;
  blockRows: number;
}

export interface UnitTask {
  outDir: string;
  fileIndex: number;
  unit: number;
  rowStart: number;
  rowEnd: number;
  plan: InputPlan;
  settings: PreprocessSettings;
}

export interface UnitResult {
  fileIndex: number;
  unit: number;
  rowStart: number;
  rowEnd: number;
  shard: string;
  digest: string;
  rows: number;
  stats: CleanStats;
}

/** Column names gm writes; obs columns with these names are stored as "obs.<name>". */
export const RESERVED_COLUMNS = ["cell_id", "gene_index", "counts", "values", "n_counts", "n_genes_expressed"];

export const unitName = (fileIndex: number, unit: number) => `f${String(fileIndex).padStart(5, "0")}-u${String(unit).padStart(5, "0")}`;
export const shardPath = (fileIndex: number, unit: number) => `cells/cells-${unitName(fileIndex, unit)}.arrow`;
export const digestPath = (fileIndex: number, unit: number) => `digests/${unitName(fileIndex, unit)}.tdigest`;
export const genesPath = (fileIndex: number) => `genes/f${String(fileIndex).padStart(5, "0")}.json`;
export const unitJsonPath = (fileIndex: number, unit: number) => `units/${unitName(fileIndex, unit)}.json`;

export function obsFieldName(name: string): string {
  return RESERVED_COLUMNS.includes(name) ? `obs.${name}` : name;
}

export function processUnit(file: CellFile, task: UnitTask, onCells: (n: number) => void): UnitResult {
  const { plan, settings, outDir } = task;
  const obsColumns = plan.obsColumns;
  const digests = new WasmDigestSet(plan.genes.length);
  const geneCounts = new Int32Array(plan.genes.length + 1);
  const geneStart = new Int32Array(plan.genes.length + 1);
  const stats = emptyCleanStats();
  let sink: ArrowFileSink | undefined;
  const shardRel = shardPath(task.fileIndex, task.unit);
  const shardAbs = path.join(outDir, shardRel);
  const shardTmp = tempNameFor(shardAbs);
  try {
    for (const block of cleanRows(file, plan, { ...settings, obsColumns, sortGenes: true }, task.rowStart, task.rowEnd, stats)) {
      const n = block.nCells;
      const nnz = block.counts.length;
      const values = new Float32Array(nnz);
      const normalised = new Float64Array(nnz);
      for (let c = 0; c < n; c++) {
        const total = block.nCounts[c];
        for (let j = block.indptr[c]; j < block.indptr[c + 1]; j++) {
          // Geneformer's normalisation, in its operation order: counts / n_counts * target_sum.
          const v = (block.counts[j] / total) * settings.targetSum;
          normalised[j] = v;
          values[j] = settings.log1p ? Math.log1p(v) : v;
        }
      }
      digestByGene(digests, block.genes, normalised, geneCounts, geneStart);
      const obsCols = obsColumns.map((name) => [name, block.obs.columns.get(name)!] as const);
      if (!sink) {
        const fields = [
          new Field("cell_id", new Utf8(), false),
          new Field("gene_index", new List(new Field("item", new Int32(), true)), false),
          new Field("counts", new List(new Field("item", new Float32(), true)), false),
          new Field("values", new List(new Field("item", new Float32(), true)), false),
          new Field("n_counts", new Float64(), false),
          new Field("n_genes_expressed", new Int32(), false),
          ...obsCols.map(([name, col]) => new Field(obsFieldName(name), arrowTypeOfColumn(col) as DataType, true)),
        ];
        const metadata = new Map<string, string>([
          ["gm:format", "gm.cells/1"],
          ["gm:source", plan.path],
          ["gm:counts_location", plan.countsLocation],
          ["gm:target_sum", String(settings.targetSum)],
          ["gm:log1p", String(settings.log1p)],
          ["gm:genes", JSON.stringify(plan.genes)],
        ]);
        fs.mkdirSync(path.dirname(shardAbs), { recursive: true });
        sink = new ArrowFileSink(shardTmp, new Schema(fields, metadata), "file");
      }
      onCells(block.nRows);
      if (n === 0) continue;
      const ids: (string | null)[] = new Array(n);
      for (let c = 0; c < n; c++) ids[c] = block.obs.index[block.obsRows[c]];
      const children: Data[] = [
        utf8Data(ids),
        listInt32Data(block.indptr, block.genes),
        listFloat32Data(block.indptr, block.counts),
        listFloat32Data(block.indptr, values),
        float64Data(block.nCounts.slice()),
        int32Data(block.nGenesExpressed.slice()),
        ...obsCols.map(([, col]) => obsColumnData(col, block.obsRows)),
      ];
      const struct = makeData({ type: new Struct(sink.schema.fields), length: n, nullCount: 0, children });
      sink.write(new RecordBatch(sink.schema, struct));
    }
    if (!sink) throw new Error(`unit ${unitName(task.fileIndex, task.unit)} is empty`);
    sink.close();
    fs.renameSync(shardTmp, shardAbs);
  } catch (e) {
    sink?.abort();
    fs.rmSync(shardTmp, { force: true });
    throw e;
  }
  const digestRel = digestPath(task.fileIndex, task.unit);
  const bin = digests.toBinary();
  writeFileAtomic(path.join(outDir, digestRel), new Uint8Array(bin.buffer, bin.byteOffset, bin.byteLength));
  const result: UnitResult = {
    fileIndex: task.fileIndex,
    unit: task.unit,
    rowStart: task.rowStart,
    rowEnd: task.rowEnd,
    shard: shardRel,
    digest: digestRel,
    rows: sink.rows,
    stats,
  };
  writeJsonAtomic(path.join(outDir, unitJsonPath(task.fileIndex, task.unit)), result);
  return result;
}

/**
 * Feed a block's values to the per-gene digests gene by gene (a stable counting sort keeps each
 * gene's values in cell order, so the digests are identical to adding cell by cell, as crick's
 * per-chunk `update(row)` does). Adding gene-major keeps one digest's buffer and centroids in cache
 * instead of touching ~2,000 random digests per cell, and lets each gene's run go to the
 * WebAssembly port of the flush in one call.
 */
function digestByGene(digests: DigestSet, genes: Int32Array, values: Float64Array, counts: Int32Array, start: Int32Array): void {
  const nnz = genes.length;
  counts.fill(0);
  for (let j = 0; j < nnz; j++) counts[genes[j] + 1]++;
  for (let g = 1; g < counts.length; g++) counts[g] += counts[g - 1];
  start.set(counts);
  const grouped = new Float64Array(nnz);
  for (let j = 0; j < nnz; j++) grouped[start[genes[j]]++] = values[j];
  const G = counts.length - 1;
  for (let g = 0; g < G; g++) if (counts[g + 1] > counts[g]) digests.addRun(g, grouped, counts[g], counts[g + 1]);
}
