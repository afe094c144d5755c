// The native silhouette kernel (blocked SGEMM distance sums) against the float64 direct TS sums.
import { describe, expect, it } from "vitest";
import { distanceSums } from "@gm/engine";
import { distanceSumsTs, silhouetteFromSums } from "@gm/eval";

function blobs(n: number, d: number, k: number, seed: number): { x: Float32Array; labels: Int32Array } {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  const x = new Float32Array(n * d), labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % k;
    for (let c = 0; c < d; c++) x[i * d + c] = 50 + labels[i] * (c % 3) + Math.sqrt(-2 * Math.log(u())) * Math.cos(6.283185307 * u());
  }
  return { x, labels };
}

describe("native distance sums", () => {
  it("match float64 direct sums (across several GEMM blocks, offset data) and give the same silhouettes", () => {
    const n = 5000, d = 24, k = 4;
    const { x, labels } = blobs(n, d, k, 7);
    const a = distanceSums(x, n, d, labels, k);
    const b = distanceSumsTs(x, n, d, labels, k);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
    expect(worst).toBeLessThan(1e-5);
    const sa = silhouetteFromSums(a, n, k, labels), sb = silhouetteFromSums(b, n, k, labels);
    for (let i = 0; i < n; i++) expect(Math.abs(sa[i] - sb[i])).toBeLessThan(1e-5);
  });

  it("a point's distance to itself is exactly 0 and bad arguments are refused", () => {
    const x = Float32Array.from([1, 2, 1, 2, 4, 6]);
    const s = distanceSums(x, 3, 2, Int32Array.from([0, 0, 1]), 2);
    expect(Array.from(s)).toEqual([0, 5, 0, 5, 10, 0]);
    expect(() => distanceSums(x, 3, 2, Int32Array.from([0, 0, 2]), 2)).toThrow(/outside/);
    expect(() => distanceSums(x, 4, 2, Int32Array.from([0, 0, 1, 1]), 2)).toThrow(/n x d/);
  });
});
