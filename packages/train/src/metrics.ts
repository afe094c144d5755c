/**
 * Throughput accounting: model FLOPs per step (from the config and the batch's token and loss-position
 * counts) and an estimate of the machine's peak, for the "estimated FLOPs utilisation" in the logs.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import { gpuRuntimeReport, loadNative } from "@gm/engine";
import type { ModelConfig } from "@gm/engine";

/**
 * Forward FLOPs for `tokens` valid tokens with `lossPositions` LM-head rows. Counted: every matrix
 * product (2 FLOPs per multiply-add) of both directions, the combine gate, and the scan at
 * 6 * d_inner * d_state per token per direction (state update, output, chunk products); the conv,
 * norms and elementwise ops are left out (under 2% for the 24l-512d model). Training = 3x forward.
 */
export function forwardFlops(c: ModelConfig, tokens: number, lossPositions: number): number {
  const d = c.d_model, E = c.expand * d, N = c.d_state, V = c.vocab_size;
  let matmul: number;
  if (c.mixer === "mamba2") {
    const H = E / c.headdim;
    matmul = (2 * E + 2 * N + H) * d + d * E;
  } else {
    matmul = 2 * E * d + (c.dt_rank + 2 * N) * E + E * c.dt_rank + d * E;
  }
  const directions = c.combine === "unidirectional" ? 1 : 2;
  const perTokenLayer = directions * (2 * matmul + 6 * E * N) + (c.combine === "gate" || c.combine === "concat" ? 2 * 2 * d * d : 0);
  return tokens * c.n_layer * perTokenLayer + lossPositions * 2 * d * V;
}

export function trainingFlops(c: ModelConfig, tokens: number, lossPositions: number): number {
  return 3 * forwardFlops(c, tokens, lossPositions);
}

/**
 * Peak fp32 FLOP/s of the CPU threads the engine uses: threads x clock x FLOPs per cycle
 * (2 FMA units x 16 lanes x 2 with AVX-512, 2 x 8 x 2 with AVX2+FMA, else 8). An estimate: turbo and
 * AVX-512 down-clocking move the real figure by tens of percent.
 */
export function cpuPeakFlops(threads: number): { flops: number; how: string } {
  let mhz = 0, flags = "";
  try {
    const info = fs.readFileSync("/proc/cpuinfo", "utf8");
    mhz = Number(/cpu MHz\s*:\s*([\d.]+)/.exec(info)?.[1] ?? 0);
    flags = /flags\s*:(.*)/.exec(info)?.[1] ?? "";
  } catch {
    // not Linux: fall back to os.cpus()
  }
  if (!mhz) mhz = os.cpus()[0]?.speed ?? 2000;
  const perCycle = /\bavx512f\b/.test(flags) ? 64 : /\bavx2\b/.test(flags) && /\bfma\b/.test(flags) ? 32 : 8;
  return { flops: threads * mhz * 1e6 * perCycle, how: `${threads} threads x ${(mhz / 1000).toFixed(2)} GHz x ${perCycle} FLOP/cycle` };
}

/**
 * Dense bf16 tensor-core peak of a GPU, as the CUDA backend computes it (SMs x clock x per-SM rate,
 * native/cuda/device_cuda.cpp); the emulated backend has none, so the CPU's peak stands in there.
 */
export function gpuPeakFlops(ordinal: number): { flops: number; how: string } {
  const native = loadNative();
  const d = gpuRuntimeReport()?.devices[ordinal];
  if (d?.bf16_peak_tflops) return { flops: d.bf16_peak_tflops * 1e12, how: `${d.name}: ${d.bf16_peak_tflops.toFixed(0)} TFLOP/s dense bf16` };
  const cpu = cpuPeakFlops(native.maxThreads());
  return { flops: cpu.flops, how: `${d?.name ?? "unknown GPU"}: no bf16 peak known; CPU peak ${cpu.how}` };
}

/** Appends one JSON object per line; the file is reopened per write so a crash loses at most one line. */
export class JsonlWriter {
  constructor(readonly file: string) {}
  write(record: object): void {
    fs.appendFileSync(this.file, JSON.stringify(record) + "\n");
  }
  /** Drops records after `step` (a resumed run rewrites what the crashed one logged past its checkpoint). */
  truncateAfter(step: number): void {
    if (!fs.existsSync(this.file)) return;
    const kept = fs
      .readFileSync(this.file, "utf8")
      .split("\n")
      .filter((l) => {
        if (!l.trim()) return false;
        try {
          const r = JSON.parse(l) as { step?: number };
          return typeof r.step !== "number" || r.step <= step;
        } catch {
          return false;
        }
      });
    fs.writeFileSync(this.file, kept.length ? kept.join("\n") + "\n" : "");
  }
  read(): Record<string, unknown>[] {
    if (!fs.existsSync(this.file)) return [];
    return fs
      .readFileSync(this.file, "utf8")
      .split("\n")
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}
