/**
 * `gm tokenize`: Geneformer rank-value tokenization into a Hugging Face `datasets` folder
 * (data-0000i-of-0000n.arrow stream shards, dataset_info.json, state.json) plus gm_index.json, the
 * byte offset of every record batch, so a training loader can seek without reading a shard through.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { GM_VERSION, createProgress, getLogger, inputError, readJsonFile, removeStaleTemporaries, runPool, usageError, writeJsonAtomic } from "@gm/core";
import { expandInputs, openCellFile, planInput, type InputPlan } from "../plan.js";
import { loadGeneMap, loadMedians, loadVocabulary, Vocabulary } from "../vocab.js";
import { MANIFEST_FORMAT } from "../preprocess/run.js";
import { keepColumnTypesFromFile, keepColumnTypesFromShard, tokenizedSchema, hfFeature, tokenizeUnitRecord, type TokenizeSettings, type TokenizeUnitResult, type TokenizeUnitTask } from "./unit.js";

export interface TokenizeOptions {
  input: string[];
  out: string;
  medians: string;
  vocab?: string;
  maxLen: number;
  cls: boolean;
  eos: boolean;
  keepColumns: string[];
  workers: number;
  // cleaning, for h5ad/10x input
  countsLayer?: string;
  geneIdColumn?: string;
  geneMap?: string;
  minGenes: number;
  targetSum: number;
  allowNonInteger: boolean;
  unitCells: number;
  blockRows: number;
  batchRows: number;
  maxShardBytes: number;
}

export const TOKENIZE_DEFAULTS = {
  maxLen: 2048,
  cls: false,
  eos: false,
  keepColumns: [] as string[],
  workers: 1,
  minGenes: 200,
  targetSum: 10_000,
  allowNonInteger: false,
  unitCells: 20_000,
  blockRows: 2048,
  batchRows: 1000,
  maxShardBytes: 500 * 1024 * 1024,
};

export interface TokenizeSummary {
  out: string;
  cellsIn: number;
  cellsOut: number;
  shards: number;
  tokens: number;
  meanLength: number;
  truncated: number;
  droppedNoTokens: number;
  unitsRun: number;
  unitsSkipped: number;
  seconds: number;
}

export const INDEX_FORMAT = "gm.tokens/1";

interface PreprocessManifest {
  format: string;
  settings: { targetSum: number };
  shards: { path: string; rows: number }[];
}

function readPreprocessManifest(dir: string): PreprocessManifest | undefined {
  const f = path.join(dir, "manifest.json");
  if (!fs.existsSync(f)) return undefined;
  const m = readJsonFile<PreprocessManifest>(f, "preprocess manifest");
  if (m.format !== MANIFEST_FORMAT) return undefined;
  return m;
}

export async function tokenize(opts: TokenizeOptions): Promise<TokenizeSummary> {
  const log = getLogger();
  const t0 = Date.now();
  if (!Number.isInteger(opts.maxLen) || opts.maxLen < 1 + (opts.cls ? 1 : 0) + (opts.eos ? 1 : 0)) throw usageError(`--max-len must be an integer large enough for the special tokens`);
  if (!Number.isInteger(opts.workers) || opts.workers < 1) throw usageError(`--workers must be a positive integer`);
  if (opts.input.length === 0) throw usageError("tokenize needs an INPUT (a gm preprocess folder, or .h5ad/.h5/10x inputs)");

  // Input kind.
  const pre = opts.input.length === 1 && fs.existsSync(opts.input[0]) && fs.statSync(opts.input[0]).isDirectory() ? readPreprocessManifest(opts.input[0]) : undefined;
  if (!pre && opts.input.length === 1 && fs.existsSync(opts.input[0]) && fs.statSync(opts.input[0]).isDirectory() && fs.existsSync(path.join(opts.input[0], "run.json"))) {
    throw inputError(opts.input[0], "is an unfinished gm preprocess folder (no manifest.json); re-run gm preprocess to complete it");
  }
  const preDir = pre ? path.resolve(opts.input[0]) : undefined;

  // Vocabulary and medians.
  const medians = loadMedians(opts.medians);
  let vocabFile = opts.vocab;
  if (!vocabFile && preDir && fs.existsSync(path.join(preDir, "vocab.json"))) vocabFile = path.join(preDir, "vocab.json");
  if (!vocabFile && fs.existsSync(path.join(path.dirname(opts.medians), "vocab.json"))) vocabFile = path.join(path.dirname(opts.medians), "vocab.json");
  let vocab = vocabFile ? loadVocabulary(vocabFile) : Vocabulary.fromGenes(medians.keys());
  const extra = [...(opts.cls ? ["[CLS]"] : []), ...(opts.eos ? ["[EOS]"] : [])];
  vocab = vocab.withSpecials(extra);
  const clsId = opts.cls ? vocab.get("[CLS]")! : null;
  const eosId = opts.eos ? vocab.get("[EOS]")! : null;
  const genes = vocab.genes().filter((g) => medians.has(g));
  if (genes.length === 0) throw inputError(opts.medians, `no gene of the vocabulary${vocabFile ? ` (${vocabFile})` : ""} has a median; medians and vocabulary do not belong together`);
  const noMedian = vocab.genes().length - genes.length;
  if (noMedian > 0) log.info({ genesWithoutMedian: noMedian }, `${noMedian} vocabulary genes have no median and are never tokenized`);
  const tokenIds = Int32Array.from(genes, (g) => vocab.get(g)!);
  const medianArr = Float64Array.from(genes, (g) => medians.get(g)!);

  const settings: TokenizeSettings = {
    maxLen: opts.maxLen,
    clsId,
    eosId,
    targetSum: pre ? pre.settings.targetSum : opts.targetSum,
    keepColumns: opts.keepColumns,
    minGenes: opts.minGenes,
    allowNonInteger: opts.allowNonInteger,
    blockRows: opts.blockRows,
    batchRows: opts.batchRows,
    maxShardBytes: opts.maxShardBytes,
    vocabSize: vocab.size,
  };

  // Units (and validation of every input before writing anything).
  const out = path.resolve(opts.out);
  const workDir = path.join(out, ".gm-work");
  const tasks: TokenizeUnitTask[] = [];
  let keepTypes: { name: string; type: import("apache-arrow").DataType }[] = [];
  const sources: { path: string; bytes: number; mtimeMs: number }[] = [];
  if (preDir && pre) {
    if (pre.shards.length === 0) throw inputError(preDir, "preprocess output holds no shards");
    pre.shards.forEach((s, i) => {
      const p = path.resolve(preDir, s.path);
      if (!fs.existsSync(p)) throw inputError(p, "shard listed in manifest.json is missing; re-run gm preprocess");
      const st = fs.statSync(p);
      sources.push({ path: p, bytes: st.size, mtimeMs: st.mtimeMs });
      tasks.push({ kind: "shard", shardPath: p, unit: i, workDir, settings });
    });
    keepTypes = await keepColumnTypesFromShard(path.resolve(preDir, pre.shards[0].path), opts.keepColumns);
  } else {
    const files = expandInputs(opts.input).sort();
    const geneMap = opts.geneMap ? loadGeneMap(opts.geneMap) : undefined;
    let unit = 0;
    for (const p of files) {
      const plan: InputPlan = await planInput(p, { countsLayer: opts.countsLayer, allowNonInteger: opts.allowNonInteger, geneIdColumn: opts.geneIdColumn, geneMap, vocab });
      if (opts.keepColumns.length) {
        const f = await openCellFile(p);
        try {
          keepTypes = keepColumnTypesFromFile(f, opts.keepColumns);
        } finally {
          f.close();
        }
      }
      const st = fs.statSync(p);
      sources.push({ path: p, bytes: st.size, mtimeMs: st.mtimeMs });
      const nUnits = Math.max(1, Math.ceil(plan.nCells / opts.unitCells));
      for (let u = 0; u < nUnits; u++) {
        tasks.push({ kind: "cells", plan, rowStart: u * opts.unitCells, rowEnd: Math.min(plan.nCells, (u + 1) * opts.unitCells), unit: unit++, workDir, settings });
      }
      log.info({ input: p, cells: plan.nCells, counts: plan.countsLocation, genes: plan.geneStats }, `${path.basename(p)}: ${plan.nCells} cells, ${plan.genes.length} vocabulary genes`);
    }
  }
  const keepNames = keepTypes.map((k) => k.name);

  const identity = {
    command: "tokenize",
    gm_version: GM_VERSION,
    settings: { ...settings, countsLayer: opts.countsLayer ?? null, geneIdColumn: opts.geneIdColumn ?? null, unitCells: opts.unitCells },
    medians: path.resolve(opts.medians),
    medians_sha1: createHash("sha1").update(fs.readFileSync(opts.medians)).digest("hex"),
    vocab: vocabFile ? path.resolve(vocabFile) : null,
    sources,
  };

  // Output folder state.
  const runFile = path.join(out, "tokenize.json");
  const createdOut = !fs.existsSync(out);
  if (!createdOut) {
    if (!fs.statSync(out).isDirectory()) throw inputError(out, "--out exists and is not a folder");
    if (fs.existsSync(runFile)) {
      const prev = readJsonFile(runFile, "tokenize run record");
      if (JSON.stringify(prev) !== JSON.stringify(identity)) throw inputError(out, "holds a tokenized dataset made from other inputs or options; use a new --out folder or delete this one");
      if (fs.existsSync(path.join(out, "state.json")) && !fs.existsSync(workDir)) {
        const idx = readJsonFile<{ rows: number; shards: unknown[]; tokens: number }>(path.join(out, "gm_index.json"), "shard index");
        log.info(`${out} is already complete`);
        return { out, cellsIn: idx.rows, cellsOut: idx.rows, shards: idx.shards.length, tokens: idx.tokens, meanLength: idx.tokens / Math.max(1, idx.rows), truncated: 0, droppedNoTokens: 0, unitsRun: 0, unitsSkipped: tasks.length, seconds: 0 };
      }
    } else if (fs.readdirSync(out).filter((n) => !n.startsWith(".")).length > 0) {
      throw inputError(out, "--out folder is not empty and holds no gm tokenize run; choose an empty or new folder");
    }
  }
  for (const sub of ["parts", "units"]) {
    fs.mkdirSync(path.join(workDir, sub), { recursive: true });
    removeStaleTemporaries(path.join(workDir, sub));
  }
  writeJsonAtomic(runFile, identity);

  const results: TokenizeUnitResult[] = [];
  const todo: TokenizeUnitTask[] = [];
  for (const t of tasks) {
    const rec = path.join(workDir, "units", tokenizeUnitRecord(t.unit));
    if (fs.existsSync(rec)) {
      const r = readJsonFile<TokenizeUnitResult>(rec, "unit record");
      if (r.parts.every((p) => fs.existsSync(path.join(workDir, "parts", p.file)))) {
        results.push(r);
        continue;
      }
    }
    todo.push(t);
  }
  if (results.length) log.info({ skipped: results.length, remaining: todo.length }, `resuming: ${results.length} units already done`);

  const total = todo.reduce((s, t) => s + (t.kind === "cells" ? t.rowEnd - t.rowStart : (pre!.shards[t.unit].rows ?? 0)), 0);
  const progress = createProgress({ label: "tokenize", total, unit: "cells" });
  try {
    const done = await runPool<TokenizeUnitTask, TokenizeUnitResult>({
      workerUrl: new URL("./worker.js", import.meta.url),
      tasks: todo,
      concurrency: opts.workers,
      onProgress: (n) => progress.increment(n),
      workerData: { genes, tokenIds, medians: medianArr, keep: keepTypes.map((k) => ({ name: k.name, type: String(k.type) })) },
    });
    results.push(...done);
  } catch (e) {
    progress.stop();
    removeStaleTemporaries(path.join(workDir, "parts"));
    if (createdOut && results.length === 0) fs.rmSync(out, { recursive: true, force: true });
    throw e;
  }
  progress.stop();

  // Assemble: parts in unit order become data-0000i-of-0000n.arrow.
  results.sort((a, b) => a.unit - b.unit);
  const parts = results.flatMap((r) => r.parts);
  const cellsOut = results.reduce((s, r) => s + r.cellsOut, 0);
  if (cellsOut === 0) {
    fs.rmSync(workDir, { recursive: true, force: true });
    if (createdOut) fs.rmSync(out, { recursive: true, force: true });
    throw inputError(opts.input.join(" "), "no cell produced any token (no cell passed the filters or none holds a vocabulary gene with a median)");
  }
  for (const n of fs.readdirSync(out)) if (/^data-\d+-of-\d+\.arrow$/.test(n)) fs.rmSync(path.join(out, n));
  const nShards = parts.length;
  const shardName = (i: number) => `data-${String(i).padStart(5, "0")}-of-${String(nShards).padStart(5, "0")}.arrow`;
  parts.forEach((p, i) => {
    const src = path.join(workDir, "parts", p.file);
    const dst = path.join(out, shardName(i));
    try {
      fs.linkSync(src, dst);
    } catch {
      fs.copyFileSync(src, dst);
    }
  });
  const schema = tokenizedSchema(keepTypes);
  const features: Record<string, unknown> = {};
  for (const f of schema.fields) features[f.name] = hfFeature(f.type);
  const tokens = results.reduce((s, r) => s + r.tokens, 0);
  const numBytes = parts.reduce((s, p) => s + p.bytes, 0);
  writeJsonAtomic(path.join(out, "dataset_info.json"), {
    builder_name: null,
    citation: "",
    config_name: null,
    dataset_name: null,
    description: `Rank-value tokenized single-cell data written by gm ${GM_VERSION} (gm tokenize).`,
    features,
    homepage: "",
    license: "",
    splits: { train: { name: "train", num_bytes: numBytes, num_examples: cellsOut, dataset_name: null } },
  });
  vocab.save(path.join(out, "vocab.json"));
  const fingerprint = createHash("sha1").update(JSON.stringify({ identity, parts: parts.map((p) => [p.rows, p.bytes]) })).digest("hex").slice(0, 16);
  writeJsonAtomic(path.join(out, "gm_index.json"), {
    format: INDEX_FORMAT,
    gm_version: GM_VERSION,
    rows: cellsOut,
    tokens,
    max_len: opts.maxLen,
    vocab_size: vocab.size,
    pad_id: vocab.get("[PAD]") ?? null,
    cls_id: clsId,
    eos_id: eosId,
    columns: ["input_ids", "length", ...keepNames],
    shards: parts.map((p, i) => ({ file: shardName(i), rows: p.rows, bytes: p.bytes, batches: p.batches })),
  });
  // state.json last: its presence marks the dataset complete.
  writeJsonAtomic(path.join(out, "state.json"), {
    _data_files: parts.map((_, i) => ({ filename: shardName(i) })),
    _fingerprint: fingerprint,
    _format_columns: null,
    _format_kwargs: {},
    _format_type: null,
    _output_all_columns: false,
    _split: null,
  });
  fs.rmSync(workDir, { recursive: true, force: true });

  const cellsIn = results.reduce((s, r) => s + r.cellsIn, 0);
  return {
    out,
    cellsIn,
    cellsOut,
    shards: nShards,
    tokens,
    meanLength: tokens / cellsOut,
    truncated: results.reduce((s, r) => s + r.truncated, 0),
    droppedNoTokens: results.reduce((s, r) => s + r.droppedNoTokens, 0),
    unitsRun: todo.length,
    unitsSkipped: tasks.length - todo.length,
    seconds: (Date.now() - t0) / 1000,
  };
}
