/**
 * `gm finetune`: cell-type annotation as GeneMamba2ForCellClassification does it, without its bugs.
 * [CLS] is added to the pretrained vocabulary (embedding and LM-head rows = the mean of the others,
 * bias kept), prepended at position 0, and its final post-norm state feeds the reference head
 * (ClassifierHead, native). Full fine-tuning by default (Adam, lr 1e-4, batch 24 as the reference),
 * or a frozen backbone. Unlike the reference script, which reports its last epoch on the test
 * part, we select the epoch with the best validation macro-F1 and stop early when it stalls.
 *
 * Output folder: best/ (a loadable model bundle: weights, vocab with [CLS], head, labels, medians),
 * last/ (the same plus optimizer state and the loop position: --resume continues from it),
 * predictions.csv (every cell, with its part), metrics.json, confusion_matrix.csv, history.jsonl.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { randomBytes } from "node:crypto";
import { createProgress, getLogger, inputError, readJsonFile, usageError, writeFileAtomic, writeJsonAtomic, type Logger } from "@gm/core";
import type { Vocabulary } from "@gm/data";
import { ClassifierHead, GeneMamba, padBatch, writeSafetensors, type Batch } from "@gm/engine";
import { classificationReport, type ClassificationReport } from "@gm/eval";
import { bundleMedians, CLS_TOKEN, HEAD_FILE, LABELS_FILE, loadModelBundle, type LabelsInfo, type ModelBundle } from "./bundle.js";
import { openCellSource, withCls, type InputCell } from "./cells.js";
import { clsStates } from "./backend.js";
import { adamTensors, MEDIANS_FILE, readAdamState, type AdamOwner } from "./checkpoint.js";
import { csvField } from "./predict.js";
import { JsonlWriter } from "./metrics.js";
import { Rng, Stream } from "./rng.js";
import { splitFromColumn, stratifiedSplit, type Part } from "./split.js";

export interface FinetuneOptions {
  model: string;
  data: string;
  out: string;
  labelKey: string;
  splitKey?: string;
  valFraction: number;
  epochs: number;
  batchSize: number;
  lr: number;
  patience: number;
  /** Tokens per cell including [CLS]. */
  maxLength: number;
  freezeBackbone: boolean;
  classWeight: "none" | "balanced";
  seed: number;
  /** Use at most this many cells (a seeded, per-class proportional subsample); 0 = all. */
  maxCells: number;
  resume: boolean;
  medians?: string;
  countsLayer?: string;
  geneIdColumn?: string;
  geneMap?: string;
  /** Cells whose label is one of these are left out (e.g. "unknown"). */
  dropLabels: string[];
  head: { hidden: number; n_layers: number; dropout: number };
  /** Checked between steps (SIGINT/SIGTERM): the epoch in progress is abandoned, last/ is kept. */
  stopRequested?: () => boolean;
}

export const FINETUNE_DEFAULTS = {
  valFraction: 0.1,
  epochs: 10,
  batchSize: 24,
  lr: 1e-4,
  patience: 3,
  maxLength: 2048,
  freezeBackbone: false,
  classWeight: "none" as const,
  seed: 0,
  maxCells: 0,
  resume: false,
  dropLabels: [] as string[],
  head: { hidden: 512, n_layers: 4, dropout: 0.5 },
};

export interface EpochRecord {
  epoch: number;
  train_loss: number;
  val_loss: number;
  val_accuracy: number;
  val_macro_f1: number;
  seconds: number;
  cells_per_second: number;
}

export interface FinetuneSummary {
  out: string;
  cells: { train: number; val: number; dropped_no_genes: number; dropped_label: number };
  classes: string[];
  best_epoch: number;
  best_val_macro_f1: number;
  epochs_run: number;
  stopped_early: boolean;
  interrupted: boolean;
  val: ClassificationReport;
  history: EpochRecord[];
  seconds: number;
}

interface LoopState {
  format: "gm.finetune-state/1";
  epoch: number; // epochs completed
  step: number; // optimizer steps taken
  best_epoch: number;
  best_val_macro_f1: number;
  since_best: number;
  fingerprint: string;
}

const STATE_FORMAT = "gm.finetune-state/1";
export const FINETUNE_FILES = { predictions: "predictions.csv", metrics: "metrics.json", confusion: "confusion_matrix.csv", history: "history.jsonl", settings: "finetune.json" };

