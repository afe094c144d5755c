/**
 * The one module that loads the C++ addon (native/build/Release/gm_native.node). Everything else in
 * gm talks to the engine through model.ts, so commands that never train never load it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { GmError, ExitCode, usageError } from "@gm/core";

export interface NativeTensorInfo {
  name: string;
  shape: number[];
  offset: number;
  numel: number;
  decay: boolean;
}

export interface NativeEngine {
  tensorTable(): NativeTensorInfo[];
  buffer(name: "params" | "grads" | "adam_m" | "adam_v"): Float32Array;
  init(seed: number): void;
  forward(tokens: Int32Array, lengths: Int32Array, batch: number, length: number): void;
  logits(): Float32Array;
  argmaxLogits(): Int32Array;
  hidden(): Float32Array;
  loss(targets: Int32Array, scale: number, backward: boolean, hiddenGrad?: Float32Array): { loss: number; count: number };
  zeroGrad(): void;
  gradNorm(): number;
  adamw(o: { lr: number; beta1?: number; beta2?: number; eps?: number; weightDecay?: number; step: number; gradScale?: number }): void;
  activationBytes(): number;
}

/** The GPU model (native/src/gpu_backend.h): the Engine surface over host mirrors of the device buffers. */
export interface NativeGpuEngine extends NativeEngine {
  /** device -> host mirror (the buffer(name) view). adam_m / adam_v move together. */
  download(name: "params" | "grads" | "adam_m" | "adam_v"): void;
  /** host mirror -> device. */
  upload(name: "params" | "grads" | "adam_m" | "adam_v"): void;
  activationBytesFor(batch: number, length: number): number;
  paramBytes(): number;
  joinNccl(uniqueId: Uint8Array, rank: number, worldSize: number, timeoutSeconds: number): void;
  reduceNextBackward(): void;
  finishReduction(): void;
}

export interface GpuOptions {
  /** CUDA ordinal (default 0). */
  device?: number;
  /** bf16 activations and parameter copy with fp32 master weights (default), or fp32 throughout. */
  dtype?: "bf16" | "float32";
  /** Mamba-2's scan kernels: the recurrence, or the chunked SSD form on tensor cores (docs/gpu.md).
   *  Default: $GM_GPU_SCAN, else "recurrent". */
  scan?: "recurrent" | "ssd";
}

/** Mamba-2's GPU scan from $GM_GPU_SCAN (unset: "recurrent"), as the addon reads it (gpu_backend.h
 *  ssd_scan_from_env); another value is a usage error. */
export function gpuScanFromEnv(): "recurrent" | "ssd" {
  const v = process.env.GM_GPU_SCAN;
  if (!v || v === "recurrent") return "recurrent";
  if (v === "ssd") return "ssd";
  throw usageError(`GM_GPU_SCAN must be 'recurrent' or 'ssd' (got '${v}'): Mamba-2's scan kernels on the GPU, see docs/gpu.md`);
}

export interface NativeHead {
  tensorTable(): NativeTensorInfo[];
  bufferTable(): NativeTensorInfo[];
  buffer(name: "params" | "grads" | "adam_m" | "adam_v" | "running"): Float32Array;
  init(seed: number): void;
  forward(x: Float32Array, batch: number, train: boolean, seed: number): Float32Array;
  loss(targets: Int32Array, classWeight: Float32Array | null, scale: number, backward: boolean): number;
  backward(dlogits: Float32Array): void;
  dx(): Float32Array;
  probs(): Float32Array;
  zeroGrad(): void;
  gradNorm(): number;
  adamw(o: { lr: number; beta1?: number; beta2?: number; eps?: number; weightDecay?: number; step: number; gradScale?: number }): void;
}

/** What the addon was built with (native/build/build-info.json, also compiled into the addon). */
export interface NativeBuildInfo {
  cpu: boolean;
  blas?: string;
  cuda: {
    built: boolean;
    /** AUTO, ON or OFF (GM_CUDA) */
    mode?: string;
    /** why it was (not) built, naming what was found and the folders searched */
    reason: string;
    toolkit: string;
    version?: string;
    archs: string[];
  };
}

export interface NativeModule {
  Engine: new (config: object) => NativeEngine;
  Head: new (config: object) => NativeHead;
  maxThreads(): number;
  distanceSums(x: Float32Array, n: number, d: number, labels: Int32Array, k: number): Float64Array;
  setThreads(n: number): void;
  backend: string;
  /** Absent in addons built before it existed (rebuild with `npm run setup`). */
  buildInfo?(): NativeBuildInfo;
  /** Present when the addon has a GPU backend: "cuda", or "emulated" (gm_native_emul.node). */
  GpuEngine?: new (config: object, options?: GpuOptions) => NativeGpuEngine;
  gpuBackend?: "cuda" | "emulated";
  gpuCount?(): number;
  /** JSON: devices, driver/runtime versions, cuBLASLt and NCCL found at run time (or why not). */
  gpuReport?(): string;
  /** NCCL's unique id (rank 0 makes it and serves it to the other ranks). */
  ncclUniqueId?(): Uint8Array;
}

/** What the GPU backend finds at run time (native/cuda/probe.cpp; the emulated addon's own report). */
export interface GpuRuntimeReport {
  emulated?: boolean;
  driver?: number | null;
  runtime?: number | null;
  devices: { ordinal: number; name: string; cc?: string; sms?: number; memory_gib?: number; bandwidth_gbs?: number; bf16_peak_tflops?: number }[];
  cublaslt: { found: boolean; path?: string | null; version?: string | null; error?: string | null };
  nccl: { found: boolean; path?: string | null; version?: string | null; error?: string | null };
  error: string | null;
}

/** The loaded addon's GPU report, parsed; null when the addon has no GPU backend. */
export function gpuRuntimeReport(): GpuRuntimeReport | null {
  const native = loadNative();
  return native.gpuReport ? (JSON.parse(native.gpuReport()) as GpuRuntimeReport) : null;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const RELEASE_DIR = path.resolve(here, "..", "..", "..", "native", "build", "Release");
/**
 * The addon: gm_native.node, or with GM_GPU_EMULATION=1 gm_native_emul.node, the same addon whose
 * GpuEngine runs the CUDA kernels' bodies on the CPU (for tests of the GPU paths without a GPU).
 */
export const ADDON_PATH = path.join(RELEASE_DIR, process.env.GM_GPU_EMULATION === "1" ? "gm_native_emul.node" : "gm_native.node");
/** Written by CMake when it configures native/ (whether or not the addon then built). */
export const BUILD_INFO_PATH = path.resolve(here, "..", "..", "..", "native", "build", "build-info.json");

let cached: NativeModule | undefined;

export function loadNative(): NativeModule {
  if (cached) return cached;
  if (!fs.existsSync(ADDON_PATH))
    throw new GmError(
      `${ADDON_PATH}: the native engine is not built; run \`npm run setup\` (it needs cmake, g++ and libopenblas-dev)`,
      ExitCode.internal,
    );
  // libgomp reads this when the addon loads. Its default (spin before sleeping) turns every parallel
  // region into seconds of waiting when another process holds a core; sleeping costs microseconds.
  process.env.OMP_WAIT_POLICY ??= "PASSIVE";
  const require = createRequire(import.meta.url);
  cached = require(ADDON_PATH) as NativeModule;
  const env = Number(process.env.GM_THREADS);
  if (Number.isInteger(env) && env > 0) cached.setThreads(env);
  return cached;
}
