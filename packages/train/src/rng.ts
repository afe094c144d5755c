/**
 * gm's seeded randomness for training (loader order, masking). Its output is part of the resume
 * contract (a checkpoint holds only positions and the seed; everything is recomputed), so it must
 * never change with Node or library versions:
 * no Math.random, no third-party PRNG. Keys are mixed with SplitMix64 (BigInt, a few calls per
 * buffer); the stream itself is xoshiro128** in 32-bit integer arithmetic (fast for Fisher–Yates).
 */

const MASK64 = (1n << 64n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;

/** SplitMix64's finaliser: a bijective 64-bit mix. */
function mix64(z: bigint): bigint {
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

/** Purposes of the random streams; part of the key so the streams are independent. */
export const Stream = { batches: 1, cells: 2, steps: 3, mask: 16, split: 32, finetuneOrder: 33, dropout: 34, subsample: 35 } as const;

export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** A stream keyed by integers (seed, purpose, epoch, buffer, ...); equal keys give equal streams. */
  constructor(...key: number[]) {
    let h = GOLDEN;
    for (const k of key) h = mix64(((h ^ BigInt.asUintN(64, BigInt(k))) + GOLDEN) & MASK64);
    // Two SplitMix64 outputs fill xoshiro's 128-bit state.
    const a = mix64((h + GOLDEN) & MASK64);
    const b = mix64((h + 2n * GOLDEN) & MASK64);
    this.s0 = Number(a & 0xffffffffn) | 0;
    this.s1 = Number(a >> 32n) | 0;
    this.s2 = Number(b & 0xffffffffn) | 0;
    this.s3 = Number(b >> 32n) | 0;
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the all-zero state is a fixed point
  }

  /** xoshiro128**: the next uniform 32-bit unsigned integer. */
  nextU32(): number {
    const s1 = this.s1;
    const m = Math.imul(s1, 5);
    const result = Math.imul((m << 7) | (m >>> 25), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = (this.s3 << 11) | (this.s3 >>> 21);
    return result;
  }

  /** Uniform integer in [0, n), n <= 2^32, without modulo bias (rejection sampling). */
  below(n: number): number {
    if (n <= 1) return 0;
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const u = this.nextU32();
      if (u < limit) return u % n;
    }
  }

  /** Uniform in [0, 1) with 32 random bits. */
  uniform(): number {
    return this.nextU32() / 4294967296;
  }

  /** Fisher–Yates, in place. */
  shuffle<T extends { length: number; [i: number]: number }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.below(i + 1);
      const x = a[i];
      a[i] = a[j];
      a[j] = x;
    }
    return a;
  }
}
