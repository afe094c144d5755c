import { describe, expect, it } from "vitest";
import {
  bruteForceKnn,
  knnGraph,
  knnRecall,
  mulberry32,
  takeRows,
  umapConnectivities,
  type KnnGraph,
} from "../../src/analysis/index.js";
import { blobs } from "./fixtures.js";

function euclid(x: Float32Array, d: number, i: number, j: number): number {
  let s = 0;
  for (let t = 0; t < d; t++) s += (x[i * d + t] - x[j * d + t]) ** 2;
  return Math.sqrt(s);
}

function checkInvariants(g: KnnGraph, x: Float32Array, d: number): void {
  const { n, k, neighbors, distances } = g;
  expect(neighbors.length).toBe(n * k);
  expect(distances.length).toBe(n * k);
  for (let i = 0; i < n; i++) {
    expect(neighbors[i * k]).toBe(i);
    expect(distances[i * k]).toBe(0);
    const row = new Set<number>();
    for (let j = 0; j < k; j++) {
      const nb = neighbors[i * k + j];
      expect(nb).toBeGreaterThanOrEqual(0);
      expect(nb).toBeLessThan(n);
      row.add(nb);
      if (j > 0) {
        expect(distances[i * k + j]).toBeGreaterThanOrEqual(distances[i * k + j - 1] - 1e-5);
        // true Euclidean distance, not hnswlib's squared one
        expect(distances[i * k + j]).toBeCloseTo(euclid(x, d, i, nb), 3);
      }
    }
    expect(row.size).toBe(k);
  }
}

describe("bruteForceKnn", () => {
  it("finds exact neighbours on a hand-made line, self first, ties by index", () => {
    // points 0, 1, 3, 6, 10 on a line (d = 1); point 2 (at 3) has 0 and 3 tied at distance 3
    const x = Float32Array.from([0, 1, 3, 6, 10]);
    const g = bruteForceKnn(x, 5, 1, 3);
    expect(Array.from(g.neighbors)).toEqual([0, 1, 2, 1, 0, 2, 2, 1, 0, 3, 2, 4, 4, 3, 2]);
    expect(Array.from(g.distances)).toEqual([0, 1, 3, 0, 1, 2, 0, 2, 3, 0, 3, 4, 0, 4, 7]);
  });

  it("keeps self first even with exact duplicates", () => {
    const x = Float32Array.from([5, 5, 5, 5, 9]);
    const g = bruteForceKnn(x, 5, 1, 3);
    for (let i = 0; i < 5; i++) expect(g.neighbors[i * 3]).toBe(i);
    expect(Array.from(g.neighbors.subarray(3, 6))).toEqual([1, 0, 2]);
  });
});

describe("knnGraph (hnswlib)", () => {
  it("has recall ≥ 0.95 against brute force on overlapping seeded blobs, with true distances", () => {
    const n = 2000;
    const d = 32;
    // heavily overlapping clusters: a hard case for approximate search
    const { x } = blobs(n, d, 8, 7, { sep: 0.5 });
    const approx = knnGraph(x, n, d, 15, { seed: 1 });
    const exact = bruteForceKnn(x, n, d, 15);
    checkInvariants(approx, x, d);
    checkInvariants(exact, x, d);
    const recall = knnRecall(approx, exact);
    expect(recall).toBeGreaterThanOrEqual(0.95);
    expect(recall).toBeLessThanOrEqual(1);
  });

  it("forces self first when the data contain exact duplicates", () => {
    const d = 4;
    const base = blobs(200, d, 2, 3).x;
    // rows 200…239 duplicate rows 0…39
    const x = new Float32Array(240 * d);
    x.set(base);
    x.set(base.subarray(0, 40 * d), 200 * d);
    const g = knnGraph(x, 240, d, 10, { seed: 2 });
    checkInvariants(g, x, d);
    // the duplicate twin is at distance 0 right after self
    for (let i = 0; i < 40; i++) {
      expect(g.neighbors[i * 10 + 1]).toBe(200 + i);
      expect(g.distances[i * 10 + 1]).toBe(0);
    }
  });

  it("is deterministic for a fixed seed and handles k = 1 and k = n", () => {
    const { x } = blobs(300, 8, 3, 5);
    const a = knnGraph(x, 300, 8, 12, { seed: 4 });
    const b = knnGraph(x, 300, 8, 12, { seed: 4 });
    expect(Array.from(a.neighbors)).toEqual(Array.from(b.neighbors));
    const one = knnGraph(x, 300, 8, 1);
    expect(Array.from(one.neighbors)).toEqual(Array.from({ length: 300 }, (_, i) => i));
    const small = blobs(20, 3, 2, 1).x;
    const all = knnGraph(small, 20, 3, 20);
    checkInvariants(all, small, 3);
  });

  it("rejects malformed input", () => {
    const x = new Float32Array(12);
    expect(() => knnGraph(x, 4, 4, 2)).toThrow(/expected n\*d/);
    expect(() => knnGraph(x, 3, 4, 5)).toThrow(/k must be/);
    x[5] = Number.NaN;
    expect(() => knnGraph(x, 3, 4, 2)).toThrow(/not finite/);
  });
});

describe("umapConnectivities", () => {
  it("is a symmetric fuzzy union in (0, 1] with the nearest neighbour at weight 1", () => {
    const { x } = blobs(300, 6, 3, 11);
    const g = bruteForceKnn(x, 300, 6, 10);
    const e = umapConnectivities(g);
    const w = new Map<number, number>();
    for (let t = 0; t < e.rows.length; t++) {
      expect(e.rows[t]).toBeLessThan(e.cols[t]);
      expect(e.weights[t]).toBeGreaterThan(0);
      expect(e.weights[t]).toBeLessThanOrEqual(1);
      w.set(e.rows[t] * 300 + e.cols[t], e.weights[t]);
    }
    for (let i = 0; i < 300; i++) {
      const nn = g.neighbors[i * 10 + 1];
      const key = Math.min(i, nn) * 300 + Math.max(i, nn);
      expect(w.get(key)).toBeCloseTo(1, 12);
    }
    // every kNN pair appears in the union graph
    for (let i = 0; i < 300; i++) {
      for (let j = 1; j < 10; j++) {
        const nb = g.neighbors[i * 10 + j];
        expect(w.has(Math.min(i, nb) * 300 + Math.max(i, nb))).toBe(true);
      }
    }
  });
});

describe("takeRows / rng", () => {
  it("copies the requested rows", () => {
    const x = Float32Array.from([0, 1, 10, 11, 20, 21]);
    expect(Array.from(takeRows(x, 2, [2, 0]))).toEqual([20, 21, 0, 1]);
    expect(() => takeRows(x, 2, [3])).toThrow(/out of range/);
  });

  it("mulberry32 is deterministic, in [0, 1) and seed-dependent", () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const c = mulberry32(43);
    const sa = Array.from({ length: 1000 }, () => a());
    const sb = Array.from({ length: 1000 }, () => b());
    const sc = Array.from({ length: 1000 }, () => c());
    expect(sa).toEqual(sb);
    expect(sa).not.toEqual(sc);
    expect(Math.min(...sa)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...sa)).toBeLessThan(1);
    const mean = sa.reduce((s, v) => s + v, 0) / sa.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.05);
  });
});
