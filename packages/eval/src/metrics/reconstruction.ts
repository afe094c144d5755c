/**
 * Gene-rank reconstruction metrics (evaluation.md §8): Levenshtein distance (NLTK
 * `edit_distance`), GeneMamba's own BLEU, NLTK 3.8 `sentence_bleu`, SciPy `rankdata`,
 * `spearmanr` and `pearsonr`, and top-k overlap. Tokens are integer gene ids.
 */

/** A token sequence: gene ids. */
export type Tokens = ArrayLike<number>;

/**
 * Unit-cost Levenshtein distance (insert, delete, substitute), two-row dynamic programme,
 * O(|a|·|b|) time and O(min(|a|, |b|)) memory. Equals NLTK
 * `edit_distance(a, b, substitution_cost=1, transpositions=False)` and GeneMamba's
 * `levenshtein_distance`.
 */
export function levenshtein(a: Tokens, b: Tokens): number {
  let s = a;
  let t = b;
  if (t.length > s.length) [s, t] = [t, s];
  const m = t.length;
  if (m === 0) return s.length;
  let prev = new Int32Array(m + 1);
  let cur = new Int32Array(m + 1);
  for (let j = 0; j <= m; j++) prev[j] = j;
  for (let i = 1; i <= s.length; i++) {
    cur[0] = i;
    const si = s[i - 1];
    for (let j = 1; j <= m; j++) {
      const sub = prev[j - 1] + (si === t[j - 1] ? 0 : 1);
      const del = prev[j] + 1;
      const ins = cur[j - 1] + 1;
      cur[j] = sub < del ? (sub < ins ? sub : ins) : del < ins ? del : ins;
    }
    [prev, cur] = [cur, prev];
  }
  return prev[m];
}

/**
 * Clipped n-gram matches for n = 1..maxN between `hyp` and `ref`: for each n,
 * matches[n-1] = Σ_g min(count_hyp(g), count_ref(g)) and total[n-1] = #n-grams of `hyp`.
 * n-grams get exact integer ids level by level (id_n = pair(id_{n-1}, token)), so the
 * cost is O((|hyp| + |ref|)·maxN) expected, with no string keys.
 */
function clippedMatches(hyp: Tokens, ref: Tokens, maxN: number): { matches: number[]; total: number[] } {
  const lh = hyp.length;
  const lr = ref.length;
  const tokenId = new Map<number, number>();
  const idH = new Float64Array(lh);
  const idR = new Float64Array(lr);
  const id1 = (v: number) => {
    let id = tokenId.get(v);
    if (id === undefined) {
      id = tokenId.size;
      tokenId.set(v, id);
    }
    return id;
  };
  for (let i = 0; i < lh; i++) idH[i] = id1(hyp[i]);
  for (let i = 0; i < lr; i++) idR[i] = id1(ref[i]);
  const base1H = idH.slice();
  const base1R = idR.slice();
  const v1 = Math.max(1, tokenId.size);
  const matches: number[] = [];
  const total: number[] = [];
  let numIds = tokenId.size;
  for (let n = 1; n <= maxN; n++) {
    const cH = Math.max(0, lh - n + 1);
    const cR = Math.max(0, lr - n + 1);
    if (n > 1) {
      // Extend (n-1)-gram ids by the next token: id_n[i] = pair(id_{n-1}[i], token[i+n-1]).
      const pairId = new Map<number, number>();
      const ext = (prev: number, tok: number) => {
        const key = prev * v1 + tok;
        let id = pairId.get(key);
        if (id === undefined) {
          id = pairId.size;
          pairId.set(key, id);
        }
        return id;
      };
      for (let i = 0; i < cH; i++) idH[i] = ext(idH[i], base1H[i + n - 1]);
      for (let i = 0; i < cR; i++) idR[i] = ext(idR[i], base1R[i + n - 1]);
      numIds = pairId.size;
    }
    const refCount = new Int32Array(numIds);
    for (let i = 0; i < cR; i++) refCount[idR[i]]++;
    let m = 0;
    for (let i = 0; i < cH; i++) {
      const id = idH[i];
      if (refCount[id] > 0) {
        refCount[id]--;
        m++;
      }
    }
    matches.push(m);
    total.push(cH);
  }
  return { matches, total };
}

