import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import h5wasm from "h5wasm/node";
import { simulate, defaultGenesPerCell, type SimulateSummary } from "@gm/data/simulate/index";
import { H5adWriter } from "@gm/data/h5ad/write";

type H5File = InstanceType<typeof h5wasm.File>;
type H5Dataset = InstanceType<typeof h5wasm.Dataset>;
type H5Group = InstanceType<typeof h5wasm.Group>;

const CELLS = 500;
const GENES = 2000;
const TYPES = 4;
const BATCHES = 2;
const H5T_ENUM = 8;

let dir: string;
let a: SimulateSummary;
let b: SimulateSummary;
let c: SimulateSummary;

function ds(f: H5File, p: string): H5Dataset {
  const d = f.get(p);
  if (!(d instanceof h5wasm.Dataset)) throw new Error(`no dataset ${p}`);
  return d;
}
function grp(f: H5File, p: string): H5Group {
  const g = f.get(p);
  if (!(g instanceof h5wasm.Group)) throw new Error(`no group ${p}`);
  return g;
}
function attr(o: H5Group | H5Dataset, name: string): unknown {
  return o.attrs[name]?.value;
}
function encoding(o: H5Group | H5Dataset): [unknown, unknown] {
  return [attr(o, "encoding-type"), attr(o, "encoding-version")];
}

interface Loaded {
  data: Float32Array;
  indices: Int32Array;
  indptr: number[];
  obsIndex: string[];
  type: Int8Array;
  batch: Int8Array;
  primary: Int8Array;
  totals: Float32Array;
  nGenes: Int32Array;
}

function load(p: string): Loaded {
  const f = new h5wasm.File(p, "r");
  try {
    return {
      data: ds(f, "X/data").value as Float32Array,
      indices: ds(f, "X/indices").value as Int32Array,
      indptr: Array.from(ds(f, "X/indptr").value as BigInt64Array, Number),
      obsIndex: ds(f, "obs/_index").value as string[],
      type: ds(f, "obs/cell_type/codes").value as Int8Array,
      batch: ds(f, "obs/batch/codes").value as Int8Array,
      primary: ds(f, "obs/is_primary_data").value as Int8Array,
      totals: ds(f, "obs/total_counts").value as Float32Array,
      nGenes: ds(f, "obs/n_genes_by_counts").value as Int32Array,
    };
  } finally {
    f.close();
  }
}

/** Per-gene mean counts over the given rows. */
function geneMeans(m: Loaded, rows: number[]): Float64Array {
  const out = new Float64Array(GENES);
  for (const r of rows) for (let k = m.indptr[r]; k < m.indptr[r + 1]; k++) out[m.indices[k]] += m.data[k];
  for (let g = 0; g < GENES; g++) out[g] /= Math.max(1, rows.length);
  return out;
}

/** Pseudo-bulk: each gene's share of all counts of the given rows. */
function pseudoBulk(m: Loaded, rows: number[]): Float64Array {
  const out = new Float64Array(GENES);
  let tot = 0;
  for (const r of rows) {
    for (let k = m.indptr[r]; k < m.indptr[r + 1]; k++) {
      out[m.indices[k]] += m.data[k];
      tot += m.data[k];
    }
  }
  for (let g = 0; g < GENES; g++) out[g] /= tot;
  return out;
}

