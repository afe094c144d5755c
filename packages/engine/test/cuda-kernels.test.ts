// The CUDA kernels without a GPU (native/cuda/; docs/engine.md "CUDA backend: status and build"):
// 1. native/build/gm_cuda_emul calls every launcher of kernels.h on device.h buffers of the emulated
//    device (the kernel bodies run on the CPU over the launcher's grid) and compares outputs and
//    gradients with the CPU ops (one JSON line per check; gm_cuda_kernel_check is the same program
//    on a GPU);
// 2. where nvcc exists (PATH or /usr/local/cuda/bin), every native/cuda/*.cu compiles for sm_80 and
//    sm_90 with warnings as errors (one nvcc call per file, in sequence), and the objects link with
//    native/test/cuda_link_check.cpp, which takes the address of every launcher in kernels.h (and the
//    device layer, which ssd.cu's batched GEMMs call);
//    native/cuda/gpu_model.cpp (host code that sees only kernels.h and device.h) compiles with nvcc too;
// 3. native/build/gm_gpu_model_emul runs the GPU model (native/cuda/gpu_model.cpp) on the emulated
//    backend (every launcher driving the kernel bodies on the CPU) against the CPU engine's Model.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { findNvcc, repoRoot } from "../../../tests/helpers/paths.js";

interface Row { kernel?: string; dtype?: string; case?: string; output?: string; max_rel_err?: number; tol?: number; ok?: boolean; failures?: number; checks?: number }

const KERNELS = [
  "embedding_forward", "embedding_backward", "rmsnorm_forward", "rmsnorm_backward", "gated_rmsnorm_forward", "gated_rmsnorm_backward",
  "conv1d_forward", "conv1d_backward", "softplus_forward", "softplus_backward", "scan_forward", "scan_backward",
  "reverse_forward", "reverse_backward", "bidir_merge_forward", "bidir_merge_backward", "gate_forward", "gate_backward",
  "blend_forward", "blend_backward", "cross_entropy", "sum_squares", "sum_values",
  "silu_gate_forward", "silu_gate_backward", "argmax_rows",
];

describe("CUDA kernel bodies emulated on the CPU vs the CPU ops", () => {
  const r = spawnSync(path.join(repoRoot, "native/build/gm_cuda_emul"), { encoding: "utf8", env: { ...process.env, OMP_NUM_THREADS: "1" } });
  const rows = (r.stdout ?? "").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Row);
  const checks = rows.filter((x) => x.kernel);

  it("the emulator ran and every check passed", () => {
    expect(r.error, "native/build/gm_cuda_emul: run `npm run setup`").toBeUndefined();
    expect(r.status, r.stderr).toBe(0);
    expect(rows.at(-1)).toEqual({ failures: 0, checks: checks.length });
    const bad = checks.filter((x) => !x.ok || !(x.max_rel_err! <= x.tol!));
    expect(bad, JSON.stringify(bad, null, 1)).toEqual([]);
  });

  it("float32 checks use 1e-5, bf16 checks 1e-2", () => {
    for (const x of checks.filter((c) => c.kernel !== "sum_squares" && c.kernel !== "sum_values" && c.kernel !== "clip_scale" && c.kernel !== "bf16_host_type" && c.kernel !== "argmax_rows"))
      expect(x.tol, `${x.kernel} ${x.case} ${x.output}`).toBe(x.dtype === "f32" ? 1e-5 : 1e-2);
  });

  for (const k of KERNELS)
    it(`${k}: float32 and bf16`, () => {
      for (const dt of ["f32", "bf16"]) expect(checks.filter((x) => x.kernel === k && x.dtype === dt).length, `${k} ${dt}`).toBeGreaterThan(0);
    });

  it("AdamW (fp32 master, float and bf16 parameter copies), clip scale, the host bf16 type", () => {
    expect(checks.filter((x) => x.kernel === "adamw" && x.output === "param_copy").map((x) => x.dtype).sort()).toEqual(["bf16", "f32", "f32", "f32"]);
    expect(checks.some((x) => x.kernel === "adamw" && x.case!.includes("device_scale"))).toBe(true);
    expect(checks.filter((x) => x.kernel === "clip_scale").length).toBe(3);
    expect(checks.some((x) => x.kernel === "bf16_host_type")).toBe(true);
  });

  it("the scan: both shapes, every output, a chunk that does not divide T, several thread blocks per row", () => {
    const scan = checks.filter((x) => x.kernel!.startsWith("scan_") && x.dtype === "f32");
    for (const shape of ["mamba2", "mamba1"]) {
      const outs = new Set(scan.filter((x) => x.case!.startsWith(shape)).map((x) => x.output));
      expect([...outs].sort()).toEqual(["dA", "dB_dC", "dD", "ddt", "dx", "states", "y"]);
    }
    expect(scan.some((x) => /_T11_.*_Q4$/.test(x.case!))).toBe(true);
    expect(scan.some((x) => /mamba2_.*_H3_P64_/.test(x.case!))).toBe(true);  // 192 channels: 2 blocks of 128
    expect(scan.some((x) => /mamba1_.*_H150_/.test(x.case!))).toBe(true);
    expect(scan.some((x) => /_N64_/.test(x.case!))).toBe(true);
  });

  it("the SSD scan (ssd.cu): Mamba-2 shapes, every output, fp32 within 1e-5 and bf16 within 1e-2 of the CPU op, a short last chunk and N = 64", () => {
    const ssd = checks.filter((x) => x.kernel!.startsWith("ssd_scan_"));
    for (const dt of ["f32", "bf16"]) {
      const outs = new Set(ssd.filter((x) => x.dtype === dt).map((x) => x.output));
      expect([...outs].sort(), dt).toEqual(["dA", "dB_dC", "dD", "ddt", "dx", "states", "y"]);
    }
    expect(ssd.some((x) => /_T11_.*_Q4$/.test(x.case!))).toBe(true);
    expect(ssd.some((x) => /_T16_.*_Q8$/.test(x.case!))).toBe(true);
    expect(ssd.some((x) => /_N64_/.test(x.case!))).toBe(true);
  });

  it("padded rows: conv1d with lengths (one empty row) and the reversal", () => {
    expect(checks.some((x) => x.kernel === "conv1d_backward" && x.case!.startsWith("fused_silu_mask"))).toBe(true);
    expect(checks.some((x) => x.kernel === "reverse_backward" && x.case!.includes("len7_4_0"))).toBe(true);
  });
});

