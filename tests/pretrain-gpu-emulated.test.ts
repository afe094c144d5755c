// gm pretrain --gpus on the emulated GPU backend (GM_GPU_EMULATION=1: native/build/Release/
// gm_native_emul.node, whose GpuEngine runs the CUDA kernels' bodies on the CPU over host memory).
// This drives everything a GPU run uses above the kernels: the GpuEngine binding and its host
// mirrors, the trainer's GPU path, one worker process per GPU, gradients through the host when NCCL
// is absent, safetensors checkpoints and CPU <-> GPU resume. Numbers are compared with the CPU
// engine's run of the same config (fp32: within 1e-4; bf16: looser). No timing here.
import { beforeAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { listCheckpoints } from "@gm/train";
import { errorLines, gm } from "./helpers/cli.js";
import { repoRoot, tmpDir } from "./helpers/paths.js";
import { freePort } from "./helpers/net.js";
import { simulatedTokens } from "./helpers/tokenized.js";

const EMUL = path.join(repoRoot, "native/build/Release/gm_native_emul.node");
const emu = { GM_GPU_EMULATION: "1" };
let root: string, tok: string, cfg: string;

beforeAll(async () => {
  root = tmpDir("gm-pretrain-gpu-");
  tok = await simulatedTokens(root, { cells: 200, genes: 300, seed: 5, maxLen: 24 });
  cfg = path.join(root, "config.json");
  fs.writeFileSync(
    cfg,
    JSON.stringify({
      model: { d_model: 32, n_layer: 2, headdim: 16, d_state: 8, chunk_size: 8, combine: "gate" },
      data: { max_length: 16, buffer_batches: 2, prefetch: 1 },
      batch: { micro_batch: 2, global_batch: 4 },
      optimizer: { lr: 3e-3, weight_decay: 0.01, max_grad_norm: 1.0 },
      schedule: { type: "cosine", warmup_steps: 1, min_lr_ratio: 0.1 },
      train: { max_steps: 4, seed: 9 },
      checkpoint: { every: 2, keep_last: 0 },
      log: { every: 1 },
    }),
  );
});

const losses = (dir: string) => fs.readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).loss as number);
const relDiff = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i]) / Math.abs(b[i])));
const run = (args: string[], env: Record<string, string> = {}) => gm(["pretrain", "--config", cfg, "--data", tok, ...args], { env: { GM_NO_PROGRESS: "1", ...env } });

