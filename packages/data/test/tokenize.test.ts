/**
 * Tokenization against an independent implementation of the Geneformer algorithm written here over the
 * dense count matrix, on real data (pbmc68k_reduced_counts.h5ad, counts in layers/counts).
 */
import { describe, expect, it, beforeAll } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { RecordBatchStreamReader, RecordBatchReader } from "apache-arrow";
import { preprocess, tokenize, PREPROCESS_DEFAULTS, TOKENIZE_DEFAULTS } from "@gm/data";
import { hasShared, shared, tmpDir } from "../../../tests/helpers/paths.js";
import { PBMC_COUNTS as H5AD, readPbmcCounts } from "../../../tests/helpers/pbmc.js";

const VOCAB = shared("genes/vocab_25426.json");
const MEDIANS = shared("genes/gene_medians_v1.json");
const GENE_MAP = shared("genes/gene_symbols.json");

/** Geneformer V1 over a dense matrix, written from the algorithm's description (not from gm's code). */
async function referenceTokens(minGenes: number, maxLen: number, cls: number | null, geneMapFile = GENE_MAP): Promise<{ tokens: number[][]; cellIds: string[] }> {
  const { indptr, indices, data, genes, cells } = await readPbmcCounts();
  const nCells = cells.length;
  const nGenes = genes.length;
  const dense: number[][] = Array.from({ length: nCells }, () => new Array(nGenes).fill(0));
  for (let r = 0; r < nCells; r++) for (let k = indptr[r]; k < indptr[r + 1]; k++) dense[r][indices[k]] += data[k];
  const vocab = JSON.parse(fs.readFileSync(VOCAB, "utf8")) as { first_gene_id: number; genes: string[] };
  const tokenOf = new Map(vocab.genes.map((g, i) => [g, vocab.first_gene_id + i]));
  const medians = JSON.parse(fs.readFileSync(MEDIANS, "utf8")) as Record<string, number>;
  const symbols = (JSON.parse(fs.readFileSync(geneMapFile, "utf8")) as { symbol_to_ensembl: Record<string, string> }).symbol_to_ensembl;
  const ens = genes.map((s) => symbols[s] ?? symbols[s.toUpperCase()] ?? null);
  const tokens: number[][] = [];
  const cellIds: string[] = [];
  for (let r = 0; r < nCells; r++) {
    const row = dense[r];
    const nCounts = row.reduce((a, b) => a + b, 0);
    const expressed = row.filter((x) => x > 0).length;
    if (nCounts === 0 || expressed < minGenes) continue;
    // genes with a token and a median; duplicates of one Ensembl id summed
    const byGene = new Map<string, number>();
    row.forEach((x, j) => {
      const e = ens[j];
      if (x > 0 && e && tokenOf.has(e) && medians[e] !== undefined) byGene.set(e, (byGene.get(e) ?? 0) + x);
    });
    const entries = [...byGene].map(([e, x]) => ({ t: tokenOf.get(e)!, v: ((x / nCounts) * 10000) / medians[e] }));
    entries.sort((a, b) => b.v - a.v || a.t - b.t);
    const room = maxLen - (cls !== null ? 1 : 0);
    const seq = entries.slice(0, room).map((e) => e.t);
    tokens.push(cls !== null ? [cls, ...seq] : seq);
    cellIds.push(cells[r]);
  }
  return { tokens, cellIds };
}

function readDataset(dir: string): { ids: number[][]; lengths: number[]; columns: Record<string, unknown[]>; batchSizes: number[] } {
  const state = JSON.parse(fs.readFileSync(path.join(dir, "state.json"), "utf8")) as { _data_files: { filename: string }[] };
  const ids: number[][] = [];
  const lengths: number[] = [];
  const columns: Record<string, unknown[]> = {};
  const batchSizes: number[] = [];
  for (const { filename } of state._data_files) {
    const reader = RecordBatchStreamReader.from(fs.readFileSync(path.join(dir, filename)));
    for (const batch of reader) {
      batchSizes.push(batch.numRows);
      const col = batch.getChild("input_ids")!;
      const len = batch.getChild("length")!;
      for (let i = 0; i < batch.numRows; i++) {
        ids.push(Array.from(col.get(i)!.toArray() as Int32Array));
        lengths.push(Number(len.get(i)));
      }
      for (const f of batch.schema.fields) {
        if (f.name === "input_ids" || f.name === "length") continue;
        (columns[f.name] ??= []).push(...(batch.getChild(f.name)!.toArray() as unknown[]));
      }
    }
  }
  return { ids, lengths, columns, batchSizes };
}

