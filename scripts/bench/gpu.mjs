#!/usr/bin/env node
// pnpm bench:gpu — one GPU's training throughput of the gm CUDA backend: for genemamba-24l-512d at
// L 2048, seconds per sample and tokens/s of forward + backward + AdamW, achieved TFLOP/s against
// the GPU's dense bf16 peak (MFU), forward + backward alone beside the paper's figure (0.1284
// s/sample, 130M model, L 2048, A100), the forward alone, and, where it can run on the same GPU,
// PyTorch with the reference mamba_ssm Mamba-2 layer (scripts/bench/mamba_ssm_peer.py).
// Targets (the issue's): at least 2x faster per sample than PyTorch + mamba_ssm, and 40% MFU.
// Without a GPU it says so and measures nothing. Results: printed (one final JSON line) and
// written to .bench/gpu.json; GM_BENCH_RECORD=1 adds a markdown block for docs/benchmarks.md.
//
// Environment: GM_BENCH_MODEL (configs/models name, default genemamba-24l-512d; "tiny" = a 2-layer
// d 32 model for smoke tests), GM_BENCH_LENGTH (2048), GM_BENCH_BATCH (24), GM_BENCH_STEPS (10, after
// 2 warm-up steps), GM_BENCH_DTYPE (bf16 | float32), GM_BENCH_PEER=0 skips PyTorch + mamba_ssm,
// GM_BENCH_PYTHON (python3), GM_BENCH_SCAN_BIN (native/build/gm_gpu_scan_bench), GM_BENCH_RECORD=1; GM_GPU_SCAN=ssd trains with (and reports the bandwidth of) the chunked SSD scan;
// GM_GPU_EMULATION=1 runs the whole path on the emulated backend (the CUDA kernels' bodies on the
// CPU: a test of the script, not a measurement).
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { GeneMamba, loadModelConfig, loadNative } from "@gm/engine";
import { trainingFlops } from "@gm/train";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const PAPER = { seconds_per_sample: 0.1284, model: "130M parameters", length: 2048, gpu: "A100", what: "forward + backward" };
const TARGETS = { speedup_vs_peer: 2, mfu: 0.4 };
const EMULATED_LABEL = "emulated (CPU), not a GPU measurement";

const env = process.env;
const modelName = env.GM_BENCH_MODEL ?? "genemamba-24l-512d";
const L = int("GM_BENCH_LENGTH", 2048);
const B = int("GM_BENCH_BATCH", 24);
const steps = int("GM_BENCH_STEPS", 10);
const warmup = 2;
const dtype = env.GM_BENCH_DTYPE ?? "bf16";
if (dtype !== "bf16" && dtype !== "float32") fail(`GM_BENCH_DTYPE must be bf16 or float32, got ${JSON.stringify(dtype)}`);
const record = env.GM_BENCH_RECORD === "1";
// The command as run, with the settings that were given (for the record).
const command = [...Object.keys(env).filter((k) => k.startsWith("GM_BENCH_") || k === "GM_GPU_EMULATION" || k === "GM_GPU_SCAN").sort().map((k) => `${k}=${env[k]}`), "npm run bench:gpu"].join(" ");

