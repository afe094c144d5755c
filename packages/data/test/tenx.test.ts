import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import h5wasm from "h5wasm/node";
import { isGmError } from "@gm/core";
import { openTenxH5, openTenxMex, isTenxMexDir, type CellFile, type CsrBlock } from "@gm/data";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const tenxDir = path.resolve(repoRoot, "../shared/data/tenx");
const mexDir = path.join(tenxDir, "filtered_feature_bc_matrix");
const h5File = path.join(tenxDir, "filtered_feature_bc_matrix.h5");
const haveShared = fs.existsSync(mexDir) && fs.existsSync(h5File);
if (!haveShared) console.warn(`tenx.test: ${tenxDir} not found; skipping the tests on real Cell Ranger output`);

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gm-tenx-"));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Rows [start, end) as a dense cells x genes array, straight from the blocks. */
function readAll(f: CellFile, blockSize: number): { indptr: number[]; indices: number[]; data: number[] } {
  const m = f.matrix("matrix");
  const out = { indptr: [0], indices: [] as number[], data: [] as number[] };
  for (let s = 0; s < m.nCells; s += blockSize) {
    const e = Math.min(m.nCells, s + blockSize);
    const b = m.readBlock(s, e);
    checkBlock(b, s, e, m.nGenes);
    const base = out.indices.length;
    for (let i = 1; i <= b.nRows; i++) out.indptr.push(base + b.indptr[i]);
    out.indices.push(...b.indices);
    out.data.push(...b.data);
  }
  return out;
}

function checkBlock(b: CsrBlock, start: number, end: number, nGenes: number): void {
  expect(b.rowStart).toBe(start);
  expect(b.nRows).toBe(end - start);
  expect(b.indptr).toBeInstanceOf(Int32Array);
  expect(b.indices).toBeInstanceOf(Int32Array);
  expect(b.data).toBeInstanceOf(Float32Array);
  expect(b.indptr.length).toBe(end - start + 1);
  expect(b.indptr[0]).toBe(0);
  expect(b.indptr[end - start]).toBe(b.indices.length);
  expect(b.data.length).toBe(b.indices.length);
  let bad = "";
  for (let r = 0; r < b.nRows && !bad; r++) {
    for (let k = b.indptr[r]; k < b.indptr[r + 1]; k++) {
      const g = b.indices[k];
      if (g < 0 || g >= nGenes || (k > b.indptr[r] && g <= b.indices[k - 1])) {
        bad = `row ${start + r}: gene ${g} at ${k} out of range or not ascending`;
        break;
      }
    }
  }
  expect(bad).toBe("");
}

/** Independent reference: parse a MatrixMarket text naively into a dense cells x genes matrix. */
function denseFromMtx(text: string): number[][] {
  const lines = text.split("\n").filter((l) => l && !l.startsWith("%"));
  const [nr, nc] = lines[0].trim().split(/\s+/).map(Number);
  const dense = Array.from({ length: nc }, () => new Array<number>(nr).fill(0));
  for (const l of lines.slice(1)) {
    const [r, c, v] = l.trim().split(/\s+/).map(Number);
    dense[c - 1][r - 1] += v;
  }
  return dense;
}

function denseFromFile(f: CellFile): number[][] {
  const m = f.matrix("matrix");
  const b = m.readBlock(0, m.nCells);
  const dense = Array.from({ length: m.nCells }, () => new Array<number>(m.nGenes).fill(0));
  for (let r = 0; r < m.nCells; r++) for (let k = b.indptr[r]; k < b.indptr[r + 1]; k++) dense[r][b.indices[k]] = b.data[k];
  return dense;
}

async function expectInputError(p: Promise<unknown>, ...parts: (string | RegExp)[]): Promise<string> {
  let err: unknown;
  try {
    const f = await p;
    (f as CellFile | undefined)?.close?.();
  } catch (e) {
    err = e;
  }
  expect(err, "expected a GmError").toBeDefined();
  expect(isGmError(err), `not a GmError: ${String(err)}`).toBe(true);
  const msg = (err as Error).message;
  if (process.env.GM_SHOW_ERRORS) console.log(msg);
  expect(msg.split("\n")).toHaveLength(1);
  for (const part of parts) {
    if (typeof part === "string") expect(msg).toContain(part);
    else expect(msg).toMatch(part);
  }
  return msg;
}

