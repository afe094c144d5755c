import type { Logger } from "@gm/core";
import { usageError } from "@gm/core";
import { tokenize, TOKENIZE_DEFAULTS } from "@gm/data";
import { cleaningSettings, num } from "../options.js";

export async function run(o: Record<string, unknown>, inputs: string[], log: Logger): Promise<void> {
  const out = o.out as string | undefined;
  if (!out) throw usageError("gm tokenize needs --out DIR");
  if (!o.medians) throw usageError("gm tokenize needs --medians FILE (gm preprocess writes gene_medians.json)");
  if (inputs.length === 0) throw usageError("gm tokenize needs an INPUT: a gm preprocess folder or .h5ad / 10x inputs");
  const keep = o.keepColumns;
  const r = await tokenize({
    ...TOKENIZE_DEFAULTS,
    input: inputs,
    out,
    ...cleaningSettings(o),
    medians: String(o.medians),
    vocab: o.vocab as string | undefined,
    maxLen: num(o.maxLen, "--max-len"),
    cls: Boolean(o.cls),
    eos: Boolean(o.eos),
    keepColumns: Array.isArray(keep) ? keep.map(String) : typeof keep === "string" ? keep.split(",").filter(Boolean) : [],
  });
  log.info(
    { ...r, peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024) },
    `tokenize done: ${r.cellsOut} cells (${r.meanLength.toFixed(0)} tokens on average, ${r.truncated} truncated, ${r.droppedNoTokens} without tokens) in ${r.shards} shard(s), ${r.seconds.toFixed(1)} s -> ${r.out}`,
  );
}
