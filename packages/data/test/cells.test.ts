/**
 * Row-aligned tokenization (tokenizeCellFile): the ids of every kept row equal what `gm tokenize`
 * writes for the same file, vocabulary and medians, and every input row comes back in file order —
 * filtered rows included, with empty ids — so results can be put back on the input's obs rows.
 */
import { describe, expect, it, beforeAll } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import h5wasm from "h5wasm/node";
import { loadGeneMap, loadMedians, loadVocabulary, readTokenizedCells, tokenize, tokenizeCellFile, TOKENIZE_DEFAULTS, type CellTokenizeOptions, type TokenizedRow } from "@gm/data";
import { hasShared, shared, tmpDir } from "../../../tests/helpers/paths.js";
import { PBMC_COUNTS as H5AD, readPbmcCounts } from "../../../tests/helpers/pbmc.js";

const VOCAB = shared("genes/vocab_25426.json");
const MEDIANS = shared("genes/gene_medians_v1.json");
const GENE_MAP = shared("genes/gene_symbols.json");
const LEGACY = shared("h5ad/pbmc_10k_protein_v3_legacy.h5ad");
/** Between the 25th and 50th percentile of expressed genes per cell here: filters about a third. */
const MIN_GENES = 230;

/** obs/bulk_labels read with h5wasm directly (categorical: codes + categories). */
async function bulkLabels(): Promise<(string | null)[]> {
  await h5wasm.ready;
  const f = new h5wasm.File(H5AD, "r");
  try {
    const codes = f.get("obs/bulk_labels/codes") as InstanceType<typeof h5wasm.Dataset>;
    const cats = (f.get("obs/bulk_labels/categories") as InstanceType<typeof h5wasm.Dataset>).value as string[];
    return Array.from(codes.value as ArrayLike<number>, (c) => (c < 0 ? null : cats[c]));
  } finally {
    f.close();
  }
}

async function tokenizeDir(out: string, input: string, extra: Partial<Parameters<typeof tokenize>[0]>): Promise<{ ids: number[][]; labels: unknown[] }> {
  await tokenize({ ...TOKENIZE_DEFAULTS, input: [input], out, medians: MEDIANS, vocab: VOCAB, geneMap: GENE_MAP, workers: 1, ...extra });
  const ids: number[][] = [];
  const labels: unknown[] = [];
  const cols = (extra.keepColumns ?? []).length ? ["bulk_labels"] : [];
  for (const c of readTokenizedCells(out, cols)) {
    ids.push(Array.from(c.ids));
    labels.push(c.columns.bulk_labels);
  }
  return { ids, labels };
}

