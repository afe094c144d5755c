import { describe, expect, it, beforeAll } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { RecordBatchReader } from "apache-arrow";
import { mergePreprocess, preprocess, PREPROCESS_DEFAULTS } from "@gm/data";
import { hasShared, shared, tmpDir } from "../../../tests/helpers/paths.js";
import { PBMC_COUNTS as H5AD, readPbmcCounts } from "../../../tests/helpers/pbmc.js";

const VOCAB = shared("genes/vocab_25426.json");
const GENE_MAP = shared("genes/gene_symbols.json");
const LEGACY = [shared("h5ad/pbmc_10k_protein_v3_legacy.h5ad"), shared("h5ad/pbmc_5k_protein_v3_legacy.h5ad")];

const base = { ...PREPROCESS_DEFAULTS, geneMap: GENE_MAP, vocab: VOCAB };

/** Exact medians of the non-zero normalised values (counts / n_counts * 1e4) per Ensembl id, read independently. */
async function exactMedians(minGenes: number): Promise<Map<string, { median: number; n: number; sorted: number[] }>> {
  const { indptr, indices, data, genes } = await readPbmcCounts();
  const symbols = (JSON.parse(fs.readFileSync(GENE_MAP, "utf8")) as { symbol_to_ensembl: Record<string, string> }).symbol_to_ensembl;
  const values = new Map<string, number[]>();
  for (let r = 0; r + 1 < indptr.length; r++) {
    let total = 0;
    let expressed = 0;
    for (let k = indptr[r]; k < indptr[r + 1]; k++) if (data[k] > 0) (total += data[k]), expressed++;
    if (total === 0 || expressed < minGenes) continue;
    for (let k = indptr[r]; k < indptr[r + 1]; k++) {
      const e = symbols[genes[indices[k]]];
      if (!e || data[k] === 0) continue;
      (values.get(e) ?? values.set(e, []).get(e)!).push((data[k] / total) * 10000);
    }
  }
  const out = new Map<string, { median: number; n: number; sorted: number[] }>();
  for (const [g, v] of values) {
    v.sort((a, b) => a - b);
    const m = v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
    out.set(g, { median: m, n: v.length, sorted: v });
  }
  return out;
}

function readJson<T>(p: string): T {
  return JSON.parse(fs.readFileSync(p, "utf8")) as T;
}

function filesOf(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.set(path.relative(dir, p), fs.readFileSync(p));
    }
  };
  walk(dir);
  return out;
}

