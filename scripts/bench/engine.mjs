#!/usr/bin/env node
// pnpm bench:engine — tokens/s and peak memory of one training step (forward + backward + clip +
// AdamW) of the gm engine, side by side in one run with the team's PyTorch reference
// (scripts/bench/engine_torch.py, best of its sequential and chunked-SSD scans) on the same machine
// and thread count; then the kernel micro-benchmark (scan against its roofline, GEMMs against
// OpenBLAS). Results: printed, and written to .bench/engine.json.
//
// Environment: GM_BENCH_THREADS (default 2), GM_BENCH_STEPS (default 3), GM_BENCH_ONLY=small|large.
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const PY = "/usr/bin/python3";
const threads = Number(process.env.GM_BENCH_THREADS ?? 2);
const steps = Number(process.env.GM_BENCH_STEPS ?? 3);
const out = path.join(root, ".bench");
fs.mkdirSync(out, { recursive: true });

function ensureTorch() {
  if (spawnSync(PY, ["-c", "import torch"], { stdio: "ignore" }).status === 0) return;
  console.error("installing Debian python3-torch for the PyTorch reference ...");
  execFileSync("bash", ["-c", "apt-get update -qq && apt-get install -y -qq python3-torch python3-numpy"], { stdio: "inherit" });
}

function runJson(cmd, args, env = {}) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: "utf8", env: { ...process.env, ...env }, maxBuffer: 1 << 26 });
  const line = r.stdout.trim().split("\n").filter((l) => l.startsWith("{")).pop();
  if (r.status !== 0 || !line) return { error: (r.stderr || r.stdout).trim().split("\n").slice(-3).join(" | ") };
  return JSON.parse(line);
}

const configs = [
  { name: "small", config: "genemamba-4l-256d", batch: 4, len: 512, chunks: [32, 64, 128, 256] },
  // Q = 256 needs more memory than these 24 GiB machines have (the peer refuses it).
  { name: "large", config: "genemamba-24l-512d", batch: 1, len: 2048, chunks: [32, 64, 128] },
].filter((c) => !process.env.GM_BENCH_ONLY || c.name === process.env.GM_BENCH_ONLY);

ensureTorch();
const env = { GM_THREADS: String(threads), OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) };
const results = [];
for (const c of configs) {
  const cfgFile = path.join(root, "configs/models", `${c.config}.json`);
  const common = ["--batch", String(c.batch), "--len", String(c.len), "--steps", String(steps)];
  console.error(`[${c.name}] ${c.config}, batch ${c.batch}, L ${c.len}, ${threads} threads`);
  const gm = runJson(process.execPath, [path.join(root, "scripts/bench/engine_gm.mjs"), "--config", c.config, ...common, "--warmup", "1"], env);
  console.error("  gm         ", JSON.stringify(gm));
  const gmMlm = runJson(process.execPath, [path.join(root, "scripts/bench/engine_gm.mjs"), "--config", c.config, ...common, "--warmup", "1", "--mlm"], env);
  console.error("  gm (MLM)   ", JSON.stringify(gmMlm));
  // The peer's best: its sequential scan and its chunked SSD scan at several chunk lengths.
  const torch = {};
  for (const [scan, chunk] of [["sequential", 0], ...c.chunks.map((q) => ["ssd", q])]) {
    const key = chunk ? `${scan}-q${chunk}` : scan;
    const extra = chunk ? ["--chunk", String(chunk)] : [];
    torch[key] = runJson(PY, [path.join(root, "scripts/bench/engine_torch.py"), "--config", cfgFile, ...common, "--warmup", "2", "--threads", String(threads), "--scan", scan, ...extra], env);
    if (torch[key].impl) torch[key].impl = `torch-${key}`;
    console.error(`  torch-${key.padEnd(10)}`, JSON.stringify(torch[key]));
  }
  const ok = Object.values(torch).filter((t) => t.tokens_per_s);
  const best = ok.sort((a, b) => b.tokens_per_s - a.tokens_per_s)[0];
  const row = { ...c, threads, gm, gm_mlm: gmMlm, torch, best_torch: best?.impl };
  if (best && gm.tokens_per_s) {
    row.speedup = gm.tokens_per_s / best.tokens_per_s;
    row.memory_ratio = gm.peak_rss_bytes / best.peak_rss_bytes;
  }
  results.push(row);
}
const kernelLines = spawnSync(path.join(root, "native/build/gm_bench"), [String(threads)], { encoding: "utf8", env: { ...process.env, ...env } }).stdout.trim().split("\n").map((l) => JSON.parse(l));
const report = { date: new Date().toISOString(), threads, results, kernels: kernelLines };
fs.writeFileSync(path.join(out, "engine.json"), JSON.stringify(report, null, 2));

const f = (x, d = 0) => (x === undefined ? "-" : Number(x).toFixed(d));
console.log(`\n| config | gm tok/s | best PyTorch tok/s (impl) | speedup | gm peak RSS | PyTorch peak RSS | memory ratio |`);
console.log(`|---|---|---|---|---|---|---|`);
for (const r of results) {
  const t = r.best_torch ? Object.values(r.torch).find((x) => x.impl === r.best_torch) : undefined;
  console.log(`| ${r.config} B${r.batch} L${r.len} | ${f(r.gm.tokens_per_s)} | ${f(t?.tokens_per_s)} (${r.best_torch ?? "failed"}) | ${f(r.speedup, 2)}x | ${f(r.gm.peak_rss_bytes / 1e9, 2)} GB | ${f(t?.peak_rss_bytes / 1e9, 2)} GB | ${f(r.memory_ratio, 2)} |`);
}
console.log(`\nkernels (${threads} threads):`);
for (const k of kernelLines) console.log("  " + JSON.stringify(k));
console.log(`\nwritten to ${path.relative(root, path.join(out, "engine.json"))}`);
