// native/bench/gpu_train_bench.cpp, the GPU training benchmark that needs no Node (device-check.sh
// runs it on GPU machines without node_modules), through its emulated build: the FLOPs it counts are
// metrics.ts's, its default model is configs/models/genemamba-24l-512d.json, its allocator peak is
// its memory plan, the loss falls on the repeated batch, and bad settings fail with one line.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { GeneMamba, loadModelConfig, type ModelConfig } from "@gm/engine";
import { trainingFlops } from "../src/metrics.js";
import { repoRoot } from "../../../tests/helpers/paths.js";

const BIN = path.join(repoRoot, "native/build/gm_gpu_train_bench_emul");
type Line = Record<string, unknown> & { config?: Record<string, number | string>; phase?: string; result?: string; error?: string };

function bench(env: Record<string, string>, args: string[] = []) {
  const r = spawnSync(BIN, args, { encoding: "utf8", env: { ...process.env, OMP_NUM_THREADS: "1", ...env }, timeout: 120_000 });
  expect(r.error, `${BIN}: run \`npm run setup\``).toBeUndefined();
  const lines = (r.stdout ?? "").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Line);
  return { status: r.status, lines, plan: lines.find((l) => l.config)!, result: lines.find((l) => l.result) };
}

const TINY = { GM_BENCH_VOCAB: "64", GM_BENCH_D_MODEL: "32", GM_BENCH_N_LAYER: "2", GM_BENCH_D_STATE: "16", GM_BENCH_HEADDIM: "16", GM_BENCH_CHUNK: "16", GM_BENCH_LENGTH: "48", GM_BENCH_BATCH: "3", GM_BENCH_STEPS: "3" };
// The bench prints dt_rank 0 for Mamba-2 (unused there); the TS config leaves it to its default.
const asModel = ({ dt_rank, ...c }: Record<string, number | string>) => ({ ...c, ...(dt_rank ? { dt_rank } : {}), norm_eps: 1e-5, pad_token_id: 1 }) as unknown as ModelConfig;

