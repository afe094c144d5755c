/**
 * Inference on a gm-exported .onnx file with onnxruntime-node, for `gm embed --runtime onnx` and
 * `gm predict`.
 *
 * `InferenceSession.run` occupies the thread that calls it for the whole forward pass, so sessions
 * live in worker threads (runtime-worker.ts): the main thread keeps reading and tokenizing input and
 * writing results while batches run. `workers` sessions split the thread budget
 * (intra-op threads = max(1, floor(threads / workers)) each); a batch goes to the worker with the
 * fewest batches queued, and every `run` resolves with its own batch's outputs whatever order the
 * workers finish in. Batch buffers travel to the worker as copies (the caller's arrays stay usable);
 * outputs come back as transferred ArrayBuffers (no copy).
 *
 * ORT computes every graph output whichever ones are fetched; fetching fewer only saves the copy.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { inputError, usageError } from "@gm/core";
import { readGmOnnx, type GmOnnxModel } from "./metadata.js";

export type OnnxProvider = "cpu" | "cuda" | "auto";
export const ONNX_PROVIDERS: readonly OnnxProvider[] = ["cpu", "cuda", "auto"];

export interface OnnxRunnerOptions {
  /** Total intra-op threads over all workers (default: GM_THREADS, else os.availableParallelism()). */
  threads?: number;
  /** Sessions, one per worker thread (default 1). */
  workers?: number;
  /** Execution provider (default "auto": CUDA when onnxruntime-node ships its CUDA provider, else CPU). */
  provider?: OnnxProvider;
}

export interface OnnxBatch {
  /** batch x length token ids, row-major, right-padded with the model's pad_token_id. */
  ids: Int32Array;
  /** Valid tokens per row. */
  lengths: Int32Array;
  batch: number;
  length: number;
}

export type OnnxOutputs = Record<string, { data: Float32Array; dims: number[] }>;

const CUDA_LIB = "libonnxruntime_providers_cuda.so";

/** onnxruntime-node's folder of native binaries for this platform (found without loading it). */
export function ortBinaryDir(): string | undefined {
  try {
    const main = createRequire(import.meta.url).resolve("onnxruntime-node");
    return path.join(path.dirname(main), "..", "bin", "napi-v6", process.platform, process.arch);
  } catch {
    return undefined;
  }
}

/** Whether onnxruntime-node's CUDA execution provider library is installed. */
export function hasCudaProvider(): boolean {
  const dir = ortBinaryDir();
  return !!dir && fs.existsSync(path.join(dir, CUDA_LIB));
}

function defaultThreads(): number {
  const env = Number(process.env.GM_THREADS);
  if (Number.isInteger(env) && env > 0) return env;
  return typeof os.availableParallelism === "function" ? os.availableParallelism() : os.cpus().length;
}

interface Pending {
  resolve: (o: OnnxOutputs) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
  exited: Promise<void>;
}

type FromWorker =
  | { type: "ready"; provider: "cpu" | "cuda"; inputs: string[]; outputs: string[] }
  | { type: "failed"; error: string; cuda: boolean }
  | { type: "result"; id: number; outputs: OnnxOutputs }
  | { type: "error"; id: number; error: string };

export class OnnxRunner {
  readonly provider: "cpu" | "cuda";
  readonly workers: number;
  readonly info: GmOnnxModel;
  /** Intra-op threads of each session. */
  readonly threadsPerWorker: number;
  private readonly slots: Slot[];
  private nextId = 0;
  private broken: Error | undefined;
  private closing = false;

  private constructor(info: GmOnnxModel, provider: "cpu" | "cuda", slots: Slot[], threadsPerWorker: number) {
    this.info = info;
    this.provider = provider;
    this.slots = slots;
    this.workers = slots.length;
    this.threadsPerWorker = threadsPerWorker;
    slots.forEach((s) => this.watch(s));
  }

