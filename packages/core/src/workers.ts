import { Worker, parentPort, type Transferable } from "node:worker_threads";
import { deserializeError, serializeError } from "./errors.js";

/**
 * A small pool of worker threads. Heavy synchronous work (h5wasm reads, sorting, digesting) runs
 * off the main thread; the main thread only schedules tasks and merges results.
 *
 * Protocol: the pool posts {id, task}; a worker answers {id, progress} any number of times and then
 * {id, result} or {id, error}.
 */
type WorkerMessage<R> =
  | { id: number; progress: number }
  | { id: number; result: R }
  | { id: number; error: { name: string; message: string; exitCode?: number; stack?: string } };

export interface PoolOptions<T, R> {
  workerUrl: URL;
  tasks: T[];
  concurrency: number;
  /** Called in task-completion order with the task's index. */
  onResult?: (result: R, index: number) => void | Promise<void>;
  onProgress?: (n: number, index: number) => void;
  workerData?: unknown;
}

/** Runs every task; resolves with results in task order; rejects on the first error (other workers are stopped). */
export async function runPool<T, R>(opts: PoolOptions<T, R>): Promise<R[]> {
  const results: R[] = new Array(opts.tasks.length);
  if (opts.tasks.length === 0) return results;
  const n = Math.max(1, Math.min(opts.concurrency, opts.tasks.length));
  const workers: Worker[] = [];
  let next = 0;
  let failed = false;
  return await new Promise<R[]>((resolve, reject) => {
    let remaining = opts.tasks.length;
    const fail = (e: Error) => {
      if (failed) return;
      failed = true;
      for (const w of workers) void w.terminate();
      reject(e);
    };
    const retired = new Set<Worker>();
    const exited: Promise<void>[] = [];
    /** Ask a worker to finish (it closes its files); terminate it if it has not left within 10 s. */
    const retire = (w: Worker) => {
      if (retired.has(w)) return;
      retired.add(w);
      w.postMessage({ shutdown: true });
      const t = setTimeout(() => void w.terminate(), 10_000);
      t.unref();
    };
    const dispatch = (w: Worker) => {
      if (failed) return;
      if (next >= opts.tasks.length) {
        retire(w);
        return;
      }
      const id = next++;
      w.postMessage({ id, task: opts.tasks[id] });
    };
    for (let i = 0; i < n; i++) {
      const w = new Worker(opts.workerUrl, { workerData: opts.workerData });
      workers.push(w);
      exited.push(new Promise<void>((res) => w.once("exit", () => res())));
      w.on("message", (msg: WorkerMessage<R>) => {
        if ("progress" in msg) {
          opts.onProgress?.(msg.progress, msg.id);
          return;
        }
        if ("error" in msg) {
          fail(deserializeError(msg.error));
          return;
        }
        results[msg.id] = msg.result;
        Promise.resolve(opts.onResult?.(msg.result, msg.id))
          .then(() => {
            remaining--;
            if (remaining === 0) {
              for (const x of workers) retire(x);
              // resolve once every worker has exited (and so released its files)
              void Promise.all(exited).then(() => resolve(results));
            } else dispatch(w);
          })
          .catch((e: unknown) => fail(e as Error));
      });
      w.on("error", (e) => fail(e));
      w.on("exit", (code) => {
        if (!failed && !retired.has(w) && remaining > 0 && code !== 0) fail(new Error(`worker thread exited with code ${code}`));
      });
      dispatch(w);
    }
  });
}

/**
 * Worker side: handle tasks posted by runPool with an (optionally async) function. `onShutdown`
 * runs when the pool has no more work, before the thread exits (close files, remove temporaries).
 */
export function serveTasks<T, R>(
  handler: (task: T, progress: (n: number) => void) => R | Promise<R>,
  opts: { onShutdown?: () => void | Promise<void>; transfer?: (r: R) => Transferable[] } = {},
): void {
  if (!parentPort) throw new Error("serveTasks must run inside a worker thread");
  const port = parentPort;
  port.on("message", async (msg: { id: number; task: T } | { shutdown: true }) => {
    if ("shutdown" in msg) {
      try {
        await opts.onShutdown?.();
      } finally {
        process.exit(0);
      }
      return;
    }
    const progress = (p: number) => port.postMessage({ id: msg.id, progress: p });
    try {
      const result = await handler(msg.task, progress);
      port.postMessage({ id: msg.id, result }, opts.transfer ? opts.transfer(result) : []);
    } catch (e) {
      port.postMessage({ id: msg.id, error: serializeError(e) });
    }
  });
}
