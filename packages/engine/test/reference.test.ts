// The whole model against the team's PyTorch reference (scripts/reference/genemamba_ref.py, float64,
// autograd): for every combine mode and both mixers, a padded batch (lengths 11, 8, 4) gives the
// reference's logits, hidden states, loss and the gradient of every parameter within 1e-4 relative,
// and 10 AdamW steps (weight decay on matrices, clipping at 1.0) give the same losses.
// The reference ran every sequence unpadded, so this also checks padding invariance.
import { describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { GeneMamba, readHeader, readTensor, type ModelConfigInput } from "@gm/engine";
import { repoRoot } from "../../../tests/helpers/paths.js";

const dir = path.join(repoRoot, "tests/fixtures/engine");
const files = fs.readdirSync(dir).filter((f) => f.endsWith(".safetensors")).sort();

/** max |a - b| / max |b| over the entries where mask is true. */
function relErr(a: Float32Array, b: Float32Array, mask?: (i: number) => boolean): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < b.length; i++) {
    if (mask && !mask(i)) continue;
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / (scale || 1);
}

describe("engine vs PyTorch reference fixtures", () => {
  it("has the ten fixtures (two mixers x five combine modes)", () => {
    expect(files.length).toBe(10);
  });

  for (const f of files) {
    const file = path.join(dir, f);
    it(f.replace(".safetensors", ""), () => {
      const header = readHeader(file);
      const config = JSON.parse(header.metadata.config) as ModelConfigInput;
      const adamw = JSON.parse(header.metadata.adamw) as { lr: number; betas: [number, number]; eps: number; weight_decay: number; clip_grad_norm: number; steps: number; decay_params: string[] };
      // A chunk of 4 steps makes the scan save and recompute across several chunks of L = 11.
      const model = GeneMamba.load(file, { ...config, chunk_size: 4 });
      const tokens = readTensor(file, header, "input.tokens") as Int32Array;
      const lengths = readTensor(file, header, "input.lengths") as Int32Array;
      const targets = readTensor(file, header, "input.targets") as Int32Array;
      const [B, L] = header.tensors.get("input.tokens")!.shape;
      const V = model.config.vocab_size, d = model.config.d_model;
      const batch = { tokens, lengths, targets, batch: B, length: L };
      const valid = (width: number) => (i: number) => Math.floor(i / width) % L < lengths[Math.floor(i / width / L)];

      const { hidden, logits } = model.forward(batch, { logits: true });
      expect(relErr(hidden, readTensor(file, header, "output.hidden") as Float32Array, valid(d))).toBeLessThan(1e-4);
      expect(relErr(logits!, readTensor(file, header, "output.logits") as Float32Array, valid(V))).toBeLessThan(1e-4);

      model.zeroGrad();
      const { loss } = model.forwardBackward(batch);
      const refLoss = (readTensor(file, header, "output.loss") as Float32Array)[0];
      expect(Math.abs(loss - refLoss) / refLoss).toBeLessThan(1e-5);
      const worst: Record<string, number> = {};
      for (const t of model.tensors) {
        const ref = readTensor(file, header, `grad.${t.name}`) as Float32Array;
        worst[t.name] = relErr(model.tensor(t.name, "grads"), ref);
      }
      for (const [name, err] of Object.entries(worst)) expect(err, `gradient of ${name}`).toBeLessThan(1e-4);

      // Weight decay goes to the same tensors as in the reference's optimizer groups.
      expect(model.tensors.filter((t) => t.decay).map((t) => t.name).sort()).toEqual([...adamw.decay_params].sort());
      const refLosses = readTensor(file, header, "adamw.losses") as Float32Array;
      const losses: number[] = [];
      for (let s = 1; s <= refLosses.length; s++) {
        const r = model.trainStep(batch, { lr: adamw.lr, beta1: adamw.betas[0], beta2: adamw.betas[1], eps: adamw.eps, weightDecay: adamw.weight_decay, maxGradNorm: adamw.clip_grad_norm, step: s });
        losses.push(r.loss);
      }
      for (let s = 0; s < losses.length; s++) expect(Math.abs(losses[s] - refLosses[s]) / refLosses[s], `loss at step ${s + 1}`).toBeLessThan(1e-4);
      expect(losses[losses.length - 1]).toBeLessThan(losses[0]);  // the steps do train
    });
  }
});
