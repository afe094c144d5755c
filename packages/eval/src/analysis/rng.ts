/**
 * Small seeded pseudo-random number generators.
 *
 * umap-js, graphology Louvain and our own subsampling accept a `() => number` source; passing
 * `Math.random` (their default) would make every plot and clustering irreproducible, so every
 * analysis function in this package takes a seed and builds one of these.
 */

/** A uniform generator on [0, 1), as umap-js and graphology expect. */
export type Rng = () => number;

/**
 * mulberry32: a 32-bit state generator (Tommy Ettinger). Tiny, fast, and good enough for
 * layout initialisation, negative sampling and node visiting order; not for cryptography.
 * Any finite seed is accepted; it is reduced to 32 bits, so `seed` and `seed + 2**32` coincide.
 */
export function mulberry32(seed: number): Rng {
  if (!Number.isFinite(seed)) throw new RangeError(`seed must be a finite number, got ${seed}`);
  let a = Math.trunc(seed) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A uniform integer in [0, n) drawn from `rng`. */
export function randInt(rng: Rng, n: number): number {
  return Math.floor(rng() * n);
}

/** Standard normal deviates by Box–Muller (used for seeded test data and benchmarks). */
export function gaussian(rng: Rng): number {
  let u = rng();
  while (u <= 0) u = rng();
  const v = rng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}
