/**
 * GeneMamba on the native engine: create from a config and seed, load and save safetensors
 * checkpoints under the reference PyTorch state-dict names, forward, loss + backward, AdamW,
 * cell embeddings (CLS or mean pooling) and gene embeddings.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { ExitCode, GmError, inputError, writeJsonAtomic } from "@gm/core";
import { type ModelConfig, type ModelConfigInput, resolveConfig } from "./config.js";
import { loadNative, type GpuOptions, type NativeEngine, type NativeGpuEngine, type NativeTensorInfo } from "./native.js";
import { readHeader, readTensorInto, writeSafetensors } from "./safetensors.js";

/** A right-padded batch: tokens [batch, length] row-major, each row's valid prefix length. */
export interface Batch {
  tokens: Int32Array;
  lengths: Int32Array;
  batch: number;
  length: number;
}

/** targets [batch, length]: a token id where a loss is taken, -100 elsewhere (and at every pad). */
export interface TargetBatch extends Batch {
  targets: Int32Array;
}

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay, applied to matrices only (not embeddings, norms, biases, A_log, D, dt_bias). */
  weightDecay?: number;
  /** Global gradient-norm clip (torch.nn.utils.clip_grad_norm_ semantics); 0 = off. */
  maxGradNorm?: number;
  /** 1-based optimizer step (bias correction). */
  step: number;
  /** The gradients' global norm when the caller already computed it (skips a pass over the gradients). */
  gradNorm?: number;
}

export type Pooling = "cls" | "mean";

/** Where the model lives: the CPU engine (default), or one GPU through the CUDA backend. */
export type Device = { kind: "cpu" } | ({ kind: "cuda" } & GpuOptions);

type BufferName = "params" | "grads" | "adam_m" | "adam_v";

/** The addon's GPU engine, or one clear error naming why this build has none. */
function gpuEngine(config: ModelConfig, d: GpuOptions): NativeGpuEngine {
  const native = loadNative();
  if (!native.GpuEngine) {
    const why = native.buildInfo?.().cuda.reason ?? "the addon predates the CUDA backend; rebuild with npm run setup";
    throw new GmError(`this gm build has no CUDA backend (${why}); see gm doctor, or train on CPU`, ExitCode.usage);
  }
  return new native.GpuEngine(config, { device: d.device ?? 0, dtype: d.dtype ?? "bf16", ...(d.scan ? { scan: d.scan } : {}) });
}

export const IGNORE_INDEX = -100;

/** Pads token sequences on the right into a Batch (truncating to maxLength when given). */
export function padBatch(seqs: ArrayLike<number>[], padId = 1, maxLength?: number): Batch {
  const length = Math.max(1, ...seqs.map((s) => Math.min(s.length, maxLength ?? Infinity)));
  const tokens = new Int32Array(seqs.length * length).fill(padId);
  const lengths = new Int32Array(seqs.length);
  seqs.forEach((s, b) => {
    const n = Math.min(s.length, length);
    lengths[b] = n;
    for (let t = 0; t < n; t++) tokens[b * length + t] = s[t];
  });
  return { tokens, lengths, batch: seqs.length, length };
}

/**
 * Global-norm clipping (torch clip_grad_norm_ semantics, folded into AdamW's gradient scale) plus one
 * AdamW step on a native object's flat buffers (the backbone or the fine-tuning head); returns the
 * pre-clip norm.
 */
export function clippedAdamwStep(target: Pick<NativeEngine, "gradNorm" | "adamw">, o: AdamWOptions): number {
  const norm = o.gradNorm ?? target.gradNorm();
  const max = o.maxGradNorm ?? 0;
  const scale = max > 0 ? Math.min(1, max / (norm + 1e-6)) : 1;
  target.adamw({ lr: o.lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.weightDecay ?? 0, step: o.step, gradScale: scale });
  return norm;
}

export class GeneMamba {
  readonly config: ModelConfig;
  readonly tensors: NativeTensorInfo[];
  readonly device: Device;
  private readonly engine: NativeEngine;
  /** The same object as engine when the model is on a GPU: its buffers are host mirrors. */
  private readonly gpu?: NativeGpuEngine;
  private readonly byName: Map<string, NativeTensorInfo>;
  private last?: Batch;

