/**
 * `gm preprocess`: filter, depth-normalise and digest single-cell inputs into sharded Arrow files,
 * per-gene medians (crick t-digest) and a vocabulary. See docs/formats.md for the output layout.
 *
 * Work is split into units (a row range of one input, `unitCells` rows). Units are independent and run
 * in worker threads; each writes its shard, its digests and, last, a small JSON that marks it done, so
 * a re-run resumes where a crash stopped. Digests are merged in (input, unit) order, which makes the
 * medians independent of the number of workers and identical between one run and `--shard` + `--merge`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import {
  GM_VERSION,
  GmError,
  createProgress,
  getLogger,
  inputError,
  readJsonFile,
  removeStaleTemporaries,
  runPool,
  usageError,
  writeJsonAtomic,
} from "@gm/core";
import { expandInputs, planInput, type InputPlan } from "../plan.js";
import { loadGeneMap, loadVocabulary, Vocabulary } from "../vocab.js";
import { DigestSet } from "../tdigest.js";
import { addCleanStats, emptyCleanStats, type CleanStats } from "../clean.js";
import { genesPath, unitJsonPath, type PreprocessSettings, type UnitResult, type UnitTask } from "./unit.js";

export interface PreprocessOptions {
  inputs: string[];
  out: string;
  countsLayer?: string;
  geneIdColumn?: string;
  geneMap?: string;
  vocab?: string;
  minGenes: number;
  targetSum: number;
  log1p: boolean;
  allowNonInteger: boolean;
  workers: number;
  /** 1-based slice of the sorted inputs, e.g. {index: 1, count: 4}. */
  shard?: { index: number; count: number };
  unitCells: number;
  blockRows: number;
}

export const PREPROCESS_DEFAULTS = {
  minGenes: 200,
  targetSum: 10_000,
  log1p: false,
  allowNonInteger: false,
  workers: 1,
  unitCells: 20_000,
  blockRows: 2048,
};

export interface PreprocessSummary {
  out: string;
  inputs: number;
  cellsIn: number;
  cellsOut: number;
  genesWithMedian: number;
  unitsRun: number;
  unitsSkipped: number;
  seconds: number;
}

export interface RunIdentity {
  command: "preprocess";
  gm_version: string;
  settings: PreprocessSettings & { countsLayer: string | null; geneIdColumn: string | null; geneMap: string | null; vocab: string | null; unitCells: number };
  shard: { index: number; count: number } | null;
  inputs: { index: number; path: string; bytes: number; mtimeMs: number }[];
}

export const MANIFEST_FORMAT = "gm.preprocess/1";

export function parseShardSpec(spec: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(spec.trim());
  if (!m) throw usageError(`--shard '${spec}' must look like K/N (e.g. 1/4)`);
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (count < 1 || index < 1 || index > count) throw usageError(`--shard ${spec}: K must be in 1..N (slices are 1-based)`);
  return { index, count };
}

function statInput(p: string): { bytes: number; mtimeMs: number } {
  const st = fs.statSync(p);
  if (st.isDirectory()) {
    let bytes = 0;
    let mtimeMs = 0;
    for (const n of fs.readdirSync(p)) {
      const s = fs.statSync(path.join(p, n));
      bytes += s.size;
      mtimeMs = Math.max(mtimeMs, s.mtimeMs);
    }
    return { bytes, mtimeMs };
  }
  return { bytes: st.size, mtimeMs: st.mtimeMs };
}

function sha1(s: string): string {
  return createHash("sha1").update(s).digest("hex");
}

