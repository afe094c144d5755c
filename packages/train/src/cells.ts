/**
 * Cells for the downstream commands, from either input kind, as token ids of the model's vocabulary:
 *  - an h5ad / 10x file: tokenized on the fly with the model's vocabulary and medians, every row in
 *    file order (rows without a tokenizable gene come back with no ids);
 *  - a `gm tokenize` folder: its ids remapped by token name into the model's vocabulary (so a
 *    dataset tokenized with --cls or with a reordered vocabulary still lines up), refusing data
 *    whose genes the model does not know.
 * Specials of the input ([CLS], [EOS]) are dropped; callers add the model's own [CLS].
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { inputError } from "@gm/core";
import { loadVocabulary, readTokenizedCells, tokenizeCellFile, type Vocabulary } from "@gm/data";

export interface InputCell {
  /** Row in the input (file order). */
  row: number;
  /** Cell name: the obs index for h5ad/10x input, the row number for tokenized input. */
  name: string;
  /** Ranked gene token ids in the model's vocabulary (no specials), possibly empty. */
  ids: Int32Array;
  columns: Record<string, string | null>;
}

export interface CellSourceOptions {
  vocab: Vocabulary;
  /** Loaded lazily: only h5ad/10x input needs them. */
  medians: () => Map<string, number>;
  /** Gene tokens kept per cell (top-ranked first). */
  maxGenes: number;
  columns: string[];
  countsLayer?: string;
  geneIdColumn?: string;
  geneMap?: string;
  minGenes?: number;
}

export interface CellSource {
  kind: "h5ad" | "tokens";
  path: string;
  nCells: number;
  cells(): Generator<InputCell>;
  close(): void;
}

/** A cell's ids with the model's [CLS] in front (fine-tuned models read the cell from its state). */
export function withCls(ids: Int32Array, clsId: number): Int32Array {
  const s = new Int32Array(ids.length + 1);
  s[0] = clsId;
  s.set(ids, 1);
  return s;
}

export function isTokenizedDir(p: string): boolean {
  return fs.existsSync(p) && fs.statSync(p).isDirectory() && fs.existsSync(path.join(p, "state.json"));
}

export async function openCellSource(input: string, o: CellSourceOptions): Promise<CellSource> {
  if (!fs.existsSync(input)) throw inputError(input, "not found; give an .h5ad file, a 10x output or a gm tokenize folder");
  if (isTokenizedDir(input)) return tokenizedSource(input, o);
  const file = await tokenizeCellFile(input, {
    vocab: o.vocab,
    medians: o.medians(),
    maxLen: o.maxGenes,
    cls: false,
    minGenes: o.minGenes ?? 0,
    countsLayer: o.countsLayer,
    geneIdColumn: o.geneIdColumn,
    geneMap: o.geneMap,
    obsColumns: o.columns,
  });
  return {
    kind: "h5ad",
    path: input,
    nCells: file.nCells,
    *cells() {
      const names = file.obsNames();
      for (const c of file.cells()) yield { row: c.row, name: names[c.row] ?? String(c.row), ids: c.ids, columns: c.obs };
    },
    close: () => file.close(),
  };
}

function tokenizedSource(dir: string, o: CellSourceOptions): CellSource {
  const dataVocab = loadVocabulary(path.join(dir, "vocab.json"));
  const remap = vocabularyRemap(dataVocab, o.vocab, path.join(dir, "vocab.json"));
  const info = JSON.parse(fs.readFileSync(path.join(dir, "dataset_info.json"), "utf8")) as { splits?: { train?: { num_examples?: number } } };
  const nCells = info.splits?.train?.num_examples ?? -1;
  return {
    kind: "tokens",
    path: dir,
    nCells,
    *cells() {
      let row = 0;
      const buf = new Int32Array(o.maxGenes);
      for (const c of readTokenizedCells(dir, o.columns)) {
        let n = 0;
        for (let i = 0; i < c.ids.length && n < o.maxGenes; i++) {
          const id = remap[c.ids[i]];
          if (id >= 0) buf[n++] = id;
        }
        const columns: Record<string, string | null> = {};
        for (const k of o.columns) {
          const v = c.columns[k];
          columns[k] = v === null || v === undefined ? null : String(v);
        }
        yield { row, name: String(row), ids: buf.slice(0, n), columns };
        row++;
      }
    },
    close: () => undefined,
  };
}

/**
 * data token id -> model token id (-1 for specials, which are dropped). Errors when a data gene is
 * not in the model's vocabulary: the data was tokenized for another model.
 */
export function vocabularyRemap(data: Vocabulary, model: Vocabulary, file: string): Int32Array {
  const remap = new Int32Array(data.size).fill(-1);
  const special = new Set(Object.keys(data.specials));
  const missing: string[] = [];
  let known = 0;
  data.tokens.forEach((t, id) => {
    if (t === undefined || special.has(t)) return;
    const m = model.get(t);
    if (m === undefined || Object.prototype.hasOwnProperty.call(model.specials, t)) missing.push(t);
    else {
      remap[id] = m;
      known++;
    }
  });
  if (missing.length)
    throw inputError(
      file,
      `${missing.length} of the data's ${missing.length + known} genes (e.g. ${missing.slice(0, 3).join(", ")}) are not in the model's vocabulary: the data was tokenized for another model; re-tokenize it with the model's vocab.json (gm tokenize --vocab) or give the h5ad file`,
    );
  return remap;
}