describe.skipIf(!fs.existsSync(EMUL))("gm pretrain --gpus on the emulated GPU backend", () => {
  let cpuRef: string;
  beforeAll(() => {
    cpuRef = path.join(root, "cpu");
    const r = run(["--out", cpuRef]);
    expect(r.code, r.stderr).toBe(0);
  });

  it("--gpus 1 --precision fp32 follows the CPU run within 1e-4 and writes the same safetensors tensors", () => {
    const out = path.join(root, "gpu1");
    const r = run(["--out", out, "--gpus", "1", "--precision", "fp32"], emu);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/data parallel: 1 gpu rank/);
    expect(r.stderr).toMatch(/GPU memory for a full-length micro-batch/);
    expect(losses(out).length).toBe(4);
    expect(relDiff(losses(out), losses(cpuRef))).toBeLessThan(1e-4);
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([2, 4]);
    const header = (d: string) => {
      const b = fs.readFileSync(path.join(d, "checkpoint-4", "model.safetensors"));
      const h = JSON.parse(b.subarray(8, 8 + Number(b.readBigUInt64LE(0))).toString()) as Record<string, { dtype: string; shape: number[] }>;
      return Object.fromEntries(Object.entries(h).filter(([k]) => k !== "__metadata__").map(([k, v]) => [k, `${v.dtype}${v.shape}`]));
    };
    expect(header(out)).toEqual(header(cpuRef));
  });

  it("GM_GPU_SCAN=ssd (Mamba-2's chunked SSD scan) --precision fp32 follows the CPU run within 1e-4; a bad value is one error line", () => {
    const out = path.join(root, "gpu1-ssd");
    const r = run(["--out", out, "--gpus", "1", "--precision", "fp32"], { ...emu, GM_GPU_SCAN: "ssd" });
    expect(r.code, r.stderr).toBe(0);
    expect(relDiff(losses(out), losses(cpuRef))).toBeLessThan(1e-4);
    expect(r.stderr).toMatch(/mamba2_scan.{0,6}ssd/);
    const bad = run(["--out", path.join(root, "gpu1-badscan"), "--gpus", "1"], { ...emu, GM_GPU_SCAN: "fast" });
    expect(bad.code).toBe(2);
    expect(errorLines(bad.stderr).join("\n")).toMatch(/GM_GPU_SCAN must be 'recurrent' or 'ssd'/);
  });

  it("bf16 (the default) trains within 2e-2 of the fp32 CPU losses", () => {
    const out = path.join(root, "gpu-bf16");
    const r = run(["--out", out, "--gpus", "1"], emu);
    expect(r.code, r.stderr).toBe(0);
    const l = losses(out);
    expect(l.every(Number.isFinite)).toBe(true);
    expect(relDiff(l, losses(cpuRef))).toBeLessThan(2e-2);
  });

  it("resume moves between CPU and GPU: CPU steps 1-2 then GPU 3-4, and GPU 1-2 then CPU 3-4, both within 1e-4 of the CPU run", () => {
    // a run folder cut back to its step-2 checkpoint resumes from there (metrics past it are dropped)
    const cutBack = (from: string, to: string) => {
      fs.cpSync(from, to, { recursive: true });
      fs.rmSync(path.join(to, "checkpoint-4"), { recursive: true });
    };
    const a = path.join(root, "cpu-then-gpu");
    cutBack(cpuRef, a);
    const ra = gm(["pretrain", "--resume", a, "--gpus", "1", "--precision", "fp32"], { env: emu });
    expect(ra.code, ra.stderr).toBe(0);
    expect(ra.stderr).toMatch(/"step":2[,}].*resuming|resuming.*"step":2[,}]/);
    expect(losses(a).length).toBe(4);
    expect(relDiff(losses(a), losses(cpuRef))).toBeLessThan(1e-4);

    const gpuRun = path.join(root, "gpu-first");
    expect(run(["--out", gpuRun, "--gpus", "1", "--precision", "fp32"], emu).code).toBe(0);
    const b = path.join(root, "gpu-then-cpu");
    cutBack(gpuRun, b);
    const rb = gm(["pretrain", "--resume", b]);
    expect(rb.code, rb.stderr).toBe(0);
    expect(relDiff(losses(b), losses(cpuRef))).toBeLessThan(1e-4);
  });

  it("--gpus 2 starts one worker process per GPU and joins the (emulated) NCCL group: the reductions armed for each step's last backward match --ranks 2 on CPU within 1e-4; without NCCL (GM_EMUL_NCCL=0) the host all-reduce does too", async () => {
    const ref = path.join(root, "cpu2");
    expect(run(["--out", ref, "--ranks", "2"]).code).toBe(0);
    // global batch 4 over 2 ranks x micro 2: no accumulation; with global 8 two micro-batches, the
    // reduction armed for the second
    for (const [name, extra] of [["gpu2", []], ["gpu2-accum", ["--global-batch", "8"]]] as const) {
      const cpu = path.join(root, `${name}-cpu`);
      expect(run(["--out", cpu, "--ranks", "2", ...extra]).code).toBe(0);
      const out = path.join(root, name);
      const port = await freePort();
      const r = run(["--out", out, "--gpus", "2", "--precision", "fp32", "--master-port", String(port), ...extra], emu);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/starting one worker process per GPU/);
      expect(r.stderr).toMatch(/rank 0 -> GPU 0, rank 1 -> GPU 1/);
      expect(r.stderr).toMatch(/joined the NCCL group/);
      expect(r.stderr).toMatch(/"gradients":"NCCL, per layer, overlapped"/);
      expect(relDiff(losses(out), losses(cpu))).toBeLessThan(1e-4);
    }
    const host = path.join(root, "gpu2-host");
    const port = await freePort();
    const h = run(["--out", host, "--gpus", "2", "--precision", "fp32", "--master-port", String(port)], { ...emu, GM_EMUL_NCCL: "0" });
    expect(h.code, h.stderr).toBe(0);
    expect(h.stderr).toMatch(/NCCL is not available: gradients are averaged on the host/);
    expect(relDiff(losses(host), losses(ref))).toBeLessThan(1e-4);
  });

  it("a worker that dies makes the launcher exit non-zero with one error line naming its rank", async () => {
    const out = path.join(root, "gpu2-dead");
    const port = await freePort();
    // rank 0 kills itself while writing the step-2 checkpoint; rank 1 loses its NCCL and TCP peer
    const r = run(["--out", out, "--gpus", "2", "--precision", "fp32", "--master-port", String(port)], { ...emu, GM_FAILPOINT: "checkpoint-write:2", GM_WORKER_GRACE_S: "20" });
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr).at(-1), r.stderr).toMatch(/^gm: error: gm pretrain: the worker of rank \d exited with \d+; see its messages above/);
  });

  it("--gpus beyond the node's GPUs, and a bad --precision, are one-line usage errors (exit 2)", () => {
    const r = run(["--out", path.join(root, "x"), "--gpus", "9"], emu);
    expect(r.code).toBe(2);
    expect(errorLines(r.stderr)).toEqual(["gm: error: --gpus 9 but this node has 8 visible GPUs; use --gpus 8"]);
    const bad = run(["--out", path.join(root, "y"), "--gpus", "1", "--precision", "fp16"], emu);
    expect(bad.code).toBe(2);
    expect(errorLines(bad.stderr)).toEqual(["gm: error: --precision must be bf16 or fp32 (got fp16)"]);
    expect(fs.existsSync(path.join(root, "x"))).toBe(false);
  });
});
