/**
 * `gm doctor`: what this installation can run. The gm and Node versions, the native addon (its path
 * and build info: which backends were built and, if not, why), the OpenMP threads it will use,
 * whether onnxruntime-node's CPU binary is installed (looked up as a file from @gm/onnx's folder;
 * onnxruntime is never loaded) and whether nvidia-smi sees a GPU. `--json` prints one JSON object.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createRequire } from "node:module";
import type { Logger } from "@gm/core";
import { GM_VERSION } from "@gm/core";
import { ADDON_PATH, BUILD_INFO_PATH, gpuRuntimeReport, gpuScanFromEnv, loadNative, type GpuRuntimeReport, type NativeBuildInfo } from "@gm/engine";

export interface DoctorReport {
  gm: string;
  node: string;
  platform: string;
  addon: { path: string; present: boolean; loaded: boolean; error?: string };
  /** From the loaded addon, else native/build/build-info.json; null when neither exists. */
  build: (NativeBuildInfo & { source: "addon" | "build-info.json" }) | null;
  backends: { cpu: { built: boolean; reason: string }; cuda: { built: boolean; reason: string; scan?: string } };
  threads: { openmp: number | null; cpus: number; gmThreads: string | null };
  onnxruntime: { present: boolean; binary: string | null; cudaProvider: boolean; reason?: string };
  gpu: { available: boolean; devices: { name: string; memory: string; driver: string }[]; reason?: string };
  /**
   * What the CUDA backend finds at run time (null without one): the devices as the CUDA runtime sees
   * them, and cuBLASLt and NCCL (loaded with dlopen; native/cuda/dynlib.h has the search order).
   */
  cudaRuntime: GpuRuntimeReport | null;
}


function addonInfo(r: DoctorReport): void {
  if (!r.addon.present) {
    r.addon.error = "not built: run `npm run setup` (it needs cmake, g++ and libopenblas-dev)";
  } else {
    try {
      const native = loadNative();
      r.addon.loaded = true;
      r.threads.openmp = native.maxThreads();
      if (native.buildInfo) r.build = { ...native.buildInfo(), source: "addon" };
      if (native.gpuBackend === "cuda") r.cudaRuntime = gpuRuntimeReport();
    } catch (e) {
      r.addon.error = (e as Error).message;
    }
  }
  if (!r.build && fs.existsSync(BUILD_INFO_PATH)) {
    try {
      r.build = { ...(JSON.parse(fs.readFileSync(BUILD_INFO_PATH, "utf8")) as NativeBuildInfo), source: "build-info.json" };
    } catch {
      // unreadable: reported as unknown below
    }
  }
  const cpuBuilt = r.addon.loaded || (r.addon.present && !!r.build?.cpu);
  r.backends.cpu = { built: cpuBuilt, reason: cpuBuilt ? `OpenMP + OpenBLAS (${r.build?.blas ?? "unknown variant"})` : (r.addon.error ?? "the addon did not load") };
  // Mamba-2's GPU scan the GPU engine will use (GM_GPU_SCAN, docs/gpu.md); gm pretrain refuses other values.
  let scan: string;
  try {
    scan = gpuScanFromEnv();
  } catch (e) {
    scan = (e as Error).message;
  }
  if (r.build?.cuda) r.backends.cuda = { built: r.build.cuda.built, reason: r.build.cuda.reason, ...(r.build.cuda.built ? { scan } : {}) };
  else r.backends.cuda = { built: false, reason: r.addon.present ? "this addon predates build info; rebuild it with `npm run setup`" : "the native addon is not built" };
}

/** onnxruntime-node as @gm/onnx resolves it; only files are checked. */
function onnxInfo(r: DoctorReport): void {
  try {
    const req = createRequire(import.meta.url);
    let dir = path.dirname(req.resolve("@gm/onnx"));
    while (!fs.existsSync(path.join(dir, "package.json")) && path.dirname(dir) !== dir) dir = path.dirname(dir);
    const fromOnnx = createRequire(path.join(dir, "package.json"));
    let ort = path.dirname(fromOnnx.resolve("onnxruntime-node"));
    while (!fs.existsSync(path.join(ort, "package.json")) && path.dirname(ort) !== ort) ort = path.dirname(ort);
    const bin = path.join(ort, "bin");
    if (!fs.existsSync(bin)) {
      r.onnxruntime.reason = `${bin} does not exist`;
      return;
    }
    for (const napi of fs.readdirSync(bin).sort().reverse()) {
      const d = path.join(bin, napi, process.platform, process.arch);
      const f = path.join(d, "onnxruntime_binding.node");
      if (fs.existsSync(f)) {
        r.onnxruntime = { present: true, binary: f, cudaProvider: fs.existsSync(path.join(d, "libonnxruntime_providers_cuda.so")) };
        return;
      }
    }
    r.onnxruntime.reason = `no onnxruntime_binding.node for ${process.platform}-${process.arch} under ${bin}`;
  } catch (e) {
    r.onnxruntime.reason = `onnxruntime-node is not installed for @gm/onnx (${(e as Error).message.split("\n")[0]})`;
  }
}

