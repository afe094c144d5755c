import { describe, expect, it } from "vitest";
import { aswLabel, distanceSumsTs, integrationScores, isolatedLabelsAsw, type DistanceSums } from "@gm/eval";

describe("integrationScores", () => {
  it("computes the cell-type distance sums once for cell-type ASW and isolated-label ASW, with the same results", () => {
    const n = 60, d = 4;
    let s = 5;
    const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
    const labels: string[] = [], batches: string[] = [];
    const x = new Float32Array(n * d);
    for (let i = 0; i < n; i++) {
      const t = i % 3;
      labels.push(`t${t}`);
      batches.push(t === 2 ? "b0" : i % 2 ? "b0" : "b1"); // t2 lives in one batch: isolated
      for (let c = 0; c < d; c++) x[i * d + c] = (c === t ? 2 : 0) + u();
    }
    let fullLabelCalls = 0;
    const counting: DistanceSums = (xx, nn, dd, codes, k) => {
      if (nn === n && k === 3) fullLabelCalls++;
      return distanceSumsTs(xx, nn, dd, codes, k);
    };
    const r = integrationScores({ x, n, d, labels, batches, k: 5, seed: 0, louvain: false, umapMaxCells: 0, distanceSums: counting });
    expect(fullLabelCalls).toBe(1);
    expect(r.metrics.asw_label).toBeCloseTo(aswLabel(x, n, d, labels), 12);
    expect(r.metrics.isolated_label_asw).toBeCloseTo(isolatedLabelsAsw(x, n, d, labels, batches).score, 12);
    expect(r.isolatedLabels).toEqual(["t2"]);
  });
});
