/**
 * Clustering agreement between two labelings (evaluation.md §2): NMI with scikit-learn's
 * arithmetic, ARI in scikit-learn's pair-confusion form, and scib's native ARI formula.
 * All are O(n) (expected) in time and memory: the contingency table is kept sparse when
 * the dense table would be large.
 */
import { checkSameLength, factorizeLabels, type Labels } from "./labels.js";

/** Sparse contingency table: parallel arrays of (row, column, count) for the non-zero cells. */
interface Contingency {
  n: number;
  rowSums: Float64Array;
  colSums: Float64Array;
  rows: Int32Array;
  cols: Int32Array;
  values: Float64Array;
}

function contingency(a: Labels, b: Labels, what: string): Contingency {
  checkSameLength(a, b, what);
  const n = a.length;
  const fa = factorizeLabels(a);
  const fb = factorizeLabels(b);
  const ka = fa.names.length;
  const kb = fb.names.length;
  const rows: number[] = [];
  const cols: number[] = [];
  const values: number[] = [];
  if (ka * kb <= Math.max(1 << 20, 4 * n)) {
    const dense = new Float64Array(ka * kb);
    for (let i = 0; i < n; i++) dense[fa.codes[i] * kb + fb.codes[i]]++;
    for (let r = 0; r < ka; r++) {
      for (let c = 0; c < kb; c++) {
        const v = dense[r * kb + c];
        if (v > 0) {
          rows.push(r);
          cols.push(c);
          values.push(v);
        }
      }
    }
  } else {
    const cells = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const key = fa.codes[i] * kb + fb.codes[i];
      cells.set(key, (cells.get(key) ?? 0) + 1);
    }
    for (const [key, v] of cells) {
      const r = Math.floor(key / kb);
      rows.push(r);
      cols.push(key - r * kb);
      values.push(v);
    }
  }
  return {
    n,
    rowSums: fa.counts,
    colSums: fb.counts,
    rows: Int32Array.from(rows),
    cols: Int32Array.from(cols),
    values: Float64Array.from(values),
  };
}

/** sklearn `entropy(labels)` on class sizes: −Σ (p/N)(log p − log N); 0 for one class. */
function entropyOfCounts(counts: Float64Array): number {
  if (counts.length === 1) return 0;
  let sum = 0;
  for (let i = 0; i < counts.length; i++) sum += counts[i];
  const logSum = Math.log(sum);
  let h = 0;
  for (let i = 0; i < counts.length; i++) h += (counts[i] / sum) * (Math.log(counts[i]) - logSum);
  return -h;
}

/** sklearn `mutual_info_score` from a contingency table (natural log), clipped at 0. */
function mutualInfo(t: Contingency): number {
  if (t.rowSums.length === 1 || t.colSums.length === 1) return 0;
  const total = t.n;
  const logTotal = Math.log(total);
  // Σ of row sums and column sums both equal n.
  const logPiSum = Math.log(total);
  const logPjSum = Math.log(total);
  let mi = 0;
  for (let z = 0; z < t.values.length; z++) {
    const v = t.values[z];
    const nm = v / total;
    const outer = t.rowSums[t.rows[z]] * t.colSums[t.cols[z]];
    const logOuter = -Math.log(outer) + logPiSum + logPjSum;
    let term = nm * (Math.log(v) - logTotal) + nm * logOuter;
    if (Math.abs(term) < Number.EPSILON) term = 0;
    mi += term;
  }
  return mi < 0 ? 0 : mi;
}

/**
 * Normalized mutual information, sklearn `normalized_mutual_info_score(a, b)` with
 * `average_method="arithmetic"` (used by scib and scib-metrics): MI / ((H(a) + H(b))/2).
 * Returns 1.0 when both labelings have a single class or the input is empty, and 0.0 when
 * MI = 0 (for example when only one side has a single class). Symmetric in a and b.
 */
export function nmi(a: Labels, b: Labels): number {
  const t = contingency(a, b, "nmi");
  const ka = t.rowSums.length;
  const kb = t.colSums.length;
  if ((ka === 1 && kb === 1) || (ka === 0 && kb === 0)) return 1.0;
  const mi = mutualInfo(t);
  if (mi === 0) return 0.0;
  const normalizer = (entropyOfCounts(t.rowSums) + entropyOfCounts(t.colSums)) / 2;
  return mi / normalizer;
}

/**
 * Adjusted Rand index, sklearn `adjusted_rand_score` (pair-confusion form):
 * ARI = 2(tp·tn − fn·fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn)), and 1.0 when
 * fn = fp = 0 (empty input, one cluster on both sides, all singletons on both sides).
 * Pair counts are exact in float64 (they are at most n², exact for n < 9.4e7); the final
 * products use BigInt, mirroring sklearn's conversion to Python integers, so there is no
 * int32 overflow (the classic failure above ~46k cells) and no loss of precision.
 */
export function ariSklearn(a: Labels, b: Labels): number {
  const t = contingency(a, b, "ariSklearn");
  const n = t.n;
  let sumSquares = 0;
  for (let z = 0; z < t.values.length; z++) sumSquares += t.values[z] * t.values[z];
  let sumRows = 0;
  for (let i = 0; i < t.rowSums.length; i++) sumRows += t.rowSums[i] * t.rowSums[i];
  let sumCols = 0;
  for (let j = 0; j < t.colSums.length; j++) sumCols += t.colSums[j] * t.colSums[j];
  const tp = BigInt(sumSquares - n);
  const fp = BigInt(sumCols - sumSquares);
  const fn = BigInt(sumRows - sumSquares);
  const tn = BigInt(n * n - (sumCols - sumSquares) - (sumRows - sumSquares) - sumSquares);
  if (fn === 0n && fp === 0n) return 1.0;
  const num = tp * tn - fn * fp;
  const den = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn);
  return (2.0 * Number(num)) / Number(den);
}

const choose2 = (x: number) => (x * (x - 1)) / 2;

/**
 * Adjusted Rand index with scib's native formula (`scib.metrics.ari`, the default
 * implementation): index = Σ C(n_ij, 2), expected = Σ C(a_i, 2)·Σ C(b_j, 2)/C(n, 2),
 * max = ½(Σ C(a_i, 2) + Σ C(b_j, 2)), ARI = (index − expected)/(max − expected).
 * Returns NaN when max = expected (0/0 in numpy): one cluster on both sides, all singletons
 * on both sides, fewer than two samples.
 */
export function ariScib(a: Labels, b: Labels): number {
  const t = contingency(a, b, "ariScib");
  let index = 0;
  for (let z = 0; z < t.values.length; z++) index += choose2(t.values[z]);
  let aiSum = 0;
  for (let j = 0; j < t.colSums.length; j++) aiSum += choose2(t.colSums[j]);
  let biSum = 0;
  for (let i = 0; i < t.rowSums.length; i++) biSum += choose2(t.rowSums[i]);
  const expected = (aiSum * biSum) / choose2(t.n);
  const max = 0.5 * (aiSum + biSum);
  if (max === expected || !Number.isFinite(expected)) return NaN;
  return (index - expected) / (max - expected);
}