describe.skipIf(!hasShared)("gm tokenize on pbmc68k_reduced_counts (real data)", () => {
  let ref: Awaited<ReturnType<typeof referenceTokens>>;
  const dir = tmpDir("gm-tok-");
  const common = {
    ...TOKENIZE_DEFAULTS,
    medians: MEDIANS,
    vocab: VOCAB,
    geneMap: GENE_MAP,
    countsLayer: "counts",
    keepColumns: ["bulk_labels"],
    workers: 2,
    unitCells: 250,
    batchRows: 100,
  };

  beforeAll(async () => {
    ref = await referenceTokens(200, 2048, null);
  });

  it("every cell's tokens equal the independent Geneformer implementation (h5ad input)", async () => {
    const out = path.join(dir, "direct");
    const r = await tokenize({ ...common, input: [H5AD], out });
    expect(r.cellsOut).toBe(ref.tokens.length);
    const ds = readDataset(out);
    expect(ds.ids.length).toBe(ref.tokens.length);
    for (let i = 0; i < ref.tokens.length; i++) {
      expect(ds.ids[i], `cell ${ref.cellIds[i]}`).toEqual(ref.tokens[i]);
      expect(ds.lengths[i]).toBe(ref.tokens[i].length);
    }
    expect(ds.columns.bulk_labels.length).toBe(ref.tokens.length);
    expect(ds.batchSizes.every((n) => n <= 100)).toBe(true);
  });

  it("with --cls and a short --max-len, truncates after the highest ranks", async () => {
    const out = path.join(dir, "cls");
    const r = await tokenize({ ...common, input: [H5AD], out, cls: true, maxLen: 64 });
    const clsRef = await referenceTokens(200, 64, 25426);
    const ds = readDataset(out);
    expect(ds.ids).toEqual(clsRef.tokens);
    expect(r.truncated).toBeGreaterThan(0);
    const vocab = JSON.parse(fs.readFileSync(path.join(out, "vocab.json"), "utf8"));
    expect(vocab.extra_specials).toEqual({ "[CLS]": 25426 });
  });

  it("preprocess -> tokenize gives the same tokens as tokenizing the h5ad directly", async () => {
    const pre = path.join(dir, "pre");
    await preprocess({ ...PREPROCESS_DEFAULTS, inputs: [H5AD], out: pre, countsLayer: "counts", geneMap: GENE_MAP, vocab: VOCAB, workers: 2, unitCells: 300 });
    const out = path.join(dir, "via-pre");
    await tokenize({ ...TOKENIZE_DEFAULTS, input: [pre], out, medians: MEDIANS, keepColumns: ["bulk_labels"], workers: 1 });
    const ds = readDataset(out);
    expect(ds.ids).toEqual(ref.tokens);
  });

  it("the WebAssembly block kernel and the JS path write identical datasets", async () => {
    const viaJs = path.join(dir, "js-path");
    process.env.GM_JS_TOKENIZER = "1";
    try {
      await tokenize({ ...common, input: [H5AD], out: viaJs, cls: true, eos: true, maxLen: 300 });
    } finally {
      delete process.env.GM_JS_TOKENIZER;
    }
    const viaKernel = path.join(dir, "kernel-path");
    await tokenize({ ...common, input: [H5AD], out: viaKernel, cls: true, eos: true, maxLen: 300 });
    const names = fs.readdirSync(viaKernel).filter((n) => n !== "tokenize.json").sort();
    expect(fs.readdirSync(viaJs).filter((n) => n !== "tokenize.json").sort()).toEqual(names);
    for (const n of names) expect(fs.readFileSync(path.join(viaJs, n)).equals(fs.readFileSync(path.join(viaKernel, n))), n).toBe(true);
  });

  it("sums genes whose symbols map to one Ensembl id, in preprocess and in both tokenize paths", async () => {
    // a gene map under which three expressed pbmc genes collapse onto one Ensembl id
    const { genes } = await readPbmcCounts();
    const map = (JSON.parse(fs.readFileSync(GENE_MAP, "utf8")) as { symbol_to_ensembl: Record<string, string> }).symbol_to_ensembl;
    const mapped = genes.filter((g) => map[g]);
    const target = map[mapped[0]];
    map[mapped[1]] = target;
    map[mapped[2]] = target;
    const dupMap = path.join(dir, "dup-map.json");
    fs.writeFileSync(dupMap, JSON.stringify({ symbol_to_ensembl: map }));
    const want = await referenceTokens(200, 2048, null, dupMap);
    const opts = { ...common, geneMap: dupMap };
    const direct = path.join(dir, "dup-direct");
    await tokenize({ ...opts, input: [H5AD], out: direct });
    expect(readDataset(direct).ids).toEqual(want.tokens);
    const pre = path.join(dir, "dup-pre");
    await preprocess({ ...PREPROCESS_DEFAULTS, inputs: [H5AD], out: pre, countsLayer: "counts", geneMap: dupMap, vocab: VOCAB, unitCells: 300 });
    const manifest = JSON.parse(fs.readFileSync(path.join(pre, "manifest.json"), "utf8"));
    expect(manifest.inputs[0].genes.duplicate_columns_summed).toBe(2);
    const viaPre = path.join(dir, "dup-via-pre");
    await tokenize({ ...TOKENIZE_DEFAULTS, input: [pre], out: viaPre, medians: MEDIANS });
    expect(readDataset(viaPre).ids).toEqual(want.tokens);
  });

  it("writes the Hugging Face datasets layout and a seekable shard index", async () => {
    const out = path.join(dir, "direct");
    const info = JSON.parse(fs.readFileSync(path.join(out, "dataset_info.json"), "utf8"));
    expect(info.features.input_ids).toEqual({ feature: { dtype: "int32", _type: "Value" }, _type: "Sequence" });
    expect(info.features.length).toEqual({ dtype: "int64", _type: "Value" });
    expect(info.features.bulk_labels).toEqual({ dtype: "string", _type: "Value" });
    const state = JSON.parse(fs.readFileSync(path.join(out, "state.json"), "utf8"));
    const files = state._data_files.map((f: { filename: string }) => f.filename);
    expect(files.length).toBeGreaterThan(1);
    files.forEach((f: string, i: number) => expect(f).toBe(`data-${String(i).padStart(5, "0")}-of-${String(files.length).padStart(5, "0")}.arrow`));
    const onDisk = fs.readdirSync(out).filter((n) => n.endsWith(".arrow")).sort();
    expect(onDisk).toEqual(files);
    expect(fs.existsSync(path.join(out, ".gm-work"))).toBe(false);
    // schema metadata carries the HF features
    const first = RecordBatchStreamReader.from(fs.readFileSync(path.join(out, files[0])));
    first.open();
    expect(JSON.parse(first.schema.metadata.get("huggingface")!).info.features.input_ids._type).toBe("Sequence");
    // every indexed batch decodes on its own from (schema bytes + the batch's byte range)
    const index = JSON.parse(fs.readFileSync(path.join(out, "gm_index.json"), "utf8"));
    const all = readDataset(out).ids;
    let row = 0;
    for (const shard of index.shards) {
      const bytes = fs.readFileSync(path.join(out, shard.file));
      const schemaBytes = bytes.subarray(0, shard.batches[0].offset);
      for (const b of shard.batches) {
        const eos = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        const one = Buffer.concat([schemaBytes, bytes.subarray(b.offset, b.offset + b.length), eos]);
        const reader = RecordBatchReader.from(one);
        const batches = [...reader];
        expect(batches.length).toBe(1);
        expect(batches[0].numRows).toBe(b.rows);
        expect(Array.from(batches[0].getChild("input_ids")!.get(0)!.toArray() as Int32Array)).toEqual(all[row]);
        row += b.rows;
      }
    }
    expect(row).toBe(index.rows);
  });
});
