/**
 * Clusterings used by the NMI/ARI metrics, in the two flavours of the reference pipelines:
 *
 * - "scib-metrics (KMeans)": {@link kmeansLabels}, k = number of labels, k-means++, seed 0.
 * - "scib ≤ 1.1.5-like (Louvain)": {@link louvainSweep} over resolutions 0.1…2.0 on the
 *   unweighted kNN graph, keeping the resolution with the best score.
 *
 * Neither is bit-identical to its Python counterpart (different random streams and
 * optimisers); compare against reference runs with a tolerance.
 */

import { createRequire } from "node:module";
import { UndirectedGraph } from "graphology";
import type LouvainCjs from "graphology-communities-louvain";
import { kmeans } from "ml-kmeans";
import { umapConnectivities, type KnnGraph } from "./knn.js";
import { mulberry32 } from "./rng.js";

// graphology-communities-louvain is CommonJS (`module.exports = fn`) but its typings declare
// `export default`; under `module: NodeNext` TypeScript would then type the default import as
// the module object. Loading it with require gives the function with its declared type.
// (graphology itself ships real ESM, so its named export is imported normally.)
const louvain = createRequire(import.meta.url)("graphology-communities-louvain") as typeof LouvainCjs.default;

// ---------------------------------------------------------------------------------------------
// KMeans

export interface KmeansOptions {
  /** Seed of the k-means++ initialisation (default 0, as scib-metrics). */
  seed?: number;
  /** Lloyd iterations at most (default 300, as scib-metrics / sklearn; ml-kmeans' default is 100). */
  maxIterations?: number;
  /**
   * Convergence threshold on the squared shift of every centroid between two iterations.
   * Default: 1e-4 × mean per-feature variance of `x` (see {@link kmeansTolerance}).
   */
  tolerance?: number;
}

/**
 * scib-metrics' tolerance scale: `tol × mean(var(X, axis=0))` (population variance), computed
 * in float64. sklearn uses the same scale.
 */
export function kmeansTolerance(x: Float32Array, n: number, d: number, tol = 1e-4): number {
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += x[i * d + j];
  for (let j = 0; j < d; j++) mean[j] /= n;
  let acc = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) {
      const v = x[i * d + j] - mean[j];
      acc += v * v;
    }
  }
  return (acc / n / d) * tol;
}

/**
 * KMeans labels (0…k−1) with ml-kmeans, configured as close to scib-metrics' JAX KMeans as
 * ml-kmeans allows: k-means++ initialisation with 2 + ⌊ln k⌋ greedy local trials (both follow
 * sklearn), one initialisation (`n_init = 1`), at most 300 iterations, seeded.
 *
 * Convergence differs in what is compared:
 * - ml-kmeans stops when every centroid's squared shift is ≤ `tolerance`. We set `tolerance`
 *   to 1e-4 × mean feature variance, which is sklearn's scale. sklearn compares the *sum* of
 *   the squared shifts over centroids; the per-centroid maximum used here is at most that sum,
 *   so ml-kmeans may stop up to a few iterations earlier than sklearn would.
 * - scib-metrics compares the change in inertia with that same scaled tolerance, and its loop
 *   condition is `|Δinertia| > tol OR n_iter < max_iter`, so in practice it runs all 300
 *   iterations. Lloyd's algorithm has usually reached its fixed point far earlier, so the
 *   labels agree with a converged run; pass `tolerance: 0` to iterate to the exact fixed point
 *   (assignments unchanged) or 300 iterations, whichever is first.
 *
 * Rows are handed to ml-kmeans as Float32Array views of `x` (no copy); ml-kmeans only indexes
 * them. Its k-means++ step copies the data once into an ml-matrix (float64).
 */
