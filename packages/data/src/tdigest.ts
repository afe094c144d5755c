/**
 * Merging t-digest: an exact port of the digest in dask/crick (`crick/tdigest_stubs.c`), the one
 * Geneformer used (`obtain_nonzero_median_digests.ipynb`) to compute its per-gene non-zero medians.
 *
 * Which crick: this is crick 0.0.1-0.0.3 (tags of December 2016; 0.0.4 only followed in September
 * 2023, so these are the releases Geneformer's medians came from), which is what the reference
 * (tokenization-and-data.md section 3) describes. Its quantile uses weight-proportional boundaries
 * between neighbouring centroids, b_i = m_i + (m_{i+1} - m_i) * w_i / (w_i + w_{i+1}), and returns
 * l + (r - l) * (q*W - cum[i-1]) / w_i inside the first centroid i with cum[i] >= q*W. crick >= 0.0.4
 * interpolates between centroid means instead (different numbers); add/flush/merge are the same in
 * both. Checked bit for bit against the C of tag 0.0.3 compiled as is, on tens of millions of
 * random add/merge/quantile operations.
 *
 * Port rules (docs: /work/shared/reference/tokenization-and-data.md section 3):
 * - compression c clipped to [20, 1000]; centroid capacity 2*ceil(c); buffer int(7.5 + 0.37c - 2e-4c^2)
 *   (42 at c = 100);
 * - add(x, w) ignores non-finite x and w <= DBL_EPSILON; a full buffer is flushed *before* appending;
 * - flush: stable sort of the buffer by mean; min/max from the buffer ends; total weight updated
 *   before merging; buffer and centroids merged in mean order (existing centroid first on equal
 *   means); every item streamed through centroid_merge with k(q) = c*(asin(2q-1) + pi/2)/pi;
 * - merge(other): flush other, add each of its centroids as a weighted point through the buffer,
 *   then update min/max;
 * - every query (quantile, min, max, serialisation) flushes first, exactly as crick does, so the
 *   sequence of calls matters just as it does in crick.
 *
 * All arithmetic is double precision and follows crick's operation order, so results are
 * bit-identical to crick given the same call sequence (up to the last-ulp differences between V8's
 * Math.asin and the C library's asin, which can only matter when k2 - k1 is within ~1e-14 of 1).
 *
 * Speed: centroid_merge needs k(q) of every streamed item; instead of one asin per item this port
 * computes, once per centroid, the q at which k reaches k1 + 1 in closed form (one sqrt) and only
 * evaluates crick's exact asin expression for items within 1e-9 of that threshold. Away from the
 * threshold the decision cannot differ (floating-point error there is ~1e-14 in q), so the result
 * is the same as evaluating asin for every item.
 *
 * One divergence from the C code, where C has undefined behaviour: if rounding makes q*W exceed the
 * sequentially accumulated cumulative weight of the last centroid, C reads past the centroid array;
 * this port returns max there (the value C returns whenever that stale memory is non-zero).
 */

/** DBL_EPSILON. */
const DBL_EPSILON = 2.220446049250313e-16;
/** DBL_MAX: crick's initial min (and -DBL_MAX its initial max). */
const DBL_MAX = Number.MAX_VALUE;
const PI = Math.PI;
const PI_2 = Math.PI / 2;
/** Half-width (in q) of the band around the merge threshold where the exact asin test is used. */
const Q_MARGIN = 1e-9;
/** Extra centroid slots beyond crick's 2*ceil(c) (the bound holds in exact arithmetic). */
const CAPACITY_SLACK = 2;

/** Magic number opening the binary form ("gmtd" as a big-endian uint32). */
export const TDIGEST_BINARY_MAGIC = 0x676d7464;
/** Version of the binary form. */
export const TDIGEST_BINARY_VERSION = 1;

/** crick's clipping of the compression parameter. */
export function tdigestCompression(compression: number): number {
  if (!Number.isFinite(compression)) throw new RangeError("t-digest compression must be finite");
  if (compression < 20) return 20;
  if (compression > 1000) return 1000;
  return compression;
}

/** crick's centroid capacity: 2 * ceil(c) (200 at c = 100). */
export function tdigestCapacity(compression: number): number {
  return 2 * Math.ceil(tdigestCompression(compression));
}

