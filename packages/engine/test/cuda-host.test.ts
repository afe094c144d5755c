// The CUDA backend's host code (native/cuda/{dynlib,device_cuda,nccl_comm,probe}.cpp), where nvcc
// exists: it compiles with warnings as errors, links with the static CUDA runtime only (cuBLASLt and
// NCCL are loaded at run time, dynlib.h), and native/test/cuda_host_check.cpp runs:
//   - without nvidia-smi, with --expect-no-gpu: no device, CUDA calls fail cleanly, and a library it
//     cannot find is reported on one line naming its override (GM_CUBLASLT_LIB) and the folders searched;
//   - with nvidia-smi: the allocator, copies and gemm() on the GPU as well;
//   - GM_TEST_CUBLASLT_LIB=/path/to/libcublasLt.so.N: that file loads, every symbol resolves, and the
//     library agrees with our status codes and attribute sizes;
//   - GM_TEST_CUBLAS_INCLUDE=<folder of cublasLt.h> / GM_TEST_NCCL_INCLUDE=<folder of nccl.h>: our
//     declarations compile against the real headers' (dynlib.cpp's static_asserts).
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { findNvcc, repoRoot, tmpDir } from "../../../tests/helpers/paths.js";

interface Row { probe?: Probe; check?: string; ok?: boolean; detail?: string; checks?: number; failures?: number }
interface Lib { found: boolean; path: string | null; version: string | null; error: string | null }
interface Probe { driver: number | null; runtime: number; devices: unknown[]; cublaslt: Lib; nccl: Lib; error: string | null }

