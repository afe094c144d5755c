import { newKernelInstance } from "./kernel.js";
/**
 * Rank-value ordering of one cell's genes (the Geneformer rule): by value descending, ties broken by
 * ascending token id, zeros already removed by the caller.
 *
 * This is the tokenizer's hot loop (~2,000 genes per cell), so it avoids comparator sorts:
 *  1. each value's IEEE-754 bit pattern is complemented into a (hi, lo) pair of uint32 whose
 *     unsigned order is the reverse of the value order (valid for positive doubles, +Inf included);
 *  2. a bucket pass on the top bits of `hi` (range-adapted, up to 4,096 buckets) spreads the cell
 *     nearly uniformly, since values span a few octaves;
 *  3. each bucket is sorted exactly on (hi, lo, token) by insertion (tiny buckets) or by a comparator
 *     sort (crowded buckets, e.g. many equal values), so the result is exact by construction.
 * About 4x faster than a comparator sort and 2x faster than the engine's native BigUint64Array sort
 * on real-sized cells (tests compare with a comparator sort on random and tied data).
 */
const BUCKETS = 4096;
const SMALL_BUCKET = 48;

export class CellRanker {
  private hi = new Uint32Array(0);
  private lo = new Uint32Array(0);
  private tok = new Int32Array(0);
  private bucketOf = new Int32Array(0);
  private sHi = new Uint32Array(0);
  private sLo = new Uint32Array(0);
  private sTok = new Int32Array(0);
  private readonly start = new Int32Array(BUCKETS + 2);
  private readonly f64 = new Float64Array(1);
  private readonly f64w = new Uint32Array(this.f64.buffer);

  /** vocabSize is accepted for API stability; the algorithm does not depend on it. */
  constructor(_vocabSize?: number) {
    this.grow(4096);
  }

  private grow(n: number): void {
    this.hi = new Uint32Array(n);
    this.lo = new Uint32Array(n);
    this.tok = new Int32Array(n);
    this.bucketOf = new Int32Array(n);
    this.sHi = new Uint32Array(n);
    this.sLo = new Uint32Array(n);
    this.sTok = new Int32Array(n);
  }

  /**
   * Writes up to `limit` token ids into out[offset...] in rank order and returns how many were written.
   * tokens[i] has value values[i] (> 0). Values must be positive; NaN is not allowed.
   */
  rank(tokens: Int32Array, values: Float64Array, n: number, out: Int32Array, offset: number, limit: number): number {
    if (n === 0) return 0;
    if (this.hi.length < n) this.grow(Math.max(n, this.hi.length * 2));
    const { hi, lo, tok, bucketOf, sHi, sLo, sTok, start, f64, f64w } = this;
    let minH = 0xffffffff;
    let maxH = 0;
    for (let i = 0; i < n; i++) {
      f64[0] = values[i];
      // complement of the bit pattern: ascending (hi, lo) <=> descending value
      const h = (0x7fffffff - f64w[1]) >>> 0;
      hi[i] = h;
      lo[i] = ~f64w[0] >>> 0;
      tok[i] = tokens[i];
      if (h < minH) minH = h;
      if (h > maxH) maxH = h;
    }
    const range = maxH - minH;
    let shift = 0;
    while (range >>> shift >= BUCKETS) shift++;
    const nb = (range >>> shift) + 1;
    start.fill(0, 0, nb + 1);
    for (let i = 0; i < n; i++) {
      const b = (hi[i] - minH) >>> shift;
      bucketOf[i] = b;
      start[b + 1]++;
    }
    for (let b = 0; b < nb; b++) start[b + 1] += start[b];
    // scatter (start[b] advances to the end of bucket b)
    for (let i = 0; i < n; i++) {
      const p = start[bucketOf[i]]++;
      sHi[p] = hi[i];
      sLo[p] = lo[i];
      sTok[p] = tok[i];
    }
    const m = Math.min(n, limit);
    let a = 0;
    for (let b = 0; b < nb && a < m; b++) {
      const e = start[b];
      if (e - a > 1) {
        if (e - a <= SMALL_BUCKET) insertionSort(sHi, sLo, sTok, a, e);
        else comparatorSort(sHi, sLo, sTok, a, e);
      }
      a = e;
    }
    for (let q = 0; q < m; q++) out[offset + q] = sTok[q];
    return m;
  }
}

