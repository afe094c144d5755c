import { describe, expect, it } from "vitest";
import { IGNORE_INDEX, learningRate, prepareMlm, prepareNtp, type CellRef, type TokenSpace } from "@gm/train";

// 2 specials, genes 2..1001, [CLS] 1002, [MASK] 1003
const space: TokenSpace = { vocabSize: 1004, padId: 1, unkId: 0, maskId: 1003, firstGene: 2, endGene: 1002 };
const CLS = 1002;

function cells(n: number, seed = 1, withCls = false): CellRef[] {
  let s = seed;
  const r = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  return Array.from({ length: n }, (_, i) => {
    const len = 20 + Math.floor(r() * 200);
    const ids = Int32Array.from({ length: len }, () => 2 + Math.floor(r() * 1000));
    if (withCls) ids[0] = CLS;
    return { ids, sample: 1000 + i };
  });
}

const MLM = { maskProb: 0.15, maskTokenProb: 0.8, randomTokenProb: 0.1 };

describe("MLM masking", () => {
  it("selects round(15%) of each cell's genes, 80% [MASK] / 10% random / 10% unchanged, loss only there", () => {
    const cs = cells(400, 3, true);
    const b = prepareMlm(cs, space, MLM, 42, 0);
    let selected = 0, masked = 0, random = 0, unchanged = 0;
    cs.forEach((c, r) => {
      const genes = c.ids.length - 1;
      let k = 0;
      for (let t = 0; t < b.length; t++) {
        const i = r * b.length + t;
        if (t >= c.ids.length) {
          expect(b.tokens[i]).toBe(space.padId);
          expect(b.targets[i]).toBe(IGNORE_INDEX);
          continue;
        }
        if (b.targets[i] === IGNORE_INDEX) {
          expect(b.tokens[i]).toBe(c.ids[t]);
          continue;
        }
        k++;
        expect(t).toBeGreaterThan(0); // [CLS] is never selected
        expect(b.targets[i]).toBe(c.ids[t]);
        if (b.tokens[i] === space.maskId) masked++;
        else if (b.tokens[i] === c.ids[t]) unchanged++;
        else {
          random++;
          expect(b.tokens[i]).toBeGreaterThanOrEqual(space.firstGene);
          expect(b.tokens[i]).toBeLessThan(space.endGene);
        }
      }
      expect(k).toBe(Math.max(1, Math.round(0.15 * genes)));
      selected += k;
    });
    expect(b.lossPositions).toBe(selected);
    // 80/10/10 over ~7,000 selections: binomial sd of a share is ~0.5%; allow 2%.
    // (a random replacement that draws the original gene counts as unchanged: 0.1 / 1000 of selections)
    expect(Math.abs(masked / selected - 0.8)).toBeLessThan(0.02);
    expect(Math.abs(random / selected - 0.1)).toBeLessThan(0.02);
    expect(Math.abs(unchanged / selected - 0.1)).toBeLessThan(0.02);
  });

  it("masks a cell the same way in any batch (keyed by seed, epoch, sample), differently per epoch and seed", () => {
    const cs = cells(12, 5);
    const all = prepareMlm(cs, space, MLM, 7, 2);
    const alone = prepareMlm([cs[7]], space, MLM, 7, 2);
    const row = all.tokens.subarray(7 * all.length, 7 * all.length + cs[7].ids.length);
    expect(Array.from(alone.tokens.subarray(0, cs[7].ids.length))).toEqual(Array.from(row));
    expect(Array.from(alone.targets.subarray(0, cs[7].ids.length))).toEqual(Array.from(all.targets.subarray(7 * all.length, 7 * all.length + cs[7].ids.length)));
    const other = prepareMlm([cs[7]], space, MLM, 7, 3);
    const otherSeed = prepareMlm([cs[7]], space, MLM, 8, 2);
    expect(Array.from(other.targets)).not.toEqual(Array.from(alone.targets));
    expect(Array.from(otherSeed.targets)).not.toEqual(Array.from(alone.targets));
  });

  it("random replacements are spread uniformly over the genes", () => {
    const cs = cells(3000, 9);
    const b = prepareMlm(cs, space, { maskProb: 0.15, maskTokenProb: 0, randomTokenProb: 1 }, 1, 0);
    const hist = new Float64Array(10);
    let n = 0;
    for (let i = 0; i < b.tokens.length; i++)
      if (b.targets[i] !== IGNORE_INDEX) {
        hist[Math.floor((b.tokens[i] - 2) / 100)]++;
        n++;
      }
    // chi-square over 10 bins, 9 dof: 99.9% quantile 27.9
    let chi = 0;
    for (const h of hist) chi += (h - n / 10) ** 2 / (n / 10);
    expect(chi).toBeLessThan(27.9);
  });
});

describe("next-gene prediction", () => {
  it("targets the next token over each valid prefix and never scores pads", () => {
    const cs = [{ ids: Int32Array.from([5, 6, 7, 8]), sample: 0 }, { ids: Int32Array.from([9, 10]), sample: 1 }, { ids: Int32Array.from([11]), sample: 2 }];
    const b = prepareNtp(cs, space);
    expect(b.length).toBe(4);
    expect(Array.from(b.tokens)).toEqual([5, 6, 7, 8, 9, 10, 1, 1, 11, 1, 1, 1]);
    const I = IGNORE_INDEX;
    expect(Array.from(b.targets)).toEqual([6, 7, 8, I, 10, I, I, I, I, I, I, I]);
    expect(b.lossPositions).toBe(4);
    expect(b.tokenCount).toBe(7);
  });
});

describe("learning-rate schedule", () => {
  const base = { peakLr: 1e-3, totalSteps: 110, minLrRatio: 0 };
  it("warms up linearly to the peak at step W", () => {
    const o = { ...base, kind: "cosine" as const, warmupSteps: 10 };
    expect(learningRate(1, o)).toBeCloseTo(1e-4, 15);
    expect(learningRate(5, o)).toBeCloseTo(5e-4, 15);
    expect(learningRate(10, o)).toBeCloseTo(1e-3, 15);
  });
  it("cosine and linear decay match the Hugging Face formulas after warmup", () => {
    const cos = { ...base, kind: "cosine" as const, warmupSteps: 10 };
    const lin = { ...base, kind: "linear" as const, warmupSteps: 10 };
    for (const step of [11, 30, 60, 95, 110]) {
      const s = step - 1, p = (s - 10) / 100;
      expect(learningRate(step, cos)).toBeCloseTo(1e-3 * 0.5 * (1 + Math.cos(Math.PI * p)), 15);
      expect(learningRate(step, lin)).toBeCloseTo(1e-3 * Math.max(0, (110 - s) / 100), 15);
    }
    expect(learningRate(61, cos)).toBeCloseTo(5e-4, 15); // halfway
  });
  it("no warmup + linear is the reference run's schedule; the floor and constant work", () => {
    const ref = { ...base, kind: "linear" as const, warmupSteps: 0, totalSteps: 100 };
    expect(learningRate(1, ref)).toBe(1e-3);
    expect(learningRate(51, ref)).toBeCloseTo(5e-4, 15);
    expect(learningRate(100, ref)).toBeCloseTo(1e-5, 15);
    expect(learningRate(100, { ...ref, kind: "cosine", minLrRatio: 0.1 })).toBeGreaterThan(1e-4);
    expect(learningRate(77, { ...ref, kind: "constant" })).toBe(1e-3);
  });
});
