/**
 * Gene-pair files for the InfoNCE pathway loss (genemamba-model.md §7).
 *
 *  - CSV / TSV: `GENE_A,GENE_B,label` per line (label 1 = positive, 0 = negative), as the reference's
 *    `coexpression.txt`; an optional header line and `#` comments are accepted.
 *  - GMT gene sets (`name<TAB>url<TAB>gene...`): genes of one set form positive pairs; negatives are
 *    seeded random pairs of genes that share no set.
 *
 * Names resolve to token ids through the vocabulary directly (Ensembl ids, or the simulated
 * `ENSG999...` ids), else through a symbol -> Ensembl map (`--gene-map`). Pairs are unordered and
 * deduplicated (first occurrence wins); self pairs and pairs touching [UNK]=0 / [PAD]=1 are dropped.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { inputError } from "@gm/core";
import type { Vocabulary } from "@gm/data";

export interface GenePairs {
  /** Token ids of the two genes and the label (1 = positive, 0 = negative). */
  a: Int32Array;
  b: Int32Array;
  label: Uint8Array;
  source: string;
  stats: {
    /** Data lines read (CSV: pair lines; GMT: gene-set lines). */
    lines: number;
    /** Pairs kept (= a.length). */
    kept: number;
    /** CSV: pairs with a gene that did not map; GMT: set memberships whose gene did not map. */
    unmapped: number;
    /** Pairs seen again (either order) after their first occurrence. */
    duplicates: number;
    positives: number;
    negatives: number;
    /** Pairs of a gene with itself (dropped). */
    selfPairs?: number;
    /** Duplicates whose label differed from the first occurrence (CSV). */
    conflicts?: number;
    /** GMT: sets used, and sets skipped as larger than maxSetSize. */
    sets?: number;
    skippedSets?: number;
  };
}

export type TokenResolver = (name: string) => number | undefined;

export interface GmtPairOptions {
  /** Seed of the negative sampler (default 1). */
  seed?: number;
  /** Negatives drawn per positive (default 1). */
  negativesPerPositive?: number;
  /** Sets with more distinct genes than this are skipped (default 500). */
  maxSetSize?: number;
}

const UNK = 0;
const PAD = 1;
/** Pair keys lo * 2^26 + hi stay exact in a double. */
const KEY_SHIFT = 2 ** 26;

/** name -> token id: a vocabulary token directly, else through the symbol -> Ensembl map. */
export function makeTokenResolver(vocab: Vocabulary, geneMap?: Map<string, string>): TokenResolver {
  const special = new Set(Object.keys(vocab.specials));
  const direct = (name: string): number | undefined => (special.has(name) ? undefined : vocab.get(name));
  return (raw: string) => {
    const name = raw.trim();
    if (!name) return undefined;
    let id = direct(name);
    if (id !== undefined) return id;
    // Versioned Ensembl ids (ENSG00000121410.12)
    const m = /^(ENS[A-Z]*G\d+)\.\d+$/.exec(name);
    if (m && (id = direct(m[1])) !== undefined) return id;
    if (geneMap) {
      const ens = geneMap.get(name) ?? geneMap.get(name.toUpperCase());
      if (ens !== undefined) return direct(ens);
    }
    return undefined;
  };
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw inputError(file, code === "ENOENT" ? "gene pair file not found; check the path" : `cannot read gene pair file (${code})`);
  }
}

