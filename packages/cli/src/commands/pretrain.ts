import * as path from "node:path";
import type { Logger } from "@gm/core";
import { ExitCode, GmError, usageError } from "@gm/core";
import { assertRunnable, describeTopology, gpuLaunch, loadRunConfig, pretrain, resolveRunConfig, resolveTopology, RUN_FILE, type GpuWorker, type RunConfig } from "@gm/train";
import { gpuScanFromEnv, loadNative } from "@gm/engine";
import * as fs from "node:fs";
import { spawn, type ChildProcess } from "node:child_process";
import { onGracefulStop } from "../main.js";

/** Seconds the other workers get to notice a dead peer and exit on their own before they are killed. */
const WORKER_GRACE_S = Number(process.env.GM_WORKER_GRACE_S ?? 60);

/**
 * gm's own launch of a GPU world on this node: one worker process per GPU, each this same command
 * with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, ...), so it resolves as one rank on GPU
 * LOCAL_RANK. Their output is this process's; a signal here is passed on (each saves and stops); the
 * first worker to fail sets the exit code, and the others are killed if they outlive the grace period.
 */
async function launchWorkers(workers: GpuWorker[], log: Logger): Promise<void> {
  log.info({ workers: workers.map((w) => `rank ${w.rank} -> GPU ${w.localRank}`).join(", ") }, "starting one worker process per GPU");
  const children: ChildProcess[] = [];
  let failed: { rank: number; code: number } | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const exits = workers.map(
    (w) =>
      new Promise<number>((resolve) => {
        const child = spawn(process.execPath, process.argv.slice(1), { env: { ...process.env, ...w.env }, stdio: "inherit" });
        children.push(child);
        child.on("error", (e) => {
          log.error({ rank: w.rank, error: e.message }, "could not start a worker");
          resolve(1);
        });
        child.on("exit", (code, signal) => {
          const rc = code ?? (signal ? 128 + 9 : 1);
          if (rc !== 0 && !failed) {
            failed = { rank: w.rank, code: rc };
            log.error({ rank: w.rank, exit: code ?? signal }, `worker of rank ${w.rank} failed; the others stop within ${WORKER_GRACE_S} s`);
            killTimer = setTimeout(() => children.forEach((c) => c.exitCode === null && c.kill("SIGKILL")), WORKER_GRACE_S * 1000);
          }
          resolve(rc);
        });
      }),
  );
  onGracefulStop(() => children.forEach((c) => c.exitCode === null && c.kill("SIGTERM")));
  try {
    const codes = await Promise.all(exits);
    if (failed) {
      process.exitCode = failed.code;
      throw new GmError(`gm pretrain: the worker of rank ${failed.rank} exited with ${failed.code}; see its messages above`, failed.code === 130 ? ExitCode.interrupted : ExitCode.internal);
    }
    if (codes.some((c) => c === 130)) process.exitCode = 130;
  } finally {
    if (killTimer) clearTimeout(killTimer);
    onGracefulStop(undefined);
  }
}

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
  let device: { kind: "cuda"; ordinal: number; dtype: "bf16" | "float32" } | undefined;
  const precision = (o.precision as string | undefined) ?? "bf16";
  if (!["bf16", "fp32"].includes(precision)) throw usageError(`--precision must be bf16 or fp32 (got ${precision})`);
  if (topology.device === "cuda") {
    gpuScanFromEnv();  // a bad GM_GPU_SCAN fails here, before any worker starts
    const native = loadNative();
    assertRunnable(topology, { backend: native.gpuBackend, count: native.gpuCount?.() ?? 0, reason: native.buildInfo?.().cuda.reason });
  } else assertRunnable(topology);
  if (resume && !fs.existsSync(path.join(out, RUN_FILE))) throw usageError(`${out}: no ${RUN_FILE} here, so there is no run to resume; start one with --config and --out`);
  if (topology.device === "cuda") {
    const plan = gpuLaunch(topology);
    if (plan.spawn) {
      log.info(describeTopology(topology));
      return launchWorkers(plan.workers, log);
    }
    device = { kind: "cuda", ordinal: plan.ordinal, dtype: precision === "fp32" ? "float32" : "bf16" };
  } else if (o.precision !== undefined) log.warn("--precision applies to GPU ranks (--gpus); the CPU engine computes in fp32");
  log.info(describeTopology(topology));
  if (o.threads !== undefined) loadNative().setThreads(Number(o.threads));

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
      device,
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
