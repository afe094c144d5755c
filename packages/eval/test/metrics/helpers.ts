/** Shared helpers of the metric tests: the Python-generated fixture and tolerant comparisons. */
import * as fs from "node:fs";
import { expect } from "vitest";

/** packages/eval/test/fixtures/metrics.json, written by scripts/reference/eval_fixtures.py (NaN stored as null). */
export const fixture: any = JSON.parse(fs.readFileSync(new URL("../fixtures/metrics.json", import.meta.url), "utf8"));

/** A fixture number: null stands for NaN. */
export const num = (v: number | null): number => (v === null ? NaN : v);

/** |actual − expected| ≤ tol·max(1, |expected|); NaN (null) must match NaN. */
export function close(actual: number, expected: number | null, tol = 1e-9, what = ""): void {
  const e = num(expected);
  if (Number.isNaN(e)) {
    expect(actual, `${what}: expected NaN`).toBeNaN();
    return;
  }
  const err = Math.abs(actual - e);
  expect(err <= tol * Math.max(1, Math.abs(e)), `${what}: got ${actual}, expected ${e} (|Δ| = ${err})`).toBe(true);
}

/** Relative comparison for values that may be tiny (|Δ| ≤ tol·|expected|; 0 must be exactly 0). */
export function closeRel(actual: number, expected: number, tol = 1e-12, what = ""): void {
  if (expected === 0) {
    expect(actual, `${what}: expected exactly 0`).toBe(0);
    return;
  }
  const err = Math.abs(actual - expected);
  expect(err <= tol * Math.abs(expected), `${what}: got ${actual}, expected ${expected}`).toBe(true);
}

/** Element-wise {@link close}. */
export function allClose(actual: ArrayLike<number>, expected: ArrayLike<number | null>, tol = 1e-9, what = ""): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) close(actual[i], expected[i], tol, `${what}[${i}]`);
}

/**
 * The LCG of scripts/reference/eval_fixtures.py: s ← (1664525·s + 1013904223) mod 2³², yielding s >>> 16.
 */
export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(1664525, s) + 1013904223) >>> 0;
    return s >>> 16;
  };
}

/** lcg_labels(seed, n, ka, kb, agree_percent) of the fixture script. */
export function lcgLabels(seed: number, n: number, ka: number, kb: number, agreePercent: number): { a: Int32Array; b: Int32Array } {
  const next = lcg(seed);
  const a = new Int32Array(n);
  const b = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    a[i] = next() % ka;
    b[i] = next() % 100 < agreePercent ? (7 * a[i] + 1) % kb : next() % kb;
  }
  return { a, b };
}
