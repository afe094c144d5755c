import { describe, expect, it } from "vitest";
import {
  buildLouvainGraph,
  defaultResolutions,
  kmeansLabels,
  kmeansTolerance,
  knnGraph,
  louvainLabels,
  louvainSweep,
  mulberry32,
  randInt,
  type KnnGraph,
} from "../../src/analysis/index.js";
import { blobs, purity, samePartition } from "./fixtures.js";

/**
 * A planted-partition kNN graph: `c` communities of `size` nodes; each node lists itself,
 * `kin` random members of its own community and `kout` random outsiders.
 */
function plantedGraph(c: number, size: number, kin: number, kout: number, seed: number): { g: KnnGraph; truth: Int32Array } {
  const n = c * size;
  const k = 1 + kin + kout;
  const rng = mulberry32(seed);
  const neighbors = new Int32Array(n * k);
  const distances = new Float32Array(n * k);
  const truth = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const comm = Math.floor(i / size);
    truth[i] = comm;
    const row = new Set<number>([i]);
    while (row.size < 1 + kin) row.add(comm * size + randInt(rng, size));
    while (row.size < k) {
      const j = randInt(rng, n);
      if (Math.floor(j / size) !== comm) row.add(j);
    }
    Array.from(row).forEach((j, t) => {
      neighbors[i * k + t] = j;
      distances[i * k + t] = t;
    });
  }
  return { g: { n, k, neighbors, distances }, truth };
}

describe("kmeansLabels", () => {
  it("recovers well-separated blobs exactly", () => {
    const { x, labels } = blobs(1000, 16, 5, 3, { sep: 8 });
    const pred = kmeansLabels(x, 1000, 16, 5, { seed: 0 });
    expect(pred).toBeInstanceOf(Int32Array);
    expect(new Set(pred).size).toBe(5);
    expect(samePartition(pred, labels)).toBe(true);
  });

  it("is deterministic for a seed", () => {
    const { x } = blobs(600, 8, 6, 9, { sep: 1 });
    const a = kmeansLabels(x, 600, 8, 6, { seed: 3 });
    const b = kmeansLabels(x, 600, 8, 6, { seed: 3 });
    expect(Array.from(a)).toEqual(Array.from(b));
  });

  it("computes scib-metrics' tolerance as 1e-4 × mean feature variance", () => {
    // column 0: values 0, 2 (var 1); column 1: 0, 0 (var 0) → mean variance 0.5
    const x = Float32Array.from([0, 0, 2, 0]);
    expect(kmeansTolerance(x, 2, 2)).toBeCloseTo(0.5e-4, 15);
    expect(kmeansTolerance(x, 2, 2, 1)).toBeCloseTo(0.5, 15);
  });

  it("handles k = 1 and rejects bad input", () => {
    const { x } = blobs(50, 4, 2, 1);
    expect(Array.from(kmeansLabels(x, 50, 4, 1))).toEqual(new Array(50).fill(0));
    expect(() => kmeansLabels(x, 50, 4, 51)).toThrow(/k must be/);
    expect(() => kmeansLabels(x, 50, 4, 2, { maxIterations: 0 })).toThrow(/maxIterations/);
    const bad = x.slice();
    bad[7] = Number.POSITIVE_INFINITY;
    expect(() => kmeansLabels(bad, 50, 4, 2)).toThrow(/not finite/);
  });
});

