/**
 * Graph connectivity (evaluation.md §4): GC = mean over cell types c of |LCC(G_c)|/N_c, where
 * G_c is the kNN graph restricted to the cells of type c (edges between two cells of type c).
 *
 * Two variants, both O(n·k) time and memory, no recursion (fine at n = 100k and beyond):
 * - `"scib"` (scib `graph_connectivity`): the graph is symmetrised (i ~ j if either lists the
 *   other), as scanpy's UMAP connectivities are, and components are its connected components
 *   (scipy `connected_components` on the symmetric matrix; strong = weak there).
 * - `"scib-metrics"` (scib-metrics `graph_connectivity`): the directed kNN graph as it is, with
 *   strongly connected components (scipy `connection="strong"`), via an iterative Tarjan.
 *   Strong components are never larger, so this score is ≤ the scib one on the same graph.
 */
import { factorizeLabels, type LabelName, type Labels } from "./labels.js";

export type GraphConnectivityVariant = "scib" | "scib-metrics";

export interface GraphConnectivityRow {
  label: LabelName;
  nCells: number;
  /** Size of the largest component of the label's induced subgraph. */
  largestComponent: number;
  /** largestComponent / nCells. */
  fraction: number;
}

export interface GraphConnectivityResult {
  variant: GraphConnectivityVariant;
  /** Unweighted mean of the per-label fractions (NaN for an empty graph). */
  score: number;
  /** One row per label present, in sorted label order. */
  perLabel: GraphConnectivityRow[];
}

function checkNeighbors(neighbors: Int32Array, n: number, k: number): void {
  if (!Number.isInteger(n) || n < 0 || !Number.isInteger(k) || k < 0) {
    throw new Error(`graphConnectivity: n and k must be non-negative integers (got n=${n}, k=${k}).`);
  }
  if (neighbors.length !== n * k) {
    throw new Error(`graphConnectivity: neighbors has ${neighbors.length} entries but n×k = ${n}×${k} = ${n * k}.`);
  }
  for (let z = 0; z < neighbors.length; z++) {
    const j = neighbors[z];
    if (j < -1 || j >= n) {
      throw new Error(`graphConnectivity: neighbour index ${j} in row ${Math.floor(z / k)} is outside [0, ${n}) (use -1 for a missing neighbour).`);
    }
  }
}

/** Component id per node for the symmetrised same-label graph (union-find, path halving). */
function weakComponents(neighbors: Int32Array, n: number, k: number, codes: Int32Array): Int32Array {
  const parent = new Int32Array(n);
  const size = new Int32Array(n).fill(1);
  for (let i = 0; i < n; i++) parent[i] = i;
  const find = (v: number) => {
    while (parent[v] !== v) {
      parent[v] = parent[parent[v]];
      v = parent[v];
    }
    return v;
  };
  for (let i = 0; i < n; i++) {
    for (let t = 0; t < k; t++) {
      const j = neighbors[i * k + t];
      if (j < 0 || j === i || codes[j] !== codes[i]) continue;
      let a = find(i);
      let b = find(j);
      if (a === b) continue;
      if (size[a] < size[b]) [a, b] = [b, a];
      parent[b] = a;
      size[a] += size[b];
    }
  }
  const comp = new Int32Array(n);
  for (let i = 0; i < n; i++) comp[i] = find(i);
  return comp;
}

/** Component id per node for the directed same-label graph: iterative Tarjan SCC. */
function strongComponents(neighbors: Int32Array, n: number, k: number, codes: Int32Array): Int32Array {
  const index = new Int32Array(n).fill(-1);
  const low = new Int32Array(n);
  const onStack = new Uint8Array(n);
  const stack = new Int32Array(n);
  const callStack = new Int32Array(n);
  const edgePtr = new Int32Array(n);
  const comp = new Int32Array(n);
  let sp = 0;
  let counter = 0;
  let nComp = 0;
  for (let s = 0; s < n; s++) {
    if (index[s] !== -1) continue;
    let csp = 0;
    index[s] = low[s] = counter++;
    stack[sp++] = s;
    onStack[s] = 1;
    callStack[csp++] = s;
    while (csp > 0) {
      const v = callStack[csp - 1];
      if (edgePtr[v] < k) {
        const w = neighbors[v * k + edgePtr[v]++];
        if (w < 0 || codes[w] !== codes[v]) continue;
        if (index[w] === -1) {
          index[w] = low[w] = counter++;
          stack[sp++] = w;
          onStack[w] = 1;
          callStack[csp++] = w;
        } else if (onStack[w] && index[w] < low[v]) {
          low[v] = index[w];
        }
      } else {
        csp--;
        if (low[v] === index[v]) {
          let w: number;
          do {
            w = stack[--sp];
            onStack[w] = 0;
            comp[w] = nComp;
          } while (w !== v);
          nComp++;
        }
        if (csp > 0) {
          const u = callStack[csp - 1];
          if (low[v] < low[u]) low[u] = low[v];
        }
      }
    }
  }
  return comp;
}

/**
 * Graph connectivity from a kNN neighbour matrix.
 *
 * @param neighbors row-major n×k neighbour indices; row i lists the neighbours of cell i (it may
 *   include i itself, which is ignored; -1 marks a missing neighbour).
 * @param labels cell-type label per cell.
 * @param variant `"scib"` (symmetrised graph, connected components) or `"scib-metrics"`
 *   (directed graph, strongly connected components); see the module comment.
 */
export function graphConnectivity(
  neighbors: Int32Array,
  n: number,
  k: number,
  labels: Labels,
  variant: GraphConnectivityVariant,
): GraphConnectivityResult {
  if (variant !== "scib" && variant !== "scib-metrics") {
    throw new Error(`graphConnectivity: variant must be "scib" or "scib-metrics" (got ${String(variant)}).`);
  }
  checkNeighbors(neighbors, n, k);
  if (labels.length !== n) throw new Error(`graphConnectivity: labels has ${labels.length} elements but n = ${n}.`);
  const f = factorizeLabels(labels);
  const comp = variant === "scib" ? weakComponents(neighbors, n, k, f.codes) : strongComponents(neighbors, n, k, f.codes);
  // Component ids are < n in both variants; a component lies within one label.
  const compSize = new Int32Array(n);
  for (let i = 0; i < n; i++) compSize[comp[i]]++;
  const largest = new Float64Array(f.names.length);
  for (let i = 0; i < n; i++) {
    const c = f.codes[i];
    const s = compSize[comp[i]];
    if (s > largest[c]) largest[c] = s;
  }
  const perLabel: GraphConnectivityRow[] = [];
  let total = 0;
  for (let c = 0; c < f.names.length; c++) {
    const fraction = largest[c] / f.counts[c];
    perLabel.push({ label: f.names[c], nCells: f.counts[c], largestComponent: largest[c], fraction });
    total += fraction;
  }
  return { variant, score: perLabel.length === 0 ? NaN : total / perLabel.length, perLabel };
}