  private constructor(config: ModelConfig, device: Device = { kind: "cpu" }) {
    this.config = config;
    this.device = device;
    if (device.kind === "cuda") this.engine = this.gpu = gpuEngine(config, device);
    else this.engine = new (loadNative().Engine)(config);
    this.tensors = this.engine.tensorTable();
    this.byName = new Map(this.tensors.map((t) => [t.name, t]));
  }

  /**
   * A freshly initialised model (Mamba-2 / reference initialisation, deterministic per seed; on a
   * GPU the same weights, initialised on the host and uploaded).
   */
  static create(config: ModelConfigInput | ModelConfig, seed = 0, device?: Device): GeneMamba {
    const m = new GeneMamba(resolveConfig(config as ModelConfigInput), device);
    m.engine.init(seed);
    return m;
  }

  /**
   * Loads a checkpoint: a folder with model.safetensors and config.json (gm's or the reference's),
   * or a .safetensors file with `config` given or stored in its metadata. A reference checkpoint's
   * combine mode is inferred from its tensors (mamba_mixer.aggr.* present: gate; absent: mean).
   */
  static load(location: string, config?: ModelConfigInput, device?: Device): GeneMamba {
    const file = fs.existsSync(location) && fs.statSync(location).isDirectory() ? path.join(location, "model.safetensors") : location;
    const header = readHeader(file);
    let input = config;
    if (!input) {
      const cfgFile = path.join(path.dirname(file), "config.json");
      if (fs.existsSync(cfgFile)) input = JSON.parse(fs.readFileSync(cfgFile, "utf8")) as ModelConfigInput;
      else if (header.metadata.config) input = JSON.parse(header.metadata.config) as ModelConfigInput;
      else throw inputError(file, "no config.json next to the checkpoint and no config in its metadata; pass the model config");
    }
    input = { ...input };
    const hasAggr = header.tensors.has("mamba_mixer.aggr.weight");
    if (!input.combine) input.combine = hasAggr ? "gate" : "mean";
    if (!input.mixer) input.mixer = [...header.tensors.keys()].some((k) => k.endsWith(".x_proj.weight")) ? "mamba1" : "mamba2";
    const m = new GeneMamba(resolveConfig(input, file), device);
    m.loadWeights(file, header);
    return m;
  }

  private loadWeights(file: string, header = readHeader(file)): void {
    const missing = this.tensors.filter((t) => !header.tensors.has(t.name)).map((t) => t.name);
    if (missing.length)
      throw inputError(file, `missing tensor(s) ${missing.slice(0, 3).join(", ")}${missing.length > 3 ? ` and ${missing.length - 3} more` : ""}; the checkpoint does not match the config (${this.config.mixer}, ${this.config.combine}, ${this.config.n_layer} layers)`);
    const params = this.engine.buffer("params");
    const fd = fs.openSync(file, "r");
    try {
      for (const t of this.tensors) {
        const e = header.tensors.get(t.name)!;
        const numel = e.shape.reduce((a, b) => a * b, 1);
        if (numel !== t.numel || e.shape.join(",") !== t.shape.join(","))
          throw inputError(file, `tensor ${t.name} has shape [${e.shape}], the config needs [${t.shape}]`);
        const view = params.subarray(t.offset, t.offset + t.numel);
        readTensorInto(file, header, e, view, fd);
        for (let i = 0; i < view.length; i++)
          if (!Number.isFinite(view[i])) throw inputError(file, `tensor ${t.name} contains NaN or Inf at index ${i}; the checkpoint is corrupt`);
      }
    } finally {
      fs.closeSync(fd);
    }
    this.commitParams();
  }

  // On a GPU the buffers are host mirrors: pull before reading them, commit after writing them.
  private pull(which: BufferName): void {
    this.gpu?.download(which);
  }
  /** After writing into `params` (or a `tensor` view of it): sends the weights to the GPU; no-op on CPU. */
  commitParams(): void {
    this.gpu?.upload("params");
  }
  /** After writing into `grads` (e.g. a host-side all-reduce): sends them to the GPU; no-op on CPU. */
  commitGrads(): void {
    this.gpu?.upload("grads");
  }
  /** After writing into `optimizerState()`'s moments: sends them to the GPU; no-op on CPU. */
  commitOptimizerState(): void {
    this.gpu?.upload("adam_m");
  }

