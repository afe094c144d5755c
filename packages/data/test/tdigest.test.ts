import { describe, expect, it } from "vitest";
import {
  DigestSet,
  TDigest,
  TDIGEST_BINARY_MAGIC,
  tdigestBufferSize,
  tdigestCapacity,
  tdigestCompression,
  tdigestScale,
  type TDigestJSON,
} from "@gm/data/tdigest";

// ---------------------------------------------------------------------------------------------
// Deterministic inputs (integer PRNG, then only +-*/ so every platform gets the same doubles).

function mulberry32(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** count / n_counts * 10,000 with small counts and library sizes 500..20,499 (Geneformer-like). */
function geneformerLike(seed: number, n: number): Float64Array {
  const r = mulberry32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const a = r();
    const b = r();
    const count = 1 + (a % 7) * (a % 3);
    const total = 500 + (b % 20000);
    out[i] = (count / total) * 10000;
  }
  return out;
}

function uniformInts(seed: number, n: number, m: number): Float64Array {
  const r = mulberry32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = r() % m;
  return out;
}

/** Uniform doubles in [0, 1) with 32 random bits. */
function uniform(seed: number, n: number): Float64Array {
  const r = mulberry32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = r() / 4294967296;
  return out;
}

const QS = [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999];

function digestOf(values: ArrayLike<number>, compression = 100): TDigest {
  const t = new TDigest(compression);
  t.update(values);
  return t;
}

// ---------------------------------------------------------------------------------------------
// A literal, unoptimised transcription of the algorithm (asin for every streamed item, arrays of
// objects), used to check the library's fast threshold path bit for bit.

class RefDigest {
  c: number;
  size: number;
  bufSize: number;
  centroids: { m: number; w: number }[] = [];
  buffer: { m: number; w: number }[] = [];
  total = 0;
  bufTotal = 0;
  min = Number.MAX_VALUE;
  max = -Number.MAX_VALUE;
  constructor(compression = 100) {
    this.c = compression < 20 ? 20 : compression > 1000 ? 1000 : compression;
    this.size = 2 * Math.ceil(this.c);
    this.bufSize = Math.trunc(7.5 + 0.37 * this.c - 2e-4 * this.c * this.c);
  }
  k(q: number): number {
    q = q > 1 ? 1 : q;
    return (this.c * (Math.asin(2 * q - 1) + Math.PI / 2)) / Math.PI;
  }
  add(x: number, w = 1): void {
    if (!Number.isFinite(x) || w <= 2.220446049250313e-16) return;
    if (this.buffer.length === this.bufSize) this.flush();
    this.buffer.push({ m: x, w });
    this.bufTotal += w;
  }
  flush(): void {
    if (this.buffer.length === 0) return;
    const buf = this.buffer.map((e, i) => ({ ...e, i })).sort((a, b) => (a.m < b.m ? -1 : b.m < a.m ? 1 : a.i - b.i));
    if (this.min > buf[0].m) this.min = buf[0].m;
    if (this.max < buf[buf.length - 1].m) this.max = buf[buf.length - 1].m;
    this.total += this.bufTotal;
    this.bufTotal = 0;
    const items: { m: number; w: number }[] = [];
    let i = 0;
    let j = 0;
    while (i < buf.length && j < this.centroids.length) items.push(buf[i].m < this.centroids[j].m ? buf[i++] : this.centroids[j++]);
    while (i < buf.length) items.push(buf[i++]);
    while (j < this.centroids.length) items.push(this.centroids[j++]);
    const out: { m: number; w: number }[] = [];
    let k1 = 0;
    let wsf = 0;
    for (const it of items) {
      const k2 = this.k((wsf + it.w) / this.total);
      if (out.length === 0) out.push({ m: it.m, w: it.w });
      else if (k2 - k1 <= 1) {
        const cur = out[out.length - 1];
        cur.w += it.w;
        cur.m += ((it.m - cur.m) * it.w) / cur.w;
      } else {
        out.push({ m: it.m, w: it.w });
        k1 = this.k(wsf / this.total);
      }
      wsf += it.w;
    }
    this.centroids = out;
    this.buffer = [];
  }
  quantile(q: number): number {
    this.flush();
    if (this.total === 0) return NaN;
    if (q <= 0) return this.min;
    if (q >= 1) return this.max;
    const cs = this.centroids;
    if (cs.length === 1) return cs[0].m;
    const cum: number[] = [];
    const bound: number[] = [];
    cum[0] = cs[0].w;
    for (let i = 1; i < cs.length; i++) {
      cum[i] = cum[i - 1] + cs[i].w;
      const a = cs[i - 1];
      const b = cs[i];
      bound[i - 1] = a.m + ((b.m - a.m) * a.w) / (a.w + b.w);
    }
    bound[cs.length - 1] = this.max;
    const index = q * this.total;
    let i = 0;
    while (i < cs.length && cum[i] < index) i++;
    if (i === cs.length) return this.max;
    const l = i > 0 ? bound[i - 1] : this.min;
    const r = i < cs.length - 1 ? bound[i] : this.max;
    const before = i > 0 ? cum[i - 1] : 0;
    return l + ((r - l) * (index - before)) / cs[i].w;
  }
  merge(o: RefDigest): void {
    o.flush();
    if (o.total) {
      for (const c of o.centroids) this.add(c.m, c.w);
      if (this.min > o.min) this.min = o.min;
      if (this.max < o.max) this.max = o.max;
    }
  }
}

