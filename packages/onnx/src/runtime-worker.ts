/**
 * One onnxruntime InferenceSession in a worker thread (see runtime.ts). This and runtime.ts are the
 * only modules that touch onnxruntime-node, and only this one imports it, so importing @gm/onnx (to
 * export a model) never loads ORT's native library.
 *
 * Protocol (runtime.ts posts, this answers):
 *   workerData {file, provider: "cpu" | "cuda", fallback (auto: cuda failed -> cpu), intraOp}
 *   -> {type: "ready", provider, inputs, outputs} | {type: "failed", error, cuda}
 *   {type: "run", id, ids: Int32Array, lengths: Int32Array, batch, length, outputs}
 *   -> {type: "result", id, outputs: {name: {data: Float32Array, dims}}} | {type: "error", id, error}
 *   {type: "close"} -> after the queued runs, the session is released and the thread exits;
 *   {type: "abort"} -> the same after the run in progress (queued runs are dropped unanswered).
 * Runs are served one at a time, in arrival order: a session's intra-op threads are its parallelism.
 */
import { parentPort, workerData, type Transferable } from "node:worker_threads";
import * as ort from "onnxruntime-node";

interface Init {
  file: string;
  provider: "cpu" | "cuda";
  fallback: boolean;
  intraOp: number;
}
interface RunMsg {
  type: "run";
  id: number;
  ids: Int32Array;
  lengths: Int32Array;
  batch: number;
  length: number;
  outputs: string[];
}

const port = parentPort!;
const init = workerData as Init;
const oneLine = (e: unknown) => (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, " ").trim();

async function create(provider: "cpu" | "cuda"): Promise<ort.InferenceSession> {
  return await ort.InferenceSession.create(init.file, {
    executionProviders: [provider],
    intraOpNumThreads: init.intraOp,
    interOpNumThreads: 1,
    graphOptimizationLevel: "all",
    executionMode: "sequential",
    logSeverityLevel: 3,
  });
}

async function open(): Promise<{ session: ort.InferenceSession; provider: "cpu" | "cuda" } | undefined> {
  try {
    return { session: await create(init.provider), provider: init.provider };
  } catch (e) {
    if (init.provider === "cuda" && init.fallback) {
      try {
        return { session: await create("cpu"), provider: "cpu" };
      } catch (e2) {
        port.postMessage({ type: "failed", error: oneLine(e2), cuda: false });
        return undefined;
      }
    }
    port.postMessage({ type: "failed", error: oneLine(e), cuda: init.provider === "cuda" });
    return undefined;
  }
}

/** float32 view of an output tensor (float16 decoded from its bits, other numbers converted). */
function toFloat32(t: ort.Tensor): Float32Array {
  if (t.data instanceof Float32Array) return t.data;
  if (t.type === "float16") {
    const h = new Uint16Array((t.data as Uint16Array).buffer, (t.data as Uint16Array).byteOffset, t.size);
    const f = new Float32Array(h.length);
    for (let i = 0; i < h.length; i++) {
      const x = h[i], s = x & 0x8000 ? -1 : 1, e = (x >> 10) & 0x1f, m = x & 0x3ff;
      f[i] = s * (e === 0 ? m * 2 ** -24 : e === 31 ? (m ? NaN : Infinity) : (1 + m / 1024) * 2 ** (e - 15));
    }
    return f;
  }
  return Float32Array.from(t.data as ArrayLike<number>, Number);
}

const opened = await open();
if (opened) {
  const { session, provider } = opened;
  port.postMessage({ type: "ready", provider, inputs: [...session.inputNames], outputs: [...session.outputNames] });
  let chain: Promise<void> = Promise.resolve();
  let aborted = false;
  // GM_FAILPOINT=onnx-run:<k> (tests): the k-th run of each worker crashes the thread instead.
  const failAt = /^onnx-run:(\d+)$/.exec(process.env.GM_FAILPOINT ?? "")?.[1];
  let runs = 0;
  const serve = async (m: RunMsg) => {
    if (aborted) return;
    if (failAt !== undefined && ++runs === Number(failAt)) {
      setImmediate(() => {
        throw new Error(`GM_FAILPOINT onnx-run:${failAt}`);
      });
      await new Promise(() => undefined);
    }
    try {
      const n = m.ids.length;
      const ids = new BigInt64Array(n);
      for (let i = 0; i < n; i++) ids[i] = BigInt(m.ids[i]);
      const lengths = new BigInt64Array(m.batch);
      for (let i = 0; i < m.batch; i++) lengths[i] = BigInt(m.lengths[i]);
      const feeds = {
        input_ids: new ort.Tensor("int64", ids, [m.batch, m.length]),
        lengths: new ort.Tensor("int64", lengths, [m.batch]),
      };
      const r = await session.run(feeds, m.outputs);
      const outputs: Record<string, { data: Float32Array; dims: number[] }> = {};
      const transfer: Transferable[] = [];
      for (const name of m.outputs) {
        const t = r[name];
        let f = toFloat32(t);
        // hand the whole buffer over; copy when the tensor is a view into a larger one
        if (f.byteOffset !== 0 || f.byteLength !== f.buffer.byteLength) f = f.slice();
        outputs[name] = { data: f, dims: t.dims.map(Number) };
        transfer.push(f.buffer as ArrayBuffer);
      }
      port.postMessage({ type: "result", id: m.id, outputs }, transfer);
    } catch (e) {
      port.postMessage({ type: "error", id: m.id, error: oneLine(e) });
    }
  };
  // The thread only ever ends between runs: ending it while onnxruntime runs a batch on its
  // threads aborts the whole process when the run's completion calls back into a dead isolate.
  port.on("message", (m: RunMsg | { type: "close" } | { type: "abort" }) => {
    if (m.type === "run") chain = chain.then(() => serve(m));
    else {
      if (m.type === "abort") aborted = true; // skip the runs not started yet
      chain = chain.then(async () => {
        try {
          await session.release();
        } finally {
          port.close();
          process.exit(0);
        }
      });
    }
  });
} else {
  port.close();
}