beforeAll(async () => {
  await h5wasm.ready;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "gm-sim-"));
  const base = { cells: CELLS, genes: GENES, cellTypes: TYPES, batches: BATCHES };
  a = await simulate({ ...base, seed: 7, out: path.join(dir, "a.h5ad") });
  b = await simulate({ ...base, seed: 7, out: path.join(dir, "sub", "b.h5ad"), blockCells: 97 });
  c = await simulate({ ...base, seed: 8, out: path.join(dir, "c.h5ad") });
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("simulate: AnnData layout", () => {
  it("returns a summary consistent with the file", () => {
    expect(a.path).toBe(path.join(dir, "a.h5ad"));
    expect(a.cells).toBe(CELLS);
    expect(a.genes).toBe(GENES);
    const m = load(a.path);
    expect(a.nnz).toBe(m.data.length);
    expect(a.meanGenesPerCell).toBeCloseTo(a.nnz / CELLS, 9);
    expect(a.seconds).toBeGreaterThan(0);
    // no temporaries left next to the outputs
    expect(fs.readdirSync(dir).filter((n) => n.includes(".tmp-"))).toEqual([]);
  });

  it("has the root, dataframe, dict and CSR encodings anndata expects", () => {
    const f = new h5wasm.File(a.path, "r");
    try {
      expect(encoding(f as unknown as H5Group)).toEqual(["anndata", "0.1.0"]);
      expect(new Set(f.keys())).toEqual(new Set(["X", "obs", "var", "obsm", "varm", "obsp", "varp", "layers", "uns"]));
      for (const k of ["obsm", "varm", "obsp", "varp", "layers"]) {
        expect(encoding(grp(f, k))).toEqual(["dict", "0.1.0"]);
        expect(grp(f, k).keys()).toEqual([]);
      }
      expect(encoding(grp(f, "uns"))).toEqual(["dict", "0.1.0"]);
      for (const k of ["title", "schema_version"]) {
        const d = ds(f, `uns/${k}`);
        expect(encoding(d)).toEqual(["string", "0.2.0"]);
        expect(typeof d.value).toBe("string");
        expect(d.shape).toEqual([]);
      }

      // obs
      const obs = grp(f, "obs");
      expect(encoding(obs)).toEqual(["dataframe", "0.2.0"]);
      expect(attr(obs, "_index")).toBe("_index");
      const order = attr(obs, "column-order") as string[];
      for (const col of ["cell_type", "cell_type_ontology_term_id", "assay", "assay_ontology_term_id", "donor_id", "batch", "is_primary_data", "tissue", "suspension_type"]) {
        expect(order).toContain(col);
      }
      expect(new Set(obs.keys())).toEqual(new Set(["_index", ...order]));
      const idx = ds(f, "obs/_index");
      expect(encoding(idx)).toEqual(["string-array", "0.2.0"]);
      // variable-length UTF-8 strings, as h5py writes str
      expect(idx.metadata.vlen).toBe(true);
      expect(idx.metadata.cset).toBe(1);
      const barcodes = idx.value as string[];
      expect(barcodes).toHaveLength(CELLS);
      expect(new Set(barcodes).size).toBe(CELLS);
      for (const bc of barcodes) expect(bc).toMatch(/^[ACGT]{16}-[12]$/);

      const ct = grp(f, "obs/cell_type");
      expect(encoding(ct)).toEqual(["categorical", "0.2.0"]);
      const ordered = ct.attrs["ordered"];
      expect(ordered.metadata.type).toBe(H5T_ENUM);
      expect(ordered.json_value).toBe(false);
      const codes = ds(f, "obs/cell_type/codes");
      expect(encoding(codes)).toEqual(["array", "0.2.0"]);
      expect(codes.dtype).toBe("<b");
      const cats = ds(f, "obs/cell_type/categories");
      expect(encoding(cats)).toEqual(["string-array", "0.2.0"]);
      expect(cats.value).toEqual(["T cell", "B cell", "monocyte", "natural killer cell"]);
      expect(ds(f, "obs/cell_type_ontology_term_id/categories").value).toEqual(["CL:0000084", "CL:0000236", "CL:0000576", "CL:0000623"]);
      expect(ds(f, "obs/assay/categories").value).toEqual(["10x 3' v3"]);
      expect(ds(f, "obs/assay_ontology_term_id/categories").value).toEqual(["EFO:0009922"]);
      expect(ds(f, "obs/tissue/categories").value).toEqual(["blood"]);
      expect(ds(f, "obs/suspension_type/categories").value).toEqual(["cell"]);
      expect(ds(f, "obs/batch/categories").value).toEqual(["batch0", "batch1"]);
      expect(ds(f, "obs/donor_id/categories").value).toEqual(["donor_0", "donor_1", "donor_2", "donor_3"]);

      // bool as the h5py enum {FALSE: 0, TRUE: 1} over int8
      const prim = ds(f, "obs/is_primary_data");
      expect(encoding(prim)).toEqual(["array", "0.2.0"]);
      expect(prim.metadata.type).toBe(H5T_ENUM);
      expect(prim.metadata.size).toBe(1);
      expect(prim.metadata.enum_type?.members).toEqual({ FALSE: 0, TRUE: 1 });
      expect(new Set(prim.json_value as boolean[])).toEqual(new Set([true, false]));

      const tc = ds(f, "obs/total_counts");
      expect(encoding(tc)).toEqual(["array", "0.2.0"]);
      expect(tc.dtype).toBe("<f");
      expect(ds(f, "obs/n_genes_by_counts").dtype).toBe("<i");

      // var
      const v = grp(f, "var");
      expect(encoding(v)).toEqual(["dataframe", "0.2.0"]);
      expect(attr(v, "_index")).toBe("_index");
      expect(attr(v, "column-order")).toEqual(expect.arrayContaining(["feature_type", "feature_name", "feature_biotype"]));
      const ids = ds(f, "var/_index").value as string[];
      expect(ids).toHaveLength(GENES);
      expect(ids[0]).toBe("ENSG99900000001");
      for (const id of ids) expect(id).toMatch(/^ENSG999\d{8}$/);
      expect(new Set(ids).size).toBe(GENES);
      const ftCats = ds(f, "var/feature_type/categories").value as string[];
      const ft = ds(f, "var/feature_type/codes").value as Int8Array;
      const share = (name: string) => ft.filter((x) => x === ftCats.indexOf(name)).length / GENES;
      expect(share("protein_coding")).toBeGreaterThan(0.84);
      expect(share("protein_coding")).toBeLessThan(0.92);
      expect(share("lncRNA")).toBeGreaterThan(0.07);
      expect(share("miRNA")).toBeGreaterThan(0.005);
      expect(share("miRNA")).toBeLessThan(0.04);
      const fnCodes = ds(f, "var/feature_name/codes");
      expect(fnCodes.dtype).toBe("<h"); // int16: 2000 categories do not fit int8
      const fn = ds(f, "var/feature_name/categories").value as string[];
      expect(fn[(fnCodes.value as Int16Array)[0]]).toBe("SIMG00001");
      expect(ds(f, "var/feature_biotype/categories").value).toEqual(["gene"]);

      // X
      const X = grp(f, "X");
      expect(encoding(X)).toEqual(["csr_matrix", "0.1.0"]);
      const shape = X.attrs["shape"];
      expect(shape.dtype).toBe("<q");
      expect(Array.from(shape.value as BigInt64Array, Number)).toEqual([CELLS, GENES]);
      const data = ds(f, "X/data");
      const indices = ds(f, "X/indices");
      const indptr = ds(f, "X/indptr");
      expect(data.dtype).toBe("<f");
      expect(indices.dtype).toBe("<i");
      expect(indptr.dtype).toBe("<q");
      expect(indptr.shape).toEqual([CELLS + 1]);
      for (const d of [data, indices, indptr]) {
        expect(d.metadata.chunks).not.toBeNull();
        expect(d.metadata.maxshape?.[0]).toBeGreaterThan(2 ** 63); // H5S_UNLIMITED
      }
    } finally {
      f.close();
    }
  });
});