function checkMaxN(maxN: number, what: string): void {
  if (!Number.isInteger(maxN) || maxN < 1) throw new Error(`${what}: maxN must be a positive integer (got ${maxN}).`);
}

/**
 * GeneMamba's BLEU (`genemamba/utils/eval_utils.py::bleu_score(candidate, reference, max_n=4)`),
 * one reference, no smoothing:
 * - p_n = clipped n-gram matches / #candidate n-grams, and 0 if the candidate has no n-grams;
 * - geometric mean = exp(Σ_n log p_n / maxN) only if min p_n > 0, otherwise exactly 0;
 * - BP = 1 if c > r, 0 if c = 0, exp(1 − r/c) otherwise (c = |candidate|, r = |reference|).
 *
 * GeneMamba's reconstruction script calls it as `bleu_score(input_tokens, output_tokens)`: the
 * model *input* is the candidate and the prediction the reference.
 */
export function bleuGeneMamba(candidate: Tokens, reference: Tokens, maxN = 4): number {
  checkMaxN(maxN, "bleuGeneMamba");
  const { matches, total } = clippedMatches(candidate, reference, maxN);
  const p = matches.map((m, i) => (total[i] > 0 ? m / total[i] : 0));
  let geo = 0;
  if (Math.min(...p) > 0) {
    let s = 0;
    for (const v of p) s += Math.log(v);
    geo = Math.exp(s / maxN);
  }
  const c = candidate.length;
  const r = reference.length;
  const bp = c > r ? 1 : c === 0 ? 0 : Math.exp(1 - r / c);
  return bp * geo;
}

/** Python `math.fsum`: correctly rounded sum (Shewchuk's algorithm, CPython's final rounding). */
function fsum(values: readonly number[]): number {
  const partials: number[] = [];
  for (let x of values) {
    let i = 0;
    for (let y of partials) {
      if (Math.abs(x) < Math.abs(y)) [x, y] = [y, x];
      const hi = x + y;
      const lo = y - (hi - x);
      if (lo !== 0) partials[i++] = lo;
      x = hi;
    }
    partials.length = i;
    partials.push(x);
  }
  let n = partials.length;
  if (n === 0) return 0;
  let hi = partials[--n];
  let lo = 0;
  while (n > 0) {
    const x = hi;
    const y = partials[--n];
    hi = x + y;
    const yr = hi - x;
    lo = y - yr;
    if (lo !== 0) break;
  }
  if (n > 0 && ((lo < 0 && partials[n - 1] < 0) || (lo > 0 && partials[n - 1] > 0))) {
    const y = lo * 2;
    const x = hi + y;
    const yr = x - hi;
    if (y === yr) hi = x;
  }
  return hi;
}

/** Python's `sys.float_info.min`, the smallest normal double (not `Number.MIN_VALUE`). */
const FLOAT_INFO_MIN = 2.2250738585072014e-308;

/**
 * NLTK 3.8 `sentence_bleu([reference], hypothesis)` with one reference, default weights
 * (¼, ¼, ¼, ¼) and no smoothing function (`method0`):
 * - modified precision p_n = clipped matches / max(1, #hypothesis n-grams);
 * - the result is exactly 0 when there is no unigram match (including an empty hypothesis);
 * - otherwise each p_n with a zero numerator is replaced by `sys.float_info.min` (NLTK warns),
 *   so a missing higher-order match gives ≈ 1e-77 per missing order rather than 0;
 * - BLEU = BP·exp(fsum(w_n·log p_n)), BP = 1 if c > r, 0 if c = 0, exp(1 − r/c) otherwise.
 */