// ---------- small fixtures written at test time ----------

const FEATURES = [
  ["ENSG00000000003", "TSPAN6", "Gene Expression"],
  ["ENSG00000000005", "TNMD", "Gene Expression"],
  ["ENSG00000000419", "DPM1", "Gene Expression"],
  ["CD3_TotalSeqB", "CD3", "Antibody Capture"],
];
const BARCODES = ["AAAC-1", "AAAG-1", "AACT-1", "ACGT-1", "TTTT-1"];
// cells x genes; entries deliberately listed out of order below
const DENSE = [
  [0, 3, 0, 7],
  [1, 0, 0, 0],
  [0, 0, 0, 0],
  [2, 5, 4, 1],
  [0, 0, 9, 0],
];

function mtxText(opts: { header?: string; size?: string; extra?: string[]; drop?: number; real?: boolean } = {}): string {
  const entries: string[] = [];
  // gene-major, descending barcode: not the cell order the reader needs
  for (let g = DENSE[0].length - 1; g >= 0; g--) {
    for (let c = DENSE.length - 1; c >= 0; c--) {
      const v = DENSE[c][g];
      if (v) entries.push(`${g + 1} ${c + 1} ${opts.real ? `${v}.0` : v}`);
    }
  }
  const kept = entries.slice(0, entries.length - (opts.drop ?? 0)).concat(opts.extra ?? []);
  return [
    opts.header ?? `%%MatrixMarket matrix coordinate ${opts.real ? "real" : "integer"} general`,
    "%metadata_json: {}",
    opts.size ?? `${FEATURES.length} ${BARCODES.length} ${entries.length + (opts.extra?.length ?? 0)}`,
    ...kept,
    "",
  ].join("\n");
}

function writeMex(
  name: string,
  opts: {
    gzip?: boolean;
    matrix?: string | Buffer;
    features?: string[][];
    barcodes?: string[] | null;
    featuresFile?: string;
    prefix?: string;
  } = {},
): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const gz = opts.gzip ?? true;
  const ext = gz ? ".gz" : "";
  const put = (file: string, content: string | Buffer) =>
    fs.writeFileSync(path.join(dir, (opts.prefix ?? "") + file + ext), gz && typeof content === "string" ? zlib.gzipSync(content) : content);
  put("matrix.mtx", opts.matrix ?? mtxText());
  put(opts.featuresFile ?? "features.tsv", (opts.features ?? FEATURES).map((f) => f.join("\t")).join("\n") + "\n");
  if (opts.barcodes !== null) put("barcodes.tsv", (opts.barcodes ?? BARCODES).join("\n") + "\n");
  return dir;
}

