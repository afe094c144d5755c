/**
 * k-nearest-neighbour graphs over embeddings (Float32Array, n × d, row-major).
 *
 * The graph follows scanpy's convention: `k` counts the point itself, so `k = 15` matches
 * `sc.pp.neighbors(n_neighbors=15)` and column 0 of every row is the point with distance 0.
 * umap-js (and umap-learn's `smooth_knn_dist`, which it ports) skips column 0 when it fits the
 * per-point bandwidth, and the Louvain graph builder drops self loops by looking at column 0,
 * so "self first" is a contract of this module, not a detail.
 */

// hnswlib-node is a CommonJS addon (`module.exports = addon`); under `module: NodeNext` with
// esModuleInterop the default import is that exports object, which is what works at run time.
import hnswlib from "hnswlib-node";

/** A kNN graph: row i lists the k nearest points of point i, itself first. */
export interface KnnGraph {
  /** Number of points. */
  readonly n: number;
  /** Neighbours per point, including the point itself. */
  readonly k: number;
  /** n × k point indices, row-major; `neighbors[i * k] === i`. */
  readonly neighbors: Int32Array;
  /** n × k true Euclidean distances (not squared), ascending within a row; column 0 is 0. */
  readonly distances: Float32Array;
}

export interface KnnOptions {
  /** Seed of hnswlib's level generator (hnswlib's own default is 100). */
  seed?: number;
  /** HNSW construction beam width (default 200, hnswlib's default). */
  efConstruction?: number;
  /** HNSW maximum out-degree (default 16, hnswlib's default). */
  M?: number;
  /** Query beam width (default max(2k, 50)); raised to k when smaller, since hnswlib needs ef ≥ k. */
  ef?: number;
}

/** Check that `x` holds n × d finite values and that k is usable; shared by the kNN builders. */
function checkInput(x: Float32Array, n: number, d: number, k: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`n must be a positive integer, got ${n}`);
  if (!Number.isInteger(d) || d < 1) throw new RangeError(`d must be a positive integer, got ${d}`);
  if (x.length !== n * d) throw new RangeError(`embedding has ${x.length} values, expected n*d = ${n * d}`);
  if (!Number.isInteger(k) || k < 1 || k > n) throw new RangeError(`k must be an integer in [1, n=${n}], got ${k}`);
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) {
      throw new RangeError(`embedding value at row ${Math.floor(i / d)}, column ${i % d} is not finite (${x[i]})`);
    }
  }
}

/** Copy row i of `x` into the reusable plain array `buf` (hnswlib only accepts `number[]`). */
function loadRow(x: Float32Array, d: number, i: number, buf: number[]): number[] {
  const off = i * d;
  for (let j = 0; j < d; j++) buf[j] = x[off + j];
  return buf;
}

/**
 * Approximate kNN graph with hnswlib's HNSW index in the `'l2'` space.
 *
 * - hnswlib's `'l2'` reports squared distances; they are square-rooted here so that UMAP's
 *   bandwidths and LISI's perplexities see Euclidean distances, as scanpy/pynndescent give them.
 * - Self is forced to column 0. HNSW usually returns the query point first (distance 0), but it
 *   may miss it (approximate search) or put an exact duplicate before it (equal distance 0).
 *   In the first case self is inserted at column 0 with distance 0 and the farthest candidate is
 *   dropped; in the second it is moved to the front. Either way column 0 is the point itself,
 *   as in scanpy, whose `_get_indices_distances_from_dense_matrix` also forces self first.
 * - If a query returns fewer than k results (possible only with tiny `ef` on degenerate
 *   data), that row is recomputed exactly, so every row is complete.
 *
 * Memory: points are copied one at a time into a single reusable `number[]` of length d,
 * because the addon's `addPoint`/`searchKnn` reject typed arrays; the index itself stores float32.
 */
