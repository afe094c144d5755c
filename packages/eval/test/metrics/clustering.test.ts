import { describe, expect, it } from "vitest";
import { ariScib, ariSklearn, nmi } from "../../src/metrics/index.js";
import { close, fixture, lcgLabels } from "./helpers.js";

describe("NMI / ARI against sklearn and scib", () => {
  for (const c of fixture.clustering.cases) {
    it(c.name, () => {
      const a = c.kind === "int" ? Int32Array.from(c.a) : c.a;
      const b = c.kind === "int" ? Int32Array.from(c.b) : c.b;
      close(nmi(a, b), c.nmi, 1e-12, "nmi");
      close(nmi(b, a), c.nmiReversed, 1e-12, "nmi reversed");
      close(ariSklearn(a, b), c.ariSklearn, 1e-12, "ariSklearn");
      close(ariScib(a, b), c.ariScib, 1e-12, "ariScib");
    });
  }

  for (const c of fixture.clustering.large) {
    it(`${c.name} (regenerated with the shared LCG; int32 pair counts would overflow)`, () => {
      const { a, b } = lcgLabels(c.seed, c.n, c.ka, c.kb, c.agreePercent);
      expect(a.reduce((s, v) => s + v, 0)).toBe(c.checksumA);
      expect(b.reduce((s, v) => s + v, 0)).toBe(c.checksumB);
      expect(Array.from(a.subarray(0, 5))).toEqual(c.first[0]);
      close(nmi(a, b), c.nmi, 1e-12, "nmi");
      close(ariSklearn(a, b), c.ariSklearn, 1e-12, "ariSklearn");
      close(ariScib(a, b), c.ariScib, 1e-12, "ariScib");
    });
  }

  it("string and integer encodings of the same labelling agree", () => {
    const c = fixture.clustering.cases.find((x: { name: string }) => x.name === "random 500");
    const s = (v: number[]) => v.map((x) => `c${String(x).padStart(2, "0")}`);
    expect(nmi(s(c.a), s(c.b))).toBe(nmi(Int32Array.from(c.a), Int32Array.from(c.b)));
    expect(ariSklearn(s(c.a), s(c.b))).toBe(ariSklearn(Int32Array.from(c.a), Int32Array.from(c.b)));
  });

  it("is O(n) at n = 100k: all singletons (sparse contingency) and identical labelings", () => {
    const n = 100_000;
    const a = new Int32Array(n).map((_, i) => i);
    const b = new Int32Array(n).map((_, i) => n - 1 - i);
    const t0 = performance.now();
    expect(nmi(a, b)).toBeCloseTo(1, 12);
    expect(ariSklearn(a, b)).toBe(1);
    expect(ariScib(a, b)).toBeNaN();
    const c = new Int32Array(n).map((_, i) => i % 7);
    expect(ariSklearn(c, c)).toBe(1);
    expect(ariScib(c, c)).toBe(1);
    expect(nmi(c, c)).toBeCloseTo(1, 12);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it("rejects labelings of different lengths", () => {
    expect(() => nmi(Int32Array.from([0, 1]), Int32Array.from([0]))).toThrow(/same length/);
    expect(() => ariSklearn(["a"], [])).toThrow(/same length/);
    expect(() => ariScib(["a"], [])).toThrow(/same length/);
  });
});
