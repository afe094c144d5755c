import { describe, expect, it } from "vitest";
import {
  bleuGeneMamba,
  bleuNltk,
  levenshtein,
  pearson,
  rankdata,
  reconstructionScores,
  spearman,
  topKOverlap,
} from "../../src/metrics/index.js";
import { allClose, close, closeRel, fixture } from "./helpers.js";

const R = fixture.reconstruction;

describe("reconstruction metrics against nltk / scipy / GeneMamba's bleu_score", () => {
  for (const c of R.cases) {
    it(c.name, () => {
      const inp = Int32Array.from(c.input);
      const pred = Int32Array.from(c.predicted);
      expect(levenshtein(inp, pred)).toBe(c.levenshtein);
      expect(levenshtein(pred, inp)).toBe(c.levenshtein);
      closeRel(bleuGeneMamba(inp, pred), c.bleuGeneMamba, 1e-12, "bleuGeneMamba");
      closeRel(bleuGeneMamba(pred, inp), c.bleuGeneMambaSwapped, 1e-12, "bleuGeneMamba swapped");
      closeRel(bleuGeneMamba(inp, pred, 2), c.bleuGeneMambaMax2, 1e-12, "bleuGeneMamba maxN=2");
      closeRel(bleuNltk(inp, pred), c.bleuNltk, 1e-12, "bleuNltk");
      closeRel(bleuNltk(pred, inp), c.bleuNltkSwapped, 1e-12, "bleuNltk swapped");
      closeRel(bleuNltk(inp, pred, [0.5, 0.5]), c.bleuNltkWeights2, 1e-12, "bleuNltk weights (½, ½)");
      const r = reconstructionScores(inp, pred, c.k);
      expect(r.levenshtein).toBe(c.levenshtein);
      close(r.normalizedLevenshtein, c.normalizedLevenshtein, 1e-15, "NLD");
      close(r.exactMatch, c.exactMatch, 1e-15, "exact match");
      closeRel(r.bleuGeneMamba, c.bleuGeneMamba, 1e-12, "bleuGeneMamba");
      closeRel(r.bleuNltk, c.bleuNltk, 1e-12, "bleuNltk");
      close(r.spearman, c.spearman, 1e-12, "spearman");
      close(r.pearson, c.pearson, 1e-12, "pearson");
      close(r.topKOverlap, c.topKOverlap, 1e-15, "topK");
      close(topKOverlap(inp, pred, c.k), c.topKOverlap, 1e-15, "topK");
    });
  }

  it("nltk semantics: 0 without unigram matches, ≈1e-77 per order without matches, plain arrays accepted", () => {
    const noMatch = R.cases.find((c: { name: string }) => c.name === "no n-gram matches");
    expect(noMatch.bleuNltk).toBe(0);
    expect(bleuNltk([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])).toBe(0);
    const uni = R.cases.find((c: { name: string }) => c.name === "unigram matches only");
    expect(uni.bleuNltk).toBeGreaterThan(0);
    expect(uni.bleuNltk).toBeLessThan(1e-200);
    expect(uni.bleuGeneMamba).toBe(0);
    closeRel(bleuNltk(uni.input, uni.predicted), uni.bleuNltk, 1e-12);
  });

  it("rejects invalid parameters", () => {
    expect(() => bleuGeneMamba([1], [1], 0)).toThrow(/maxN/);
    expect(() => bleuNltk([1], [1], [])).toThrow(/weights/);
    expect(() => topKOverlap([1], [1], 0)).toThrow(/positive integer/);
    expect(() => spearman([1, 2], [1])).toThrow(/same length/);
    expect(() => pearson([1, 2], [1])).toThrow(/same length/);
  });

  it("levenshtein is linear in memory on long sequences", () => {
    const a = new Int32Array(3000).map((_, i) => i % 97);
    const b = new Int32Array(2500).map((_, i) => (i * 7) % 97);
    const d = levenshtein(a, b);
    expect(d).toBeGreaterThanOrEqual(500);
    expect(d).toBeLessThanOrEqual(3000);
    expect(levenshtein(a, a)).toBe(0);
    expect(levenshtein(a, new Int32Array(0))).toBe(3000);
  });
});

describe("rankdata / spearmanr / pearsonr (scipy 1.10)", () => {
  for (const c of R.correlation) {
    it(c.name, () => {
      allClose(rankdata(c.a), c.rankA, 0, "rank a");
      allClose(rankdata(c.b), c.rankB, 0, "rank b");
      close(spearman(c.a, c.b), c.spearman, 1e-12, "spearman");
      close(pearson(c.a, c.b), c.pearson, 1e-12, "pearson");
    });
  }
  it("NaN for fewer than two observations and NaN input", () => {
    expect(spearman([1], [2])).toBeNaN();
    expect(spearman([], [])).toBeNaN();
    expect(pearson([1], [2])).toBeNaN();
    expect(spearman([1, NaN, 3], [1, 2, 3])).toBeNaN();
    expect(Array.from(rankdata([1, NaN]))).toEqual([NaN, NaN]);
  });
});
