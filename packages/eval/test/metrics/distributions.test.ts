import { describe, expect, it } from "vitest";
import { cosineSimilarity, distributionDistances, histogram, rocAuc } from "../../src/metrics/index.js";
import { allClose, close, fixture } from "./helpers.js";

const D = fixture.distributions;

describe("gene-pair distribution metrics against numpy / scipy / sklearn", () => {
  it("histogram = np.histogram (edges, counts, probabilities), including bin edges and out-of-range values", () => {
    const hp = histogram(D.pos, D.bins, D.range[0], D.range[1]);
    allClose(hp.edges, D.edges, 0, "edges");
    expect(Array.from(hp.counts)).toEqual(D.countsPos);
    allClose(hp.probabilities, D.probPos, 1e-15, "p");
    const hq = histogram(D.neg, D.bins, D.range[0], D.range[1]);
    expect(Array.from(hq.counts)).toEqual(D.countsNeg);
    allClose(hq.probabilities, D.probNeg, 1e-15, "q");
    const h20 = histogram(D.pos, D.hist20.bins, D.hist20.range[0], D.hist20.range[1]);
    allClose(h20.edges, D.hist20.edges, 0, "edges20");
    expect(Array.from(h20.counts)).toEqual(D.hist20.counts);
  });

  it("distributionDistances: L2, KL = scipy.stats.entropy(p+eps, q+eps), JS distance = jensenshannon(p, q)", () => {
    const r = distributionDistances(D.pos, D.neg, { bins: D.bins, range: D.range, eps: D.eps });
    for (const key of ["euclidean", "kl", "js", "posMean", "posStd", "negMean", "negStd"]) {
      close((r as unknown as Record<string, number>)[key], D.distances[key], 1e-12, key);
    }
    const defaults = distributionDistances(D.pos, D.neg);
    expect(defaults.kl).toBe(r.kl);
    expect(defaults.js).toBeLessThanOrEqual(Math.sqrt(Math.log(2)));
  });

  it("rocAuc = sklearn roc_auc_score, with and without ties", () => {
    const labels = D.rocLabels as number[];
    const scores = [...D.pos, ...D.neg];
    close(rocAuc(scores, labels), D.rocAuc, 1e-12, "auc");
    close(rocAuc(D.rocScoresTied, labels), D.rocAucTied, 1e-12, "auc tied");
    close(rocAuc(D.rocSmall.scores, D.rocSmall.labels), D.rocSmall.auc, 1e-12, "auc small");
  });

  it("cosineSimilarity = sklearn cosine_similarity (zero vector gives 0)", () => {
    const vals = (D.cosine.a as number[][]).map((a, i) => cosineSimilarity(a, D.cosine.b[i]));
    allClose(vals, D.cosine.values, 1e-12, "cos");
    expect(vals[4]).toBe(0);
  });

  it("rejects invalid input with one clear sentence", () => {
    expect(() => rocAuc([0.1, 0.2], [1, 1])).toThrow(/only one class/);
    expect(() => rocAuc([0.1, 0.2], [1, 2])).toThrow(/0 or 1/);
    expect(() => rocAuc([0.1], [1, 0])).toThrow(/same length/);
    expect(() => cosineSimilarity([1, 2], [1])).toThrow(/same length/);
    expect(() => histogram([0], 0, -1, 1)).toThrow(/bins/);
    expect(() => histogram([0], 10, 1, 1)).toThrow(/lo < hi/);
    expect(() => distributionDistances([5], [0])).toThrow(/no positive value/);
    expect(() => distributionDistances([0], [])).toThrow(/no negative value/);
  });
});
