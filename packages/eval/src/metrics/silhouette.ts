/**
 * Silhouette family (evaluation.md §3, §5), Euclidean distance, float64 arithmetic.
 *
 * The O(n²·d) part, the per-cell sums of distances to every label, sits behind the
 * {@link DistanceSums} signature so that a native (C++/BLAS) implementation can replace
 * {@link distanceSumsTs}; everything else is O(n·k) and works from those sums:
 *
 * - {@link silhouetteFromSums} / {@link silhouetteSamples}: sklearn `silhouette_samples`.
 * - {@link aswLabel}: scib `silhouette` / scib-metrics `silhouette_label`, (mean s + 1)/2.
 * - {@link aswBatch}: scib `silhouette_batch` (1 − |s| per cell on batch labels within each
 *   cell type, unweighted mean over cell types).
 * - {@link isolatedLabelsAsw}: scib `isolated_labels_asw` (scib ≥ 1.1.6 / scib-metrics
 *   semantics by default, the older isolated-vs-rest grouping on request).
 */
import { checkSameLength, factorizeLabels, type LabelName, type Labels } from "./labels.js";

/**
 * Sums of Euclidean distances per cell and label.
 *
 * @param x row-major n×d embedding
 * @param labels codes in [0, k)
 * @returns row-major n×k matrix: entry (i, c) = Σ_{j : labels[j] = c} ‖x_i − x_j‖₂
 *   (the distance of a cell to itself is 0, so it contributes nothing to its own label).
 */
export type DistanceSums = (x: Float32Array, n: number, d: number, labels: Int32Array, k: number) => Float64Array;

/** Options shared by the silhouette metrics. */
export interface SilhouetteOptions {
  /** Distance-sum kernel; defaults to {@link distanceSumsTs}. */
  distanceSums?: DistanceSums;
}

function checkEmbedding(x: Float32Array, n: number, d: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || !Number.isInteger(d) || d < 1) {
    throw new Error(`${what}: n must be a non-negative integer and d a positive integer (got n=${n}, d=${d}).`);
  }
  if (x.length !== n * d) {
    throw new Error(`${what}: the embedding has ${x.length} values but n×d = ${n}×${d} = ${n * d}.`);
  }
}

function checkCodes(labels: Int32Array, n: number, k: number, what: string): void {
  if (labels.length !== n) throw new Error(`${what}: labels has ${labels.length} elements but n = ${n}.`);
  for (let i = 0; i < n; i++) {
    const c = labels[i];
    if (c < 0 || c >= k) throw new Error(`${what}: label code ${c} at index ${i} is outside [0, ${k}).`);
  }
}

const BLOCK = 64;

/**
 * Pure TypeScript {@link DistanceSums}: direct distances sqrt(Σ (x_i − x_j)²) accumulated in
 * float64 (no dot-product trick), each pair computed once, rows processed in 64×64 blocks.
 * O(n²·d) time, O(n·(d + k)) memory.
 */
export const distanceSumsTs: DistanceSums = (x, n, d, labels, k) => {
  checkEmbedding(x, n, d, "distanceSumsTs");
  checkCodes(labels, n, k, "distanceSumsTs");
  const xf = Float64Array.from(x);
  const out = new Float64Array(n * k);
  for (let i0 = 0; i0 < n; i0 += BLOCK) {
    const i1 = Math.min(n, i0 + BLOCK);
    for (let j0 = i0; j0 < n; j0 += BLOCK) {
      const j1 = Math.min(n, j0 + BLOCK);
      for (let i = i0; i < i1; i++) {
        const oi = i * d;
        const li = labels[i];
        const rowI = i * k;
        for (let j = j0 === i0 ? i + 1 : j0; j < j1; j++) {
          const oj = j * d;
          let s = 0;
          for (let t = 0; t < d; t++) {
            const diff = xf[oi + t] - xf[oj + t];
            s += diff * diff;
          }
          const dist = Math.sqrt(s);
          out[rowI + labels[j]] += dist;
          out[j * k + li] += dist;
        }
      }
    }
  }
  return out;
};