describe("gm_gpu_train_bench (emulated build)", () => {
  it("runs the train, forward + backward and forward phases on a tiny model; FLOPs, parameters and memory agree with the TS side", () => {
    for (const mixer of ["mamba2", "mamba1"]) {
      for (const dtype of ["bf16", "float32"]) {
        const { status, lines, plan, result } = bench({ ...TINY, GM_BENCH_MIXER: mixer, GM_BENCH_DTYPE: dtype });
        expect(status, JSON.stringify(lines)).toBe(0);
        expect(lines[0]).toMatchObject({ device: "emulated", emulated: true });
        const cfg = asModel(plan.config!);
        expect(cfg).toMatchObject({ vocab_size: 65, d_model: 32, n_layer: 2, mixer, d_state: 16 });
        // 15% of each row's 48 positions are targets: round(7.2) = 7 per row
        expect(plan.loss_positions).toBe(3 * 7);
        expect(plan.flops_per_step).toBe(trainingFlops(cfg, 3 * 48, 3 * 7));
        expect(plan.executed_flops_per_step).toBe(trainingFlops(cfg, 3 * 48, 3 * 48));
        expect(plan.parameters).toBe(GeneMamba.create(cfg, 1).numParameters);
        expect(lines.filter((l) => l.phase).map((l) => l.phase)).toEqual(["train", "forward_backward", "forward"]);
        expect(result).toMatchObject({ emulated: true, mfu: null, vs_paper: null, steps: 3 });
        // the emulated allocator counts bytes exactly: the peak is the plan
        expect(result!.peak_allocated_bytes).toBe((plan.param_bytes as number) + (plan.activation_bytes as number));
        expect(result!.loss_last as number).toBeLessThan(result!.loss_first as number);
      }
    }
  });

  it("defaults to configs/models/genemamba-24l-512d.json plus [MASK], L 2048, batch 24, bf16 (--plan allocates no activations)", () => {
    const { status, plan } = bench({}, ["--plan"]);
    expect(status).toBe(0);
    const ref = loadModelConfig("genemamba-24l-512d");
    const cfg = asModel(plan.config!);
    for (const k of ["d_model", "n_layer", "mixer", "combine", "d_state", "headdim", "expand", "d_conv", "chunk_size"] as const) expect(cfg[k], k).toBe(ref[k]);
    expect(cfg.vocab_size).toBe(ref.vocab_size + 1);
    expect(plan).toMatchObject({ length: 2048, batch: 24, dtype: "bf16", loss_positions: 24 * 307 });
    expect(plan.flops_per_step).toBe(trainingFlops(cfg, 24 * 2048, 24 * 307));
    // the memory plan of docs/gpu.md: 1.11 GiB of parameter state + 36.56 GiB of activations
    expect((plan.param_bytes as number) / 2 ** 30).toBeCloseTo(1.11, 2);
    expect((plan.activation_bytes as number) / 2 ** 30).toBeCloseTo(36.56, 2);
  });

  it("GM_GPU_SCAN=ssd: the same step with Mamba-2's chunked SSD scan; same FLOPs, its own memory plan, the loss falls", () => {
    for (const dtype of ["bf16", "float32"]) {
      const rec = bench({ ...TINY, GM_BENCH_DTYPE: dtype });
      const ssd = bench({ ...TINY, GM_BENCH_DTYPE: dtype, GM_GPU_SCAN: "ssd" });
      expect(ssd.status, JSON.stringify(ssd.lines)).toBe(0);
      expect(rec.plan.scan).toBe("recurrent");
      expect(ssd.plan.scan).toBe("ssd");
      expect(ssd.plan.flops_per_step).toBe(rec.plan.flops_per_step);
      expect(ssd.result!.peak_allocated_bytes).toBe((ssd.plan.param_bytes as number) + (ssd.plan.activation_bytes as number));
      expect(ssd.result!.loss_last as number).toBeLessThan(ssd.result!.loss_first as number);
      // the same model and batch: the first loss agrees with the recurrent scan's
      expect(Math.abs((ssd.result!.loss_first as number) - (rec.result!.loss_first as number))).toBeLessThan(dtype === "bf16" ? 2e-2 : 1e-4);
    }
  });

  it("gm_gpu_scan_bench (emulated build): the recurrent and the SSD Mamba-2 scans side by side, every pass and type", () => {
    const bin = path.join(repoRoot, "native/build/gm_gpu_scan_bench_emul");
    const env = { GM_BENCH_BATCH: "1", GM_BENCH_LENGTH: "40", GM_BENCH_D_INNER: "32", GM_BENCH_HEADDIM: "16", GM_BENCH_D_STATE: "16", GM_BENCH_CHUNK: "16", GM_BENCH_REPS: "1" };
    const r = spawnSync(bin, [], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 60_000 });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    const lines = r.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0].device).toMatch(/^emulated/);
    const cases = lines.filter((l) => l.kernel).map((l) => `${l.kernel}/${l.dtype}/${l.pass}`);
    for (const k of ["scan_mamba2", "ssd_mamba2"])
      for (const dt of ["bf16", "f32"]) for (const pass of ["forward", "backward"]) expect(cases).toContain(`${k}/${dt}/${pass}`);
    expect(cases).toContain("scan_mamba1/bf16/backward");
  });

  it("refuses a bad setting with one error line and exit 1", () => {
    for (const [k, v, msg] of [["GM_BENCH_DTYPE", "fp16", "GM_BENCH_DTYPE must be bf16 or float32"], ["GM_BENCH_BATCH", "0", "GM_BENCH_BATCH must be a positive integer"], ["GM_BENCH_MIXER", "rnn", "GM_BENCH_MIXER must be"], ["GM_GPU_SCAN", "fast", "GM_GPU_SCAN must be 'recurrent' or 'ssd'"]]) {
      const { status, lines } = bench({ ...TINY, [k]: v });
      expect(status).toBe(1);
      expect(lines).toHaveLength(1);
      expect(lines[0].error).toContain(msg);
    }
  });

  it("scripts/gpu/compare.py turns device-check's results into the benchmarks row, the speed-up over the peer and the targets", () => {
    const py = spawnSync("python3", ["--version"]);
    if (py.error) return; // no python3: device-check runs compare.py on the GPU machine only
    const run = (dtype: string, scan = "recurrent") => spawnSync(BIN, [], { encoding: "utf8", env: { ...process.env, OMP_NUM_THREADS: "1", ...TINY, GM_BENCH_DTYPE: dtype, GM_GPU_SCAN: scan } }).stdout;
    const bf16 = run("bf16");
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gm-compare-"));
    fs.writeFileSync(path.join(dir, "results.txt"), `### host_check\n{"checks":8,"failures":0}\n### train_bench_bf16\n${bf16}### train_bench_bf16_ssd\n${run("bf16", "ssd")}### train_bench_fp32\n${run("float32")}`);
    const gm = JSON.parse(bf16.split("\n").find((l) => l.includes('"result"'))!);
    const peer = { impl: "pytorch+mamba_ssm.Mamba2", torch: "t", mamba_ssm: "m", batch: 3, seconds_per_sample: 3 * gm.train_seconds_per_sample, fb_seconds_per_sample: 1.5 * gm.fb_seconds_per_sample, peak_memory_bytes: 2 ** 30, path: "unfused" };
    fs.writeFileSync(path.join(dir, "peer.json"), JSON.stringify(peer) + "\n");
    const r = spawnSync("python3", [path.join(repoRoot, "scripts/gpu/compare.py"), path.join(dir, "results.txt"), path.join(dir, "peer.json")], { encoding: "utf8" });
    fs.rmSync(dir, { recursive: true, force: true });
    expect(r.status, r.stderr).toBe(0);
    const rows = r.stdout.split("\n").filter((l) => l.startsWith("| emulated"));
    expect(rows).toHaveLength(3);
    expect(rows[0]).toContain("| bf16 | recurrent | 48 | 3 |");
    expect(rows[0]).toContain("| 3x (1.5x fwd+bwd) |");
    expect(rows[1]).toContain("| bf16 | ssd | 48 | 3 |");
    expect(rows[2]).toContain("| fp32 | recurrent | 48 | 3 |");
    expect(r.stdout).toMatch(/Targets \((recurrent|ssd) scan, the faster bf16 run\): >= 2x PyTorch \+ mamba_ssm: (met|NOT met); >= 40% MFU: not measured\./);
  });
});
