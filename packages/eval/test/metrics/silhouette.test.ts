import { describe, expect, it } from "vitest";
import {
  aswBatch,
  aswLabel,
  distanceSumsTs,
  isolatedLabelsAsw,
  silhouetteFromSums,
  silhouetteSamples,
  type DistanceSums,
} from "../../src/metrics/index.js";
import { allClose, close, fixture } from "./helpers.js";

const S = fixture.silhouette;
const n: number = S.n;
const d: number = S.d;
const x = Float32Array.from(S.x as number[]);
const labels = Int32Array.from(S.labels as number[]);
const batches = Int32Array.from(S.batches as number[]);

/** A deliberately different kernel (row by row, no symmetry) standing in for a native one. */
const naiveSums: DistanceSums = (xs, m, dd, lab, k) => {
  const out = new Float64Array(m * k);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let t = 0; t < dd; t++) s += (xs[i * dd + t] - xs[j * dd + t]) ** 2;
      out[i * k + lab[j]] += Math.sqrt(s);
    }
  }
  return out;
};

describe("distance sums", () => {
  it("distanceSumsTs equals the sums of scipy cdist distances", () => {
    expect(x.every((v, i) => v === S.x[i])).toBe(true); // the fixture stores exact float32 values
    allClose(distanceSumsTs(x, n, d, labels, 5), S.distanceSums, 1e-12, "sums");
  });
  it("validates its input", () => {
    expect(() => distanceSumsTs(x, n, d + 1, labels, 5)).toThrow(/n×d/);
    expect(() => distanceSumsTs(x, n, d, labels, 4)).toThrow(/outside \[0, 4\)/);
    expect(() => distanceSumsTs(x, n, d, labels.subarray(1), 5)).toThrow(/n = 300/);
  });
});

describe("silhouette (sklearn silhouette_samples)", () => {
  it("matches sklearn on direct float64 distances to 1e-9", () => {
    allClose(silhouetteSamples(x, n, d, labels), S.silhouetteDirect, 1e-9, "s");
  });
  it("matches sklearn on the float32 embedding (dot-product trick) to 1e-6", () => {
    allClose(silhouetteSamples(x, n, d, labels), S.silhouetteFloat32, 1e-6, "s32");
    const mean = silhouetteSamples(x, n, d, labels).reduce((s, v) => s + v, 0) / n;
    close(mean, S.silhouetteScoreFloat32, 1e-6, "silhouette_score");
    close(mean, S.silhouetteScoreDirect, 1e-9, "silhouette_score direct");
  });
  it("gives 0 to a singleton cluster", () => {
    const single = Int32Array.from(S.singletonLabels as number[]);
    const s = silhouetteSamples(x, n, d, single);
    allClose(s, S.silhouetteSingleton, 1e-9, "s");
    expect(s[single.indexOf(5)]).toBe(0);
  });
  it("silhouetteFromSums ignores empty labels and accepts any kernel", () => {
    const sums = naiveSums(x, n, d, labels, 5);
    allClose(silhouetteFromSums(sums, n, 5, labels), S.silhouetteDirect, 1e-9, "s");
    // k = 7 with two empty labels (5, 6): same result
    const wide = new Float64Array(n * 7);
    for (let i = 0; i < n; i++) for (let c = 0; c < 5; c++) wide[i * 7 + c] = sums[i * 5 + c];
    allClose(silhouetteFromSums(wide, n, 7, labels), S.silhouetteDirect, 1e-9, "s wide");
  });
  it("accepts string labels", () => {
    const names = Array.from(labels, (c) => `type-${c}`);
    allClose(silhouetteSamples(x, n, d, names), S.silhouetteDirect, 1e-9, "s");
  });
  it("requires 2 ≤ #labels ≤ n − 1, like sklearn", () => {
    expect(() => silhouetteSamples(x, n, d, new Int32Array(n))).toThrow(/number of labels is 1/);
    expect(() => silhouetteSamples(x.subarray(0, 3 * d), 3, d, Int32Array.from([0, 1, 2]))).toThrow(/number of labels is 3/);
    expect(() => silhouetteFromSums(new Float64Array(5), n, 5, labels)).toThrow(/n×k/);
  });
  it("silhouetteFromSums is O(n·k) at n = 100k", () => {
    const m = 100_000, k = 10;
    const lab = new Int32Array(m).map((_, i) => i % k);
    const sums = new Float64Array(m * k).map((_, z) => 1 + (z % 13));
    const t0 = performance.now();
    const s = silhouetteFromSums(sums, m, k, lab);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(s.every((v) => v >= -1 && v <= 1)).toBe(true);
  });
});

