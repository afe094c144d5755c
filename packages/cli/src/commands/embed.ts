import type { Logger } from "@gm/core";
import { usageError } from "@gm/core";
import type { OnnxProvider } from "@gm/onnx";
import { embed, type EmbedPooling, type RuntimeKind } from "@gm/train";

export async function run(o: Record<string, unknown>, args: string[], log: Logger): Promise<void> {
  if (!o.model) throw usageError("gm embed needs --model DIR (or an .onnx file)");
  const inputs = [...((o.data as string[] | undefined) ?? []), ...args];
  const r = await embed(
    {
      model: String(o.model),
      inputs,
      out: o.out as string | undefined,
      key: String(o.key ?? "X_genemamba"),
      pooling: o.pooling as EmbedPooling | undefined,
      batchSize: Number(o.batchSize ?? 32),
      maxLength: Number(o.maxLength ?? 2048),
      genesOut: o.genesOut as string | undefined,
      geneContext: Boolean(o.geneContext),
      batchColumn: String(o.batchColumn ?? "file"),
      obsColumns: o.obsColumns as string[] | undefined,
      medians: o.medians as string | undefined,
      countsLayer: o.countsLayer as string | undefined,
      geneIdColumn: o.geneIdColumn as string | undefined,
      geneMap: o.geneMap as string | undefined,
      runtime: o.runtime as RuntimeKind | undefined,
      threads: o.threads === undefined ? undefined : Number(o.threads),
      workers: o.workers === undefined ? undefined : Number(o.workers),
      provider: (o.provider as OnnxProvider | undefined) ?? "auto",
    },
    log,
  );
  log.info(
    { cells: r.cells, dim: r.dim, pooling: r.pooling, runtime: r.runtime, cellsPerSecond: Math.round(r.cellsPerSecond), withoutGenes: r.withoutGenes, peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024) },
    `embed done: ${r.cells} cells x ${r.dim} (${r.pooling} pooling, ${r.runtime}) in ${r.seconds.toFixed(1)} s (${r.cellsPerSecond.toFixed(0)} cells/s)${r.out ? ` -> ${r.out}` : ""}${r.genesOut ? `, genes -> ${r.genesOut}` : ""}`,
  );
}
