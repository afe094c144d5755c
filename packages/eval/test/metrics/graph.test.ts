import { describe, expect, it } from "vitest";
import { graphConnectivity } from "../../src/metrics/index.js";
import { allClose, close, fixture } from "./helpers.js";

const G = fixture.graph;

/** The first kk columns of the stored 15-NN matrix (sklearn sorts neighbours by distance). */
function firstColumns(kk: number): Int32Array {
  const out = new Int32Array(G.n * kk);
  for (let i = 0; i < G.n; i++) for (let t = 0; t < kk; t++) out[i * kk + t] = G.neighbors[i * G.k + t];
  return out;
}

describe("graph connectivity against scipy connected_components on a sklearn kNN graph", () => {
  const labels = Int32Array.from(G.labels as number[]);
  for (const kk of ["15", "5", "2"]) {
    for (const variant of ["scib", "scib-metrics"] as const) {
      it(`k = ${kk}, ${variant}`, () => {
        const ref = G.results[kk][variant];
        const r = graphConnectivity(firstColumns(Number(kk)), G.n, Number(kk), labels, variant);
        expect(r.variant).toBe(variant);
        close(r.score, ref.score, 1e-12, "score");
        allClose(r.perLabel.map((row) => row.fraction), ref.perLabel, 1e-12, "per label");
        for (const row of r.perLabel) expect(row.largestComponent / row.nCells).toBe(row.fraction);
      });
    }
  }
  it("hand-written graph with self loops and missing (-1) neighbours", () => {
    const h = G.hand;
    for (const variant of ["scib", "scib-metrics"] as const) {
      const r = graphConnectivity(Int32Array.from(h.neighbors), h.n, h.k, Int32Array.from(h.labels), variant);
      close(r.score, h.results[variant].score, 1e-12, variant);
      allClose(r.perLabel.map((row) => row.fraction), h.results[variant].perLabel, 1e-12, variant);
    }
  });
  it("string labels give the same result", () => {
    const names = (G.labels as number[]).map((c) => `t${c}`);
    const r = graphConnectivity(firstColumns(5), G.n, 5, names, "scib-metrics");
    close(r.score, G.results["5"]["scib-metrics"].score, 1e-12);
    expect(r.perLabel.map((row) => row.label)).toEqual(["t0", "t1", "t2", "t3"]);
  });
});

describe("graph connectivity at n = 100k (no recursion, O(n·k))", () => {
  const n = 100_000;
  it("a directed chain is one weak component but n strong components; a cycle is one of each", () => {
    const chain = new Int32Array(n * 2).fill(-1);
    for (let i = 0; i < n - 1; i++) chain[i * 2] = i + 1;
    for (let i = 0; i < n; i++) chain[i * 2 + 1] = i; // self loops
    const one = new Int32Array(n);
    const t0 = performance.now();
    expect(graphConnectivity(chain, n, 2, one, "scib").score).toBe(1);
    expect(graphConnectivity(chain, n, 2, one, "scib-metrics").score).toBe(1 / n);
    chain[(n - 1) * 2] = 0;
    expect(graphConnectivity(chain, n, 2, one, "scib-metrics").score).toBe(1);
    // two interleaved labels: edges i -> i+1 cross labels, so every cell is alone
    const alt = new Int32Array(n).map((_, i) => i % 2);
    const r = graphConnectivity(chain, n, 2, alt, "scib");
    expect(r.score).toBe(2 / n);
    expect(performance.now() - t0).toBeLessThan(3000);
  });
  it("rejects malformed neighbour matrices and variants", () => {
    expect(() => graphConnectivity(Int32Array.from([1, 5]), 2, 1, Int32Array.from([0, 0]), "scib")).toThrow(/outside \[0, 2\)/);
    expect(() => graphConnectivity(Int32Array.from([1]), 2, 1, Int32Array.from([0, 0]), "scib")).toThrow(/n×k/);
    expect(() => graphConnectivity(Int32Array.from([1, 0]), 2, 1, Int32Array.from([0]), "scib")).toThrow(/labels has 1/);
    // @ts-expect-error invalid variant
    expect(() => graphConnectivity(Int32Array.from([1, 0]), 2, 1, Int32Array.from([0, 0]), "weak")).toThrow(/variant/);
  });
});