export function bleuNltk(reference: Tokens, hypothesis: Tokens, weights: readonly number[] = [0.25, 0.25, 0.25, 0.25]): number {
  if (weights.length < 1) throw new Error("bleuNltk: weights must have at least one entry.");
  const { matches, total } = clippedMatches(hypothesis, reference, weights.length);
  if (matches[0] === 0) return 0;
  const terms: number[] = [];
  for (let i = 0; i < weights.length; i++) {
    const p = matches[i] === 0 ? FLOAT_INFO_MIN : matches[i] / Math.max(1, total[i]);
    terms.push(weights[i] * Math.log(p));
  }
  const c = hypothesis.length;
  const r = reference.length;
  const bp = c > r ? 1 : c === 0 ? 0 : Math.exp(1 - r / c);
  return bp * Math.exp(fsum(terms));
}

/**
 * SciPy `rankdata(a, method="average")`: ranks from 1, ties get the mean of their ranks.
 * An input containing NaN gives all-NaN ranks (SciPy's `nan_policy="propagate"`).
 */
export function rankdata(a: ArrayLike<number>): Float64Array {
  const n = a.length;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(a[i])) return out.fill(NaN);
  }
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((x, y) => a[x] - a[y] || x - y);
  let i = 0;
  while (i < n) {
    let j = i + 1;
    while (j < n && a[order[j]] === a[order[i]]) j++;
    const r = 0.5 * (i + j + 1);
    for (let t = i; t < j; t++) out[order[t]] = r;
    i = j;
  }
  return out;
}

