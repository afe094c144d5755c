// The fine-tuning head (native/src/classifier.cpp) against torch (scripts/reference/make_head_fixture.py):
// training-mode logits, weighted CE loss, every parameter gradient and d loss / d x, the running
// statistics after the step, eval-mode logits, and three Adam steps. Plus save/load and the errors.
import { describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { ClassifierHead, GeneMamba, readHeader, readTensor } from "@gm/engine";
import { repoRoot, tmpDir } from "../../../tests/helpers/paths.js";

const file = path.join(repoRoot, "tests/fixtures/head/classifier-head.safetensors");
const header = readHeader(file);
const cfg = JSON.parse(header.metadata.config) as { d_in: number; n_classes: number; hidden: number; n_layers: number; dropout: number; negative_slope: number };
const get = (name: string) => readTensor(file, header, name) as Float32Array;

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / (scale || 1);
}

const beforeBatchNorm = (name: string) => /layers\.\d+\.linear\.bias$/.test(name);

function loaded(): ClassifierHead {
  const h = ClassifierHead.create(cfg, 0);
  for (const t of h.tensors) h.params.set(get(t.name), t.offset);
  return h;
}

describe("classifier head vs torch", () => {
  const x = get("x");
  const targets = readTensor(file, header, "targets") as Int32Array;
  const B = targets.length;

  it("matches logits, loss, gradients and running statistics in training mode", () => {
    const h = loaded();
    const logits = h.forward(x, B, true, 1);
    expect(relErr(logits, get("logits"))).toBeLessThan(1e-5);
    h.zeroGrad();
    const loss = h.loss(targets, { classWeight: get("class_weight"), backward: true });
    expect(Math.abs(loss - get("loss")[0])).toBeLessThan(1e-5);
    for (const t of h.tensors) {
      const g = h.grads.subarray(t.offset, t.offset + t.numel);
      // A bias right before BatchNorm has zero gradient in exact arithmetic (BN removes the mean):
      // both sides hold rounding noise, so compare absolutely.
      if (beforeBatchNorm(t.name)) expect(Math.max(...g.map(Math.abs), ...get(`grad.${t.name}`).map(Math.abs)), t.name).toBeLessThan(1e-5);
      else expect(relErr(g, get(`grad.${t.name}`)), t.name).toBeLessThan(1e-4);
    }
    expect(relErr(h.inputGrad(), get("grad.x"))).toBeLessThan(1e-4);
    for (const t of h.runningTensors) expect(relErr(h.running.subarray(t.offset, t.offset + t.numel), get(`after.${t.name}`)), t.name).toBeLessThan(1e-5);
    // eval mode uses the running statistics just updated
    expect(relErr(h.forward(x, B, false), get("eval_logits"))).toBeLessThan(1e-5);
    const p = h.probabilities();
    for (let b = 0; b < B; b++) expect(p.subarray(b * cfg.n_classes, (b + 1) * cfg.n_classes).reduce((s, v) => s + v, 0)).toBeCloseTo(1, 5);
  });

  it("three Adam steps give torch's weights", () => {
    const h = loaded();
    for (let step = 1; step <= 3; step++) {
      h.forward(x, B, true, step);
      h.zeroGrad();
      h.loss(targets, { backward: true });
      h.optimizerStep({ lr: 1e-2, step });
    }
    // (Adam turns the pre-BatchNorm biases' rounding-noise gradients into full-size steps of random
    // sign on both sides; those tensors do not affect the output and are skipped.)
    for (const t of h.tensors.filter((t) => !beforeBatchNorm(t.name)))
      expect(relErr(h.params.subarray(t.offset, t.offset + t.numel), get(`adam3.${t.name}`)), t.name).toBeLessThan(1e-4);
  });

  it("dropout is deterministic per seed, differs across seeds and is off in eval mode", () => {
    const h = ClassifierHead.create({ d_in: cfg.d_in, n_classes: 3, hidden: 32 }, 5);
    const a = h.forward(x, B, true, 11).slice();
    const b = h.forward(x, B, true, 11).slice();
    const c = h.forward(x, B, true, 12).slice();
    expect(relErr(a, b)).toBeLessThan(1e-6); // running stats moved, but batch statistics are used in training mode
    expect(relErr(a, c)).toBeGreaterThan(1e-3);
    expect(relErr(h.forward(x, B, false, 1), h.forward(x, B, false, 2))).toBe(0);
  });

  it("saves and loads weights and running statistics", () => {
    const h = loaded();
    h.forward(x, B, true, 3);
    const f = path.join(tmpDir("head"), "classifier.safetensors");
    h.save(f);
    const back = ClassifierHead.load(f);
    expect(back.config).toEqual(h.config);
    expect(Array.from(back.params)).toEqual(Array.from(h.params));
    expect(Array.from(back.running)).toEqual(Array.from(h.running));
    expect(Array.from(back.forward(x, B, false))).toEqual(Array.from(h.forward(x, B, false)));
  });

  it("rejects bad input with clear errors", () => {
    expect(() => ClassifierHead.create({ d_in: 4, n_classes: 1 })).toThrow(/at least 2 classes/);
    const h = ClassifierHead.create({ d_in: 4, n_classes: 3, hidden: 8 });
    expect(() => h.forward(new Float32Array(4), 1, true)).toThrow(/at least 2 cells/);
    expect(() => h.forward(new Float32Array(7), 2, false)).toThrow(/expected batch x d_in/);
    h.forward(new Float32Array(8), 2, true);
    expect(() => h.loss(Int32Array.from([0, 3]))).toThrow(/out of range/);
    expect(() => ClassifierHead.load(path.join(tmpDir("head-missing"), "none.safetensors"))).toThrow(/no classifier head/);
    expect(fs.existsSync(file)).toBe(true);
  });
});

describe("adding [CLS] to a pretrained model", () => {
  it("appends mean rows to the embedding and LM head and keeps the bias", () => {
    const m = GeneMamba.create({ vocab_size: 10, d_model: 8, n_layer: 1, d_state: 8, headdim: 8 }, 3);
    const bias = m.tensor("lm_head.bias");
    bias.set(bias.map((_, i) => i * 0.1));
    const e = m.withAddedTokens(1);
    expect(e.config.vocab_size).toBe(11);
    const emb = m.tensor("embeddings.weight"), emb2 = e.tensor("embeddings.weight");
    expect(Array.from(emb2.subarray(0, 80))).toEqual(Array.from(emb));
    for (let c = 0; c < 8; c++) {
      let s = 0;
      for (let r = 0; r < 10; r++) s += emb[r * 8 + c];
      expect(emb2[80 + c]).toBeCloseTo(s / 10, 6);
    }
    const b2 = e.tensor("lm_head.bias");
    expect(Array.from(b2.subarray(0, 10))).toEqual(Array.from(bias));
    expect(b2[10]).toBeCloseTo(0.45, 6);
    expect(Array.from(e.tensor("norm_f.weight"))).toEqual(Array.from(m.tensor("norm_f.weight")));
  });
});
