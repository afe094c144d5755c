/**
 * `gm embed`: cell embeddings (the final post-norm state at [CLS], or the mean over the cell's
 * genes) for every cell of the inputs, in input order, and optionally gene embeddings (rows of the
 * input embedding table, or the context-aware mean of each gene's final state over the cells).
 * Input is streamed batch by batch; memory holds the output matrix (cells x d) and the batches in
 * flight (one on the native engine; up to --workers + 1 with --runtime onnx, consumed in input order).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createProgress, getLogger, usageError, writeFileAtomic, type Logger } from "@gm/core";
import { addObsmToH5ad, writeEmbeddingH5ad } from "@gm/data";
import { padBatch } from "@gm/engine";
import { makeData, Field, FixedSizeList, Float32, RecordBatch, Schema, Struct, Utf8, tableToIPC, Table, vectorFromArray } from "apache-arrow";
import { BatchPipeline, openCellModel, withRoom, resolveRuntime, type CellModel, type CellOutput, type RuntimeKind } from "./backend.js";
import { isTokenizedDir, openCellSource, withCls } from "./cells.js";
import type { OnnxProvider } from "@gm/onnx";

// (packages/train/src/index.ts exports this module; the shared backend and gm predict travel with it.)

export type EmbedPooling = "cls" | "mean";

export interface EmbedOptions {
  model: string;
  inputs: string[];
  out?: string;
  key: string;
  pooling?: EmbedPooling;
  batchSize: number;
  maxLength: number;
  genesOut?: string;
  geneContext: boolean;
  batchColumn: string;
  /** obs columns carried into a combined output (default: every kept column of tokenized input). */
  obsColumns?: string[];
  medians?: string;
  countsLayer?: string;
  geneIdColumn?: string;
  geneMap?: string;
  /** Default: onnx when --model ends in .onnx, else native. */
  runtime?: RuntimeKind;
  /** Native: engine threads; onnx: intra-op threads over all workers (default: GM_THREADS or all cores). */
  threads?: number;
  /** onnx: sessions in worker threads, i.e. batches in flight (default 1). */
  workers?: number;
  /** onnx: execution provider (default auto). */
  provider?: OnnxProvider;
}

export interface EmbedResult {
  cells: number;
  dim: number;
  pooling: EmbedPooling;
  withoutGenes: number;
  out?: string;
  genesOut?: string;
  seconds: number;
  cellsPerSecond: number;
  /** The embeddings and their cell names (for callers that go on in-process, e.g. tests). */
  embedding: Float32Array;
  names: string[];
  sources: number[];
  runtime: RuntimeKind;
}

/** Writes a float32 or int32 .npy file (format 1.0, C order). */
export function writeNpy(file: string, data: Float32Array | Int32Array, shape: number[]): void {
  const descr = data instanceof Int32Array ? "<i4" : "<f4";
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(", ")}${shape.length === 1 ? "," : ""}), }`;
  const total = 10 + header.length + 1;
  header += " ".repeat((64 - (total % 64)) % 64) + "\n";
  const pre = Buffer.alloc(10);
  pre.write("\x93NUMPY", 0, "latin1");
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  writeFileAtomic(file, Buffer.concat([pre, Buffer.from(header, "latin1"), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

function writeArrow(file: string, names: string[], sourceNames: string[], data: Float32Array, d: number, key: string, batchColumn: string): void {
  const n = names.length;
  const listType = new FixedSizeList(d, new Field("item", new Float32(), false));
  const values = makeData({ type: new Float32(), length: n * d, data });
  const emb = makeData({ type: listType, length: n, nullCount: 0, child: values });
  const nameVec = vectorFromArray(names, new Utf8());
  const srcVec = vectorFromArray(sourceNames, new Utf8());
  const schema = new Schema([new Field("cell", new Utf8(), false), new Field(batchColumn, new Utf8(), false), new Field(key, listType, false)]);
  const struct = makeData({ type: new Struct(schema.fields), length: n, nullCount: 0, children: [nameVec.data[0], srcVec.data[0], emb] });
  const table = new Table(schema, [new RecordBatch(schema, struct)]);
  writeFileAtomic(file, tableToIPC(table, "file"));
}

function resolvePooling(m: CellModel, asked?: EmbedPooling): EmbedPooling {
  const pooling = asked ?? (m.fineTuned ? "cls" : "mean");
  if (pooling !== "cls" && pooling !== "mean") throw usageError(`--pooling must be cls or mean (got ${String(pooling)})`);
  if (pooling === "cls" && m.clsId === undefined) throw usageError(`${m.location}: the model has no [CLS] token (a pretrained model); fine-tune it first (gm finetune) or use --pooling mean`);
  return pooling;
}

interface PendingBatch {
  cells: { ids: Int32Array; row: number }[];
  seqs: Int32Array[];
  length: number;
}

export async function embed(o: EmbedOptions, log: Logger = getLogger()): Promise<EmbedResult> {
  const t0 = Date.now();
  if (o.inputs.length === 0) throw usageError("gm embed needs --data (an .h5ad / 10x file or a gm tokenize folder)");
  if (!o.out && !o.genesOut) throw usageError("gm embed needs --out FILE (.h5ad, .arrow or .npy) and/or --genes-out FILE");
  const outExt = o.out ? path.extname(o.out).toLowerCase() : "";
  if (o.out && ![".h5ad", ".arrow", ".npy"].includes(outExt)) throw usageError(`--out ${o.out}: use a .h5ad, .arrow or .npy file name`);
  if (o.genesOut && ![".tsv", ".npy"].includes(path.extname(o.genesOut).toLowerCase())) throw usageError(`--genes-out ${o.genesOut}: use a .tsv or .npy file name`);
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw usageError("--batch-size must be a positive integer");
  const runtime = resolveRuntime(o.model, o.runtime);
  if (runtime === "onnx" && o.genesOut && !o.geneContext)
    throw usageError(`--genes-out without --gene-context writes the model's input embedding table, which an .onnx file does not expose; add --gene-context (context-aware gene embeddings) or give the model folder (--runtime native)`);
  const model = await openCellModel(o.model, { runtime, medians: o.medians, threads: o.threads, workers: o.workers, provider: o.provider });
  try {
    return await embedWith(model, o, outExt, t0, log);
  } finally {
    await model.close();
  }
}