interface ModelRow { check?: string; mode?: string; dtype?: string; output?: string; max_rel_err?: number; tol?: number; ok?: boolean; failures?: number; checks?: number }

describe("the GPU model (native/cuda/gpu_model.cpp) on the emulated backend vs the CPU Model", () => {
  const r = spawnSync(path.join(repoRoot, "native/build/gm_gpu_model_emul"), { encoding: "utf8", env: { ...process.env, OMP_NUM_THREADS: "1" } });
  const rows = (r.stdout ?? "").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as ModelRow);
  const checks = rows.filter((x) => x.check);

  it("the emulation ran and every check passed", () => {
    expect(r.error, "native/build/gm_gpu_model_emul: run `npm run setup`").toBeUndefined();
    expect(r.status, r.stderr).toBe(0);
    expect(rows.at(-1)).toEqual({ failures: 0, checks: checks.length });
    const bad = checks.filter((x) => !x.ok || !(x.max_rel_err! <= x.tol!));
    expect(bad, JSON.stringify(bad, null, 1)).toEqual([]);
  });

  it("fp32, both mixers, every combine mode: the same tensor table, hidden states, logits and loss within 1e-4, argmax exact, every parameter gradient within 1e-4", () => {
    for (const mixer of ["", "mamba1_"])
      for (const m of ["gate", "mean", "sum", "concat", "unidirectional"]) {
        const mode = mixer + m;
        const f = checks.filter((x) => x.mode === mode && x.dtype === "f32");
        expect(f.find((x) => x.check === "tensor_table")?.max_rel_err, mode).toBe(0);
        for (const c of ["hidden", "logits", "loss", "grad_norm"]) expect(f.find((x) => x.check === c)?.tol, `${mode} ${c}`).toBe(1e-4);
        expect(f.find((x) => x.check === "argmax")?.tol, `${mode} argmax`).toBe(0);
        const grads = f.filter((x) => x.check === "grad");
        // embeddings, 2 layers x (8 Mamba-2 | 9 Mamba-1 tensors), (aggr weight + bias), norm_f, lm_head weight + bias
        expect(grads.length, mode).toBe(1 + 2 * (mixer ? 9 : 8) + (m === "gate" || m === "concat" ? 2 : 0) + 3);
        if (mixer) expect(grads.map((g) => g.output)).toEqual(expect.arrayContaining(["mamba_mixer.layers.1.mamba.x_proj.weight", "mamba_mixer.layers.1.mamba.dt_proj.weight", "mamba_mixer.layers.1.mamba.dt_proj.bias"]));
        for (const g of grads) expect(g.tol, `${mode} ${g.output}`).toBe(1e-4);
      }
  });

  it("two clipped AdamW steps: fp32 parameters within 1e-5 (gate, mean); bf16 working copies (gate, mean), both mixers", () => {
    for (const mode of ["gate", "mean", "mamba1_gate", "mamba1_mean"]) {
      expect(checks.find((x) => x.check === "adamw_2_steps" && x.mode === mode && x.dtype === "f32")?.tol).toBe(1e-5);
      const b = checks.filter((x) => x.mode === mode && x.dtype === "bf16" && !["memory", "determinism", "resume"].includes(x.check!));
      expect(b.map((x) => x.check)).toEqual(expect.arrayContaining(["hidden", "logits", "argmax", "loss", "grad", "grad_norm", "adamw_2_steps"]));
      for (const x of b) expect(x.tol, `${mode} ${x.check} ${x.output}`).toBe(["hidden", "logits", "argmax", "loss"].includes(x.check!) ? 2e-2 : 1e-1);
    }
  });

  it("data parallel: 2 ranks x 2 rows average to 1 rank x 4 rows within 1e-4 (both mixers; a rank with no loss positions too), ranks bitwise equal, no gradient written after its reduction was enqueued", () => {
    const dp = checks.filter((x) => x.check === "data_parallel");
    for (const mode of ["gate", "unidirectional", "gate_rank1_empty", "mamba1_gate", "mamba1_unidirectional", "mamba1_gate_rank1_empty", "concat_rank0_empty"]) {
      const m = dp.filter((x) => x.mode === mode);
      expect(m.map((x) => x.output).sort(), mode).toEqual(["call_sequence_and_late_writes", "calls_per_rank", "grads_vs_one_rank_all_rows", "ranges_cover_table_once", "ranks_bitwise_equal"]);
      expect(m.find((x) => x.output === "grads_vs_one_rank_all_rows")?.tol).toBe(1e-4);
      for (const x of m.filter((x) => x.output !== "grads_vs_one_rank_all_rows")) expect(x.tol, `${mode} ${x.output}`).toBe(0);
    }
  });

  it("determinism: the same batch twice (two models, one model twice) gives bitwise equal loss, gradients and AdamW parameters, fp32 and bf16, both mixers", () => {
    const d = checks.filter((x) => x.check === "determinism");
    expect(d.map((x) => `${x.mode}/${x.dtype}`).sort()).toEqual(["gate/bf16", "gate/f32", "mamba1_gate/bf16", "mamba1_gate/f32", "ssd_gate/bf16", "ssd_gate/f32"]);
    for (const x of d) expect(x.tol).toBe(0);
  });

  it("resume across CPU <-> GPU: weights and AdamW moments after 2 steps on one side, a 3rd step on both, the same parameters within 1e-5 (both directions, both mixers)", () => {
    const r = checks.filter((x) => x.check === "resume");
    expect(r.map((x) => `${x.mode}/${x.output}`).sort()).toEqual(["gate/cpu_2_steps_then_both", "gate/gpu_2_steps_then_both", "mamba1_gate/cpu_2_steps_then_both", "mamba1_gate/gpu_2_steps_then_both", "ssd_gate/cpu_2_steps_then_both", "ssd_gate/gpu_2_steps_then_both"]);
    for (const x of r) expect(x.tol).toBe(1e-5);
  });

  it("memory: activation_bytes() equals what forward + backward allocate, and 24l-512d bf16 at L 2048 x 24 cells fits an 80 GB GPU", () => {
    const mem = checks.filter((x) => x.check === "memory");
    expect(mem.length).toBe(3 * 2 * 3);  // Mamba-2, Mamba-1 and Mamba-2 with the SSD scan
    for (const x of mem) expect(x.tol).toBe(0);
    const plans = rows.filter((x) => (x as Record<string, unknown>).memory_plan) as unknown as Record<string, number>[];
    expect(plans.length).toBe(2);  // the recurrent and the SSD scan
    for (const plan of plans) {
      expect(plan.total_gib).toBeGreaterThan(10);
      expect(plan.total_gib).toBeLessThan(67);
    }
    expect(checks.filter((x) => x.check === "memory_plan" && x.ok).length).toBe(2);
  });

  it("the SSD scan in the model: fp32 loss and every gradient within 1e-4 of the CPU Model (gate, concat, unidirectional), bf16, data parallel", () => {
    for (const m of ["ssd_gate", "ssd_concat", "ssd_unidirectional"]) {
      const f = checks.filter((x) => x.mode === m && x.dtype === "f32");
      for (const c of ["hidden", "logits", "loss", "grad_norm"]) expect(f.find((x) => x.check === c)?.tol, `${m} ${c}`).toBe(1e-4);
      expect(f.filter((x) => x.check === "grad").length, m).toBe(1 + 2 * 8 + (m === "ssd_unidirectional" ? 0 : 2) + 3);
    }
    expect(checks.find((x) => x.check === "adamw_2_steps" && x.mode === "ssd_gate" && x.dtype === "f32")?.tol).toBe(1e-5);
    expect(checks.some((x) => x.mode === "ssd_gate" && x.dtype === "bf16" && x.check === "grad")).toBe(true);
    expect(checks.filter((x) => x.check === "data_parallel" && x.mode === "ssd_gate_rank1_empty").length).toBe(5);
  });
});