/** crick's buffer size: int(7.5 + 0.37c - 2e-4 c^2) (42 at c = 100). */
export function tdigestBufferSize(compression: number): number {
  const c = tdigestCompression(compression);
  return Math.trunc(7.5 + 0.37 * c - 2e-4 * c * c);
}

/** crick's `integrate`: the scale function k(q) = c * (asin(2q - 1) + pi/2) / pi, q clipped at 1. */
export function tdigestScale(c: number, q: number): number {
  q = q > 1 ? 1 : q;
  return (c * (Math.asin(2 * q - 1) + PI_2)) / PI;
}

/** Where a DigestSet's arrays live (fresh, zero-filled arrays of the requested length). */
export interface DigestStorage {
  float64(name: string, n: number): Float64Array;
  int32(name: string, n: number): Int32Array;
  uint8(name: string, n: number): Uint8Array;
}

const jsStorage: DigestStorage = {
  float64: (_name, n) => new Float64Array(n),
  int32: (_name, n) => new Int32Array(n),
  uint8: (_name, n) => new Uint8Array(n),
};

/** The closed-form constants a flush uses (shared with the WebAssembly port). */
export function tdigestFlushConstants(compression: number): { cosPc: number; sinPc: number; qFirst: number; qAlways: number } {
  const c = tdigestCompression(compression);
  const cosPc = Math.cos(PI / c);
  return { cosPc, sinPc: Math.sin(PI / c), qFirst: 0.5 - 0.5 * cosPc, qAlways: (1 + cosPc) / 2 };
}

/** JSON form of one digest: crick's pickled state (centroids, total_weight, min, max) plus c. */
export interface TDigestJSON {
  compression: number;
  /** [mean, weight] pairs in ascending mean order. */
  centroids: [number, number][];
  totalWeight: number;
  /** DBL_MAX while empty (as in crick). */
  min: number;
  /** -DBL_MAX while empty (as in crick). */
  max: number;
}

/** Also accepted by fromJSON: the centroids as two flat arrays. */
export interface TDigestJSONFlat {
  compression: number;
  means: ArrayLike<number>;
  weights: ArrayLike<number>;
  totalWeight: number;
  min: number;
  max: number;
}

// Scratch shared by all digests: a flush or a query never re-enters another one.
let scratchMean = new Float64Array(2 * 1000 + CAPACITY_SLACK + 200);
let scratchWeight = new Float64Array(2 * 1000 + CAPACITY_SLACK + 200);

/**
 * Many t-digests of the same compression (e.g. one per gene) in flat typed arrays.
 *
 * Layout: digest i owns the block [i*S, (i+1)*S) of one Float64Array, S = 2B + 2*cap doubles: the
 * B buffer means, the B buffer weights, the cap centroid means, the cap centroid weights (one
 * contiguous region per digest, touched by a flush); its scalars (centroid and buffer counts, total
 * and buffered weight, min, max) sit at index i of small per-field typed arrays that stay in cache.
 * At c = 100 (B = 42, cap = 202) a digest takes 3,904 + 41 bytes: 79 MB for 20,000 genes. Adding a
 * value allocates nothing.
 */
export class DigestSet {
  /** Number of digests. */
  readonly size: number;
  /** Compression after clipping to [20, 1000]. */
  readonly compression: number;
  /** Centroid slots per digest (crick's 2*ceil(c) plus a little slack). */
  readonly capacity: number;
  /** Buffer slots per digest (crick's buffer_size). */
  readonly bufferSize: number;
  /** Doubles per digest block. */
  private readonly stride: number;
  private readonly data: Float64Array;
  private readonly nCent: Int32Array;
  private readonly nBuf: Int32Array;
  /** 1 while some buffered weight is not 1 (the sort then moves weights too). */
  private readonly nonUnit: Uint8Array;
  private readonly totalW: Float64Array;
  private readonly bufferW: Float64Array;
  private readonly minV: Float64Array;
  private readonly maxV: Float64Array;
  // Closed-form threshold constants: cos(pi/c), sin(pi/c), the q above which k(q) > c - 1, and the
  // threshold of the first centroid (k1 = 0).
  private readonly cosPc: number;
  private readonly sinPc: number;
  private readonly qAlways: number;
  private readonly qFirst: number;

