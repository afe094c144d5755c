/**
 * The forward pass of `gm embed` and `gm predict` behind one small interface, so both commands work
 * on either runtime:
 *  - native: a gm model folder (bundle.ts) on the native engine, one synchronous forward at a time;
 *  - onnx:   a gm-exported .onnx file on onnxruntime (@gm/onnx's OnnxRunner, worker threads), with
 *            up to `workers` batches in flight while the main thread reads and tokenizes the next.
 * The vocabulary, medians, [CLS] id, pad id and labels come from the folder or from the .onnx file's
 * metadata; cells are tokenized the same way for both (cells.ts).
 */
import { inputError, usageError } from "@gm/core";
import { loadMedians, type Vocabulary } from "@gm/data";
import { loadNative, type Batch } from "@gm/engine";
import type { OnnxProvider, OnnxRunner } from "@gm/onnx";
import { bundleMedians, loadModelBundle, type ModelBundle } from "./bundle.js";

export type RuntimeKind = "native" | "onnx";
export const RUNTIMES: readonly RuntimeKind[] = ["native", "onnx"];

export interface CellModelOptions {
  /** Default: onnx for a file ending in .onnx, native otherwise. */
  runtime?: RuntimeKind;
  /** Gene medians file overriding the model's own. */
  medians?: string;
  /** Native: engine threads; onnx: intra-op threads over all workers. */
  threads?: number;
  /** onnx: sessions in worker threads (default 1). */
  workers?: number;
  /** onnx: execution provider (default auto). */
  provider?: OnnxProvider;
}

/** What a batch's forward returns: the post-norm hidden states, a pooled state per row, or class probabilities. */
export type CellOutput = "hidden" | "cls" | "mean" | "probabilities";

export interface CellModel {
  runtime: RuntimeKind;
  /** The model folder or .onnx file. */
  location: string;
  vocab: Vocabulary;
  /** Loaded lazily (only h5ad input needs them); a clear error when the model has none and no --medians was given. */
  medians(): Map<string, number>;
  dModel: number;
  vocabSize: number;
  padId: number;
  clsId?: number;
  /** Class names when the model can classify (a fine-tuned folder's head, an .onnx with its classifier). */
  classes?: string[];
  /** Whether the model is a fine-tuned one (default pooling cls). */
  fineTuned: boolean;
  /** Batches that may wait unconsumed while the next is built (0: consume each before the next). */
  pipeline: number;
  /** Runs a padded batch: hidden [B, L, d], cls / mean [B, d] or probabilities [B, C] (from the [CLS] state). */
  run(b: Batch, what: CellOutput): Promise<Float32Array>;
  /** Rows of the input embedding table (native only). */
  geneTable?(ids: number[]): Float32Array;
  close(): Promise<void>;
  bundle?: ModelBundle;
  runner?: OnnxRunner;
}

export function resolveRuntime(model: string, asked?: string): RuntimeKind {
  const isOnnx = /\.onnx$/i.test(model);
  if (asked === undefined) return isOnnx ? "onnx" : "native";
  if (!RUNTIMES.includes(asked as RuntimeKind)) throw usageError(`--runtime must be native or onnx (got ${asked})`);
  if (asked === "native" && isOnnx) throw usageError(`--runtime native needs a gm model folder; ${model} is an .onnx file (use --runtime onnx)`);
  if (asked === "onnx" && !isOnnx) throw usageError(`--runtime onnx needs an .onnx file; export the model with gm export --model ${model} --onnx model.onnx`);
  return asked as RuntimeKind;
}

/** Opens a model for inference on the runtime its location or `runtime` asks for. */
export async function openCellModel(location: string, o: CellModelOptions = {}): Promise<CellModel> {
  return resolveRuntime(location, o.runtime) === "onnx" ? await openOnnx(location, o) : openNative(location, o);
}

function openNative(location: string, o: CellModelOptions): CellModel {
  if (o.threads !== undefined) loadNative().setThreads(o.threads);
  const bundle = loadModelBundle(location, { medians: o.medians });
  const model = bundle.model;
  const d = model.config.d_model;
  return {
    runtime: "native",
    location: bundle.dir,
    vocab: bundle.vocab,
    medians: () => bundleMedians(bundle),
    dModel: d,
    vocabSize: model.config.vocab_size,
    padId: model.config.pad_token_id,
    clsId: bundle.clsId,
    classes: bundle.head ? bundle.labels?.classes : undefined,
    fineTuned: bundle.clsId !== undefined && !!bundle.head,
    pipeline: 0,
    bundle,
    async run(b, what) {
      const { hidden } = model.forward(b);
      if (what === "hidden") return hidden;
      if (what === "mean") {
        const mean = new Float32Array(b.batch * d);
        for (let r = 0; r < b.batch; r++) {
          const n = b.lengths[r];
          for (let t = 0; t < n; t++) for (let c = 0; c < d; c++) mean[r * d + c] += hidden[(r * b.length + t) * d + c];
          for (let c = 0; c < d; c++) mean[r * d + c] /= Math.max(1, n);
        }
        return mean;
      }
      const cls = clsStates(hidden, b, d);
      if (what === "cls") return cls;
      if (!bundle.head) throw inputError(bundle.dir, "has no classifier head");
      return softmaxRows(bundle.head.forward(cls, b.batch, false), b.batch, bundle.head.config.n_classes);
    },
    geneTable: (ids) => model.geneEmbeddings(ids),
    close: async () => undefined,
  };
}

