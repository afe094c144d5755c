/**
 * One tokenize work unit: either one shard of a `gm preprocess` output or a row range of an
 * h5ad/10x input (cleaned exactly as preprocess does). Writes Hugging Face-compatible Arrow stream
 * parts into OUT/.gm-work/parts/, each under the shard size limit, and a JSON record last.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Field, Int32, Int64, List, RecordBatch, RecordBatchReader, Schema, Struct, makeData, type Data, type DataType } from "apache-arrow";
import { inputError, tempNameFor, writeJsonAtomic } from "@gm/core";
import type { CellFile, Column } from "../types.js";
import type { InputPlan } from "../plan.js";
import { cleanRows, emptyCleanStats, primaryMask, type CleanStats } from "../clean.js";
import { BlockTokenizer } from "./kernel.js";
import { WasmRanker } from "../rank.js";
import { ArrowFileSink, type BatchLocation } from "../arrow/sink.js";
import { arrowTypeOfColumn, int64Data, listInt32Data, obsColumnData } from "../arrow/columns.js";

export interface TokenizeSettings {
  maxLen: number;
  clsId: number | null;
  eosId: number | null;
  targetSum: number;
  keepColumns: string[];
  minGenes: number;
  allowNonInteger: boolean;
  blockRows: number;
  /** Rows per record batch (HF datasets' writer_batch_size). */
  batchRows: number;
  /** Start a new part when a part exceeds this many bytes. */
  maxShardBytes: number;
  vocabSize: number;
}

/** Token id and median per Ensembl id, shared by all units (sent once to each worker). */
export interface TokenTable {
  genes: string[];
  tokenIds: Int32Array;
  medians: Float64Array;
}

export type TokenizeUnitTask = {
  workDir: string;
  unit: number;
  settings: TokenizeSettings;
} & ({ kind: "shard"; shardPath: string } | { kind: "cells"; plan: InputPlan; rowStart: number; rowEnd: number });

export interface PartInfo {
  file: string;
  rows: number;
  bytes: number;
  batches: BatchLocation[];
}

export interface TokenizeUnitResult {
  unit: number;
  parts: PartInfo[];
  cellsIn: number;
  cellsOut: number;
  droppedNoTokens: number;
  tokens: number;
  truncated: number;
  clean?: CleanStats;
}

export const partName = (unit: number, k: number) => `u${String(unit).padStart(6, "0")}-p${String(k).padStart(4, "0")}.arrow`;
export const tokenizeUnitRecord = (unit: number) => `u${String(unit).padStart(6, "0")}.json`;

/** The features entry of dataset_info.json for an Arrow type. */
export function hfFeature(type: DataType): unknown {
  const s = String(type);
  if (s.startsWith("List")) return { feature: { dtype: "int32", _type: "Value" }, _type: "Sequence" };
  const dtype = s === "Utf8" ? "string" : s === "Float64" ? "float64" : s === "Bool" ? "bool" : s === "Int64" ? "int64" : s === "Int32" ? "int32" : s.toLowerCase();
  return { dtype, _type: "Value" };
}

export function tokenizedSchema(keep: { name: string; type: DataType }[]): Schema {
  const fields = [new Field("input_ids", new List(new Field("item", new Int32(), true)), false), new Field("length", new Int64(), false), ...keep.map((k) => new Field(k.name, k.type, true))];
  const features: Record<string, unknown> = {};
  for (const f of fields) features[f.name] = hfFeature(f.type);
  const metadata = new Map([["huggingface", JSON.stringify({ info: { features } })]]);
  return new Schema(fields, metadata);
}

/** Accumulates tokenized rows and writes 1000-row record batches into size-limited parts. */
class PartWriter {
  private sink?: ArrowFileSink;
  private tmp?: string;
  private k = 0;
  readonly parts: PartInfo[] = [];
  // pending rows
  private offsets: number[] = [0];
  private ids: Int32Array = new Int32Array(1 << 16);
  private nIds = 0;
  private keepRows: number[] = [];
  private keepCols: Column[] = [];

  constructor(
    private readonly workDir: string,
    private readonly unit: number,
    private readonly schema: Schema,
    private readonly settings: TokenizeSettings,
  ) {}

  /** Append one cell's tokens (copied) with its row in the current obs frame. */
  add(tokens: Int32Array, n: number, obsRow: number, cols: Column[]): void {
    if (this.keepCols !== cols && this.offsets.length > 1) this.flush();
    this.keepCols = cols;
    if (this.nIds + n > this.ids.length) {
      const bigger = new Int32Array(Math.max(this.ids.length * 2, this.nIds + n));
      bigger.set(this.ids.subarray(0, this.nIds));
      this.ids = bigger;
    }
    this.ids.set(tokens.subarray(0, n), this.nIds);
    this.nIds += n;
    this.offsets.push(this.nIds);
    this.keepRows.push(obsRow);
    if (this.offsets.length - 1 >= this.settings.batchRows) this.flush();
  }

