/**
 * The h5ad reader: CSC matrices (transposed in memory or through spill files) read to the same rows
 * as the CSR original, in any block size; dense X; obs/var columns of the current and the legacy
 * encodings.
 */
import { describe, expect, it, beforeAll, afterEach } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import h5wasm from "h5wasm/node";
import { H5adWriter, openH5ad, preprocess, PREPROCESS_DEFAULTS, type CsrBlock } from "@gm/data";
import { hasShared, shared, tmpDir } from "../../../tests/helpers/paths.js";
import { PBMC_COUNTS, readPbmcCounts } from "../../../tests/helpers/pbmc.js";

/** Rows as maps col -> value (explicit zeros dropped), for comparing readers. */
function rowsOf(b: CsrBlock): Map<number, number>[] {
  const out: Map<number, number>[] = [];
  for (let r = 0; r < b.nRows; r++) {
    const m = new Map<number, number>();
    for (let k = b.indptr[r]; k < b.indptr[r + 1]; k++) if (b.data[k] !== 0) m.set(b.indices[k], b.data[k]);
    out.push(m);
  }
  return out;
}

describe("h5ad dataframes written by gm read back", () => {
  it("categoricals (with missing codes), strings, numbers, booleans and nullable booleans", async () => {
    const file = path.join(tmpDir("gm-h5ad-df-"), "df.h5ad");
    const w = await H5adWriter.create(file);
    w.writeDataFrame("obs", {
      index: ["c0", "c1", "c2"],
      columns: new Map<string, Parameters<H5adWriter["writeColumn"]>[2]>([
        ["cell_type", { kind: "categorical", codes: [1, -1, 0], categories: ["B cell", "T cell"] }],
        ["donor", { kind: "string", values: ["d1", "d2", "d3"] }],
        ["n", { kind: "number", values: new Float64Array([1.5, 2, 3]) }],
        ["is_primary_data", { kind: "bool", values: Uint8Array.from([1, 0, 1]) }],
        ["passed", { kind: "bool", values: Uint8Array.from([1, 0, 0]), mask: Uint8Array.from([0, 0, 1]) }],
      ]),
    });
    w.writeDataFrame("var", { index: ["g0"], columns: new Map() });
    w.close();
    const f = await openH5ad(file);
    expect(f.obsColumns()).toEqual(["cell_type", "donor", "n", "is_primary_data", "passed"]);
    const df = f.readObs(f.obsColumns(), 1, 3);
    expect(df.index).toEqual(["c1", "c2"]);
    expect(df.columns.get("cell_type")).toEqual({ kind: "categorical", codes: Int32Array.from([-1, 0]), categories: ["B cell", "T cell"] });
    expect(df.columns.get("donor")).toEqual({ kind: "string", values: ["d2", "d3"] });
    expect(df.columns.get("n")).toEqual({ kind: "number", values: Float64Array.from([2, 3]) });
    expect(df.columns.get("is_primary_data")).toEqual({ kind: "bool", values: Uint8Array.from([0, 1]) });
    expect(df.columns.get("passed")).toEqual({ kind: "bool", values: Uint8Array.from([0, 0]), mask: Uint8Array.from([0, 1]) });
    f.close();
  });
});