describe("10x MEX reader (generated fixtures)", () => {
  it("reads a gzipped MEX folder with out-of-order entries into sorted CSR by cell", async () => {
    const dir = writeMex("ok-gz");
    expect(isTenxMexDir(dir)).toBe(true);
    const f = await openTenxMex(dir);
    expect(f.format).toBe("10x-mex");
    expect(f.nCells).toBe(5);
    expect(f.obsColumns()).toEqual([]);
    expect(f.matrixLocations()).toEqual(["matrix"]);
    expect(f.readObs([], 0, 5).index).toEqual(BARCODES);
    expect(f.readObs([], 1, 3).index).toEqual(BARCODES.slice(1, 3));
    expect(f.var.index).toEqual(FEATURES.map((x) => x[0]));
    expect(f.var.columns.get("feature_name")).toEqual({ kind: "string", values: FEATURES.map((x) => x[1]) });
    const ft = f.var.columns.get("feature_type");
    expect(ft?.kind).toBe("categorical");
    if (ft?.kind === "categorical") expect(Array.from(ft.codes, (c) => ft.categories[c])).toEqual(FEATURES.map((x) => x[2]));
    expect(f.var.columns.has("genome")).toBe(false);
    expect(f.varFor("matrix")).toBe(f.var);
    const m = f.matrix("matrix");
    expect(m.layout).toBe("mex");
    expect([m.nCells, m.nGenes]).toEqual([5, 4]);
    expect(denseFromFile(f)).toEqual(DENSE);
    for (const bs of [1, 2, 3, 5]) {
      const all = readAll(f, bs);
      expect(all).toEqual(readAll(f, 5));
    }
    const empty = m.readBlock(2, 3);
    expect(Array.from(empty.indptr)).toEqual([0, 0]);
    const none = m.readBlock(5, 5);
    expect(none.nRows).toBe(0);
    expect(() => m.readBlock(4, 6)).toThrow(RangeError);
    await expectInputError(Promise.resolve().then(() => f.readObs(["cell_type"], 0, 1)), dir, "cell_type");
    await expectInputError(Promise.resolve().then(() => f.matrix("X")), dir, '"X"');
    f.close();
  });

  it("reads plain-text Cell Ranger 2 files (genes.tsv, two columns), real values and the matrix path itself", async () => {
    const dir = writeMex("ok-plain-cr2", {
      gzip: false,
      matrix: mtxText({ real: true }),
      featuresFile: "genes.tsv",
      features: FEATURES.map((x) => x.slice(0, 2)),
    });
    expect(isTenxMexDir(dir)).toBe(true);
    for (const p of [dir, path.join(dir, "matrix.mtx")]) {
      const f = await openTenxMex(p);
      expect(denseFromFile(f)).toEqual(DENSE);
      const ft = f.var.columns.get("feature_type");
      expect(ft?.kind === "categorical" && ft.categories).toEqual(["Gene Expression"]);
      f.close();
    }
  });

  it("reads prefixed (GEO-style) file names", async () => {
    const dir = writeMex("ok-prefixed", { prefix: "GSM0001_" });
    expect(isTenxMexDir(dir)).toBe(true);
    const f = await openTenxMex(dir);
    expect(denseFromFile(f)).toEqual(DENSE);
    f.close();
  });

  it("isTenxMexDir is false for files, missing paths and folders without a matrix", () => {
    expect(isTenxMexDir(path.join(tmp, "does-not-exist"))).toBe(false);
    const d = path.join(tmp, "not-mex");
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(d, "barcodes.tsv"), "A\n");
    expect(isTenxMexDir(d)).toBe(false);
    expect(isTenxMexDir(path.join(d, "barcodes.tsv"))).toBe(false);
  });

  it("truncated gzip -> GmError naming matrix.mtx.gz", async () => {
    // enough entries that the cut lands inside the deflate stream
    const lines = ["%%MatrixMarket matrix coordinate integer general", `4 5 20`];
    let text = lines.join("\n") + "\n";
    for (let i = 0; i < 20; i++) text += `${(i % 4) + 1} ${(i % 5) + 1} ${i * 7919}\n`;
    const gz = zlib.gzipSync(text);
    const dir = writeMex("truncated-gz", { matrix: gz.subarray(0, gz.length - 12) });
    await expectInputError(openTenxMex(dir), path.join(dir, "matrix.mtx.gz"), /truncated/);
  });

  it("corrupt gzip -> GmError naming the file", async () => {
    const gz = Buffer.from(zlib.gzipSync(mtxText()));
    for (let i = 20; i < gz.length - 8; i += 3) gz[i] ^= 0x5a;
    const dir = writeMex("corrupt-gz", { matrix: gz });
    await expectInputError(openTenxMex(dir), path.join(dir, "matrix.mtx.gz"));
  });

  it("truncated barcodes.tsv.gz -> GmError naming it", async () => {
    const dir = writeMex("truncated-barcodes");
    const gz = zlib.gzipSync(BARCODES.join("\n") + "\n");
    fs.writeFileSync(path.join(dir, "barcodes.tsv.gz"), gz.subarray(0, gz.length - 4));
    await expectInputError(openTenxMex(dir), path.join(dir, "barcodes.tsv.gz"), /truncated/);
  });

  it("wrong header -> GmError naming the file and the expected header", async () => {
    const dir = writeMex("bad-header", { matrix: mtxText({ header: "%%MatrixMarket matrix array real general" }) });
    await expectInputError(openTenxMex(dir), path.join(dir, "matrix.mtx.gz"), "line 1", "%%MatrixMarket matrix coordinate integer general");
    const dir2 = writeMex("not-mtx", { matrix: "barcode,gene,count\nA,B,1\n" });
    await expectInputError(openTenxMex(dir2), path.join(dir2, "matrix.mtx.gz"), "header");
    const dir3 = writeMex("symmetric", { matrix: mtxText({ header: "%%MatrixMarket matrix coordinate integer symmetric" }) });
    await expectInputError(openTenxMex(dir3), "matrix.mtx.gz", "header");
  });

  it("index out of range -> GmError naming the file and line", async () => {
    const dir = writeMex("row-range", { matrix: mtxText({ extra: ["5 1 1"] }) });
    await expectInputError(openTenxMex(dir), path.join(dir, "matrix.mtx.gz"), "feature (row) index 5", "1..4");
    const dir2 = writeMex("col-range", { matrix: mtxText({ extra: ["1 6 1"] }) });
    await expectInputError(openTenxMex(dir2), path.join(dir2, "matrix.mtx.gz"), "barcode (column) index 6", "1..5");
    const dir3 = writeMex("zero-index", { matrix: mtxText({ extra: ["0 1 1"] }) });
    await expectInputError(openTenxMex(dir3), "matrix.mtx.gz", /line \d+/, "index 0");
  });

  it("dimension mismatches, missing or surplus entries, malformed lines -> GmError", async () => {
    const d1 = writeMex("dims", { barcodes: BARCODES.slice(0, 4) });
    await expectInputError(openTenxMex(d1), "matrix.mtx.gz", "5 barcodes", "barcodes.tsv.gz has 4");
    const d2 = writeMex("few-entries", { gzip: false, matrix: mtxText({ drop: 2 }) });
    await expectInputError(openTenxMex(d2), path.join(d2, "matrix.mtx"), "truncated", "declares 8 entries but only 6");
    const d3 = writeMex("surplus", { matrix: mtxText().replace(/\n4 5 (\d+)\n/, (_, n) => `\n4 5 ${Number(n) - 1}\n`) });
    await expectInputError(openTenxMex(d3), "matrix.mtx.gz", "more entries");
    const d4 = writeMex("garbage-line", { matrix: mtxText({ extra: ["1 x 3"] }) });
    await expectInputError(openTenxMex(d4), "matrix.mtx.gz", '"1 x 3"');
    const d5 = writeMex("duplicate", { matrix: mtxText({ extra: ["1 1 1", "1 1 2"] }) });
    await expectInputError(openTenxMex(d5), "matrix.mtx.gz", "appears twice");
    const d6 = writeMex("no-size", { matrix: "%%MatrixMarket matrix coordinate integer general\n%only comments\n" });
    await expectInputError(openTenxMex(d6), "matrix.mtx.gz", "size line");
    const d7 = writeMex("transposed", { matrix: mtxText({ size: "5 4 8" }) });
    await expectInputError(openTenxMex(d7), "matrix.mtx.gz", "transposed");
  });

  it("missing files -> GmError naming the folder and the missing file", async () => {
    const d1 = writeMex("no-barcodes", { barcodes: null });
    await expectInputError(openTenxMex(d1), d1, "barcodes.tsv.gz");
    const d2 = writeMex("no-features");
    fs.rmSync(path.join(d2, "features.tsv.gz"));
    await expectInputError(openTenxMex(d2), d2, "features.tsv.gz");
    const d3 = path.join(tmp, "empty-dir");
    fs.mkdirSync(d3, { recursive: true });
    await expectInputError(openTenxMex(d3), d3, "matrix.mtx.gz");
    await expectInputError(openTenxMex(path.join(tmp, "nowhere")), "nowhere", "not found");
  });
});