  flush(): void {
    const n = this.offsets.length - 1;
    if (n === 0) return;
    if (!this.sink) {
      this.tmp = path.join(this.workDir, "parts", partName(this.unit, this.k));
      this.sink = new ArrowFileSink(tempNameFor(this.tmp), this.schema, "stream");
    }
    const offsets = Int32Array.from(this.offsets);
    const lengths = new BigInt64Array(n);
    for (let i = 0; i < n; i++) lengths[i] = BigInt(offsets[i + 1] - offsets[i]);
    const rows = Int32Array.from(this.keepRows);
    const children: Data[] = [listInt32Data(offsets, this.ids.slice(0, this.nIds)), int64Data(lengths), ...this.keepCols.map((c) => obsColumnData(c, rows))];
    const struct = makeData({ type: new Struct(this.schema.fields), length: n, nullCount: 0, children });
    this.sink.write(new RecordBatch(this.schema, struct));
    this.offsets = [0];
    this.nIds = 0;
    this.keepRows = [];
    if (this.sink.bytes >= this.settings.maxShardBytes) this.closePart();
  }

  private closePart(): void {
    if (!this.sink || !this.tmp) return;
    this.sink.close();
    fs.renameSync(this.sink.path, this.tmp);
    this.parts.push({ file: path.basename(this.tmp), rows: this.sink.rows, bytes: this.sink.bytes, batches: this.sink.batches });
    this.sink = undefined;
    this.tmp = undefined;
    this.k++;
  }

  finish(): PartInfo[] {
    this.flush();
    this.closePart();
    return this.parts;
  }

  abort(): void {
    this.sink?.abort();
  }
}

export class UnitTokenizer {
  private readonly ranker = new WasmRanker();
  private readonly out: Int32Array;
  private readonly room: number;

  constructor(private readonly settings: TokenizeSettings) {
    this.out = new Int32Array(settings.maxLen);
    this.room = settings.maxLen - (settings.clsId !== null ? 1 : 0) - (settings.eosId !== null ? 1 : 0);
  }

  /**
   * Tokenize one cell. genes: gene-table indices; tokenOf/medianOf: per gene-table index (token -1 =
   * not in vocabulary or no median). Returns the number of ids in `this.tokens`, 0 if no gene is left.
   */
  cell(genes: Int32Array, counts: Float32Array, a: number, b: number, nCounts: number, tokenOf: Int32Array, medianOf: Float64Array): { n: number; truncated: boolean } {
    const ts = this.settings.targetSum;
    // written straight into the rank kernel's memory
    const toks = this.ranker.tokens;
    const vals = this.ranker.values;
    const cap = this.ranker.maxN;
    let m = 0;
    for (let j = a; j < b; j++) {
      const g = genes[j];
      const t = tokenOf[g];
      const c = counts[j];
      if (t < 0 || c === 0) continue;
      if (m === cap) throw new Error(`a cell holds more than ${cap} genes`);
      toks[m] = t;
      // Geneformer's expression, in its operation order: X / n_counts * target_sum / median.
      vals[m++] = ((c / nCounts) * ts) / medianOf[g];
    }
    if (m === 0) return { n: 0, truncated: false };
    let k = 0;
    if (this.settings.clsId !== null) this.out[k++] = this.settings.clsId;
    k += this.ranker.rank(m, this.out, k, this.room);
    if (this.settings.eosId !== null) this.out[k++] = this.settings.eosId;
    return { n: k, truncated: m > this.room };
  }

  get tokens(): Int32Array {
    return this.out;
  }
}

/** Map a gene table (Ensembl ids) to token ids and medians. */
export function mapGeneTable(genes: string[], table: { index: Map<string, number>; tokenIds: Int32Array; medians: Float64Array }): { tokenOf: Int32Array; medianOf: Float64Array } {
  const tokenOf = new Int32Array(genes.length).fill(-1);
  const medianOf = new Float64Array(genes.length);
  for (let i = 0; i < genes.length; i++) {
    const j = table.index.get(genes[i]);
    if (j === undefined) continue;
    tokenOf[i] = table.tokenIds[j];
    medianOf[i] = table.medians[j];
  }
  return { tokenOf, medianOf };
}

