import type { Logger } from "@gm/core";
import { usageError } from "@gm/core";
import type { OnnxProvider } from "@gm/onnx";
import { predict, PREDICT_DEFAULTS, type RuntimeKind } from "@gm/train";

export async function run(o: Record<string, unknown>, _args: string[], log: Logger): Promise<void> {
  if (!o.model) throw usageError("gm predict needs --model (a gm finetune model folder or an .onnx exported with --with-classifier)");
  if (!o.data) throw usageError("gm predict needs --data (an .h5ad / 10x file or a gm tokenize folder)");
  if (!o.out) throw usageError("gm predict needs --out FILE (the predictions CSV)");
  const r = await predict(
    {
      model: String(o.model),
      data: String(o.data),
      out: String(o.out),
      batchSize: Number(o.batchSize ?? PREDICT_DEFAULTS.batchSize),
      maxLength: Number(o.maxLength ?? PREDICT_DEFAULTS.maxLength),
      labelKey: o.labelKey as string | undefined,
      runtime: o.runtime as RuntimeKind | undefined,
      threads: o.threads === undefined ? undefined : Number(o.threads),
      workers: o.workers === undefined ? undefined : Number(o.workers),
      provider: (o.provider as OnnxProvider | undefined) ?? "auto",
      medians: o.medians as string | undefined,
      countsLayer: o.countsLayer as string | undefined,
      geneIdColumn: o.geneIdColumn as string | undefined,
      geneMap: o.geneMap as string | undefined,
    },
    log,
  );
  log.info(
    { cells: r.cells, classes: r.classes.length, runtime: r.runtime, cellsPerSecond: Math.round(r.cellsPerSecond), withoutGenes: r.withoutGenes, accuracy: r.accuracy, macroF1: r.macroF1 },
    `predict done: ${r.cells} cells, ${r.classes.length} classes (${r.runtime}) in ${r.seconds.toFixed(1)} s (${r.cellsPerSecond.toFixed(0)} cells/s) -> ${r.out}`,
  );
}
