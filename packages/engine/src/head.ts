/**
 * The fine-tuning head: GeneMamba's Classifier(d, C, hidden=512, num_layers=4), i.e. three blocks of
 * Linear -> BatchNorm1d -> Dropout(0.5) -> LeakyReLU(0.1) and a final Linear(512, C). Forward and
 * backward run in the native engine (native/src/classifier.cpp) next to the backbone; this class
 * only moves tensors in and out and saves them as classifier.safetensors (running statistics
 * included, under torch's BatchNorm buffer names).
 */
import * as fs from "node:fs";
import { inputError, writeJsonAtomic } from "@gm/core";
import { loadNative, type NativeHead, type NativeTensorInfo } from "./native.js";
import { readHeader, readTensorInto, writeSafetensors } from "./safetensors.js";
import { clippedAdamwStep, type AdamWOptions } from "./model.js";

export interface HeadConfig {
  d_in: number;
  n_classes: number;
  hidden: number;
  n_layers: number;
  dropout: number;
  negative_slope: number;
}

export const HEAD_DEFAULTS = { hidden: 512, n_layers: 4, dropout: 0.5, negative_slope: 0.1 };

export class ClassifierHead {
  readonly config: HeadConfig;
  readonly tensors: NativeTensorInfo[];
  readonly runningTensors: NativeTensorInfo[];
  private readonly head: NativeHead;

  private constructor(config: HeadConfig) {
    this.config = config;
    this.head = new (loadNative().Head)(config);
    this.tensors = this.head.tensorTable();
    this.runningTensors = this.head.bufferTable();
  }

  static create(config: Pick<HeadConfig, "d_in" | "n_classes"> & Partial<HeadConfig>, seed = 0): ClassifierHead {
    const h = new ClassifierHead({ ...HEAD_DEFAULTS, ...config });
    h.head.init(seed);
    return h;
  }

  /** Loads classifier.safetensors written by `save` (its config is in the file's metadata). */
  static load(file: string): ClassifierHead {
    if (!fs.existsSync(file)) throw inputError(file, "no classifier head here; is this a gm finetune checkpoint?");
    const header = readHeader(file);
    if (!header.metadata.head_config) throw inputError(file, "has no head_config metadata; not a gm classifier head");
    const h = new ClassifierHead(JSON.parse(header.metadata.head_config) as HeadConfig);
    const fd = fs.openSync(file, "r");
    try {
      for (const [tables, buf] of [
        [h.tensors, h.head.buffer("params")],
        [h.runningTensors, h.head.buffer("running")],
      ] as const) {
        for (const t of tables) {
          const e = header.tensors.get(t.name);
          if (!e || e.shape.join(",") !== t.shape.join(",")) throw inputError(file, `tensor ${t.name} is missing or has the wrong shape`);
          readTensorInto(file, header, e, buf.subarray(t.offset, t.offset + t.numel), fd);
        }
      }
    } finally {
      fs.closeSync(fd);
    }
    return h;
  }

  save(file: string, metadata: Record<string, string> = {}): void {
    const params = this.head.buffer("params");
    const running = this.head.buffer("running");
    writeSafetensors(
      file,
      [
        ...this.tensors.map((t) => ({ name: t.name, shape: t.shape, data: params.subarray(t.offset, t.offset + t.numel) })),
        ...this.runningTensors.map((t) => ({ name: t.name, shape: t.shape, data: running.subarray(t.offset, t.offset + t.numel) })),
      ],
      { format: "pt", head_config: JSON.stringify(this.config), ...metadata },
    );
  }

  /** Writes the head's config as JSON (for people reading a checkpoint folder). */
  saveConfig(file: string, extra: Record<string, unknown> = {}): void {
    writeJsonAtomic(file, { ...this.config, ...extra });
  }

  get params(): Float32Array {
    return this.head.buffer("params");
  }
  get grads(): Float32Array {
    return this.head.buffer("grads");
  }
  get running(): Float32Array {
    return this.head.buffer("running");
  }
  optimizerState(): { m: Float32Array; v: Float32Array } {
    return { m: this.head.buffer("adam_m"), v: this.head.buffer("adam_v") };
  }

  /**
   * Logits [batch, C] for cell vectors x [batch, d_in]. train: batch statistics (the running ones
   * move) and dropout drawn from `seed`; otherwise running statistics and no dropout.
   */
  forward(x: Float32Array, batch: number, train: boolean, seed = 0): Float32Array {
    return this.head.forward(x, batch, train, seed);
  }

  /**
   * Cross-entropy of the last forward (torch CrossEntropyLoss, optional class weights). With
   * backward, gradients of scale * loss accumulate and `inputGrad()` holds d loss / d x.
   */
  loss(targets: Int32Array, opts: { classWeight?: Float32Array; scale?: number; backward?: boolean } = {}): number {
    return this.head.loss(targets, opts.classWeight ?? null, opts.scale ?? 1, opts.backward ?? false);
  }

  /** Backward from given dlogits [batch, C] of the last (training-mode) forward. */
  backward(dlogits: Float32Array): void {
    this.head.backward(dlogits);
  }

  inputGrad(): Float32Array {
    return this.head.dx();
  }
  probabilities(): Float32Array {
    return this.head.probs();
  }
  zeroGrad(): void {
    this.head.zeroGrad();
  }
  gradNorm(): number {
    return this.head.gradNorm();
  }
  /** One AdamW step (clipping folded in through gradNorm/maxGradNorm, as GeneMamba.optimizerStep). */
  optimizerStep(o: AdamWOptions): number {
    return clippedAdamwStep(this.head, o);
  }
}
