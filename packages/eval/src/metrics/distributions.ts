/**
 * Gene-pair similarity evaluation: cosine similarity of gene embeddings, ROC AUC of the
 * similarities against pair labels (scikit-learn `roc_auc_score`), and distances between the
 * similarity distributions of positive and negative pairs (numpy `histogram`, SciPy `entropy`
 * and `jensenshannon`).
 */

/**
 * Cosine similarity with scikit-learn `cosine_similarity` semantics: each vector is divided by
 * its L2 norm (a zero vector stays zero), then the dot product is taken, so a zero vector gives
 * 0 rather than NaN.
 */
export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`cosineSimilarity: a has ${a.length} elements but b has ${b.length}; they must have the same length.`);
  let na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  na = Math.sqrt(na) || 1;
  nb = Math.sqrt(nb) || 1;
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += (a[i] / na) * (b[i] / nb);
  return dot;
}

/**
 * Binary ROC AUC, equal to scikit-learn `roc_auc_score(labels, scores)`: the Mann–Whitney
 * statistic with average ranks for tied scores, AUC = (Σ ranks of positives − P(P+1)/2)/(P·N).
 * Throws when only one class is present (sklearn raises too).
 */
export function rocAuc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  if (labels.length !== n) throw new Error(`rocAuc: scores has ${n} elements but labels has ${labels.length}; they must have the same length.`);
  let pos = 0;
  for (let i = 0; i < n; i++) {
    if (labels[i] !== 0 && labels[i] !== 1) throw new Error(`rocAuc: label ${i} is ${labels[i]}; labels must be 0 or 1.`);
    if (Number.isNaN(scores[i])) throw new Error(`rocAuc: score ${i} is NaN.`);
    pos += labels[i];
  }
  const neg = n - pos;
  if (pos === 0 || neg === 0) throw new Error("rocAuc: only one class is present in labels, so ROC AUC is not defined.");
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((x, y) => scores[x] - scores[y] || x - y);
  let rankSum = 0;
  let i = 0;
  while (i < n) {
    let j = i + 1;
    while (j < n && scores[order[j]] === scores[order[i]]) j++;
    const r = 0.5 * (i + j + 1);
    for (let t = i; t < j; t++) if (labels[order[t]] === 1) rankSum += r;
    i = j;
  }
  return (rankSum - (pos * (pos + 1)) / 2) / (pos * neg);
}

export interface Histogram {
  /** bins + 1 edges, `np.linspace(lo, hi, bins + 1)`. */
  edges: Float64Array;
  /** Counts per bin (values outside [lo, hi] are dropped, like numpy). */
  counts: Float64Array;
  /** counts / Σ counts (NaN everywhere when no value falls in range). */
  probabilities: Float64Array;
}

/**
 * `np.histogram(values, bins, range=(lo, hi))` with numpy's uniform-bin arithmetic (bins are
 * half-open [e_i, e_{i+1}) except the last, which includes hi; values outside the range and
 * NaN are dropped), plus the normalised probabilities counts / Σ counts.
 */
export function histogram(values: ArrayLike<number>, bins: number, lo: number, hi: number): Histogram {
  if (!Number.isInteger(bins) || bins < 1) throw new Error(`histogram: bins must be a positive integer (got ${bins}).`);
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(lo < hi)) throw new Error(`histogram: the range must be finite with lo < hi (got [${lo}, ${hi}]).`);
  const edges = new Float64Array(bins + 1);
  const step = (hi - lo) / bins;
  for (let i = 0; i <= bins; i++) edges[i] = i * step + lo;
  edges[bins] = hi;
  const norm = bins / (hi - lo);
  const counts = new Float64Array(bins);
  let total = 0;
  for (let t = 0; t < values.length; t++) {
    const v = values[t];
    if (!(v >= lo && v <= hi)) continue;
    let idx = Math.trunc((v - lo) * norm);
    if (idx === bins) idx--;
    if (v < edges[idx]) idx--;
    else if (v >= edges[idx + 1] && idx !== bins - 1) idx++;
    counts[idx]++;
    total++;
  }
  const probabilities = new Float64Array(bins);
  for (let i = 0; i < bins; i++) probabilities[i] = counts[i] / total;
  return { edges, counts, probabilities };
}