  /**
   * storage, when given, provides the typed arrays (e.g. views of WebAssembly memory, see
   * WasmDigestSet); by default they are ordinary JS arrays.
   */
  constructor(size: number, compression = 100, storage: DigestStorage = jsStorage) {
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`DigestSet size must be a non-negative integer, got ${size}`);
    const c = tdigestCompression(compression);
    this.size = size;
    this.compression = c;
    this.capacity = 2 * Math.ceil(c) + CAPACITY_SLACK;
    this.bufferSize = tdigestBufferSize(c);
    this.stride = 2 * this.bufferSize + 2 * this.capacity;
    this.data = storage.float64("data", size * this.stride);
    this.nCent = storage.int32("nCent", size);
    this.nBuf = storage.int32("nBuf", size);
    this.nonUnit = storage.uint8("nonUnit", size);
    this.totalW = storage.float64("totalW", size);
    this.bufferW = storage.float64("bufferW", size);
    this.minV = storage.float64("minV", size).fill(DBL_MAX);
    this.maxV = storage.float64("maxV", size).fill(-DBL_MAX);
    ({ cosPc: this.cosPc, sinPc: this.sinPc, qAlways: this.qAlways, qFirst: this.qFirst } = tdigestFlushConstants(c));
    if (scratchMean.length < this.capacity + this.bufferSize) {
      scratchMean = new Float64Array(this.capacity + this.bufferSize);
      scratchWeight = new Float64Array(this.capacity + this.bufferSize);
    }
  }

  /** Bytes held by this set. */
  get byteLength(): number {
    return (
      this.data.byteLength + this.nCent.byteLength + this.nBuf.byteLength + this.nonUnit.byteLength +
      this.totalW.byteLength + this.bufferW.byteLength + this.minV.byteLength + this.maxV.byteLength
    );
  }

  private check(i: number): void {
    if (!(i >= 0 && i < this.size) || !Number.isInteger(i)) throw new RangeError(`digest index ${i} out of range [0, ${this.size})`);
  }

  /** Offset of digest i's centroid means (weights follow at + capacity). */
  private cOff(i: number): number {
    return i * this.stride + 2 * this.bufferSize;
  }

  /**
   * Adds x with weight w (default 1) to digest i. Non-finite x is ignored, as are weights
   * <= DBL_EPSILON; a weight that is not finite or not > 0 throws (crick's TDigest.add).
   */
  add(i: number, x: number, w = 1): void {
    if (w !== 1 && !(w > 0 && w < Infinity)) throw new RangeError(`t-digest weight must be > 0 and finite, got ${w}`);
    this.check(i);
    this.addRaw(i, x, w);
  }

  /** Adds values[start..end) to digest i in order (unit weights; non-finite values skipped). */
  addRun(i: number, values: Float64Array, start = 0, end = values.length): void {
    this.check(i);
    for (let k = start; k < end; k++) this.addRaw(i, values[k], 1);
  }

  /**
   * Adds values[k] to digest digests[k] for k in [start, end), unit weight (e.g. one CSR row:
   * gene indices and values). Non-finite values are skipped, so NaN can mark "not detected".
   */
  addBatch(digests: ArrayLike<number>, values: ArrayLike<number>, start = 0, end = Math.min(digests.length, values.length)): void {
    for (let k = start; k < end; k++) {
      const i = digests[k];
      if (!(i >= 0 && i < this.size && (i | 0) === i)) this.check(i);
      this.addRaw(i, values[k], 1);
    }
  }

  /** crick's tdigest_add, without the Python-level weight validation. */
  private addRaw(i: number, x: number, w: number): void {
    // x - x is NaN for NaN and +-Infinity.
    if (x - x !== 0 || w <= DBL_EPSILON) return;
    const d = this.data;
    const base = i * this.stride;
    let n = this.nBuf[i];
    if (n === this.bufferSize) {
      this.flushRaw(i);
      n = 0;
    }
    const p = base + n;
    d[p] = x;
    d[p + this.bufferSize] = w;
    if (w !== 1) this.nonUnit[i] = 1;
    this.nBuf[i] = n + 1;
    this.bufferW[i] += w;
  }

  /** Flushes the buffer of digest i into its centroids (crick's tdigest_flush). */
  flush(i: number): void {
    this.check(i);
    this.flushRaw(i);
  }

  /** Flushes every digest, in index order. */
  flushAll(): void {
    for (let i = 0; i < this.size; i++) this.flushRaw(i);
  }

  private flushRaw(i: number): void {
    const d = this.data;
    const base = i * this.stride;
    const nb = this.nBuf[i];
    if (nb === 0) return;
    const B = this.bufferSize;
    const b0 = base; // buffer means; weights at + B
    const bEnd = b0 + nb;

    // Stable sort of the buffer by mean (insertion sort; `<` on means, like crick's merge sort:
    // any stable sort under the same comparison gives the same order). While every buffered weight
    // is 1 (the common case) only the means need moving.
    if (this.nonUnit[i] === 0) {
      for (let a = b0 + 1; a < bEnd; a++) {
        const m = d[a];
        let b = a - 1;
        while (b >= b0) {
          const v = d[b];
          if (!(m < v)) break;
          d[b + 1] = v;
          b--;
        }
        d[b + 1] = m;
      }
    } else {
      for (let a = b0 + 1; a < bEnd; a++) {
        const m = d[a];
        const w = d[a + B];
        let b = a - 1;
        while (b >= b0) {
          const v = d[b];
          if (!(m < v)) break;
          d[b + 1] = v;
          d[b + 1 + B] = d[b + B];
          b--;
        }
        d[b + 1] = m;
        d[b + 1 + B] = w;
      }
      this.nonUnit[i] = 0;
    }

    if (this.minV[i] > d[b0]) this.minV[i] = d[b0];
    if (this.maxV[i] < d[bEnd - 1]) this.maxV[i] = d[bEnd - 1];

    const W = this.totalW[i] + this.bufferW[i];
    this.totalW[i] = W;
    this.bufferW[i] = 0;

    const cap = this.capacity;
    const c0 = b0 + 2 * B; // centroid means; weights at + cap
    const cEnd = c0 + this.nCent[i];
    const allM = scratchMean;
    const allW = scratchWeight;

    // Pass 1: merge the sorted buffer with the centroids in mean order into the scratch arrays; the
    // existing centroid goes first unless the buffer item is strictly smaller.
    let p = 0;
    let bi = b0;
    let ci = c0;
    while (bi < bEnd && ci < cEnd) {
      const bm = d[bi];
      const cm = d[ci];
      if (bm < cm) {
        allM[p] = bm;
        allW[p] = d[bi + B];
        bi++;
      } else {
        allM[p] = cm;
        allW[p] = d[ci + cap];
        ci++;
      }
      p++;
    }
    for (; bi < bEnd; bi++, p++) {
      allM[p] = d[bi];
      allW[p] = d[bi + B];
    }
    for (; ci < cEnd; ci++, p++) {
      allM[p] = d[ci];
      allW[p] = d[ci + cap];
    }

    // Pass 2: stream the items through crick's centroid_merge, writing the centroids straight back
    // (every input is in the scratch now).
    this.nCent[i] = compress(allM, allW, p, d, c0, c0 + cap, W, this.compression, this.cosPc, this.sinPc, this.qFirst, this.qAlways, cap);
    this.nBuf[i] = 0;
  }

  /** Total weight added to digest i, buffered points included (crick's size()); does not flush. */
  count(i: number): number {
    this.check(i);
    return this.totalW[i] + this.bufferW[i];
  }

  /** Same as count(i). */
  totalWeight(i: number): number {
    return this.count(i);
  }

  /** Number of centroids of digest i after a flush (flushes, like crick's centroids()). */
  centroidCount(i: number): number {
    this.flush(i);
    return this.totalW[i] === 0 ? 0 : this.nCent[i];
  }

  /** Smallest value added to digest i, NaN when empty (flushes, like crick). */
  min(i: number): number {
    this.flush(i);
    return this.totalW[i] > 0 ? this.minV[i] : NaN;
  }

  /** Largest value added to digest i, NaN when empty (flushes, like crick). */
  max(i: number): number {
    this.flush(i);
    return this.totalW[i] > 0 ? this.maxV[i] : NaN;
  }

  /**
   * Estimated q-quantile of digest i (crick <= 0.0.3 `tdigest_quantile`, after query_prep which
   * flushes): NaN when empty, min for q <= 0, max for q >= 1, the mean with a single centroid,
   * otherwise interpolation between weight-proportional centroid boundaries.
   */
  quantile(i: number, q: number): number {
    if (!Number.isFinite(q)) throw new RangeError(`quantile q must be finite, got ${q}`);
    this.flush(i);
    return this.quantileFlushed(i, q);
  }

  /** Several quantiles of digest i with one flush (crick's vectorised quantile). */
  quantiles(i: number, qs: ArrayLike<number>): Float64Array {
    for (let k = 0; k < qs.length; k++) if (!Number.isFinite(qs[k])) throw new RangeError(`quantile q must be finite, got ${qs[k]}`);
    this.flush(i);
    const res = new Float64Array(qs.length);
    for (let k = 0; k < qs.length; k++) res[k] = this.quantileFlushed(i, qs[k]);
    return res;
  }

  /** quantile(i, 0.5). */
  median(i: number): number {
    return this.quantile(i, 0.5);
  }

  /** Median of every digest (NaN for empty ones), in index order; flushes them all. */
  medians(): Float64Array {
    const res = new Float64Array(this.size);
    for (let i = 0; i < this.size; i++) {
      this.flushRaw(i);
      res[i] = this.quantileFlushed(i, 0.5);
    }
    return res;
  }

  private quantileFlushed(i: number, q: number): number {
    const d = this.data;
    const W = this.totalW[i];
    if (W === 0) return NaN;
    if (q <= 0) return this.minV[i];
    if (q >= 1) return this.maxV[i];
    const n = this.nCent[i];
    const m0 = this.cOff(i);
    const w0 = m0 + this.capacity;
    if (n === 1) return d[m0];
    const index = q * W;
    // First centroid whose cumulative weight (accumulated in order, as crick's query_prep does)
    // reaches index; the cumulative weights are non-decreasing, so this equals crick's bisection.
    let cum = 0;
    let prevCum = 0;
    let k = 0;
    for (; k < n; k++) {
      prevCum = cum;
      cum += d[w0 + k];
      if (!(cum < index)) break;
    }
    if (k === n) return this.maxV[i]; // rounding overshoot: C reads past the array here (see header)
    const l = k > 0 ? boundary(d[m0 + k - 1], d[w0 + k - 1], d[m0 + k], d[w0 + k]) : this.minV[i];
    const r = k < n - 1 ? boundary(d[m0 + k], d[w0 + k], d[m0 + k + 1], d[w0 + k + 1]) : this.maxV[i];
    const before = k > 0 ? prevCum : 0;
    return l + ((r - l) * (index - before)) / d[w0 + k];
  }

  /**
   * crick's tdigest_merge: flushes digest j of `other` (mutating it, as crick does), adds each of
   * its centroids to digest i of this set as a weighted point through the buffer, then updates
   * min and max. `other` may be this set (j must then differ from i).
   */
  mergeFrom(i: number, other: DigestSet, j: number): void {
    this.check(i);
    other.check(j);
    if (other === this && i === j) throw new RangeError("cannot merge a digest into itself");
    other.flushRaw(j);
    const od = other.data;
    if (other.totalW[j] !== 0) {
      const n = other.nCent[j];
      const m0 = other.cOff(j);
      const w0 = m0 + other.capacity;
      for (let k = 0; k < n; k++) this.addRaw(i, od[m0 + k], od[w0 + k]);
      if (this.minV[i] > other.minV[j]) this.minV[i] = other.minV[j];
      if (this.maxV[i] < other.maxV[j]) this.maxV[i] = other.maxV[j];
    }
  }

  /** Merges digest k of `other` into digest k of this set for every k, in index order. */
  mergeSet(other: DigestSet): void {
    if (other.size !== this.size) throw new RangeError(`DigestSet sizes differ: ${this.size} vs ${other.size}`);
    if (other === this) throw new RangeError("cannot merge a DigestSet into itself");
    for (let k = 0; k < this.size; k++) this.mergeFrom(k, other, k);
  }

  /** Merges a single TDigest into digest i. */
  mergeDigest(i: number, other: TDigest): void {
    this.mergeFrom(i, other.set, 0);
  }

  /** Empties digest i. */
  reset(i: number): void {
    this.check(i);
    this.nCent[i] = 0;
    this.nBuf[i] = 0;
    this.nonUnit[i] = 0;
    this.totalW[i] = 0;
    this.bufferW[i] = 0;
    this.minV[i] = DBL_MAX;
    this.maxV[i] = -DBL_MAX;
  }

  /**
   * Centroids of digest i after a flush, as two new arrays (crick's centroids(), which also
   * returns nothing while the total weight is 0).
   */
  centroids(i: number): { means: Float64Array; weights: Float64Array } {
    const n = this.centroidCount(i);
    const m0 = this.cOff(i);
    return { means: this.data.slice(m0, m0 + n), weights: this.data.slice(m0 + this.capacity, m0 + this.capacity + n) };
  }

  /** A standalone copy of digest i, buffer included (no flush). */
  get(i: number): TDigest {
    const t = new TDigest(this.compression);
    t.set.copyFrom(0, this, i);
    return t;
  }

  /** Copies digest j of `src` (same compression) into digest i, buffer included. */
  copyFrom(i: number, src: DigestSet, j: number): void {
    this.check(i);
    src.check(j);
    if (src.compression !== this.compression) throw new RangeError(`compression differs: ${this.compression} vs ${src.compression}`);
    this.data.set(src.data.subarray(j * src.stride, (j + 1) * src.stride), i * this.stride);
    this.nCent[i] = src.nCent[j];
    this.nBuf[i] = src.nBuf[j];
    this.nonUnit[i] = src.nonUnit[j];
    this.totalW[i] = src.totalW[j];
    this.bufferW[i] = src.bufferW[j];
    this.minV[i] = src.minV[j];
    this.maxV[i] = src.maxV[j];
  }

  /** crick's pickled state of digest i (flushes it first). */
  getJSON(i: number): TDigestJSON {
    const { means, weights } = this.centroids(i);
    const centroids: [number, number][] = new Array(means.length);
    for (let k = 0; k < means.length; k++) centroids[k] = [means[k], weights[k]];
    return { compression: this.compression, centroids, totalWeight: this.totalW[i], min: this.minV[i], max: this.maxV[i] };
  }

  /**
   * Sets digest i from a JSON state (crick's __setstate__: centroids, total weight, min and max are
   * taken as given; the buffer is emptied). The compression must match this set's.
   */
  setJSON(i: number, json: TDigestJSON | TDigestJSONFlat): void {
    this.check(i);
    const { means, weights } = centroidsOf(json);
    if (tdigestCompression(json.compression) !== this.compression) {
      throw new RangeError(`compression differs: ${this.compression} vs ${json.compression}`);
    }
    const n = means.length;
    if (weights.length !== n) throw new RangeError("t-digest state: means and weights differ in length");
    if (n > this.capacity) throw new RangeError(`t-digest state: ${n} centroids exceed capacity ${this.capacity}`);
    const { totalWeight, min, max } = json;
    if (typeof totalWeight !== "number" || typeof min !== "number" || typeof max !== "number") {
      throw new TypeError("t-digest state: totalWeight, min and max must be numbers");
    }
    const d = this.data;
    const m0 = this.cOff(i);
    const w0 = m0 + this.capacity;
    for (let k = 0; k < n; k++) {
      const m = means[k];
      const w = weights[k];
      if (typeof m !== "number" || typeof w !== "number") throw new TypeError("t-digest state: centroid means and weights must be numbers");
      d[m0 + k] = m;
      d[w0 + k] = w;
    }
    this.nCent[i] = n;
    this.nBuf[i] = 0;
    this.nonUnit[i] = 0;
    this.bufferW[i] = 0;
    this.totalW[i] = totalWeight;
    this.minV[i] = min;
    this.maxV[i] = max;
  }

  /**
   * Binary form of the whole set (flushes every digest). Float64Array, native (little) endian:
   * [MAGIC, VERSION, compression, nDigests, then per digest: nCentroids, totalWeight, min, max,
   * mean_0, weight_0, ..., mean_{n-1}, weight_{n-1}].
   */
  toBinary(): Float64Array {
    this.flushAll();
    const d = this.data;
    const nOf = (i: number): number => (this.totalW[i] === 0 ? 0 : this.nCent[i]);
    let len = 4;
    for (let i = 0; i < this.size; i++) len += 4 + 2 * nOf(i);
    const out = new Float64Array(len);
    out[0] = TDIGEST_BINARY_MAGIC;
    out[1] = TDIGEST_BINARY_VERSION;
    out[2] = this.compression;
    out[3] = this.size;
    let p = 4;
    for (let i = 0; i < this.size; i++) {
      const n = nOf(i);
      out[p++] = n;
      out[p++] = this.totalW[i];
      out[p++] = this.minV[i];
      out[p++] = this.maxV[i];
      const m0 = this.cOff(i);
      const w0 = m0 + this.capacity;
      for (let k = 0; k < n; k++) {
        out[p++] = d[m0 + k];
        out[p++] = d[w0 + k];
      }
    }
    return out;
  }

  /** Reads the binary form written by toBinary (or TDigest.toBinary, a set of one). */
  static fromBinary(data: Float64Array): DigestSet {
    if (data.length < 4 || data[0] !== TDIGEST_BINARY_MAGIC) throw new RangeError("not a t-digest binary (bad magic)");
    if (data[1] !== TDIGEST_BINARY_VERSION) throw new RangeError(`unsupported t-digest binary version ${data[1]}`);
    const size = data[3];
    const set = new DigestSet(size, data[2]);
    const d = set.data;
    let p = 4;
    for (let i = 0; i < size; i++) {
      if (p + 4 > data.length) throw new RangeError("t-digest binary truncated");
      const n = data[p];
      if (!Number.isInteger(n) || n < 0 || p + 4 + 2 * n > data.length) throw new RangeError("t-digest binary truncated or corrupt");
      if (n > set.capacity) throw new RangeError(`t-digest binary: ${n} centroids exceed capacity ${set.capacity}`);
      set.nCent[i] = n;
      set.totalW[i] = data[p + 1];
      set.minV[i] = data[p + 2];
      set.maxV[i] = data[p + 3];
      p += 4;
      const m0 = set.cOff(i);
      const w0 = m0 + set.capacity;
      for (let k = 0; k < n; k++) {
        d[m0 + k] = data[p++];
        d[w0 + k] = data[p++];
      }
    }
    if (p !== data.length) throw new RangeError("t-digest binary has trailing data");
    return set;
  }

  /** Reads a binary form from bytes (e.g. a file read with fs.readFileSync), copying if unaligned. */
  static fromBytes(bytes: Uint8Array): DigestSet {
    if (bytes.byteLength % 8 !== 0) throw new RangeError("t-digest binary length is not a multiple of 8");
    const aligned = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
    return DigestSet.fromBinary(new Float64Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 8));
  }
}