function gpuInfo(r: DoctorReport): void {
  const q = spawnSync("nvidia-smi", ["--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"], { encoding: "utf8", timeout: 15_000 });
  if (q.error) {
    r.gpu.reason = (q.error as NodeJS.ErrnoException).code === "ENOENT" ? "nvidia-smi not found" : `nvidia-smi failed: ${q.error.message}`;
    return;
  }
  if (q.status !== 0) {
    r.gpu.reason = `nvidia-smi exited with ${q.status}: ${(q.stderr || q.stdout).trim().split("\n")[0] ?? ""}`;
    return;
  }
  r.gpu.devices = q.stdout
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const [name = "", memory = "", driver = ""] = l.split(",").map((s) => s.trim());
      return { name, memory, driver };
    });
  r.gpu.available = r.gpu.devices.length > 0;
  if (!r.gpu.available) r.gpu.reason = "nvidia-smi lists no GPU";
}

export function doctor(): DoctorReport {
  const r: DoctorReport = {
    gm: GM_VERSION,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    addon: { path: ADDON_PATH, present: fs.existsSync(ADDON_PATH), loaded: false },
    build: null,
    backends: { cpu: { built: false, reason: "" }, cuda: { built: false, reason: "" } },
    threads: { openmp: null, cpus: typeof os.availableParallelism === "function" ? os.availableParallelism() : os.cpus().length, gmThreads: process.env.GM_THREADS ?? null },
    onnxruntime: { present: false, binary: null, cudaProvider: false },
    gpu: { available: false, devices: [] },
    cudaRuntime: null,
  };
  addonInfo(r);
  onnxInfo(r);
  gpuInfo(r);
  return r;
}

function text(r: DoctorReport): string {
  const yes = (b: boolean) => (b ? "built" : "not built");
  const lines = [
    `gm ${r.gm} (Node ${r.node}, ${r.platform})`,
    `native addon      ${r.addon.path}${r.addon.loaded ? "" : r.addon.error ? ` (${r.addon.error})` : ""}`,
    `  cpu backend     ${yes(r.backends.cpu.built)}: ${r.backends.cpu.reason}`,
    `  cuda backend    ${yes(r.backends.cuda.built)}: ${r.backends.cuda.reason}`,
  ];
  if (r.backends.cuda.scan) lines.push(`  mamba-2 scan    ${r.backends.cuda.scan} (GM_GPU_SCAN=recurrent|ssd: the recurrence, or the chunked SSD form on tensor cores)`);
  if (r.build?.cuda?.toolkit) lines.push(`  cuda toolkit    ${r.build.cuda.toolkit} (nvcc ${r.build.cuda.version ?? "?"}; archs ${r.build.cuda.archs.join(", ")})`);
  const rt = r.cudaRuntime;
  if (rt) {
    const lib = (l: GpuRuntimeReport["cublaslt"]) => (l.found ? `${l.path} (${l.version})` : `${l.error}`);
    lines.push(
      `  cuda runtime    ${rt.error ? rt.error : `${rt.devices.length} device(s): ${rt.devices.map((d) => `${d.ordinal}: ${d.name} (sm_${(d.cc ?? "").replace(".", "")}, ${d.memory_gib?.toFixed(0)} GiB, ${d.bf16_peak_tflops?.toFixed(0)} TFLOP/s bf16)`).join("; ")}`}`,
      `  cuBLASLt        ${lib(rt.cublaslt)}`,
      `  NCCL            ${lib(rt.nccl)}`,
    );
  }
  lines.push(
    `threads           OpenMP ${r.threads.openmp ?? "unknown (addon not loaded)"} of ${r.threads.cpus} CPUs${r.threads.gmThreads ? ` (GM_THREADS=${r.threads.gmThreads})` : ""}`,
    `onnxruntime-node  ${r.onnxruntime.present ? `CPU binary present: ${r.onnxruntime.binary}${r.onnxruntime.cudaProvider ? " (with the CUDA provider)" : ""}` : `CPU binary missing: ${r.onnxruntime.reason}`}`,
    `GPU               ${r.gpu.available ? r.gpu.devices.map((d) => `${d.name} (${d.memory}, driver ${d.driver})`).join("; ") : `none: ${r.gpu.reason}`}`,
  );
  return lines.join("\n") + "\n";
}

export async function run(o: Record<string, unknown>, _args: string[], _log: Logger): Promise<void> {
  const r = doctor();
  process.stdout.write(o.json ? JSON.stringify(r, null, 2) + "\n" : text(r));
}