export function kmeansLabels(x: Float32Array, n: number, d: number, k: number, opts: KmeansOptions = {}): Int32Array {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`n must be a positive integer, got ${n}`);
  if (!Number.isInteger(d) || d < 1) throw new RangeError(`d must be a positive integer, got ${d}`);
  if (x.length !== n * d) throw new RangeError(`embedding has ${x.length} values, expected n*d = ${n * d}`);
  if (!Number.isInteger(k) || k < 1 || k > n) throw new RangeError(`k must be an integer in [1, n=${n}], got ${k}`);
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) throw new RangeError(`embedding value ${i} is not finite (${x[i]})`);
  }
  if (k === 1) return new Int32Array(n);
  const maxIterations = opts.maxIterations ?? 300;
  if (!Number.isInteger(maxIterations) || maxIterations < 1) {
    throw new RangeError(`maxIterations must be a positive integer, got ${maxIterations}`);
  }
  const tolerance = opts.tolerance ?? kmeansTolerance(x, n, d);
  if (!(tolerance >= 0)) throw new RangeError(`tolerance must be ≥ 0, got ${tolerance}`);

  const rows = new Array<Float32Array>(n);
  for (let i = 0; i < n; i++) rows[i] = x.subarray(i * d, (i + 1) * d);
  const result = kmeans(rows as unknown as number[][], k, {
    initialization: "kmeans++",
    maxIterations,
    tolerance,
    seed: opts.seed ?? 0,
  });
  const labels = Int32Array.from(result.clusters);
  for (let i = 0; i < n; i++) {
    if (labels[i] < 0 || labels[i] >= k) throw new Error(`ml-kmeans returned an invalid label ${labels[i]} for row ${i}`);
  }
  return labels;
}

// ---------------------------------------------------------------------------------------------
// Louvain

/** A graphology graph built once from a kNN graph and reused across Louvain runs. */
export interface LouvainGraph {
  readonly n: number;
  readonly weighted: boolean;
  readonly graph: UndirectedGraph;
}

export interface LouvainGraphOptions {
  /**
   * Weight edges by UMAP fuzzy-union connectivities (default false). scib ≤ 1.1.5 calls scanpy's
   * Louvain with `use_weights=False`, i.e. every kNN edge counts 1, so unweighted is the
   * closest analogue of the GeneMamba/scGPT evaluation; `true` mimics scanpy's weighted default.
   */
  weighted?: boolean;
}

/**
 * Undirected simple graph on nodes "0"…"n−1" with one edge per unordered pair {i, j} where j is
 * among i's neighbours or i among j's (self loops dropped, duplicates merged). This is the
 * support of scanpy's symmetric `connectivities`; scib ≤ 1.1.5 passes it to louvain-igraph as a
 * directed graph with both directions, which has the same modularity as this undirected one.
 */
export function buildLouvainGraph(knn: KnnGraph, opts: LouvainGraphOptions = {}): LouvainGraph {
  const { n, k, neighbors } = knn;
  const weighted = opts.weighted ?? false;
  const graph = new UndirectedGraph({ multi: false, allowSelfLoops: false });
  for (let i = 0; i < n; i++) graph.addNode(String(i));
  if (weighted) {
    const e = umapConnectivities(knn);
    for (let t = 0; t < e.rows.length; t++) {
      if (e.weights[t] > 0) graph.addEdge(String(e.rows[t]), String(e.cols[t]), { weight: e.weights[t] });
    }
  } else {
    const seen = new Set<number>();
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < k; j++) {
        const nb = neighbors[i * k + j];
        if (nb === i || nb < 0) continue;
        const a = Math.min(i, nb);
        const b = Math.max(i, nb);
        const key = a * n + b;
        if (seen.has(key)) continue;
        seen.add(key);
        graph.addEdge(String(a), String(b));
      }
    }
  }
  return { n, weighted, graph };
}

export interface LouvainOptions extends LouvainGraphOptions {
  /** Modularity resolution γ (default 1). */
  resolution?: number;
  /** Seed of the node-visiting order (default 0, as scanpy's `random_state=0`). */
  seed?: number;
}

function asLouvainGraph(g: KnnGraph | LouvainGraph, n: number, weighted: boolean | undefined): LouvainGraph {
  const lg = "graph" in g ? g : buildLouvainGraph(g, { weighted });
  if (lg.n !== n) throw new RangeError(`graph has ${lg.n} points, n is ${n}`);
  if ("graph" in g && weighted !== undefined && weighted !== g.weighted) {
    throw new RangeError(`prebuilt graph is ${g.weighted ? "weighted" : "unweighted"}, but weighted=${weighted} was asked`);
  }
  return lg;
}