export async function preprocess(opts: PreprocessOptions): Promise<PreprocessSummary> {
  const log = getLogger();
  const t0 = Date.now();
  if (!Number.isInteger(opts.minGenes) || opts.minGenes < 0) throw usageError(`--min-genes must be a non-negative integer`);
  if (!(opts.targetSum > 0)) throw usageError(`--target-sum must be positive`);
  if (!Number.isInteger(opts.workers) || opts.workers < 1) throw usageError(`--workers must be a positive integer`);

  // 1. Inputs, in sorted order; a --shard slice takes every N-th file.
  const all = expandInputs(opts.inputs).sort();
  const mine = all.map((p, index) => ({ p, index })).filter(({ index }) => !opts.shard || index % opts.shard.count === opts.shard.index - 1);
  if (mine.length === 0) throw usageError(`--shard ${opts.shard?.index}/${opts.shard?.count} selects none of the ${all.length} inputs`);

  // 2. Plans (opens every input once; any bad input fails here, before anything is written).
  const vocab = opts.vocab ? loadVocabulary(opts.vocab) : undefined;
  const geneMap = opts.geneMap ? loadGeneMap(opts.geneMap) : undefined;
  const plans: { index: number; plan: InputPlan }[] = [];
  for (const { p, index } of mine) {
    const plan = await planInput(p, { countsLayer: opts.countsLayer, allowNonInteger: opts.allowNonInteger, geneIdColumn: opts.geneIdColumn, geneMap, vocab });
    const gs = plan.geneStats;
    log.info(
      { input: p, counts: plan.countsLocation, cells: plan.nCells, genes: gs },
      `${path.basename(p)}: ${plan.nCells} cells, counts in ${plan.countsLocation}, ${gs.kept} genes kept of ${gs.columns} (${gs.unmapped} unmapped, ${gs.notInVocab} not in vocabulary, ${gs.filteredByType} filtered by type, ${gs.duplicateColumns} duplicate columns summed)`,
    );
    if (gs.unmapped > 0) log.warn({ input: p, unmapped: gs.unmapped, examples: plan.unmappedExamples }, `${path.basename(p)}: ${gs.unmapped} genes could not be mapped to Ensembl ids (e.g. ${plan.unmappedExamples.join(", ")})`);
    plans.push({ index, plan });
  }

  const settings: PreprocessSettings = {
    minGenes: opts.minGenes,
    targetSum: opts.targetSum,
    log1p: opts.log1p,
    allowNonInteger: opts.allowNonInteger,
    blockRows: opts.blockRows,
  };
  const identity: RunIdentity = {
    command: "preprocess",
    gm_version: GM_VERSION,
    settings: {
      ...settings,
      countsLayer: opts.countsLayer ?? null,
      geneIdColumn: opts.geneIdColumn ?? null,
      geneMap: opts.geneMap ? path.resolve(opts.geneMap) : null,
      vocab: opts.vocab ? path.resolve(opts.vocab) : null,
      unitCells: opts.unitCells,
    },
    shard: opts.shard ?? null,
    inputs: plans.map(({ index, plan }) => ({ index, path: plan.path, ...statInput(plan.path) })),
  };

  // 3. The output folder: new, or a resumable run with the same identity.
  const out = path.resolve(opts.out);
  const runFile = path.join(out, "run.json");
  const createdOut = !fs.existsSync(out);
  if (!createdOut) {
    if (!fs.statSync(out).isDirectory()) throw inputError(out, "--out exists and is not a folder");
    if (fs.existsSync(runFile)) {
      const prev = readJsonFile<RunIdentity>(runFile, "run record");
      if (JSON.stringify(prev) !== JSON.stringify(identity)) {
        throw inputError(out, "holds a preprocess run with other inputs or options; use a new --out folder or delete this one");
      }
    } else if (fs.readdirSync(out).filter((n) => !n.startsWith(".")).length > 0) {
      throw inputError(out, "--out folder is not empty and holds no gm preprocess run; choose an empty or new folder");
    }
  }
  for (const sub of ["", "cells", "digests", "units", "genes"]) {
    fs.mkdirSync(path.join(out, sub), { recursive: true });
    removeStaleTemporaries(path.join(out, sub));
  }
  writeJsonAtomic(runFile, identity);
  for (const { index, plan } of plans) {
    const gf = path.join(out, genesPath(index));
    if (!fs.existsSync(gf)) writeJsonAtomic(gf, plan.genes);
  }

  // 4. Units; those whose record exists are done.
  const tasks: UnitTask[] = [];
  let skipped = 0;
  const done: UnitResult[] = [];
  for (const { index, plan } of plans) {
    const nUnits = Math.max(1, Math.ceil(plan.nCells / opts.unitCells));
    for (let u = 0; u < nUnits; u++) {
      const rowStart = u * opts.unitCells;
      const rowEnd = Math.min(plan.nCells, rowStart + opts.unitCells);
      const rec = path.join(out, unitJsonPath(index, u));
      if (fs.existsSync(rec)) {
        const r = readJsonFile<UnitResult>(rec, "unit record");
        if (fs.existsSync(path.join(out, r.shard)) && fs.existsSync(path.join(out, r.digest))) {
          done.push(r);
          skipped++;
          continue;
        }
      }
      tasks.push({ outDir: out, fileIndex: index, unit: u, rowStart, rowEnd, plan, settings });
    }
  }
  if (skipped > 0) log.info({ skipped, remaining: tasks.length }, `resuming: ${skipped} units already done, ${tasks.length} to go`);

  // 5. Run the units in worker threads.
  const totalCells = tasks.reduce((s, t) => s + (t.rowEnd - t.rowStart), 0);
  const progress = createProgress({ label: "preprocess", total: totalCells, unit: "cells" });
  try {
    const results = await runPool<UnitTask, UnitResult>({
      workerUrl: new URL("./worker.js", import.meta.url),
      tasks,
      concurrency: opts.workers,
      onProgress: (n) => progress.increment(n),
    });
    done.push(...results);
  } catch (e) {
    progress.stop();
    // Nothing half-written: unit files are renamed into place only when complete. If this run created
    // the folder and finished nothing, remove it entirely.
    for (const sub of ["cells", "digests", "units", ""]) removeStaleTemporaries(path.join(out, sub));
    if (createdOut && done.length === 0 && fs.readdirSync(path.join(out, "units")).length === 0) fs.rmSync(out, { recursive: true, force: true });
    throw e;
  }
  progress.stop();

  // 6. Merge.
  const summary = finalize(out, identity, plans.map((p) => ({ index: p.index, plan: p.plan })), done, vocab);
  return { ...summary, unitsRun: tasks.length, unitsSkipped: skipped, seconds: (Date.now() - t0) / 1000 };
}