  /** Reads the model's gm metadata and opens `workers` sessions on it (all ready when this resolves). */
  static async open(file: string, o: OnnxRunnerOptions = {}): Promise<OnnxRunner> {
    if (!fs.existsSync(file)) throw inputError(file, "ONNX model not found; export one with gm export --onnx");
    if (fs.statSync(file).isDirectory()) throw inputError(file, "is a folder, not an .onnx file; export the model folder with gm export --onnx, or use --runtime native");
    const workers = o.workers ?? 1;
    if (!Number.isInteger(workers) || workers < 1) throw usageError(`--workers must be a positive integer (got ${String(o.workers)})`);
    const threads = o.threads ?? defaultThreads();
    if (!Number.isInteger(threads) || threads < 1) throw usageError(`--threads must be a positive integer (got ${String(o.threads)})`);
    const asked = o.provider ?? "auto";
    if (!ONNX_PROVIDERS.includes(asked)) throw usageError(`--provider must be cpu, cuda or auto (got ${String(asked)})`);
    const info = readGmOnnx(file);
    const cuda = hasCudaProvider();
    if (asked === "cuda" && !cuda)
      throw usageError(`--provider cuda: this onnxruntime-node has no CUDA execution provider (no ${CUDA_LIB} in ${ortBinaryDir() ?? "its bin folder"}); install onnxruntime-node's CUDA binaries or use --provider cpu`);
    const intraOp = Math.max(1, Math.floor(threads / workers));
    const first = asked === "cpu" || !cuda ? "cpu" : "cuda";
    const slots: Slot[] = [];
    try {
      // auto with CUDA present: the first session finds out whether CUDA works; the rest follow it.
      const head = await OnnxRunner.spawn(info, first, asked === "auto", intraOp);
      slots.push(head.slot);
      const rest = await Promise.allSettled(Array.from({ length: workers - 1 }, () => OnnxRunner.spawn(info, head.provider, false, intraOp)));
      for (const r of rest) if (r.status === "fulfilled") slots.push(r.value.slot);
      const bad = rest.find((r) => r.status === "rejected");
      if (bad) throw (bad as PromiseRejectedResult).reason;
      return new OnnxRunner(info, head.provider, slots, intraOp);
    } catch (e) {
      await Promise.all(slots.map((s) => OnnxRunner.shutdown(s, "abort")));
      throw e;
    }
  }

  private static spawn(info: GmOnnxModel, provider: "cpu" | "cuda", fallback: boolean, intraOp: number): Promise<{ slot: Slot; provider: "cpu" | "cuda" }> {
    const file = info.file;
    return new Promise((resolve, reject) => {
      let worker: Worker;
      try {
        worker = new Worker(new URL("./runtime-worker.js", import.meta.url), { workerData: { file: path.resolve(file), provider, fallback, intraOp } });
      } catch (e) {
        reject(e as Error);
        return;
      }
      const exited = new Promise<void>((res) => worker.once("exit", () => res()));
      const done = (f: () => void) => {
        worker.off("message", onMessage);
        worker.off("error", onError);
        worker.off("exit", onExit);
        f();
      };
      const onMessage = (m: FromWorker) => {
        if (m.type === "ready") {
          const missing = ["input_ids", "lengths"].filter((n) => !m.inputs.includes(n));
          if (missing.length) {
            worker.postMessage({ type: "abort" });
            done(() => reject(inputError(file, `has no graph input ${missing.join(", ")} (inputs: ${m.inputs.join(", ")}); re-export the model with gm export --onnx`)));
            return;
          }
          worker.unref();
          done(() => resolve({ slot: { worker, pending: new Map(), exited }, provider: m.provider }));
        } else if (m.type === "failed") {
          done(() =>
            reject(
              m.cuda
                ? usageError(`--provider cuda: onnxruntime could not create a CUDA session for ${file} (${m.error}); check the GPU driver and CUDA libraries, or use --provider cpu`)
                : inputError(file, `onnxruntime cannot load it (${m.error}); re-export the model with gm export --onnx`),
            ),
          );
        }
      };
      const onError = (e: Error) => done(() => reject(new Error(`onnxruntime worker failed while loading ${file}: ${e.message}`)));
      const onExit = (code: number) => done(() => reject(new Error(`onnxruntime worker exited with code ${code} while loading ${file}`)));
      worker.on("message", onMessage);
      worker.on("error", onError);
      worker.on("exit", onExit);
    });
  }