function checkPair(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: a has ${a.length} elements but b has ${b.length}; they must have the same length.`);
}

function isConstant(a: ArrayLike<number>): boolean {
  for (let i = 1; i < a.length; i++) if (a[i] !== a[0]) return false;
  return true;
}

function meanOf(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  return s / a.length;
}

/**
 * Spearman correlation, SciPy `spearmanr(a, b).statistic`: `np.corrcoef` of the average ranks.
 * NaN when there are fewer than 2 observations, when either input is constant, or when an
 * input contains NaN.
 */
export function spearman(a: ArrayLike<number>, b: ArrayLike<number>): number {
  checkPair(a, b, "spearman");
  const n = a.length;
  if (n <= 1 || isConstant(a) || isConstant(b)) return NaN;
  const ra = rankdata(a);
  const rb = rankdata(b);
  if (Number.isNaN(ra[0]) || Number.isNaN(rb[0])) return NaN;
  const ma = meanOf(ra);
  const mb = meanOf(rb);
  let sab = 0, saa = 0, sbb = 0;
  for (let i = 0; i < n; i++) {
    const x = ra[i] - ma;
    const y = rb[i] - mb;
    sab += x * y;
    saa += x * x;
    sbb += y * y;
  }
  const r = sab / (n - 1) / Math.sqrt(saa / (n - 1)) / Math.sqrt(sbb / (n - 1));
  return Math.max(-1, Math.min(1, r));
}

/**
 * Pearson correlation, SciPy `pearsonr(a, b).statistic` (1.10 arithmetic: centre, divide by the
 * max |deviation|, normalise, dot). NaN when either input is constant (SciPy warns). For fewer
 * than 2 observations SciPy raises; this returns NaN so that per-cell aggregation can skip it.
 * For n = 2 the result is sign(a₁ − a₀)·sign(b₁ − b₀), as in SciPy.
 */
export function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number {
  checkPair(a, b, "pearson");
  const n = a.length;
  if (n < 2 || isConstant(a) || isConstant(b)) return NaN;
  if (n === 2) return Math.sign(a[1] - a[0]) * Math.sign(b[1] - b[0]);
  const ma = meanOf(a);
  const mb = meanOf(b);
  const xm = new Float64Array(n);
  const ym = new Float64Array(n);
  let xmax = 0, ymax = 0;
  for (let i = 0; i < n; i++) {
    xm[i] = a[i] - ma;
    ym[i] = b[i] - mb;
    xmax = Math.max(xmax, Math.abs(xm[i]));
    ymax = Math.max(ymax, Math.abs(ym[i]));
  }
  let nx = 0, ny = 0;
  for (let i = 0; i < n; i++) {
    xm[i] /= xmax;
    ym[i] /= ymax;
    nx += xm[i] * xm[i];
    ny += ym[i] * ym[i];
  }
  nx = Math.sqrt(nx);
  ny = Math.sqrt(ny);
  let r = 0;
  for (let i = 0; i < n; i++) r += (xm[i] / nx) * (ym[i] / ny);
  return Math.max(-1, Math.min(1, r));
}

/**
 * Top-k overlap: |set(input[:k]) ∩ set(output[:k])| / k. The denominator is k even when a
 * sequence is shorter than k (missing genes count as misses).
 */
export function topKOverlap(input: Tokens, output: Tokens, k: number): number {
  if (!Number.isInteger(k) || k < 1) throw new Error(`topKOverlap: k must be a positive integer (got ${k}).`);
  const a = new Set<number>();
  for (let i = 0; i < Math.min(k, input.length); i++) a.add(input[i]);
  const seen = new Set<number>();
  let hit = 0;
  for (let i = 0; i < Math.min(k, output.length); i++) {
    const g = output[i];
    if (!seen.has(g)) {
      seen.add(g);
      if (a.has(g)) hit++;
    }
  }
  return hit / k;
}

/** Per-cell reconstruction scores, see {@link reconstructionScores}. */
export interface ReconstructionScores {
  /** Levenshtein distance between input and prediction. */
  levenshtein: number;
  /** NLD = 1 − LD / max(|input|, |predicted|); 1 when both are empty. */
  normalizedLevenshtein: number;
  /** Fraction of input positions i with predicted[i] === input[i] (denominator |input|; NaN if empty). */
  exactMatch: number;
  /** {@link bleuGeneMamba}(input, predicted): GeneMamba's argument order (input = candidate). */
  bleuGeneMamba: number;
  /** {@link bleuNltk}(input, predicted): the input is the reference, the prediction the hypothesis. */
  bleuNltk: number;
  /** Spearman of the gene ranks (see {@link reconstructionScores}). */
  spearman: number;
  /** Pearson of the same rank vectors. */
  pearson: number;
  /** {@link topKOverlap}(input, predicted, k). */
  topKOverlap: number;
}

/**
 * All reconstruction scores of one cell.
 *
 * Gene-rank correlation: for each distinct gene of the input (in order of first occurrence),
 * its input rank is the position of its first occurrence in `input`, and its predicted rank the
 * position of its first occurrence in `predicted`, or `predicted.length` when the prediction
 * does not contain it (every missing gene ties at the end). Spearman and Pearson are computed on
 * these two vectors (NaN when fewer than 2 genes or a vector is constant).
 */
export function reconstructionScores(input: Tokens, predicted: Tokens, k: number): ReconstructionScores {
  const ld = levenshtein(input, predicted);
  const maxLen = Math.max(input.length, predicted.length);
  let same = 0;
  for (let i = 0; i < Math.min(input.length, predicted.length); i++) if (input[i] === predicted[i]) same++;
  const firstPred = new Map<number, number>();
  for (let i = 0; i < predicted.length; i++) if (!firstPred.has(predicted[i])) firstPred.set(predicted[i], i);
  const seen = new Set<number>();
  const rIn: number[] = [];
  const rOut: number[] = [];
  for (let i = 0; i < input.length; i++) {
    const g = input[i];
    if (seen.has(g)) continue;
    seen.add(g);
    rIn.push(i);
    rOut.push(firstPred.get(g) ?? predicted.length);
  }
  return {
    levenshtein: ld,
    normalizedLevenshtein: maxLen === 0 ? 1 : 1 - ld / maxLen,
    exactMatch: input.length === 0 ? NaN : same / input.length,
    bleuGeneMamba: bleuGeneMamba(input, predicted),
    bleuNltk: bleuNltk(input, predicted),
    spearman: spearman(rIn, rOut),
    pearson: pearson(rIn, rOut),
    topKOverlap: topKOverlap(input, predicted, k),
  };
}
