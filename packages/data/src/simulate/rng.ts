/**
 * Seeded pseudo-random numbers for the simulator. Everything is built from 32-bit integer operations
 * (Math.imul, shifts) so a seed gives the same stream on every platform; Math.random is never used.
 *
 * - `mix32` / `streamSeed`: SplitMix-style hashing of (seed, stream, index) into independent seeds.
 * - `Xoshiro128`: xoshiro128** (Blackman & Vigna), 128-bit state, period 2^128 - 1.
 * - Samplers: standard normal (Marsaglia polar), gamma (Marsaglia-Tsang), Poisson (multiplication for
 *   small means, Hörmann's PTRS transformed rejection for mean >= 10), Walker/Vose alias tables.
 */

/** One SplitMix32-style finalizer step: a bijection on uint32 with good avalanche. */
export function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Split a user seed (any safe integer) into two uint32 words. */
export function seedWords(seed: number): [number, number] {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 4294967296) >>> 0;
  return [lo, hi];
}

/** A uint32 seed for (seed, stream, index): different streams and indices give unrelated generators. */
export function streamSeed(seed: number, stream: number, index = 0): number {
  const [lo, hi] = seedWords(seed);
  let h = mix32(lo ^ 0x6a09e667);
  h = mix32(h ^ hi);
  h = mix32(h ^ Math.imul(stream + 1, 0x27d4eb2d));
  h = mix32(h ^ (index >>> 0));
  h = mix32(h ^ Math.floor(index / 4294967296));
  return h;
}

const TWO_M32 = 1 / 4294967296;

export class Xoshiro128 {
  /** State words as int32; a typed array keeps V8 on integer fast paths. */
  readonly s = new Int32Array(4);
  private spareNormal = 0;
  private hasSpare = false;

  constructor(seed32: number) {
    this.reseed(seed32);
  }

  /** Re-initialise from a uint32 seed (SplitMix expansion; never all-zero). */
  reseed(seed32: number): void {
    let x = seed32 >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.s[i] = z ^ (z >>> 16);
    }
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1;
    this.hasSpare = false;
  }

  /** Next uint32. */
  nextU32(): number {
    const s = this.s;
    const s0 = s[0];
    const s1 = s[1];
    const s2 = s[2];
    const s3 = s[3];
    const m = Math.imul(s1, 5);
    const result = Math.imul((m << 7) | (m >>> 25), 9) >>> 0;
    const t = s1 << 9;
    const n2 = s2 ^ s0;
    const n3 = s3 ^ s1;
    s[1] = s1 ^ n2;
    s[0] = s0 ^ n3;
    s[2] = n2 ^ t;
    s[3] = (n3 << 11) | (n3 >>> 21);
    return result;
  }

  /** Uniform in [0, 1) with 32-bit resolution. */
  next(): number {
    return this.nextU32() * TWO_M32;
  }

  /** Uniform in (0, 1): safe for log(). */
  nextOpen(): number {
    return (this.nextU32() + 0.5) * TWO_M32;
  }

  /** Uniform integer in [0, n) (n <= 2^32; the tiny modulo bias of the multiply method is irrelevant here). */
  int(n: number): number {
    return Math.floor(this.nextU32() * TWO_M32 * n);
  }

  /** Standard normal (Marsaglia polar method, second value cached). */
  normal(): number {
    if (this.hasSpare) {
      this.hasSpare = false;
      return this.spareNormal;
    }
    let u: number;
    let v: number;
    let r: number;
    do {
      u = 2 * this.next() - 1;
      v = 2 * this.next() - 1;
      r = u * u + v * v;
    } while (r >= 1 || r === 0);
    const f = Math.sqrt((-2 * Math.log(r)) / r);
    this.spareNormal = v * f;
    this.hasSpare = true;
    return u * f;
  }

  /** Gamma(shape, scale 1) by Marsaglia-Tsang; shape < 1 uses the u^(1/shape) boost. */
  gamma(shape: number): number {
    if (shape < 1) {
      const g = this.gamma(shape + 1);
      return g * Math.pow(this.nextOpen(), 1 / shape);
    }
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      const x = this.normal();
      let v = 1 + c * x;
      if (v <= 0) continue;
      v = v * v * v;
      const u = this.nextOpen();
      const x2 = x * x;
      if (u < 1 - 0.0331 * x2 * x2) return d * v;
      if (Math.log(u) < 0.5 * x2 + d * (1 - v + Math.log(v))) return d * v;
    }
  }

  /** Poisson(mean). */
  poisson(mean: number): number {
    if (!(mean > 0)) return 0;
    if (mean < 10) {
      const limit = Math.exp(-mean);
      let k = 0;
      let p = this.next();
      while (p > limit) {
        k++;
        p *= this.next();
      }
      return k;
    }
    return this.poissonPtrs(mean);
  }

  /** Hörmann (1993) "PTRS" transformed rejection with squeeze, for mean >= 10. */
  private poissonPtrs(lam: number): number {
    const slam = Math.sqrt(lam);
    const loglam = Math.log(lam);
    const b = 0.931 + 2.53 * slam;
    const a = -0.059 + 0.02483 * b;
    const invalpha = 1.1239 + 1.1328 / (b - 3.4);
    const vr = 0.9277 - 3.6224 / (b - 2);
    for (;;) {
      const U = this.next() - 0.5;
      const V = this.nextOpen();
      const us = 0.5 - Math.abs(U);
      const k = Math.floor(((2 * a) / us + b) * U + lam + 0.43);
      if (us >= 0.07 && V <= vr) return k;
      if (k < 0 || (us < 0.013 && V > us)) continue;
      if (Math.log(V) + Math.log(invalpha) - Math.log(a / (us * us) + b) <= -lam + k * loglam - logFactorial(k)) return k;
    }
  }
}