/** SciPy `rel_entr(x, y)`: x·log(x/y) for x, y > 0; 0 for x = 0, y ≥ 0; +∞ otherwise. */
function relEntr(x: number, y: number): number {
  if (x > 0 && y > 0) return x * Math.log(x / y);
  if (x === 0 && y >= 0) return 0;
  return Infinity;
}

function normalised(v: Float64Array): Float64Array {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i];
  return v.map((x) => x / s);
}

function meanStd(v: ArrayLike<number>): { mean: number; std: number } {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i];
  const mean = s / v.length;
  let q = 0;
  for (let i = 0; i < v.length; i++) q += (v[i] - mean) * (v[i] - mean);
  return { mean, std: Math.sqrt(q / v.length) };
}

export interface DistributionDistanceOptions {
  /** Number of histogram bins (default 50). */
  bins?: number;
  /** Histogram range (default [-1, 1], the range of a cosine similarity). */
  range?: [number, number];
  /** Pseudo-count added to every bin probability before the KL divergence (default 1e-10). */
  eps?: number;
}

export interface DistributionDistances {
  /** ‖p − q‖₂, the Euclidean distance between the two normalised histograms. */
  euclidean: number;
  /**
   * KL(pos ‖ neg) in nats: `scipy.stats.entropy(p + eps, q + eps)`, i.e. both smoothed
   * histograms renormalised to sum 1, then Σ p'·log(p'/q').
   */
  kl: number;
  /**
   * Jensen–Shannon *distance* (not divergence), natural log:
   * `scipy.spatial.distance.jensenshannon(p, q)` = sqrt((KL(p‖m) + KL(q‖m))/2), m = (p + q)/2,
   * on the unsmoothed histograms. Lies in [0, sqrt(ln 2)].
   */
  js: number;
  /** `np.mean` / `np.std` (population, ddof = 0) of the raw similarity values. */
  posMean: number;
  posStd: number;
  negMean: number;
  negStd: number;
  /** The two histograms (p for pos, q for neg). */
  pos: Histogram;
  neg: Histogram;
}

/**
 * Distances between the distributions of positive-pair and negative-pair similarities.
 * Both are binned with {@link histogram} (default 50 bins on [-1, 1]) and normalised to
 * probabilities p (pos) and q (neg); see {@link DistributionDistances} for each quantity.
 * Throws when either sample has no value inside the range.
 */
export function distributionDistances(
  pos: ArrayLike<number>,
  neg: ArrayLike<number>,
  opts: DistributionDistanceOptions = {},
): DistributionDistances {
  const bins = opts.bins ?? 50;
  const [lo, hi] = opts.range ?? [-1, 1];
  const eps = opts.eps ?? 1e-10;
  if (!(eps >= 0)) throw new Error(`distributionDistances: eps must be a non-negative number (got ${eps}).`);
  const hp = histogram(pos, bins, lo, hi);
  const hq = histogram(neg, bins, lo, hi);
  if (!(hp.counts.some((c) => c > 0))) throw new Error(`distributionDistances: no positive value falls inside [${lo}, ${hi}].`);
  if (!(hq.counts.some((c) => c > 0))) throw new Error(`distributionDistances: no negative value falls inside [${lo}, ${hi}].`);
  const p = hp.probabilities;
  const q = hq.probabilities;
  let e = 0;
  for (let i = 0; i < bins; i++) e += (p[i] - q[i]) * (p[i] - q[i]);
  const ps = normalised(p.map((v) => v + eps));
  const qs = normalised(q.map((v) => v + eps));
  let kl = 0;
  for (let i = 0; i < bins; i++) kl += relEntr(ps[i], qs[i]);
  const pn = normalised(p);
  const qn = normalised(q);
  let left = 0, right = 0;
  for (let i = 0; i < bins; i++) {
    const m = (pn[i] + qn[i]) / 2;
    left += relEntr(pn[i], m);
    right += relEntr(qn[i], m);
  }
  const a = meanStd(pos);
  const b = meanStd(neg);
  return {
    euclidean: Math.sqrt(e),
    kl,
    js: Math.sqrt((left + right) / 2),
    posMean: a.mean,
    posStd: a.std,
    negMean: b.mean,
    negStd: b.std,
    pos: hp,
    neg: hq,
  };
}