const HEADER_LABEL = /^["']?(label|labels|y|target|class|positive|is_positive|pos|link|interaction)["']?$/i;
const HEADER_GENE = /^["']?(a|gene|gene_?a|gene_?1|genea|symbol|symbol_?a|symbol_?1|source|ensembl|ensembl_?a|id_?a|id_?1|g1|ga)["']?$/i;

function parseLabel(s: string): 0 | 1 | undefined {
  const t = s.trim().toLowerCase();
  if (t === "1" || t === "1.0" || t === "true") return 1;
  if (t === "0" || t === "0.0" || t === "false") return 0;
  return undefined;
}

function pairKey(x: number, y: number): number {
  return x < y ? x * KEY_SHIFT + y : y * KEY_SHIFT + x;
}

function checkId(file: string, id: number): void {
  if (!Number.isInteger(id) || id < 0 || id >= KEY_SHIFT) throw inputError(file, `token id ${id} is out of range`);
}

function noneMapped(file: string, what: string, example: string | undefined): never {
  throw inputError(
    file,
    `none of the ${what} could be mapped to vocabulary tokens${example ? ` (e.g. '${example}')` : ""}; ` +
      "if the file names gene symbols, pass --gene-map with a symbol -> Ensembl map (e.g. gene_symbols.json), and check --vocab",
  );
}

/** CSV or TSV `gene_a,gene_b,label` (optional header line, `#` comments). */
export function loadPairsCsv(file: string, resolve: TokenResolver): GenePairs {
  const text = readText(file);
  const lines = text.split("\n");
  const a: number[] = [];
  const b: number[] = [];
  const label: number[] = [];
  const firstLabel = new Map<number, number>();
  let dataLines = 0, unmapped = 0, duplicates = 0, selfPairs = 0, conflicts = 0, positives = 0;
  let sep: string | undefined;
  let sawFirst = false;
  let example: string | undefined;
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i];
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (i === 0 && line.charCodeAt(0) === 0xfeff) line = line.slice(1);
    if (!line.trim() || line.trimStart().startsWith("#")) continue;
    const lineNo = i + 1;
    if (sep === undefined) sep = line.includes("\t") ? "\t" : ",";
    const cols = line.split(sep).map((c) => c.trim());
    // A header names the columns: its third field is not a label.
    if (!sawFirst) {
      sawFirst = true;
      if (cols.length === 3 && parseLabel(cols[2]) === undefined && (HEADER_LABEL.test(cols[2]) || HEADER_GENE.test(cols[0]))) continue;
    }
    if (cols.length !== 3) {
      throw inputError(
        file,
        `line ${lineNo}: expected 3 ${sep === "\t" ? "tab" : "comma"}-separated columns (gene_a${sep === "\t" ? "<TAB>" : ","}gene_b${sep === "\t" ? "<TAB>" : ","}label), found ${cols.length}; fix or remove the line`,
      );
    }
    const lab = parseLabel(cols[2]);
    if (lab === undefined) throw inputError(file, `line ${lineNo}: label '${cols[2]}' must be 1 (positive) or 0 (negative); fix or remove the line`);
    dataLines++;
    const x = resolve(cols[0]);
    const y = resolve(cols[1]);
    if (x === undefined || y === undefined || x === UNK || x === PAD || y === UNK || y === PAD) {
      unmapped++;
      if (example === undefined) example = x === undefined || x === UNK || x === PAD ? cols[0] : cols[1];
      continue;
    }
    checkId(file, x);
    checkId(file, y);
    if (x === y) {
      selfPairs++;
      continue;
    }
    const key = pairKey(x, y);
    const prev = firstLabel.get(key);
    if (prev !== undefined) {
      duplicates++;
      if (prev !== lab) conflicts++;
      continue;
    }
    firstLabel.set(key, lab);
    a.push(x);
    b.push(y);
    label.push(lab);
    positives += lab;
  }
  if (dataLines === 0) throw inputError(file, "no gene pairs found; expected lines 'gene_a,gene_b,label'");
  if (a.length === 0) {
    if (unmapped > 0) noneMapped(file, `${dataLines} pairs`, example);
    throw inputError(file, `no usable gene pairs (all ${dataLines} are self pairs)`);
  }
  return {
    a: Int32Array.from(a),
    b: Int32Array.from(b),
    label: Uint8Array.from(label),
    source: file,
    stats: { lines: dataLines, kept: a.length, unmapped, duplicates, positives, negatives: a.length - positives, selfPairs, conflicts },
  };
}

/** splitmix32-style seeded uniform [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    z ^= z >>> 16;
    return (z >>> 0) / 4294967296;
  };
}

function shareSet(x: Int32Array, y: Int32Array): boolean {
  let i = 0, j = 0;
  while (i < x.length && j < y.length) {
    if (x[i] === y[j]) return true;
    if (x[i] < y[j]) i++;
    else j++;
  }
  return false;
}

/**
 * GMT gene sets: positives are all unordered pairs of mapped genes within each set (sets with more
 * than maxSetSize distinct genes are skipped); negatives are seeded random pairs of genes of the used
 * sets that share no set of the file (skipped sets included), negativesPerPositive times as many.
 */