export function knnGraph(x: Float32Array, n: number, d: number, k: number, opts: KnnOptions = {}): KnnGraph {
  checkInput(x, n, d, k);
  const M = opts.M ?? 16;
  const efConstruction = opts.efConstruction ?? 200;
  const seed = opts.seed ?? 100;
  const ef = Math.max(opts.ef ?? Math.max(2 * k, 50), k);

  const index = new hnswlib.HierarchicalNSW("l2", d);
  index.initIndex(n, M, efConstruction, seed);
  const buf: number[] = new Array<number>(d).fill(0);
  for (let i = 0; i < n; i++) index.addPoint(loadRow(x, d, i, buf), i);
  index.setEf(ef);

  const neighbors = new Int32Array(n * k);
  const distances = new Float32Array(n * k);
  for (let i = 0; i < n; i++) {
    const res = index.searchKnn(loadRow(x, d, i, buf), k);
    if (res.neighbors.length < k) {
      exactRow(x, n, d, k, i, neighbors, distances);
      continue;
    }
    const off = i * k;
    const selfAt = res.neighbors.indexOf(i);
    neighbors[off] = i;
    distances[off] = 0;
    let w = 1;
    for (let j = 0; j < k && w < k; j++) {
      if (j === selfAt) continue;
      neighbors[off + w] = res.neighbors[j];
      distances[off + w] = Math.sqrt(Math.max(0, res.distances[j]));
      w++;
    }
  }
  return { n, k, neighbors, distances };
}

/** Squared Euclidean distance between rows i and j, accumulated in float64. */
function sqDist(x: Float32Array, d: number, i: number, j: number): number {
  const a = i * d;
  const b = j * d;
  let s = 0;
  for (let t = 0; t < d; t++) {
    const diff = x[a + t] - x[b + t];
    s += diff * diff;
  }
  return s;
}

/**
 * Exact neighbours of point i written into row i of the output arrays: self first, then the
 * k − 1 nearest others by (distance, index), so ties are broken deterministically.
 */
function exactRow(
  x: Float32Array,
  n: number,
  d: number,
  k: number,
  i: number,
  neighbors: Int32Array,
  distances: Float32Array,
): void {
  const m = k - 1;
  const bestIdx = new Int32Array(m);
  const bestD = new Float64Array(m).fill(Infinity);
  let filled = 0;
  for (let j = 0; j < n; j++) {
    if (j === i || m === 0) continue;
    const dd = sqDist(x, d, i, j);
    if (filled === m && dd >= bestD[m - 1]) continue;
    // insertion into the sorted top list; strict `>` keeps the lower index first on ties
    let p = filled < m ? filled : m - 1;
    while (p > 0 && bestD[p - 1] > dd) {
      bestD[p] = bestD[p - 1];
      bestIdx[p] = bestIdx[p - 1];
      p--;
    }
    bestD[p] = dd;
    bestIdx[p] = j;
    if (filled < m) filled++;
  }
  const off = i * k;
  neighbors[off] = i;
  distances[off] = 0;
  for (let t = 0; t < m; t++) {
    neighbors[off + 1 + t] = bestIdx[t];
    distances[off + 1 + t] = Math.sqrt(bestD[t]);
  }
}

/**
 * Exact kNN graph by brute force, O(n² d): the oracle for tests and the right choice for a few
 * thousand points. Same layout and conventions as {@link knnGraph} (self first, Euclidean).
 */
export function bruteForceKnn(x: Float32Array, n: number, d: number, k: number): KnnGraph {
  checkInput(x, n, d, k);
  const neighbors = new Int32Array(n * k);
  const distances = new Float32Array(n * k);
  for (let i = 0; i < n; i++) exactRow(x, n, d, k, i, neighbors, distances);
  return { n, k, neighbors, distances };
}

/**
 * Mean recall of `approx` against `exact`: the fraction of exact neighbours (self excluded,
 * since both put it first by construction) that the approximate graph also lists.
 */
export function knnRecall(approx: KnnGraph, exact: KnnGraph): number {
  if (approx.n !== exact.n || approx.k !== exact.k) throw new RangeError("graphs differ in n or k");
  const { n, k } = exact;
  if (k < 2) return 1;
  let hit = 0;
  const seen = new Set<number>();
  for (let i = 0; i < n; i++) {
    seen.clear();
    for (let j = 1; j < k; j++) seen.add(approx.neighbors[i * k + j]);
    for (let j = 1; j < k; j++) if (seen.has(exact.neighbors[i * k + j])) hit++;
  }
  return hit / (n * (k - 1));
}

