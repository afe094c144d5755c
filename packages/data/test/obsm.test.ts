/**
 * obsm in h5ad files: entries added to copies of real files (anndata >= 0.8 and the legacy 0.7
 * encoding) leave everything else readable and unchanged, read back exactly, replace an existing key
 * in place, and never leave a half-written output; a stand-alone embedding file reads back. Where
 * python3 with h5py is installed, h5py checks shapes, dtypes and encoding attributes independently.
 */
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { addObsmToH5ad, openCellFile, readObsm, writeEmbeddingH5ad, type CellFile } from "@gm/data";
import { hasShared, shared, tmpDir } from "../../../tests/helpers/paths.js";

const PBMC = shared("h5ad/pbmc68k_reduced_counts.h5ad");
const LEGACY_10K = shared("h5ad/pbmc_10k_protein_v3_legacy.h5ad");
const LEGACY_5K = shared("h5ad/pbmc_5k_protein_v3_legacy.h5ad");

const PYTHON = "/usr/bin/python3";
const hasPython = (mod: string) => fs.existsSync(PYTHON) && spawnSync(PYTHON, ["-c", `import ${mod}`], { stdio: "ignore" }).status === 0;
const hasH5py = hasPython("h5py");
/** anndata itself, when installed (e.g. Debian's python3-anndata): the reader that matters most. */
const hasAnndata = hasPython("anndata");