/** Throws sklearn's `check_number_of_labels` error unless 2 ≤ #labels ≤ n − 1. */
function checkNumberOfLabels(nLabels: number, n: number, what: string): void {
  if (nLabels < 2 || nLabels > n - 1) {
    throw new Error(`${what}: the number of labels is ${nLabels}, but the silhouette needs 2 to n − 1 = ${n - 1} distinct labels.`);
  }
}

/**
 * Per-cell silhouette from distance sums, sklearn `silhouette_samples` semantics:
 * a = own-label sum/(n_c − 1), b = min over the other (non-empty) labels of the mean distance,
 * s = (b − a)/max(a, b); NaN (singleton clusters, or a = b = 0) becomes 0 (`np.nan_to_num`).
 * Labels with no cells are ignored. Throws unless 2 ≤ #non-empty labels ≤ n − 1. O(n·k).
 */
export function silhouetteFromSums(sums: Float64Array, n: number, k: number, labels: Int32Array): Float64Array {
  if (sums.length !== n * k) throw new Error(`silhouetteFromSums: sums has ${sums.length} values but n×k = ${n * k}.`);
  checkCodes(labels, n, k, "silhouetteFromSums");
  const counts = new Float64Array(k);
  for (let i = 0; i < n; i++) counts[labels[i]]++;
  const present: number[] = [];
  for (let c = 0; c < k; c++) if (counts[c] > 0) present.push(c);
  checkNumberOfLabels(present.length, n, "silhouetteFromSums");
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const own = labels[i];
    const row = i * k;
    const a = sums[row + own] / (counts[own] - 1);
    let b = Infinity;
    for (const c of present) {
      if (c === own) continue;
      const m = sums[row + c] / counts[c];
      if (m < b) b = m;
    }
    const s = (b - a) / Math.max(a, b);
    out[i] = Number.isNaN(s) ? 0 : s;
  }
  return out;
}

/**
 * Per-cell silhouette of an embedding, sklearn `silhouette_samples(x, labels)` with Euclidean
 * distances computed directly in float64 (sklearn's dot-product trick differs by ~1e-7 on
 * float32 input).
 */
export function silhouetteSamples(x: Float32Array, n: number, d: number, labels: Labels, opts: SilhouetteOptions = {}): Float64Array {
  checkEmbedding(x, n, d, "silhouetteSamples");
  if (labels.length !== n) throw new Error(`silhouetteSamples: labels has ${labels.length} elements but n = ${n}.`);
  const f = factorizeLabels(labels);
  checkNumberOfLabels(f.names.length, n, "silhouetteSamples");
  const k = f.names.length;
  const sums = (opts.distanceSums ?? distanceSumsTs)(x, n, d, f.codes, k);
  return silhouetteFromSums(sums, n, k, f.codes);
}

function mean(v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i];
  return s / v.length;
}

/**
 * Cell-type ASW: scib `silhouette(adata, label_key, embed)` / scib-metrics `silhouette_label`:
 * (mean over all cells of silhouette_samples(x, labels) + 1)/2, in [0, 1].
 */
export function aswLabel(x: Float32Array, n: number, d: number, labels: Labels, opts: SilhouetteOptions = {}): number {
  return (mean(silhouetteSamples(x, n, d, labels, opts)) + 1) / 2;
}

/** One cell type of {@link aswBatch}. */
export interface BatchAswRow {
  label: LabelName;
  nCells: number;
  nBatches: number;
  /** Mean of 1 − |s| over the cells of this type; NaN when skipped. */
  score: number;
  /** True when the type has one batch or as many batches as cells (scib skips it). */
  skipped: boolean;
}

export interface BatchAswResult {
  /** Unweighted mean of the per-type scores; NaN when every type was skipped. */
  score: number;
  /** Every cell type, in sorted label order. */
  perLabel: BatchAswRow[];
}

