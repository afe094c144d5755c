/**
 * The pretraining loop behind `gm pretrain`: R data-parallel model replicas (CPU ranks in this
 * process, or this process's share of a world spanning several processes / nodes), each computing
 * its micro-batches of every step; gradients averaged through the communicator (local ring in one
 * process, TCP ring across processes); AdamW with clipping on every replica (identical inputs, so
 * identical weights); checkpoints that resume bit for bit. See docs/pretrain.md.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createProgress, ExitCode, GmError, inputError, readJsonFile, removeStaleTemporaries, usageError, writeFileAtomic, writeJsonAtomic, type Logger } from "@gm/core";
import { loadGeneMap, loadVocabulary, type Vocabulary } from "@gm/data";
import { GeneMamba, gpuRuntimeReport, gpuScanFromEnv, loadModelConfig, loadNative, resolveConfig, type ModelConfig, type ModelConfigInput } from "@gm/engine";
import { checkpointDir, datasetMediansFile, latestCheckpoint, loadOptimizerState, pruneCheckpoints, readTrainerState, removePartialCheckpoints, saveCheckpoint, type TrainerState } from "./checkpoint.js";
import { CommError, createLocalRing, createTcpGroup, type Communicator, type TcpCommunicator } from "./comm/index.js";
import { runFingerprint, type RunConfig } from "./config.js";
import { readDatasetIndex, stepsPerEpoch, TokenLoader, type Cell, type LoaderPosition } from "./loader/index.js";
import { cpuPeakFlops, gpuPeakFlops, JsonlWriter, trainingFlops } from "./metrics.js";
import { prepareMlm } from "./objectives/mlm.js";
import { prepareNtp } from "./objectives/ntp.js";
import { infoNce, indexPairs, type PairIndex } from "./objectives/infonce.js";
import type { PreparedBatch, TokenSpace } from "./objectives/tokens.js";
import { loadGenePairs, makeTokenResolver } from "./pairs.js";
import { lineChartSvg } from "./plot.js";
import { learningRate } from "./schedule.js";

export const RUN_FILE = "run.json";
export const METRICS_FILE = "metrics.jsonl";
export const PLOT_FILE = "loss.svg";
export const SUMMARY_FILE = "summary.json";

export interface PretrainOptions {
  /** The resolved run config of a new run (on resume the run's own, OUT/run.json, is used). */
  config: RunConfig;
  /** On resume: the settings that may change without changing the computation. */
  resumeOverrides?: { checkpoint?: Partial<RunConfig["checkpoint"]>; log?: Partial<RunConfig["log"]>; prefetch?: number };
  out: string;
  resume?: boolean;
  /** Data-parallel ranks in the world (all hosted in this process unless `distributed` is given). */
  worldSize?: number;
  /**
   * A world spanning several processes: this one hosts `localRanks` (global rank ids) and joins the
   * others over TCP (comm/tcp-ring.ts). Only the process hosting rank 0 writes to `out`.
   */
  distributed?: { localRanks: number[]; masterAddr: string; masterPort: number; timeoutMs?: number; joinTimeoutMs?: number };
  log: Logger;
  /** Polled between steps: a true value saves a checkpoint and stops (SIGINT / SIGTERM). */
  stopRequested?: (step: number) => boolean;
  /** Test hook: called inside the checkpoint writer after the model file (simulates a crash mid-save). */
  onCheckpointWrite?: (step: number) => void;
  /** Test hook: sees rank 0's averaged gradients before the finiteness check (fault injection). */
  onGradients?: (step: number, grads: Float32Array) => void;
  /** Progress bar on a TTY (default: core's rule). */
  progress?: boolean;
  /**
   * Train on a GPU (one rank per process: `distributed` hosts one rank, or the world is 1). With
   * several ranks the gradients are averaged by NCCL inside backward when the CUDA backend finds
   * NCCL, else through the TCP group on the host (slower; the emulated backend always does this).
   */
  device?: { kind: "cuda"; ordinal: number; dtype?: "bf16" | "float32" };
  /** Seconds a GPU rank waits on a collective before it gives up (a peer died): default 600. */
  collectiveTimeoutS?: number;
}

export interface StepRecord {
  step: number;
  epoch: number;
  loss: number;
  mlm_loss?: number;
  ntp_loss?: number;
  infonce?: number;
  infonce_pairs?: number;
  lr: number;
  grad_norm: number;
  cells: number;
  tokens: number;
  loss_positions: number;
  step_seconds: number;
  tokens_per_second: number;
  tflops: number;
  mfu: number;
  eta_seconds: number;
}

