/**
 * Per-input planning, done once before any output is written: which matrix holds the raw counts,
 * which Ensembl id each column maps to, which genes are kept and how duplicated ids collapse.
 * A plan is plain data so it can travel to worker threads.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { inputError } from "@gm/core";
import type { CellFile, Column, DataFrame } from "./types.js";
import { columnValueAsString } from "./types.js";
import { openH5ad } from "./h5ad/read.js";
import type { Vocabulary } from "./vocab.js";

export interface GeneOptions {
  geneIdColumn?: string;
  geneMap?: Map<string, string>;
  vocab?: Vocabulary;
}

export interface CountsOptions {
  countsLayer?: string;
  allowNonInteger?: boolean;
}

export interface InputPlan {
  path: string;
  format: CellFile["format"];
  nCells: number;
  countsLocation: string;
  /** Sorted Ensembl ids of the genes kept from this input. */
  genes: string[];
  /** Column index -> index into `genes`, or -1 when the column is not kept. */
  colToGene: Int32Array;
  hasPrimaryColumn: boolean;
  obsColumns: string[];
  geneStats: {
    columns: number;
    kept: number;
    unmapped: number;
    notInVocab: number;
    filteredByType: number;
    duplicateColumns: number;
    idSource: string;
    typeFilter?: string;
  };
  /** Examples of unmapped ids/symbols, for the log. */
  unmappedExamples: string[];
}

const ENSEMBL = /^ENS[A-Z]*G\d{6,}(\.\d+)?$/;
const ID_COLUMNS = ["feature_id", "gene_ids", "gene_id", "ensembl_id", "ensembl_ids", "ensembl", "gene_ensembl_id"];

function stringsOf(col: Column, n: number): (string | null)[] {
  const out: (string | null)[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = columnValueAsString(col, i);
  return out;
}

function ensemblFraction(values: (string | null)[]): number {
  let k = 0;
  let n = 0;
  for (const v of values) {
    if (v === null || v === "") continue;
    n++;
    if (ENSEMBL.test(v)) k++;
  }
  return n ? k / n : 0;
}

export function stripVersion(id: string): string {
  const m = /^(ENS[A-Z]*G\d+)\.\d+$/.exec(id);
  return m ? m[1] : id;
}

/** Map the var table of one matrix to Ensembl ids (null where unknown). */
export function resolveGeneIds(file: string, varDf: DataFrame, opts: GeneOptions, fallbackVar?: DataFrame): { ids: (string | null)[]; source: string; unmappedExamples: string[] } {
  const n = varDf.index.length;
  let raw: (string | null)[];
  let source: string;
  const lookupColumn = (name: string): Column | undefined => varDf.columns.get(name) ?? (fallbackVar && fallbackVar.index.length === n ? fallbackVar.columns.get(name) : undefined);
  if (opts.geneIdColumn) {
    const col = lookupColumn(opts.geneIdColumn);
    if (!col) {
      throw inputError(file, `var has no column '${opts.geneIdColumn}' (available: ${[...varDf.columns.keys()].join(", ") || "none"}); check --gene-id-column`);
    }
    raw = stringsOf(col, n);
    source = `var.${opts.geneIdColumn}`;
  } else if (ensemblFraction(varDf.index) >= 0.5) {
    raw = varDf.index;
    source = "var index";
  } else {
    const name = ID_COLUMNS.find((c) => {
      const col = lookupColumn(c);
      return col && ensemblFraction(stringsOf(col, n)) >= 0.5;
    });
    if (name) {
      raw = stringsOf(lookupColumn(name)!, n);
      source = `var.${name}`;
    } else {
      const symCol = lookupColumn("feature_name");
      raw = symCol && !opts.geneMap ? stringsOf(symCol, n) : varDf.index;
      source = "var index (gene symbols)";
      if (!opts.geneMap) {
        const example = varDf.index.slice(0, 3).join(", ");
        throw inputError(file, `genes are identified by symbols (e.g. ${example}), not Ensembl ids; pass --gene-map FILE (symbol -> Ensembl) or --gene-id-column COL`);
      }
    }
  }
  const ids: (string | null)[] = new Array(n);
  const unmapped: string[] = [];
  const map = opts.geneMap;
  for (let i = 0; i < n; i++) {
    const v = raw[i];
    let id: string | null = null;
    if (v) {
      if (ENSEMBL.test(v)) id = stripVersion(v);
      else if (map) id = map.get(v) ?? map.get(v.toUpperCase()) ?? null;
    }
    if (id === null && unmapped.length < 5 && v) unmapped.push(v);
    ids[i] = id;
  }
  return { ids, source, unmappedExamples: unmapped };
}

type Sample = { kind: "ok" } | { kind: "nan" | "negative" | "non-integer"; example: number };

/** Sample the first rows (or stored values) of a matrix to see whether it holds raw counts. */
function sampleIntegrality(f: CellFile, location: string): Sample {
  const m = f.matrix(location);
  const rows = Math.min(m.nCells, 500);
  if (rows === 0) return { kind: "ok" };
  const values = m.sampleValues ? m.sampleValues(500 * 2000) : m.readBlock(0, rows).data;
  let nonInteger: number | undefined;
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    if (!Number.isFinite(x)) return { kind: "nan", example: x };
    if (x < 0) return { kind: "negative", example: x };
    if (nonInteger === undefined && !Number.isInteger(x)) nonInteger = x;
  }
  return nonInteger === undefined ? { kind: "ok" } : { kind: "non-integer", example: nonInteger };
}