/**
 * Batch ASW, scib `silhouette_batch(scale=True)` / scib-metrics `silhouette_batch`: for each cell
 * type, skip it if it has one batch or #batches = #cells; otherwise compute
 * silhouette_samples(x_type, batch_type) on the type's cells only (the rows are gathered into a
 * new embedding and passed to `distanceSums`), take 1 − |s| per cell and average within the
 * type. The score is the unweighted mean over the evaluated types, NaN if none qualifies.
 */
export function aswBatch(
  x: Float32Array,
  n: number,
  d: number,
  labels: Labels,
  batches: Labels,
  opts: SilhouetteOptions = {},
): BatchAswResult {
  checkEmbedding(x, n, d, "aswBatch");
  if (labels.length !== n) throw new Error(`aswBatch: labels has ${labels.length} elements but n = ${n}.`);
  checkSameLength(labels, batches, "aswBatch", "labels", "batches");
  const distanceSums = opts.distanceSums ?? distanceSumsTs;
  const fl = factorizeLabels(labels);
  const fb = factorizeLabels(batches);
  const members: number[][] = fl.names.map(() => []);
  for (let i = 0; i < n; i++) members[fl.codes[i]].push(i);
  const perLabel: BatchAswRow[] = [];
  let total = 0;
  let evaluated = 0;
  const batchMap = new Int32Array(fb.names.length);
  for (let c = 0; c < fl.names.length; c++) {
    const idx = members[c];
    const m = idx.length;
    // Re-encode the batches present in this type as 0..kb-1.
    batchMap.fill(-1);
    const sub = new Int32Array(m);
    let kb = 0;
    for (let t = 0; t < m; t++) {
      const b = fb.codes[idx[t]];
      if (batchMap[b] < 0) batchMap[b] = kb++;
      sub[t] = batchMap[b];
    }
    if (kb === 1 || kb === m) {
      perLabel.push({ label: fl.names[c], nCells: m, nBatches: kb, score: NaN, skipped: true });
      continue;
    }
    const xs = new Float32Array(m * d);
    for (let t = 0; t < m; t++) xs.set(x.subarray(idx[t] * d, idx[t] * d + d), t * d);
    const sil = silhouetteFromSums(distanceSums(xs, m, d, sub, kb), m, kb, sub);
    let s = 0;
    for (let t = 0; t < m; t++) s += 1 - Math.abs(sil[t]);
    const score = s / m;
    perLabel.push({ label: fl.names[c], nCells: m, nBatches: kb, score, skipped: false });
    total += score;
    evaluated++;
  }
  return { score: evaluated === 0 ? NaN : total / evaluated, perLabel };
}

/** One isolated label of {@link isolatedLabelsAsw}. */
export interface IsolatedLabelRow {
  label: LabelName;
  nCells: number;
  nBatches: number;
  /** The label's ASW score, rescaled to [0, 1]. */
  score: number;
}

export interface IsolatedLabelsResult {
  /** Mean of the isolated labels' scores; NaN when no label is isolated. */
  score: number;
  /** The threshold used: labels present in at most this many batches are isolated. */
  threshold: number;
  /** Number of distinct batches in the data. */
  nBatches: number;
  isolated: IsolatedLabelRow[];
}

export interface IsolatedLabelsOptions extends SilhouetteOptions {
  /** Maximum number of batches for a label to count as isolated; default: the minimum over labels. */
  isoThreshold?: number;
  /**
   * - `"labels"` (default; scib ≥ 1.1.6, scib-metrics, evaluation.md §5): silhouette_samples on the
   *   cell-type labels over all cells, averaged over the isolated label's cells, then (s + 1)/2.
   * - `"isolated-vs-rest"` (scib ≤ 1.1.5 code): for each isolated label, silhouette_score over all
   *   cells with the binary grouping label == L vs the rest, then (s + 1)/2.
   */
  grouping?: "labels" | "isolated-vs-rest";
}