  /**
   * A copy of this model with `count` tokens appended to the vocabulary (fine-tuning's [CLS]): each
   * new embedding and LM-head row is the mean of the existing rows, and the LM-head bias is kept with
   * the mean appended (the reference re-initialises the whole bias, a bug we do not copy).
   */
  withAddedTokens(count: number): GeneMamba {
    if (!Number.isInteger(count) || count < 1) throw new Error("withAddedTokens: count must be a positive integer");
    const V = this.config.vocab_size;
    const d = this.config.d_model;
    const out = new GeneMamba({ ...this.config, vocab_size: V + count });
    for (const t of this.tensors) {
      const src = this.tensor(t.name);
      const dst = out.tensor(t.name);
      if (dst.length === src.length) {
        dst.set(src);
        continue;
      }
      const width = t.name === "lm_head.bias" ? 1 : d;
      dst.set(src);
      const mean = new Float64Array(width);
      for (let r = 0; r < V; r++) for (let c = 0; c < width; c++) mean[c] += src[r * width + c];
      for (let k = 0; k < count; k++) for (let c = 0; c < width; c++) dst[(V + k) * width + c] = mean[c] / V;
    }
    return out;
  }

  /** Saves model.safetensors (reference tensor names, float32) and config.json into a folder. */
  save(dir: string, metadata: Record<string, string> = {}): void {
    const params = this.params;
    writeSafetensors(
      path.join(dir, "model.safetensors"),
      this.tensors.map((t) => ({ name: t.name, shape: t.shape, data: params.subarray(t.offset, t.offset + t.numel) })),
      { format: "pt", ...metadata },
    );
    writeJsonAtomic(path.join(dir, "config.json"), this.config);
  }

  get numParameters(): number {
    const t = this.tensors[this.tensors.length - 1];
    return t.offset + t.numel;
  }

  /**
   * Zero-copy views of the flat buffers (the pretrain loop all-reduces grads through these). On a
   * GPU each read downloads into the host mirror; writes reach the device with commitParams /
   * commitGrads / commitOptimizerState.
   */
  get params(): Float32Array {
    this.pull("params");
    return this.engine.buffer("params");
  }
  get grads(): Float32Array {
    this.pull("grads");
    return this.engine.buffer("grads");
  }
  optimizerState(): { m: Float32Array; v: Float32Array } {
    this.pull("adam_m");
    return { m: this.engine.buffer("adam_m"), v: this.engine.buffer("adam_v") };
  }

  /** One tensor of the parameter (or gradient) buffer by its reference name, as a view. */
  tensor(name: string, which: "params" | "grads" = "params"): Float32Array {
    const t = this.byName.get(name);
    if (!t) throw new Error(`no tensor named ${name}`);
    this.pull(which);
    return this.engine.buffer(which).subarray(t.offset, t.offset + t.numel);
  }

  /**
   * Data parallel on GPUs through NCCL: joins the group (every rank calls this with rank 0's
   * `ncclUniqueId()`); afterwards reduceNextBackward() before a step's last backward averages the
   * gradients across ranks, overlapped with that backward, and finishReduction() waits for it.
   */
  joinNccl(uniqueId: Uint8Array, rank: number, worldSize: number, timeoutSeconds = 600): void {
    if (!this.gpu) throw new Error("joinNccl: the model is on the CPU");
    this.gpu.joinNccl(uniqueId, rank, worldSize, timeoutSeconds);
  }
  reduceNextBackward(): void {
    this.gpu!.reduceNextBackward();
  }
  finishReduction(): void {
    this.gpu!.finishReduction();
  }
  /** Device bytes of the parameters, gradients and AdamW moments (GPU), and of a batch's activations. */
  gpuMemory(batch: number, length: number): { params: number; activations: number } | undefined {
    return this.gpu ? { params: this.gpu.paramBytes(), activations: this.gpu.activationBytesFor(batch, length) } : undefined;
  }

  private run(b: Batch): void {
    this.engine.forward(b.tokens, b.lengths, b.batch, b.length);
    this.last = b;
  }

  /** Forward pass: post-norm hidden states [batch, length, d] and, when asked, logits [batch, length, V]. */
  forward(b: Batch, opts: { logits?: boolean } = {}): { hidden: Float32Array; logits?: Float32Array } {
    this.run(b);
    return { hidden: this.engine.hidden(), logits: opts.logits ? this.engine.logits() : undefined };
  }

