/**
 * Label vectors shared by the metrics: integer codes (`Int32Array`) or strings.
 *
 * Whenever a metric needs the *set* of classes it factorizes the labels the way
 * `numpy.unique(..., return_inverse=True)` does: the distinct values sorted ascending
 * (numerically for integer codes, by Unicode code point for strings, which is Python's
 * `str` ordering), and every sample replaced by the index of its value in that list.
 */

/** A label per sample: integer codes or strings. */
export type Labels = Int32Array | readonly string[];

/** The name of a class: the string itself, or the integer code. */
export type LabelName = string | number;

/** A factorized label vector: `codes[i]` indexes `names`, `counts[c]` is the size of class c. */
export interface FactorizedLabels {
  codes: Int32Array;
  names: LabelName[];
  counts: Float64Array;
}

/**
 * Compares two strings by Unicode code point (Python / numpy `str` ordering).
 * JavaScript's default `<` compares UTF-16 code units, which disagrees for characters
 * outside the Basic Multilingual Plane; this does not.
 */
export function compareCodePoints(a: string, b: string): number {
  const m = Math.min(a.length, b.length);
  for (let i = 0; i < m; i++) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(i);
    if (ca !== cb) return (a.codePointAt(i) as number) - (b.codePointAt(i) as number);
  }
  return a.length - b.length;
}

/**
 * Encodes string labels as integer codes, with `names` sorted like `np.unique`
 * (code-point order), so `names[codes[i]] === values[i]`.
 */
export function encodeLabels(values: readonly string[]): { codes: Int32Array; names: string[] } {
  const first = new Map<string, number>();
  const seen: string[] = [];
  const raw = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (typeof v !== "string") throw new Error(`encodeLabels: label ${i} is not a string.`);
    let c = first.get(v);
    if (c === undefined) {
      c = seen.length;
      first.set(v, c);
      seen.push(v);
    }
    raw[i] = c;
  }
  const order = seen.map((_, i) => i).sort((x, y) => compareCodePoints(seen[x], seen[y]));
  const remap = new Int32Array(seen.length);
  for (let r = 0; r < order.length; r++) remap[order[r]] = r;
  const codes = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) codes[i] = remap[raw[i]];
  return { codes, names: order.map((i) => seen[i]) };
}

/**
 * Factorizes labels like `np.unique(labels, return_inverse=True)`: sorted distinct values
 * (numeric order for `Int32Array`, code-point order for strings), per-sample codes, class sizes.
 * O(n) for integer codes in a compact range, O(n) expected (hash map) otherwise.
 */
export function factorizeLabels(labels: Labels): FactorizedLabels {
  const n = labels.length;
  if (!(labels instanceof Int32Array)) {
    const { codes, names } = encodeLabels(labels);
    const counts = new Float64Array(names.length);
    for (let i = 0; i < n; i++) counts[codes[i]]++;
    return { codes, names, counts };
  }
  let lo = 0;
  let hi = -1;
  if (n > 0) {
    lo = labels[0];
    hi = labels[0];
    for (let i = 1; i < n; i++) {
      const v = labels[i];
      if (v < lo) lo = v;
      else if (v > hi) hi = v;
    }
  }
  const codes = new Int32Array(n);
  if (n === 0) return { codes, names: [], counts: new Float64Array(0) };
  const span = hi - lo + 1;
  if (span <= 4 * n + 1024) {
    const present = new Float64Array(span);
    for (let i = 0; i < n; i++) present[labels[i] - lo]++;
    const remap = new Int32Array(span).fill(-1);
    const names: number[] = [];
    const cnt: number[] = [];
    for (let v = 0; v < span; v++) {
      if (present[v] > 0) {
        remap[v] = names.length;
        names.push(v + lo);
        cnt.push(present[v]);
      }
    }
    for (let i = 0; i < n; i++) codes[i] = remap[labels[i] - lo];
    return { codes, names, counts: Float64Array.from(cnt) };
  }
  const seen = new Map<number, number>();
  for (let i = 0; i < n; i++) if (!seen.has(labels[i])) seen.set(labels[i], 0);
  const names = [...seen.keys()].sort((x, y) => x - y);
  names.forEach((v, r) => seen.set(v, r));
  const counts = new Float64Array(names.length);
  for (let i = 0; i < n; i++) {
    const c = seen.get(labels[i]) as number;
    codes[i] = c;
    counts[c]++;
  }
  return { codes, names, counts };
}

/** Throws unless the two label vectors have the same length. */
export function checkSameLength(a: { length: number }, b: { length: number }, what: string, an = "a", bn = "b"): void {
  if (a.length !== b.length) {
    throw new Error(`${what}: ${an} has ${a.length} elements but ${bn} has ${b.length}; they must have the same length.`);
  }
}