/**
 * crick's centroid_merge over items (allM[k], allW[k]), k < p, already in mean order, writing the
 * resulting centroids to dst (means from dm0, weights from dw0); returns their number. k1 is crick's
 * integrate(c, weight_so_far / W) at the opening of the current centroid (0 for the first); an item
 * folds into the current centroid iff integrate(c, (weight_so_far + w) / W) - k1 <= 1. That test is
 * evaluated exactly (asin) only for items within Q_MARGIN of the closed-form threshold q.
 */
function compress(
  allM: Float64Array, allW: Float64Array, p: number, dst: Float64Array, dm0: number, dw0: number,
  W: number, c: number, cosPc: number, sinPc: number, qFirst: number, qAlways: number, cap: number,
): number {
  const invW = 1 / W;
  const qAlwaysLo = qAlways - Q_MARGIN;
  const qAlwaysHi = qAlways + Q_MARGIN;
  let out = 1; // crick's ncentroids; the first item opens the first centroid
  let curM = allM[0];
  let curW = allW[0];
  let wsf = curW; // weight_so_far
  let q1 = 0; // weight_so_far / W when the current centroid was opened, k1 = k(q1)
  let k1 = 0;
  let k1Known = true;
  let qLo = qFirst - Q_MARGIN; // q2 <= qLo: fold into the current centroid
  let qHi = qFirst + Q_MARGIN; // q2 >= qHi: open a new centroid; in between: exact test
  for (let k = 1; k < p; k++) {
    const u = allM[k];
    const w = allW[k];
    const q2 = (wsf + w) * invW;
    let fold: boolean;
    if (q2 <= qLo) fold = true;
    else if (q2 >= qHi) fold = false;
    else {
      if (!k1Known) {
        k1 = tdigestScale(c, q1);
        k1Known = true;
      }
      fold = tdigestScale(c, (wsf + w) / W) - k1 <= 1;
    }
    if (fold) {
      curW += w;
      curM += ((u - curM) * w) / curW;
    } else {
      dst[dm0 + out - 1] = curM;
      dst[dw0 + out - 1] = curW;
      if (out >= cap) throw new Error(`t-digest centroid capacity ${cap} exceeded (compression ${c})`);
      out++;
      curM = u;
      curW = w;
      q1 = wsf / W;
      k1Known = false;
      if (q1 > qAlwaysHi) {
        qLo = Infinity;
        qHi = Infinity;
      } else if (q1 >= qAlwaysLo) {
        qLo = -Infinity;
        qHi = Infinity;
      } else {
        // q where k(q) = k(q1) + 1: sin addition formula, with 1 - (2q1 - 1)^2 = 4 q1 (1 - q1)
        const t = 0.5 + 0.5 * (2 * q1 - 1) * cosPc + Math.sqrt(q1 * (1 - q1)) * sinPc;
        qLo = t - Q_MARGIN;
        qHi = t + Q_MARGIN;
      }
    }
    wsf += w;
  }
  dst[dm0 + out - 1] = curM;
  dst[dw0 + out - 1] = curW;
  return out;
}