describe("louvainLabels", () => {
  it("finds planted communities", () => {
    const { g, truth } = plantedGraph(4, 60, 10, 2, 5);
    const labels = louvainLabels(g, g.n, { resolution: 1, seed: 0 });
    expect(new Set(labels).size).toBe(4);
    expect(purity(labels, truth)).toBeGreaterThanOrEqual(0.98);
    expect(purity(truth, labels)).toBeGreaterThanOrEqual(0.98);
  });

  it("recovers kNN blobs and numbers communities by decreasing size", () => {
    // unequal blob sizes, the smallest first: 80, 200, 120 points
    const d = 8;
    const sizes = [80, 200, 120];
    const parts = sizes.map((s, c) => blobs(s, d, 1, 100 + c, { sep: 10 }).x);
    const n = 400;
    const x = new Float32Array(n * d);
    const truth = new Int32Array(n);
    let off = 0;
    parts.forEach((p, c) => {
      x.set(p, off * d);
      truth.fill(c, off, off + sizes[c]);
      off += sizes[c];
    });
    const g = knnGraph(x, n, d, 15, { seed: 1 });
    const labels = louvainLabels(g, n, { resolution: 0.5, seed: 0 });
    expect(samePartition(labels, truth)).toBe(true);
    expect(labels[100]).toBe(0); // the largest blob is community 0 …
    expect(labels[399]).toBe(1);
    expect(labels[0]).toBe(2); // … and the smallest the last, although it holds node 0
  });

  it("is seeded, reuses a prebuilt graph and supports UMAP-weighted edges", () => {
    const { g, truth } = plantedGraph(3, 50, 8, 3, 9);
    const lg = buildLouvainGraph(g);
    // self loops dropped, pairs deduplicated: at most n*(k-1) edges
    expect(lg.graph.order).toBe(g.n);
    expect(lg.graph.size).toBeLessThanOrEqual(g.n * (g.k - 1));
    let selfLoops = 0;
    lg.graph.forEachEdge((_e, _a, s, t) => {
      if (s === t) selfLoops++;
    });
    expect(selfLoops).toBe(0);
    const a = louvainLabels(lg, g.n, { seed: 4 });
    const b = louvainLabels(g, g.n, { seed: 4 });
    expect(Array.from(a)).toEqual(Array.from(b));
    const w = louvainLabels(g, g.n, { seed: 4, weighted: true });
    expect(purity(w, truth)).toBeGreaterThanOrEqual(0.95);
    expect(() => louvainLabels(lg, g.n, { weighted: true })).toThrow(/unweighted/);
    expect(() => louvainLabels(lg, g.n + 1)).toThrow(/graph has/);
  });
});

describe("louvainSweep", () => {
  it("uses scib's 20 resolutions 0.1…2.0 without float drift", () => {
    const r = defaultResolutions();
    expect(r.length).toBe(20);
    expect(r[0]).toBe(0.1);
    expect(r[2]).toBe(0.3);
    expect(r[6]).toBe(0.7);
    expect(r[19]).toBe(2);
  });

  it("keeps the first strictly best resolution (ties keep the earlier one)", () => {
    const { g } = plantedGraph(4, 40, 8, 3, 2);
    const scores = [0.2, 0.5, 0.5, 0.4, 0.5, 0.1];
    let call = 0;
    const res = louvainSweep(g, g.n, {
      resolutions: [0.2, 0.4, 0.6, 0.8, 1.0, 1.2],
      seed: 0,
      score: () => scores[call++],
    });
    expect(call).toBe(6);
    expect(res.all.map((a) => a.score)).toEqual(scores);
    expect(res.best.resolution).toBe(0.4);
    expect(res.best.score).toBe(0.5);
    // the best labels are exactly those of a single run at that resolution and seed
    expect(Array.from(res.best.labels)).toEqual(Array.from(louvainLabels(g, g.n, { resolution: 0.4, seed: 0 })));
    for (const a of res.all) expect(a.nClusters).toBeGreaterThanOrEqual(1);
  });

  it("falls back to the first resolution when no score beats 0", () => {
    const { g } = plantedGraph(2, 30, 6, 1, 4);
    const res = louvainSweep(g, g.n, { resolutions: [0.5, 1, 1.5], score: () => 0 });
    expect(res.best.resolution).toBe(0.5);
    expect(res.best.labels.length).toBe(g.n);
    const nan = louvainSweep(g, g.n, { resolutions: [0.5, 1], score: () => Number.NaN });
    expect(nan.best.resolution).toBe(0.5);
  });

  it("sweeps the default grid and finds the planted partition with a purity score", () => {
    const { g, truth } = plantedGraph(5, 40, 9, 2, 8);
    const lg = buildLouvainGraph(g);
    const res = louvainSweep(lg, g.n, {
      seed: 0,
      score: (labels) => Math.min(purity(labels, truth), purity(truth, labels)),
    });
    expect(res.all.length).toBe(20);
    expect(res.all.map((a) => a.resolution)).toEqual(defaultResolutions());
    // more resolution, more (or as many) clusters at the ends of the grid
    expect(res.all[19].nClusters).toBeGreaterThanOrEqual(res.all[0].nClusters);
    expect(res.best.score).toBeGreaterThanOrEqual(0.98);
    expect(new Set(res.best.labels).size).toBe(5);
  });
});
