import * as path from "node:path";
import type { Logger } from "@gm/core";
import { ExitCode, GmError, usageError } from "@gm/core";
import { loadNative } from "@gm/engine";
import { finetune, FINETUNE_DEFAULTS, type FinetuneOptions } from "@gm/train";
import { onGracefulStop } from "../main.js";

export async function run(o: Record<string, unknown>, _args: string[], log: Logger): Promise<void> {
  for (const k of ["model", "data", "out"] as const) if (!o[k]) throw usageError(`gm finetune needs --${k}`);
  if (!o.labelKey) throw usageError("gm finetune needs --label-key COLUMN (the obs / dataset column with the cell types)");
  const cw = String(o.classWeight ?? "none");
  if (cw !== "none" && cw !== "balanced") throw usageError(`--class-weight must be none or balanced (got ${cw})`);
  if (o.threads !== undefined) loadNative().setThreads(Number(o.threads));
  let stop = false;
  onGracefulStop(() => (stop = true));
  const opts: FinetuneOptions = {
    ...FINETUNE_DEFAULTS,
    model: String(o.model),
    data: String(o.data),
    out: String(o.out),
    labelKey: String(o.labelKey),
    splitKey: o.splitKey as string | undefined,
    valFraction: Number(o.valFraction ?? FINETUNE_DEFAULTS.valFraction),
    epochs: Number(o.epochs ?? FINETUNE_DEFAULTS.epochs),
    batchSize: Number(o.batchSize ?? FINETUNE_DEFAULTS.batchSize),
    lr: Number(o.lr ?? FINETUNE_DEFAULTS.lr),
    patience: Number(o.patience ?? FINETUNE_DEFAULTS.patience),
    maxLength: Number(o.maxLength ?? FINETUNE_DEFAULTS.maxLength),
    freezeBackbone: Boolean(o.freezeBackbone),
    classWeight: cw,
    seed: Number(o.seed ?? 0),
    maxCells: Number(o.maxCells ?? 0),
    resume: Boolean(o.resume),
    medians: o.medians as string | undefined,
    countsLayer: o.countsLayer as string | undefined,
    geneIdColumn: o.geneIdColumn as string | undefined,
    geneMap: o.geneMap as string | undefined,
    dropLabels: (o.dropLabels as string[] | undefined) ?? [],
    head: { hidden: Number(o.headHidden ?? 512), n_layers: Number(o.headLayers ?? 4), dropout: Number(o.headDropout ?? 0.5) },
    stopRequested: () => stop,
  };
  const r = await finetune(opts, log);
  log.info(
    { bestEpoch: r.best_epoch, valMacroF1: r.val.macroF1, valAccuracy: r.val.accuracy, seconds: r.seconds, peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024) },
    `finetune done: validation macro-F1 ${r.val.macroF1.toFixed(4)}, accuracy ${r.val.accuracy.toFixed(4)} (best epoch ${r.best_epoch} of ${r.epochs_run}${r.stopped_early ? ", stopped early" : ""}) in ${r.seconds.toFixed(1)} s -> ${r.out}/best, ${r.out}/predictions.csv`,
  );
  if (o.report !== false) {
    const { annotationReport } = await import("./evaluate.js");
    await annotationReport({ predictions: path.join(r.out, "predictions.csv"), out: path.join(r.out, "report"), part: "val" }, log);
  }
  if (r.interrupted) throw new GmError(`interrupted during epoch ${r.epochs_run + 1}; ${r.out}/last holds epoch ${r.epochs_run}: continue with --resume`, ExitCode.interrupted);
}