function boundary(m0: number, w0: number, m1: number, w1: number): number {
  return m0 + ((m1 - m0) * w0) / (w0 + w1);
}

function centroidsOf(json: TDigestJSON | TDigestJSONFlat): { means: ArrayLike<number>; weights: ArrayLike<number> } {
  if (json === null || typeof json !== "object") throw new TypeError("t-digest state must be an object");
  if ("centroids" in json && Array.isArray(json.centroids)) {
    const n = json.centroids.length;
    const means = new Float64Array(n);
    const weights = new Float64Array(n);
    for (let k = 0; k < n; k++) {
      const pair = json.centroids[k];
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "number" || typeof pair[1] !== "number") {
        throw new TypeError("t-digest state: centroids must be [mean, weight] number pairs");
      }
      means[k] = pair[0];
      weights[k] = pair[1];
    }
    return { means, weights };
  }
  if ("means" in json && "weights" in json) return { means: json.means, weights: json.weights };
  throw new TypeError("t-digest state needs centroids ([[mean, weight], ...]) or means and weights");
}

/** One t-digest (crick's TDigest); a DigestSet of one under the hood. */
export class TDigest {
  /** @internal storage (a set of one digest). */
  readonly set: DigestSet;

  constructor(compression = 100) {
    this.set = new DigestSet(1, compression);
  }

