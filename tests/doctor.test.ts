/**
 * `gm doctor` end to end: the JSON report (versions, addon and build info, backends and why, threads,
 * onnxruntime-node's binary, GPUs), the text form, and GPU discovery through a stand-in nvidia-smi.
 */
import { describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { gm } from "./helpers/cli.js";
import { repoRoot, tmpDir } from "./helpers/paths.js";

/** A folder holding a fake nvidia-smi (a shell script) and nothing else. */
function fakeSmi(script: string): string {
  const d = tmpDir("gm-doctor-");
  fs.writeFileSync(path.join(d, "nvidia-smi"), `#!/bin/sh\n${script}\n`, { mode: 0o755 });
  return d;
}

describe("gm doctor", () => {
  it("--json reports versions, the addon's backends and why, threads, onnxruntime-node and GPUs", () => {
    const r = gm(["doctor", "--json"], { env: { GM_THREADS: "1", PATH: tmpDir("gm-doctor-empty-") } });
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.gm).toMatch(/^\d+\.\d+\.\d+$/);
    expect(j.node).toBe(process.version);
    expect(j.addon.path).toBe(path.join(repoRoot, "native/build/Release/gm_native.node"));
    expect(j.addon).toMatchObject({ present: true, loaded: true });
    expect(j.backends.cpu.built).toBe(true);
    expect(typeof j.backends.cuda.built).toBe("boolean");
    expect(j.backends.cuda.reason.length).toBeGreaterThan(10);
    // the addon's compiled-in build info is CMake's build-info.json
    expect(j.build.source).toBe("addon");
    const { source: _s, ...info } = j.build;
    expect(info).toEqual(JSON.parse(fs.readFileSync(path.join(repoRoot, "native/build/build-info.json"), "utf8")));
    expect(info.cpu).toBe(true);
    expect(info.cuda.archs).toEqual(["sm_80", "sm_90"]);
    if (!info.cuda.built) expect(info.cuda.reason).toMatch(/nvcc|GM_CUDA/);
    expect(j.threads.openmp).toBe(1);  // GM_THREADS
    expect(j.threads.cpus).toBeGreaterThanOrEqual(1);
    expect(typeof j.onnxruntime.present).toBe("boolean");
    if (j.onnxruntime.present) expect(fs.existsSync(j.onnxruntime.binary)).toBe(true);
    else expect(j.onnxruntime.reason).toBeTruthy();
    expect(j.gpu).toEqual({ available: false, devices: [], reason: "nvidia-smi not found" });
  });

  it("with the CUDA backend built, reports the run-time view: devices (none here), cuBLASLt and NCCL found or the paths tried and the variable that overrides them", () => {
    const info = JSON.parse(fs.readFileSync(path.join(repoRoot, "native/build/build-info.json"), "utf8"));
    if (!info.cuda.built) return; // CPU-only build: cudaRuntime is null (checked in the next line's else)
    const lib = tmpDir("gm-doctor-lib-");
    const r = gm(["doctor", "--json"], { env: { GM_NCCL_LIB: path.join(lib, "libnccl.so.2"), GM_CUBLASLT_LIB: path.join(lib, "libcublasLt.so.12") } });
    expect(r.code, r.stderr).toBe(0);
    const rt = JSON.parse(r.stdout).cudaRuntime;
    expect(rt).toBeTruthy();
    expect(Array.isArray(rt.devices)).toBe(true);
    if (rt.devices.length === 0) expect(rt.error).toBeTruthy();
    // an override naming a missing file is reported as such, not silently skipped
    expect(rt.cublaslt.found).toBe(false);
    expect(rt.cublaslt.error).toContain("GM_CUBLASLT_LIB");
    expect(rt.nccl.found).toBe(false);
    expect(rt.nccl.error).toContain("GM_NCCL_LIB");
    const t = gm(["doctor"]);
    expect(t.stdout).toMatch(/ {2}cuBLASLt {8}\S/);
    expect(t.stdout).toMatch(/ {2}NCCL {12}\S/);
    // Mamba-2's GPU scan: the recurrence unless GM_GPU_SCAN says otherwise
    expect(JSON.parse(r.stdout).backends.cuda.scan).toBe("recurrent");
    expect(t.stdout).toMatch(/ {2}mamba-2 scan {4}recurrent \(GM_GPU_SCAN=recurrent\|ssd/);
    expect(JSON.parse(gm(["doctor", "--json"], { env: { GM_GPU_SCAN: "ssd" } }).stdout).backends.cuda.scan).toBe("ssd");
  });

  it("prints a readable report", () => {
    const r = gm(["doctor"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^gm \d+\.\d+\.\d+ \(Node v/);
    expect(r.stdout).toMatch(/native addon +\S+gm_native\.node/);
    expect(r.stdout).toMatch(/cpu backend +built: OpenMP \+ OpenBLAS/);
    expect(r.stdout).toMatch(/cuda backend +(built|not built): \S+/);
    expect(r.stdout).toMatch(/threads +OpenMP \d+ of \d+ CPUs/);
    expect(r.stdout).toMatch(/onnxruntime-node +CPU binary (present|missing)/);
    expect(r.stdout).toMatch(/GPU +/);
  });

  it("lists the GPUs nvidia-smi reports, and says why when it fails", () => {
    const ok = gm(["doctor", "--json"], { env: { PATH: fakeSmi('echo "NVIDIA H200, 143771 MiB, 570.86.15"; echo "NVIDIA H200, 143771 MiB, 570.86.15"') } });
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).gpu).toEqual({ available: true, devices: [0, 1].map(() => ({ name: "NVIDIA H200", memory: "143771 MiB", driver: "570.86.15" })) });
    const bad = gm(["doctor", "--json"], { env: { PATH: fakeSmi('echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver." >&2; exit 9') } });
    expect(bad.code, bad.stderr).toBe(0);
    expect(JSON.parse(bad.stdout).gpu).toEqual({ available: false, devices: [], reason: "nvidia-smi exited with 9: NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver." });
  });

  it("has help with examples", () => {
    const h = gm(["doctor", "--help"]);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/Examples:\n {2}\$ gm doctor/);
  });
});