interface Dataset {
  cells: { ids: Int32Array; label: number; part: Part; name: string }[];
  classes: string[];
  droppedNoGenes: number;
  droppedLabel: number;
}

/** Reads the labelled cells, drops unusable ones, splits them. */
async function loadDataset(o: FinetuneOptions, bundle: ModelBundle, vocab: Vocabulary, log: Logger): Promise<Dataset> {
  const columns = [o.labelKey, ...(o.splitKey ? [o.splitKey] : [])];
  const src = await openCellSource(o.data, {
    vocab,
    medians: () => bundleMedians(bundle),
    maxGenes: o.maxLength - 1,
    columns,
    countsLayer: o.countsLayer,
    geneIdColumn: o.geneIdColumn,
    geneMap: o.geneMap,
  });
  const raw: InputCell[] = [];
  let droppedNoGenes = 0, droppedLabel = 0;
  const drop = new Set(o.dropLabels);
  for (const c of src.cells()) {
    const label = c.columns[o.labelKey];
    if (label === null || label === "" || drop.has(label)) {
      droppedLabel++;
      continue;
    }
    if (c.ids.length === 0) {
      droppedNoGenes++;
      continue;
    }
    raw.push(c);
  }
  src.close();
  if (raw.length === 0) throw inputError(o.data, `no cell has both a ${o.labelKey} label and a gene of the model's vocabulary`);
  let labels = raw.map((c) => c.columns[o.labelKey]!);
  let kept = raw;
  if (o.maxCells > 0 && raw.length > o.maxCells) {
    const idx = proportionalSubsample(labels, o.maxCells, o.seed);
    kept = idx.map((i) => raw[i]);
    labels = idx.map((i) => labels[i]);
    log.info({ cells: raw.length, kept: kept.length }, `--max-cells: fine-tuning on ${kept.length} of ${raw.length} cells (stratified)`);
  }
  const parts = o.splitKey ? splitFromColumn(kept.map((c) => c.columns[o.splitKey!]), o.data, o.splitKey) : stratifiedSplit(labels, o.valFraction, o.seed, o.data, o.labelKey);
  const classes = [...new Set(labels)].sort();
  if (classes.length < 2) throw inputError(o.data, `${o.labelKey}: only one class (${JSON.stringify(classes[0])}); annotation needs at least 2`);
  const code = new Map(classes.map((c, i) => [c, i]));
  return {
    cells: kept.map((c, i) => ({ ids: c.ids, label: code.get(labels[i])!, part: parts[i], name: c.name })),
    classes,
    droppedNoGenes,
    droppedLabel,
  };
}

/** A seeded subsample of about `max` indices keeping every class (at least 2 cells each where it has them). */
function proportionalSubsample(labels: string[], max: number, seed: number): number[] {
  const by = new Map<string, number[]>();
  labels.forEach((l, i) => (by.get(l) ?? by.set(l, []).get(l)!).push(i));
  const out: number[] = [];
  for (const [l, idx] of [...by].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const order = Int32Array.from(idx);
    new Rng(seed, Stream.subsample, l.length, idx.length).shuffle(order);
    const n = Math.min(idx.length, Math.max(2, Math.round((idx.length * max) / labels.length)));
    for (let k = 0; k < n; k++) out.push(order[k]);
  }
  return out.sort((a, b) => a - b);
}

export interface Prediction {
  predicted: Int32Array;
  confidence: Float32Array;
  loss: number;
}

/** Eval-mode predictions (running BatchNorm statistics, no dropout) for sequences that start with [CLS]. */
export function predictCells(model: GeneMamba, head: ClassifierHead, seqs: Int32Array[], targets: Int32Array | null, batchSize = 64, onBatch?: (n: number) => void): Prediction {
  const d = model.config.d_model;
  const C = head.config.n_classes;
  const predicted = new Int32Array(seqs.length);
  const confidence = new Float32Array(seqs.length);
  let lossSum = 0;
  // length-sorted batches: less padding, same results (each row is independent in eval mode)
  const order = Array.from(seqs.keys()).sort((a, b) => seqs[a].length - seqs[b].length);
  for (let s = 0; s < order.length; s += batchSize) {
    const idx = order.slice(s, s + batchSize);
    const b = padBatch(idx.map((i) => seqs[i]), model.config.pad_token_id);
    const { hidden } = model.forward(b);
    const logits = head.forward(clsStates(hidden, b, d), b.batch, false);
    idx.forEach((cell, r) => {
      let best = 0, mx = -Infinity, sum = 0;
      for (let c = 0; c < C; c++) if (logits[r * C + c] > mx) (mx = logits[r * C + c]), (best = c);
      for (let c = 0; c < C; c++) sum += Math.exp(logits[r * C + c] - mx);
      predicted[cell] = best;
      confidence[cell] = 1 / sum;
      if (targets) lossSum += Math.log(sum) - (logits[r * C + targets[cell]] - mx);
    });
    onBatch?.(idx.length);
  }
  return { predicted, confidence, loss: targets ? lossSum / Math.max(1, seqs.length) : NaN };
}

