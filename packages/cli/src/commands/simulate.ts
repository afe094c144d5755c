import type { Logger } from "@gm/core";
import { createProgress } from "@gm/core";
import { simulate } from "@gm/data";
import { num } from "../options.js";

export async function run(o: Record<string, unknown>, _args: string[], log: Logger): Promise<void> {
  const cells = num(o.cells, "--cells");
  const progress = createProgress({ label: "simulate", total: cells, unit: "cells" });
  let last = 0;
  const r = await simulate(
    {
      cells,
      genes: num(o.genes, "--genes"),
      cellTypes: num(o.cellTypes, "--cell-types"),
      batches: num(o.batches, "--batches"),
      seed: num(o.seed, "--seed"),
      out: String(o.out),
      geneSetsOut: o.geneSets ? String(o.geneSets) : undefined,
    },
    (done) => {
      progress.increment(done - last);
      last = done;
    },
  );
  progress.stop();
  log.info({ ...r }, `simulated ${r.cells} cells x ${r.genes} genes (${r.meanGenesPerCell.toFixed(0)} expressed genes per cell on average) in ${r.seconds.toFixed(1)} s -> ${r.path}`);
}