function insertionSort(h: Uint32Array, l: Uint32Array, t: Int32Array, a: number, e: number): void {
  for (let i = a + 1; i < e; i++) {
    const hv = h[i];
    const lv = l[i];
    const tv = t[i];
    let j = i - 1;
    while (j >= a && (h[j] > hv || (h[j] === hv && (l[j] > lv || (l[j] === lv && t[j] > tv))))) {
      h[j + 1] = h[j];
      l[j + 1] = l[j];
      t[j + 1] = t[j];
      j--;
    }
    h[j + 1] = hv;
    l[j + 1] = lv;
    t[j + 1] = tv;
  }
}

function comparatorSort(h: Uint32Array, l: Uint32Array, t: Int32Array, a: number, e: number): void {
  const idx = Array.from({ length: e - a }, (_, i) => a + i);
  idx.sort((x, y) => h[x] - h[y] || l[x] - l[y] || t[x] - t[y]);
  const hh = idx.map((i) => h[i]);
  const ll = idx.map((i) => l[i]);
  const tt = idx.map((i) => t[i]);
  for (let i = 0; i < hh.length; i++) {
    h[a + i] = hh[i];
    l[a + i] = ll[i];
    t[a + i] = tt[i];
  }
}

/** Reference ordering with a plain comparator (used by tests). */
export function rankByComparator(tokens: ArrayLike<number>, values: ArrayLike<number>): number[] {
  const idx = Array.from({ length: tokens.length }, (_, i) => i);
  idx.sort((x, y) => values[y] - values[x] || tokens[x] - tokens[y]);
  return idx.map((i) => tokens[i]);
}

export interface RankExports {
  memory: WebAssembly.Memory;
  values_ptr(): number;
  tokens_ptr(): number;
  out_ptr(): number;
  max_n(): number;
  rank(n: number, limit: number): number;
  arena(bytes: number): number;
  err_row(): number;
  err_col(): number;
  err_value(): number;
  tokenize_block(
    nRows: number, indptr: number, indices: number, data: number, dataIsF64: number, primary: number, rowTotal: number, colToken: number, colMedian: number,
    minGenes: number, allowNonInteger: number, targetSum: number, room: number, clsId: number, eosId: number,
    outTok: number, outOff: number, status: number, truncated: number,
  ): number;
}

let kernel: RankExports | undefined;

/** The ranking / tokenization kernel, one instance per thread. */
export function rankKernel(): RankExports {
  kernel ??= newKernelInstance<RankExports>();
  return kernel;
}

/**
 * The same ordering computed by the WebAssembly kernel (a bucket sort in C, about 3x faster than
 * CellRanker). Callers write a cell's values and tokens straight into `values` and `tokens` (views
 * of the kernel's memory), then call rank(). Cells larger than `maxN` fall back to CellRanker.
 */
export class WasmRanker {
  readonly maxN: number;
  private readonly exports = rankKernel();
  private readonly fallback = new CellRanker();

  constructor() {
    this.maxN = this.exports.max_n();
  }

  // Views are re-created on access: the kernel's memory may grow (tokenize_block), which detaches them.
  get values(): Float64Array {
    return new Float64Array(this.exports.memory.buffer, this.exports.values_ptr(), this.maxN);
  }

  get tokens(): Int32Array {
    return new Int32Array(this.exports.memory.buffer, this.exports.tokens_ptr(), this.maxN);
  }

  /** Ranks this.values/this.tokens[0..n); writes up to `limit` tokens into dst[offset...]. */
  rank(n: number, dst: Int32Array, offset: number, limit: number): number {
    if (n > this.maxN) return this.fallback.rank(this.tokens, this.values, n, dst, offset, limit);
    const m = this.exports.rank(n, limit);
    dst.set(new Int32Array(this.exports.memory.buffer, this.exports.out_ptr(), m), offset);
    return m;
  }
}
