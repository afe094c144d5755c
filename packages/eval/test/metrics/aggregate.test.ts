import { describe, expect, it } from "vitest";
import { avgBatch, avgBio, nanMean, scibMetricsTotal } from "../../src/metrics/index.js";
import { close, fixture, num } from "./helpers.js";

const A = fixture.aggregate;

describe("aggregates (np.nanmean / np.mean as GeneMamba, scGPT and scib-metrics use them)", () => {
  it("avgBio", () => {
    for (const c of A.bio) {
      const m = { nmi: num(c.nmi), ari: num(c.ari), aswLabel: num(c.aswLabel) };
      close(avgBio(m), c.omit, 1e-15, "omit");
      close(avgBio(m, { nan: "propagate" }), c.propagate, 1e-15, "propagate");
    }
  });
  it("avgBatch", () => {
    for (const c of A.batch) {
      const m = { aswBatch: num(c.aswBatch), graphConnectivity: num(c.graphConnectivity) };
      close(avgBatch(m), c.omit, 1e-15, "omit");
      close(avgBatch(m, { nan: "propagate" }), c.propagate, 1e-15, "propagate");
    }
  });
  it("scibMetricsTotal = 0.4·batch + 0.6·bio", () => {
    for (const c of A.total) close(scibMetricsTotal(c.bio, c.batch), c.total, 1e-15);
    expect(nanMean([])).toBeNaN();
    // @ts-expect-error invalid mode
    expect(() => avgBio({ nmi: 1, ari: 1, aswLabel: 1 }, { nan: "drop" })).toThrow(/omit/);
  });
});
