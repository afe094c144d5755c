import type { Logger } from "@gm/core";
import { usageError } from "@gm/core";
import { exportOnnx, type OnnxScan } from "@gm/onnx";

export async function run(o: Record<string, unknown>, _args: string[], log: Logger): Promise<void> {
  if (!o.model) throw usageError("gm export needs --model DIR (a gm pretrain or finetune model folder)");
  if (!o.onnx) throw usageError("gm export needs --onnx FILE (the .onnx file to write)");
  const r = await exportOnnx({
    model: String(o.model),
    out: String(o.onnx),
    withClassifier: Boolean(o.withClassifier),
    fp16: Boolean(o.fp16),
    withLogits: Boolean(o.withLogits),
    scan: o.scan as OnnxScan | undefined,
    chunk: o.chunk === undefined ? undefined : Number(o.chunk),
  });
  const c = r.config;
  log.info(
    { out: r.out, megabytes: +(r.bytes / 2 ** 20).toFixed(1), outputs: r.outputs, scan: r.scan, precision: o.fp16 ? "fp16" : "fp32" },
    `export done: ${c.mixer}/${c.combine} ${c.n_layer}x${c.d_model} -> ${r.out} (${(r.bytes / 2 ** 20).toFixed(1)} MB, outputs ${r.outputs.join(", ")}, ${r.scan} scan) in ${r.seconds.toFixed(1)} s`,
  );
}