async function embedWith(model: CellModel, o: EmbedOptions, outExt: string, t0: number, log: Logger): Promise<EmbedResult> {
  const pooling = resolvePooling(model, o.pooling);
  const d = model.dModel;
  const V = model.vocabSize;
  const cls = pooling === "cls";
  const maxGenes = o.maxLength - (cls ? 1 : 0);
  if (maxGenes < 1) throw usageError("--max-length leaves no room for genes");
  if (model.runtime === "onnx") log.info({ runtime: "onnx", provider: model.runner!.provider, workers: model.runner!.workers, threadsPerWorker: model.runner!.threadsPerWorker }, `onnxruntime: ${model.runner!.workers} session(s) on ${model.runner!.provider}`);

  let embedding: Float32Array = new Float32Array(1024 * d);
  const names: string[] = [];
  const sources: number[] = [];
  let withoutGenes = 0;
  const geneSum = o.genesOut && o.geneContext ? new Float64Array(V * d) : undefined;
  const geneCount = geneSum ? new Float64Array(V) : undefined;
  const sourceNames = o.inputs.map((p) => path.basename(p).replace(/\.(h5ad|h5)$/i, ""));
  let total = 0;
  const sources0 = [];
  const combined = !(o.inputs.length === 1 && !isTokenizedDir(o.inputs[0]));
  const carry = o.obsColumns ?? (combined ? [...new Set(o.inputs.flatMap((p) => (isTokenizedDir(p) ? tokenizedColumns(p) : [])))] : []);
  const obsValues: Record<string, (string | null)[]> = Object.fromEntries(carry.map((c) => [c, []]));
  try {
    for (const input of o.inputs) {
      const columns = isTokenizedDir(input) ? carry.filter((c) => tokenizedColumns(input).includes(c)) : carry;
      const src = await openCellSource(input, { vocab: model.vocab, medians: () => model.medians(), maxGenes, columns, countsLayer: o.countsLayer, geneIdColumn: o.geneIdColumn, geneMap: o.geneMap });
      sources0.push(src);
      total += Math.max(0, src.nCells);
    }
  } catch (e) {
    for (const s of sources0) s.close();
    throw e;
  }
  // The native engine's hidden states feed every pooling (as they always have); onnxruntime returns
  // the pooled state unless the genes' own states are needed.
  const what: CellOutput = model.runtime === "native" || geneSum ? "hidden" : cls ? "cls" : "mean";
  const progress = createProgress({ label: "embed", total, unit: "cells" });
  const consume = (out: Float32Array, p: PendingBatch) => {
    const first = cls ? 1 : 0;
    for (let r = 0; r < p.cells.length; r++) {
      const at = p.cells[r].row * d;
      const nGenes = p.cells[r].ids.length;
      if (what !== "hidden") {
        if (cls || nGenes > 0) embedding.set(out.subarray(r * d, r * d + d), at);
        continue;
      }
      const base = r * p.length * d;
      if (cls) embedding.set(out.subarray(base, base + d), at);
      else if (nGenes > 0) {
        for (let t = 0; t < nGenes; t++) for (let c = 0; c < d; c++) embedding[at + c] += out[base + t * d + c];
        for (let c = 0; c < d; c++) embedding[at + c] /= nGenes;
      }
      if (geneSum && geneCount)
        for (let t = 0; t < nGenes; t++) {
          const id = p.seqs[r][first + t];
          geneCount[id]++;
          for (let c = 0; c < d; c++) geneSum[id * d + c] += out[base + (first + t) * d + c];
        }
    }
    progress.increment(p.cells.length);
  };
  const pipeline = new BatchPipeline<PendingBatch>(model.pipeline, consume);
  try {
    for (let k = 0; k < sources0.length; k++) {
      const src = sources0[k];
      let batch: { ids: Int32Array; row: number }[] = [];
      const flush = async () => {
        if (batch.length === 0) return;
        const seqs = batch.map((c) => {
          if (!cls) return c.ids.length ? c.ids : Int32Array.of(model.padId);
          return withCls(c.ids, model.clsId!);
        });
        const b = padBatch(seqs, model.padId);
        const cells = batch;
        batch = [];
        await pipeline.push(model.run(b, what), { cells, seqs, length: b.length });
      };
      for (const c of src.cells()) {
        const row = names.length;
        embedding = withRoom(embedding, row + 1, d);
        names.push(o.inputs.length > 1 ? `${c.name}-${k}` : c.name);
        for (const col of carry) obsValues[col].push(c.columns[col] ?? null);
        sources.push(k);
        if (c.ids.length === 0) withoutGenes++;
        batch.push({ ids: c.ids, row });
        if (batch.length === o.batchSize) await flush();
      }
      await flush();
    }
    await pipeline.finish();
  } finally {
    for (const s of sources0) s.close();
    progress.stop();
  }
  const n = names.length;
  embedding = embedding.slice(0, n * d);
  if (withoutGenes) log.warn({ cells: withoutGenes }, `${withoutGenes} cell(s) have no gene of the model's vocabulary; their embedding is ${cls ? "the [CLS] state of an empty cell" : "zero"}`);
  const seconds = (Date.now() - t0) / 1000;

  if (o.out) {
    fs.mkdirSync(path.dirname(path.resolve(o.out)), { recursive: true });
    if (outExt === ".npy") writeNpy(o.out, embedding, [n, d]);
    else if (outExt === ".arrow") writeArrow(o.out, names, sources.map((s) => sourceNames[s]), embedding, d, o.key, o.batchColumn);
    else if (!combined) await addObsmToH5ad(o.inputs[0], o.out, [{ key: o.key, data: embedding, nCols: d }]);
    else
      await writeEmbeddingH5ad(o.out, {
        obsNames: names,
        obs: { ...obsValues, [o.batchColumn]: sources.map((s) => sourceNames[s]) },
        obsm: [{ key: o.key, data: embedding, nCols: d }],
      });
  }
  if (o.genesOut) writeGeneEmbeddings(o.genesOut, model, geneSum, geneCount);
  return { cells: n, dim: d, pooling, withoutGenes, out: o.out, genesOut: o.genesOut, seconds, cellsPerSecond: n / seconds, embedding, names, sources, runtime: model.runtime };
}