/** Run a python snippet with h5py; it prints one JSON value. */
function py(script: string, ...args: string[]): unknown {
  const r = spawnSync(PYTHON, ["-c", script, ...args], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** A deterministic n x k embedding with distinct, non-integer values. */
function embedding(n: number, k: number, seed: number): Float32Array {
  return Float32Array.from({ length: n * k }, (_, i) => Math.sin(seed + i * 0.37) * 10 + i / 1000);
}

function allRows(f: CellFile, loc: string) {
  const b = f.matrix(loc).readBlock(0, f.nCells);
  return { indptr: Array.from(b.indptr), indices: Array.from(b.indices), data: Array.from(b.data) };
}

/** Everything of a file readable through gm's reader that an obsm edit must not change. */
async function snapshot(file: string, counts: string) {
  const f = await openCellFile(file);
  try {
    const cols = f.obsColumns();
    return { nCells: f.nCells, cols, obs: f.readObs(cols, 0, f.nCells), var: f.var, matrices: f.matrixLocations(), counts: allRows(f, counts) };
  } finally {
    f.close();
  }
}

/** h5py: every dataset and attribute outside the given obsm keys is identical in a and b. */
const SAME_EXCEPT = `
import h5py, json, sys, numpy as np
a, b, skip = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r"), set(sys.argv[3].split(","))
bad = []
def same(u, v):
    # object references (legacy categoricals) compare by what they point to; NaN equals NaN
    if isinstance(u, h5py.Reference): return isinstance(v, h5py.Reference) and a[u].name == b[v].name
    u, v = np.asarray(u), np.asarray(v)
    return u.dtype == v.dtype and np.array_equal(u, v, equal_nan=u.dtype.kind in "fc")
def attrs_equal(x, y):
    return set(x.attrs) == set(y.attrs) and all(same(x.attrs[k], y.attrs[k]) for k in x.attrs)
def visit(name, obj):
    if name in skip: return
    other = b.get(name)
    if other is None or type(other) is not type(obj) or not attrs_equal(obj, other): bad.append(name); return
    if isinstance(obj, h5py.Dataset) and (obj.shape != other.shape or not same(obj[()], other[()])): bad.append(name)
a.visititems(visit)
if not attrs_equal(a, b): bad.append("/")
print(json.dumps(bad))
`;

const DESCRIBE = `
import h5py, json, sys
f = h5py.File(sys.argv[1], "r")
def enc(o): return {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in o.attrs.items()}
out = {"root": enc(f), "keys": sorted(f.keys())}
for p in sys.argv[2:]:
    o = f[p]
    d = {"attrs": enc(o)}
    if isinstance(o, h5py.Dataset): d.update(shape=list(o.shape), dtype=str(o.dtype))
    out[p] = d
print(json.dumps(out))
`;

describe.skipIf(!hasShared)("obsm on real h5ad files", () => {
  const dir = tmpDir("gm-obsm-");

  it("adds obsm to pbmc68k_reduced_counts (anndata >= 0.8): counts and obs unchanged, values exact, X_pca replaced in place", async () => {
    const out = path.join(dir, "pbmc-emb.h5ad");
    const gm = embedding(700, 16, 1);
    const pca = embedding(700, 50, 2);
    const before = await snapshot(PBMC, "layers/counts");
    const umapBefore = await readObsm(PBMC, "X_umap");
    const r = await addObsmToH5ad(PBMC, out, [
      { key: "X_gm", data: gm, nCols: 16 },
      { key: "X_pca", data: pca, nCols: 50 },
    ]);
    expect(r).toMatchObject({ nObs: 700, added: ["X_gm"], replaced: ["X_pca"], modernEncoding: true });
    expect(await snapshot(out, "layers/counts")).toEqual(before);
    const back = await readObsm(out, "X_gm");
    expect(back).toMatchObject({ nRows: 700, nCols: 16, dtype: "float32" });
    expect(back.data).toEqual(gm);
    expect((await readObsm(out, "X_pca")).data).toEqual(pca);
    expect(await readObsm(out, "X_umap")).toEqual(umapBefore);
    expect(umapBefore.dtype).toBe("float64");
    // no temporary left beside the output
    expect(fs.readdirSync(dir).filter((n) => n.includes(".tmp-"))).toEqual([]);

    if (hasH5py) {
      const d = py(DESCRIBE, out, "obsm", "obsm/X_gm", "obsm/X_pca") as Record<string, { attrs: Record<string, string>; shape?: number[]; dtype?: string }>;
      expect(d["obsm"].attrs).toEqual({ "encoding-type": "dict", "encoding-version": "0.1.0" });
      expect(d["obsm/X_gm"]).toEqual({ attrs: { "encoding-type": "array", "encoding-version": "0.2.0" }, shape: [700, 16], dtype: "float32" });
      expect(d["obsm/X_pca"]).toMatchObject({ shape: [700, 50], dtype: "float32" });
      const values = py(`import h5py, json, sys; print(json.dumps(h5py.File(sys.argv[1], "r")["obsm/X_gm"][3].tolist()))`, out) as number[];
      expect(Float32Array.from(values)).toEqual(gm.subarray(3 * 16, 4 * 16));
      expect(py(SAME_EXCEPT, PBMC, out, "obsm/X_gm,obsm/X_pca")).toEqual([]);
    }
  });

  it("adds obsm to a legacy AnnData 0.7 file without adding encoding attributes; output may be the input", async () => {
    const copy = path.join(dir, "legacy.h5ad");
    fs.copyFileSync(LEGACY_10K, copy);
    const before = await snapshot(LEGACY_10K, "X");
    const protein = await readObsm(LEGACY_10K, "protein_expression");
    expect(protein).toMatchObject({ nRows: 200, nCols: 14, dtype: "int64" });
    const gm = embedding(200, 8, 3);
    const r = await addObsmToH5ad(copy, copy, [{ key: "X_gm", data: gm, nCols: 8 }]);
    expect(r).toMatchObject({ nObs: 200, added: ["X_gm"], replaced: [], modernEncoding: false });
    expect(await snapshot(copy, "X")).toEqual(before);
    expect((await readObsm(copy, "X_gm")).data).toEqual(gm);
    expect(await readObsm(copy, "protein_expression")).toEqual(protein);

    if (hasH5py) {
      const d = py(DESCRIBE, copy, "obsm", "obsm/X_gm") as Record<string, { attrs: Record<string, string>; shape?: number[]; dtype?: string }>;
      expect(d.root).toEqual({});
      expect(d["obsm"].attrs).toEqual({});
      expect(d["obsm/X_gm"]).toEqual({ attrs: {}, shape: [200, 8], dtype: "float32" });
      expect(py(SAME_EXCEPT, LEGACY_10K, copy, "obsm/X_gm")).toEqual([]);
    }
  });

  it("replaces a float64 entry of the same shape in place, keeping float64", async () => {
    const out = path.join(dir, "pbmc-umap.h5ad");
    const umap = embedding(700, 2, 6);
    expect(await addObsmToH5ad(PBMC, out, [{ key: "X_umap", data: umap, nCols: 2 }])).toMatchObject({ added: [], replaced: ["X_umap"] });
    const back = await readObsm(out, "X_umap");
    expect(back).toMatchObject({ nRows: 700, nCols: 2, dtype: "float64" });
    expect(back.data).toEqual(umap);
  });

  it.skipIf(!hasAnndata)("anndata reads every kind of file written here", async () => {
    const modern = path.join(dir, "ad-modern.h5ad");
    const legacy = path.join(dir, "ad-legacy.h5ad");
    const combined = path.join(dir, "ad-combined.h5ad");
    const withX = path.join(dir, "ad-combined-x.h5ad");
    await addObsmToH5ad(PBMC, modern, [{ key: "X_gm", data: embedding(700, 16, 1), nCols: 16 }]);
    await addObsmToH5ad(LEGACY_10K, legacy, [{ key: "X_gm", data: embedding(200, 8, 1), nCols: 8 }]);
    const content = { obsNames: ["c0", "c1", "c2"], obs: { batch: ["a", null, "a"], id: ["x", "y", "z"] }, obsm: [{ key: "X_gm", data: embedding(3, 4, 1), nCols: 4 }] };
    await writeEmbeddingH5ad(combined, content);
    await writeEmbeddingH5ad(withX, content, { emptyX: true });
    const script = `
import json, sys, warnings
warnings.simplefilter("ignore")
import anndata
out = []
for f in sys.argv[1:]:
    a = anndata.read_h5ad(f)
    out.append({"shape": list(a.shape), "x": None if a.X is None else type(a.X).__name__, "obsm": {k: [list(v.shape), str(v.dtype)] for k, v in a.obsm.items()},
                "obs": {c: [None if v != v else v for v in a.obs[c].tolist()] for c in a.obs.columns} if a.n_vars == 0 else list(a.obs.columns)[:1],
                "first": [float(x) for x in a.obsm["X_gm"][0][:2]]})
print(json.dumps(out))
`;
    const [m, l, c, x] = py(script, modern, legacy, combined, withX) as { shape: number[]; x: string | null; obsm: Record<string, [number[], string]>; obs: unknown; first: number[] }[];
    expect(m).toMatchObject({ shape: [700, 765], x: "ndarray", obsm: { X_gm: [[700, 16], "float32"], X_pca: [[700, 50], "float32"], X_umap: [[700, 2], "float64"] }, obs: ["bulk_labels"] });
    expect(m.first).toEqual(Array.from(embedding(1, 2, 1)));
    expect(l).toMatchObject({ shape: [200, 16727], x: "ndarray", obsm: { X_gm: [[200, 8], "float32"], protein_expression: [[200, 14], "int64"] } });
    expect(c).toMatchObject({ shape: [3, 0], x: null, obsm: { X_gm: [[3, 4], "float32"] }, obs: { batch: ["a", null, "a"], id: ["x", "y", "z"] } });
    expect(x).toMatchObject({ shape: [3, 0], x: "csr_matrix" });
  });

  it("creates obsm when the file has none (anndata >= 0.8 encoding attributes on the new group)", async () => {
    // a gm-written file without obsm
    const base = path.join(dir, "no-obsm.h5ad");
    await writeEmbeddingH5ad(base, { obsNames: ["a", "b", "c"], obsm: [] });
    const out = path.join(dir, "no-obsm-added.h5ad");
    await addObsmToH5ad(base, out, [{ key: "X_gm", data: embedding(3, 4, 9), nCols: 4 }]);
    expect((await readObsm(out, "X_gm")).data).toEqual(embedding(3, 4, 9));
    if (hasH5py) {
      const d = py(DESCRIBE, out, "obsm", "obsm/X_gm") as Record<string, { attrs: Record<string, string> }>;
      expect(d["obsm"].attrs).toEqual({ "encoding-type": "dict", "encoding-version": "0.1.0" });
      expect(d["obsm/X_gm"].attrs).toEqual({ "encoding-type": "array", "encoding-version": "0.2.0" });
    }
  });

  it("refuses a wrong row count, an incompatible replacement and missing keys, leaving no output behind", async () => {
    const sub = path.join(dir, "errors");
    fs.mkdirSync(sub);
    const out = path.join(sub, "out.h5ad");
    await expect(addObsmToH5ad(PBMC, out, [{ key: "X_gm", data: embedding(699, 4, 0), nCols: 4 }])).rejects.toThrow(/obsm 'X_gm' has 699 rows but the file has 700 cells \(n_obs\)/);
    // X_umap is 700 x 2 float64: a 700 x 3 replacement cannot be written in place
    await expect(addObsmToH5ad(PBMC, out, [{ key: "X_umap", data: embedding(700, 3, 0), nCols: 3 }])).rejects.toThrow(/obsm\/X_umap already exists as a 700 x 2 float64 dataset; .*use another key/);
    await expect(addObsmToH5ad(PBMC, out, [{ key: "a/b", data: embedding(700, 1, 0), nCols: 1 }])).rejects.toThrow(/not a valid name/);
    expect(fs.readdirSync(sub)).toEqual([]);
    // an existing output is left untouched by a failed write
    fs.writeFileSync(out, "previous");
    await expect(addObsmToH5ad(PBMC, out, [{ key: "X_umap", data: embedding(700, 3, 0), nCols: 3 }])).rejects.toThrow(/already exists/);
    expect(fs.readFileSync(out, "utf8")).toBe("previous");
    expect(fs.readdirSync(sub)).toEqual(["out.h5ad"]);
    await expect(readObsm(PBMC, "X_nope")).rejects.toThrow(/has no obsm 'X_nope' \(available: X_pca, X_umap\)/);
    await expect(readObsm(shared("h5ad/multiome_subset_100_100_legacy.h5ad"), "X_pca")).rejects.toThrow(/available: none/);
    await expect(addObsmToH5ad(path.join(sub, "missing.h5ad"), out, [{ key: "X", data: new Float32Array(1), nCols: 1 }])).rejects.toThrow(/missing\.h5ad: file not found/);
  });

  it("writes a combined embedding file from two inputs that reads back (obs, empty var, obsm; X omitted or empty)", async () => {
    const names: string[] = [];
    const batch: string[] = [];
    for (const [file, label] of [
      [LEGACY_5K, "pbmc_5k"],
      [LEGACY_10K, "pbmc_10k"],
    ] as const) {
      const f = await openCellFile(file);
      try {
        for (const n of f.readObs([], 0, f.nCells).index) {
          names.push(`${label}:${n}`);
          batch.push(label);
        }
      } finally {
        f.close();
      }
    }
    const n = names.length;
    expect(n).toBe(400);
    const note = names.map((_, i) => (i % 7 === 0 ? null : `n${i % 3}`));
    const gm = embedding(n, 12, 4);
    const umap = embedding(n, 2, 5);
    const obs = { batch, barcode: names.map((s) => s.split(":")[1] + ":" + s.split(":")[0]), note };
    for (const emptyX of [false, true]) {
      const out = path.join(dir, `combined-${emptyX ? "x" : "nox"}.h5ad`);
      const r = await writeEmbeddingH5ad(out, { obsNames: names, obs, obsm: [{ key: "X_gm", data: gm, nCols: 12 }, { key: "X_umap", data: umap, nCols: 2 }] }, { emptyX });
      expect(r).toMatchObject({ nObs: 400, obsm: ["X_gm", "X_umap"] });
      const f = await openCellFile(out);
      try {
        expect(f.nCells).toBe(400);
        expect(f.var.index).toEqual([]);
        expect(f.obsColumns()).toEqual(["batch", "barcode", "note"]);
        const df = f.readObs(f.obsColumns(), 0, n);
        expect(df.index).toEqual(names);
        expect(df.columns.get("batch")).toEqual({ kind: "categorical", codes: Int32Array.from(batch, (b) => (b === "pbmc_10k" ? 0 : 1)), categories: ["pbmc_10k", "pbmc_5k"] });
        expect(df.columns.get("barcode")).toEqual({ kind: "string", values: obs.barcode });
        const noteCol = df.columns.get("note")!;
        expect(noteCol.kind).toBe("categorical");
        if (noteCol.kind === "categorical") expect(Array.from(noteCol.codes, (c) => (c < 0 ? null : noteCol.categories[c]))).toEqual(note);
        expect(f.matrixLocations()).toEqual(emptyX ? ["X"] : []);
        if (emptyX) expect(f.matrix("X").readBlock(0, n).indices.length).toBe(0);
      } finally {
        f.close();
      }
      expect((await readObsm(out, "X_gm")).data).toEqual(gm);
      expect((await readObsm(out, "X_umap")).data).toEqual(umap);
      if (hasH5py) {
        const d = py(DESCRIBE, out, "obs", "var", "var/_index", "obs/batch", "obsm/X_gm", ...(emptyX ? ["X"] : [])) as Record<string, { attrs: Record<string, string>; shape?: number[]; dtype?: string }> & { root: Record<string, string>; keys: string[] };
        expect(d.root).toEqual({ "encoding-type": "anndata", "encoding-version": "0.1.0" });
        expect(d.keys).toEqual([...(emptyX ? ["X"] : []), "layers", "obs", "obsm", "obsp", "uns", "var", "varm", "varp"]);
        expect(d["var/_index"]).toMatchObject({ shape: [0] });
        expect(d["obs/batch"].attrs).toEqual({ "encoding-type": "categorical", "encoding-version": "0.2.0", ordered: "False" });
        expect(d["obsm/X_gm"]).toEqual({ attrs: { "encoding-type": "array", "encoding-version": "0.2.0" }, shape: [400, 12], dtype: "float32" });
        if (emptyX) expect(d["X"].attrs).toMatchObject({ "encoding-type": "csr_matrix", shape: "[400   0]" });
        // h5py reads the bool 'ordered' attribute as a numpy bool, as anndata writes it
        expect(py(`import h5py, json, sys, numpy as np; print(json.dumps(isinstance(h5py.File(sys.argv[1], "r")["obs/batch"].attrs["ordered"], (bool, np.bool_))))`, out)).toBe(true);
      }
    }
    await expect(writeEmbeddingH5ad(path.join(dir, "bad.h5ad"), { obsNames: names, obs: { batch: batch.slice(1) }, obsm: [] })).rejects.toThrow(/obs column 'batch' has 399 values but there are 400 obs names/);
    await expect(writeEmbeddingH5ad(path.join(dir, "bad.h5ad"), { obsNames: names, obsm: [{ key: "X_gm", data: gm.subarray(12), nCols: 12 }] })).rejects.toThrow(/399 rows but the file has 400 cells/);
    expect(fs.existsSync(path.join(dir, "bad.h5ad"))).toBe(false);
  });
});
