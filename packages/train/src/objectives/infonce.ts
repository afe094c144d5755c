/**
 * The reference InfoNCE gene-pair loss (genemamba-model.md §7, §10 bug 5), per batch:
 *
 *  1. post-norm final hidden states, flattened to (B·L, d) and L2-normalised (x / max(|x|, 1e-12));
 *  2. positions whose token is PAD or UNK (and positions past a row's length) are dropped;
 *  3. the pairs whose both ids occur anywhere in the batch are kept;
 *  4. each id maps to its LAST occurrence in the flattened (row-major b, t) batch;
 *  5. s = cos / tau for every kept pair;
 *  6. loss = -mean_{label=1}(s_pos - logsumexp_{all kept pairs}(s)) — one global denominator.
 *
 * Where the reference gives NaN (no kept pair, or no kept positive) this returns loss 0 and a zero
 * gradient. Everything is computed in float64. Per-batch cost is O(B·L + candidate pairs + kept·d):
 * the pairs are held in CSR form by first gene, so only the rows of genes present in the batch are read.
 */
import type { GenePairs } from "../pairs.js";

export interface PairIndex {
  readonly vocabSize: number;
  /** Pairs in CSR form by first id: pairs of id x are rowStart[x] .. rowStart[x+1]-1. */
  readonly rowStart: Int32Array;
  readonly other: Int32Array;
  readonly label: Uint8Array;
  /** 1 where an id is in some pair. */
  readonly inPair: Uint8Array;
  readonly pairs: number;
  readonly positives: number;
  /** Scratch reused across calls (not safe to share between concurrent callers). */
  scratch: {
    lastPos: Int32Array; // id -> last flattened position, -1 when absent
    slot: Int32Array; // id -> gradient slot, -1 when none
    kept: Int32Array; // kept pair (CSR index)
    first: Int32Array; // its first id
    s: Float64Array;
    acc: Float64Array;
  };
}

/** Prepare pairs once for fast per-batch selection. Pairs with an id outside [0, vocabSize) are an error. */
export function indexPairs(pairs: GenePairs, vocabSize: number): PairIndex {
  const n = pairs.a.length;
  if (pairs.b.length !== n || pairs.label.length !== n) throw new Error(`gene pairs from ${pairs.source}: a, b and label lengths differ`);
  if (!Number.isInteger(vocabSize) || vocabSize <= 0) throw new Error(`indexPairs: vocabSize must be a positive integer (got ${vocabSize})`);
  const count = new Int32Array(vocabSize + 1);
  const inPair = new Uint8Array(vocabSize);
  let positives = 0;
  for (let i = 0; i < n; i++) {
    const x = pairs.a[i], y = pairs.b[i];
    if (x < 0 || x >= vocabSize || y < 0 || y >= vocabSize) {
      throw new Error(`gene pairs from ${pairs.source}: pair ${i} has token id ${x < 0 || x >= vocabSize ? x : y} outside the vocabulary of ${vocabSize}; load the pairs with the model's vocabulary`);
    }
    count[x + 1]++;
    inPair[x] = 1;
    inPair[y] = 1;
    positives += pairs.label[i] ? 1 : 0;
  }
  for (let v = 0; v < vocabSize; v++) count[v + 1] += count[v];
  const rowStart = count;
  const fill = rowStart.slice(0, vocabSize);
  const other = new Int32Array(n);
  const label = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const at = fill[pairs.a[i]]++;
    other[at] = pairs.b[i];
    label[at] = pairs.label[i] ? 1 : 0;
  }
  return {
    vocabSize,
    rowStart,
    other,
    label,
    inPair,
    pairs: n,
    positives,
    scratch: {
      lastPos: new Int32Array(vocabSize).fill(-1),
      slot: new Int32Array(vocabSize).fill(-1),
      kept: new Int32Array(n),
      first: new Int32Array(n),
      s: new Float64Array(n),
      acc: new Float64Array(0),
    },
  };
}

export interface InfoNceResult {
  /** The unscaled loss (0 where the reference gives NaN). */
  loss: number;
  /** Kept pairs (both ids present in the batch) and kept positives. */
  pairs: number;
  positives: number;
  /** d(scale * loss)/d(hidden), layout of hidden; zeros where unused. */
  grad?: Float32Array;
}

export interface InfoNceOptions {
  tau: number;
  padId?: number;
  unkId?: number;
  wantGrad?: boolean;
  /** Multiplies the gradient (e.g. gamma, or gamma / accumulation steps); default 1. */
  scale?: number;
  /** Optional output buffer for the gradient (length batch·length·d); it is overwritten. */
  gradOut?: Float32Array;
}

const NORM_EPS = 1e-12;

/**
 * hidden: post-norm final hidden states [batch, length, d] (row-major); tokens [batch, length];
 * lengths[batch] = valid prefix (positions >= length are pads and ignored, as are tokens pad/unk).
 */