describe("10x HDF5 reader (generated fixtures)", () => {
  beforeAll(async () => {
    await h5wasm.ready;
  });

  it("an HDF5 file that is not a 10x matrix -> GmError naming the file", async () => {
    const p = path.join(tmp, "other.h5");
    const f = new h5wasm.File(p, "w");
    f.create_group("stuff");
    f.create_dataset({ name: "stuff/values", data: new Float32Array([1, 2, 3]) });
    f.close();
    await expectInputError(openTenxH5(p), p, "not a 10x Cell Ranger HDF5 file", '"stuff"');

    const q = path.join(tmp, "anndata-like.h5");
    const g = new h5wasm.File(q, "w");
    g.create_group("obs");
    g.create_dataset({ name: "X", data: new Float32Array([1]) });
    g.close();
    await expectInputError(openTenxH5(q), q, ".h5ad");
  });

  it("non-HDF5, empty, missing and truncated files -> GmError naming the file", async () => {
    const txt = path.join(tmp, "text.h5");
    fs.writeFileSync(txt, "this is not hdf5\n");
    await expectInputError(openTenxH5(txt), txt, "not an HDF5 file");
    const empty = path.join(tmp, "empty.h5");
    fs.writeFileSync(empty, "");
    await expectInputError(openTenxH5(empty), empty, "empty");
    await expectInputError(openTenxH5(path.join(tmp, "missing.h5")), "missing.h5", "not found");
    await expectInputError(openTenxH5(tmp), tmp, "folder");
    if (haveShared) {
      const cut = path.join(tmp, "truncated.h5");
      const buf = fs.readFileSync(h5File);
      fs.writeFileSync(cut, buf.subarray(0, buf.length >> 1));
      await expectInputError(openTenxH5(cut), cut, "truncated");
    }
  });

  function writeCr3(p: string, opts: { badIndex?: boolean; shortIndptr?: boolean; noGenome?: boolean } = {}): void {
    const indptr: number[] = [0];
    const indices: number[] = [];
    const data: number[] = [];
    for (const row of DENSE) {
      // Cell Ranger writes features in descending order within a barcode
      for (let g = row.length - 1; g >= 0; g--) if (row[g]) (indices.push(g), data.push(row[g]));
      indptr.push(indices.length);
    }
    if (opts.badIndex) indices[3] = 17;
    const f = new h5wasm.File(p, "w");
    f.create_group("matrix");
    f.create_dataset({ name: "matrix/barcodes", data: BARCODES });
    f.create_dataset({ name: "matrix/data", data: new Int32Array(data) });
    f.create_dataset({ name: "matrix/indices", data: BigInt64Array.from(indices, BigInt) });
    f.create_dataset({ name: "matrix/indptr", data: BigInt64Array.from(opts.shortIndptr ? indptr.slice(1) : indptr, BigInt) });
    f.create_dataset({ name: "matrix/shape", data: new Int32Array([FEATURES.length, BARCODES.length]) });
    f.create_group("matrix/features");
    f.create_dataset({ name: "matrix/features/id", data: FEATURES.map((x) => x[0]) });
    f.create_dataset({ name: "matrix/features/name", data: FEATURES.map((x) => x[1]) });
    f.create_dataset({ name: "matrix/features/feature_type", data: FEATURES.map((x) => x[2]) });
    if (!opts.noGenome) f.create_dataset({ name: "matrix/features/genome", data: FEATURES.map(() => "GRCh38") });
    f.close();
  }

  it("reads a Cell Ranger 3 layout written by h5wasm", async () => {
    const p = path.join(tmp, "cr3.h5");
    writeCr3(p);
    const f = await openTenxH5(p);
    expect(f.format).toBe("10x-h5");
    expect(f.matrixLocations()).toEqual(["matrix"]);
    expect(f.matrix("matrix").layout).toBe("csc");
    expect(f.readObs([], 0, 5).index).toEqual(BARCODES);
    expect(f.readObs([], 4, 4).index).toEqual([]);
    expect(f.var.index).toEqual(FEATURES.map((x) => x[0]));
    const genome = f.var.columns.get("genome");
    expect(genome?.kind === "categorical" && genome.categories).toEqual(["GRCh38"]);
    expect(denseFromFile(f)).toEqual(DENSE);
    for (const bs of [1, 2, 4]) expect(readAll(f, bs)).toEqual(readAll(f, 5));
    f.close();
    expect(() => f.matrix("matrix")).toThrow(/closed/);
  });

  it("reads a Cell Ranger 2 layout (genome group with genes/gene_names)", async () => {
    const p = path.join(tmp, "cr2.h5");
    const indptr: number[] = [0];
    const indices: number[] = [];
    const data: number[] = [];
    for (const row of DENSE) {
      row.forEach((v, g) => v && (indices.push(g), data.push(v)));
      indptr.push(indices.length);
    }
    const f = new h5wasm.File(p, "w");
    f.create_group("hg19");
    f.create_dataset({ name: "hg19/barcodes", data: BARCODES });
    f.create_dataset({ name: "hg19/data", data: new Int32Array(data) });
    f.create_dataset({ name: "hg19/indices", data: BigInt64Array.from(indices, BigInt) });
    f.create_dataset({ name: "hg19/indptr", data: BigInt64Array.from(indptr, BigInt) });
    f.create_dataset({ name: "hg19/shape", data: new Int32Array([FEATURES.length, BARCODES.length]) });
    f.create_dataset({ name: "hg19/genes", data: FEATURES.map((x) => x[0]) });
    f.create_dataset({ name: "hg19/gene_names", data: FEATURES.map((x) => x[1]) });
    f.close();
    const c = await openTenxH5(p);
    expect(c.matrixLocations()).toEqual(["matrix"]);
    expect(c.readObs([], 0, 5).index).toEqual(BARCODES);
    expect(c.var.index).toEqual(FEATURES.map((x) => x[0]));
    expect(c.var.columns.get("feature_name")).toEqual({ kind: "string", values: FEATURES.map((x) => x[1]) });
    const genome = c.var.columns.get("genome");
    expect(genome?.kind === "categorical" && genome.categories).toEqual(["hg19"]);
    expect(denseFromFile(c)).toEqual(DENSE);
    c.close();
  });

  it("corrupt 10x structure -> GmError naming the file and the dataset", async () => {
    const p1 = path.join(tmp, "bad-index.h5");
    writeCr3(p1, { badIndex: true });
    const f = await openTenxH5(p1);
    await expectInputError(Promise.resolve().then(() => f.matrix("matrix").readBlock(0, 5)), p1, "matrix/indices", "17");
    f.close();
    const p2 = path.join(tmp, "short-indptr.h5");
    writeCr3(p2, { shortIndptr: true });
    await expectInputError(openTenxH5(p2), p2, "matrix/indptr");
    const p4 = path.join(tmp, "empty-matrix-group.h5");
    const h = new h5wasm.File(p4, "w");
    h.create_group("matrix");
    h.close();
    await expectInputError(openTenxH5(p4), p4, '"matrix/shape"', "missing");
    const p3 = path.join(tmp, "no-genome.h5");
    writeCr3(p3, { noGenome: true });
    const g = await openTenxH5(p3);
    expect(g.var.columns.has("genome")).toBe(false);
    g.close();
  });
});