describe("simulate: determinism", () => {
  it("same seed gives identical X and obs whatever the block size", () => {
    const x = load(a.path);
    const y = load(b.path);
    expect(b.nnz).toBe(a.nnz);
    expect(Buffer.from(y.data.buffer).equals(Buffer.from(x.data.buffer))).toBe(true);
    expect(Buffer.from(y.indices.buffer).equals(Buffer.from(x.indices.buffer))).toBe(true);
    expect(y.indptr).toEqual(x.indptr);
    expect(y.obsIndex).toEqual(x.obsIndex);
    expect(Array.from(y.type)).toEqual(Array.from(x.type));
    expect(Array.from(y.batch)).toEqual(Array.from(x.batch));
    expect(Array.from(y.primary)).toEqual(Array.from(x.primary));
  });

  it("a different seed gives a different dataset", () => {
    const x = load(a.path);
    const z = load(c.path);
    expect(z.obsIndex).not.toEqual(x.obsIndex);
    expect(Array.from(z.type)).not.toEqual(Array.from(x.type));
    const n = Math.min(x.indices.length, z.indices.length, 5000);
    expect(Array.from(z.indices.subarray(0, n))).not.toEqual(Array.from(x.indices.subarray(0, n)));
  });
});

describe("simulate: counts", () => {
  it("stores non-negative integer counts, no explicit zeros, sorted in-range indices", () => {
    const m = load(a.path);
    expect(m.indptr[0]).toBe(0);
    expect(m.indptr[CELLS]).toBe(m.data.length);
    expect(m.indices.length).toBe(m.data.length);
    for (let r = 0; r < CELLS; r++) {
      expect(m.indptr[r + 1]).toBeGreaterThanOrEqual(m.indptr[r]);
      let prev = -1;
      let tot = 0;
      for (let k = m.indptr[r]; k < m.indptr[r + 1]; k++) {
        const g = m.indices[k];
        if (!(g > prev && g < GENES)) throw new Error(`row ${r}: bad index ${g} after ${prev}`);
        prev = g;
        const v = m.data[k];
        if (!(v >= 1 && Number.isInteger(v))) throw new Error(`row ${r}: bad count ${v}`);
        tot += v;
      }
      expect(m.totals[r]).toBe(tot);
      expect(m.nGenes[r]).toBe(m.indptr[r + 1] - m.indptr[r]);
    }
  });

  it("calibrates the mean number of expressed genes per cell", () => {
    const target = defaultGenesPerCell(GENES);
    expect(target).toBeGreaterThan(200);
    expect(target).toBeLessThan(600);
    for (const s of [a, c]) {
      expect(s.meanGenesPerCell).toBeGreaterThan(0.85 * target);
      expect(s.meanGenesPerCell).toBeLessThan(1.15 * target);
    }
    expect(defaultGenesPerCell(20000)).toBe(2000);
  });

  it("honours genesPerCellTarget", async () => {
    const s = await simulate({ cells: 300, genes: 1000, cellTypes: 2, batches: 1, seed: 3, genesPerCellTarget: 100, out: path.join(dir, "t.h5ad") });
    expect(s.meanGenesPerCell).toBeGreaterThan(85);
    expect(s.meanGenesPerCell).toBeLessThan(115);
  });
});

