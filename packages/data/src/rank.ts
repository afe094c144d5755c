/**
 * Rank-value ordering of one cell's genes (the Geneformer rule): by value descending, ties broken by
 * ascending token id, zeros already removed by the caller.
 *
 * Speed: a comparator sort costs ~20 ns per comparison in V8. Instead each (value, token) pair is
 * packed into one 64-bit key whose unsigned order is (value desc, token asc) up to the low 14 bits of
 * the value's IEEE-754 pattern, and the keys are sorted with the engine's native BigUint64Array sort.
 * Neighbouring keys that agree in all packed value bits are then re-ordered exactly, so the result is
 * identical to the comparator sort for every input (tests/rank check this on random and tied data).
 */
export class CellRanker {
  private keys: BigUint64Array;
  private words: Uint32Array;
  private readonly f64 = new Float64Array(1);
  private readonly f64w = new Uint32Array(this.f64.buffer);
  /** value by token id for the exact fix-up pass. */
  private readonly valueOf: Float64Array;
  private readonly packable: boolean;

  constructor(vocabSize: number) {
    this.keys = new BigUint64Array(4096);
    this.words = new Uint32Array(this.keys.buffer);
    this.valueOf = new Float64Array(vocabSize);
    this.packable = vocabSize <= 1 << 15;
  }

  /**
   * Writes up to `limit` token ids into out[offset...] in rank order and returns how many were written.
   * tokens[i] has value values[i] (> 0, finite).
   */
  rank(tokens: Int32Array, values: Float64Array, n: number, out: Int32Array, offset: number, limit: number): number {
    if (!this.packable) return this.rankByComparator(tokens, values, n, out, offset, limit);
    if (this.keys.length < n) {
      this.keys = new BigUint64Array(Math.max(n, this.keys.length * 2));
      this.words = new Uint32Array(this.keys.buffer);
    }
    const w = this.words;
    const f64 = this.f64;
    const f64w = this.f64w;
    const valueOf = this.valueOf;
    for (let i = 0; i < n; i++) {
      const v = values[i];
      const t = tokens[i];
      valueOf[t] = v;
      f64[0] = v;
      // c = 0x7fff_ffff_ffff_ffff - bits(v): ascending c <=> descending v for positive doubles.
      const chi = (0x7fffffff - f64w[1]) >>> 0;
      const clo = ~f64w[0] >>> 0;
      w[2 * i + 1] = ((chi << 1) | (clo >>> 31)) >>> 0;
      w[2 * i] = ((((clo >>> 14) & 0x1ffff) << 15) | t) >>> 0;
    }
    const keys = this.keys.subarray(0, n);
    keys.sort();
    const m = Math.min(n, limit);
    // Exact fix-up: runs whose packed value bits agree may be out of order in the dropped bits.
    let i = 0;
    while (i < n && i < m) {
      const hi = w[2 * i + 1];
      const loTop = w[2 * i] >>> 15;
      let j = i + 1;
      while (j < n && w[2 * j + 1] === hi && w[2 * j] >>> 15 === loTop) j++;
      if (j - i > 1) this.sortRunExactly(i, j);
      i = j;
    }
    for (let q = 0; q < m; q++) out[offset + q] = w[2 * q] & 0x7fff;
    return m;
  }

  private sortRunExactly(a: number, b: number): void {
    const w = this.words;
    const run: number[] = [];
    for (let i = a; i < b; i++) run.push(w[2 * i] & 0x7fff);
    const v = this.valueOf;
    run.sort((x, y) => v[y] - v[x] || x - y);
    for (let i = a; i < b; i++) w[2 * i] = (w[2 * i] & ~0x7fff) | run[i - a];
  }

  private rankByComparator(tokens: Int32Array, values: Float64Array, n: number, out: Int32Array, offset: number, limit: number): number {
    const order = Array.from({ length: n }, (_, i) => i);
    order.sort((x, y) => values[y] - values[x] || tokens[x] - tokens[y]);
    const m = Math.min(n, limit);
    for (let q = 0; q < m; q++) out[offset + q] = tokens[order[q]];
    return m;
  }
}

/** Reference ordering with a plain comparator (used by tests and as the large-vocabulary path). */
export function rankByComparator(tokens: ArrayLike<number>, values: ArrayLike<number>): number[] {
  const idx = Array.from({ length: tokens.length }, (_, i) => i);
  idx.sort((x, y) => values[y] - values[x] || tokens[x] - tokens[y]);
  return idx.map((i) => tokens[i]);
}