  /** The most likely token at every position [batch, length] (argmax of the LM head, computed in row blocks). */
  predictTokens(b: Batch): Int32Array {
    this.run(b);
    return this.engine.argmaxLogits();
  }

  /** Mean cross-entropy over the targets (no gradient). */
  evaluate(b: TargetBatch): { loss: number; count: number } {
    this.run(b);
    return this.engine.loss(b.targets, 1, false);
  }

  zeroGrad(): void {
    this.engine.zeroGrad();
  }

  /**
   * Forward + backward: accumulates the gradient of scale * (mean loss over the batch's targets)
   * into grads (call zeroGrad first; accumulation across micro-batches is the caller's choice of scale).
   * `hiddenGrad` adds any other loss through its gradient with respect to the post-norm hidden
   * states [batch, length, d] (e.g. computed from `forward`'s hidden): one backward pass for both.
   */
  forwardBackward(b: TargetBatch, scale = 1, extra: { hiddenGrad?: Float32Array } = {}): { loss: number; count: number } {
    this.run(b);
    return this.engine.loss(b.targets, scale, true, extra.hiddenGrad);
  }

  /**
   * LM-head loss + backward on the last `forward` call (its batch must carry these targets): for
   * objectives that first read the forward's hidden states (InfoNCE) and then add their gradient.
   */
  backward(targets: Int32Array, scale = 1, extra: { hiddenGrad?: Float32Array } = {}): { loss: number; count: number } {
    if (!this.last) throw new Error("backward: call forward first");
    return this.engine.loss(targets, scale, true, extra.hiddenGrad);
  }

  /**
   * Backward of a loss defined on the hidden states of the last `forward` call (no LM-head loss):
   * accumulates into grads. The batch must be the one `forward` ran on.
   */
  backwardFromHidden(hiddenGrad: Float32Array): void {
    const b = this.last;
    if (!b) throw new Error("backwardFromHidden: call forward first");
    this.engine.loss(new Int32Array(b.tokens.length).fill(IGNORE_INDEX), 1, true, hiddenGrad);
  }

  gradNorm(): number {
    return this.engine.gradNorm();
  }

  /** Clips (global norm) and applies one AdamW step to the accumulated gradients; returns the pre-clip norm. */
  optimizerStep(o: AdamWOptions): number {
    return clippedAdamwStep(this.engine, o);
  }

  /** zeroGrad + forwardBackward + optimizerStep. */
  trainStep(b: TargetBatch, o: AdamWOptions): { loss: number; count: number; gradNorm: number } {
    this.zeroGrad();
    const r = this.forwardBackward(b);
    const gradNorm = this.optimizerStep(o);
    return { ...r, gradNorm };
  }

  /** Cell embeddings [batch, d] from the post-norm hidden states: position 0 (CLS) or the mean over valid positions. */
  cellEmbeddings(b: Batch, pooling: Pooling = "mean"): Float32Array {
    const { hidden } = this.forward(b);
    const d = this.config.d_model;
    const out = new Float32Array(b.batch * d);
    for (let r = 0; r < b.batch; r++) {
      const n = b.lengths[r];
      if (n === 0) continue;
      if (pooling === "cls") {
        out.set(hidden.subarray(r * b.length * d, r * b.length * d + d), r * d);
        continue;
      }
      for (let t = 0; t < n; t++) {
        const base = (r * b.length + t) * d;
        for (let c = 0; c < d; c++) out[r * d + c] += hidden[base + c];
      }
      for (let c = 0; c < d; c++) out[r * d + c] /= n;
    }
    return out;
  }

  /** Input gene embeddings (rows of embeddings.weight) for the given token ids, [ids.length, d]. */
  geneEmbeddings(ids: ArrayLike<number>): Float32Array {
    const table = this.tensor("embeddings.weight");
    const d = this.config.d_model;
    const out = new Float32Array(ids.length * d);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= this.config.vocab_size) throw new Error(`gene embedding: token id ${id} is outside the vocabulary`);
      out.set(table.subarray(id * d, id * d + d), i * d);
    }
    return out;
  }

  /** Bytes held for activations by the last forward (what a batch of this shape costs). */
  get activationBytes(): number {
    return this.engine.activationBytes();
  }
}