describe("ASW metrics (scib semantics)", () => {
  it("aswLabel = (mean silhouette + 1)/2", () => {
    close(aswLabel(x, n, d, labels), S.aswLabel, 1e-9, "aswLabel");
  });

  it("aswBatch matches the scib silhouette_batch loop, with skipped types reported", () => {
    const calls: number[] = [];
    const counting: DistanceSums = (xs, m, dd, lab, k) => {
      calls.push(m);
      return distanceSumsTs(xs, m, dd, lab, k);
    };
    const r = aswBatch(x, n, d, labels, batches, { distanceSums: counting });
    close(r.score, S.aswBatch, 1e-9, "aswBatch");
    close(r.score, S.aswBatchFloat32, 1e-6, "aswBatch float32");
    for (const row of r.perLabel) {
      const ref = S.aswBatchPerLabel[String(row.label)];
      if (ref === undefined) {
        expect(row.skipped).toBe(true);
        expect(row.score).toBeNaN();
      } else {
        expect(row.skipped).toBe(false);
        close(row.score, ref, 1e-9, `type ${row.label}`);
      }
    }
    // label 3: one batch; label 4: 2 cells in 2 batches -> both skipped; 3 subsets computed
    expect(r.perLabel.filter((row) => row.skipped).map((row) => row.label)).toEqual([3, 4]);
    expect(calls.sort((p, q) => p - q)).toEqual(r.perLabel.filter((row) => !row.skipped).map((row) => row.nCells).sort((p, q) => p - q));
  });

  it("aswBatch is NaN when no cell type qualifies", () => {
    const r = aswBatch(x, n, d, labels, new Int32Array(n), {});
    expect(r.score).toBeNaN();
    expect(r.perLabel.every((row) => row.skipped)).toBe(true);
  });

  it("isolatedLabelsAsw: default threshold, explicit thresholds, threshold = #batches", () => {
    const cases: [string, object][] = [
      ["default", {}],
      ["threshold2", { isoThreshold: 2 }],
      ["threshold3", { isoThreshold: 3 }],
      ["vsRest", { grouping: "isolated-vs-rest" }],
      ["vsRestThreshold2", { grouping: "isolated-vs-rest", isoThreshold: 2 }],
    ];
    for (const [key, opts] of cases) {
      const ref = S.isolated[key];
      const r = isolatedLabelsAsw(x, n, d, labels, batches, opts);
      expect(r.threshold, key).toBe(ref.threshold);
      expect(r.isolated.map((row) => row.label), key).toEqual(ref.isolated);
      close(r.score, ref.score, 1e-9, key);
      r.isolated.forEach((row, i) => close(row.score, ref.perLabel[i], 1e-9, `${key} ${row.label}`));
    }
    close(isolatedLabelsAsw(x, n, d, labels, batches).score, S.isolated.defaultFloat32.score, 1e-6, "float32");
  });

  it("isolatedLabelsAsw is NaN with no labels when every label is in every batch", () => {
    const lab = new Int32Array(n).map((_, i) => i % 3);
    const bat = new Int32Array(n).map((_, i) => Math.floor(i / 3) % 3);
    let called = false;
    const r = isolatedLabelsAsw(x, n, d, lab, bat, { distanceSums: (...args) => ((called = true), distanceSumsTs(...args)) });
    expect(S.isolated.allInAllBatches.isolated).toEqual([]);
    expect(r.threshold).toBe(S.isolated.allInAllBatches.threshold);
    expect(r.score).toBeNaN();
    expect(r.isolated).toEqual([]);
    expect(called).toBe(false);
  });

  it("a replacement DistanceSums kernel gives the same scores", () => {
    close(aswLabel(x, n, d, labels, { distanceSums: naiveSums }), S.aswLabel, 1e-9, "aswLabel");
    close(aswBatch(x, n, d, labels, batches, { distanceSums: naiveSums }).score, S.aswBatch, 1e-9, "aswBatch");
    close(isolatedLabelsAsw(x, n, d, labels, batches, { distanceSums: naiveSums }).score, S.isolated.default.score, 1e-9, "iso");
  });

  it("rejects inconsistent inputs", () => {
    expect(() => aswBatch(x, n, d, labels, batches.subarray(1))).toThrow(/same length/);
    expect(() => isolatedLabelsAsw(x, n, d, labels.subarray(1), batches)).toThrow(/n = 300/);
    expect(() => aswLabel(x.subarray(1), n, d, labels)).toThrow(/n×d/);
  });
});
