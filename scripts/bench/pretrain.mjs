#!/usr/bin/env node
// pnpm bench:pretrain — end-to-end tokens/s of the real `gm pretrain` binary (loader in its worker,
// masking, logging, metrics, checkpoints every 20 steps) against the engine's raw step time on the
// same batches (the same cells and masks, prepared up front, then only forward + backward + AdamW
// timed), side by side in one run; and gm pretrain's peak RSS on a 1k-cell and a 100k-cell dataset.
// Results: printed and written to .bench/pretrain.json.
//
// Environment: GM_BENCH_THREADS (default 2), GM_BENCH_STEPS (default 60), GM_BENCH_CELLS (default 100000),
// GM_BENCH_ROUNDS (default 2: each side runs this often, alternating; the best of each is compared).
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { GeneMamba, resolveConfig } from "@gm/engine";
import { prepareMlm, resolveRunConfig, TokenLoader, readDatasetIndex, trainingVocabulary } from "@gm/train";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const gm = path.join(root, "packages/cli/bin/gm.js");
const threads = Number(process.env.GM_BENCH_THREADS ?? 2);
const steps = Number(process.env.GM_BENCH_STEPS ?? 60);
const bigCells = Number(process.env.GM_BENCH_CELLS ?? 100000);
const work = path.join(root, ".bench", "pretrain");
fs.mkdirSync(work, { recursive: true });
const env = { ...process.env, GM_THREADS: String(threads), GM_NO_PROGRESS: "1" };

function run(args) {
  execFileSync(process.execPath, [gm, "--log-level", "warn", ...args], { cwd: root, stdio: "inherit", env });
}

/** A tokenized simulated dataset of n cells (cached under .bench/pretrain). */
function dataset(n) {
  const dir = path.join(work, `data-${n}`);
  if (fs.existsSync(path.join(dir, "tok", "state.json"))) return path.join(dir, "tok");
  fs.rmSync(dir, { recursive: true, force: true });
  console.error(`building a ${n}-cell tokenized dataset ...`);
  run(["simulate", "--cells", String(n), "--genes", "4000", "--cell-types", "6", "--batches", "2", "--seed", "3", "--out", path.join(dir, "raw", "sim.h5ad")]);
  run(["preprocess", path.join(dir, "raw"), "--out", path.join(dir, "pre"), "--workers", "2", "--unit-cells", "20000"]);
  run(["tokenize", path.join(dir, "pre"), "--out", path.join(dir, "tok"), "--medians", path.join(dir, "pre", "gene_medians.json"), "--max-len", "2048", "--workers", "2"]);
  fs.rmSync(path.join(dir, "raw"), { recursive: true, force: true });
  return path.join(dir, "tok");
}

const runConfig = {
  model: { d_model: 128, n_layer: 4, d_state: 32, headdim: 32, combine: "gate" },
  data: { max_length: 256, buffer_batches: 4, prefetch: 4 },
  batch: { micro_batch: 16, global_batch: 16 },
  optimizer: { lr: 2e-3, weight_decay: 0.01, max_grad_norm: 1 },
  schedule: { type: "cosine", warmup_steps: 10, min_lr_ratio: 0.1 },
  train: { max_steps: steps, seed: 1 },
  checkpoint: { every: 20, keep_last: 2 },
  log: { every: 10 },
};

/** The real binary, with a checkpoint every 20 steps; its summary.json has tokens/s and peak RSS. */
function e2e(tok, label) {
  const out = path.join(work, `run-${label}`);
  fs.rmSync(out, { recursive: true, force: true });
  const cfg = path.join(work, "config.json");
  fs.writeFileSync(cfg, JSON.stringify(runConfig));
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [gm, "--log-level", "warn", "pretrain", "--config", cfg, "--data", tok, "--out", out], { cwd: root, env, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`gm pretrain failed: ${r.stderr}`);
  const wall = (performance.now() - t0) / 1000;
  const summary = JSON.parse(fs.readFileSync(path.join(out, "summary.json"), "utf8"));
  return { ...summary, process_seconds: wall };
}

/** The same steps through the engine only: batches prepared up front, then train steps timed. */
async function raw(tok) {
  const cfg = resolveRunConfig({ ...runConfig, data: { ...runConfig.data, dir: tok, prefetch: 0 } }, "bench");
  const index = readDatasetIndex(tok);
  const { vocab, space } = trainingVocabulary(tok, "mlm", index.vocab_size);
  const loader = new TokenLoader({ dir: tok, seed: 1, worldSize: 1, microBatch: 16, accumulation: 1, maxLength: 256, bufferBatches: 4, shuffle: true, prefetch: 0 });
  const batches = [];
  for (let s = 0; s < steps; s++) {
    const sb = await loader.next();
    batches.push(prepareMlm(sb.micro[0][0], space, { maskProb: 0.15, maskTokenProb: 0.8, randomTokenProb: 0.1 }, 1, sb.epoch));
  }
  await loader.close();
  const model = GeneMamba.create(resolveConfig({ ...cfg.model, vocab_size: vocab.size, pad_token_id: space.padId }), 1);
  let tokens = 0;
  const t0 = performance.now();
  batches.forEach((b, i) => {
    model.trainStep(b, { lr: 2e-3, weightDecay: 0.01, maxGradNorm: 1, step: i + 1 });
    tokens += b.tokenCount;
  });
  const seconds = (performance.now() - t0) / 1000;
  return { rows: index.rows, tokens, seconds, tokens_per_second: tokens / seconds };
}

const small = dataset(1000);
const big = dataset(bigCells);
process.env.GM_THREADS = String(threads);
// Alternate the two sides, ROUNDS times each, so machine noise hits both; report the best of each.
const rounds = Number(process.env.GM_BENCH_ROUNDS ?? 2);
const fulls = [], engines = [];
for (let i = 0; i < rounds; i++) {
  console.error(`[round ${i + 1}] gm pretrain on ${bigCells} cells, ${steps} steps (checkpoint every 20), ${threads} threads`);
  fulls.push(e2e(big, "big"));
  console.error("    ", JSON.stringify(fulls[i]));
  console.error(`[round ${i + 1}] the engine alone on the same ${steps} batches`);
  engines.push(await raw(big));
  console.error("    ", JSON.stringify(engines[i]));
}
console.error(`[peak RSS] gm pretrain on 1000 cells`);
const tiny = e2e(small, "small");
console.error("    ", JSON.stringify(tiny));
const best = (xs) => xs.reduce((a, b) => (b.tokens_per_second > a.tokens_per_second ? b : a));
const full = best(fulls), engine = best(engines);

const result = {
  machine: `${threads} threads`,
  steps,
  rounds,
  e2e_tokens_per_second: full.tokens_per_second,
  engine_tokens_per_second: engine.tokens_per_second,
  overhead_vs_engine: 1 - full.tokens_per_second / engine.tokens_per_second,
  overhead_in_run: 1 - full.engine_seconds / full.seconds,
  all_e2e: fulls.map((f) => Math.round(f.tokens_per_second)),
  all_engine: engines.map((e) => Math.round(e.tokens_per_second)),
  peak_rss_mb: { [`${bigCells}_cells`]: Math.max(...fulls.map((f) => f.peak_rss_mb)), "1000_cells": tiny.peak_rss_mb },
};
fs.writeFileSync(path.join(root, ".bench", "pretrain.json"), JSON.stringify({ result, fulls, engines, tiny }, null, 2));
console.log(JSON.stringify(result, null, 2));
