import { describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { GeneMamba, IGNORE_INDEX, padBatch, parameterCount, loadModelConfig, readHeader, type ModelConfigInput, type TargetBatch } from "@gm/engine";
import { tmpDir } from "../../../tests/helpers/paths.js";

const tiny: ModelConfigInput = { vocab_size: 40, d_model: 32, n_layer: 2, headdim: 16, d_state: 8, chunk_size: 3 };
const tiny1: ModelConfigInput = { ...tiny, mixer: "mamba1" };

function lcg(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}
function randomSeqs(lengths: number[], V: number, seed = 1): Int32Array[] {
  const r = lcg(seed);
  return lengths.map((n) => Int32Array.from({ length: n }, () => 2 + Math.floor(r() * (V - 2))));
}
function withTargets(b: ReturnType<typeof padBatch>, V: number, seed = 2): TargetBatch {
  const r = lcg(seed);
  const targets = new Int32Array(b.tokens.length).fill(IGNORE_INDEX);
  for (let i = 0; i < b.batch; i++) for (let t = 0; t < b.lengths[i]; t++) if (r() < 0.5) targets[i * b.length + t] = 2 + Math.floor(r() * (V - 2));
  return { ...b, targets };
}

describe("GeneMamba engine", () => {
  for (const cfg of [tiny, tiny1]) {
    for (const combine of ["gate", "mean", "concat", "unidirectional"] as const) {
      it(`padding invariance (${cfg.mixer ?? "mamba2"}, ${combine}): a padded batch gives each sequence's unpadded outputs`, () => {
        const m = GeneMamba.create({ ...cfg, combine }, 3);
        const seqs = randomSeqs([13, 7, 1, 10], 40);
        const b = padBatch(seqs);
        const { hidden } = m.forward(b);
        const d = m.config.d_model;
        for (let i = 0; i < seqs.length; i++) {
          const alone = m.forward(padBatch([seqs[i]])).hidden;
          const n = seqs[i].length;
          const padded = hidden.subarray(i * b.length * d, (i * b.length + n) * d);
          let diff = 0;
          for (let k = 0; k < n * d; k++) diff = Math.max(diff, Math.abs(padded[k] - alone[k]));
          expect(diff).toBeLessThan(1e-5);
        }
      });
    }
  }

  it("checkpoint round trip: save, load, identical logits (bitwise) and the reference tensor names", () => {
    const m = GeneMamba.create(tiny, 11);
    const b = padBatch(randomSeqs([9, 5], 40));
    const before = m.forward(b, { logits: true }).logits!;
    const dir = tmpDir("gm-ckpt-");
    m.save(dir);
    const h = readHeader(path.join(dir, "model.safetensors"));
    expect([...h.tensors.keys()]).toEqual(m.tensors.map((t) => t.name));
    expect(h.tensors.get("mamba_mixer.layers.1.mamba.in_proj.weight")!.shape).toEqual([2 * 64 + 2 * 8 + 4, 32]);
    expect(JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8")).combine).toBe("gate");
    const back = GeneMamba.load(dir);
    expect(Buffer.from(back.forward(b, { logits: true }).logits!.buffer).equals(Buffer.from(before.buffer))).toBe(true);
    expect(fs.readdirSync(dir).filter((f) => f.includes(".tmp-"))).toEqual([]);
  });

  it("determinism: same seed and data give bitwise identical losses over 20 AdamW steps", () => {
    const run = () => {
      const m = GeneMamba.create(tiny, 5);
      const b = withTargets(padBatch(randomSeqs([12, 8, 3], 40)), 40);
      const losses: number[] = [];
      for (let s = 1; s <= 20; s++) losses.push(m.trainStep(b, { lr: 3e-3, weightDecay: 0.01, maxGradNorm: 1, step: s }).loss);
      return losses;
    };
    const a = run(), b = run();
    expect(a).toEqual(b);
    expect(a[19]).toBeLessThan(a[0]);
  });

  it("different seeds give different weights; the init follows the reference recipe", () => {
    const a = GeneMamba.create(tiny, 1), b = GeneMamba.create(tiny, 2);
    expect(a.params.slice(0, 100)).not.toEqual(b.params.slice(0, 100));
    const D = a.tensor("mamba_mixer.layers.0.mamba.D"), A = a.tensor("mamba_mixer.layers.0.mamba.A_log");
    expect([...D]).toEqual([1, 1, 1, 1]);
    for (const v of A) expect(Math.exp(v)).toBeGreaterThanOrEqual(1), expect(Math.exp(v)).toBeLessThanOrEqual(16);
    const dt = a.tensor("mamba_mixer.layers.0.mamba.dt_bias");
    for (const v of dt) {
      const sp = Math.log1p(Math.exp(v));
      expect(sp).toBeGreaterThanOrEqual(1e-3 * 0.999), expect(sp).toBeLessThanOrEqual(0.1 * 1.001);
    }
    const m1 = GeneMamba.create(tiny1, 1);
    expect([...m1.tensor("mamba_mixer.layers.0.mamba.A_log").slice(0, 8)].map((v) => Math.round(Math.exp(v)))).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it("parameter counts match the reference table (24l-512d: 66,269,138 gate, 65,744,338 mean)", () => {
    const c = loadModelConfig("genemamba-24l-512d");
    expect(parameterCount(c)).toBe(66_269_138);
    expect(parameterCount({ ...c, combine: "mean" })).toBe(65_744_338);
    expect(parameterCount(loadModelConfig("genemamba-48l-768d"))).toBe(216_210_130);
    const small = GeneMamba.create(tiny1, 0);
    expect(small.numParameters).toBe(parameterCount(small.config));
  });

  it("gradient accumulation: two half-batches with scale 1/2 equal one batch's gradient when counts match", () => {
    const m = GeneMamba.create(tiny, 7);
    const seqs = randomSeqs([6, 6], 40);
    const full = padBatch(seqs);
    const targets = new Int32Array(full.tokens.length).fill(IGNORE_INDEX);
    for (let i = 0; i < 2; i++) for (let t = 0; t < 6; t++) targets[i * 6 + t] = 2 + ((i * 7 + t * 3) % 38);
    m.zeroGrad();
    m.forwardBackward({ ...full, targets });
    const g1 = Float32Array.from(m.grads);
    m.zeroGrad();
    for (let i = 0; i < 2; i++) m.forwardBackward({ ...padBatch([seqs[i]]), targets: targets.slice(i * 6, i * 6 + 6) }, 0.5);
    const g2 = m.grads;
    let diff = 0, scale = 0;
    for (let k = 0; k < g1.length; k++) (diff = Math.max(diff, Math.abs(g1[k] - g2[k]))), (scale = Math.max(scale, Math.abs(g1[k])));
    expect(diff / scale).toBeLessThan(1e-5);
  });

  it("a loss given through its hidden-state gradient backpropagates like the built-in one", () => {
    for (const cfg of [tiny, { ...tiny1, combine: "concat" as const }]) {
      const m = GeneMamba.create(cfg, 13);
      const b = withTargets(padBatch(randomSeqs([9, 6, 3], 40, 5)), 40, 6);
      m.zeroGrad();
      m.forwardBackward(b);
      const builtIn = Float32Array.from(m.grads);
      // The same cross-entropy written here in float64 from forward's logits: dL/dhidden = dlogits . W_head.
      const { logits } = m.forward(b, { logits: true });
      const V = 40, d = 32, W = m.tensor("lm_head.weight");
      const K = b.targets.filter((t) => t !== IGNORE_INDEX).length;
      const dh = new Float32Array(b.tokens.length * d);
      for (let i = 0; i < b.tokens.length; i++) {
        if (b.targets[i] === IGNORE_INDEX) continue;
        const row = logits!.subarray(i * V, (i + 1) * V);
        const mx = Math.max(...row);
        const e = Array.from(row, (v) => Math.exp(v - mx));
        const z = e.reduce((a, x) => a + x, 0);
        for (let v = 0; v < V; v++) {
          const g = (e[v] / z - (v === b.targets[i] ? 1 : 0)) / K;
          for (let c = 0; c < d; c++) dh[i * d + c] += g * W[v * d + c];
        }
      }
      m.zeroGrad();
      m.backwardFromHidden(dh);
      const viaHidden = Float32Array.from(m.grads);
      m.zeroGrad();
      m.forwardBackward(b, 1, { hiddenGrad: dh });  // built-in loss + the same loss again
      const both = m.grads;
      for (const t of m.tensors) {
        if (t.name.startsWith("lm_head.")) continue;  // the hidden-state loss has no head parameters
        let diff = 0, diff2 = 0, scale = 0;
        for (let k = t.offset; k < t.offset + t.numel; k++) {
          diff = Math.max(diff, Math.abs(viaHidden[k] - builtIn[k]));
          diff2 = Math.max(diff2, Math.abs(both[k] - 2 * builtIn[k]));
          scale = Math.max(scale, Math.abs(builtIn[k]));
        }
        expect(diff / (scale || 1), t.name).toBeLessThan(1e-4);
        expect(diff2 / (scale || 1), t.name).toBeLessThan(1e-4);
      }
    }
    const m = GeneMamba.create(tiny, 1);
    m.forward(padBatch(randomSeqs([3], 40)));
    expect(() => m.backwardFromHidden(new Float32Array(5))).toThrow(/hiddenGrad has 5 elements, expected batch x length x d_model = 96/);
    expect(() => m.backwardFromHidden(new Float32Array(96).fill(NaN))).toThrow(/hidden_grad is not finite at row 0, position 0/);
  });

  it("cell embeddings: mean over valid positions and CLS = position 0; gene embeddings are embedding rows", () => {
    const m = GeneMamba.create(tiny, 4);
    const b = padBatch(randomSeqs([5, 3], 40));
    const { hidden } = m.forward(b);
    const d = 32;
    const mean = m.cellEmbeddings(b, "mean"), cls = m.cellEmbeddings(b, "cls");
    for (let c = 0; c < d; c++) {
      let s = 0;
      for (let t = 0; t < 3; t++) s += hidden[(1 * b.length + t) * d + c];
      expect(mean[d + c]).toBeCloseTo(s / 3, 5);
      expect(cls[d + c]).toBe(hidden[b.length * d + c]);
    }
    const g = m.geneEmbeddings([5, 2]);
    expect([...g.subarray(0, d)]).toEqual([...m.tensor("embeddings.weight").subarray(5 * d, 6 * d)]);
  });

  it("loads a reference-style checkpoint: config.json with mamba_layer, combine inferred from the tensors", () => {
    const m = GeneMamba.create({ ...tiny, combine: "mean" }, 9);
    const dir = tmpDir("gm-ref-");
    m.save(dir);
    fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({ d_model: 32, mamba_layer: 2, vocab_size: 40, headdim: 16, d_state: 8 }));
    const back = GeneMamba.load(dir);
    expect(back.config.combine).toBe("mean");
    expect(back.config.n_layer).toBe(2);
    const gate = GeneMamba.create(tiny, 9);
    const dir2 = tmpDir("gm-ref-");
    gate.save(dir2);
    fs.writeFileSync(path.join(dir2, "config.json"), JSON.stringify({ d_model: 32, mamba_layer: 2, vocab_size: 40, headdim: 16, d_state: 8 }));
    expect(GeneMamba.load(dir2).config.combine).toBe("gate");
  });

  describe("errors arrive as exceptions with a clear message", () => {
    const m = GeneMamba.create(tiny, 0);
    const b = padBatch(randomSeqs([4, 2], 40));
    it("token id out of range", () => {
      const bad = { ...b, tokens: b.tokens.slice() };
      bad.tokens[1] = 40;
      expect(() => m.forward(bad)).toThrow(/token id 40 at row 0, position 1 is outside the vocabulary \(0\.\.39\)/);
    });
    it("shape mismatch", () => {
      expect(() => m.forward({ ...b, batch: 3 })).toThrow(/tokens has 8 elements, expected batch x length = 12/);
      expect(() => m.forward({ ...b, tokens: new Float32Array(8) as unknown as Int32Array })).toThrow(/tokens must be an Int32Array/);
    });
    it("length beyond the row", () => {
      expect(() => m.forward({ ...b, lengths: Int32Array.from([5, 2]) })).toThrow(/lengths\[0\] = 5 is outside 0\.\.4/);
    });
    it("targets at padding or out of range", () => {
      const t = new Int32Array(8).fill(IGNORE_INDEX);
      t[4 + 3] = 5;
      expect(() => m.forwardBackward({ ...b, targets: t })).toThrow(/target at padding position 3 of row 1/);
      t[7] = IGNORE_INDEX;
      t[0] = 99;
      expect(() => m.forwardBackward({ ...b, targets: t })).toThrow(/target 99 at row 0, position 0 is neither -100 nor a token id/);
    });
    it("NaN weights: a non-finite loss is an error, and a checkpoint with NaN is refused", () => {
      const n = GeneMamba.create(tiny, 0);
      n.tensor("lm_head.bias")[3] = NaN;
      const t = new Int32Array(8).fill(IGNORE_INDEX);
      t[0] = 5;
      expect(() => n.forwardBackward({ ...b, targets: t })).toThrow(/loss is not finite/);
      const dir = tmpDir("gm-nan-");
      n.save(dir);
      expect(() => GeneMamba.load(dir)).toThrow(/lm_head\.bias contains NaN or Inf at index 3/);
    });
    it("a checkpoint that does not match the config names the tensor", () => {
      const dir = tmpDir("gm-bad-");
      m.save(dir);
      expect(() => GeneMamba.load(dir, { ...tiny, n_layer: 3 })).toThrow(/missing tensor\(s\) mamba_mixer\.layers\.2/);
      expect(() => GeneMamba.load(dir, { ...tiny, d_state: 16 })).toThrow(/has shape \[148,32\], the config needs \[164,32\]/);
      const f = path.join(dir, "model.safetensors");
      fs.writeFileSync(f, fs.readFileSync(f).subarray(0, 1000));
      expect(() => GeneMamba.load(dir)).toThrow(/truncated/);
      fs.writeFileSync(f, "not a checkpoint");
      expect(() => GeneMamba.load(dir)).toThrow(/not a safetensors file/);
    });
    it("bad configs", () => {
      expect(() => GeneMamba.create({ ...tiny, headdim: 12 })).toThrow(/multiple of headdim 12/);
      expect(() => GeneMamba.create({ ...tiny, combine: "max" as never })).toThrow(/combine must be one of gate, mean, sum, concat, unidirectional/);
    });
  });

  it("reads F16 and BF16 checkpoints (converted to float32)", () => {
    const m = GeneMamba.create(tiny, 2);
    const dir = tmpDir("gm-half-");
    m.save(dir);
    // Re-encode every tensor as BF16 by truncation and check the loaded values are the truncated ones.
    const h = readHeader(path.join(dir, "model.safetensors"));
    const header: Record<string, unknown> = {};
    const parts: Buffer[] = [];
    let off = 0;
    for (const t of m.tensors) {
      const src = m.tensor(t.name);
      const buf = Buffer.alloc(src.length * 2);
      const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
      for (let i = 0; i < src.length; i++) buf.writeUInt16LE(u[i] >>> 16, i * 2);
      header[t.name] = { dtype: "BF16", shape: t.shape, data_offsets: [off, off + buf.length] };
      off += buf.length;
      parts.push(buf);
    }
    expect(h.tensors.size).toBe(m.tensors.length);
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    fs.writeFileSync(path.join(dir, "model.safetensors"), Buffer.concat([len, json, ...parts]));
    const back = GeneMamba.load(dir);
    const a = m.tensor("lm_head.weight"), c = back.tensor("lm_head.weight");
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - c[i])).toBeLessThanOrEqual(Math.abs(a[i]) / 128);
  });
});