export async function tokenizeUnit(task: TokenizeUnitTask, table: { index: Map<string, number>; tokenIds: Int32Array; medians: Float64Array }, file: CellFile | undefined, schema: Schema, onCells: (n: number) => void): Promise<TokenizeUnitResult> {
  const s = task.settings;
  const writer = new PartWriter(task.workDir, task.unit, schema, s);
  const res: TokenizeUnitResult = { unit: task.unit, parts: [], cellsIn: 0, cellsOut: 0, droppedNoTokens: 0, tokens: 0, truncated: 0 };
  try {
    if (task.kind === "cells" && task.plan.geneStats.duplicateColumns === 0 && !process.env.GM_JS_TOKENIZER) {
      res.clean = tokenizeRowsInKernel(task, table, file!, writer, res, onCells);
    } else if (task.kind === "cells") {
      const stats = emptyCleanStats();
      const { tokenOf, medianOf } = mapGeneTable(task.plan.genes, table);
      const tok = new UnitTokenizer(s);
      for (const block of cleanRows(file!, task.plan, { ...s, obsColumns: s.keepColumns, cellIds: false }, task.rowStart, task.rowEnd, stats)) {
        const cols = s.keepColumns.map((c) => block.obs.columns.get(c)!);
        for (let c = 0; c < block.nCells; c++) {
          const r = tok.cell(block.genes, block.counts, block.indptr[c], block.indptr[c + 1], block.nCounts[c], tokenOf, medianOf);
          if (r.n === 0) {
            res.droppedNoTokens++;
            continue;
          }
          if (r.truncated) res.truncated++;
          writer.add(tok.tokens, r.n, block.obsRows[c], cols);
          res.cellsOut++;
          res.tokens += r.n;
        }
        onCells(block.nRows);
      }
      res.cellsIn = stats.cellsIn;
      res.clean = stats;
    } else {
      // Batch by batch through a file handle: memory holds one record batch, not the shard.
      const handle = await fs.promises.open(task.shardPath, "r");
      const reader = await RecordBatchReader.from(handle);
      await reader.open();
      const meta = reader.schema.metadata;
      const genes = JSON.parse(meta.get("gm:genes") ?? "null") as string[] | null;
      if (!genes) throw inputError(task.shardPath, "is not a gm preprocess shard (no gm:genes metadata)");
      const { tokenOf, medianOf } = mapGeneTable(genes, table);
      const specials = (s.clsId !== null ? 1 : 0) + (s.eosId !== null ? 1 : 0);
      // the shard's cells were cleaned by preprocess: no primary or min-genes filter here
      const kernel = new BlockTokenizer(tokenOf, medianOf, { ...s, minGenes: 0, allowNonInteger: true, room: s.maxLen - specials }, task.shardPath, "gene_index/counts");
      for await (const batch of reader) {
        const geneCol = batch.getChild("gene_index")!.data[0];
        const countCol = batch.getChild("counts")!.data[0];
        const offs = geneCol.valueOffsets as Int32Array;
        const a0 = offs[0];
        const n = batch.numRows;
        const block = {
          rowStart: 0,
          nRows: n,
          indptr: a0 === 0 ? offs.subarray(0, n + 1) : offs.subarray(0, n + 1).map((x) => x - a0),
          indices: (geneCol.children[0].values as Int32Array).subarray(a0, offs[n]),
          data: (countCol.children[0].values as Float32Array).subarray(a0, offs[n]),
        };
        const nCounts = batch.getChild("n_counts")!.data[0].values as Float64Array;
        const r = kernel.run(block, null, nCounts.subarray(0, n));
        const cols: Column[] = s.keepColumns.map((name) => arrowColumnAsColumn(task.shardPath, batch, name));
        for (let c = 0; c < n; c++) {
          if (r.status[c] !== 0) {
            res.droppedNoTokens++;
            continue;
          }
          const len = r.offsets[c + 1] - r.offsets[c];
          writer.add(r.ids.subarray(r.offsets[c], r.offsets[c + 1]), len, c, cols);
          if (r.truncated[c]) res.truncated++;
          res.cellsOut++;
          res.tokens += len;
        }
        res.cellsIn += batch.numRows;
        onCells(batch.numRows);
      }
      await handle.close();
    }
    res.parts = writer.finish();
  } catch (e) {
    writer.abort();
    throw e;
  }
  writeJsonAtomic(path.join(task.workDir, "units", tokenizeUnitRecord(task.unit)), res);
  return res;
}