const LOG_FACT_TABLE = (() => {
  const t = new Float64Array(256);
  for (let i = 1; i < 256; i++) t[i] = t[i - 1] + Math.log(i);
  return t;
})();
const HALF_LOG_2PI = 0.5 * Math.log(2 * Math.PI);

/** log(k!) : table below 256, Stirling series above (error < 1e-12). */
export function logFactorial(k: number): number {
  if (k < 256) return LOG_FACT_TABLE[k];
  const x = k + 1;
  const ix = 1 / x;
  const ix2 = ix * ix;
  return (x - 0.5) * Math.log(x) - x + HALF_LOG_2PI + ix * (1 / 12 - ix2 * (1 / 360 - ix2 / 1260));
}

/**
 * Vose's alias method over weights w[0..n) into prob/alias at `offset`. Drawing: v = U * n,
 * j = floor(v), then pick j when frac(v) < prob[j] else alias[j]. `map` translates local slots into
 * stored ids (e.g. global gene indices), so a draw needs no further lookup.
 */
export function buildAlias(
  w: Float64Array,
  n: number,
  prob: Float64Array | Float32Array,
  alias: Int32Array,
  offset: number,
  map: Int32Array,
  mapOffset: number,
  work: { small: Int32Array; large: Int32Array; scaled: Float64Array },
): void {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += w[i];
  const { small, large, scaled } = work;
  let ns = 0;
  let nl = 0;
  for (let i = 0; i < n; i++) {
    const p = sum > 0 ? (w[i] * n) / sum : 1;
    scaled[i] = p;
    if (p < 1) small[ns++] = i;
    else large[nl++] = i;
  }
  while (ns > 0 && nl > 0) {
    const l = small[--ns];
    const g = large[--nl];
    prob[offset + l] = scaled[l];
    alias[offset + l] = map[mapOffset + g];
    scaled[g] = scaled[g] + scaled[l] - 1;
    if (scaled[g] < 1) small[ns++] = g;
    else large[nl++] = g;
  }
  while (nl > 0) {
    const g = large[--nl];
    prob[offset + g] = 1;
    alias[offset + g] = map[mapOffset + g];
  }
  while (ns > 0) {
    const l = small[--ns];
    prob[offset + l] = 1;
    alias[offset + l] = map[mapOffset + l];
  }
}