function sameBits(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------

describe("parameters (crick tdigest_new)", () => {
  it("clips the compression and derives capacity and buffer size", () => {
    expect(tdigestCompression(100)).toBe(100);
    expect(tdigestCompression(5)).toBe(20);
    expect(tdigestCompression(5000)).toBe(1000);
    expect(() => tdigestCompression(NaN)).toThrow(RangeError);
    expect(tdigestCapacity(100)).toBe(200);
    expect(tdigestCapacity(37.5)).toBe(76);
    expect(tdigestBufferSize(100)).toBe(42); // int(7.5 + 37 - 2) = int(42.5)
    expect(tdigestBufferSize(20)).toBe(14); // int(7.5 + 7.4 - 0.08)
    expect(tdigestBufferSize(1000)).toBe(177); // int(7.5 + 370 - 200)
    expect(tdigestBufferSize(1)).toBe(14);
    const t = new TDigest(5);
    expect(t.compression).toBe(20);
    expect(new DigestSet(3).bufferSize).toBe(42);
  });

  it("scale function k(q) = c (asin(2q-1) + pi/2) / pi, q clipped at 1", () => {
    expect(tdigestScale(100, 0)).toBe(0);
    expect(tdigestScale(100, 0.5)).toBe(50);
    expect(tdigestScale(100, 1)).toBe(100);
    expect(tdigestScale(100, 1.5)).toBe(100);
    expect(tdigestScale(100, 0.25)).toBeCloseTo((100 * (Math.asin(-0.5) + Math.PI / 2)) / Math.PI, 14);
    expect(tdigestScale(100, 0.25)).toBeCloseTo(100 / 3, 12);
  });
});

describe("hand-worked small digests", () => {
  it("empty digest: NaN quantiles, NaN min/max, crick's sentinel min/max in the state", () => {
    const t = new TDigest();
    expect(t.quantile(0.5)).toBeNaN();
    expect(t.median()).toBeNaN();
    expect(t.min()).toBeNaN();
    expect(t.max()).toBeNaN();
    expect(t.count()).toBe(0);
    expect(t.toJSON()).toEqual({ compression: 100, centroids: [], totalWeight: 0, min: Number.MAX_VALUE, max: -Number.MAX_VALUE });
  });

  it("a single value is every quantile", () => {
    const t = new TDigest();
    t.add(3.25);
    for (const q of [0, 1e-9, 0.1, 0.5, 0.9, 1]) expect(t.quantile(q)).toBe(3.25);
    expect(t.min()).toBe(3.25);
    expect(t.max()).toBe(3.25);
    // repeated equal values fold into one centroid: still exact
    const u = new TDigest();
    for (let i = 0; i < 1000; i++) u.add(7);
    expect(u.median()).toBe(7);
    expect(u.quantile(0.01)).toBe(7);
  });

  it("two values: centroids {1:1, 2:1}, boundary 1.5, linear in between", () => {
    // Item 2: k((0+1+1)/2 = 1) - 0 = 100 > 1, so it opens a second centroid.
    const t = new TDigest();
    t.add(2);
    t.add(1); // the buffer is sorted at the flush
    expect(t.toJSON().centroids).toEqual([
      [1, 1],
      [2, 1],
    ]);
    // median: index 1, first centroid with cum >= 1 is 0: l = min = 1, r = 1 + (2-1)*1/2 = 1.5,
    // 1 + (1.5 - 1) * (1 - 0) / 1 = 1.5
    expect(t.median()).toBe(1.5);
    expect(t.quantile(0.25)).toBe(1.25); // 1 + 0.5 * 0.5 / 1
    expect(t.quantile(0.75)).toBe(1.75); // i = 1: l = 1.5, r = max = 2, 1.5 + 0.5 * (1.5 - 1) / 1
    expect(t.quantile(0)).toBe(1);
    expect(t.quantile(1)).toBe(2);
  });

  it("three values {1, 2, 4}: median 2.25 from the weight-proportional boundaries (not 2)", () => {
    // k(2/3) = 100*(asin(1/3)+pi/2)/pi = 60.8 > 1: new centroid, k1 = k(1/3) = 39.2;
    // k(1) - 39.2 = 60.8 > 1: new centroid. Boundaries 1.5 and 3; median index 1.5 lies in
    // centroid 1 (cum 2): 1.5 + (3 - 1.5) * (1.5 - 1) / 1 = 2.25.
    const t = digestOf([4, 1, 2]);
    expect(t.centroidCount()).toBe(3);
    expect(t.median()).toBe(2.25);
    expect(t.quantile(0.1)).toBe(1 + (1.5 - 1) * 0.3); // index 0.3 in centroid 0
    expect(t.quantile(0.9)).toBe(3 + (4 - 3) * (2.7 - 2)); // index 2.7 in the last centroid
  });

  it("weighted points: boundary m0 + (m1 - m0) * w0 / (w0 + w1)", () => {
    const t = new TDigest();
    t.add(1, 3);
    t.add(5, 1);
    // W = 4, boundary 1 + 4 * 3/4 = 4. median index 2 in centroid 0: 1 + (4 - 1) * 2 / 3 = 3
    expect(t.median()).toBe(3);
    // q = 0.9: index 3.6 in centroid 1 (cum 4): l = 4, r = max = 5, 4 + 1 * (3.6 - 3) / 1
    expect(t.quantile(0.9)).toBe(4 + (3.6 - 3));
    expect(t.count()).toBe(4);
  });

  it("items fold when k2 - k1 <= 1 and the mean moves by (x - mean) * w / weight", () => {
    // With W = 1000 every point sits near the middle of q: k rises by about 100/pi/1000 = 0.03 per
    // point, so the first points after the first centroid's opening fold into it until
    // k exceeds 1. Hand check of the running mean of the first centroid: all equal -> exact.
    const t = new TDigest();
    for (let i = 0; i < 1000; i++) t.add(i % 2 === 0 ? 10 : 20);
    const { means, weights } = t.centroids();
    let w = 0;
    for (let k = 0; k < weights.length; k++) w += weights[k];
    expect(w).toBe(1000);
    for (let k = 1; k < means.length; k++) expect(means[k]).toBeGreaterThanOrEqual(means[k - 1]);
    expect(means.length).toBeLessThanOrEqual(tdigestCapacity(100));
  });

  it("ignores non-finite values and weights <= DBL_EPSILON; rejects bad weights and q", () => {
    const t = new TDigest();
    t.add(NaN);
    t.add(Infinity);
    t.add(-Infinity);
    t.add(1, 1e-17);
    expect(t.count()).toBe(0);
    t.add(2, 2.220446049250313e-16); // == DBL_EPSILON: ignored
    expect(t.count()).toBe(0);
    t.add(2, 4.440892098500626e-16);
    expect(t.count()).toBe(4.440892098500626e-16);
    expect(() => t.add(1, 0)).toThrow(RangeError);
    expect(() => t.add(1, -1)).toThrow(RangeError);
    expect(() => t.add(1, Infinity)).toThrow(RangeError);
    expect(() => t.add(1, NaN)).toThrow(RangeError);
    expect(() => t.quantile(NaN)).toThrow(RangeError);
    const s = new DigestSet(2);
    expect(() => s.add(2, 1)).toThrow(RangeError);
    expect(() => s.add(-1, 1)).toThrow(RangeError);
    expect(() => s.add(0.5, 1)).toThrow(RangeError);
    expect(() => s.addBatch([0, 7], [1, 2])).toThrow(RangeError);
  });

  it("buffer: 42 points wait in the buffer; the 43rd add flushes the first 42 before appending", () => {
    // c = 100: buffer of 42. count() includes buffered weight without flushing.
    const vals = geneformerLike(11, 43);
    const a = new TDigest();
    const b = new TDigest();
    for (let i = 0; i < 42; i++) a.add(vals[i]);
    for (let i = 0; i < 42; i++) b.add(vals[i]);
    expect(a.count()).toBe(42);
    // b flushes after 42 (as a query would), a flushes inside the 43rd add: same state.
    b.flush();
    a.add(vals[42]);
    b.add(vals[42]);
    expect(a.toJSON()).toEqual(b.toJSON());
    // The flush of the 42 happened in a single merge: with W = 42 every point is its own centroid
    // except where k2 - k1 <= 1 (the middle): compare with the reference transcription.
    const ref = new RefDigest();
    for (let i = 0; i < 43; i++) ref.add(vals[i]);
    ref.flush();
    expect(a.toJSON().centroids).toEqual(ref.centroids.map((c) => [c.m, c.w]));
  });
});

describe("bit-exact against crick 0.0.3 (values produced by its C code, compiled from dask/crick tag 0.0.3)", () => {
  const v1 = geneformerLike(1, 20000);

  it("20,000 Geneformer-like values, c = 100", () => {
    const t = digestOf(v1);
    expect(Array.from(t.quantiles(QS))).toEqual([
      0.4894785634722153, 0.5000360325091397, 0.6344482173837093, 1.1104538874264174, 3.1990890127098703, 7.354047331895283,
      16.02296343811384, 72.61636910210186, 182.87266967637552,
    ]);
    const j = t.toJSON();
    expect(j.centroids.length).toBe(130);
    expect(j.totalWeight).toBe(20000);
    expect(j.min).toBe(0.4878524734120402);
    expect(j.max).toBe(255.40275049115914);
  });

  it("the same values with a median query (hence a flush) after every 1,000 adds", () => {
    const t = new TDigest();
    const mids: number[] = [];
    v1.forEach((x, i) => {
      t.add(x);
      if ((i + 1) % 1000 === 0 && i + 1 < v1.length) mids.push(t.median());
    });
    expect(mids).toEqual([
      2.773431823922463, 2.9880716294586263, 3.0507542085416337, 3.0315070043099093, 3.061335206604277, 3.101394676083754,
      3.1755507985913116, 3.1782953782623293, 3.1987898971913578, 3.1820925066199504, 3.214961021824823, 3.208556475760731,
      3.2010509960063285, 3.2265055400886413, 3.217178770295371, 3.2190615093973087, 3.231800736225495, 3.2152082897137073,
      3.209366012247736,
    ]);
    // Flush timing changes the digest, exactly as in crick.
    expect(Array.from(t.quantiles(QS))).toEqual([
      0.489473474263602, 0.5000817554333901, 0.6345003532225159, 1.1103614381368612, 3.199213519229162, 7.355363522767508,
      16.031718442398176, 73.08481847174748, 182.87266967637552,
    ]);
  });

  it("four digests of 5,000 merged in order into an empty digest (Geneformer's per-file merge)", () => {
    const parts = [0, 1, 2, 3].map((k) => digestOf(v1.subarray(k * 5000, (k + 1) * 5000)));
    const all = new TDigest();
    for (const p of parts) all.merge(p);
    expect(Array.from(all.quantiles(QS))).toEqual([
      0.4894971298049807, 0.5003037647136839, 0.6341406491121556, 1.1134770537815115, 3.1981570359078684, 7.348874883272795,
      16.013400307792047, 72.74669564355706, 185.24709289448822,
    ]);
  });

  it("c = 20 with integer values and weights 1..3", () => {
    const t = new TDigest(20);
    uniformInts(4, 3000, 50).forEach((x, i) => t.add(x, 1 + (i % 3)));
    expect(Array.from(t.quantiles(QS))).toEqual([
      0, 0.1499479347448802, 4.289848107307996, 11.813013806683458, 24.380690425564275, 36.70713295893561, 43.999169579995964,
      48.80862163787187, 48.99116847826087,
    ]);
    expect(t.centroidCount()).toBe(27);
    expect(t.count()).toBe(6000);
  });

  it("c = 1000", () => {
    const t = digestOf(v1, 1000);
    expect(Array.from(t.quantiles(QS))).toEqual([
      0.4894683074005557, 0.5001045655388318, 0.6352909304203, 1.1084992024476301, 3.1945194008502527, 7.351563359752594,
      16.017602035901493, 71.90374081591482, 175.81432521168134,
    ]);
  });

  it("300 values, c = 20: every centroid", () => {
    const t = digestOf(geneformerLike(6, 300), 20);
    const flat = [
      0.4913280597454921, 1, 0.4967259447052849, 4, 0.501322184059769, 4, 0.5127196383157642, 5, 0.5447468158931232, 7,
      0.6043304440788555, 10, 0.6730087676504704, 13, 0.8446212334020236, 17, 1.0778179053606163, 16, 1.3046384011153722, 10,
      1.6497655886330618, 21, 2.1271812650902335, 17, 2.68936401827366, 19, 3.282479947294105, 19, 3.839653878499858, 22,
      4.807444189344096, 21, 6.577469759350446, 19, 7.796504139736647, 5, 8.992524638991537, 17, 12.456532433719392, 16,
      17.635598802722573, 13, 26.057435604749443, 8, 33.97383895681807, 6, 51.6650893552203, 6, 75.035967545198, 3,
      95.78544061302681, 1,
    ];
    const j = t.toJSON();
    expect(j.centroids.flat()).toEqual(flat);
    expect([j.totalWeight, j.min, j.max]).toEqual([300, 0.4913280597454921, 95.78544061302681]);
    expect(Array.from(t.quantiles(QS))).toEqual([
      0.4916519328430797, 0.4957158505599888, 0.6276996513887921, 1.1858188868254769, 3.1611095147825607, 7.542538643822855,
      19.371346763834318, 75.0298073254935, 94.22923013293959,
    ]);
  });
});

describe("fast path = literal transcription, bit for bit", () => {
  it("random interleavings of weighted adds, merges and queries at several compressions", () => {
    for (const [seed, comp] of [
      [21, 100],
      [22, 20],
      [23, 37.5],
      [24, 500],
    ] as const) {
      const r = mulberry32(seed);
      const nd = 3;
      const mine = Array.from({ length: nd }, () => new TDigest(comp));
      const ref = Array.from({ length: nd }, () => new RefDigest(comp));
      const outMine: number[] = [];
      const outRef: number[] = [];
      for (let op = 0; op < 30000; op++) {
        const d = r() % nd;
        const p = r() % 1000;
        if (p < 970) {
          const a = r();
          const x = p < 100 ? a % 5 : p < 500 ? (a % 100000) / 997 : ((a % 2000001) - 600000) / 1013;
          const w = p % 5 === 0 ? 1 + (r() % 9) : p % 7 === 0 ? 0.5 + (r() % 1000) / 333 : 1;
          mine[d].add(x, w);
          ref[d].add(x, w);
        } else if (p < 975) {
          const o = (d + 1 + (r() % (nd - 1))) % nd;
          mine[d].merge(mine[o]);
          ref[d].merge(ref[o]);
        } else {
          const q = (r() % 10001) / 10000;
          outMine.push(mine[d].quantile(q));
          outRef.push(ref[d].quantile(q));
        }
      }
      for (let d = 0; d < nd; d++) {
        for (const q of QS) {
          outMine.push(mine[d].quantile(q));
          outRef.push(ref[d].quantile(q));
        }
        const j = mine[d].toJSON();
        expect(j.centroids).toEqual(ref[d].centroids.map((c) => [c.m, c.w]));
        expect([j.totalWeight, j.min, j.max]).toEqual([ref[d].total, ref[d].min, ref[d].max]);
      }
      expect(sameBits(outMine, outRef)).toBe(true);
    }
  });

  it("one long stream (200,000 values) with periodic queries", () => {
    const vals = geneformerLike(31, 200000);
    const t = new TDigest();
    const ref = new RefDigest();
    const a: number[] = [];
    const b: number[] = [];
    vals.forEach((x, i) => {
      t.add(x);
      ref.add(x);
      if (i % 9973 === 0) {
        a.push(t.quantile(0.5));
        b.push(ref.quantile(0.5));
      }
    });
    for (const q of QS) {
      a.push(t.quantile(q));
      b.push(ref.quantile(q));
    }
    expect(sameBits(a, b)).toBe(true);
  });
});

describe("accuracy", () => {
  function rankError(sorted: Float64Array, est: number, q: number): number {
    // fraction of values below est vs q (the estimate can fall between order statistics)
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid] < est) lo = mid + 1;
      else hi = mid;
    }
    return Math.abs(lo / sorted.length - q);
  }

  it("quantiles of 100,000 uniform values within 0.1% rank error (0.05% in the tails)", () => {
    const vals = uniform(41, 100000);
    const t = digestOf(vals);
    const sorted = vals.slice().sort();
    for (const q of [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999]) {
      const tol = q < 0.02 || q > 0.98 ? 0.0005 : 0.001;
      expect(rankError(sorted, t.quantile(q), q)).toBeLessThan(tol);
    }
  });

  it("quantiles of 100,000 skewed Geneformer-like values within 0.2% rank error", () => {
    const vals = geneformerLike(42, 100000);
    const t = digestOf(vals);
    const sorted = vals.slice().sort();
    for (const q of [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]) {
      expect(rankError(sorted, t.quantile(q), q)).toBeLessThan(0.002);
    }
    // median vs exact median, relative
    const exact = (sorted[49999] + sorted[50000]) / 2;
    expect(Math.abs(t.median() - exact) / exact).toBeLessThan(0.005);
  });

  it("the merge of two halves is close to the digest of the whole (median within 1%)", () => {
    for (const [seed, gen] of [
      [51, uniform],
      [52, geneformerLike],
    ] as const) {
      const vals = gen(seed, 60000);
      const whole = digestOf(vals);
      const a = digestOf(vals.subarray(0, 30000));
      const b = digestOf(vals.subarray(30000));
      const merged = new TDigest();
      merged.merge(a, b);
      expect(merged.count()).toBe(60000);
      expect(merged.min()).toBe(whole.min());
      expect(merged.max()).toBe(whole.max());
      const m = merged.median();
      const w = whole.median();
      expect(Math.abs(m - w) / Math.abs(w)).toBeLessThan(0.01);
      for (const q of [0.1, 0.25, 0.75, 0.9]) {
        expect(Math.abs(merged.quantile(q) - whole.quantile(q)) / Math.abs(whole.quantile(q))).toBeLessThan(0.03);
      }
    }
  });
});

