import * as path from "node:path";
import type { Logger } from "@gm/core";
import { usageError } from "@gm/core";
import { assertRunnable, describeTopology, loadRunConfig, pretrain, resolveRunConfig, resolveTopology, RUN_FILE, type RunConfig } from "@gm/train";
import { loadNative } from "@gm/engine";
import * as fs from "node:fs";
import { onGracefulStop } from "../main.js";

/** Command-line flags win over the run config's fields. */
function applyFlags(cfg: RunConfig, o: Record<string, unknown>): RunConfig {
  const c = structuredClone(cfg);
  if (o.data) c.data.dir = path.resolve(String(o.data));
  if (o.maxSteps !== undefined) (c.train.max_steps = Number(o.maxSteps)), (c.train.epochs = null);
  if (o.microBatch !== undefined) c.batch.micro_batch = Number(o.microBatch);
  if (o.globalBatch !== undefined) c.batch.global_batch = Number(o.globalBatch);
  if (o.lr !== undefined) c.optimizer.lr = Number(o.lr);
  if (o.seed !== undefined) c.train.seed = Number(o.seed);
  if (o.pairs) c.objective.infonce.pairs = path.resolve(String(o.pairs));
  if (o.geneMap) c.objective.infonce.gene_map = path.resolve(String(o.geneMap));
  if (o.saveEvery !== undefined) c.checkpoint.every = Number(o.saveEvery);
  if (o.keepLast !== undefined) c.checkpoint.keep_last = Number(o.keepLast);
  if (o.logEvery !== undefined) c.log.every = Number(o.logEvery);
  return c;
}

export async function run(o: Record<string, unknown>, _args: string[], log: Logger): Promise<void> {
  const resume = o.resume !== undefined && o.resume !== false;
  const out = typeof o.resume === "string" ? o.resume : (o.out as string | undefined);
  if (!out) throw usageError(resume ? "gm pretrain --resume needs the run folder: --resume DIR" : "gm pretrain needs --out DIR");
  if (!resume && !o.config) throw usageError("gm pretrain needs --config FILE (see configs/pretrain/), or --resume DIR to continue a run");
  if (resume && o.config) log.warn("--resume uses the run's own config (OUT/run.json); --config is ignored except for checkpoint and log settings");
  const base = o.config ? loadRunConfig(String(o.config)) : resolveRunConfig({}, "defaults");
  const config = applyFlags(base, o);
  // On resume only the settings that leave the computation unchanged may differ: from flags, or
  // from the checkpoint/log sections of a --config given again.
  const fromFile = o.config ? base : undefined;
  const resumeOverrides = {
    checkpoint: {
      ...(fromFile ? fromFile.checkpoint : {}),
      ...(o.saveEvery !== undefined ? { every: Number(o.saveEvery) } : {}),
      ...(o.keepLast !== undefined ? { keep_last: Number(o.keepLast) } : {}),
    },
    log: { ...(fromFile ? fromFile.log : {}), ...(o.logEvery !== undefined ? { every: Number(o.logEvery) } : {}) },
  };
  const changed = ["data", "maxSteps", "microBatch", "globalBatch", "lr", "seed", "pairs", "geneMap"].filter((k) => o[k] !== undefined);
  if (resume && changed.length) throw usageError(`--resume continues the run as it was configured; ${changed.map((k) => "--" + k.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase())).join(", ")} would change it (start a new run with another --out instead)`);

  const topology = resolveTopology({
    ranks: o.ranks as number | undefined,
    gpus: o.gpus as number | undefined,
    nnodes: o.nnodes as number | undefined,
    nodeRank: o.nodeRank as number | undefined,
    masterAddr: o.masterAddr as string | undefined,
    masterPort: o.masterPort as number | undefined,
  });
  assertRunnable(topology);
  log.info(describeTopology(topology));
  if (o.threads !== undefined) loadNative().setThreads(Number(o.threads));
  if (resume && !fs.existsSync(path.join(out, RUN_FILE))) throw usageError(`${out}: no ${RUN_FILE} here, so there is no run to resume; start one with --config and --out`);

  let stop = false;
  onGracefulStop(() => (stop = true));
  // Fault injection for tests: GM_FAILPOINT=checkpoint-write:<step> (killed while saving) or
  // nan-grad:<step> (a NaN gradient, as a diverging run produces).
  const fail = /^checkpoint-write:(\d+)$/.exec(process.env.GM_FAILPOINT ?? "");
  const nan = /^nan-grad:(\d+)$/.exec(process.env.GM_FAILPOINT ?? "");
  try {
    const summary = await pretrain({
      config,
      out,
      resume,
      worldSize: o.ranks !== undefined || !resume || topology.multiProcess ? topology.worldSize : undefined,
      distributed: topology.multiProcess ? { localRanks: topology.localRanks, masterAddr: topology.masterAddr, masterPort: topology.masterPort } : undefined,
      log,
      resumeOverrides,
      stopRequested: () => stop,
      onGradients: nan ? (step, grads) => void (step === Number(nan[1]) && (grads[0] = NaN)) : undefined,
      onCheckpointWrite: fail ? (step) => void (step === Number(fail[1]) && process.kill(process.pid, "SIGKILL")) : undefined,
    });
    const last = summary.records[summary.records.length - 1];
    log.info(
      {
        steps: `${summary.startStep} -> ${summary.step}`,
        loss: last ? +last.loss.toFixed(4) : undefined,
        unigram_baseline: +summary.unigramBaseline.toFixed(4),
        tokens: summary.tokens,
        tok_s: Math.round(summary.tokens / Math.max(summary.seconds, 1e-9)),
        seconds: +summary.seconds.toFixed(1),
        checkpoint: summary.lastCheckpoint,
        peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
      },
      summary.interrupted ? "pretrain stopped (resumable)" : "pretrain done",
    );
    if (summary.interrupted) process.exitCode = 130;
  } finally {
    onGracefulStop(undefined);
  }
}