describe.skipIf(!hasShared)("h5ad reader", () => {
  const dir = tmpDir("gm-h5ad-");
  const csc = path.join(dir, "pbmc-csc.h5ad");

  beforeAll(async () => {
    // a CSC copy of layers/counts as X, with the original obs/var indices
    const { indptr, indices, data, genes, cells } = await readPbmcCounts();
    const nCells = cells.length;
    const nGenes = genes.length;
    const colCount = new Int32Array(nGenes + 1);
    for (let k = 0; k < indices.length; k++) colCount[indices[k] + 1]++;
    for (let g = 0; g < nGenes; g++) colCount[g + 1] += colCount[g];
    const fill = colCount.slice(0, nGenes);
    const rowIdx = new Int32Array(indices.length);
    const vals = new Float32Array(indices.length);
    for (let r = 0; r < nCells; r++)
      for (let k = indptr[r]; k < indptr[r + 1]; k++) {
        const p = fill[indices[k]]++;
        rowIdx[p] = r;
        vals[p] = data[k];
      }
    const w = await H5adWriter.create(csc);
    w.writeDataFrame("obs", { index: cells, columns: new Map() });
    w.writeDataFrame("var", { index: genes, columns: new Map() });
    w.close();
    await h5wasm.ready;
    const f = new h5wasm.File(csc, "a");
    const g = f.create_group("X");
    g.create_attribute("encoding-type", "csc_matrix");
    g.create_attribute("encoding-version", "0.1.0");
    g.create_attribute("shape", new BigInt64Array([BigInt(nCells), BigInt(nGenes)]));
    g.create_dataset({ name: "data", data: vals });
    g.create_dataset({ name: "indices", data: rowIdx });
    g.create_dataset({ name: "indptr", data: BigInt64Array.from(colCount, BigInt) });
    f.close();
  });

  afterEach(() => {
    delete process.env.GM_CSC_MAX_BYTES;
  });

  for (const mode of ["in memory", "through spill files"]) {
    it(`CSC reads to the same rows as the CSR original (${mode}), in any block size`, async () => {
      if (mode !== "in memory") process.env.GM_CSC_MAX_BYTES = "40000"; // ~1,700 entries per range: many ranges
      const ref = await openH5ad(PBMC_COUNTS);
      const want = rowsOf(ref.matrix("layers/counts").readBlock(0, 700));
      ref.close();
      const f = await openH5ad(csc);
      const m = f.matrix("X");
      expect(m.layout).toBe("csc");
      for (const size of [700, 64, 7]) {
        const got: Map<number, number>[] = [];
        for (let a = 0; a < 700; a += size) {
          const b = m.readBlock(a, Math.min(700, a + size));
          for (let r = 0; r < b.nRows; r++) {
            const cols = Array.from(b.indices.subarray(b.indptr[r], b.indptr[r + 1]));
            expect(cols).toEqual([...cols].sort((x, y) => x - y));
          }
          got.push(...rowsOf(b));
        }
        expect(got).toEqual(want);
      }
      f.close();
    });
  }

  it("preprocess gives identical medians from the CSC and the CSR file (spilled, 2 workers)", async () => {
    const opts = { ...PREPROCESS_DEFAULTS, geneMap: shared("genes/gene_symbols.json"), vocab: shared("genes/vocab_25426.json"), workers: 2, unitCells: 300 };
    await preprocess({ ...opts, inputs: [PBMC_COUNTS], out: path.join(dir, "pre-csr"), countsLayer: "counts" });
    process.env.GM_CSC_MAX_BYTES = "100000";
    await preprocess({ ...opts, inputs: [csc], out: path.join(dir, "pre-csc") });
    const a = fs.readFileSync(path.join(dir, "pre-csr", "gene_medians.json"), "utf8");
    const b = fs.readFileSync(path.join(dir, "pre-csc", "gene_medians.json"), "utf8");
    expect(b).toBe(a);
    expect(fs.readdirSync(process.env.GM_TMPDIR ?? "/tmp").filter((n) => n.startsWith(`gm-csc-${process.pid}-`))).toEqual([]);
  });

  it("reads dense X, legacy categoricals and current-encoding columns", async () => {
    const legacy = await openH5ad(shared("h5ad/pbmc_10k_protein_v3_legacy.h5ad"));
    expect(legacy.matrix("X").layout).toBe("dense");
    const b = legacy.matrix("X").readBlock(0, 5);
    expect(b.nRows).toBe(5);
    expect(b.indices.length).toBeGreaterThan(0);
    const enc = legacy.var.columns.get("encode")!;
    expect(enc.kind).toBe("categorical");
    legacy.close();
    const cx = await openH5ad(shared("h5ad/cellxgene_example_valid.h5ad"));
    const obs = cx.readObs(["is_primary_data", "cell_type_ontology_term_id"], 0, 2);
    expect(obs.columns.get("is_primary_data")).toEqual({ kind: "bool", values: Uint8Array.from([1, 1]) });
    expect(obs.columns.get("cell_type_ontology_term_id")!.kind).toBe("categorical");
    expect(cx.matrixLocations()).toEqual(["X", "raw/X"]);
    cx.close();
  });
});