describe("determinism and serialisation", () => {
  it("same inputs in the same order give bit-identical digests", () => {
    const vals = geneformerLike(61, 50000);
    const a = digestOf(vals);
    const b = digestOf(vals);
    expect(a.toJSON()).toEqual(b.toJSON());
    expect(sameBits(a.toBinary(), b.toBinary())).toBe(true);
  });

  it("JSON round trip (through JSON text) is identical and behaves identically afterwards", () => {
    const vals = geneformerLike(62, 12345);
    const t = digestOf(vals);
    const json = t.toJSON();
    const back = TDigest.fromJSON(JSON.parse(JSON.stringify(json)) as TDigestJSON);
    expect(back.toJSON()).toEqual(json);
    expect(TDigest.fromJSON(JSON.parse(JSON.stringify(t)) as TDigestJSON).toJSON()).toEqual(json); // stringify(digest) itself
    expect(sameBits(back.quantiles(QS), t.quantiles(QS))).toBe(true);
    const more = geneformerLike(63, 5000);
    t.update(more);
    back.update(more);
    expect(back.toJSON()).toEqual(t.toJSON());
    // flat form accepted too
    const flat = TDigest.fromJSON({
      compression: 100,
      means: json.centroids.map((c) => c[0]),
      weights: json.centroids.map((c) => c[1]),
      totalWeight: json.totalWeight,
      min: json.min,
      max: json.max,
    });
    expect(flat.toJSON()).toEqual(json);
    // empty digest round trip keeps crick's sentinels
    const e = TDigest.fromJSON(JSON.parse(JSON.stringify(new TDigest(50).toJSON())) as TDigestJSON);
    expect(e.toJSON()).toEqual({ compression: 50, centroids: [], totalWeight: 0, min: Number.MAX_VALUE, max: -Number.MAX_VALUE });
    expect(() => TDigest.fromJSON({ compression: 100 } as unknown as TDigestJSON)).toThrow(TypeError);
  });

  it("binary round trip of a set (also from unaligned bytes) is identical", () => {
    const s = new DigestSet(5, 100);
    const vals = geneformerLike(64, 20000);
    for (let k = 0; k < vals.length; k++) s.add(k % 4, vals[k]); // digest 4 stays empty
    const bin = s.toBinary();
    expect(bin[0]).toBe(TDIGEST_BINARY_MAGIC);
    expect(bin[3]).toBe(5);
    const back = DigestSet.fromBinary(bin);
    expect(sameBits(back.toBinary(), bin)).toBe(true);
    const bytes = new Uint8Array(bin.byteLength + 3);
    bytes.set(new Uint8Array(bin.buffer, bin.byteOffset, bin.byteLength), 3);
    const back2 = DigestSet.fromBytes(bytes.subarray(3));
    expect(sameBits(back2.medians(), s.medians())).toBe(true);
    expect(back2.median(4)).toBeNaN();
    for (let i = 0; i < 4; i++) expect(back.getJSON(i)).toEqual(s.getJSON(i));
    expect(() => DigestSet.fromBinary(bin.subarray(0, bin.length - 1))).toThrow(RangeError);
    expect(() => DigestSet.fromBinary(new Float64Array([1, 2, 3, 4]))).toThrow(RangeError);
    // a single digest
    const t = digestOf(vals.subarray(0, 777));
    const tb = TDigest.fromBinary(t.toBinary());
    expect(tb.toJSON()).toEqual(t.toJSON());
  });
});