function int(name, dflt) {
  if (env[name] === undefined || env[name] === "") return dflt;
  const v = Number(env[name]);
  if (!Number.isInteger(v) || v < 1) fail(`${name} must be a positive integer, got ${JSON.stringify(env[name])}`);
  return v;
}
function fail(msg) {
  console.error(`bench:gpu: ${msg}`);
  process.exit(2);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const fmt = (x, digits = 4) => (x === null || x === undefined ? "n/a" : Number(x).toPrecision(digits));

function writeResult(result) {
  fs.mkdirSync(path.join(root, ".bench"), { recursive: true });
  fs.writeFileSync(path.join(root, ".bench", "gpu.json"), JSON.stringify(result, null, 2));
  console.log(JSON.stringify(result));
}

// ---------------------------------------------------------------- is there a GPU at all?
let native, loadError;
try {
  native = loadNative();
} catch (e) {
  loadError = e.message;
}
const report = native?.gpuReport ? JSON.parse(native.gpuReport()) : undefined;
const backend = native?.gpuBackend; // "cuda" | "emulated" | undefined
const emulated = backend === "emulated";
const count = native?.gpuCount?.() ?? 0;
if (!backend || count === 0) {
  const info = native?.buildInfo?.();
  const built = !native ? `unknown (the addon did not load: ${loadError})`
    : backend ? `built (${info?.cuda.reason ?? "no build info"})`
    : `not built: ${info?.cuda.reason ?? "the addon predates the CUDA backend; rebuild with npm run setup"}`;
  const why = report?.error ?? (backend ? "no CUDA device visible" : "no GPU backend in this addon");
  console.log(`no GPU: no measurement; the CUDA backend is ${built}; gpuReport error: ${why}`);
  if (record) console.log(`\nNo GPU measurement exists yet (${why}).\n`);
  writeResult({ bench: "gpu", gpu: null, reason: why, cuda_backend: built, command });
  process.exit(0);
}

// ---------------------------------------------------------------- the model and the batch
const device = emulated ? null : report.devices?.[0] ?? null;
if (emulated) console.log(`backend: emulated GPU (GM_GPU_EMULATION=1). Every number below is ${EMULATED_LABEL}.`);
else console.log(`GPU 0: ${device?.name}, cc ${device?.cc}, ${device?.sms} SMs, ${device?.memory_gib} GiB, ${device?.bandwidth_gbs} GB/s, ${device?.bf16_peak_tflops} TFLOP/s dense bf16; cuBLASLt ${report.cublaslt?.found ? report.cublaslt.version ?? "found" : `missing (${report.cublaslt?.error})`}`);

// "tiny" is not in configs/models: a model small enough for the emulated backend.
let base;
try {
  base = modelName === "tiny" ? { vocab_size: 64, d_model: 32, n_layer: 2, d_state: 16, headdim: 16, chunk_size: 16 } : loadModelConfig(modelName);
} catch (e) {
  fail(`GM_BENCH_MODEL: ${e.message}`);
}
// Pretraining appends one [MASK] token to the vocabulary.
const config = { ...base, vocab_size: base.vocab_size + 1 };
const maskId = base.vocab_size;

let model;
try {
  model = GeneMamba.create(config, 1, { kind: "cuda", device: 0, dtype });
} catch (e) {
  console.log(`the GPU model could not be created: ${e.message}`);
  writeResult({ bench: "gpu", gpu: device, emulated, error: e.message, command });
  process.exit(1);
}

// Random genes (fixed seed), every row full length; MLM-like: 15% of positions per row are targets,
// 80% of those shown as [MASK], the rest left as they are.
let seed = 7;
const rnd = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296;
const tokens = new Int32Array(B * L), targets = new Int32Array(B * L).fill(-100);
const perRow = Math.max(1, Math.round(0.15 * L));
const order = Int32Array.from({ length: L }, (_, i) => i);
for (let r = 0; r < B; r++) {
  for (let t = 0; t < L; t++) tokens[r * L + t] = 2 + Math.floor(rnd() * (base.vocab_size - 2));
  for (let k = 0; k < perRow; k++) { // partial Fisher-Yates: perRow distinct positions
    const j = k + Math.floor(rnd() * (L - k));
    [order[k], order[j]] = [order[j], order[k]];
    const i = r * L + order[k];
    targets[i] = tokens[i];
    if (rnd() < 0.8) tokens[i] = maskId;
  }
}
const batch = { tokens, lengths: new Int32Array(B).fill(L), batch: B, length: L, targets };
const lossPositions = B * perRow;
const flopsPerStep = trainingFlops(model.config, B * L, lossPositions);
// The GPU loss runs the LM head over every row (non-targets get a zero gradient), so the executed
// FLOPs are higher than the model FLOPs; MFU counts only the model's.
const executedFlopsPerStep = trainingFlops(model.config, B * L, B * L);

// ---------------------------------------------------------------- timing
// The host reads a value back at the end of every body (the loss, or the gradient norm in
// optimizerStep), so each interval covers real GPU work. AdamW is queued after the norm's read-back
// and finishes inside the next step's interval; the gradNorm() after a loop drains the last one, so
// loop seconds / n is the step time.
let adamStep = 0;
function timeLoop(n, body) {
  const per = [];
  const t0 = performance.now();
  let last = t0;
  for (let i = 0; i < n; i++) {
    body();
    const now = performance.now();
    per.push((now - last) / 1000);
    last = now;
  }
  model.gradNorm();
  const seconds = (performance.now() - t0) / 1000 / n;
  return { seconds, seconds_per_sample: seconds / B, median_seconds: median(per), min_seconds: Math.min(...per), per_step: per };
}
const trainStep = () => {
  model.zeroGrad();
  model.forwardBackward(batch, 1);
  model.optimizerStep({ lr: 1e-4, step: ++adamStep, maxGradNorm: 1, weightDecay: 0.01 });
};
// Forward + backward only, as the paper's figure; gradNorm is the sync point (one pass over the
// gradients, well under 1% of the step).
const fbStep = () => {
  model.zeroGrad();
  model.forwardBackward(batch, 1);
  model.gradNorm();
};
// The forward with the LM-head loss: evaluate reads back one number, where forward() would copy
// all hidden states to the host and time that copy.
const fwdStep = () => model.evaluate(batch);

let train, fb, fwd;
try {
  console.log(`${modelName}: ${model.numParameters.toLocaleString("en")} parameters, L ${L}, batch ${B}, ${dtype}; ${warmup} warm-up steps, then ${steps} timed`);
  timeLoop(warmup, trainStep);
  train = timeLoop(steps, trainStep);
  timeLoop(1, fbStep);
  fb = timeLoop(steps, fbStep);
  timeLoop(1, fwdStep);
  fwd = timeLoop(steps, fwdStep);
} catch (e) {
  console.log(`the GPU run failed: ${e.message}`);
  writeResult({ bench: "gpu", gpu: device, emulated, error: e.message, command });
  process.exit(1);
}
const tflops = flopsPerStep / train.seconds / 1e12;
const mfu = !emulated && device?.bf16_peak_tflops ? tflops / device.bf16_peak_tflops : null;
const memory = model.gpuMemory(B, L);

// ---------------------------------------------------------------- the scan kernel's bandwidth
// JS sees whole passes only; the scan's share of them cannot be separated here. A native
// micro-benchmark, when built, times the kernel alone; its JSON lines pass through unchanged.
const scanKind = env.GM_GPU_SCAN === "ssd" ? "ssd" : "recurrent";
const scanBench = env.GM_BENCH_SCAN_BIN ?? path.join(root, "native", "build", "gm_gpu_scan_bench");
let scan;
if (emulated) scan = { bandwidth_gbs: null, reason: "emulated backend: no device bandwidth to measure" };
else if (!fs.existsSync(scanBench)) scan = { bandwidth_gbs: null, reason: "scan bandwidth: needs native/bench gpu_scan_bench (not built); the forward/backward passes timed from JS include every kernel, so the scan cannot be isolated here" };
else {
  const cfg = model.config;
  const r = spawnSync(scanBench, [], {
    encoding: "utf8", timeout: 300_000,
    env: { ...env, GM_BENCH_LENGTH: String(L), GM_BENCH_BATCH: String(B), GM_BENCH_DTYPE: dtype, GM_BENCH_D_STATE: String(cfg.d_state), GM_BENCH_HEADDIM: String(cfg.headdim), GM_BENCH_D_INNER: String(cfg.expand * cfg.d_model), GM_BENCH_CHUNK: String(cfg.chunk_size) },
  });
  const lines = (r.stdout ?? "").split("\n").filter((l) => l.trim().startsWith("{")).map((l) => { try { return JSON.parse(l); } catch { return { unparsed: l }; } });
  // native/bench/gpu_scan_bench.cpp: one line per (kernel, pass, dtype); the Mamba-2 forward in this
  // run's dtype, of the scan this run trains with (GM_GPU_SCAN: the recurrence, or the SSD form).
  const kernel = scanKind === "ssd" ? "ssd_mamba2" : "scan_mamba2";
  const hit = lines.find((j) => j.kernel === kernel && j.pass === "forward" && j.dtype === (dtype === "bf16" ? "bf16" : "f32"));
  const gbs = typeof hit?.gbs === "number" ? hit.gbs : null;
  scan = r.status === 0 && lines.length
    ? { bandwidth_gbs: gbs, fraction_of_device: gbs && device?.bandwidth_gbs ? gbs / device.bandwidth_gbs : null, lines }
    : { bandwidth_gbs: null, reason: `gm_gpu_scan_bench failed (status ${r.status}${r.error ? `, ${r.error.message}` : ""}): ${(r.stderr || r.stdout || "").trim().split("\n").slice(-3).join(" | ")}` };
}

// ---------------------------------------------------------------- PyTorch + mamba_ssm on the same GPU
function peer() {
  if (env.GM_BENCH_PEER === "0") return { peer: null, reason: "skipped (GM_BENCH_PEER=0)" };
  const py = env.GM_BENCH_PYTHON ?? "python3";
  const probe = spawnSync(py, ["-c", "import torch, mamba_ssm; print(torch.cuda.is_available())"], { encoding: "utf8" });
  if (probe.error) return { peer: null, reason: `${py}: ${probe.error.message}` };
  if (probe.status !== 0) return { peer: null, reason: (probe.stderr || "").trim().split("\n").pop() };
  if (probe.stdout.trim() !== "True") return { peer: null, reason: "torch and mamba_ssm import, but torch.cuda.is_available() is False" };
  if (emulated) return { peer: null, reason: "not run: gm ran on the emulated backend, a GPU peer would not be comparable" };
  const c = model.config;
  const args = ["--vocab", c.vocab_size, "--d-model", c.d_model, "--n-layer", c.n_layer, "--d-state", c.d_state, "--headdim", c.headdim, "--expand", c.expand, "--d-conv", c.d_conv, "--len", L, "--steps", steps, "--warmup", warmup, "--dtype", dtype].map(String);
  // Out of memory (exit 3): halve the batch; s/sample is still comparable, the batch is recorded.
  for (let b = B; b >= 1; b = Math.floor(b / 2)) {
    console.log(`PyTorch + mamba_ssm: batch ${b} ...`);
    const r = spawnSync(py, [path.join(root, "scripts", "bench", "mamba_ssm_peer.py"), ...args, "--batch", String(b)], { cwd: root, encoding: "utf8", timeout: 600_000, maxBuffer: 1 << 26 });
    const line = (r.stdout ?? "").trim().split("\n").filter((l) => l.startsWith("{")).pop();
    const out = line ? JSON.parse(line) : null;
    if (r.status === 0 && out && !out.error) return { peer: out };
    if (r.status !== 3) return { peer: null, reason: `mamba_ssm_peer.py failed (status ${r.status}${r.signal ? `, ${r.signal}` : ""}): ${out?.error ?? (r.stderr || "").trim().split("\n").slice(-3).join(" | ")}` };
  }
  return { peer: null, reason: "out of memory even at batch 1" };
}
const { peer: peerResult, reason: peerReason } = peer();

// ---------------------------------------------------------------- report
const tag = emulated ? ` [${EMULATED_LABEL}]` : "";
const isA100 = /A100/i.test(device?.name ?? "");
const paper = emulated ? null : {
  ...PAPER,
  gm_fb_seconds_per_sample: fb.seconds_per_sample,
  speedup: PAPER.seconds_per_sample / fb.seconds_per_sample,
  note: `${isA100 ? "same GPU model" : `different GPU (${device?.name} here, A100 in the paper)`}; model ${model.numParameters.toLocaleString("en")} parameters here, ${PAPER.model} in the paper`,
};
const speedup = peerResult ? peerResult.seconds_per_sample / train.seconds_per_sample : null;
const speedupFb = peerResult ? peerResult.fb_seconds_per_sample / fb.seconds_per_sample : null;

console.log(`train step (zeroGrad + forward + backward + clip + AdamW): ${fmt(train.seconds)} s/step, ${fmt(train.seconds_per_sample)} s/sample, ${Math.round((B * L) / train.seconds).toLocaleString("en")} tokens/s (median step ${fmt(train.median_seconds)} s, min ${fmt(train.min_seconds)} s)${tag}`);
console.log(`  ${fmt(tflops)} TFLOP/s model FLOPs (${fmt(executedFlopsPerStep / train.seconds / 1e12)} executed, LM head on every row); MFU ${mfu === null ? "n/a" : `${(100 * mfu).toFixed(1)}% of ${device?.bf16_peak_tflops} TFLOP/s dense bf16`}${emulated ? ` (no GPU peak)${tag}` : ""}`);
console.log(`forward + backward only: ${fmt(fb.seconds_per_sample)} s/sample${tag}`);
if (paper) console.log(`  paper: ${PAPER.seconds_per_sample} s/sample (${PAPER.model}, L ${PAPER.length}, ${PAPER.gpu}, ${PAPER.what}) -> gm ${fmt(paper.speedup, 3)}x ${paper.speedup >= 1 ? "faster" : "slower"}; ${paper.note}`);
console.log(`forward only (with the LM-head loss): ${fmt(fwd.seconds_per_sample)} s/sample${tag}`);
const bytes = (n) => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`);
if (memory) console.log(`device memory held by the engine: ${bytes(memory.params)} parameters + gradients + AdamW moments, ${bytes(memory.activations)} activations for batch ${B} x ${L} (the engine's allocation, not a driver-measured peak)${tag}`);
console.log(scan.bandwidth_gbs === null ? scan.reason : `scan kernel: ${fmt(scan.bandwidth_gbs)} GB/s${scan.fraction_of_device ? `, ${(100 * scan.fraction_of_device).toFixed(0)}% of the device's ${device.bandwidth_gbs} GB/s` : ""}`);
if (peerResult) console.log(`PyTorch + mamba_ssm (${peerResult.device}, torch ${peerResult.torch}, mamba_ssm ${peerResult.mamba_ssm}, batch ${peerResult.batch}): ${fmt(peerResult.seconds_per_sample)} s/sample train step, ${fmt(peerResult.fb_seconds_per_sample)} s/sample forward + backward -> gm ${fmt(speedup, 3)}x (train), ${fmt(speedupFb, 3)}x (fwd+bwd)`);
else console.log(`PyTorch + mamba_ssm: not available on this machine (${peerReason})`);
if (!emulated) console.log(`targets: >= ${TARGETS.speedup_vs_peer}x PyTorch + mamba_ssm: ${speedup === null ? "not measured" : speedup >= TARGETS.speedup_vs_peer ? "met" : "NOT met"}; >= ${100 * TARGETS.mfu}% MFU: ${mfu === null ? "not measured" : mfu >= TARGETS.mfu ? "met" : "NOT met"}`);

const result = {
  bench: "gpu",
  command,
  gpu: device, // null when emulated: no number here is a GPU result
  emulated,
  ...(emulated ? { note: `every number is ${EMULATED_LABEL}` } : {}),
  backend,
  cublaslt: emulated ? null : report.cublaslt?.version ?? null,
  model: modelName,
  parameters: model.numParameters,
  length: L,
  batch: B,
  steps,
  warmup,
  dtype,
  loss_positions: lossPositions,
  train: { ...train, tokens_per_second: (B * L) / train.seconds },
  forward_backward: fb,
  forward: fwd,
  flops_per_step: flopsPerStep,
  executed_flops_per_step: executedFlopsPerStep,
  tflops,
  mfu,
  memory_bytes: memory ?? null,
  scan: { kind: scanKind, ...scan },
  paper,
  peer: peerResult ?? null,
  ...(peerResult ? {} : { peer_reason: peerReason }),
  speedup_vs_peer: speedup,
  speedup_vs_peer_forward_backward: speedupFb,
  targets: emulated ? null : { ...TARGETS, speedup_met: speedup === null ? null : speedup >= TARGETS.speedup_vs_peer, mfu_met: mfu === null ? null : mfu >= TARGETS.mfu },
};

if (record) {
  const gpuCell = emulated ? EMULATED_LABEL : `${device?.name} (cc ${device?.cc}, ${device?.memory_gib} GiB)`;
  const pct = (x) => (x === null ? "n/a" : `${(100 * x).toFixed(1)}%`);
  console.log(`
| GPU | model | L | batch | dtype | train step s/sample | tokens/s | TFLOP/s | MFU | fwd+bwd s/sample | vs paper 0.1284 (A100) | PyTorch + mamba_ssm s/sample | gm speed-up | scan GB/s |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| ${gpuCell} | ${modelName} | ${L} | ${B} | ${dtype}${scanKind === "ssd" ? " (SSD scan)" : ""} | ${fmt(train.seconds_per_sample)} | ${Math.round((B * L) / train.seconds)} | ${fmt(tflops, 3)} | ${pct(mfu)} | ${fmt(fb.seconds_per_sample)} | ${paper ? `${fmt(paper.speedup, 3)}x` : "n/a"} | ${peerResult ? `${fmt(peerResult.seconds_per_sample)} (batch ${peerResult.batch})` : "n/a"} | ${speedup === null ? "n/a" : `${fmt(speedup, 3)}x`} | ${scan.bandwidth_gbs === null ? "n/a" : fmt(scan.bandwidth_gbs)} |

Measured ${new Date().toISOString().slice(0, 10)} with \`${command}\`${emulated ? `; ${EMULATED_LABEL}` : ""}.${paper && !isA100 ? ` The paper's figure is on an A100, this row on ${device?.name}.` : ""}${peerResult ? "" : ` PyTorch + mamba_ssm: not available (${peerReason}).`}${scan.bandwidth_gbs === null ? ` Scan bandwidth: ${scan.reason}.` : ""}
`);
}
writeResult(result);
