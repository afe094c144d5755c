/**
 * `gm predict`: cell-type predictions of a fine-tuned model for every cell of one input, in input
 * order, as CSV: cell, predicted, probability, then p_<class> per class. The model is a gm finetune
 * folder (native engine: the backbone's [CLS] state through the classifier head in eval mode) or an
 * .onnx exported with --with-classifier (its class_probabilities). Cells are tokenized as gm embed
 * does with cls pooling: [CLS] + the top maxLength - 1 genes.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createProgress, getLogger, inputError, usageError, writeFileAtomic, type Logger } from "@gm/core";
import { classificationReport } from "@gm/eval";
import { padBatch } from "@gm/engine";
import type { OnnxProvider } from "@gm/onnx";
import { BatchPipeline, openCellModel, withRoom, resolveRuntime, type CellModel, type RuntimeKind } from "./backend.js";
import { openCellSource, withCls } from "./cells.js";

export interface PredictOptions {
  model: string;
  data: string;
  out: string;
  batchSize: number;
  /** Tokens per cell including [CLS]. */
  maxLength: number;
  /** obs / dataset column with true labels: accuracy and macro-F1 are logged and returned. */
  labelKey?: string;
  runtime?: RuntimeKind;
  threads?: number;
  workers?: number;
  provider?: OnnxProvider;
  medians?: string;
  countsLayer?: string;
  geneIdColumn?: string;
  geneMap?: string;
}

export interface PredictResult {
  out: string;
  runtime: RuntimeKind;
  cells: number;
  classes: string[];
  names: string[];
  /** Class index per cell. */
  predicted: Int32Array;
  /** cells x classes, row-major. */
  probabilities: Float32Array;
  withoutGenes: number;
  /** With labelKey: the cells with a label, and the scores on them. */
  labelled?: number;
  accuracy?: number;
  macroF1?: number;
  seconds: number;
  cellsPerSecond: number;
}

export const PREDICT_DEFAULTS = { batchSize: 32, maxLength: 2048 };

