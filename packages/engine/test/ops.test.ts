// Every op's gradients against float64 central finite differences: native/build/gm_opcheck runs the
// op templates in double precision and prints one JSON line per (op, input).
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { repoRoot } from "../../../tests/helpers/paths.js";

const OPS = ["linear", "embedding", "rmsnorm", "gated_rmsnorm", "conv1d", "silu", "softplus", "scan_mamba2", "scan_mamba2_recurrent", "scan_mamba1", "scan_chunked_vs_recurrent", "combine_gate", "combine_mean", "cross_entropy", "batchnorm", "leaky_relu", "dropout", "dropout_rate", "class_cross_entropy", "adamw", "global_norm", "clip_scale", "vexp_float"];

describe("op gradients vs float64 finite differences", () => {
  const r = spawnSync(path.join(repoRoot, "native/build/gm_opcheck"), { encoding: "utf8", env: { ...process.env, OMP_NUM_THREADS: "1" } });
  const rows = r.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { op?: string; input?: string; max_rel_err?: number; tol?: number; failures?: number });

  it("the checker ran and reported no failure", () => {
    expect(r.status, r.stderr).toBe(0);
    expect(rows.at(-1)?.failures).toBe(0);
  });

  for (const op of OPS) {
    it(op, () => {
      const mine = rows.filter((x) => x.op === op);
      expect(mine.length).toBeGreaterThan(0);
      for (const x of mine) expect(x.max_rel_err!, `${op} d/d${x.input}`).toBeLessThanOrEqual(x.tol!);
    });
  }

  it("scan gradients cover every input of both mixers", () => {
    for (const op of ["scan_mamba2", "scan_mamba2_recurrent", "scan_mamba1"])
      expect(rows.filter((x) => x.op === op).map((x) => x.input).sort()).toEqual(["A", "B_and_C", "D", "dt", "x"]);
  });
});