export interface PlanRef {
  index: number;
  plan: Pick<InputPlan, "path" | "format" | "nCells" | "countsLocation" | "genes" | "geneStats" | "hasPrimaryColumn" | "obsColumns">;
}

/** Merge the units' digests (in input, unit order) into medians; write vocab.json and manifest.json. */
export function finalize(
  out: string,
  identity: RunIdentity,
  plans: PlanRef[],
  units: (UnitResult & { dir?: string })[],
  vocab: Vocabulary | undefined,
): Omit<PreprocessSummary, "unitsRun" | "unitsSkipped" | "seconds"> {
  const log = getLogger();
  units.sort((a, b) => a.fileIndex - b.fileIndex || a.unit - b.unit);
  const planByIndex = new Map(plans.map((p) => [p.index, p.plan]));
  const allGenes = [...new Set(plans.flatMap((p) => p.plan.genes))].sort();
  const geneIndex = new Map(allGenes.map((g, i) => [g, i]));
  const merged = new DigestSet(allGenes.length);
  for (const u of units) {
    const plan = planByIndex.get(u.fileIndex)!;
    const bytes = fs.readFileSync(path.join(u.dir ?? out, u.digest));
    const set = DigestSet.fromBytes(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    if (set.size !== plan.genes.length) throw inputError(path.join(u.dir ?? out, u.digest), `holds ${set.size} digests, expected ${plan.genes.length}; the unit is corrupt — delete it and re-run`);
    for (let i = 0; i < set.size; i++) if (set.count(i) > 0) merged.mergeFrom(geneIndex.get(plan.genes[i])!, set, i);
  }
  const medians: Record<string, number> = {};
  let detected = 0;
  for (let i = 0; i < allGenes.length; i++) {
    if (merged.count(i) === 0) continue;
    medians[allGenes[i]] = merged.median(i);
    detected++;
  }

  const perInput = new Map<number, CleanStats>();
  for (const u of units) perInput.set(u.fileIndex, addCleanStats(perInput.get(u.fileIndex) ?? emptyCleanStats(), u.stats));
  const totals = units.reduce((s, u) => addCleanStats(s, u.stats), emptyCleanStats());
  if (totals.cellsOut === 0) {
    throw new GmError(
      `${out}: no cells passed the filters (${totals.cellsIn} in: ${totals.droppedNotPrimary} not primary, ${totals.droppedZeroCounts} with zero counts, ${totals.droppedMinGenes} with fewer than ${identity.settings.minGenes} genes); lower --min-genes or check the inputs`,
    );
  }
  for (const [idx, st] of perInput) if (st.cellsOut === 0) log.warn({ input: planByIndex.get(idx)!.path }, `${planByIndex.get(idx)!.path}: no cell passed the filters`);

  const outVocab = vocab ?? Vocabulary.fromGenes(Object.keys(medians));
  outVocab.save(path.join(out, "vocab.json"));
  writeJsonAtomic(path.join(out, "gene_medians.json"), medians);

  const shards = units.map((u) => ({ path: u.dir ? path.relative(out, path.join(u.dir, u.shard)) : u.shard, rows: u.rows, input: u.fileIndex, unit: u.unit, row_start: u.rowStart, row_end: u.rowEnd }));
  const manifest = {
    format: MANIFEST_FORMAT,
    gm_version: GM_VERSION,
    settings: identity.settings,
    shard: identity.shard,
    inputs: plans
      .sort((a, b) => a.index - b.index)
      .map(({ index, plan }) => {
        const st = perInput.get(index) ?? emptyCleanStats();
        return {
          index,
          path: plan.path,
          format: plan.format,
          counts_location: plan.countsLocation,
          cells_in: st.cellsIn,
          cells_out: st.cellsOut,
          dropped: { not_primary: st.droppedNotPrimary, zero_counts: st.droppedZeroCounts, min_genes: st.droppedMinGenes },
          has_is_primary_data: plan.hasPrimaryColumn,
          obs_columns: plan.obsColumns,
          genes: {
            columns: plan.geneStats.columns,
            kept: plan.geneStats.kept,
            unmapped: plan.geneStats.unmapped,
            not_in_vocab: plan.geneStats.notInVocab,
            filtered_by_type: plan.geneStats.filteredByType,
            duplicate_columns_summed: plan.geneStats.duplicateColumns,
            id_source: plan.geneStats.idSource,
            type_filter: plan.geneStats.typeFilter ?? null,
          },
          gene_table: plan.genes.length,
        };
      }),
    totals: {
      cells_in: totals.cellsIn,
      cells_out: totals.cellsOut,
      dropped: { not_primary: totals.droppedNotPrimary, zero_counts: totals.droppedZeroCounts, min_genes: totals.droppedMinGenes },
      nonzeros_out: totals.nnzOut,
    },
    genes: {
      kept_union: allGenes.length,
      with_median: detected,
      dropped_undetected: allGenes.length - detected,
      vocabulary_size: outVocab.size,
      vocabulary_source: vocab ? identity.settings.vocab : "built from kept genes with a median",
    },
    files: { medians: "gene_medians.json", vocab: "vocab.json", run: "run.json" },
    shards,
    fingerprint: sha1(JSON.stringify({ identity, shards, medians: Object.keys(medians).length })),
  };
  writeJsonAtomic(path.join(out, "manifest.json"), manifest);
  return { out, inputs: plans.length, cellsIn: totals.cellsIn, cellsOut: totals.cellsOut, genesWithMedian: detected };
}