function describeSample(loc: string, s: Sample): string {
  if (s.kind === "ok") return `${loc} holds raw counts`;
  if (s.kind === "nan") return `${loc} holds ${Number.isNaN(s.example) ? "NaN" : "infinite"} values`;
  return `${loc} holds ${s.kind} values (e.g. ${s.example})`;
}

const AUTO_ORDER = ["raw/X", "X", "layers/counts"];

export function chooseCountsLocation(f: CellFile, opts: CountsOptions): string {
  const available = f.matrixLocations();
  if (opts.countsLayer) {
    const want = opts.countsLayer;
    const loc = available.includes(want) ? want : available.includes(`layers/${want}`) ? `layers/${want}` : undefined;
    if (!loc) throw inputError(f.path, `no matrix '${want}' (available: ${available.join(", ") || "none"}); check --counts-layer`);
    const s = sampleIntegrality(f, loc);
    if (s.kind === "nan" || s.kind === "negative") throw inputError(f.path, `${describeSample(loc, s)}; counts must be non-negative finite numbers — choose another --counts-layer`);
    if (s.kind === "non-integer" && !opts.allowNonInteger) throw inputError(f.path, `${describeSample(loc, s)}; raw counts are needed — choose another --counts-layer or pass --allow-non-integer`);
    return loc;
  }
  if (available.length === 1 && available[0] === "matrix") return "matrix";
  const tried: string[] = [];
  const candidates = AUTO_ORDER.filter((l) => available.includes(l));
  const samples = candidates.map((loc) => [loc, sampleIntegrality(f, loc)] as const);
  for (const [loc, s] of samples) {
    if (s.kind === "ok" || (s.kind === "non-integer" && opts.allowNonInteger)) return loc;
    tried.push(describeSample(loc, s));
  }
  const detail = tried.length ? tried.join("; ") : `no X, raw/X or layers/counts (available: ${available.join(", ") || "none"})`;
  throw inputError(f.path, `no raw counts found: ${detail}; pass --counts-layer NAME to pick the matrix with raw integer counts${samples.some(([, x]) => x.kind === "non-integer") ? " (or --allow-non-integer to accept non-integer values)" : ""}`);
}

function typeFilter(varDf: DataFrame, fallbackVar?: DataFrame): { keep: (i: number) => boolean; name: string } | undefined {
  const n = varDf.index.length;
  for (const name of ["feature_type", "feature_types", "gene_type", "gene_biotype"]) {
    const col = varDf.columns.get(name) ?? (fallbackVar && fallbackVar.index.length === n ? fallbackVar.columns.get(name) : undefined);
    if (!col) continue;
    const vals = stringsOf(col, n);
    if (vals.includes("Gene Expression")) return { keep: (i) => vals[i] === "Gene Expression", name: `${name} == Gene Expression` };
    if (vals.includes("protein_coding")) return { keep: (i) => vals[i] === "protein_coding" || vals[i] === "miRNA", name: `${name} in {protein_coding, miRNA}` };
  }
  return undefined;
}

export async function openCellFile(p: string): Promise<CellFile> {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw inputError(p, "input not found; check the path");
  }
  if (st.isDirectory()) {
    const tenx = await import("./tenx.js");
    if (tenx.isTenxMexDir(p)) return tenx.openTenxMex(p);
    throw inputError(p, "directory is not a 10x MEX folder (matrix.mtx[.gz], features/genes.tsv[.gz], barcodes.tsv[.gz])");
  }
  if (p.endsWith(".h5ad")) return openH5ad(p);
  if (p.endsWith(".h5")) {
    const tenx = await import("./tenx.js");
    return tenx.openTenxH5(p);
  }
  throw inputError(p, "unknown input type; expected .h5ad, a 10x .h5, or a 10x MEX folder");
}

/**
 * The files a `gm census-fetch` folder holds, from its manifest.jsonl: the newest fetched version of
 * each dataset whose file is present (a line cut short by a crash is ignored). Undefined when the
 * folder has no manifest.
 */
