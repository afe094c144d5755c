import type { Logger } from "@gm/core";
import { usageError } from "@gm/core";
import { mergePreprocess, parseShardSpec, preprocess, PREPROCESS_DEFAULTS } from "@gm/data";
import { cleaningSettings } from "../options.js";

export async function run(o: Record<string, unknown>, inputs: string[], log: Logger): Promise<void> {
  const out = o.out as string | undefined;
  if (!out) throw usageError("gm preprocess needs --out DIR");
  const merge = o.merge as string[] | undefined;
  if (merge && merge.length) {
    if (inputs.length) throw usageError("--merge takes preprocess folders instead of inputs; drop the INPUT arguments");
    const r = mergePreprocess(merge, out);
    log.info({ ...r }, `merged ${merge.length} folders into ${r.out}: ${r.cellsOut} of ${r.cellsIn} cells kept, ${r.genesWithMedian} genes with a median`);
    return;
  }
  if (inputs.length === 0) throw usageError("gm preprocess needs at least one INPUT (.h5ad, 10x .h5, MEX folder, or a folder of them)");
  const r = await preprocess({
    ...PREPROCESS_DEFAULTS,
    inputs,
    out,
    ...cleaningSettings(o),
    vocab: o.vocab as string | undefined,
    log1p: Boolean(o.log1p),
    shard: o.shard ? parseShardSpec(String(o.shard)) : undefined,
  });
  log.info(
    { ...r, peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024) },
    `preprocess done: ${r.cellsOut} of ${r.cellsIn} cells kept from ${r.inputs} input(s), ${r.genesWithMedian} genes with a median, ${r.unitsRun} units run, ${r.unitsSkipped} resumed, ${r.seconds.toFixed(1)} s -> ${r.out}`,
  );
}