  private watch(s: Slot): void {
    s.worker.on("message", (m: FromWorker) => {
      if (m.type !== "result" && m.type !== "error") return;
      const p = s.pending.get(m.id);
      if (!p) return;
      s.pending.delete(m.id);
      if (s.pending.size === 0) s.worker.unref();
      if (m.type === "result") p.resolve(m.outputs);
      else p.reject(new Error(`onnxruntime: ${m.error} (${this.info.file})`));
    });
    s.worker.on("error", (e) => this.fail(new Error(`onnxruntime worker crashed: ${e.message} (${this.info.file})`)));
    s.worker.on("exit", (code) => {
      if (!this.closing) this.fail(new Error(`onnxruntime worker exited unexpectedly with code ${code} (${this.info.file})`));
    });
  }

  /**
   * A crashed worker fails every pending run, and the runner with it; the other workers end after
   * the batch they are running (never terminated mid-run: see runtime-worker.ts).
   */
  private fail(e: Error): void {
    if (this.broken || this.closing) return;
    this.broken = e;
    for (const s of this.slots) {
      for (const p of s.pending.values()) p.reject(e);
      s.pending.clear();
      s.worker.unref();
      s.worker.postMessage({ type: "abort" });
    }
  }

  /** Asks a worker to end (after its queued runs, or after the current one for "abort") and waits. */
  private static async shutdown(s: Slot, how: "close" | "abort"): Promise<void> {
    s.worker.ref();
    s.worker.postMessage({ type: how });
    const timer = setTimeout(() => void s.worker.terminate(), 60_000);
    timer.unref();
    await s.exited;
    clearTimeout(timer);
  }

  /** Runs one batch on the least busy session; resolves with the asked outputs (float32). */
  run(b: OnnxBatch, outputs: string[]): Promise<OnnxOutputs> {
    if (this.broken) return Promise.reject(this.broken);
    if (this.closing) return Promise.reject(new Error(`the ONNX runner for ${this.info.file} is closed`));
    if (outputs.length === 0) return Promise.reject(usageError("OnnxRunner.run needs at least one output name"));
    const unknown = outputs.filter((n) => !this.info.outputs.includes(n));
    if (unknown.length) return Promise.reject(inputError(this.info.file, `has no output ${unknown.join(", ")}; its outputs are ${this.info.outputs.join(", ")}`));
    if (!Number.isInteger(b.batch) || !Number.isInteger(b.length) || b.batch < 1 || b.length < 1 || b.ids.length !== b.batch * b.length || b.lengths.length !== b.batch)
      return Promise.reject(new Error(`OnnxRunner.run: a batch of ${b.batch} x ${b.length} needs ${b.batch * b.length} ids and ${b.batch} lengths (got ${b.ids.length} and ${b.lengths.length})`));
    for (let r = 0; r < b.batch; r++)
      if (b.lengths[r] < 0 || b.lengths[r] > b.length) return Promise.reject(new Error(`OnnxRunner.run: row ${r} has length ${b.lengths[r]} outside 0..${b.length}`));
    let slot = this.slots[0];
    for (const s of this.slots) if (s.pending.size < slot.pending.size) slot = s;
    const id = this.nextId++;
    const ids = b.ids.slice();
    const lengths = b.lengths.slice();
    return new Promise<OnnxOutputs>((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      slot.worker.ref();
      slot.worker.postMessage({ type: "run", id, ids, lengths, batch: b.batch, length: b.length, outputs }, [ids.buffer, lengths.buffer]);
    });
  }

  /** Batches queued or running on each worker. */
  get busy(): number[] {
    return this.slots.map((s) => s.pending.size);
  }

  /** Finishes the queued runs, releases the sessions and ends the worker threads. */
  async close(): Promise<void> {
    if (this.closing) return;
    const broken = this.broken;
    this.closing = true;
    await Promise.all(
      this.slots.map(async (s) => {
        await OnnxRunner.shutdown(s, broken ? "abort" : "close");
        const gone = new Error(`the ONNX runner for ${this.info.file} closed before this run finished`);
        for (const p of s.pending.values()) p.reject(gone);
        s.pending.clear();
      }),
    );
  }
}