const nvcc = findNvcc();
const cudaDir = path.join(repoRoot, "native/cuda");
const sources = fs.readdirSync(cudaDir).filter((f) => f.endsWith(".cu")).sort();
const ARCH = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"];

describe.skipIf(!nvcc)(`nvcc compile check of native/cuda/*.cu${nvcc ? ` (${nvcc})` : " (skipped: nvcc not found on PATH or in /usr/local/cuda/bin)"}`, () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "gm-nvcc-"));
  const times: Record<string, number> = {};
  const objects: string[] = [];

  it("finds the kernel sources", () => {
    expect(sources.length).toBeGreaterThanOrEqual(7);
  });

  for (const f of sources)
    it(`${f} compiles for sm_80 and sm_90`, () => {
      const obj = path.join(out, f.replace(/\.cu$/, ".o"));
      const t0 = Date.now();
      const r = spawnSync(nvcc!, ["-c", "-std=c++17", ...ARCH, "-Werror", "all-warnings", path.join(cudaDir, f), "-o", obj], { encoding: "utf8" });
      times[f] = (Date.now() - t0) / 1000;
      expect(r.error).toBeUndefined();
      expect(r.status, `${f}:\n${r.stdout}${r.stderr}`).toBe(0);
      objects.push(obj);
    });

  it("gpu_model.cpp (host code: only kernels.h and device.h, no cuBLAS) compiles with nvcc", () => {
    const t0 = Date.now();
    const r = spawnSync(nvcc!, ["-c", "-std=c++17", "-Werror", "all-warnings", path.join(cudaDir, "gpu_model.cpp"), "-o", path.join(out, "gpu_model.o")], { encoding: "utf8" });
    times["gpu_model.cpp"] = (Date.now() - t0) / 1000;
    expect(r.error).toBeUndefined();
    expect(r.status, `gpu_model.cpp:\n${r.stdout}${r.stderr}`).toBe(0);
  });

  // nvcc links its static CUDA runtime: look for it in the library folders nvcc reports (PATH's nvcc
  // may be a wrapper script), or skip the link step.
  const dry = nvcc ? spawnSync(nvcc, ["--dryrun", "x.cu", "-o", "x"], { encoding: "utf8" }) : null;
  const libDirs = [...`${dry?.stdout ?? ""}${dry?.stderr ?? ""}`.matchAll(/-L"?([^"\s]+)"?/g)].map((m) => m[1]!);
  const cudart = libDirs.some((d) => fs.existsSync(path.join(d, "libcudart_static.a")));
  it.skipIf(!cudart)(`every launcher of kernels.h links${cudart ? "" : " (skipped: no libcudart_static.a in the folders nvcc links from)"}`, () => {
    expect(objects.length, "every .cu compiled").toBe(sources.length);
    const t0 = Date.now();
    // ssd.cu's batched products go through the device layer: it links in too (no cuBLAS needed to link).
    const deviceLayer = ["device_cuda.cpp", "dynlib.cpp"].map((f) => path.join(cudaDir, f));
    const r = spawnSync(nvcc!, ["-std=c++17", path.join(repoRoot, "native/test/cuda_link_check.cpp"), ...objects, ...deviceLayer, "-ldl", "-o", path.join(out, "link_check")], { encoding: "utf8" });
    times["(link)"] = (Date.now() - t0) / 1000;
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    const total = Object.values(times).reduce((a, b) => a + b, 0);
    console.log(`nvcc compile check: ${Object.entries(times).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(", ")}; total ${total.toFixed(1)} s`);
    fs.rmSync(out, { recursive: true, force: true });
  });
});
