import { describe, expect, it } from "vitest";
import { bruteForceKnn, knnGraph, subsampleIndices, umapLayout } from "../../src/analysis/index.js";
import { blobs } from "./fixtures.js";

describe("umapLayout", () => {
  const n = 450;
  const d = 10;
  const { x, labels } = blobs(n, d, 3, 21);
  const graph = knnGraph(x, n, d, 15, { seed: 3 });

  it("gives finite n × 2 coordinates that separate the blobs", () => {
    const emb = umapLayout(graph, n, { seed: 1, nEpochs: 200 });
    expect(emb).toBeInstanceOf(Float32Array);
    expect(emb.length).toBe(2 * n);
    for (const v of emb) expect(Number.isFinite(v)).toBe(true);

    // every point's nearest layout neighbour is in its own blob …
    let same = 0;
    for (let i = 0; i < n; i++) {
      let best = -1;
      let bestD = Infinity;
      for (let j = 0; j < n; j++) {
        if (j === i) continue;
        const dd = (emb[2 * i] - emb[2 * j]) ** 2 + (emb[2 * i + 1] - emb[2 * j + 1]) ** 2;
        if (dd < bestD) {
          bestD = dd;
          best = j;
        }
      }
      if (labels[best] === labels[i]) same++;
    }
    expect(same / n).toBeGreaterThanOrEqual(0.99);

    // … and blob centroids are far apart relative to the blobs' own spread
    const cx = [0, 0, 0];
    const cy = [0, 0, 0];
    const cnt = [0, 0, 0];
    for (let i = 0; i < n; i++) {
      cx[labels[i]] += emb[2 * i];
      cy[labels[i]] += emb[2 * i + 1];
      cnt[labels[i]]++;
    }
    for (let c = 0; c < 3; c++) {
      cx[c] /= cnt[c];
      cy[c] /= cnt[c];
    }
    let spread = 0;
    for (let i = 0; i < n; i++) spread += Math.hypot(emb[2 * i] - cx[labels[i]], emb[2 * i + 1] - cy[labels[i]]);
    spread /= n;
    for (let a = 0; a < 3; a++) {
      for (let b = a + 1; b < 3; b++) expect(Math.hypot(cx[a] - cx[b], cy[a] - cy[b])).toBeGreaterThan(3 * spread);
    }
  });

  it("is reproducible for a seed and changes with the seed", () => {
    const small = bruteForceKnn(x.subarray(0, 90 * d), 90, d, 10);
    const a = umapLayout(small, 90, { seed: 5, nEpochs: 50 });
    const b = umapLayout(small, 90, { seed: 5, nEpochs: 50 });
    const c = umapLayout(small, 90, { seed: 6, nEpochs: 50 });
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
  });

  it("rejects graphs it cannot lay out", () => {
    expect(() => umapLayout(graph, n + 1)).toThrow(/graph has/);
    const tiny = bruteForceKnn(x.subarray(0, 10 * d), 10, d, 10);
    expect(() => umapLayout(tiny, 10)).toThrow(/more points than neighbours/);
    expect(() => umapLayout(graph, n, { minDist: 2 })).toThrow(/minDist/);
  });
});

describe("subsampleIndices", () => {
  it("returns every index when n ≤ max", () => {
    expect(Array.from(subsampleIndices(5, 10, 0))).toEqual([0, 1, 2, 3, 4]);
  });

  it("draws a sorted, distinct, seeded uniform sample", () => {
    const a = subsampleIndices(10_000, 1000, 7);
    const b = subsampleIndices(10_000, 1000, 7);
    const c = subsampleIndices(10_000, 1000, 8);
    expect(a.length).toBe(1000);
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
    for (let i = 1; i < a.length; i++) expect(a[i]).toBeGreaterThan(a[i - 1]);
    expect(a[0]).toBeGreaterThanOrEqual(0);
    expect(a[a.length - 1]).toBeLessThan(10_000);
    // roughly uniform: each tenth of the range holds about a tenth of the sample
    const deciles = new Array<number>(10).fill(0);
    for (const i of a) deciles[Math.floor(i / 1000)]++;
    for (const cnt of deciles) expect(Math.abs(cnt - 100)).toBeLessThan(40);
  });

  it("keeps every stratum, proportionally, when strata are given", () => {
    const strata: string[] = [];
    for (let i = 0; i < 10_000; i++) strata.push(i < 9_000 ? "common" : i < 9_990 ? "medium" : "rare");
    const s = subsampleIndices(10_000, 500, 3, strata);
    expect(s.length).toBe(500);
    expect(new Set(s).size).toBe(500);
    const count = { common: 0, medium: 0, rare: 0 } as Record<string, number>;
    for (const i of s) count[strata[i]]++;
    expect(count.rare).toBeGreaterThanOrEqual(1);
    expect(count.common).toBeGreaterThanOrEqual(445);
    expect(count.medium).toBeGreaterThanOrEqual(45);
    expect(() => subsampleIndices(10, 5, 0, ["a"])).toThrow(/strata/);
  });
});
