#!/usr/bin/env node
// One gm engine training-step measurement in its own process (so peak RSS is this config's alone).
// Args: --config NAME|FILE --batch B --len L --steps S --warmup W [--mlm]. Prints one JSON line:
// median step time, tokens/s, peak RSS, activation bytes, last loss. Same step as the PyTorch peer:
// forward + backward (loss on every position, or on 15% with --mlm) + global-norm clip + AdamW.
import { GeneMamba, loadModelConfig, IGNORE_INDEX } from "@gm/engine";

const args = Object.fromEntries(process.argv.slice(2).join(" ").split("--").filter(Boolean).map((a) => { const [k, v] = a.trim().split(/\s+/); return [k, v ?? "1"]; }));
const B = Number(args.batch ?? 1), L = Number(args.len ?? 512), steps = Number(args.steps ?? 3), warmup = Number(args.warmup ?? 1);
const config = loadModelConfig(args.config);
const m = GeneMamba.create(config, 0);
let s = 12345;
const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const V = config.vocab_size;
const tokens = Int32Array.from({ length: B * L }, () => 2 + Math.floor(rand() * (V - 2)));
const targets = Int32Array.from({ length: B * L }, () => (args.mlm && rand() >= 0.15 ? IGNORE_INDEX : 2 + Math.floor(rand() * (V - 2))));
const batch = { tokens, targets, lengths: new Int32Array(B).fill(L), batch: B, length: L };
const times = [];
let loss = NaN;
for (let i = 0; i < warmup + steps; i++) {
  const t0 = performance.now();
  loss = m.trainStep(batch, { lr: 1e-4, weightDecay: 0.01, maxGradNorm: 1, step: i + 1 }).loss;
  if (i >= warmup) times.push((performance.now() - t0) / 1000);
}
times.sort((a, b) => a - b);
const step = times[Math.floor(times.length / 2)];
console.log(JSON.stringify({
  impl: args.mlm ? "gm-mlm15" : "gm", threads: Number(process.env.GM_THREADS ?? 0), batch: B, len: L, step_s: step, tokens_per_s: (B * L) / step,
  peak_rss_bytes: process.resourceUsage().maxRSS * 1024, activation_bytes: m.activationBytes, parameters: m.numParameters, loss,
}));