describe("DigestSet", () => {
  it("interleaved per-gene adds equal separate TDigests, bit for bit", () => {
    const G = 7;
    const set = new DigestSet(G);
    const singles = Array.from({ length: G }, () => new TDigest());
    const r = mulberry32(71);
    const vals = geneformerLike(72, 40000);
    const genes = new Int32Array(vals.length);
    for (let k = 0; k < vals.length; k++) genes[k] = r() % G;
    set.addBatch(genes, vals, 0, 20000);
    for (let k = 20000; k < vals.length; k++) set.add(genes[k], vals[k]);
    for (let k = 0; k < vals.length; k++) singles[genes[k]].add(vals[k]);
    for (let g = 0; g < G; g++) {
      expect(set.count(g)).toBe(singles[g].count());
      expect(set.getJSON(g)).toEqual(singles[g].toJSON());
      expect(set.median(g)).toBe(singles[g].median());
      expect(set.min(g)).toBe(singles[g].min());
      expect(set.max(g)).toBe(singles[g].max());
    }
    expect(sameBits(set.medians(), Float64Array.from(singles.map((s) => s.median())))).toBe(true);
  });

  it("NaN in a batch marks 'not detected' and is skipped (Geneformer replaces zeros with NaN)", () => {
    const set = new DigestSet(3);
    set.addBatch([0, 1, 2, 0, 1, 2], [1, NaN, 3, 5, NaN, 3]);
    expect(set.count(0)).toBe(2);
    expect(set.count(1)).toBe(0);
    expect(set.median(1)).toBeNaN();
    expect(set.median(2)).toBe(3);
  });

  it("mergeSet / mergeFrom / mergeDigest equal TDigest.merge", () => {
    const G = 4;
    const a = new DigestSet(G);
    const b = new DigestSet(G);
    const ta = Array.from({ length: G }, () => new TDigest());
    const tb = Array.from({ length: G }, () => new TDigest());
    const vals = geneformerLike(81, 30000);
    vals.forEach((x, k) => {
      const g = k % G;
      if (k % 3 === 0) {
        a.add(g, x);
        ta[g].add(x);
      } else {
        b.add(g, x);
        tb[g].add(x);
      }
    });
    const total = new DigestSet(G);
    total.mergeSet(a);
    total.mergeSet(b);
    for (let g = 0; g < G; g++) {
      const t = new TDigest();
      t.merge(ta[g], tb[g]);
      expect(total.getJSON(g)).toEqual(t.toJSON());
    }
    const one = new DigestSet(2);
    one.mergeDigest(1, ta[0]);
    one.mergeFrom(0, one, 1);
    expect(one.getJSON(0)).toEqual({ ...ta[0].toJSON() });
    expect(() => one.mergeFrom(0, one, 0)).toThrow(RangeError);
    expect(() => total.mergeSet(new DigestSet(3))).toThrow(RangeError);
  });

  it("get / copyFrom / reset / setJSON", () => {
    const set = new DigestSet(3);
    for (let k = 0; k < 1000; k++) set.add(k % 2, k * 0.5);
    const g0 = set.get(0); // includes the buffered points
    expect(g0.count()).toBe(500);
    expect(g0.toJSON()).toEqual(set.getJSON(0));
    set.copyFrom(2, set, 1);
    expect(set.getJSON(2)).toEqual(set.getJSON(1));
    set.reset(2);
    expect(set.count(2)).toBe(0);
    expect(set.median(2)).toBeNaN();
    set.setJSON(2, g0.toJSON());
    expect(set.getJSON(2)).toEqual(g0.toJSON());
    expect(() => set.setJSON(2, new TDigest(50).toJSON())).toThrow(RangeError);
    expect(set.byteLength).toBeGreaterThan(3 * (42 + 200) * 16);
  });
});