/** View an Arrow column of a preprocess shard as a Column (for --keep-columns passthrough). */
function arrowColumnAsColumn(file: string, batch: RecordBatch, name: string): Column {
  const child = batch.getChild(name) ?? batch.getChild(`obs.${name}`);
  if (!child) throw inputError(file, `has no column '${name}' for --keep-columns (available: ${batch.schema.fields.map((f) => f.name).join(", ")})`);
  const t = String(child.type);
  if (t === "Float64") return { kind: "number", values: Float64Array.from(child.toArray() as ArrayLike<number>) };
  if (t === "Bool") {
    const arr = child.toArray() as (boolean | null)[];
    return { kind: "bool", values: Uint8Array.from(arr, (v) => (v ? 1 : 0)), mask: Uint8Array.from(arr, (v) => (v === null ? 1 : 0)) };
  }
  return { kind: "string", values: Array.from(child.toArray() as ArrayLike<string | null>, (v) => (v === null ? "" : String(v))) };
}

export async function keepColumnTypesFromShard(file: string, names: string[]): Promise<{ name: string; type: DataType }[]> {
  const handle = await fs.promises.open(file, "r");
  try {
    const reader = await RecordBatchReader.from(handle);
    await reader.open();
    return names.map((n) => {
      const f = reader.schema.fields.find((x) => x.name === n) ?? reader.schema.fields.find((x) => x.name === `obs.${n}`);
      if (!f) throw inputError(file, `has no column '${n}' for --keep-columns (available: ${reader.schema.fields.map((x) => x.name).join(", ")})`);
      return { name: n, type: f.type };
    });
  } finally {
    await handle.close();
  }
}

export function keepColumnTypesFromFile(file: CellFile, names: string[]): { name: string; type: DataType }[] {
  const avail = file.obsColumns();
  const missing = names.filter((n) => !avail.includes(n));
  if (missing.length) throw inputError(file.path, `obs has no column '${missing[0]}' for --keep-columns (available: ${avail.join(", ") || "none"})`);
  const df = file.readObs(names, 0, Math.min(1, file.nCells));
  return names.map((n) => ({ name: n, type: arrowTypeOfColumn(df.columns.get(n)!) }));
}

/** The block kernel path for h5ad/10x rows (inputs without duplicated gene ids). */
function tokenizeRowsInKernel(
  task: Extract<TokenizeUnitTask, { kind: "cells" }>,
  table: { index: Map<string, number>; tokenIds: Int32Array; medians: Float64Array },
  file: CellFile,
  writer: PartWriter,
  res: TokenizeUnitResult,
  onCells: (n: number) => void,
): CleanStats {
  const { plan, settings: s } = task;
  const { tokenOf, medianOf } = mapGeneTable(plan.genes, table);
  const nCols = plan.colToGene.length;
  const colToken = new Int32Array(nCols).fill(-1);
  const colMedian = new Float64Array(nCols);
  for (let c = 0; c < nCols; c++) {
    const g = plan.colToGene[c];
    if (g >= 0 && tokenOf[g] >= 0) {
      colToken[c] = tokenOf[g];
      colMedian[c] = medianOf[g];
    }
  }
  const specials = (s.clsId !== null ? 1 : 0) + (s.eosId !== null ? 1 : 0);
  const kernel = new BlockTokenizer(colToken, colMedian, { ...s, room: s.maxLen - specials }, file.path, plan.countsLocation);
  const matrix = file.matrix(plan.countsLocation);
  const wantObs = plan.hasPrimaryColumn ? [...new Set(["is_primary_data", ...s.keepColumns])] : s.keepColumns;
  const stats = emptyCleanStats();
  for (let a = task.rowStart; a < task.rowEnd; a += s.blockRows) {
    const b = Math.min(task.rowEnd, a + s.blockRows);
    const block = matrix.readBlock(a, b);
    const obs = file.readObs(wantObs, a, b, false);
    const primary = plan.hasPrimaryColumn ? primaryMask(obs.columns.get("is_primary_data")!, block.nRows) : null;
    const r = kernel.run(block, primary);
    const cols = s.keepColumns.map((c) => obs.columns.get(c)!);
    for (let row = 0; row < block.nRows; row++) {
      switch (r.status[row]) {
        case 0: {
          const len = r.offsets[row + 1] - r.offsets[row];
          writer.add(r.ids.subarray(r.offsets[row], r.offsets[row + 1]), len, row, cols);
          res.cellsOut++;
          res.tokens += len;
          if (r.truncated[row]) res.truncated++;
          stats.cellsOut++;
          break;
        }
        case 1:
          stats.droppedNotPrimary++;
          break;
        case 2:
          stats.droppedZeroCounts++;
          break;
        case 3:
          stats.droppedMinGenes++;
          break;
        case 4:
          res.droppedNoTokens++;
          stats.cellsOut++;
          break;
      }
    }
    stats.cellsIn += block.nRows;
    onCells(block.nRows);
  }
  res.cellsIn = stats.cellsIn;
  return stats;
}
