import { describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CellRanker, WasmRanker, rankByComparator } from "@gm/data";
import { repoRoot, tmpDir } from "../../../tests/helpers/paths.js";

function lcg(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
}

const wasm = new WasmRanker();

/** Both rankers (JS and the WebAssembly kernel) against the comparator sort. */
function check(tokens: number[], values: number[], limit = tokens.length) {
  const want = rankByComparator(tokens, values).slice(0, Math.min(limit, tokens.length));
  const r = new CellRanker(40000);
  const out = new Int32Array(tokens.length + 3);
  const n = r.rank(Int32Array.from(tokens), Float64Array.from(values), tokens.length, out, 2, limit);
  expect(n).toBe(want.length);
  expect(Array.from(out.subarray(2, 2 + n))).toEqual(want);
  wasm.tokens.set(tokens);
  wasm.values.set(values);
  const out2 = new Int32Array(tokens.length + 3);
  const n2 = wasm.rank(tokens.length, out2, 1, limit);
  expect(n2).toBe(want.length);
  expect(Array.from(out2.subarray(1, 1 + n2))).toEqual(want);
}

function distinctTokens(rnd: () => number, n: number, max = 32000): number[] {
  const set = new Set<number>();
  while (set.size < n) set.add(2 + Math.floor(rnd() * (max - 2)));
  return [...set];
}

describe("CellRanker and WasmRanker (value desc, token asc)", () => {
  it("matches a comparator sort on realistic cells", () => {
    const rnd = lcg(1);
    for (let c = 0; c < 50; c++) {
      const n = 1 + Math.floor(rnd() * 3000);
      const t = distinctTokens(rnd, n);
      const v = t.map(() => Math.floor(1 + -Math.log(rnd()) * 3) / (0.05 + rnd() * 20));
      check(t, v);
    }
  });
  it("handles heavy ties, all-equal values and crowded buckets", () => {
    const rnd = lcg(2);
    const t = distinctTokens(rnd, 2500);
    check(t, t.map(() => 1.5));
    check(t, t.map(() => [1, 2, 3][Math.floor(rnd() * 3)]));
    check(t, t.map(() => 1 + Math.floor(rnd() * 4) * 1e-15));
  });
  it("handles extreme magnitudes, +Infinity, single elements and limits", () => {
    const rnd = lcg(3);
    const t = distinctTokens(rnd, 1000);
    check(t, t.map((_, i) => (i === 7 ? Infinity : Math.exp((rnd() - 0.5) * 1400))));
    check([5], [0.3]);
    check(t, t.map(() => rnd() + 1e-9), 17);
    check([], []);
  });
  it("is exact where adjacent doubles differ in the last bit", () => {
    const base = 3.7;
    const next = (x: number) => {
      const f = new Float64Array([x]);
      const u = new BigUint64Array(f.buffer);
      u[0] += 1n;
      return f[0];
    };
    const vals = [base, next(base), next(next(base)), base, next(base)];
    check([10, 11, 12, 9, 8], vals);
  });
});

const clang = ["clang-14", "clang"].find((c) => spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0);
describe.skipIf(!clang)("the committed rank.wasm", () => {
  it("is what scripts/build-wasm.sh builds from native/wasm/rank.c", () => {
    const fresh = path.join(tmpDir("gm-wasm-"), "rank.wasm");
    execFileSync(path.join(repoRoot, "scripts/build-wasm.sh"), [fresh], { env: { ...process.env, CLANG: clang! } });
    expect(fs.readFileSync(fresh).equals(fs.readFileSync(path.join(repoRoot, "packages/data/wasm/rank.wasm")))).toBe(true);
  });
});