describe("simulate: biology", () => {
  it("cell types have distinct marker genes", () => {
    const m = load(a.path);
    const rowsOf = (t: number) => Array.from({ length: CELLS }, (_, r) => r).filter((r) => m.type[r] === t);
    const means = Array.from({ length: TYPES }, (_, t) => geneMeans(m, rowsOf(t)));
    let checked = 0;
    for (let t = 0; t < TYPES; t++) {
      if (rowsOf(t).length < 15) continue;
      checked++;
      let best = 0;
      for (let g = 0; g < GENES; g++) {
        let other = 0;
        for (let u = 0; u < TYPES; u++) if (u !== t && rowsOf(u).length >= 15) other = Math.max(other, means[u][g]);
        if (means[t][g] >= 1) best = Math.max(best, means[t][g] / Math.max(other, 0.05));
      }
      expect(best, `type ${t}`).toBeGreaterThan(5);
    }
    expect(checked).toBeGreaterThanOrEqual(2);
  });

  it("batches differ more than random halves of one batch", () => {
    const m = load(a.path);
    // compare batches within the most frequent cell type, so composition does not count
    const counts = new Array(TYPES).fill(0);
    for (const t of m.type) counts[t]++;
    const t0 = counts.indexOf(Math.max(...counts));
    const rows = (b: number) => Array.from({ length: CELLS }, (_, r) => r).filter((r) => m.type[r] === t0 && m.batch[r] === b);
    const r0 = rows(0);
    const r1 = rows(1);
    expect(r0.length).toBeGreaterThan(20);
    expect(r1.length).toBeGreaterThan(20);
    const n = Math.min(r0.length, r1.length);
    const half = Math.floor(n / 2);
    // pseudo-bulk log shares of well-expressed genes: batch 0 (half) vs batch 1, and two halves of batch 0
    const A = pseudoBulk(m, r0.slice(0, half));
    const A2 = pseudoBulk(m, r0.slice(half, 2 * half));
    const Bm = pseudoBulk(m, r1.slice(0, half));
    const mean = geneMeans(m, [...r0, ...r1]);
    let between = 0;
    let within = 0;
    let used = 0;
    for (let g = 0; g < GENES; g++) {
      if (mean[g] < 2) continue;
      used++;
      between += Math.abs(Math.log(A[g] + 1e-9) - Math.log(Bm[g] + 1e-9));
      within += Math.abs(Math.log(A[g] + 1e-9) - Math.log(A2[g] + 1e-9));
    }
    expect(used).toBeGreaterThan(50);
    expect(between).toBeGreaterThan(1.5 * within);
  });

  it("marks about 5% of cells as not primary data", () => {
    const m = load(a.path);
    const nonPrimary = m.primary.filter((x) => x === 0).length / CELLS;
    expect(nonPrimary).toBeGreaterThan(0.02);
    expect(nonPrimary).toBeLessThan(0.09);
  });

  it("draws each batch with two donors", () => {
    const f = new h5wasm.File(a.path, "r");
    try {
      const donor = ds(f, "obs/donor_id/codes").value as Int8Array;
      const batch = ds(f, "obs/batch/codes").value as Int8Array;
      for (let r = 0; r < CELLS; r++) expect(Math.floor(donor[r] / 2)).toBe(batch[r]);
      expect(new Set(donor).size).toBe(4);
    } finally {
      f.close();
    }
  });
});

