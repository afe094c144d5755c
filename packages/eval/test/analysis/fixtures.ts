import { gaussian, mulberry32 } from "../../src/analysis/index.js";

/** Seeded Gaussian blobs: `c` centres ~ N(0, sep²) per coordinate, points ~ N(centre, spread²). */
export function blobs(
  n: number,
  d: number,
  c: number,
  seed: number,
  opts: { sep?: number; spread?: number } = {},
): { x: Float32Array; labels: Int32Array } {
  const rng = mulberry32(seed);
  const sep = opts.sep ?? 6;
  const spread = opts.spread ?? 1;
  const centres = Array.from({ length: c }, () => Array.from({ length: d }, () => gaussian(rng) * sep));
  const x = new Float32Array(n * d);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const g = i % c;
    labels[i] = g;
    for (let j = 0; j < d; j++) x[i * d + j] = centres[g][j] + gaussian(rng) * spread;
  }
  return { x, labels };
}

/** True when two labelings are identical up to a renaming of the labels (a bijection). */
export function samePartition(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  const ab = new Map<number, number>();
  const ba = new Map<number, number>();
  for (let i = 0; i < a.length; i++) {
    const x = ab.get(a[i]);
    const y = ba.get(b[i]);
    if (x === undefined && y === undefined) {
      ab.set(a[i], b[i]);
      ba.set(b[i], a[i]);
    } else if (x !== b[i] || y !== a[i]) return false;
  }
  return true;
}

/** Fraction of points whose cluster's majority true label equals their own label. */
export function purity(pred: ArrayLike<number>, truth: ArrayLike<number>): number {
  const counts = new Map<number, Map<number, number>>();
  for (let i = 0; i < pred.length; i++) {
    const m = counts.get(pred[i]) ?? new Map<number, number>();
    m.set(truth[i], (m.get(truth[i]) ?? 0) + 1);
    counts.set(pred[i], m);
  }
  let hit = 0;
  for (const m of counts.values()) hit += Math.max(...m.values());
  return hit / pred.length;
}