export interface PretrainSummary {
  startStep: number;
  step: number;
  totalSteps: number;
  interrupted: boolean;
  records: StepRecord[];
  lastCheckpoint: string | null;
  seconds: number;
  /** Wall time inside the engine (forward, backward, all-reduce, AdamW) versus the whole loop. */
  engineSeconds: number;
  tokens: number;
  /** Cross-entropy of the targets' unigram distribution over this session (the no-context baseline). */
  unigramBaseline: number;
}

/** A training failure that must not write a new checkpoint (non-finite loss or gradients). */
export class DivergedError extends GmError {
  constructor(message: string) {
    super(message, ExitCode.internal);
  }
}

interface RunRecord {
  format: "gm.pretrain-run/1";
  fingerprint: string;
  config: RunConfig;
  model: ModelConfig;
  world_size: number;
  accumulation: number;
  total_steps: number;
  data: { dir: string; rows: number; vocab_size: number };
  created: string;
}

interface Setup {
  model: ModelConfig;
  vocab: Vocabulary;
  space: TokenSpace;
}

/**
 * The data's vocabulary (+[MASK] for MLM) and the token space the objectives work in. `dataVocabSize`
 * (gm_index.json) cross-checks the folder when given.
 */
export function trainingVocabulary(dataDir: string, objective: RunConfig["objective"]["type"], dataVocabSize?: number): { vocab: Vocabulary; space: TokenSpace } {
  const vocabFile = path.join(dataDir, "vocab.json");
  let vocab = loadVocabulary(vocabFile);
  if (dataVocabSize !== undefined && vocab.size !== dataVocabSize)
    throw inputError(vocabFile, `holds ${vocab.size} tokens but gm_index.json says vocab_size ${dataVocabSize}; the dataset folder is inconsistent, re-run gm tokenize`);
  const padId = vocab.specials["[PAD]"] ?? 1, unkId = vocab.specials["[UNK]"] ?? 0;
  const json = vocab.toJSON();
  const firstGene = json.first_gene_id, endGene = firstGene + json.genes.length;
  let maskId = -1;
  if (objective === "mlm") {
    vocab = vocab.withSpecials(["[MASK]"]);
    maskId = vocab.get("[MASK]")!;
  }
  return { vocab, space: { vocabSize: vocab.size, padId, unkId, maskId, firstGene, endGene } };
}

/** Model config + token space from the run config and the tokenized data's vocabulary. */
function setupModel(cfg: RunConfig, dataDir: string, dataVocabSize: number): Setup {
  const { vocab, space } = trainingVocabulary(dataDir, cfg.objective.type, dataVocabSize);
  const { padId, maskId } = space;
  let input: ModelConfigInput;
  if (typeof cfg.model === "string") input = { ...loadModelConfig(cfg.model) } as ModelConfigInput;
  else input = { ...(cfg.model as ModelConfigInput) };
  const pinned = typeof cfg.model === "string" || (cfg.model as Record<string, unknown>).vocab_size !== undefined;
  // A model config may count [MASK] or not (the reference's 25,426 tokens have none): either matches.
  if (pinned && input.vocab_size !== vocab.size && input.vocab_size !== dataVocabSize)
    throw inputError(
      path.join(dataDir, "gm_index.json"),
      `vocab_size ${dataVocabSize}${maskId >= 0 ? " (+1 for [MASK])" : ""} = ${vocab.size} does not match the model's vocab_size ${input.vocab_size}; tokenize with the model's vocabulary (gm tokenize --vocab), or give an inline model config without vocab_size`,
    );
  input.vocab_size = vocab.size;
  input.pad_token_id = padId;
  const model = resolveConfig(input, typeof cfg.model === "string" ? cfg.model : "run config model");
  return { model, vocab, space };
}

function prepare(cfg: RunConfig, cells: Cell[], space: TokenSpace, epoch: number): PreparedBatch {
  const o = cfg.objective;
  if (o.type === "ntp") return prepareNtp(cells, space);
  return prepareMlm(cells, space, { maskProb: o.mask_prob, maskTokenProb: o.mask_token_prob, randomTokenProb: o.random_token_prob }, cfg.train.seed, epoch);
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function firstDifference(a: Record<string, unknown>, b: Record<string, unknown>, prefix = ""): string {
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const x = a[k], y = b[k];
    if (sameJson(x, y)) continue;
    if (x && y && typeof x === "object" && typeof y === "object" && !Array.isArray(x)) return firstDifference(x as Record<string, unknown>, y as Record<string, unknown>, `${prefix}${k}.`);
    return `${prefix}${k} (${JSON.stringify(x)} there, ${JSON.stringify(y)} now)`;
  }
  return "";
}