/** One Louvain run on a prebuilt graph; labels renumbered by decreasing community size. */
function runLouvain(lg: LouvainGraph, resolution: number, seed: number): Int32Array {
  if (!(resolution > 0) || !Number.isFinite(resolution)) throw new RangeError(`resolution must be > 0, got ${resolution}`);
  const communities = louvain(lg.graph, {
    resolution,
    rng: mulberry32(seed),
    getEdgeWeight: lg.weighted ? "weight" : null,
  });
  const raw = new Int32Array(lg.n);
  for (let i = 0; i < lg.n; i++) raw[i] = communities[String(i)];
  return relabelBySize(raw);
}

/**
 * Renumber labels 0…C−1 by decreasing size, ties by first appearance, as louvain-igraph (and
 * hence scanpy's categories) order communities; makes labels independent of graphology's ids.
 */
function relabelBySize(raw: Int32Array): Int32Array {
  const size = new Map<number, number>();
  const first = new Map<number, number>();
  raw.forEach((c, i) => {
    size.set(c, (size.get(c) ?? 0) + 1);
    if (!first.has(c)) first.set(c, i);
  });
  const order = Array.from(size.keys()).sort(
    (a, b) => (size.get(b) as number) - (size.get(a) as number) || (first.get(a) as number) - (first.get(b) as number),
  );
  const map = new Map<number, number>();
  order.forEach((c, t) => map.set(c, t));
  return raw.map((c) => map.get(c) as number);
}

/**
 * Louvain communities of the kNN graph (graphology-communities-louvain), seeded.
 * Pass a {@link LouvainGraph} from {@link buildLouvainGraph} to avoid rebuilding it per call.
 */
export function louvainLabels(graph: KnnGraph | LouvainGraph, n: number, opts: LouvainOptions = {}): Int32Array {
  const lg = asLouvainGraph(graph, n, opts.weighted);
  return runLouvain(lg, opts.resolution ?? 1, opts.seed ?? 0);
}

/** scib's default resolutions 0.1, 0.2, …, 2.0, computed as i/10 so that 0.3 is exactly 0.3. */
export function defaultResolutions(): number[] {
  return Array.from({ length: 20 }, (_, i) => (i + 1) / 10);
}

export interface LouvainSweepOptions extends LouvainGraphOptions {
  /** Resolutions to try, in order (default {@link defaultResolutions}). */
  resolutions?: number[];
  /** Seed for every run (default 0); each resolution starts from the same seed, like scanpy. */
  seed?: number;
  /** The score to maximise, typically NMI against the cell-type labels. */
  score: (labels: Int32Array) => number;
}

export interface LouvainSweepResult {
  best: { resolution: number; labels: Int32Array; score: number };
  all: { resolution: number; nClusters: number; score: number }[];
}

/**
 * scib's `opt_louvain` / `cluster_optimal_resolution` selection: starting from score_max = 0,
 * a resolution replaces the current best only if its score is strictly higher, so ties keep the
 * earlier (lower) resolution. If no score exceeds 0 (or all are NaN), `best` is the first
 * resolution with its own labels and score; scib then reports resolutions[0] with score 0 and
 * stores no clustering. The graph is built once and reused for every resolution.
 */
export function louvainSweep(graph: KnnGraph | LouvainGraph, n: number, opts: LouvainSweepOptions): LouvainSweepResult {
  const resolutions = opts.resolutions ?? defaultResolutions();
  if (resolutions.length === 0) throw new RangeError("resolutions must not be empty");
  const seed = opts.seed ?? 0;
  const lg = asLouvainGraph(graph, n, opts.weighted);
  const all: LouvainSweepResult["all"] = [];
  let best: LouvainSweepResult["best"] | undefined;
  let first: LouvainSweepResult["best"] | undefined;
  let scoreMax = 0;
  for (const resolution of resolutions) {
    const labels = runLouvain(lg, resolution, seed);
    const score = opts.score(labels);
    let nClusters = 0;
    for (let i = 0; i < labels.length; i++) if (labels[i] + 1 > nClusters) nClusters = labels[i] + 1;
    all.push({ resolution, nClusters, score });
    if (first === undefined) first = { resolution, labels, score };
    if (score > scoreMax) {
      scoreMax = score;
      best = { resolution, labels, score };
    }
  }
  return { best: best ?? (first as LouvainSweepResult["best"]), all };
}