/** RFC 4180 field: quoted when it holds a comma, a quote or a line break. */
export function csvField(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function requireClassifier(m: CellModel): string[] {
  if (m.classes && m.clsId !== undefined) return m.classes;
  if (m.runtime === "onnx") throw inputError(m.location, "was exported without --with-classifier, so it has no class probabilities; re-export with gm export --onnx --with-classifier");
  throw inputError(m.location, "is not a fine-tuned model (no classifier head); give a gm finetune output (its best/ folder) or an .onnx exported with --with-classifier");
}

export async function predict(o: PredictOptions, log: Logger = getLogger()): Promise<PredictResult> {
  const t0 = Date.now();
  if (!o.data) throw usageError("gm predict needs --data (an .h5ad / 10x file or a gm tokenize folder)");
  if (!o.out) throw usageError("gm predict needs --out FILE (the predictions CSV)");
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw usageError("--batch-size must be a positive integer");
  if (!Number.isInteger(o.maxLength) || o.maxLength < 2) throw usageError("--max-length must be an integer >= 2 ([CLS] and at least one gene)");
  const runtime = resolveRuntime(o.model, o.runtime);
  const model = await openCellModel(o.model, { runtime, medians: o.medians, threads: o.threads, workers: o.workers, provider: o.provider });
  try {
    return await predictWith(model, o, t0, log);
  } finally {
    await model.close();
  }
}

interface PendingBatch {
  rows: number[];
}

async function predictWith(model: CellModel, o: PredictOptions, t0: number, log: Logger): Promise<PredictResult> {
  const classes = requireClassifier(model);
  const C = classes.length;
  const clsId = model.clsId!;
  const columns = o.labelKey ? [o.labelKey] : [];
  const src = await openCellSource(o.data, { vocab: model.vocab, medians: () => model.medians(), maxGenes: o.maxLength - 1, columns, countsLayer: o.countsLayer, geneIdColumn: o.geneIdColumn, geneMap: o.geneMap });
  if (model.runtime === "onnx") log.info({ runtime: "onnx", provider: model.runner!.provider, workers: model.runner!.workers, threadsPerWorker: model.runner!.threadsPerWorker }, `onnxruntime: ${model.runner!.workers} session(s) on ${model.runner!.provider}`);
  const names: string[] = [];
  const labels: (string | null)[] = [];
  let probs: Float32Array = new Float32Array(1024 * C);
  let withoutGenes = 0;
  const progress = createProgress({ label: "predict", total: Math.max(0, src.nCells), unit: "cells" });
  const pipeline = new BatchPipeline<PendingBatch>(model.pipeline, (p, batch) => {
    batch.rows.forEach((row, r) => probs.set(p.subarray(r * C, (r + 1) * C), row * C));
    progress.increment(batch.rows.length);
  });
  try {
    let seqs: Int32Array[] = [];
    let rows: number[] = [];
    const flush = async () => {
      if (seqs.length === 0) return;
      const b = padBatch(seqs, model.padId);
      const meta = { rows };
      seqs = [];
      rows = [];
      await pipeline.push(model.run(b, "probabilities"), meta);
    };
    for (const c of src.cells()) {
      const row = names.length;
      probs = withRoom(probs, row + 1, C);
      names.push(c.name);
      if (o.labelKey) labels.push(c.columns[o.labelKey] ?? null);
      if (c.ids.length === 0) withoutGenes++;
      seqs.push(withCls(c.ids, clsId));
      rows.push(row);
      if (seqs.length === o.batchSize) await flush();
    }
    await flush();
    await pipeline.finish();
  } finally {
    src.close();
    progress.stop();
  }
  const n = names.length;
  probs = probs.slice(0, n * C);
  if (n === 0) throw inputError(o.data, "holds no cells");
  if (withoutGenes) log.warn({ cells: withoutGenes }, `${withoutGenes} cell(s) have no gene of the model's vocabulary; their prediction comes from the [CLS] state of an empty cell`);

  const predicted = new Int32Array(n);
  const lines = [["cell", "predicted", "probability", ...classes.map((c) => `p_${c}`)].map(csvField).join(",")];
  for (let i = 0; i < n; i++) {
    const p = probs.subarray(i * C, (i + 1) * C);
    let best = 0;
    for (let c = 1; c < C; c++) if (p[c] > p[best]) best = c;
    predicted[i] = best;
    lines.push([csvField(names[i]), csvField(classes[best]), p[best].toFixed(6), ...Array.from(p, (v) => v.toFixed(6))].join(","));
  }
  fs.mkdirSync(path.dirname(path.resolve(o.out)), { recursive: true });
  writeFileAtomic(o.out, lines.join("\n") + "\n");
  const seconds = (Date.now() - t0) / 1000;
  const result: PredictResult = { out: o.out, runtime: model.runtime, cells: n, classes, names, predicted, probabilities: probs, withoutGenes, seconds, cellsPerSecond: n / seconds };
  if (o.labelKey) {
    const idx = labels.flatMap((l, i) => (l === null ? [] : [i]));
    if (idx.length === 0) log.warn({ labelKey: o.labelKey }, `column ${o.labelKey} has no labels; no accuracy to report`);
    else {
      const rep = classificationReport(
        idx.map((i) => labels[i]!),
        idx.map((i) => classes[predicted[i]]),
      );
      Object.assign(result, { labelled: idx.length, accuracy: rep.accuracy, macroF1: rep.macroF1 });
      const unknown = new Set(idx.map((i) => labels[i]!).filter((l) => !classes.includes(l)));
      log.info(
        { labelled: idx.length, accuracy: rep.accuracy, macroF1: rep.macroF1, labelsNotInModel: [...unknown] },
        `against ${o.labelKey}: accuracy ${rep.accuracy.toFixed(4)}, macro-F1 ${rep.macroF1.toFixed(4)} on ${idx.length} labelled cells${unknown.size ? ` (${unknown.size} label(s) the model does not know count as errors)` : ""}`,
      );
    }
  }
  return result;
}