describe.skipIf(!hasShared)("tokenizeCellFile on real data", () => {
  const dir = tmpDir("gm-cells-");
  let base: CellTokenizeOptions;

  beforeAll(() => {
    base = { vocab: loadVocabulary(VOCAB), medians: loadMedians(MEDIANS), geneMap: loadGeneMap(GENE_MAP), maxLen: 2048, cls: false };
  });

  it("equals gm tokenize's ids on pbmc68k_reduced_counts and keeps every row aligned when rows are filtered", async () => {
    const want = await tokenizeDir(path.join(dir, "filtered"), H5AD, { countsLayer: "counts", minGenes: MIN_GENES, cls: true, maxLen: 128, keepColumns: ["bulk_labels"] });
    const t = await tokenizeCellFile(H5AD, { ...base, countsLayer: "counts", minGenes: MIN_GENES, cls: true, maxLen: 128, obsColumns: ["bulk_labels"], blockRows: 97 });
    let rows: TokenizedRow[];
    try {
      expect(t.nCells).toBe(700);
      expect(t.plan.countsLocation).toBe("layers/counts");
      rows = [...t.cells()];
      // names come back in file order too
      const { cells, indptr, data } = await readPbmcCounts();
      expect(t.obsNames()).toEqual(cells);

      expect(rows.map((r) => r.row)).toEqual(Array.from({ length: 700 }, (_, i) => i));
      const ok = rows.filter((r) => r.status === "ok");
      expect(ok.map((r) => Array.from(r.ids))).toEqual(want.ids);
      expect(ok.map((r) => r.obs.bulk_labels)).toEqual(want.labels);
      expect(ok.every((r) => r.ids[0] === t.clsId && r.ids.length <= 128)).toBe(true);
      expect(t.clsId).toBe(25426);

      // the filtered rows are exactly those with fewer than MIN_GENES expressed genes (from the raw matrix)
      const expressed = cells.map((_, r) => {
        let n = 0;
        for (let k = indptr[r]; k < indptr[r + 1]; k++) if (data[k] > 0) n++;
        return n;
      });
      const filtered = rows.filter((r) => r.status !== "ok");
      expect(filtered.length).toBeGreaterThan(100);
      expect(filtered.length).toBeLessThan(600);
      expect(filtered.map((r) => r.row)).toEqual(expressed.flatMap((n, i) => (n < MIN_GENES ? [i] : [])));
      expect(filtered.every((r) => r.status === "too-few-genes" && r.ids.length === 0)).toBe(true);
      // obs values are there for every row, filtered or not
      expect(rows.map((r) => r.obs.bulk_labels)).toEqual(await bulkLabels());

      expect(t.stats).toMatchObject({ rows: 700, cellsIn: 700, droppedMinGenes: filtered.length, tokenized: ok.length, noTokens: 0 });
      expect(t.stats.tokens).toBe(ok.reduce((s, r) => s + r.ids.length, 0));
      expect(t.stats.truncated).toBe(ok.filter((r) => r.truncated).length);
      expect(t.stats.truncated).toBeGreaterThan(0);

      // restartable: a second pass yields the same rows
      const again = [...t.cells()];
      expect(again.length).toBe(700);
      expect(Array.from(again[5].ids)).toEqual(Array.from(rows[5].ids));
    } finally {
      t.close();
    }
    expect(() => [...t.cells()]).toThrow(/closed/);
  });

  it("with minGenes 0 (the default) every row of pbmc68k is tokenized, as gm tokenize --min-genes 0 does", async () => {
    const want = await tokenizeDir(path.join(dir, "all"), H5AD, { countsLayer: "counts", minGenes: 0 });
    const t = await tokenizeCellFile(H5AD, { ...base, countsLayer: "counts" });
    try {
      const rows = [...t.cells()];
      expect(rows.every((r) => r.status === "ok")).toBe(true);
      expect(rows.map((r) => Array.from(r.ids))).toEqual(want.ids);
    } finally {
      t.close();
    }
  });

  it("equals gm tokenize on a legacy AnnData 0.7 file with dense X counts", async () => {
    const want = await tokenizeDir(path.join(dir, "legacy"), LEGACY, { minGenes: 0, eos: true, maxLen: 512 });
    // the gene map given as a file path, as the CLI has it
    const t = await tokenizeCellFile(LEGACY, { ...base, geneMap: GENE_MAP, maxLen: 512, eos: true, obsColumns: ["n_genes"] });
    try {
      expect(t.plan.countsLocation).toBe("X");
      const rows = [...t.cells()];
      expect(rows.length).toBe(200);
      expect(rows.filter((r) => r.status === "ok").map((r) => Array.from(r.ids))).toEqual(want.ids);
      // a numeric obs column comes back as text
      expect(rows[0].obs.n_genes).toMatch(/^\d+(\.\d+)?$/);
    } finally {
      t.close();
    }
  });

  it("equals gm tokenize on 10x Cell Ranger output (HDF5 and MEX), barcodes as obs names", async () => {
    for (const input of [shared("tenx/filtered_feature_bc_matrix.h5"), shared("tenx/filtered_feature_bc_matrix")]) {
      const want = await tokenizeDir(path.join(dir, `tenx-${path.extname(input) || "mex"}`), input, { minGenes: 0, geneMap: undefined });
      const t = await tokenizeCellFile(input, { ...base, geneMap: undefined });
      try {
        const rows = [...t.cells()];
        expect(rows.length).toBe(1107);
        expect(rows.filter((r) => r.status === "ok").map((r) => Array.from(r.ids))).toEqual(want.ids);
        const names = t.obsNames();
        expect(names.length).toBe(1107);
        expect(names[0]).toMatch(/^[ACGT]+-1$/);
      } finally {
        t.close();
      }
    }
  });

  it("rows that pass the filters but hold no vocabulary gene come back empty, in place", async () => {
    // a gene map that knows a single, sparsely expressed gene: most cells hold no token
    const { genes, indptr, indices, data } = await readPbmcCounts();
    const map = (JSON.parse(fs.readFileSync(GENE_MAP, "utf8")) as { symbol_to_ensembl: Record<string, string> }).symbol_to_ensembl;
    const vocab = base.vocab;
    const medians = base.medians;
    const col = genes.findIndex((g, j) => {
      const e = map[g];
      if (!e || vocab.get(e) === undefined || !medians.has(e)) return false;
      let n = 0;
      for (let r = 0; r < 700; r++) for (let k = indptr[r]; k < indptr[r + 1]; k++) if (indices[k] === j && data[k] > 0) n++;
      return n > 20 && n < 400;
    });
    expect(col).toBeGreaterThanOrEqual(0);
    const oneMap = path.join(dir, "one-map.json");
    fs.writeFileSync(oneMap, JSON.stringify({ symbol_to_ensembl: { [genes[col]]: map[genes[col]] } }));
    const want = await tokenizeDir(path.join(dir, "one-gene"), H5AD, { geneMap: oneMap, countsLayer: "counts", minGenes: 0, cls: true });
    const t = await tokenizeCellFile(H5AD, { ...base, geneMap: oneMap, countsLayer: "counts", cls: true });
    try {
      const rows = [...t.cells()];
      const has = Array.from({ length: 700 }, (_, r) => {
        for (let k = indptr[r]; k < indptr[r + 1]; k++) if (indices[k] === col && data[k] > 0) return true;
        return false;
      });
      expect(rows.map((r) => r.status)).toEqual(has.map((h) => (h ? "ok" : "no-tokens")));
      expect(rows.filter((r) => r.status === "ok").map((r) => Array.from(r.ids))).toEqual(want.ids);
      expect(rows.filter((r) => r.status === "no-tokens").every((r) => r.ids.length === 0)).toBe(true);
      expect(t.stats.noTokens).toBe(has.filter((h) => !h).length);
    } finally {
      t.close();
    }
  });

  it("fails with one clear line on a missing obs column, a file without vocabulary genes, and unreadable files", async () => {
    await expect(tokenizeCellFile(H5AD, { ...base, countsLayer: "counts", obsColumns: ["cell_type"] })).rejects.toThrow(/obs has no column 'cell_type' \(available: bulk_labels, .*louvain/);
    // symbols without a gene map
    await expect(tokenizeCellFile(H5AD, { ...base, geneMap: undefined, countsLayer: "counts" })).rejects.toThrow(/--gene-map/);
    // a gene map under which no gene is in the vocabulary
    const noneMap = path.join(dir, "none-map.json");
    fs.writeFileSync(noneMap, JSON.stringify({ symbol_to_ensembl: { NOT_A_GENE: "ENSG99999999999" } }));
    await expect(tokenizeCellFile(H5AD, { ...base, geneMap: loadGeneMap(noneMap), countsLayer: "counts" })).rejects.toThrow(/none of its 765 genes is in the vocabulary.*--gene-map, --gene-id-column/);
    const junk = path.join(dir, "junk.h5ad");
    fs.writeFileSync(junk, "this is not HDF5");
    await expect(tokenizeCellFile(junk, base)).rejects.toThrow(/junk\.h5ad: not an HDF5 file/);
    await expect(tokenizeCellFile(path.join(dir, "missing.h5ad"), base)).rejects.toThrow(/missing\.h5ad: input not found/);
    await expect(tokenizeCellFile(H5AD, { ...base, countsLayer: "nope" })).rejects.toThrow(/no matrix 'nope' \(available: .*layers\/counts/);
  });
});