describe("simulate: resources and errors", () => {
  it("writes X block by block with bounded memory", async () => {
    const cells = 30000;
    let baseline = -1;
    let peak = 0;
    const probe = () => {
      const u = process.memoryUsage();
      return u.heapUsed + u.arrayBuffers;
    };
    const s = await simulate({ cells, genes: GENES, cellTypes: TYPES, batches: BATCHES, seed: 11, blockCells: 1000, out: path.join(dir, "big.h5ad") }, (done) => {
      const v = probe();
      if (baseline < 0) baseline = v;
      peak = Math.max(peak, v);
      expect(done).toBeLessThanOrEqual(cells);
    });
    const matrixBytes = s.nnz * 8; // float32 data + int32 indices
    expect(matrixBytes).toBeGreaterThan(60e6);
    // growth after the first block stays far below the size of the matrix
    expect(peak - baseline).toBeLessThan(matrixBytes / 3);
  });

  it("rejects bad options with a usage error and leaves nothing behind on failure", async () => {
    await expect(simulate({ cells: 10, genes: 100, cellTypes: 2, batches: 1, seed: 1, out: path.join(dir, "x.txt") })).rejects.toThrow(/\.h5ad/);
    await expect(simulate({ cells: 0, genes: 100, cellTypes: 2, batches: 1, seed: 1, out: path.join(dir, "x.h5ad") })).rejects.toThrow(/cells/);
    await expect(simulate({ cells: 10, genes: 100, cellTypes: 2, batches: 1, seed: 1, genesPerCellTarget: 99, out: path.join(dir, "x.h5ad") })).rejects.toThrow(/genesPerCellTarget/);
    const failDir = path.join(dir, "fail");
    await expect(
      simulate({ cells: 50, genes: 100, cellTypes: 2, batches: 1, seed: 1, blockCells: 10, out: path.join(failDir, "x.h5ad") }, () => {
        throw new Error("stop here");
      }),
    ).rejects.toThrow("stop here");
    expect(fs.readdirSync(failDir)).toEqual([]);
  });
});