/**
 * Refuses a micro-batch whose activations cannot fit the GPU, before anything is allocated: the
 * engine's exact plan (parameters, gradients, moments, activations) against 92% of the device's
 * memory (the rest: CUDA context, cuBLASLt workspace, NCCL buffers, the allocator's rounding).
 */
export function assertFitsGpu(mem: { params: number; activations: number }, deviceGib: number | undefined, at: { micro: number; length: number; ordinal: number; name?: string }): void {
  if (!deviceGib) return; // unknown (the emulated backend)
  const need = (mem.params + mem.activations) / 2 ** 30;
  if (need <= 0.92 * deviceGib) return;
  const fit = Math.max(0, Math.floor(((0.92 * deviceGib - mem.params / 2 ** 30) / (mem.activations / 2 ** 30)) * at.micro));
  throw usageError(
    `batch.micro_batch ${at.micro} x max_length ${at.length} needs ${need.toFixed(1)} GiB on GPU ${at.ordinal}${at.name ? ` (${at.name})` : ""}, which has ${deviceGib.toFixed(1)} GiB; ` +
      (fit >= 1 ? `use --micro-batch ${fit} or less (gradient accumulation keeps the global batch)` : "shorten data.max_length or use a smaller model"),
  );
}

export async function pretrain(o: PretrainOptions): Promise<PretrainSummary> {
  const log = o.log;
  const out = path.resolve(o.out);
  const runFile = path.join(out, RUN_FILE);
  let cfg = o.config;
  let worldSize = o.worldSize ?? 1;

  if (o.resume) {
    if (!fs.existsSync(runFile)) throw usageError(`${out}: not a gm pretrain output folder (no ${RUN_FILE}); start a run with --config and --data`);
    const rec = readJsonFile<RunRecord>(runFile, "run record");
    // The computation is pinned by the first run; only operational settings may change on resume.
    const ov = o.resumeOverrides ?? {};
    cfg = {
      ...rec.config,
      checkpoint: { ...rec.config.checkpoint, ...ov.checkpoint },
      log: { ...rec.config.log, ...ov.log },
      data: { ...rec.config.data, prefetch: ov.prefetch ?? rec.config.data.prefetch },
    };
    if (o.worldSize !== undefined && o.worldSize !== rec.world_size)
      log.warn({ was: rec.world_size, now: o.worldSize }, "resuming with a different number of ranks: the global batch is kept, the gradient accumulation changes, and the losses will differ from an uninterrupted run within rounding");
    worldSize = o.worldSize ?? rec.world_size;
  }
  const dataDir = cfg.data.dir;
  if (!dataDir) throw usageError("no training data: give --data DIR (a gm tokenize output) or data.dir in the run config");
  const mediansFile = datasetMediansFile(dataDir);
  const index = readDatasetIndex(dataDir);
  const { model: modelConfig, vocab, space } = setupModel(cfg, dataDir, index.vocab_size);

  const micro = cfg.batch.micro_batch;
  const globalBatch = cfg.batch.global_batch ?? micro * worldSize;
  if (globalBatch % (micro * worldSize) !== 0)
    throw usageError(`batch.global_batch ${globalBatch} must be a multiple of micro_batch x ranks = ${micro} x ${worldSize}`);
  const accumulation = globalBatch / (micro * worldSize);
  const loaderOpts = {
    dir: dataDir,
    seed: cfg.train.seed,
    worldSize,
    microBatch: micro,
    accumulation,
    maxLength: cfg.data.max_length,
    bufferBatches: cfg.data.buffer_batches,
    shuffle: cfg.data.shuffle,
    prefetch: cfg.data.prefetch,
  };
  const perEpoch = stepsPerEpoch(index, loaderOpts);
  const totalSteps = cfg.train.max_steps ?? (cfg.train.epochs ?? 1) * perEpoch;
  const fingerprint = runFingerprint(cfg, { model_config: modelConfig, global_batch: globalBatch, data_rows: index.rows });

  const dist = o.distributed;
  // Global rank ids of the replicas in this process; only the process hosting rank 0 writes.
  const local = dist ? [...dist.localRanks] : Array.from({ length: worldSize }, (_, r) => r);
  const gpu = o.device?.kind === "cuda" ? o.device : undefined;
  if (gpu && local.length !== 1)
    throw usageError(`a GPU process hosts one rank (it has ${local.length}: ${local.join(",")}); gm pretrain --gpus N starts one process per GPU`);
  const writer = local.includes(0);
  let comms: Communicator[];
  if (dist) {
    if (local.some((r) => !Number.isInteger(r) || r < 0 || r >= worldSize)) throw usageError(`this process's ranks ${local.join(",")} are outside the world of ${worldSize} ranks`);
    log.info({ master: `${dist.masterAddr}:${dist.masterPort}`, ranks: local }, "joining the data-parallel group");
    try {
      comms = await createTcpGroup({
        worldSize,
        localRanks: local,
        masterAddr: dist.masterAddr,
        masterPort: dist.masterPort,
        fingerprint: `${fingerprint}:${o.resume ? "resume" : "new"}`,
        timeoutMs: dist.timeoutMs,
        joinTimeoutMs: dist.joinTimeoutMs,
        log: (m) => log.debug(m),
      });
    } catch (e) {
      if (e instanceof CommError) throw new GmError(e.message, ExitCode.internal);
      throw e;
    }
    log.info({ ranks: worldSize }, "data-parallel group complete");
  } else comms = createLocalRing(worldSize);
  let failure: string | undefined;
  try {
    return await train();
  } catch (e) {
    failure = (e as Error).message ?? String(e);
    throw e;
  } finally {
    for (const c of comms) c.close(failure);
  }

  // Rank 0 makes NCCL's unique id and serves it through the TCP group; every rank joins with it. Without
  // NCCL (not found at run time; GM_EMUL_NCCL=0 on the emulated backend, whose stand-in for NCCL is
  // native/test/emul_nccl.h) the gradients go through the TCP group.
  async function joinNccl(model: GeneMamba, comm: TcpCommunicator, rank: number): Promise<boolean> {
    const native = loadNative();
    const nccl = gpuRuntimeReport()?.nccl;
    if (!nccl?.found) {
      log.warn({ why: nccl?.error ?? "no NCCL" }, "NCCL is not available: gradients are averaged on the host through the TCP group (slower)");
      return false;
    }
    const id = rank === 0 ? native.ncclUniqueId!() : undefined;
    if (id) await comm.serveBlob("nccl-unique-id", id);
    const got = id ?? (await comm.fetchBlob("nccl-unique-id"));
    // joinNccl blocks this event loop until every rank has joined, and rank 0's loop serves the id:
    // so no rank joins before every rank holds the id (this all-reduce is the barrier).
    await comm.allReduceSum(new Float64Array(1));
    model.joinNccl(got, rank, worldSize, o.collectiveTimeoutS ?? 600);
    log.info({ rank, ranks: worldSize }, "joined the NCCL group");
    return true;
  }

  async function train(): Promise<PretrainSummary> {
  if (writer) fs.mkdirSync(out, { recursive: true });
  const record: RunRecord = {
    format: "gm.pretrain-run/1",
    fingerprint,
    config: cfg,
    model: modelConfig,
    world_size: worldSize,
    accumulation,
    total_steps: totalSteps,
    data: { dir: dataDir as string, rows: index.rows, vocab_size: index.vocab_size },
    created: new Date().toISOString(),
  };
  if (!o.resume) {
    if (!writer) {
      // Other processes never look at --out of a new run (it may not even be shared).
    } else if (fs.existsSync(runFile)) {
      const prev = readJsonFile<RunRecord>(runFile, "run record");
      if (prev.fingerprint === fingerprint) throw usageError(`${out} already holds this run; continue it with gm pretrain --resume ${o.out}, or choose another --out`);
      const diff = firstDifference(prev.config as unknown as Record<string, unknown>, cfg as unknown as Record<string, unknown>);
      throw usageError(`${out} holds another run (${diff || "different data or model"}); choose another --out, or continue that run with --resume`);
    }
    if (writer) {
      const foreign = fs.readdirSync(out).filter((n) => !n.startsWith("."));
      if (foreign.length) throw usageError(`${out} is not empty (${foreign.slice(0, 3).join(", ")}${foreign.length > 3 ? ", ..." : ""}); give an empty or new --out`);
      writeJsonAtomic(runFile, record);
    }
  } else {
    const prev = readJsonFile<RunRecord>(runFile, "run record");
    if (prev.fingerprint !== fingerprint)
      throw inputError(runFile, `the data or model no longer match this run (data rows ${prev.data.rows} -> ${index.rows}, vocab_size ${prev.data.vocab_size} -> ${index.vocab_size}); resume with the same tokenized data`);
  }
  const removed = writer ? removePartialCheckpoints(out) + removeStaleTemporaries(out) : 0;
  if (removed) log.warn({ removed }, "removed partial checkpoint(s) left by an interrupted save");

  // Model replicas, one per rank: created from the same seed, or loaded from the latest checkpoint.
  const latest = o.resume ? latestCheckpoint(out) : undefined;
  let state: TrainerState | undefined;
  const replicas: GeneMamba[] = [];
  const device = gpu ? { kind: "cuda" as const, device: gpu.ordinal, dtype: gpu.dtype ?? "bf16" } : undefined;
  for (let i = 0; i < local.length; i++) {
    if (latest) {
      const m = GeneMamba.load(latest.dir, undefined, device);
      if (!sameJson(m.config, modelConfig)) throw inputError(path.join(latest.dir, "config.json"), "the checkpoint's model config differs from the run's; the folder was modified");
      loadOptimizerState(latest.dir, m);
      replicas.push(m);
    } else replicas.push(GeneMamba.create(modelConfig, cfg.train.seed, device));
  }
  const nccl = gpu && dist && worldSize > 1 ? await joinNccl(replicas[0], comms[0] as TcpCommunicator, local[0]) : false;
  if (latest) {
    state = readTrainerState(latest.dir);
    if (state.fingerprint !== fingerprint) throw inputError(path.join(latest.dir, "trainer_state.json"), "belongs to a different run configuration");
    const ckVocab = loadVocabulary(path.join(latest.dir, "vocab.json"));
    if (!sameJson(ckVocab.toJSON(), vocab.toJSON())) throw inputError(path.join(latest.dir, "vocab.json"), "differs from the data's vocabulary (+[MASK]); the shards do not belong to this run");
    log.info({ checkpoint: latest.dir, step: state.step }, "resuming");
  } else if (o.resume) log.warn({ out }, "no complete checkpoint yet: starting this run from step 0");

  const startStep = state?.step ?? 0;
  if (dist) {
    // Every process must continue from the same step: --out is one folder seen by every node.
    const views = comms.map(() => new Float64Array([startStep]));
    await Promise.all(comms.map((c, i) => c.broadcast(views[i], 0)));
    if (views[0][0] !== startStep)
      throw usageError(
        `this process (ranks ${local.join(",")}) finds ${startStep ? `checkpoint ${startStep}` : "no checkpoint"} in ${out} but rank 0 resumes from ${views[0][0] ? `step ${views[0][0]}` : "step 0"}; --out must be the same run folder on every node (a shared filesystem)`,
      );
  }
  const jsonl = new JsonlWriter(path.join(out, METRICS_FILE));
  if (writer) jsonl.truncateAfter(startStep);
  // What the plot draws: the earlier session's steps (read once) plus this session's.
  const history = writer ? (jsonl.read() as unknown as StepRecord[]) : [];

  let pairIndex: PairIndex | undefined;
  const inf = cfg.objective.infonce;
  if (inf.pairs && inf.gamma > 0) {
    const pairs = loadGenePairs(inf.pairs, makeTokenResolver(vocab, inf.gene_map ? loadGeneMap(inf.gene_map) : undefined), { seed: cfg.train.seed });
    pairIndex = indexPairs(pairs, space.vocabSize);
    log.info({ file: inf.pairs, ...pairs.stats }, "InfoNCE gene pairs");
  }

  const loader = new TokenLoader({ ...loaderOpts, start: state?.loader });
  const threads = loadNative().maxThreads();
  const peak = gpu ? gpuPeakFlops(gpu.ordinal) : cpuPeakFlops(threads);
  if (gpu) {
    const mem = replicas[0].gpuMemory(micro, cfg.data.max_length)!;
    const dev = gpuRuntimeReport()?.devices[gpu.ordinal];
    assertFitsGpu(mem, dev?.memory_gib, { micro, length: cfg.data.max_length, ordinal: gpu.ordinal, name: dev?.name });
    log.info({ gpu: gpu.ordinal, dtype: gpu.dtype ?? "bf16", mamba2_scan: gpuScanFromEnv(), params_gib: +(mem.params / 2 ** 30).toFixed(2), activations_gib: +(mem.activations / 2 ** 30).toFixed(2), gradients: nccl ? "NCCL, per layer, overlapped" : worldSize > 1 ? "host (TCP)" : "single rank" }, "GPU memory for a full-length micro-batch");
  }
  log.info(
    {
      model: `${modelConfig.n_layer}l-${modelConfig.d_model}d ${modelConfig.mixer}/${modelConfig.combine}`,
      parameters: replicas[0].numParameters,
      objective: cfg.objective.type + (pairIndex ? ` + ${inf.gamma} x InfoNCE` : ""),
      ranks: worldSize,
      micro_batch: micro,
      accumulation,
      global_batch: globalBatch,
      steps: `${startStep} -> ${totalSteps}`,
      steps_per_epoch: perEpoch,
      threads,
      peak: peak.how,
    },
    "pretraining",
  );

  const progress = createProgress({ label: "pretrain", total: totalSteps, unit: "steps", enabled: o.progress });
  progress.increment(startStep);
  const records: StepRecord[] = [];
  const unigram = new Float64Array(space.vocabSize);
  let lastCheckpoint: string | null = latest?.dir ?? null;
  let lastSaved = startStep;
  let epoch = state?.epoch ?? 0;
  let position: LoaderPosition | undefined = state?.loader;
  let tokensSeen = state?.tokens_seen ?? 0, cellsSeen = state?.cells_seen ?? 0;
  let lastLoss = state?.loss ?? NaN, lastLr = state?.lr ?? 0;
  let interrupted = false;
  let engineSeconds = 0, sessionTokens = 0;
  const t0 = performance.now();
  const gamma = inf.gamma;
  let currentStep = startStep;

  const save = (step: number) => {
    // The replicas received bitwise identical gradients; a difference would be a communicator bug.
    const p0 = replicas[0].params;
    for (let r = 1; r < replicas.length; r++) {
      const pr = replicas[r].params;
      for (let i = 0; i < p0.length; i++)
        if (p0[i] !== pr[i] && !(Number.isNaN(p0[i]) && Number.isNaN(pr[i]))) throw new Error(`internal error: rank ${r}'s weights differ from rank 0's at element ${i} (step ${step})`);
    }
    if (!writer) {
      // Rank 0's process writes the checkpoint; the others only keep track of it.
      lastCheckpoint = checkpointDir(out, step);
      lastSaved = step;
      return;
    }
    const st: TrainerState = {
      format: "gm.pretrain-state/1",
      step,
      epoch,
      loader: position ?? { epoch: 0, buffer: 0, step: 0 },
      rng: { seed: cfg.train.seed, scheme: "counter-based: xoshiro128** keyed by splitmix64(seed, stream, epoch, buffer or sample); no sequential state" },
      fingerprint,
      world_size: worldSize,
      tokens_seen: tokensSeen,
      cells_seen: cellsSeen,
      lr: lastLr,
      loss: lastLoss,
      saved_at: new Date().toISOString(),
    };
    const dir = saveCheckpoint({ out, model: replicas[0], vocabJson: vocab.toJSON(), state: st, mediansFile, afterModelWritten: o.onCheckpointWrite ? () => o.onCheckpointWrite!(step) : undefined });
    const pruned = pruneCheckpoints(out, cfg.checkpoint.keep_last);
    lastCheckpoint = dir;
    lastSaved = step;
    writePlot();
    log.info({ checkpoint: path.relative(process.cwd(), dir) || dir, pruned: pruned.length || undefined }, "checkpoint saved");
  };
  const writePlot = () => {
    if (!writer) return;
    const rows = history;
    const svg = lineChartSvg({
      title: `gm pretrain: ${path.basename(out)}`,
      xLabel: "step",
      leftLabel: "loss",
      rightLabel: "learning rate",
      series: [
        { name: "loss", points: rows.map((r) => [r.step, r.loss] as [number, number]) },
        ...(rows.some((r) => r.infonce !== undefined) ? [{ name: cfg.objective.type === "mlm" ? "MLM" : "NTP", points: rows.map((r) => [r.step, r.mlm_loss ?? r.ntp_loss ?? NaN] as [number, number]) }] : []),
        ...(rows.some((r) => r.infonce !== undefined) ? [{ name: "InfoNCE", points: rows.map((r) => [r.step, r.infonce ?? NaN] as [number, number]) }] : []),
        { name: "lr", axis: "right" as const, points: rows.map((r) => [r.step, r.lr] as [number, number]) },
      ],
    });
    writeFileAtomic(path.join(out, PLOT_FILE), svg);
  };

  try {
    for (let step = startStep + 1; step <= totalSteps; step++) {
      currentStep = step;
      const tStep = performance.now();
      const sb = await loader.next();
      epoch = sb.epoch;
      // Prepare every (micro-step, rank) batch; counts are known before any backward, so every
      // rank can weight its loss by its share of the global number of loss positions.
      const batches = sb.micro.map((perRank) => perRank.map((cells) => (cells.length ? prepare(cfg, cells, space, sb.epoch) : undefined)));
      const tEngine = performance.now();
      // Every process prepares the whole step (all ranks' micro-batches, deterministically), so
      // these totals and the unigram counts are global without communication.
      let totalPositions = 0, nonEmpty = 0;
      for (const row of batches)
        for (const b of row)
          if (b) {
            totalPositions += b.lossPositions;
            nonEmpty++;
            for (let i = 0; i < b.targets.length; i++) if (b.targets[i] >= 0) unigram[b.targets[i]]++;
          }
      const sums = await Promise.all(
        replicas.map(async (model, i) => {
          const r = local[i];
          const comm = comms[i];
          const s = new Float64Array(5); // lm sum, infonce sum, pairs, tokens, positions
          model.zeroGrad();
          for (const [k, row] of batches.entries()) {
            // NCCL: the step's last backward averages the gradients as it goes (every rank arms it).
            if (nccl && k === batches.length - 1) model.reduceNextBackward();
            const b = row[r];
            if (!b) continue;
            const lmScale = totalPositions > 0 ? (worldSize * b.lossPositions) / totalPositions : 0;
            let res: { loss: number; count: number };
            if (pairIndex) {
              const { hidden } = model.forward(b);
              const nce = infoNce(hidden, b.tokens, b.lengths, b.batch, b.length, modelConfig.d_model, pairIndex, {
                tau: inf.tau,
                padId: space.padId,
                unkId: space.unkId,
                wantGrad: true,
                scale: (gamma * worldSize) / nonEmpty,
              });
              // A non-finite term makes the all-reduced sum non-finite: every rank stops below.
              res = model.backward(b.targets, lmScale, { hiddenGrad: nce.grad });
              s[1] += nce.loss;
              s[2] += nce.pairs;
            } else res = model.forwardBackward(b, lmScale);
            s[0] += res.loss * res.count;
            s[3] += b.tokenCount;
            s[4] += b.lossPositions;
          }
          if (nccl) model.finishReduction();
          else if (worldSize > 1) {
            await comm.allReduceMean(model.grads);
            model.commitGrads();
          }
          await comm.allReduceSum(s);
          return s;
        }),
      );
      const s = sums[0];
      if (pairIndex && !Number.isFinite(s[1])) throw new DivergedError(`step ${step}: the InfoNCE loss is not finite`);
      const lm = totalPositions > 0 ? s[0] / totalPositions : 0;
      const nce = pairIndex ? s[1] / nonEmpty : undefined;
      const loss = lm + (nce !== undefined ? gamma * nce : 0);
      const lr = learningRate(step, { kind: cfg.schedule.type, peakLr: cfg.optimizer.lr, warmupSteps: cfg.schedule.warmup_steps, totalSteps, minLrRatio: cfg.schedule.min_lr_ratio });
      if (o.onGradients) {
        o.onGradients(step, replicas[0].grads);
        replicas[0].commitGrads();
      }
      // One norm for all replicas: their averaged gradients are bitwise identical.
      const norm = replicas[0].gradNorm();
      if (!Number.isFinite(loss) || !Number.isFinite(norm))
        throw new DivergedError(`step ${step}: ${!Number.isFinite(loss) ? `the loss is ${loss}` : `the gradient norm is ${norm}`}`);
      for (const model of replicas)
        model.optimizerStep({ lr, beta1: cfg.optimizer.beta1, beta2: cfg.optimizer.beta2, eps: cfg.optimizer.eps, weightDecay: cfg.optimizer.weight_decay, maxGradNorm: cfg.optimizer.max_grad_norm, step, gradNorm: norm });
      const now = performance.now();
      engineSeconds += (now - tEngine) / 1000;
      position = sb.position;
      tokensSeen += s[3];
      sessionTokens += s[3];
      cellsSeen += sb.cells;
      lastLoss = loss;
      lastLr = lr;
      const stepSeconds = (now - tStep) / 1000;
      const flops = trainingFlops(modelConfig, s[3], s[4]);
      const elapsed = (now - t0) / 1000;
      const rec: StepRecord = {
        step,
        epoch: sb.epoch,
        loss,
        ...(cfg.objective.type === "mlm" ? { mlm_loss: lm } : { ntp_loss: lm }),
        ...(nce !== undefined ? { infonce: nce, infonce_pairs: s[2] } : {}),
        lr,
        grad_norm: norm,
        cells: sb.cells,
        tokens: s[3],
        loss_positions: s[4],
        step_seconds: stepSeconds,
        tokens_per_second: s[3] / stepSeconds,
        tflops: flops / stepSeconds / 1e12,
        mfu: flops / stepSeconds / peak.flops,
        eta_seconds: (elapsed / (step - startStep)) * (totalSteps - step),
      };
      records.push(rec);
      if (writer) {
        history.push(rec);
        jsonl.write(rec);
      }
      progress.increment();
      if (step % cfg.log.every === 0 || step === startStep + 1 || step === totalSteps)
        log.info(
          {
            step,
            loss: +loss.toFixed(4),
            ...(nce !== undefined ? { infonce: +nce.toFixed(4) } : {}),
            lr: +lr.toExponential(3),
            grad_norm: +norm.toFixed(3),
            tok_s: Math.round(rec.tokens_per_second),
            mfu: `${(rec.mfu * 100).toFixed(1)}%`,
            eta: `${Math.round(rec.eta_seconds)}s`,
          },
          `step ${step}/${totalSteps}`,
        );
      if (step % cfg.checkpoint.every === 0 || step === totalSteps) save(step);
      // Let signal handlers run between steps (the engine's calls are synchronous).
      await new Promise<void>((resolve) => setImmediate(resolve));
      let stop = o.stopRequested?.(step) === true;
      if (dist) {
        // A signal to any process stops every process after the same step.
        const flags = comms.map(() => new Float64Array([stop ? 1 : 0]));
        await Promise.all(comms.map((c, i) => c.allReduceSum(flags[i])));
        stop = flags[0][0] > 0;
      }
      if (stop) {
        interrupted = true;
        if (lastSaved !== step) save(step);
        log.warn({ step, checkpoint: lastCheckpoint }, `stopped at step ${step}; continue with gm pretrain --resume ${o.out}`);
        break;
      }
    }
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    if (e instanceof DivergedError || /not finite/.test(msg)) {
      const keep = lastCheckpoint ? `the last good checkpoint ${lastCheckpoint} is kept` : "no checkpoint was written";
      throw new DivergedError(`${e instanceof DivergedError ? msg : `training diverged: ${msg}`}; nothing new was saved (${keep}); lower optimizer.lr, raise schedule.warmup_steps or check the data`);
    }
    if (e instanceof CommError) {
      const keep = lastCheckpoint ? `the last checkpoint ${lastCheckpoint} is kept` : "no checkpoint was written";
      throw new GmError(`step ${currentStep}: ${msg}; ${keep}; restart every process with gm pretrain --resume ${o.out}`, ExitCode.internal);
    }
    throw e;
  } finally {
    progress.stop();
    await loader.close();
    if (records.length) writePlot();
  }
  let total = 0, h = 0;
  for (const c of unigram) total += c;
  for (const c of unigram) if (c > 0) h -= (c / total) * Math.log(c / total);
  const last = records[records.length - 1];
  const seconds = (performance.now() - t0) / 1000;
  if (writer) writeJsonAtomic(path.join(out, SUMMARY_FILE), {
    steps: `${startStep} -> ${last?.step ?? startStep}`,
    total_steps: totalSteps,
    interrupted,
    last_checkpoint: lastCheckpoint,
    loss: last?.loss ?? null,
    unigram_baseline: h,
    tokens: sessionTokens,
    seconds,
    engine_seconds: engineSeconds,
    tokens_per_second: sessionTokens / Math.max(seconds, 1e-9),
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
  });
  return {
    startStep,
    step: last?.step ?? startStep,
    totalSteps,
    interrupted,
    records,
    lastCheckpoint,
    seconds,
    engineSeconds,
    tokens: sessionTokens,
    unigramBaseline: h,
  };
  }
}