describe.skipIf(!haveShared)("real Cell Ranger 3 output (../shared/data/tenx)", () => {
  it("the MEX folder and the .h5 read to the same matrix, barcodes and features", async () => {
    const mex = await openTenxMex(mexDir);
    const h5 = await openTenxH5(h5File);
    expect(mex.nCells).toBe(1107);
    expect(h5.nCells).toBe(1107);
    const mm = mex.matrix("matrix");
    const hm = h5.matrix("matrix");
    expect([mm.nCells, mm.nGenes]).toEqual([1107, 507]);
    expect([hm.nCells, hm.nGenes]).toEqual([1107, 507]);
    expect(mex.readObs([], 0, 1107).index).toEqual(h5.readObs([], 0, 1107).index);
    expect(new Set(h5.readObs([], 0, 1107).index).size).toBe(1107);
    expect(mex.var.index).toEqual(h5.var.index);
    expect(mex.var.index[0]).toMatch(/^ENSG\d+$/);
    expect(mex.var.columns.get("feature_name")).toEqual(h5.var.columns.get("feature_name"));
    expect(mex.var.columns.get("feature_type")).toEqual(h5.var.columns.get("feature_type"));
    expect(h5.var.columns.has("genome")).toBe(true);

    // every block, both readers, several block sizes
    for (const bs of [1, 64, 500, 1107]) {
      for (let s = 0; s < 1107; s += bs) {
        const e = Math.min(1107, s + bs);
        const a = mm.readBlock(s, e);
        const b = hm.readBlock(s, e);
        expect(a.indptr).toEqual(b.indptr);
        expect(a.indices).toEqual(b.indices);
        expect(a.data).toEqual(b.data);
      }
    }
    const ref = readAll(h5, 1107);
    for (const bs of [1, 7, 100, 1000]) {
      expect(readAll(h5, bs)).toEqual(ref);
      expect(readAll(mex, bs)).toEqual(ref);
    }
    expect(ref.indices.length).toBe(23866);

    // against a naive independent parse of matrix.mtx.gz
    const naive = denseFromMtx(zlib.gunzipSync(fs.readFileSync(path.join(mexDir, "matrix.mtx.gz"))).toString("utf8"));
    expect(denseFromFile(h5)).toEqual(naive);
    mex.close();
    h5.close();
  });

  it("isTenxMexDir recognises the Cell Ranger folder", () => {
    expect(isTenxMexDir(mexDir)).toBe(true);
    expect(isTenxMexDir(tenxDir)).toBe(false);
    expect(isTenxMexDir(h5File)).toBe(false);
  });
});
