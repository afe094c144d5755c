/**
 * `gm preprocess --merge DIR... --out OUT`: combine the outputs of `--shard K/N` runs (one per machine
 * or array task) into one preprocess output. Shards, digests and unit records are hard-linked (copied
 * across file systems) into OUT, and the digests are merged in global (input, unit) order, so the
 * medians equal those of a single run over all inputs.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { inputError, readJsonFile, usageError, writeJsonAtomic } from "@gm/core";
import { finalize, MANIFEST_FORMAT, type PlanRef, type RunIdentity } from "./run.js";
import { digestPath, genesPath, shardPath, unitJsonPath, type UnitResult } from "./unit.js";
import { loadVocabulary } from "../vocab.js";

interface ManifestInput {
  index: number;
  path: string;
  format: PlanRef["plan"]["format"];
  counts_location: string;
  has_is_primary_data: boolean;
  obs_columns: string[];
  genes: { columns: number; kept: number; unmapped: number; not_in_vocab: number; filtered_by_type: number; duplicate_columns_summed: number; id_source: string; type_filter: string | null };
}

interface Manifest {
  format: string;
  shard: { index: number; count: number } | null;
  inputs: ManifestInput[];
  shards: { path: string; input: number; unit: number }[];
}

function linkOrCopy(src: string, dst: string): void {
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  if (fs.existsSync(dst)) fs.rmSync(dst);
  try {
    fs.linkSync(src, dst);
  } catch {
    fs.copyFileSync(src, dst);
  }
}

export function mergePreprocess(dirs: string[], outDir: string): { out: string; inputs: number; cellsIn: number; cellsOut: number; genesWithMedian: number } {
  if (dirs.length === 0) throw usageError("--merge needs at least one preprocess folder");
  const out = path.resolve(outDir);
  if (fs.existsSync(out) && fs.readdirSync(out).filter((n) => !n.startsWith(".")).length > 0) throw inputError(out, "--out folder for --merge must be new or empty");
  const runs = dirs.map((d) => {
    const dir = path.resolve(d);
    if (!fs.existsSync(path.join(dir, "manifest.json"))) throw inputError(dir, "is not a finished gm preprocess folder (no manifest.json); finish that run first");
    const manifest = readJsonFile<Manifest>(path.join(dir, "manifest.json"), "preprocess manifest");
    if (manifest.format !== MANIFEST_FORMAT) throw inputError(dir, `manifest format '${manifest.format}' is not ${MANIFEST_FORMAT}`);
    const identity = readJsonFile<RunIdentity>(path.join(dir, "run.json"), "run record");
    return { dir, manifest, identity };
  });
  const ref = JSON.stringify(runs[0].identity.settings);
  for (const r of runs) {
    if (JSON.stringify(r.identity.settings) !== ref) throw inputError(r.dir, `was run with other options than ${runs[0].dir}; only slices of one run can be merged`);
  }
  const counts = new Set(runs.map((r) => r.identity.shard?.count ?? 1));
  if (counts.size > 1) throw inputError(runs[0].dir, "the folders were made with different --shard N; only slices of one run can be merged");
  const n = [...counts][0];
  const have = new Map<number, string>();
  for (const r of runs) {
    const k = r.identity.shard?.index ?? 1;
    if (have.has(k)) throw inputError(r.dir, `slice ${k}/${n} is also in ${have.get(k)}`);
    have.set(k, r.dir);
  }
  const missing = Array.from({ length: n }, (_, i) => i + 1).filter((k) => !have.has(k));
  if (missing.length) throw usageError(`cannot merge: slice${missing.length > 1 ? "s" : ""} ${missing.map((k) => `${k}/${n}`).join(", ")} missing`);

  fs.mkdirSync(out, { recursive: true });
  const plans: PlanRef[] = [];
  const units: UnitResult[] = [];
  for (const r of runs) {
    for (const inp of r.manifest.inputs) {
      const genes = readJsonFile<string[]>(path.join(r.dir, genesPath(inp.index)), "gene table");
      linkOrCopy(path.join(r.dir, genesPath(inp.index)), path.join(out, genesPath(inp.index)));
      plans.push({
        index: inp.index,
        plan: {
          path: inp.path,
          format: inp.format,
          nCells: 0,
          countsLocation: inp.counts_location,
          genes,
          hasPrimaryColumn: inp.has_is_primary_data,
          obsColumns: inp.obs_columns,
          geneStats: {
            columns: inp.genes.columns,
            kept: inp.genes.kept,
            unmapped: inp.genes.unmapped,
            notInVocab: inp.genes.not_in_vocab,
            filteredByType: inp.genes.filtered_by_type,
            duplicateColumns: inp.genes.duplicate_columns_summed,
            idSource: inp.genes.id_source,
            typeFilter: inp.genes.type_filter ?? undefined,
          },
        },
      });
    }
    for (const s of r.manifest.shards) {
      const u = readJsonFile<UnitResult>(path.join(r.dir, unitJsonPath(s.input, s.unit)), "unit record");
      linkOrCopy(path.join(r.dir, shardPath(s.input, s.unit)), path.join(out, shardPath(s.input, s.unit)));
      linkOrCopy(path.join(r.dir, digestPath(s.input, s.unit)), path.join(out, digestPath(s.input, s.unit)));
      linkOrCopy(path.join(r.dir, unitJsonPath(s.input, s.unit)), path.join(out, unitJsonPath(s.input, s.unit)));
      units.push(u);
    }
  }
  const identity: RunIdentity = {
    ...runs[0].identity,
    shard: null,
    inputs: runs.flatMap((r) => r.identity.inputs).sort((a, b) => a.index - b.index),
  };
  writeJsonAtomic(path.join(out, "run.json"), identity);
  const vocab = identity.settings.vocab ? loadVocabulary(identity.settings.vocab) : undefined;
  return finalize(out, identity, plans, units, vocab);
}
