/**
 * 2-D UMAP layouts for plots, computed by umap-js on a precomputed kNN graph.
 *
 * umap-js is single-threaded pure JavaScript with a string-keyed sparse matrix, so a layout of
 * 100k cells is impractically slow; lay out a seeded subsample instead ({@link subsampleIndices},
 * then `takeRows` and `knnGraph` on the subsample). Metrics must still use the full data.
 */

import { UMAP } from "umap-js";
import type { KnnGraph } from "./knn.js";
import { mulberry32, randInt } from "./rng.js";

export interface UmapOptions {
  /** Seed of the layout initialisation and negative sampling (default 0). */
  seed?: number;
  /** UMAP `min_dist` (default 0.3, as in the GeneMamba plots; umap-js' own default is 0.1). */
  minDist?: number;
  /** UMAP `spread` (default 1). */
  spread?: number;
  /**
   * Optimisation epochs. Default: umap-js' rule (500 up to 2,500 points, 400 up to 5,000,
   * 300 up to 7,500, else 200), which is close to umap-learn's 500/200 rule.
   */
  nEpochs?: number;
}

/**
 * Lay out the n points of `graph` in 2-D. Returns n × 2 coordinates, row-major.
 *
 * The graph must come from `knnGraph`/`bruteForceKnn` (self in column 0, Euclidean distances):
 * umap-js fits each point's bandwidth from columns 1…k−1 and gives the self entry weight 0,
 * exactly like umap-learn. `nNeighbors` is set to the graph's k.
 *
 * umap-js' `fit(X)` still takes the data, but with a precomputed kNN it reads only `X.length`
 * (the graph size); its initialisation is random uniform in [−10, 10]², not spectral, and X
 * is otherwise used only by `transform`, which is not called. So a list of n empty rows is
 * passed instead of copying the embedding into n JavaScript arrays.
 *
 * Differences from scanpy's `tl.umap`: random (not spectral) initialisation and a different
 * random stream, so layouts agree in neighbourhood structure, not in coordinates.
 */
export function umapLayout(graph: KnnGraph, n: number, opts: UmapOptions = {}): Float32Array {
  const { k, neighbors, distances } = graph;
  if (graph.n !== n) throw new RangeError(`graph has ${graph.n} points, n is ${n}`);
  if (k < 2) throw new RangeError("UMAP needs k ≥ 2 (self plus at least one neighbour)");
  if (n <= k) throw new RangeError(`UMAP needs more points than neighbours (n=${n}, k=${k})`);
  const minDist = opts.minDist ?? 0.3;
  const spread = opts.spread ?? 1;
  if (!(minDist >= 0) || !(spread > 0) || minDist > spread) {
    throw new RangeError(`need 0 ≤ minDist ≤ spread and spread > 0 (minDist=${minDist}, spread=${spread})`);
  }
  const nEpochs = opts.nEpochs ?? 0; // 0 = umap-js' size-dependent default
  if (!Number.isInteger(nEpochs) || nEpochs < 0) throw new RangeError(`nEpochs must be a non-negative integer`);

  const knnIndices: number[][] = new Array<number[]>(n);
  const knnDistances: number[][] = new Array<number[]>(n);
  for (let i = 0; i < n; i++) {
    knnIndices[i] = Array.from(neighbors.subarray(i * k, (i + 1) * k));
    knnDistances[i] = Array.from(distances.subarray(i * k, (i + 1) * k));
    if (knnIndices[i][0] !== i) throw new RangeError(`graph row ${i} does not start with the point itself`);
  }

  const umap = new UMAP({
    nComponents: 2,
    nNeighbors: k,
    minDist,
    spread,
    nEpochs,
    random: mulberry32(opts.seed ?? 0),
  });
  umap.setPrecomputedKNN(knnIndices, knnDistances);
  const placeholder: number[] = [];
  const rows: number[][] = new Array<number[]>(n).fill(placeholder);
  const emb = umap.fit(rows);

  const out = new Float32Array(n * 2);
  for (let i = 0; i < n; i++) {
    out[2 * i] = emb[i][0];
    out[2 * i + 1] = emb[i][1];
  }
  return out;
}

/**
 * A seeded subsample of `max` of the indices 0…n−1, sorted ascending (all of them when n ≤ max).
 *
 * Without `strata` it is a uniform sample without replacement (partial Fisher–Yates).
 * With `strata` (e.g. cell-type labels, one per point) each stratum gets a share proportional to
 * its size (largest remainders), but at least one point while `max` allows, so rare cell types
 * stay visible in a subsampled UMAP; points within a stratum are drawn uniformly.
 */
export function subsampleIndices(
  n: number,
  max: number,
  seed: number,
  strata?: ArrayLike<string | number>,
): Int32Array {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`n must be a non-negative integer, got ${n}`);
  if (!Number.isInteger(max) || max < 0) throw new RangeError(`max must be a non-negative integer, got ${max}`);
  if (strata !== undefined && strata.length !== n) throw new RangeError(`strata has ${strata.length} entries, n is ${n}`);
  if (n <= max) return Int32Array.from({ length: n }, (_, i) => i);
  const rng = mulberry32(seed);

  if (strata === undefined) return sortedSample(Int32Array.from({ length: n }, (_, i) => i), max, rng);

  const groups = new Map<string | number, number[]>();
  for (let i = 0; i < n; i++) {
    const g = groups.get(strata[i]);
    if (g) g.push(i);
    else groups.set(strata[i], [i]);
  }
  // deterministic group order (insertion order of first appearance), largest-remainder quotas
  const members = Array.from(groups.values());
  const quota = members.map((g) => Math.floor((g.length * max) / n));
  if (max >= members.length) {
    for (let t = 0; t < quota.length; t++) if (quota[t] === 0) quota[t] = 1;
  }
  let assigned = quota.reduce((a, b) => a + b, 0);
  const byRemainder = members
    .map((g, t) => ({ t, rem: (g.length * max) / n - Math.floor((g.length * max) / n) }))
    .sort((a, b) => b.rem - a.rem || a.t - b.t);
  for (let r = 0; assigned < max && byRemainder.length > 0; r = (r + 1) % byRemainder.length) {
    const t = byRemainder[r].t;
    if (quota[t] < members[t].length) {
      quota[t]++;
      assigned++;
    }
  }
  while (assigned > max) {
    // the "at least one" floor overshot: take back from the largest quotas
    let big = 0;
    for (let t = 1; t < quota.length; t++) if (quota[t] > quota[big]) big = t;
    quota[big]--;
    assigned--;
  }
  const picked: number[] = [];
  members.forEach((g, t) => {
    for (const i of sortedSample(Int32Array.from(g), quota[t], rng)) picked.push(i);
  });
  return Int32Array.from(picked).sort();
}

/** `m` elements of `pool` drawn without replacement (pool is shuffled in place), sorted. */
function sortedSample(pool: Int32Array, m: number, rng: () => number): Int32Array {
  const len = pool.length;
  for (let i = 0; i < m; i++) {
    const j = i + randInt(rng, len - i);
    const tmp = pool[i];
    pool[i] = pool[j];
    pool[j] = tmp;
  }
  return pool.slice(0, m).sort();
}