function fingerprintOf(o: FinetuneOptions, bundle: ModelBundle): string {
  const { stopRequested, resume, out, ...rest } = o;
  void stopRequested, resume, out;
  return JSON.stringify({ ...rest, model: path.resolve(bundle.dir), data: path.resolve(o.data) });
}

/** Saves a model bundle folder atomically (temporary folder + rename). */
function saveBundle(dir: string, model: GeneMamba, head: ClassifierHead, vocab: Vocabulary, labels: LabelsInfo, mediansFile: string | undefined, extra?: (tmp: string) => void): void {
  const parent = path.dirname(dir);
  const tmp = path.join(parent, `.${path.basename(dir)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  fs.mkdirSync(tmp, { recursive: true });
  try {
    model.save(tmp, { gm_kind: "finetuned" });
    head.save(path.join(tmp, HEAD_FILE));
    writeJsonAtomic(path.join(tmp, "vocab.json"), vocab.toJSON());
    writeJsonAtomic(path.join(tmp, LABELS_FILE), labels);
    if (mediansFile) fs.copyFileSync(mediansFile, path.join(tmp, MEDIANS_FILE));
    extra?.(tmp);
    if (fs.existsSync(dir)) fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Fine-tuning's AdamW state: the head's moments and, unless frozen, the backbone's. */
function optimizerParts(model: GeneMamba, head: ClassifierHead, frozen: boolean): { prefix: string; owner: AdamOwner }[] {
  return [...(frozen ? [] : [{ prefix: "backbone.", owner: model }]), { prefix: "head.", owner: head }];
}

export async function finetune(o: FinetuneOptions, log: Logger = getLogger()): Promise<FinetuneSummary> {
  const t0 = Date.now();
  if (!o.labelKey) throw usageError("gm finetune needs --label-key COLUMN (the obs column with cell types)");
  if (!Number.isInteger(o.batchSize) || o.batchSize < 2) throw usageError("--batch-size must be an integer >= 2 (BatchNorm needs 2 cells)");
  if (!Number.isInteger(o.epochs) || o.epochs < 1) throw usageError("--epochs must be a positive integer");
  if (!Number.isInteger(o.maxLength) || o.maxLength < 2) throw usageError("--max-length must be an integer >= 2");
  if (!(o.lr > 0)) throw usageError("--lr must be positive");
  fs.mkdirSync(o.out, { recursive: true });
  const bundle = loadModelBundle(o.model, { medians: o.medians });
  const lastDir = path.join(o.out, "last");
  const resuming = o.resume && fs.existsSync(path.join(lastDir, "state.json"));
  if (!o.resume && fs.existsSync(path.join(o.out, FINETUNE_FILES.settings)))
    throw inputError(o.out, "already holds a gm finetune run; pass --resume to continue it or choose another --out");

  // Backbone with [CLS] (a pretrained model gets one; a fine-tuned model already has it).
  let vocab = bundle.vocab;
  let model = bundle.model;
  if (bundle.clsId === undefined) {
    vocab = vocab.withSpecials([CLS_TOKEN]);
    model = model.withAddedTokens(1);
  }
  const clsId = vocab.get(CLS_TOKEN)!;
  const data = await loadDataset(o, bundle, vocab, log);
  const C = data.classes.length;
  const labelsInfo: LabelsInfo = { format: "gm.labels/1", label_key: o.labelKey, classes: data.classes };
  let head = ClassifierHead.create({ d_in: model.config.d_model, n_classes: C, ...o.head }, o.seed);
  const fingerprint = fingerprintOf(o, bundle);
  const st: LoopState = { format: STATE_FORMAT, epoch: 0, step: 0, best_epoch: 0, best_val_macro_f1: -1, since_best: 0, fingerprint };
  const history = new JsonlWriter(path.join(o.out, FINETUNE_FILES.history));
  if (resuming) {
    const prev = readJsonFile<LoopState>(path.join(lastDir, "state.json"), "fine-tuning state");
    if (prev.format !== STATE_FORMAT) throw inputError(path.join(lastDir, "state.json"), "not a gm finetune state");
    if (prev.fingerprint !== fingerprint) throw inputError(path.join(lastDir, "state.json"), "was written with other options, model or data; resume with the same command");
    model = GeneMamba.load(lastDir);
    head = ClassifierHead.load(path.join(lastDir, HEAD_FILE));
    readAdamState(path.join(lastDir, "optimizer.safetensors"), optimizerParts(model, head, o.freezeBackbone));
    Object.assign(st, prev);
    history.truncateAfter(st.epoch);
    log.info({ epoch: st.epoch, best: st.best_val_macro_f1 }, `resuming after epoch ${st.epoch} (best validation macro-F1 ${st.best_val_macro_f1.toFixed(4)} at epoch ${st.best_epoch})`);
  } else {
    if (fs.existsSync(history.file)) fs.rmSync(history.file);
    writeJsonAtomic(path.join(o.out, FINETUNE_FILES.settings), { command: "finetune", ...o, model: path.resolve(bundle.dir), data: path.resolve(o.data), stopRequested: undefined, classes: data.classes });
  }

  const train = data.cells.filter((c) => c.part === "train");
  const val = data.cells.filter((c) => c.part === "val");
  const trainSeqs = train.map((c) => withCls(c.ids, clsId));
  const valSeqs = val.map((c) => withCls(c.ids, clsId));
  const valTargets = Int32Array.from(val, (c) => c.label);
  const counts = new Float64Array(C);
  for (const c of train) counts[c.label]++;
  const missingInTrain = data.classes.filter((_, k) => counts[k] === 0);
  if (missingInTrain.length) throw inputError(o.data, `${o.splitKey}: class${missingInTrain.length > 1 ? "es" : ""} ${missingInTrain.slice(0, 3).join(", ")} ha${missingInTrain.length > 1 ? "ve" : "s"} no training cell`);
  const classWeight = o.classWeight === "balanced" ? Float32Array.from(counts, (n) => train.length / (C * n)) : undefined;
  log.info(
    { train: train.length, val: val.length, classes: C, droppedNoGenes: data.droppedNoGenes, droppedLabel: data.droppedLabel, frozen: o.freezeBackbone },
    `fine-tuning on ${train.length} cells, validating on ${val.length}, ${C} classes (${o.labelKey})${o.freezeBackbone ? ", backbone frozen" : ""}`,
  );

  const d = model.config.d_model;
  let interrupted = false, stoppedEarly = false;
  const records = history.read() as unknown as EpochRecord[];
  while (st.epoch < o.epochs) {
    if (st.since_best >= o.patience) {
      stoppedEarly = true;
      break;
    }
    const epoch = st.epoch + 1;
    const te = Date.now();
    const order = Int32Array.from(train.keys());
    new Rng(o.seed, Stream.finetuneOrder, epoch).shuffle(order);
    const progress = createProgress({ label: `epoch ${epoch}/${o.epochs}`, total: order.length, unit: "cells" });
    let lossSum = 0, lossCells = 0;
    for (let s = 0; s < order.length; s += o.batchSize) {
      if (o.stopRequested?.()) {
        interrupted = true;
        break;
      }
      const idx = Array.from(order.subarray(s, s + o.batchSize));
      if (idx.length < 2) break; // BatchNorm cannot train on one cell (torch raises); the reference drops nothing, so this is at most 1 cell per epoch
      const b = padBatch(idx.map((i) => trainSeqs[i]), model.config.pad_token_id);
      const { hidden } = model.forward(b);
      const x = clsStates(hidden, b, d);
      st.step++;
      head.forward(x, b.batch, true, st.step + o.seed * 1_000_003);
      head.zeroGrad();
      const loss = head.loss(Int32Array.from(idx, (i) => train[i].label), { classWeight, backward: true });
      if (!Number.isFinite(loss)) throw new Error(`fine-tuning diverged at epoch ${epoch} step ${st.step} (loss ${loss}); lower --lr`);
      if (!o.freezeBackbone) {
        const dx = head.inputGrad();
        const hg = new Float32Array(b.batch * b.length * d);
        for (let r = 0; r < b.batch; r++) hg.set(dx.subarray(r * d, r * d + d), r * b.length * d);
        model.zeroGrad();
        model.backwardFromHidden(hg);
        model.optimizerStep({ lr: o.lr, step: st.step });
      }
      head.optimizerStep({ lr: o.lr, step: st.step });
      lossSum += loss * idx.length;
      lossCells += idx.length;
      progress.increment(idx.length);
    }
    progress.stop();
    // An interrupted epoch's updates are discarded: last/ holds the state after the previous epoch.
    if (interrupted) break;
    const pv = predictCells(model, head, valSeqs, valTargets);
    const rep = classificationReport(
      val.map((c) => data.classes[c.label]),
      Array.from(pv.predicted, (p) => data.classes[p]),
    );
    const seconds = (Date.now() - te) / 1000;
    const rec: EpochRecord = { epoch, train_loss: lossSum / Math.max(1, lossCells), val_loss: pv.loss, val_accuracy: rep.accuracy, val_macro_f1: rep.macroF1, seconds, cells_per_second: lossCells / seconds };
    records.push(rec);
    history.write({ step: epoch, ...rec });
    st.epoch = epoch;
    if (rep.macroF1 > st.best_val_macro_f1) {
      st.best_val_macro_f1 = rep.macroF1;
      st.best_epoch = epoch;
      st.since_best = 0;
      saveBundle(path.join(o.out, "best"), model, head, vocab, labelsInfo, bundle.mediansFile);
    } else st.since_best++;
    saveBundle(lastDir, model, head, vocab, labelsInfo, bundle.mediansFile, (tmp) => {
      writeSafetensors(path.join(tmp, "optimizer.safetensors"), optimizerParts(model, head, o.freezeBackbone).flatMap((p) => adamTensors(p.owner, p.prefix)), { format: "gm.finetune-adam/1" });
      writeJsonAtomic(path.join(tmp, "state.json"), st);
    });
    log.info(rec, `epoch ${epoch}: train loss ${rec.train_loss.toFixed(4)}, validation loss ${rec.val_loss.toFixed(4)}, accuracy ${rec.val_accuracy.toFixed(4)}, macro-F1 ${rec.val_macro_f1.toFixed(4)}${st.best_epoch === epoch ? " (best)" : ""} in ${seconds.toFixed(1)} s`);
  }
  if (st.since_best >= o.patience && st.epoch < o.epochs) stoppedEarly = true;
  if (st.best_epoch === 0) throw new Error(`fine-tuning stopped before the first epoch finished; nothing to save (rerun with --resume)`);

  // Predictions of the best model for every cell.
  const best = loadModelBundle(path.join(o.out, "best"));
  const allSeqs = data.cells.map((c) => withCls(c.ids, clsId));
  const all = predictCells(best.model, best.head!, allSeqs, null);
  const rows = ["cell,part,label,predicted,confidence"];
  data.cells.forEach((c, i) => rows.push([csvField(c.name), c.part, csvField(data.classes[c.label]), csvField(data.classes[all.predicted[i]]), all.confidence[i].toFixed(6)].join(",")));
  writeFileAtomic(path.join(o.out, FINETUNE_FILES.predictions), rows.join("\n") + "\n");
  const valIdx = data.cells.flatMap((c, i) => (c.part === "val" ? [i] : []));
  const report = classificationReport(
    valIdx.map((i) => data.classes[data.cells[i].label]),
    valIdx.map((i) => data.classes[all.predicted[i]]),
  );
  const cm = report.confusion;
  writeFileAtomic(path.join(o.out, FINETUNE_FILES.confusion), ["true\\predicted," + cm.labels.map(csvField).join(","), ...cm.labels.map((l, r) => [csvField(l), ...cm.matrix[r]].join(","))].join("\n") + "\n");
  const summary: FinetuneSummary = {
    out: o.out,
    cells: { train: train.length, val: val.length, dropped_no_genes: data.droppedNoGenes, dropped_label: data.droppedLabel },
    classes: data.classes,
    best_epoch: st.best_epoch,
    best_val_macro_f1: st.best_val_macro_f1,
    epochs_run: st.epoch,
    stopped_early: stoppedEarly,
    interrupted,
    val: report,
    history: records,
    seconds: (Date.now() - t0) / 1000,
  };
  writeJsonAtomic(path.join(o.out, FINETUNE_FILES.metrics), summary);
  return summary;
}