export function loadPairsGmt(file: string, resolve: TokenResolver, opts: GmtPairOptions = {}): GenePairs {
  const seed = opts.seed ?? 1;
  const ratio = opts.negativesPerPositive ?? 1;
  const maxSetSize = opts.maxSetSize ?? 500;
  if (!(ratio >= 0) || !Number.isFinite(ratio)) throw inputError(file, `negativesPerPositive must be a non-negative number (got ${ratio})`);
  if (!(maxSetSize >= 2)) throw inputError(file, `maxSetSize must be at least 2 (got ${maxSetSize})`);
  const text = readText(file);
  const lines = text.split("\n");
  let dataLines = 0, unmapped = 0, skippedSets = 0, usedSets = 0, example: string | undefined;
  const sets: Int32Array[] = []; // mapped, distinct, sorted ids of every set (skipped ones too, for negatives)
  const used: boolean[] = [];
  let rawPairs = 0;
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i];
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (!line.trim() || line.startsWith("#")) continue;
    const cols = line.split("\t");
    if (cols.length < 3) throw inputError(file, `line ${i + 1}: a GMT line needs 'name<TAB>description<TAB>gene...' (found ${cols.length} tab-separated fields); fix or remove the line`);
    dataLines++;
    const names = new Set<string>();
    for (let c = 2; c < cols.length; c++) {
      const g = cols[c].trim();
      if (g) names.add(g);
    }
    const ids = new Set<number>();
    for (const g of names) {
      const id = resolve(g);
      if (id === undefined || id === UNK || id === PAD) {
        unmapped++;
        if (example === undefined) example = g;
        continue;
      }
      checkId(file, id);
      ids.add(id);
    }
    const arr = Int32Array.from(ids).sort();
    const skip = names.size > maxSetSize;
    if (skip) skippedSets++;
    else if (arr.length >= 2) {
      usedSets++;
      rawPairs += (arr.length * (arr.length - 1)) / 2;
    }
    sets.push(arr);
    used.push(!skip);
  }
  if (dataLines === 0) throw inputError(file, "no gene sets found; expected GMT lines 'name<TAB>description<TAB>gene...'");
  // Positives: every within-set pair, deduplicated by sorting the pair keys.
  const keys = new Float64Array(rawPairs);
  let n = 0;
  for (let s = 0; s < sets.length; s++) {
    if (!used[s]) continue;
    const arr = sets[s];
    for (let i = 0; i < arr.length; i++) for (let j = i + 1; j < arr.length; j++) keys[n++] = arr[i] * KEY_SHIFT + arr[j];
  }
  keys.sort();
  let positives = 0;
  for (let i = 0; i < n; i++) if (i === 0 || keys[i] !== keys[i - 1]) keys[positives++] = keys[i];
  const duplicates = n - positives;
  if (positives === 0) {
    if (unmapped > 0 && sets.every((s) => s.length < 2)) noneMapped(file, "gene set members", example);
    throw inputError(file, `no gene set of at most ${maxSetSize} genes has two mapped genes; raise maxSetSize or check --vocab/--gene-map`);
  }
  // Membership lists (all sets) for the "share no set" test; the negative universe is the genes of used sets.
  const member = new Map<number, number[]>();
  const universe = new Set<number>();
  for (let s = 0; s < sets.length; s++) {
    for (const id of sets[s]) {
      let m = member.get(id);
      if (!m) member.set(id, (m = []));
      m.push(s);
      if (used[s] && sets[s].length >= 2) universe.add(id);
    }
  }
  const memberArr = new Map<number, Int32Array>();
  for (const [id, m] of member) memberArr.set(id, Int32Array.from(m));
  const genes = Int32Array.from(universe).sort();
  const target = Math.round(ratio * positives);
  const negKeys = new Set<number>();
  const negA: number[] = [];
  const negB: number[] = [];
  const rand = rng(seed);
  const maxTries = 50 * target + 1000;
  for (let t = 0; t < maxTries && negA.length < target && genes.length >= 2; t++) {
    const x = genes[Math.floor(rand() * genes.length)];
    const y = genes[Math.floor(rand() * genes.length)];
    if (x === y || shareSet(memberArr.get(x)!, memberArr.get(y)!)) continue;
    const key = pairKey(x, y);
    if (negKeys.has(key)) continue;
    negKeys.add(key);
    negA.push(x);
    negB.push(y);
  }
  const total = positives + negA.length;
  const a = new Int32Array(total);
  const b = new Int32Array(total);
  const label = new Uint8Array(total);
  for (let i = 0; i < positives; i++) {
    const k = keys[i];
    const lo = Math.floor(k / KEY_SHIFT);
    a[i] = lo;
    b[i] = k - lo * KEY_SHIFT;
    label[i] = 1;
  }
  for (let i = 0; i < negA.length; i++) {
    a[positives + i] = negA[i];
    b[positives + i] = negB[i];
  }
  return {
    a,
    b,
    label,
    source: file,
    stats: { lines: dataLines, kept: total, unmapped, duplicates, positives, negatives: negA.length, sets: usedSets, skippedSets },
  };
}

/** A GMT file (by extension) or a CSV/TSV pair list. */
export function loadGenePairs(file: string, resolve: TokenResolver, opts: GmtPairOptions = {}): GenePairs {
  return path.extname(file).toLowerCase() === ".gmt" ? loadPairsGmt(file, resolve, opts) : loadPairsCsv(file, resolve);
}
