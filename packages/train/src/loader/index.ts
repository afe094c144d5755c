/**
 * The pretraining data loader: streams the Arrow shards of a `gm tokenize` folder by record batch,
 * shuffles with a seed, groups by length, gives each data-parallel rank a disjoint slice, prefetches
 * in a worker thread, and reports after every step the exact position to resume from. The sequence
 * of steps is a pure function of (dataset, options, seed): the same whether prefetched or not and
 * whether run through or resumed, which is what makes resumed training bitwise reproducible.
 */
import { Worker } from "node:worker_threads";
import { deserializeError } from "@gm/core";
import { readDatasetIndex } from "./dataset.js";
import { checkStart, countEpochSteps, packedSteps, resolveOptions, unpackStep } from "./plan.js";
import type { DatasetIndex, LoaderOptions, PackedStep, ResolvedLoaderOptions, StepBatch } from "./types.js";

export type { Cell, DatasetBatch, DatasetIndex, DatasetShard, LoaderOptions, LoaderPosition, ResolvedLoaderOptions, StepBatch } from "./types.js";
export { readDatasetIndex } from "./dataset.js";

/**
 * Optimizer steps in an epoch, from row counts only (no shard is read). With shuffle, buffers group
 * different record batches each epoch, and where a shard's short last batch lands can change the
 * count (by at most one per buffer), hence `epoch` (default: the epoch of `opts.start`, else 0).
 * Without shuffle, or when every batch has the same rows, all epochs have the same count.
 */
export function stepsPerEpoch(index: DatasetIndex, opts: LoaderOptions, epoch: number = opts.start?.epoch ?? 0): number {
  return countEpochSteps(index, resolveOptions(opts), epoch);
}

type Waiter = { resolve: (s: StepBatch) => void; reject: (e: Error) => void };

export class TokenLoader implements AsyncIterable<StepBatch> {
  readonly index: DatasetIndex;
  readonly options: Readonly<ResolvedLoaderOptions>;
  private gen: Generator<PackedStep, never> | undefined;
  private worker: Worker | undefined;
  private readonly ready: StepBatch[] = [];
  private readonly waiters: Waiter[] = [];
  private error: Error | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;

  /** Validates the options and the dataset index synchronously; with prefetch, starts the worker. */
  constructor(opts: LoaderOptions) {
    this.options = resolveOptions(opts);
    this.index = readDatasetIndex(this.options.dir);
    checkStart(this.index, this.options);
    if (this.options.prefetch === 0) {
      this.gen = packedSteps(this.index, this.options);
      return;
    }
    // Inherited --input-type (node -e scripts) would make the worker refuse its own file.
    const execArgv = process.execArgv.filter((a) => !a.startsWith("--input-type"));
    const w = new Worker(new URL("./worker.js", import.meta.url), { workerData: { index: this.index, opts: this.options }, execArgv });
    this.worker = w;
    // Only a pending next() keeps the process alive; an idle or forgotten loader does not.
    w.unref();
    w.on("message", (msg: { step: PackedStep } | { error: Parameters<typeof deserializeError>[0] }) => {
      if ("error" in msg) this.fail(deserializeError(msg.error));
      else this.deliver(unpackStep(msg.step, this.options.accumulation, this.options.ranks.length));
    });
    w.on("error", (e) => this.fail(e));
    w.on("exit", (code) => {
      if (!this.closed) this.fail(new Error(`the data loader's worker thread exited unexpectedly (code ${code})`));
    });
    w.postMessage({ credit: this.options.prefetch });
  }

  private deliver(step: StepBatch): void {
    if (this.closed) return;
    const w = this.waiters.shift();
    if (w) {
      this.grant();
      w.resolve(step);
    } else this.ready.push(step);
    if (this.waiters.length === 0) this.worker?.unref();
  }

  /** One more step may be prepared: the consumer took one. */
  private grant(): void {
    this.worker?.postMessage({ credit: 1 });
  }

  private fail(e: Error): void {
    if (this.error || this.closed) return;
    this.error = e;
    for (const w of this.waiters.splice(0)) w.reject(e);
    this.worker?.unref();
  }

  /** The next step. Infinite: after the last buffer of epoch e comes epoch e+1, shuffled anew. */
  next(): Promise<StepBatch> {
    if (this.closed) return Promise.reject(new Error("the data loader is closed"));
    if (this.gen) {
      if (this.error) return Promise.reject(this.error);
      try {
        return Promise.resolve(unpackStep(this.gen.next().value, this.options.accumulation, this.options.ranks.length));
      } catch (e) {
        this.error = e as Error;
        return Promise.reject(this.error);
      }
    }
    const s = this.ready.shift();
    if (s) {
      this.grant();
      return Promise.resolve(s);
    }
    if (this.error) return Promise.reject(this.error);
    return new Promise<StepBatch>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.worker!.ref();
    });
  }

  /** Stops the worker (interrupting a buffer read if one is running); pending next() calls reject. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.gen = undefined;
    this.ready.length = 0;
    const err = new Error("the data loader was closed");
    for (const w of this.waiters.splice(0)) w.reject(err);
    const w = this.worker;
    this.worker = undefined;
    this.closing = w
      ? w.terminate().then(
          () => undefined,
          () => undefined,
        )
      : Promise.resolve();
    return this.closing;
  }

  [Symbol.asyncIterator](): AsyncIterator<StepBatch> {
    return {
      next: async () => ({ value: await this.next(), done: false }),
      return: async () => {
        await this.close();
        return { value: undefined, done: true };
      },
    };
  }
}