  /** Compression after clipping to [20, 1000]. */
  get compression(): number {
    return this.set.compression;
  }

  /** Adds x with weight w (default 1); non-finite x is ignored; w must be > 0 and finite. */
  add(x: number, w = 1): void {
    this.set.add(0, x, w);
  }

  /** Adds every value (unit weight), like crick's update(array). */
  update(values: ArrayLike<number>): void {
    for (let k = 0; k < values.length; k++) this.set.add(0, values[k], 1);
  }

  /** crick's merge(*others): each other is flushed, then its centroids are added in order. */
  merge(...others: TDigest[]): void {
    for (const o of others) this.set.mergeFrom(0, o.set, 0);
  }

  flush(): void {
    this.set.flush(0);
  }

  /** Total weight added, buffered points included (crick's size()); does not flush. */
  count(): number {
    return this.set.count(0);
  }

  /** Same as count(). */
  totalWeight(): number {
    return this.set.count(0);
  }

  /** NaN when empty; flushes. */
  min(): number {
    return this.set.min(0);
  }

  /** NaN when empty; flushes. */
  max(): number {
    return this.set.max(0);
  }

  quantile(q: number): number {
    return this.set.quantile(0, q);
  }

  quantiles(qs: ArrayLike<number>): Float64Array {
    return this.set.quantiles(0, qs);
  }

  median(): number {
    return this.set.median(0);
  }

  /** Number of centroids after a flush. */
  centroidCount(): number {
    return this.set.centroidCount(0);
  }

  centroids(): { means: Float64Array; weights: Float64Array } {
    return this.set.centroids(0);
  }

  /** An independent copy (buffer included). */
  clone(): TDigest {
    return this.set.get(0);
  }

  /** crick's pickled state (flushes first). */
  toJSON(): TDigestJSON {
    return this.set.getJSON(0);
  }

  static fromJSON(json: TDigestJSON | TDigestJSONFlat): TDigest {
    const t = new TDigest(json.compression);
    t.set.setJSON(0, json);
    return t;
  }

  /** Binary form: DigestSet.toBinary layout with one digest. */
  toBinary(): Float64Array {
    return this.set.toBinary();
  }

  static fromBinary(data: Float64Array): TDigest {
    const s = DigestSet.fromBinary(data);
    if (s.size !== 1) throw new RangeError(`expected a single t-digest, the binary holds ${s.size}`);
    const t = new TDigest(s.compression);
    t.set.copyFrom(0, s, 0);
    return t;
  }
}