describe("WasmDigestSet (the WebAssembly port of add/flush)", () => {
  it("produces bit-identical digests to DigestSet, including after merges (weighted buffers)", async () => {
    const { DigestSet, WasmDigestSet } = await import("@gm/data");
    let s = 12345;
    const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
    for (const c of [100, 20, 500]) {
      const G = 50;
      const a = new DigestSet(G, c);
      const b = new WasmDigestSet(G, c);
      const other = new DigestSet(G, c);
      for (let round = 0; round < 6; round++) {
        for (let g = 0; g < G; g++) {
          const n = Math.floor(rnd() * 400);
          const vals = Float64Array.from({ length: n }, () => (rnd() < 0.02 ? NaN : Math.exp(rnd() * 6) * (1 + Math.floor(rnd() * 3))));
          a.addRun(g, vals);
          b.addRun(g, vals);
          for (const v of vals.subarray(0, 30)) other.add(g, v);
        }
        if (round === 2) for (let g = 0; g < G; g++) (a.mergeFrom(g, other, g), b.mergeFrom(g, other, g));
        if (round === 4) for (let g = 0; g < G; g += 3) expect(b.quantile(g, 0.5)).toBe(a.quantile(g, 0.5));
      }
      const ba = a.toBinary();
      const bb = b.toBinary();
      expect(bb.length).toBe(ba.length);
      expect(Buffer.from(bb.buffer, bb.byteOffset, bb.byteLength).equals(Buffer.from(ba.buffer, ba.byteOffset, ba.byteLength))).toBe(true);
    }
  });
});