/**
 * Isolated-label ASW, scib `isolated_labels_asw` semantics.
 *
 * Counts the distinct batches per label; the threshold is the minimum of those counts unless
 * `isoThreshold` is given; labels with count ≤ threshold are isolated. If the threshold equals
 * the total number of batches, no label is isolated (scib warns and returns an empty list), and
 * the result is NaN with an empty list. Per-cell silhouettes come from one `distanceSums` call on
 * all cells with the cell-type labels (both groupings derive from it).
 */
export function isolatedLabelsAsw(
  x: Float32Array,
  n: number,
  d: number,
  labels: Labels,
  batches: Labels,
  opts: IsolatedLabelsOptions = {},
): IsolatedLabelsResult {
  checkEmbedding(x, n, d, "isolatedLabelsAsw");
  if (labels.length !== n) throw new Error(`isolatedLabelsAsw: labels has ${labels.length} elements but n = ${n}.`);
  checkSameLength(labels, batches, "isolatedLabelsAsw", "labels", "batches");
  const grouping = opts.grouping ?? "labels";
  if (grouping !== "labels" && grouping !== "isolated-vs-rest") {
    throw new Error(`isolatedLabelsAsw: grouping must be "labels" or "isolated-vs-rest" (got ${String(grouping)}).`);
  }
  const fl = factorizeLabels(labels);
  const fb = factorizeLabels(batches);
  const k = fl.names.length;
  const kbAll = fb.names.length;
  // Distinct batches per label.
  const seen = new Set<number>();
  const batchCount = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    const key = fl.codes[i] * kbAll + fb.codes[i];
    if (!seen.has(key)) {
      seen.add(key);
      batchCount[fl.codes[i]]++;
    }
  }
  let threshold = opts.isoThreshold ?? Infinity;
  if (opts.isoThreshold === undefined) for (let c = 0; c < k; c++) threshold = Math.min(threshold, batchCount[c]);
  const empty: IsolatedLabelsResult = { score: NaN, threshold, nBatches: kbAll, isolated: [] };
  if (k === 0 || threshold === kbAll) return empty;
  const iso: number[] = [];
  for (let c = 0; c < k; c++) if (batchCount[c] <= threshold) iso.push(c);
  if (iso.length === 0) return empty;

  if (grouping === "labels") checkNumberOfLabels(k, n, "isolatedLabelsAsw");
  else checkNumberOfLabels(k < 2 ? k : 2, n, "isolatedLabelsAsw");
  const sums = (opts.distanceSums ?? distanceSumsTs)(x, n, d, fl.codes, k);
  const isolated: IsolatedLabelRow[] = [];
  if (grouping === "labels") {
    const sil = silhouetteFromSums(sums, n, k, fl.codes);
    const acc = new Float64Array(k);
    for (let i = 0; i < n; i++) acc[fl.codes[i]] += sil[i];
    for (const c of iso) {
      isolated.push({ label: fl.names[c], nCells: fl.counts[c], nBatches: batchCount[c], score: (acc[c] / fl.counts[c] + 1) / 2 });
    }
  } else {
    const rowTotal = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let c = 0; c < k; c++) s += sums[i * k + c];
      rowTotal[i] = s;
    }
    for (const c of iso) {
      const nIn = fl.counts[c];
      const nOut = n - nIn;
      let acc = 0;
      for (let i = 0; i < n; i++) {
        const sIn = sums[i * k + c];
        const sOut = rowTotal[i] - sIn;
        let a: number, b: number;
        if (fl.codes[i] === c) {
          a = sIn / (nIn - 1);
          b = sOut / nOut;
        } else {
          a = sOut / (nOut - 1);
          b = sIn / nIn;
        }
        const s = (b - a) / Math.max(a, b);
        acc += Number.isNaN(s) ? 0 : s;
      }
      isolated.push({ label: fl.names[c], nCells: nIn, nBatches: batchCount[c], score: (acc / n + 1) / 2 });
    }
  }
  let total = 0;
  for (const r of isolated) total += r.score;
  return { score: total / isolated.length, threshold, nBatches: kbAll, isolated };
}