export function censusManifestFiles(dir: string): string[] | undefined {
  const file = path.join(dir, "manifest.jsonl");
  if (!fs.existsSync(file)) return undefined;
  const newest = new Map<string, { path: string; fetchedAt: string }>();
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    if (!line.trim()) continue;
    let rec: { dataset_id?: unknown; path?: unknown; fetched_at?: unknown };
    try {
      rec = JSON.parse(line) as typeof rec;
    } catch {
      continue;
    }
    if (typeof rec.dataset_id !== "string" || typeof rec.path !== "string") continue;
    const p = path.resolve(dir, rec.path);
    if (!p.startsWith(path.resolve(dir) + path.sep)) throw inputError(file, `entry ${rec.dataset_id} points outside the folder (${rec.path}); the manifest is corrupt`);
    const fetchedAt = typeof rec.fetched_at === "string" ? rec.fetched_at : "";
    const prev = newest.get(rec.dataset_id);
    if (!prev || fetchedAt >= prev.fetchedAt) newest.set(rec.dataset_id, { path: p, fetchedAt });
  }
  return [...newest.values()].map((x) => x.path).filter((p) => fs.existsSync(p)).sort();
}

/**
 * Expand INPUT arguments: files as given; folders searched (recursively) for .h5ad/.h5 files and MEX
 * folders, except a census-fetch folder, whose manifest.jsonl lists what to read.
 */
export function expandInputs(inputs: string[]): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    const listed = censusManifestFiles(dir);
    if (listed) {
      out.push(...listed);
      return;
    }
    const entries = fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.name.startsWith(".")) continue;
      if (e.isDirectory()) {
        if (isMexDir(p)) out.push(p);
        else walk(p);
      } else if (e.name.endsWith(".h5ad") || (e.name.endsWith(".h5") && !e.name.startsWith("."))) out.push(p);
    }
  };
  for (const inp of inputs) {
    let st: fs.Stats;
    try {
      st = fs.statSync(inp);
    } catch {
      throw inputError(inp, "input not found; check the path");
    }
    if (st.isDirectory() && !isMexDir(inp)) {
      const before = out.length;
      walk(inp);
      if (out.length === before) throw inputError(inp, "folder holds no .h5ad, .h5 or 10x MEX input");
    } else out.push(inp);
  }
  const seen = new Set<string>();
  return out.map((p) => path.resolve(p)).filter((p) => (seen.has(p) ? false : (seen.add(p), true)));
}

function isMexDir(p: string): boolean {
  try {
    const names = fs.readdirSync(p);
    return names.some((n) => /^matrix\.mtx(\.gz)?$/.test(n));
  } catch {
    return false;
  }
}

export async function planInput(p: string, opts: GeneOptions & CountsOptions): Promise<InputPlan> {
  const f = await openCellFile(p);
  try {
    const countsLocation = chooseCountsLocation(f, opts);
    const varDf = f.varFor(countsLocation);
    const { ids, source, unmappedExamples } = resolveGeneIds(p, varDf, opts, f.var);
    const filter = opts.vocab ? undefined : typeFilter(varDf, f.var);
    const n = ids.length;
    let unmapped = 0;
    let notInVocab = 0;
    let filteredByType = 0;
    const keptIds: (string | null)[] = new Array(n).fill(null);
    for (let i = 0; i < n; i++) {
      const id = ids[i];
      if (id === null) {
        unmapped++;
        continue;
      }
      if (opts.vocab) {
        if (opts.vocab.get(id) === undefined) {
          notInVocab++;
          continue;
        }
      } else if (filter && !filter.keep(i)) {
        filteredByType++;
        continue;
      }
      keptIds[i] = id;
    }
    const genes = [...new Set(keptIds.filter((x): x is string => x !== null))].sort();
    const index = new Map(genes.map((g, i) => [g, i]));
    const colToGene = new Int32Array(n).fill(-1);
    let keptColumns = 0;
    for (let i = 0; i < n; i++) {
      const id = keptIds[i];
      if (id !== null) {
        colToGene[i] = index.get(id)!;
        keptColumns++;
      }
    }
    if (genes.length === 0) {
      const why = opts.vocab ? `none of its ${n} genes is in the vocabulary (${unmapped} unmapped, ${notInVocab} not in vocabulary; e.g. ${unmappedExamples.join(", ") || ids.slice(0, 3).join(", ")})` : `none of its ${n} genes could be mapped to an Ensembl id`;
      throw inputError(p, `${why}; check --gene-map, --gene-id-column or --vocab`);
    }
    const obsColumns = f.obsColumns();
    return {
      path: p,
      format: f.format,
      nCells: f.nCells,
      countsLocation,
      genes,
      colToGene,
      hasPrimaryColumn: obsColumns.includes("is_primary_data"),
      obsColumns,
      geneStats: {
        columns: n,
        kept: genes.length,
        unmapped,
        notInVocab,
        filteredByType,
        duplicateColumns: keptColumns - genes.length,
        idSource: source,
        typeFilter: filter?.name,
      },
      unmappedExamples,
    };
  } finally {
    f.close();
  }
}
