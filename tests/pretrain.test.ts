// gm pretrain end to end on tokenized simulated cells (and on real PBMC cells with the reference
// vocabulary and gene pairs): bitwise resume, data-parallel equivalence, crash safety of
// checkpoints, signals, bad input, and a loss that beats the unigram baseline.
import { beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { preprocess, PREPROCESS_DEFAULTS, simulate, tokenize, TOKENIZE_DEFAULTS } from "@gm/data";
import { GeneMamba } from "@gm/engine";
import { createLogger } from "@gm/core";
import { listCheckpoints, pretrain, resolveRunConfig, type RunConfig, type StepRecord } from "@gm/train";
import { errorLines, gm } from "./helpers/cli.js";
import { gmBin, hasShared, repoRoot, shared, tmpDir } from "./helpers/paths.js";

const log = createLogger("silent");
let root: string, tok: string, gmt: string;

beforeAll(async () => {
  root = tmpDir("gm-pretrain-");
  gmt = path.join(root, "programs.gmt");
  // 12k cells: the learning test stays within one epoch, so every loss is on cells not trained on yet
  await simulate({ cells: 12000, genes: 1500, cellTypes: 4, batches: 2, seed: 11, out: path.join(root, "raw", "sim.h5ad"), geneSetsOut: gmt });
  await preprocess({ ...PREPROCESS_DEFAULTS, inputs: [path.join(root, "raw")], out: path.join(root, "pre"), minGenes: 20, unitCells: 4000, workers: 2 });
  tok = path.join(root, "tok");
  await tokenize({ ...TOKENIZE_DEFAULTS, input: [path.join(root, "pre")], out: tok, medians: path.join(root, "pre", "gene_medians.json"), maxLen: 64, batchRows: 500, unitCells: 4000, workers: 2 });
});

const tinyModel = { d_model: 32, n_layer: 2, headdim: 16, d_state: 8, chunk_size: 16, combine: "gate" };

function config(over: Record<string, unknown> = {}): RunConfig {
  const base: Record<string, unknown> = {
    model: tinyModel,
    data: { dir: tok, max_length: 40, buffer_batches: 2, prefetch: 2 },
    batch: { micro_batch: 4, global_batch: 8 },
    optimizer: { lr: 3e-3, weight_decay: 0.01 },
    schedule: { type: "cosine", warmup_steps: 2, min_lr_ratio: 0.1 },
    train: { max_steps: 8, seed: 5 },
    checkpoint: { every: 4, keep_last: 0 },
    log: { every: 100 },
  };
  for (const [k, v] of Object.entries(over)) base[k] = typeof v === "object" && v && !Array.isArray(v) && k !== "model" ? { ...(base[k] as object), ...(v as object) } : v;
  return resolveRunConfig(base, "test config");
}

const losses = (rs: StepRecord[]) => rs.map((r) => r.loss);

describe("gm pretrain (library)", () => {
  it("N steps + resume + N steps give bitwise the losses and weights of 2N steps (MLM + InfoNCE, accumulation, 2 ranks)", async () => {
    const cfg = config({ objective: { infonce: { pairs: gmt, gamma: 0.1, tau: 0.1 } }, batch: { micro_batch: 2, global_batch: 8 } });
    const a = path.join(root, "resume-a"), b = path.join(root, "resume-b");
    const full = await pretrain({ config: cfg, out: a, worldSize: 2, log });
    expect(full.records.length).toBe(8);
    expect(full.records.every((r) => r.infonce !== undefined && Number.isFinite(r.infonce))).toBe(true);
    expect(full.records.some((r) => (r.infonce_pairs ?? 0) > 0)).toBe(true);
    const first = await pretrain({ config: cfg, out: b, worldSize: 2, log, stopRequested: (step) => step === 3 });
    expect(first.interrupted).toBe(true);
    expect(first.step).toBe(3);
    expect(listCheckpoints(b).map((c) => c.step)).toEqual([3]);
    const rest = await pretrain({ config: cfg, out: b, resume: true, log });
    expect(rest.startStep).toBe(3);
    expect([...losses(first.records), ...losses(rest.records)]).toEqual(losses(full.records));
    expect(rest.records.map((r) => r.grad_norm)).toEqual(full.records.slice(3).map((r) => r.grad_norm));
    const wa = fs.readFileSync(path.join(a, "checkpoint-8", "model.safetensors"));
    const wb = fs.readFileSync(path.join(b, "checkpoint-8", "model.safetensors"));
    expect(wa.equals(wb)).toBe(true);
    expect(fs.readFileSync(path.join(a, "checkpoint-8", "optimizer.safetensors")).equals(fs.readFileSync(path.join(b, "checkpoint-8", "optimizer.safetensors")))).toBe(true);
    // the run folder: metrics (resumed lines replace nothing twice), plot, vocabulary with [MASK]
    const lines = fs.readFileSync(path.join(b, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(fs.readFileSync(path.join(b, "loss.svg"), "utf8")).toContain("<svg");
    const vocab = JSON.parse(fs.readFileSync(path.join(b, "checkpoint-8", "vocab.json"), "utf8"));
    expect(vocab.extra_specials["[MASK]"]).toBe(JSON.parse(fs.readFileSync(path.join(tok, "gm_index.json"), "utf8")).vocab_size);
  });

  it("R ranks x batch b update the model as 1 rank x batch R*b (R = 1, 2, 4)", async () => {
    const runs: { losses: number[]; params: Float32Array }[] = [];
    for (const R of [1, 2, 4]) {
      const out = path.join(root, `dp-${R}`);
      const s = await pretrain({ config: config({ batch: { micro_batch: 8 / R, global_batch: 8 }, train: { max_steps: 4, seed: 5 } }), out, worldSize: R, log });
      runs.push({ losses: losses(s.records), params: GeneMamba.load(path.join(out, "checkpoint-4")).params.slice() });
    }
    for (const r of runs.slice(1)) {
      for (let i = 0; i < 4; i++) expect(Math.abs(r.losses[i] - runs[0].losses[i])).toBeLessThan(1e-5 * runs[0].losses[i]);
      let max = 0, scale = 0;
      for (let i = 0; i < r.params.length; i++) {
        max = Math.max(max, Math.abs(r.params[i] - runs[0].params[i]));
        scale = Math.max(scale, Math.abs(runs[0].params[i]));
      }
      // 4 AdamW steps at lr 3e-3: a reduction-order difference moves a weight by far less than one step
      expect(max).toBeLessThan(2e-4);
      expect(scale).toBeGreaterThan(0.1);
    }
    // the updates themselves are far larger than the differences between the runs
    const init = GeneMamba.create(GeneMamba.load(path.join(root, "dp-1", "checkpoint-4")).config, 5).params;
    let moved = 0;
    for (let i = 0; i < init.length; i++) moved = Math.max(moved, Math.abs(runs[0].params[i] - init[i]));
    expect(moved).toBeGreaterThan(5e-3);
  });

  it("on simulated cells the MLM loss falls clearly below the unigram baseline (within one epoch: on unseen cells)", async () => {
    const s = await pretrain({
      config: config({
        model: { d_model: 64, n_layer: 2, headdim: 32, d_state: 16, chunk_size: 16 },
        batch: { micro_batch: 32, global_batch: 32 },
        data: { max_length: 16 },
        train: { max_steps: 300, seed: 7 },
        schedule: { type: "cosine", warmup_steps: 10, min_lr_ratio: 0.1 },
        checkpoint: { every: 1000 },
        optimizer: { lr: 4e-3 },
      }),
      out: path.join(root, "learn"),
      log,
    });
    expect(s.records.every((r) => r.epoch === 0)).toBe(true);
    const tail = s.records.slice(-20).reduce((a, r) => a + r.loss, 0) / 20;
    // the baseline is the entropy of all targets seen: the best any context-free predictor could do
    expect(s.unigramBaseline).toBeGreaterThan(5);
    expect(tail).toBeLessThan(s.unigramBaseline - 0.4);
  });

  it("refuses bad input with one clear message", async () => {
    const out = path.join(root, "bad");
    await expect(pretrain({ config: config({ model: "genemamba-4l-256d" }), out, log })).rejects.toThrow(/vocab_size .* does not match the model's vocab_size 25426/);
    expect(() => resolveRunConfig({ model: tinyModel, optimizer: { learning_rate: 1 } }, "x.json")).toThrow(/x.json: unknown key 'optimizer.learning_rate'/);
    expect(() => resolveRunConfig({ modle: "x" }, "x.json")).toThrow(/unknown key 'modle'/);
    expect(() => resolveRunConfig({ batch: { micro_batch: 0 } }, "x.json")).toThrow(/batch.micro_batch must be a positive integer/);
    await expect(pretrain({ config: config({ data: { dir: path.join(root, "nope") } }), out, log })).rejects.toThrow(/nope/);
    // an output folder holding another run
    const other = path.join(root, "other");
    await pretrain({ config: config({ train: { max_steps: 1, seed: 5 } }), out: other, log });
    await expect(pretrain({ config: config({ train: { max_steps: 2, seed: 5 } }), out: other, log })).rejects.toThrow(/holds another run \(train.max_steps \(1 there, 2 now\)\)/);
    await expect(pretrain({ config: config({ train: { max_steps: 1, seed: 5 } }), out: other, log })).rejects.toThrow(/already holds this run; continue it with gm pretrain --resume/);
    // a global batch that the ranks cannot split
    await expect(pretrain({ config: config({ batch: { micro_batch: 3, global_batch: 8 } }), out: path.join(root, "bad2"), log })).rejects.toThrow(/multiple of micro_batch x ranks/);
  });
});

describe("gm pretrain (binary)", () => {
  const cfgFile = () => {
    const f = path.join(root, "cli-config.json");
    fs.writeFileSync(f, JSON.stringify({ model: tinyModel, data: { max_length: 40, buffer_batches: 2 }, batch: { micro_batch: 4 }, optimizer: { lr: 3e-3 }, train: { max_steps: 6, seed: 2 }, checkpoint: { every: 2, keep_last: 2 }, log: { every: 1 } }));
    return f;
  };

  it("a checkpoint being written when the process is killed never becomes the latest; --resume continues exactly", () => {
    const cfg = cfgFile();
    const ref = path.join(root, "cli-ref"), crash = path.join(root, "cli-crash");
    expect(gm(["pretrain", "--config", cfg, "--data", tok, "--out", ref]).code).toBe(0);
    const killed = gm(["pretrain", "--config", cfg, "--data", tok, "--out", crash], { env: { GM_FAILPOINT: "checkpoint-write:4" } });
    expect(killed.code).not.toBe(0);
    expect(listCheckpoints(crash).map((c) => c.step)).toEqual([2]);
    expect(fs.readdirSync(crash).some((n) => n.startsWith(".checkpoint-4.tmp-"))).toBe(true);
    const resumed = gm(["pretrain", "--resume", crash]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(fs.readdirSync(crash).some((n) => n.includes(".tmp-"))).toBe(false);
    expect(listCheckpoints(crash).map((c) => c.step)).toEqual([4, 6]); // --keep-last 2 (config)
    const read = (d: string) => fs.readFileSync(path.join(d, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).loss);
    expect(read(crash)).toEqual(read(ref));
    expect(fs.readFileSync(path.join(crash, "checkpoint-6", "model.safetensors")).equals(fs.readFileSync(path.join(ref, "checkpoint-6", "model.safetensors")))).toBe(true);
  });

  it("a non-finite gradient stops the run with a clear message and saves nothing new", () => {
    const out = path.join(root, "cli-nan");
    const r = gm(["pretrain", "--config", cfgFile(), "--data", tok, "--out", out, "--keep-last", "0"], { env: { GM_FAILPOINT: "nan-grad:5" } });
    expect(r.code).toBe(1);
    expect(errorLines(r.stderr)).toEqual([expect.stringMatching(/step 5: the gradient norm is NaN; nothing new was saved \(the last good checkpoint .*checkpoint-4 is kept\)/)]);
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([2, 4]);
  });

  it("SIGTERM saves a checkpoint at the end of the current step and exits 130", async () => {
    const cfg = cfgFile();
    const out = path.join(root, "cli-signal");
    const child = spawn(process.execPath, [gmBin, "--log-format", "json", "pretrain", "--config", cfg, "--data", tok, "--out", out, "--max-steps", "400", "--save-every", "1000"], {
      cwd: repoRoot,
      env: { ...process.env, GM_NO_PROGRESS: "1", GM_LOG_LEVEL: "info" },
    });
    let stderr = "";
    const code = await new Promise<number | null>((resolve) => {
      child.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
        if (/"step":3\b/.test(stderr) && !child.killed) child.kill("SIGTERM");
      });
      child.on("exit", (c) => resolve(c));
    });
    expect(code, stderr).toBe(130);
    const cps = listCheckpoints(out);
    expect(cps.length).toBe(1);
    expect(cps[0].step).toBeGreaterThanOrEqual(3);
    expect(cps[0].step).toBeLessThan(400);
    expect(stderr).toMatch(/--resume/);
  });

  it("bad input through the binary: one error line, exit codes 2 / 3", () => {
    const bad = path.join(root, "bad-config.json");
    fs.writeFileSync(bad, JSON.stringify({ model: tinyModel, optimiser: { lr: 1 } }));
    const r = gm(["pretrain", "--config", bad, "--data", tok, "--out", path.join(root, "cli-bad")]);
    expect(r.code).toBe(2);
    expect(errorLines(r.stderr)).toEqual([expect.stringMatching(/bad-config.json: unknown key 'optimiser'/)]);
    const empty = path.join(root, "empty-tok");
    fs.mkdirSync(empty);
    const e = gm(["pretrain", "--config", cfgFile(), "--data", empty, "--out", path.join(root, "cli-bad2")]);
    expect(e.code).toBe(3);
    expect(errorLines(e.stderr).join("\n")).toMatch(/empty-tok.*gm tokenize/);
    const multi = gm(["pretrain", "--config", cfgFile(), "--data", tok, "--out", path.join(root, "cli-bad3"), "--gpus", "2", "--nnodes", "2", "--node-rank", "0", "--master-addr", "10.0.0.1"]);
    expect(multi.code).toBe(2);
    // without a GPU: the build has no CUDA backend, or it has one and sees no device
    expect(errorLines(multi.stderr)).toEqual([expect.stringMatching(/^gm: error: --gpus 2( needs the CUDA backend, which this build lacks|: this process sees no GPU).*; on CPU run the ranks with --ranks 2$/)]);
    expect(fs.existsSync(path.join(root, "cli-bad3"))).toBe(false);
    const none = gm(["pretrain", "--resume", path.join(root, "nothing-here")]);
    expect(none.code).toBe(2);
  });
});

describe.skipIf(!hasShared)("gm pretrain on real PBMC cells (reference vocabulary, coexpression pairs)", () => {
  it("tokenize pbmc68k -> pretrain with MLM + InfoNCE over the reference gene pairs", async () => {
    const dir = tmpDir("gm-pretrain-pbmc-");
    const ptok = path.join(dir, "tok");
    const r = gm(["tokenize", shared("h5ad/pbmc68k_reduced_counts.h5ad"), "--out", ptok, "--medians", shared("genes/gene_medians_v1.json"),
      "--vocab", shared("genes/vocab_25426.json"), "--gene-map", shared("genes/gene_symbols.json"), "--counts-layer", "counts", "--max-len", "128"]);
    expect(r.code, r.stderr).toBe(0);
    const s = await pretrain({
      config: resolveRunConfig({
        model: "genemamba-4l-256d",
        objective: { infonce: { pairs: shared("genes/gene_pairs_coexpression.csv"), gene_map: shared("genes/gene_symbols.json") } },
        data: { dir: ptok, max_length: 128 },
        batch: { micro_batch: 8 },
        optimizer: { lr: 1e-3 },
        train: { max_steps: 4, seed: 1 },
        checkpoint: { every: 4 },
      }, "pbmc config"),
      out: path.join(dir, "run"),
      log,
    });
    expect(s.records.length).toBe(4);
    for (const rec of s.records) {
      expect(Number.isFinite(rec.loss)).toBe(true);
      expect(rec.infonce_pairs).toBeGreaterThan(0);
    }
    expect(s.records[3].mlm_loss!).toBeLessThan(s.records[0].mlm_loss!);
    const model = GeneMamba.load(path.join(dir, "run", "checkpoint-4"));
    expect(model.config.vocab_size).toBe(25427); // the reference vocabulary + [MASK]
  });
});