describe("h5ad writer", () => {
  it("writes int8 booleans, nullable booleans, numeric and empty dataframes", async () => {
    const p = path.join(dir, "w.h5ad");
    const w = await H5adWriter.create(p, { bools: "int8" });
    w.writeDataFrame("obs", {
      index: ["a", "b", "c"],
      columns: new Map([
        ["flag", { kind: "bool" as const, values: [true, false, true] }],
        ["maybe", { kind: "bool" as const, values: Uint8Array.of(1, 0, 0), mask: Uint8Array.of(0, 0, 1) }],
        ["x", { kind: "number" as const, values: Float64Array.of(1.5, 2.5, -1) }],
        ["s", { kind: "string" as const, values: ["é", "", "z"] }],
        ["big", { kind: "categorical" as const, codes: [0, 299, -1], categories: Array.from({ length: 300 }, (_, i) => `c${i}`), ordered: true }],
      ]),
    });
    w.writeDataFrame("var", { index: ["g0", "g1"], columns: new Map() });
    const X = w.csr("X", { nCols: 2, chunkElements: 1024 });
    X.appendRows([0, 1, 1], Int32Array.of(1), Float32Array.of(3));
    expect(() => X.appendRows([0, 2], Int32Array.of(1, 0), Float32Array.of(1, 1))).toThrow(/increasing/);
    expect(() => X.appendRows([0, 1], Int32Array.of(2), Float32Array.of(1))).toThrow(/outside/);
    X.appendRows([4, 6], Int32Array.of(9, 9, 9, 9, 0, 1), Float32Array.of(0, 0, 0, 0, 5, 6));
    expect(X.finish()).toEqual({ rows: 3, cols: 2, nnz: 3 });
    w.close();

    const f = new h5wasm.File(p, "r");
    try {
      const flag = ds(f, "obs/flag");
      expect(flag.dtype).toBe("<b");
      expect(Array.from(flag.value as Int8Array)).toEqual([1, 0, 1]);
      expect(encoding(grp(f, "obs/maybe"))).toEqual(["nullable-boolean", "0.1.0"]);
      expect(Array.from(ds(f, "obs/maybe/mask").value as Int8Array)).toEqual([0, 0, 1]);
      expect(Array.from(ds(f, "obs/x").value as Float64Array)).toEqual([1.5, 2.5, -1]);
      expect(ds(f, "obs/s").value).toEqual(["é", "", "z"]);
      expect(ds(f, "obs/big/codes").dtype).toBe("<h");
      expect(Array.from(ds(f, "obs/big/codes").value as Int16Array)).toEqual([0, 299, -1]);
      expect(grp(f, "obs/big").attrs["ordered"].value).toBe(1);
      expect(attr(grp(f, "obs"), "column-order")).toEqual(["flag", "maybe", "x", "s", "big"]);
      // an empty column list is an empty float64 array, as h5py writes []
      const co = attr(grp(f, "var"), "column-order") as Float64Array;
      expect(co).toBeInstanceOf(Float64Array);
      expect(co.length).toBe(0);
      expect(Array.from(ds(f, "X/indptr").value as BigInt64Array, Number)).toEqual([0, 1, 1, 3]);
      expect(Array.from(ds(f, "X/indices").value as Int32Array)).toEqual([1, 0, 1]);
      expect(Array.from(ds(f, "X/data").value as Float32Array)).toEqual([3, 5, 6]);
    } finally {
      f.close();
    }
  });

  it("writes enum booleans in datasets, nullable groups and attributes", async () => {
    const p = path.join(dir, "e.h5ad");
    const w = await H5adWriter.create(p);
    w.writeDataFrame("obs", {
      index: ["a", "b"],
      columns: [
        ["flag", { kind: "bool", values: Uint8Array.of(0, 1) }],
        ["maybe", { kind: "bool", values: Uint8Array.of(1, 0), mask: Uint8Array.of(1, 0) }],
        ["cat", { kind: "categorical", codes: Int32Array.of(0, 0), categories: ["x"], ordered: true }],
      ],
    });
    w.close();
    const f = new h5wasm.File(p, "r");
    try {
      for (const q of ["obs/flag", "obs/maybe/values", "obs/maybe/mask"]) {
        expect(ds(f, q).metadata.type).toBe(H5T_ENUM);
        expect(ds(f, q).metadata.enum_type?.members).toEqual({ FALSE: 0, TRUE: 1 });
      }
      expect(ds(f, "obs/flag").json_value).toEqual([false, true]);
      expect(ds(f, "obs/maybe/mask").json_value).toEqual([true, false]);
      const ordered = grp(f, "obs/cat").attrs["ordered"];
      expect(ordered.metadata.type).toBe(H5T_ENUM);
      expect(ordered.json_value).toBe(true);
    } finally {
      f.close();
    }
  });
});