describe.skipIf(!hasShared)("gm preprocess on real data", () => {
  const dir = tmpDir("gm-pre-");
  let exact: Map<string, { median: number; n: number; sorted: number[] }>;
  beforeAll(async () => {
    exact = await exactMedians(200);
    await preprocess({ ...base, inputs: [H5AD], out: path.join(dir, "one-unit"), countsLayer: "counts", unitCells: 1000 });
  });

  /** Fraction of a gene's values below x (a t-digest's guarantee is on this rank, not on the value). */
  const rankOf = (sorted: number[], x: number) => {
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    return lo / sorted.length;
  };

  it("t-digest medians are within 1% of exact medians (rank within 1%; value error median < 0.5%, p90 < 1%)", () => {
    const med = readJson<Record<string, number>>(path.join(dir, "one-unit/gene_medians.json"));
    const valueErrors: number[] = [];
    for (const [g, { median, n, sorted }] of exact) {
      expect(med[g], g).toBeDefined();
      if (n < 50) continue;
      // the digest median sits between the exact 49th and 51st percentiles (one value of slack)
      const r = rankOf(sorted, med[g]);
      expect(Math.abs(r - 0.5), `${g} (n=${n}): digest ${med[g]} has rank ${r}`).toBeLessThanOrEqual(0.01 + 1 / n);
      valueErrors.push(Math.abs(med[g] - median) / median);
    }
    valueErrors.sort((a, b) => a - b);
    expect(valueErrors.length).toBeGreaterThan(300);
    expect(valueErrors[Math.floor(valueErrors.length / 2)]).toBeLessThan(0.005);
    expect(valueErrors[Math.floor(valueErrors.length * 0.9)]).toBeLessThan(0.01);
    expect(Object.keys(med).length).toBe(exact.size);
  });

  it("merging the digests of two halves equals the digest of the whole (within the same tolerance)", async () => {
    const out = path.join(dir, "two-units");
    await preprocess({ ...base, inputs: [H5AD], out, countsLayer: "counts", unitCells: 350 });
    const whole = readJson<Record<string, number>>(path.join(dir, "one-unit/gene_medians.json"));
    const halves = readJson<Record<string, number>>(path.join(out, "gene_medians.json"));
    expect(Object.keys(halves).sort()).toEqual(Object.keys(whole).sort());
    const diffs: number[] = [];
    for (const [g, { n, sorted }] of exact) {
      if (n < 50) continue;
      expect(Math.abs(rankOf(sorted, halves[g]) - rankOf(sorted, whole[g])), g).toBeLessThanOrEqual(0.02 + 1 / n);
      diffs.push(Math.abs(halves[g] - whole[g]) / whole[g]);
    }
    diffs.sort((a, b) => a - b);
    expect(diffs[Math.floor(diffs.length / 2)]).toBeLessThan(0.005);
    expect(diffs[Math.floor(diffs.length * 0.9)]).toBeLessThan(0.01);
    expect(readJson<{ shards: unknown[] }>(path.join(out, "manifest.json")).shards.length).toBe(2);
  });

  it("writes cells, manifest and vocabulary as documented", () => {
    const out = path.join(dir, "one-unit");
    const manifest = readJson<{
      totals: { cells_in: number; cells_out: number; dropped: { min_genes: number } };
      inputs: { counts_location: string; genes: { kept: number; unmapped: number } }[];
      shards: { path: string; rows: number }[];
    }>(path.join(out, "manifest.json"));
    expect(manifest.totals.cells_in).toBe(700);
    expect(manifest.totals.cells_out + manifest.totals.dropped.min_genes).toBe(700);
    expect(manifest.inputs[0].counts_location).toBe("layers/counts");
    expect(manifest.inputs[0].genes.unmapped).toBeGreaterThan(0);
    const vocab = readJson<{ genes: string[]; specials: Record<string, number> }>(path.join(out, "vocab.json"));
    expect(vocab.genes.length).toBe(25424);
    expect(vocab.specials).toEqual({ "[UNK]": 0, "[PAD]": 1 });
    const reader = RecordBatchReader.from(fs.readFileSync(path.join(out, manifest.shards[0].path)));
    const batches = [...reader];
    const rows = batches.reduce((s, b) => s + b.numRows, 0);
    expect(rows).toBe(manifest.totals.cells_out);
    const b = batches[0];
    expect(b.schema.fields.map((f) => f.name)).toEqual(expect.arrayContaining(["cell_id", "gene_index", "counts", "values", "n_counts", "n_genes_expressed", "bulk_labels", "obs.n_counts"]));
    const genes = JSON.parse(b.schema.metadata.get("gm:genes")!) as string[];
    // first cell: normalised values = counts / n_counts * 1e4, genes ascending
    const gi = Array.from(b.getChild("gene_index")!.get(0)!.toArray() as Int32Array);
    const counts = Array.from(b.getChild("counts")!.get(0)!.toArray() as Float32Array);
    const values = Array.from(b.getChild("values")!.get(0)!.toArray() as Float32Array);
    const n = b.getChild("n_counts")!.get(0) as number;
    expect(gi).toEqual([...gi].sort((x, y) => x - y));
    values.forEach((v, i) => expect(v).toBeCloseTo(Math.fround((counts[i] / n) * 10000), 3));
    expect(genes.every((g) => /^ENSG\d+$/.test(g))).toBe(true);
  });

  it("same input -> identical output files, whatever the number of workers", async () => {
    const a = path.join(dir, "det-a");
    const b = path.join(dir, "det-b");
    await preprocess({ ...base, inputs: [H5AD], out: a, countsLayer: "counts", unitCells: 200, workers: 1 });
    await preprocess({ ...base, inputs: [H5AD], out: b, countsLayer: "counts", unitCells: 200, workers: 2 });
    const fa = filesOf(a);
    const fb = filesOf(b);
    expect([...fa.keys()].sort()).toEqual([...fb.keys()].sort());
    for (const [k, v] of fa) expect(v.equals(fb.get(k)!), k).toBe(true);
  });

  it("resumes: a re-run redoes only the unit whose record is missing and ends identical", async () => {
    const out = path.join(dir, "resume");
    const opts = { ...base, inputs: [H5AD], out, countsLayer: "counts", unitCells: 200 };
    await preprocess(opts);
    const before = filesOf(out);
    // a crash after unit 2's shard was written but before its record
    fs.rmSync(path.join(out, "units/f00000-u00002.json"));
    fs.rmSync(path.join(out, "manifest.json"));
    fs.writeFileSync(path.join(out, "cells/.cells-f00000-u00003.arrow.tmp-1-abcd"), "half a file");
    const r = await preprocess(opts);
    expect(r.unitsRun).toBe(1);
    expect(r.unitsSkipped).toBe(3);
    const after = filesOf(out);
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [k, v] of before) expect(v.equals(after.get(k)!), k).toBe(true);
  });

  it("--log1p stores log1p of the normalised values and leaves the medians alone", async () => {
    const out = path.join(dir, "log1p");
    await preprocess({ ...base, inputs: [H5AD], out, countsLayer: "counts", unitCells: 1000, log1p: true });
    expect(fs.readFileSync(path.join(out, "gene_medians.json"), "utf8")).toBe(fs.readFileSync(path.join(dir, "one-unit/gene_medians.json"), "utf8"));
    const m = readJson<{ shards: { path: string }[] }>(path.join(out, "manifest.json"));
    const b = [...RecordBatchReader.from(fs.readFileSync(path.join(out, m.shards[0].path)))][0];
    const counts = Array.from(b.getChild("counts")!.get(3)!.toArray() as Float32Array);
    const values = Array.from(b.getChild("values")!.get(3)!.toArray() as Float32Array);
    const n = b.getChild("n_counts")!.get(3) as number;
    values.forEach((v, i) => expect(v).toBeCloseTo(Math.fround(Math.log1p((counts[i] / n) * 10000)), 4));
  });

  it("refuses an output folder holding a run with other options", async () => {
    await expect(preprocess({ ...base, inputs: [H5AD], out: path.join(dir, "one-unit"), countsLayer: "counts", unitCells: 1000, minGenes: 10 })).rejects.toThrow(/other inputs or options/);
  });

  it("--shard 1/2 + 2/2 then --merge equals one run over both inputs", async () => {
    const whole = path.join(dir, "legacy-whole");
    const opts = { ...base, inputs: LEGACY, countsLayer: "X", minGenes: 100 };
    await preprocess({ ...opts, out: whole });
    await preprocess({ ...opts, out: path.join(dir, "legacy-s1"), shard: { index: 1, count: 2 } });
    await preprocess({ ...opts, out: path.join(dir, "legacy-s2"), shard: { index: 2, count: 2 } });
    expect(() => mergePreprocess([path.join(dir, "legacy-s1")], path.join(dir, "merged-missing"))).toThrow(/slice 2\/2 missing/);
    const merged = path.join(dir, "legacy-merged");
    mergePreprocess([path.join(dir, "legacy-s2"), path.join(dir, "legacy-s1")], merged);
    expect(fs.readFileSync(path.join(merged, "gene_medians.json"), "utf8")).toBe(fs.readFileSync(path.join(whole, "gene_medians.json"), "utf8"));
    expect(fs.readFileSync(path.join(merged, "vocab.json"), "utf8")).toBe(fs.readFileSync(path.join(whole, "vocab.json"), "utf8"));
    const mw = readJson<{ totals: unknown; shards: unknown[]; inputs: unknown[] }>(path.join(whole, "manifest.json"));
    const mm = readJson<{ totals: unknown; shards: unknown[]; inputs: unknown[] }>(path.join(merged, "manifest.json"));
    expect(mm.totals).toEqual(mw.totals);
    expect(mm.shards).toEqual(mw.shards);
    expect(mm.inputs).toEqual(mw.inputs);
  });
});