/** The kept obs columns of a tokenized dataset (its features besides input_ids and length). */
function tokenizedColumns(dir: string): string[] {
  const info = JSON.parse(fs.readFileSync(path.join(dir, "dataset_info.json"), "utf8")) as { features?: Record<string, unknown> };
  return Object.keys(info.features ?? {}).filter((k) => k !== "input_ids" && k !== "length");
}

/** Gene embeddings: the input table for every vocabulary gene, or context means for genes seen in the cells. */
function writeGeneEmbeddings(file: string, m: CellModel, sum?: Float64Array, count?: Float64Array): void {
  const d = m.dModel;
  const genes = m.vocab.genes().filter((g) => !count || count[m.vocab.get(g)!] > 0);
  const ids = genes.map((g) => m.vocab.get(g)!);
  let data: Float32Array;
  if (sum && count) {
    data = new Float32Array(ids.length * d);
    ids.forEach((id, i) => {
      for (let c = 0; c < d; c++) data[i * d + c] = sum[id * d + c] / count[id];
    });
  } else if (m.geneTable) data = m.geneTable(ids);
  else throw usageError("--genes-out without --gene-context needs the model's input embedding table (a model folder)");
  if (path.extname(file).toLowerCase() === ".npy") {
    writeNpy(file, data, [ids.length, d]);
    writeFileAtomic(file.replace(/\.npy$/i, "") + ".genes.txt", genes.join("\n") + "\n");
    return;
  }
  const lines = ["gene\t" + Array.from({ length: d }, (_, c) => `dim_${c}`).join("\t")];
  genes.forEach((g, i) => lines.push(g + "\t" + Array.from(data.subarray(i * d, (i + 1) * d), (v) => v.toPrecision(7)).join("\t")));
  writeFileAtomic(file, lines.join("\n") + "\n");
}
