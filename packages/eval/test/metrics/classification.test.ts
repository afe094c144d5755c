import { describe, expect, it } from "vitest";
import { classificationReport, compareCodePoints, encodeLabels, factorizeLabels } from "../../src/metrics/index.js";
import { allClose, close, fixture } from "./helpers.js";

describe("classificationReport (sklearn 1.2 accuracy/F1/precision/recall/confusion_matrix)", () => {
  for (const c of fixture.classification) {
    it(c.name, () => {
      const r = classificationReport(c.yTrue, c.yPred);
      expect(r.confusion.labels).toEqual(c.labels);
      expect(r.confusion.matrix).toEqual(c.confusion);
      for (const key of ["accuracy", "macroF1", "microF1", "macroPrecision", "macroRecall", "weightedPrecision", "weightedRecall", "weightedF1"]) {
        close((r as unknown as Record<string, number>)[key], c[key], 1e-12, key);
      }
      expect(r.perClass.map((x) => x.label)).toEqual(c.labels);
      allClose(r.perClass.map((x) => x.precision), c.precision, 1e-12, "precision");
      allClose(r.perClass.map((x) => x.recall), c.recall, 1e-12, "recall");
      allClose(r.perClass.map((x) => x.f1), c.f1, 1e-12, "f1");
      expect(r.perClass.map((x) => x.support)).toEqual(c.support);
      expect(r.n).toBe(c.yTrue.length);
    });
  }
  it("rejects mismatched lengths and empty input", () => {
    expect(() => classificationReport(["a"], ["a", "b"])).toThrow(/same length/);
    expect(() => classificationReport([], [])).toThrow(/at least one sample/);
  });
});

describe("labels", () => {
  it("encodeLabels sorts like np.unique (code points, not UTF-16 units)", () => {
    const values = ["b", "\uff5e", "a", "\u{1F600}", "b", "A"];
    const { codes, names } = encodeLabels(values);
    expect(names).toEqual(["A", "a", "b", "\uff5e", "\u{1F600}"]);
    expect(Array.from(codes)).toEqual([2, 3, 1, 4, 2, 0]);
    for (let i = 0; i < values.length; i++) expect(names[codes[i]]).toBe(values[i]);
    expect(compareCodePoints("\u{1F600}", "\uff5e")).toBeGreaterThan(0);
    expect(compareCodePoints("ab", "a")).toBeGreaterThan(0);
  });
  it("factorizeLabels handles compact, negative and sparse integer codes", () => {
    const f = factorizeLabels(Int32Array.from([5, -3, 5, 2_000_000_000, -3, 5]));
    expect(f.names).toEqual([-3, 5, 2_000_000_000]);
    expect(Array.from(f.codes)).toEqual([1, 0, 1, 2, 0, 1]);
    expect(Array.from(f.counts)).toEqual([2, 3, 1]);
    const g = factorizeLabels(Int32Array.from([3, 1, 3]));
    expect(g.names).toEqual([1, 3]);
    expect(factorizeLabels(new Int32Array(0)).names).toEqual([]);
  });
});
