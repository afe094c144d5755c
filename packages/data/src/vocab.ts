/**
 * Gene vocabularies: Ensembl gene id <-> token id.
 *
 * Accepted inputs (auto-detected):
 *  - gm / GeneMamba JSON: {"specials": {"[UNK]":0,"[PAD]":1}, "first_gene_id": 2, "genes": [...]}
 *  - Hugging Face tokenizer.json with a WordLevel model: {"model": {"type": "WordLevel", "vocab": {tok: id}}}
 *  - a flat JSON object {token: id}
 *  - a plain text gene list (one Ensembl id per line; ids assigned after [UNK]=0, [PAD]=1 in file order)
 */
import * as fs from "node:fs";
import { inputError, readJsonFile, writeJsonAtomic } from "@gm/core";

export const DEFAULT_SPECIALS: Record<string, number> = { "[UNK]": 0, "[PAD]": 1 };

export class Vocabulary {
  /** token string -> id, specials included. */
  readonly ids: Map<string, number>;
  /** id -> token string (dense; undefined where no token). */
  readonly tokens: string[];
  readonly specials: Record<string, number>;

  constructor(entries: Iterable<[string, number]>, specials: Record<string, number>) {
    this.ids = new Map(entries);
    this.specials = { ...specials };
    for (const [k, v] of Object.entries(specials)) this.ids.set(k, v);
    this.tokens = [];
    for (const [t, id] of this.ids) this.tokens[id] = t;
  }

  get size(): number {
    return this.tokens.length;
  }

  get(token: string): number | undefined {
    return this.ids.get(token);
  }

  /** Gene ids (non-special tokens) in id order. */
  genes(): string[] {
    const special = new Set(Object.keys(this.specials));
    return this.tokens.filter((t, i) => t !== undefined && !special.has(t) && this.ids.get(t) === i);
  }

  /** A copy with extra special tokens appended after the last id (ids unchanged for existing tokens). */
  withSpecials(names: string[]): Vocabulary {
    const specials = { ...this.specials };
    let next = this.size;
    for (const n of names) if (!this.ids.has(n)) specials[n] = next++;
    const entries = [...this.ids].filter(([t]) => !(t in specials));
    return new Vocabulary(entries, specials);
  }

  /** Build a vocabulary of sorted gene ids after the default specials, as vocab_25426.json is laid out. */
  static fromGenes(genes: Iterable<string>, specials: Record<string, number> = DEFAULT_SPECIALS): Vocabulary {
    const sorted = [...new Set(genes)].sort();
    const first = Math.max(-1, ...Object.values(specials)) + 1;
    return new Vocabulary(
      sorted.map((g, i) => [g, first + i] as [string, number]),
      specials,
    );
  }

  /** The gm JSON form ({specials, first_gene_id, genes}); genes must be contiguous after the specials. */
  toJSON(): { specials: Record<string, number>; first_gene_id: number; genes: string[]; extra_specials?: Record<string, number> } {
    const genes = this.genes();
    const firstGene = genes.length ? this.ids.get(genes[0])! : Math.max(-1, ...Object.values(this.specials)) + 1;
    const before: Record<string, number> = {};
    const after: Record<string, number> = {};
    for (const [k, v] of Object.entries(this.specials)) (v < firstGene ? before : after)[k] = v;
    const out: { specials: Record<string, number>; first_gene_id: number; genes: string[]; extra_specials?: Record<string, number> } = {
      specials: before,
      first_gene_id: firstGene,
      genes,
    };
    if (Object.keys(after).length) out.extra_specials = after;
    return out;
  }

  save(file: string): void {
    writeJsonAtomic(file, this.toJSON());
  }
}

function fromObject(file: string, obj: Record<string, unknown>): Vocabulary {
  const entries: [string, number][] = [];
  for (const [k, v] of Object.entries(obj)) {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw inputError(file, `token '${k}' has id ${JSON.stringify(v)}; ids must be non-negative integers`);
    entries.push([k, v]);
  }
  const specials: Record<string, number> = {};
  const genes: [string, number][] = [];
  for (const [k, v] of entries) (/^\[.*\]$|^<.*>$/.test(k) ? (specials[k] = v) : genes.push([k, v]));
  return new Vocabulary(genes, specials);
}

export function loadVocabulary(file: string): Vocabulary {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw inputError(file, code === "ENOENT" ? "vocabulary file not found; check --vocab" : `cannot read vocabulary (${code})`);
  }
  return parseVocabulary(text, file);
}

/** A vocabulary from the text of a vocab.json / tokenizer.json / gene list; `file` names it in errors. */
export function parseVocabulary(text: string, file: string): Vocabulary {
  const trimmed = text.trimStart();
  if (trimmed.startsWith("{")) {
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw inputError(file, `vocabulary is not valid JSON (${(e as Error).message})`);
    }
    if (Array.isArray(obj.genes)) {
      const specials = (obj.specials as Record<string, number> | undefined) ?? DEFAULT_SPECIALS;
      const first = typeof obj.first_gene_id === "number" ? obj.first_gene_id : Math.max(-1, ...Object.values(specials)) + 1;
      const genes = obj.genes as unknown[];
      const entries = genes.map((g, i) => {
        if (typeof g !== "string") throw inputError(file, `genes[${i}] is not a string`);
        return [g, first + i] as [string, number];
      });
      const extra = (obj.extra_specials as Record<string, number> | undefined) ?? {};
      return new Vocabulary(entries, { ...specials, ...extra });
    }
    const model = obj.model as { type?: string; vocab?: Record<string, unknown> } | undefined;
    if (model && typeof model === "object") {
      if (model.type !== "WordLevel" || !model.vocab) throw inputError(file, `tokenizer.json model type '${model.type}' is not supported (expected WordLevel)`);
      const v = fromObject(file, model.vocab);
      // added_tokens of a tokenizer.json are specials too
      return v;
    }
    return fromObject(file, obj);
  }
  const genes = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  if (genes.length === 0) throw inputError(file, "vocabulary file is empty");
  return new Vocabulary(
    genes.map((g, i) => [g, 2 + i] as [string, number]),
    DEFAULT_SPECIALS,
  );
}

/** Gene medians: {ensembl_id: median}. */
export function loadMedians(file: string): Map<string, number> {
  return parseMedians(readJsonFile<Record<string, unknown>>(file, "medians file"), file);
}

/** Gene medians from a parsed gene_medians.json object; `file` names it in errors. */
export function parseMedians(obj: unknown, file: string): Map<string, number> {
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) throw inputError(file, "medians must be a JSON object {ensembl_id: median}");
  const m = new Map<string, number>();
  for (const [k, v] of Object.entries(obj)) {
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw inputError(file, `median of ${k} is ${JSON.stringify(v)}; medians must be positive numbers`);
    m.set(k, v);
  }
  if (m.size === 0) throw inputError(file, "medians file is empty");
  return m;
}

/** Symbol -> Ensembl map: {"symbol_to_ensembl": {...}} or a flat {symbol: ensembl}. */
export function loadGeneMap(file: string): Map<string, string> {
  const obj = readJsonFile<Record<string, unknown>>(file, "gene map");
  const src = (obj?.symbol_to_ensembl ?? obj ?? {}) as Record<string, unknown>;
  const m = new Map<string, string>();
  for (const [k, v] of Object.entries(src)) if (typeof v === "string") m.set(k, v);
  if (m.size === 0) throw inputError(file, "gene map holds no symbol -> Ensembl entries");
  return m;
}