/** An undirected weighted edge list with i < j, as built by {@link umapConnectivities}. */
export interface EdgeList {
  readonly rows: Int32Array;
  readonly cols: Int32Array;
  readonly weights: Float64Array;
}

const SMOOTH_K_TOLERANCE = 1e-5;
const MIN_K_DIST_SCALE = 1e-3;

/**
 * UMAP fuzzy-union connectivities (scanpy's `method="umap"`, `local_connectivity = 1`,
 * `set_op_mix_ratio = 1`), the weighted graph that scanpy's Leiden/Louvain use when weights are
 * on and that scib-metrics' Leiden clusters. Per point: rho = nearest non-zero distance, sigma
 * by bisection so that Σ_{j≥1} exp(−max(0, d_j − rho)/sigma) = log2(k); membership
 * w_ij = exp(−max(0, d_ij − rho_i)/sigma_i); union w = a + b − a·b. Self loops are dropped.
 */
export function umapConnectivities(graph: KnnGraph): EdgeList {
  const { n, k, neighbors, distances } = graph;
  const target = Math.log2(k);
  const rho = new Float64Array(n);
  const sigma = new Float64Array(n);
  let meanAll = 0;
  for (let t = 0; t < n * k; t++) meanAll += distances[t];
  meanAll /= n * k;

  for (let i = 0; i < n; i++) {
    const off = i * k;
    let r = 0;
    let rowMean = 0;
    for (let j = 0; j < k; j++) {
      const dj = distances[off + j];
      rowMean += dj;
      if (r === 0 && dj > 0) r = dj;
    }
    rowMean /= k;
    rho[i] = r;
    let lo = 0;
    let hi = Infinity;
    let mid = 1;
    for (let it = 0; it < 64; it++) {
      let psum = 0;
      for (let j = 1; j < k; j++) {
        const dd = distances[off + j] - r;
        psum += dd > 0 ? Math.exp(-dd / mid) : 1;
      }
      if (Math.abs(psum - target) < SMOOTH_K_TOLERANCE) break;
      if (psum > target) {
        hi = mid;
        mid = (lo + hi) / 2;
      } else {
        lo = mid;
        mid = hi === Infinity ? mid * 2 : (lo + hi) / 2;
      }
    }
    const floor = MIN_K_DIST_SCALE * (r > 0 ? rowMean : meanAll);
    sigma[i] = Math.max(mid, floor);
  }

  // directed memberships keyed by the unordered pair, combined with the fuzzy union
  const pairs = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const off = i * k;
    for (let j = 0; j < k; j++) {
      const nb = neighbors[off + j];
      if (nb === i || nb < 0) continue;
      const dd = distances[off + j] - rho[i];
      const w = dd <= 0 ? 1 : Math.exp(-dd / sigma[i]);
      const a = Math.min(i, nb);
      const b = Math.max(i, nb);
      const key = a * n + b;
      const prev = pairs.get(key);
      pairs.set(key, prev === undefined ? w : prev + w - prev * w);
    }
  }
  const m = pairs.size;
  const rows = new Int32Array(m);
  const cols = new Int32Array(m);
  const weights = new Float64Array(m);
  const keys = Array.from(pairs.keys()).sort((p, q) => p - q);
  for (let t = 0; t < m; t++) {
    const key = keys[t];
    rows[t] = Math.floor(key / n);
    cols[t] = key - rows[t] * n;
    weights[t] = pairs.get(key) as number;
  }
  return { rows, cols, weights };
}

/** Copy the rows `indices` of an n × d embedding into a new |indices| × d array (for subsampling). */
export function takeRows(x: Float32Array, d: number, indices: ArrayLike<number>): Float32Array {
  const out = new Float32Array(indices.length * d);
  for (let t = 0; t < indices.length; t++) {
    const i = indices[t];
    if (!Number.isInteger(i) || i < 0 || (i + 1) * d > x.length) throw new RangeError(`row index ${i} out of range`);
    out.set(x.subarray(i * d, (i + 1) * d), t * d);
  }
  return out;
}
