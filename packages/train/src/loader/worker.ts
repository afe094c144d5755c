/**
 * Prefetch thread of the TokenLoader: runs the same step generator as the synchronous mode and
 * posts each step with its ArrayBuffers transferred (no copy). Back-pressure is credit based: the
 * main thread grants one credit per step it may receive (`prefetch` at start, one more per step it
 * hands out), so at most `prefetch` steps are ever prepared but not yet consumed.
 *
 * Protocol: main → worker {credit: n}; worker → main {step: PackedStep} or, once, {error}.
 */
import { parentPort, workerData } from "node:worker_threads";
import { serializeError } from "@gm/core";
import { packedSteps } from "./plan.js";
import type { DatasetIndex, PackedStep, ResolvedLoaderOptions } from "./types.js";

const port = parentPort!;
const { index, opts } = workerData as { index: DatasetIndex; opts: ResolvedLoaderOptions };
let gen: Generator<PackedStep, never> | undefined;
let credit = 0;
let scheduled = false;
let failed = false;

/** One step per macrotask, so credit messages are taken in between long buffer reads. */
function produce(): void {
  scheduled = false;
  if (failed || credit <= 0) return;
  try {
    gen ??= packedSteps(index, opts);
    const step = gen.next().value;
    credit--;
    port.postMessage({ step }, [step.ids.buffer, step.offsets.buffer, step.samples.buffer, step.counts.buffer] as ArrayBuffer[]);
  } catch (e) {
    failed = true;
    port.postMessage({ error: serializeError(e) });
    return;
  }
  schedule();
}

function schedule(): void {
  if (!scheduled && !failed && credit > 0) {
    scheduled = true;
    setImmediate(produce);
  }
}

port.on("message", (msg: { credit: number }) => {
  credit += msg.credit;
  schedule();
});