function onPath(name: string): boolean {
  return (process.env.PATH ?? "").split(path.delimiter).filter(Boolean).some((d) => {
    try {
      fs.accessSync(path.join(d, name), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}
// libcudart_static.a next to nvcc: its toolkit (TOP in `nvcc --dryrun`, as PATH's nvcc may be a
// wrapper script) lib64/, lib/, targets/*/lib, and the folders nvcc links from.
function findCudartStatic(nvcc: string): string | null {
  const dry = spawnSync(nvcc, ["--dryrun", "x.cu", "-o", "x"], { encoding: "utf8" });
  const text = `${dry.stdout ?? ""}${dry.stderr ?? ""}`;
  const tops = [...text.matchAll(/TOP=(\S+)/g)].map((m) => m[1]!);
  tops.push(path.dirname(path.dirname(fs.realpathSync(nvcc))));
  const dirs: string[] = [];
  for (const t of tops) {
    dirs.push(path.join(t, "lib64"), path.join(t, "lib"));
    const targets = path.join(t, "targets");
    if (fs.existsSync(targets)) for (const d of fs.readdirSync(targets).sort()) dirs.push(path.join(targets, d, "lib"));
  }
  dirs.push(...[...text.matchAll(/-L"?([^"\s]+)"?/g)].map((m) => m[1]!));
  for (const d of dirs) if (fs.existsSync(path.join(d, "libcudart_static.a"))) return path.join(d, "libcudart_static.a");
  return null;
}

const nvcc = findNvcc();
const cudaDir = path.join(repoRoot, "native/cuda");
const HOST_SOURCES = ["dynlib.cpp", "device_cuda.cpp", "nccl_comm.cpp", "probe.cpp"];
const FLAGS = ["-std=c++17", "-Werror", "all-warnings"];
const testLtLib = process.env.GM_TEST_CUBLASLT_LIB;
const testLtInc = process.env.GM_TEST_CUBLAS_INCLUDE;
const testNcclInc = process.env.GM_TEST_NCCL_INCLUDE;

function rowsOf(stdout: string): Row[] {
  return stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Row);
}

describe.skipIf(!nvcc)(`CUDA host code: dynlib, device_cuda, nccl_comm, probe${nvcc ? ` (${nvcc})` : " (skipped: nvcc not found on PATH or in /usr/local/cuda/bin)"}`, () => {
  const out = tmpDir("gm-cuda-host-");
  const objects: string[] = [];
  const cudart = nvcc ? findCudartStatic(nvcc) : null;
  const exe = path.join(out, "cuda_host_check");
  const gpu = onPath("nvidia-smi");
  // The check program's environment: ours, without the overrides a developer may have set.
  const baseEnv = (): NodeJS.ProcessEnv => {
    const env = { ...process.env };
    delete env.GM_CUBLASLT_LIB;
    delete env.GM_NCCL_LIB;
    return env;
  };

  for (const f of HOST_SOURCES)
    it(`${f} compiles with nvcc, warnings as errors`, () => {
      const obj = path.join(out, f.replace(/\.cpp$/, ".o"));
      const r = spawnSync(nvcc!, ["-c", ...FLAGS, path.join(cudaDir, f), "-o", obj], { encoding: "utf8" });
      expect(r.error).toBeUndefined();
      expect(r.status, `${f}:\n${r.stdout}${r.stderr}`).toBe(0);
      objects.push(obj);
    });

  it.skipIf(!testLtInc && !testNcclInc)(`dynlib.cpp's declarations match the real headers${testLtInc || testNcclInc ? "" : " (skipped: set GM_TEST_CUBLAS_INCLUDE and/or GM_TEST_NCCL_INCLUDE)"}`, () => {
    const defs: string[] = [];
    if (testLtInc) defs.push("-DGM_HAVE_CUBLASLT_H", `-I${testLtInc}`);
    if (testNcclInc) defs.push("-DGM_HAVE_NCCL_H", `-I${testNcclInc}`);
    const r = spawnSync(nvcc!, ["-c", ...FLAGS, ...defs, path.join(cudaDir, "dynlib.cpp"), "-o", path.join(out, "dynlib_checked.o")], { encoding: "utf8" });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });

  it.skipIf(!cudart)(`cuda_host_check links with the static CUDA runtime only${cudart ? ` (${cudart})` : " (skipped: no libcudart_static.a next to nvcc)"}`, () => {
    expect(objects.length, "every host source compiled").toBe(HOST_SOURCES.length);
    const r = spawnSync(nvcc!, [...FLAGS, "-cudart", "none", path.join(repoRoot, "native/test/cuda_host_check.cpp"), ...objects, cudart!, "-ldl", "-lpthread", "-lrt", "-o", exe], { encoding: "utf8" });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    // Nothing of cuBLAS or NCCL is linked: they are dlopened.
    const ldd = spawnSync("ldd", [exe], { encoding: "utf8" });
    if (ldd.status === 0) expect(ldd.stdout).not.toMatch(/libcublas|libnccl|libcudart\.so/);
  });

  it.skipIf(!cudart)(`runs ${gpu ? "on the GPU" : "without a GPU (--expect-no-gpu)"}: the probe, argument checks, clean failures`, () => {
    expect(fs.existsSync(exe), "linked").toBe(true);
    const r = spawnSync(exe, gpu ? [] : ["--expect-no-gpu"], { encoding: "utf8", env: baseEnv() });
    const rows = rowsOf(r.stdout ?? "");
    const checks = rows.filter((x) => x.check);
    const bad = checks.filter((x) => !x.ok);
    expect(bad, JSON.stringify(bad, null, 1)).toEqual([]);
    expect(r.status, r.stderr).toBe(0);
    expect(rows.at(-1)).toEqual({ checks: checks.length, failures: 0 });
    const probe = rows.find((x) => x.probe)?.probe;
    expect(probe?.runtime).toBeGreaterThanOrEqual(11000);
    if (!gpu) {
      expect(probe?.devices).toEqual([]);
      expect(probe?.error).toBeTruthy();
    }
    for (const [lib, env, soname] of [[probe!.cublaslt, "GM_CUBLASLT_LIB", "libcublasLt.so.12"], [probe!.nccl, "GM_NCCL_LIB", "libnccl.so.2"]] as const) {
      if (lib.found) expect(lib.path && lib.version).toBeTruthy();
      else {
        expect(lib.error).toContain(env);
        expect(lib.error).toContain(soname);
        expect(lib.error).not.toContain("\n");
      }
    }
    expect(checks.map((x) => x.check)).toEqual(expect.arrayContaining(["probe_json_one_line", "cublaslt_probe", "nccl_probe", "gemm_argument_checks", "free_unknown_pointer", ...(gpu ? [] : ["device_count_zero", "probe_says_no_gpu", "cuda_calls_throw_cleanly"])]));
  });

  it.skipIf(!cudart || !testLtLib)(`GM_CUBLASLT_LIB=${testLtLib ?? "(skipped: set GM_TEST_CUBLASLT_LIB to a libcublasLt.so)"}: loads, every symbol resolves, our codes and attribute sizes agree`, () => {
    expect(fs.existsSync(testLtLib!), testLtLib).toBe(true);
    const r = spawnSync(exe, gpu ? [] : ["--expect-no-gpu"], { encoding: "utf8", env: { ...baseEnv(), GM_CUBLASLT_LIB: testLtLib } });
    const rows = rowsOf(r.stdout ?? "");
    const checks = rows.filter((x) => x.check);
    const bad = checks.filter((x) => !x.ok);
    expect(bad, JSON.stringify(bad, null, 1)).toEqual([]);
    expect(r.status, r.stderr).toBe(0);
    for (const c of ["cublaslt_loads", "cublaslt_status_codes", "cublaslt_descriptor_attributes"]) expect(checks.find((x) => x.check === c)?.ok, c).toBe(true);
    const probe = rows.find((x) => x.probe)!.probe!;
    expect(probe.cublaslt).toMatchObject({ found: true, path: testLtLib, error: null });
    expect(probe.cublaslt.version).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