export function infoNce(
  hidden: Float32Array,
  tokens: Int32Array,
  lengths: Int32Array,
  batch: number,
  length: number,
  d: number,
  index: PairIndex,
  opts: InfoNceOptions,
): InfoNceResult {
  const { tau } = opts;
  const padId = opts.padId ?? 1;
  const unkId = opts.unkId ?? 0;
  const scale = opts.scale ?? 1;
  if (!(tau > 0)) throw new Error(`infoNce: tau must be positive (got ${tau})`);
  if (hidden.length !== batch * length * d) throw new Error(`infoNce: hidden has ${hidden.length} values, expected ${batch}·${length}·${d}`);
  if (tokens.length !== batch * length) throw new Error(`infoNce: tokens has ${tokens.length} values, expected ${batch}·${length}`);
  if (lengths.length < batch) throw new Error(`infoNce: lengths has ${lengths.length} values, expected ${batch}`);
  let grad: Float32Array | undefined;
  if (opts.wantGrad) {
    if (opts.gradOut) {
      if (opts.gradOut.length !== hidden.length) throw new Error(`infoNce: gradOut has ${opts.gradOut.length} values, expected ${hidden.length}`);
      grad = opts.gradOut;
      grad.fill(0);
    } else grad = new Float32Array(hidden.length);
  }
  const V = index.vocabSize;
  const sc = index.scratch;
  const { lastPos, slot } = sc;
  const inPair = index.inPair;

  // 1. last occurrence of every paired id present in the batch
  const present: number[] = [];
  for (let r = 0; r < batch; r++) {
    const n = Math.min(Math.max(lengths[r], 0), length);
    const base = r * length;
    for (let t = 0; t < n; t++) {
      const tok = tokens[base + t];
      if (tok === padId || tok === unkId || tok < 0 || tok >= V || !inPair[tok]) continue;
      if (lastPos[tok] < 0) present.push(tok);
      lastPos[tok] = base + t;
    }
  }

  try {
    // 2. kept pairs: both ids present; each used id gets a slot
    const { rowStart, other, label } = index;
    const kept = sc.kept, first = sc.first;
    let nk = 0, nPos = 0;
    for (const x of present) {
      for (let p = rowStart[x], e = rowStart[x + 1]; p < e; p++) {
        if (lastPos[other[p]] >= 0) {
          first[nk] = x;
          kept[nk++] = p;
          nPos += label[p];
        }
      }
    }
    if (nk === 0 || nPos === 0) return { loss: 0, pairs: nk, positives: nPos, grad };

    // 3. inverse norms of the used positions
    const slotIds: number[] = [];
    const slotOf = (id: number): number => {
      let s = slot[id];
      if (s < 0) {
        s = slot[id] = slotIds.length;
        slotIds.push(id);
      }
      return s;
    };
    const keptA = new Int32Array(nk);
    const keptB = new Int32Array(nk);
    for (let q = 0; q < nk; q++) {
      keptA[q] = slotOf(first[q]);
      keptB[q] = slotOf(other[kept[q]]);
    }
    const ns = slotIds.length;
    const invNorm = new Float64Array(ns);
    const offs = new Int32Array(ns);
    for (let s = 0; s < ns; s++) {
      const o = lastPos[slotIds[s]] * d;
      offs[s] = o;
      let ss = 0;
      for (let j = 0; j < d; j++) {
        const v = hidden[o + j];
        ss += v * v;
      }
      invNorm[s] = 1 / Math.max(Math.sqrt(ss), NORM_EPS);
    }

    // 4. scores and the loss with one global logsumexp
    const sArr = sc.s;
    let max = -Infinity, sumPos = 0;
    for (let k = 0; k < nk; k++) {
      const sa = keptA[k], sb = keptB[k];
      const oa = offs[sa], ob = offs[sb];
      let dot = 0;
      for (let j = 0; j < d; j++) dot += hidden[oa + j] * hidden[ob + j];
      const s = (dot * invNorm[sa] * invNorm[sb]) / tau;
      sArr[k] = s;
      if (s > max) max = s;
      if (label[kept[k]]) sumPos += s;
    }
    let z = 0;
    for (let k = 0; k < nk; k++) z += Math.exp(sArr[k] - max);
    const lse = max + Math.log(z);
    const loss = lse - sumPos / nPos;
    if (!grad) return { loss, pairs: nk, positives: nPos };

    // 5. gradient: dL/ds_k = softmax_k - label_k / P; s = (u_a·u_b)/tau; u = x / max(|x|, eps)
    const need = ns * d;
    if (sc.acc.length < need) sc.acc = new Float64Array(Math.max(need, Math.ceil(sc.acc.length * 1.5)));
    const acc = sc.acc; // dL/du per slot
    acc.fill(0, 0, need);
    for (let k = 0; k < nk; k++) {
      const g = (Math.exp(sArr[k] - max) / z - (label[kept[k]] ? 1 / nPos : 0)) * (scale / tau);
      if (g === 0) continue;
      const sa = keptA[k], sb = keptB[k];
      const oa = offs[sa], ob = offs[sb];
      const ca = g * invNorm[sb], cb = g * invNorm[sa];
      const pa = sa * d, pb = sb * d;
      for (let j = 0; j < d; j++) {
        acc[pa + j] += ca * hidden[ob + j];
        acc[pb + j] += cb * hidden[oa + j];
      }
    }
    for (let s = 0; s < ns; s++) {
      const o = offs[s], p = s * d, inv = invNorm[s];
      // below eps the normalisation is x / eps: its Jacobian is I / eps
      const below = inv === 1 / NORM_EPS;
      let dotUG = 0;
      if (!below) for (let j = 0; j < d; j++) dotUG += hidden[o + j] * acc[p + j];
      dotUG *= inv; // u·G
      for (let j = 0; j < d; j++) grad[o + j] = inv * (acc[p + j] - hidden[o + j] * inv * dotUG);
    }
    return { loss, pairs: nk, positives: nPos, grad };
  } finally {
    for (const x of present) {
      lastPos[x] = -1;
      slot[x] = -1;
    }
  }
}