/** CLS state of each row of a padded batch: position 0 of the post-norm hidden states. */
export function clsStates(hidden: Float32Array, b: Batch, d: number): Float32Array {
  const x = new Float32Array(b.batch * d);
  for (let r = 0; r < b.batch; r++) x.set(hidden.subarray(r * b.length * d, r * b.length * d + d), r * d);
  return x;
}

/** `buf`, or a copy twice its size while it holds fewer than `rows` rows of `width` values. */
export function withRoom(buf: Float32Array, rows: number, width: number): Float32Array {
  if (rows * width <= buf.length) return buf;
  const bigger = new Float32Array(Math.max(rows * width, 2 * buf.length));
  bigger.set(buf);
  return bigger;
}

/** Row-wise softmax (in double) of logits [rows, C]. */
export function softmaxRows(logits: Float32Array, rows: number, C: number): Float32Array {
  const p = new Float32Array(rows * C);
  for (let r = 0; r < rows; r++) {
    let mx = -Infinity;
    for (let c = 0; c < C; c++) mx = Math.max(mx, logits[r * C + c]);
    let z = 0;
    for (let c = 0; c < C; c++) z += Math.exp(logits[r * C + c] - mx);
    for (let c = 0; c < C; c++) p[r * C + c] = Math.exp(logits[r * C + c] - mx) / z;
  }
  return p;
}

async function openOnnx(file: string, o: CellModelOptions): Promise<CellModel> {
  const { OnnxRunner, OUTPUTS } = await import("@gm/onnx");
  const runner = await OnnxRunner.open(file, { threads: o.threads, workers: o.workers, provider: o.provider });
  const info = runner.info;
  const name: Record<CellOutput, string> = { hidden: OUTPUTS.hidden, cls: OUTPUTS.cls, mean: OUTPUTS.mean, probabilities: OUTPUTS.classProbabilities };
  const canClassify = info.outputs.includes(OUTPUTS.classProbabilities) && !!info.labels;
  let medians: Map<string, number> | undefined;
  return {
    runtime: "onnx",
    location: file,
    vocab: info.vocab,
    medians: () => {
      if (o.medians) return (medians ??= loadMedians(o.medians));
      if (info.medians) return info.medians;
      throw inputError(file, `has no gm.gene_medians metadata (its model folder had no gene_medians.json); pass --medians FILE (the gene_medians.json gm preprocess wrote for the pretraining data)`);
    },
    dModel: info.config.d_model,
    vocabSize: info.config.vocab_size,
    padId: info.config.pad_token_id,
    clsId: info.clsId,
    classes: canClassify ? info.labels!.classes : undefined,
    // A fine-tuned model's vocabulary ends in [CLS]; the head may or may not have been exported.
    fineTuned: info.clsId !== undefined,
    pipeline: runner.workers,
    runner,
    async run(b, what) {
      const r = await runner.run({ ids: b.tokens, lengths: b.lengths, batch: b.batch, length: b.length }, [name[what]]);
      return r[name[what]].data;
    },
    close: () => runner.close(),
  };
}

/**
 * Runs batches with up to `depth` of them waiting to be consumed, consuming them in submission
 * order (so outputs are written in input order and floating-point sums do not depend on timing).
 */
export class BatchPipeline<M> {
  private readonly queue: { result: Promise<Float32Array>; meta: M }[] = [];
  constructor(
    private readonly depth: number,
    private readonly consume: (result: Float32Array, meta: M) => void,
  ) {}

  /** Queues a batch's result; waits for (and consumes) the oldest ones beyond the depth. */
  async push(result: Promise<Float32Array>, meta: M): Promise<void> {
    result.catch(() => undefined); // awaited below; not an unhandled rejection while queued
    this.queue.push({ result, meta });
    while (this.queue.length > this.depth) await this.next();
  }

  /** Consumes every queued batch. */
  async finish(): Promise<void> {
    while (this.queue.length) await this.next();
  }

  private async next(): Promise<void> {
    const x = this.queue.shift()!;
    this.consume(await x.result, x.meta);
  }
}
