/**
 * The gm binary end to end: help, configs, every shared h5ad, bad input (one clear line, non-zero
 * exit, nothing half-written) and resumption after a kill.
 */
import { describe, expect, it, beforeAll } from "vitest";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import h5wasm from "h5wasm/node";
import { gm, errorLines } from "./helpers/cli.js";
import { gmBin, hasShared, shared, tmpDir } from "./helpers/paths.js";

const GENE_MAP = shared("genes/gene_symbols.json");

function expectCleanFailure(r: { code: number; stderr: string }, code: number, pattern: RegExp): void {
  expect(r.code, r.stderr).toBe(code);
  const lines = errorLines(r.stderr);
  expect(lines.length, r.stderr).toBe(1);
  expect(lines[0]).toMatch(/^gm: error: /);
  expect(lines[0]).toMatch(pattern);
}

function listFiles(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name !== "run.json") out.set(path.relative(dir, p), fs.readFileSync(p));
    }
  };
  walk(dir);
  return out;
}

describe("gm command line", () => {
  it("prints help with examples for every command and documents exit codes", () => {
    const r = gm(["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/simulate/);
    expect(r.stdout).toMatch(/Exit codes: 0 ok/);
    for (const c of ["simulate", "preprocess", "tokenize"]) {
      const h = gm([c, "--help"]);
      expect(h.code).toBe(0);
      expect(h.stdout).toMatch(/Examples:\n {2}\$ gm /);
    }
    expect(gm(["--version"]).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it("rejects unknown options and bad values with exit code 2", () => {
    expect(gm(["preprocess", "--no-such-flag"]).code).toBe(2);
    expect(gm(["preprocess", "x.h5ad", "--out", "o", "--workers", "zero"]).code).toBe(2);
    const dir = tmpDir();
    const r = gm(["preprocess", "x.h5ad", "--out", path.join(dir, "o"), "--shard", "5/4"]);
    expectCleanFailure(r, 2, /--shard 5\/4: K must be in 1\.\.N/);
  });

  it("reads run configs, lets flags win, and refuses unknown keys", () => {
    const dir = tmpDir();
    const sim = path.join(dir, "s.h5ad");
    expect(gm(["simulate", "--cells", "120", "--genes", "2000", "--seed", "5", "--out", sim]).code).toBe(0);
    const cfg = path.join(dir, "cfg.json");
    fs.writeFileSync(cfg, JSON.stringify({ inputs: [sim], out: path.join(dir, "pre"), "min-genes": 50, workers: 2, unitCells: 60 }));
    const r = gm(["preprocess", "--config", cfg, "--min-genes", "20"]);
    expect(r.code, r.stderr).toBe(0);
    const run = JSON.parse(fs.readFileSync(path.join(dir, "pre", "run.json"), "utf8"));
    expect(run.settings.minGenes).toBe(20);
    expect(run.settings.unitCells).toBe(60);
    fs.writeFileSync(cfg, JSON.stringify({ out: path.join(dir, "pre2"), minGene: 5 }));
    expectCleanFailure(gm(["preprocess", sim, "--config", cfg]), 2, /unknown key 'minGene'/);
  });
});

describe.skipIf(!hasShared)("every shared h5ad preprocesses or fails with a clear error", () => {
  const cases: [string, "ok" | RegExp, string[]][] = [
    ["pbmc68k_reduced_counts.h5ad", "ok", []],
    ["pbmc68k_reduced_original.h5ad", /no raw counts found: raw\/X holds non-integer values .* X holds negative values/, []],
    ["seurat_pbmc_small.h5ad", /no raw counts found/, []],
    ["pbmc_10k_protein_v3_legacy.h5ad", "ok", []],
    ["pbmc_5k_protein_v3_legacy.h5ad", "ok", []],
    ["cellxgene_heart_invalid_CL.h5ad", "ok", []],
    ["cellxgene_example_valid.h5ad", "ok", ["--min-genes", "1"]],
    ["multiome_subset_100_100_legacy.h5ad", /no cells passed the filters \(100 in: 0 not primary, \d+ with zero counts, \d+ with fewer than 10 genes\); lower --min-genes/, []],
  ];
  const dir = tmpDir("gm-all-");
  for (const [file, expected, extra] of cases) {
    it(`${file}: ${expected === "ok" ? "preprocesses" : "fails clearly"}`, () => {
      const out = path.join(dir, file);
      const r = gm(["preprocess", shared("h5ad", file), "--out", out, "--gene-map", GENE_MAP, "--min-genes", "10", ...extra]);
      if (expected === "ok") {
        expect(r.code, r.stderr).toBe(0);
        const m = JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8"));
        expect(m.totals.cells_out).toBeGreaterThan(0);
        expect(Object.keys(JSON.parse(fs.readFileSync(path.join(out, "gene_medians.json"), "utf8"))).length).toBeGreaterThan(0);
      } else {
        expectCleanFailure(r, 3, expected);
        expect(r.stderr).toContain(file);
      }
    });
  }

  it("the heart file keeps raw/X, drops the ERCC spike-in and filters by feature type when there is no vocabulary", () => {
    const m = JSON.parse(fs.readFileSync(path.join(dir, "cellxgene_heart_invalid_CL.h5ad", "manifest.json"), "utf8"));
    expect(m.inputs[0].counts_location).toBe("raw/X");
    expect(m.inputs[0].genes.unmapped).toBe(1);
  });

  it("the 10x MEX folder and the 10x .h5 preprocess to the same medians", () => {
    const a = path.join(dir, "tenx-mex");
    const b = path.join(dir, "tenx-h5");
    expect(gm(["preprocess", shared("tenx/filtered_feature_bc_matrix"), "--out", a, "--min-genes", "10"]).code).toBe(0);
    expect(gm(["preprocess", shared("tenx/filtered_feature_bc_matrix.h5"), "--out", b, "--min-genes", "10"]).code).toBe(0);
    expect(fs.readFileSync(path.join(a, "gene_medians.json"), "utf8")).toBe(fs.readFileSync(path.join(b, "gene_medians.json"), "utf8"));
    const ma = JSON.parse(fs.readFileSync(path.join(a, "manifest.json"), "utf8"));
    const mb = JSON.parse(fs.readFileSync(path.join(b, "manifest.json"), "utf8"));
    expect(ma.totals).toEqual(mb.totals);
  });
});

describe("bad input: one clear line, non-zero exit, nothing written", () => {
  const dir = tmpDir("gm-bad-");
  let sim: string;
  beforeAll(async () => {
    sim = path.join(dir, "good.h5ad");
    expect(gm(["simulate", "--cells", "700", "--genes", "1500", "--seed", "2", "--out", sim]).code).toBe(0);
    await h5wasm.ready;
  });

  /** A copy of the simulated file with the first stored value of cell `row` replaced. */
  function withValue(name: string, row: number, v: number): string {
    const p = path.join(dir, name);
    fs.copyFileSync(sim, p);
    const f = new h5wasm.File(p, "a");
    const k = Number((f.get("X/indptr") as InstanceType<typeof h5wasm.Dataset>).slice([[row, row + 1]])![0 as never]);
    (f.get("X/data") as InstanceType<typeof h5wasm.Dataset>).write_slice([[k, k + 1]], new Float32Array([v]));
    f.close();
    return p;
  }

  function run(input: string, extra: string[] = []) {
    const out = path.join(dir, `out-${path.basename(input)}-${extra.join("")}`);
    const r = gm(["preprocess", input, "--out", out, "--min-genes", "5", ...extra]);
    return { r, out };
  }

  it("wrong path", () => {
    const { r, out } = run(path.join(dir, "missing.h5ad"));
    expectCleanFailure(r, 3, /missing\.h5ad: input not found/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it("empty file, not an HDF5 file", () => {
    fs.writeFileSync(path.join(dir, "empty.h5ad"), "");
    fs.writeFileSync(path.join(dir, "text.h5ad"), "hello, I am a text file\n");
    let x = run(path.join(dir, "empty.h5ad"));
    expectCleanFailure(x.r, 3, /empty\.h5ad: file is empty/);
    expect(fs.existsSync(x.out)).toBe(false);
    x = run(path.join(dir, "text.h5ad"));
    expectCleanFailure(x.r, 3, /text\.h5ad: not an HDF5 file/);
  });

  it("truncated and corrupt files", () => {
    const bytes = fs.readFileSync(sim);
    fs.writeFileSync(path.join(dir, "trunc.h5ad"), bytes.subarray(0, Math.floor(bytes.length / 2)));
    const corrupt = Buffer.from(bytes);
    corrupt.fill(0xab, 0x200, 0x4000);
    fs.writeFileSync(path.join(dir, "corrupt.h5ad"), corrupt);
    let x = run(path.join(dir, "trunc.h5ad"));
    expectCleanFailure(x.r, 3, /trunc\.h5ad: file is truncated/);
    expect(fs.existsSync(x.out)).toBe(false);
    x = run(path.join(dir, "corrupt.h5ad"));
    expectCleanFailure(x.r, 3, /corrupt\.h5ad: .*(corrupt|cannot)/);
    expect(fs.existsSync(x.out)).toBe(false);
    expect(x.r.stderr).not.toMatch(/HDF5-DIAG/);
  });

  it("negative, NaN and non-integer counts (the last accepted with --allow-non-integer)", () => {
    // early rows are seen while choosing the counts matrix, later ones while streaming
    let x = run(withValue("neg-early.h5ad", 10, -3));
    expectCleanFailure(x.r, 3, /neg-early\.h5ad: no raw counts found: X holds negative values \(e\.g\. -3\)/);
    expect(fs.existsSync(x.out)).toBe(false);
    x = run(withValue("neg.h5ad", 650, -3));
    expectCleanFailure(x.r, 3, /neg\.h5ad: X holds a negative value \(-3\) at cell 650/);
    expect(fs.existsSync(x.out)).toBe(false);
    x = run(withValue("nan.h5ad", 600, NaN));
    expectCleanFailure(x.r, 3, /nan\.h5ad: X holds NaN at cell 600/);
    expect(fs.existsSync(x.out)).toBe(false);
    x = run(withValue("nan-early.h5ad", 3, NaN));
    expectCleanFailure(x.r, 3, /nan-early\.h5ad: no raw counts found: X holds NaN values/);
    const frac = withValue("frac.h5ad", 690, 2.5);
    x = run(frac);
    expectCleanFailure(x.r, 3, /frac\.h5ad: X holds a non-integer value \(2\.5\) at cell 690 .*--allow-non-integer/);
    expect(fs.existsSync(x.out)).toBe(false);
    x = run(frac, ["--allow-non-integer"]);
    expect(x.r.code, x.r.stderr).toBe(0);
  });

  it("cells with zero counts are dropped and counted", () => {
    const p = path.join(dir, "zero.h5ad");
    fs.copyFileSync(sim, p);
    const f = new h5wasm.File(p, "a");
    const indptr = Array.from(f.get("X/indptr").value as BigInt64Array, Number);
    const n = indptr[4] - indptr[3];
    (f.get("X/data") as InstanceType<typeof h5wasm.Dataset>).write_slice([[indptr[3], indptr[4]]], new Float32Array(n));
    f.close();
    const { r, out } = run(p);
    expect(r.code, r.stderr).toBe(0);
    const m = JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8"));
    expect(m.totals.dropped.zero_counts).toBe(1);
  });

  it.skipIf(!hasShared)("unknown genes are counted and reported", () => {
    const out = path.join(dir, "unknown-genes");
    const r = gm(["preprocess", shared("h5ad/pbmc68k_reduced_counts.h5ad"), "--out", out, "--gene-map", GENE_MAP, "--counts-layer", "counts"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/104 genes could not be mapped to Ensembl ids/);
    const m = JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8"));
    expect(m.inputs[0].genes.unmapped).toBe(104);
  });

  it.skipIf(!hasShared)("gene symbols without --gene-map, missing vocabulary, missing counts layer", () => {
    let x = run(shared("h5ad/pbmc_5k_protein_v3_legacy.h5ad"));
    expectCleanFailure(x.r, 3, /identified by symbols .* pass --gene-map/);
    x = run(sim, ["--vocab", path.join(dir, "nope.json")]);
    expectCleanFailure(x.r, 3, /nope\.json: vocabulary file not found/);
    x = run(sim, ["--counts-layer", "spliced"]);
    expectCleanFailure(x.r, 3, /no matrix 'spliced' \(available: X\)/);
    expect(fs.existsSync(x.out)).toBe(false);
  });

  it("pre-0.7 AnnData (compound obs) is refused with the layout named", async () => {
    const p = path.join(dir, "old.h5ad");
    const f = new h5wasm.File(p, "w");
    for (const name of ["obs", "var"]) {
      f.create_dataset({ name, data: new Map<string, number[]>([["index", [1]], ["n", [2.0]]]), shape: [1], dtype: [["index", "<i4"], ["n", "<f8"]] });
    }
    f.create_dataset({ name: "X", data: new Float32Array([1]), shape: [1, 1] });
    f.close();
    const x = run(p);
    expectCleanFailure(x.r, 3, /old\.h5ad: pre-0\.7 AnnData layout/);
  });

  it("tokenize: missing medians, unfinished preprocess folder", () => {
    let r = gm(["tokenize", sim, "--out", path.join(dir, "t1"), "--medians", path.join(dir, "none.json")]);
    expectCleanFailure(r, 3, /none\.json: medians file not found/);
    const unfinished = path.join(dir, "unfinished");
    fs.mkdirSync(unfinished);
    fs.writeFileSync(path.join(unfinished, "run.json"), "{}");
    fs.writeFileSync(path.join(dir, "m.json"), JSON.stringify({ ENSG00000000003: 1.5 }));
    r = gm(["tokenize", unfinished, "--out", path.join(dir, "t2"), "--medians", path.join(dir, "m.json")]);
    expectCleanFailure(r, 3, /unfinished gm preprocess folder/);
    expect(fs.existsSync(path.join(dir, "t2"))).toBe(false);
  });
});

/** Start gm with these node arguments and SIGKILL it after delayMs (if still running). */
function killAfter(args: string[], delayMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const child = spawn(process.execPath, args, { stdio: "ignore", env: { ...process.env, GM_NO_PROGRESS: "1" } });
    const t = setTimeout(() => child.kill("SIGKILL"), delayMs);
    child.on("exit", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

function expectSameFiles(a: string, b: string): void {
  const fa = listFiles(a);
  const fb = listFiles(b);
  expect([...fb.keys()].sort()).toEqual([...fa.keys()].sort());
  for (const [k, v] of fa) expect(v.equals(fb.get(k)!), k).toBe(true);
}

describe("killed runs resume", () => {
  it("killing preprocess / tokenize at random points and re-running yields the same output as one clean run", async () => {
    const dir = tmpDir("gm-kill-");
    const sim = path.join(dir, "s.h5ad");
    expect(gm(["simulate", "--cells", "1500", "--genes", "3000", "--seed", "9", "--out", sim]).code).toBe(0);
    const args = (out: string) => [gmBin, "--log-format", "json", "preprocess", sim, "--out", out, "--unit-cells", "100", "--min-genes", "20"];
    const clean = path.join(dir, "clean");
    expect(gm(args(clean).slice(3)).code).toBe(0);
    const out = path.join(dir, "killed");
    for (const delayMs of [900, 1400, 2100]) await killAfter(args(out), delayMs);
    const r = gm(args(out).slice(3));
    expect(r.code, r.stderr).toBe(0);
    expectSameFiles(clean, out);

    // the same for tokenize, reading the preprocess folder
    const tokArgs = (o: string) => [gmBin, "--log-format", "json", "tokenize", clean, "--out", o, "--medians", path.join(clean, "gene_medians.json"), "--workers", "2"];
    const tokClean = path.join(dir, "tok-clean");
    expect(gm(tokArgs(tokClean).slice(3)).code).toBe(0);
    const tokOut = path.join(dir, "tok-killed");
    for (const delayMs of [700, 1100]) await killAfter(tokArgs(tokOut), delayMs);
    const t = gm(tokArgs(tokOut).slice(3));
    expect(t.code, t.stderr).toBe(0);
    expectSameFiles(tokClean, tokOut);
  });
});

describe.skipIf(!hasShared)("preprocess reads a census-fetch folder through its manifest", () => {
  it("takes the newest recorded version of each dataset and ignores unlisted files", () => {
    const dir = tmpDir("gm-census-dir-");
    const put = (rel: string, src: string) => {
      fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
      fs.copyFileSync(shared("h5ad", src), path.join(dir, rel));
    };
    put("ds-a/v1.h5ad", "cellxgene_heart_invalid_CL.h5ad");
    put("ds-a/v2.h5ad", "cellxgene_heart_invalid_CL.h5ad");
    put("ds-b/v1.h5ad", "pbmc_5k_protein_v3_legacy.h5ad");
    put("stray/not-listed.h5ad", "seurat_pbmc_small.h5ad"); // would fail: no raw counts
    const lines = [
      { dataset_id: "ds-a", dataset_version_id: "v1", path: "ds-a/v1.h5ad", fetched_at: "2026-01-01T00:00:00Z" },
      { dataset_id: "ds-b", dataset_version_id: "v1", path: "ds-b/v1.h5ad", fetched_at: "2026-01-02T00:00:00Z" },
      { dataset_id: "ds-a", dataset_version_id: "v2", path: "ds-a/v2.h5ad", fetched_at: "2026-02-01T00:00:00Z" },
    ];
    fs.writeFileSync(path.join(dir, "manifest.jsonl"), lines.map((l) => JSON.stringify(l)).join("\n") + '\n{"dataset_id": "cut sh');
    const out = path.join(tmpDir(), "pre");
    const r = gm(["preprocess", dir, "--out", out, "--gene-map", GENE_MAP, "--min-genes", "10"]);
    expect(r.code, r.stderr).toBe(0);
    const m = JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8"));
    expect(m.inputs.map((i: { path: string }) => path.relative(dir, i.path)).sort()).toEqual(["ds-a/v2.h5ad", "ds-b/v1.h5ad"]);
  });
});
