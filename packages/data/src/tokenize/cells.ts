/**
 * Row-aligned tokenization of one h5ad / 10x input, for callers that must put a result back on
 * every obs row of that input (embeddings written to `obsm`, per-cell predictions): unlike
 * `gm tokenize`, which writes only the cells that produce tokens, this yields EVERY row in file order,
 * with empty ids for rows that are filtered or hold no tokenizable gene, so output row i is input row i.
 *
 * The rules are exactly those of `gm tokenize` on an h5ad/10x input — same gene planning
 * (`planInput`), same cleaning (`cleanRows`: is_primary_data, count validation, n_counts over all
 * genes, zero-count and min-genes filters, duplicated Ensembl ids summed), same token table (vocabulary
 * genes that have a median) and the same ranking (`UnitTokenizer`) — by calling that code, not a copy
 * of it. Memory stays bounded: rows are read in blocks of `blockRows`.
 */
import { inputError, usageError } from "@gm/core";
import type { CellFile, Column } from "../types.js";
import { columnValueAsString } from "../types.js";
import { openCellFile, planInput, type InputPlan } from "../plan.js";
import { cleanRows, emptyCleanStats, primaryMask, type CleanStats } from "../clean.js";
import { loadGeneMap, type Vocabulary } from "../vocab.js";
import { mapGeneTable, UnitTokenizer, type TokenizeSettings } from "./unit.js";
import { TOKENIZE_DEFAULTS } from "./run.js";

export interface CellTokenizeOptions {
  /** Gene vocabulary (Ensembl id -> token id); [CLS]/[EOS] are appended as `gm tokenize` does. */
  vocab: Vocabulary;
  /** Non-zero gene medians (Ensembl id -> median); genes without one are never tokenized. */
  medians: Map<string, number>;
  /** Longest sequence, special tokens included. */
  maxLen: number;
  /** Prepend [CLS] to every non-empty sequence. */
  cls: boolean;
  /** Append [EOS] to every non-empty sequence (default false). */
  eos?: boolean;
  /**
   * Rows expressing fewer genes (over all genes of the matrix) yield empty ids. Default 0: an
   * embedding caller usually wants every cell; pass 200 for `gm tokenize`'s default filter.
   */
  minGenes?: number;
  /** Matrix holding raw counts ("counts" = layers/counts, "raw/X", "X"); auto-detected by default. */
  countsLayer?: string;
  /** var column holding Ensembl ids. */
  geneIdColumn?: string;
  /**
   * Symbol -> Ensembl map for files whose genes are symbols: a loaded map, or the path of a gene-map
   * file (`--gene-map`, read with loadGeneMap).
   */
  geneMap?: Map<string, string> | string;
  /** Accept non-integer counts (default false, as `gm tokenize`). */
  allowNonInteger?: boolean;
  /** Normalization total (default 10,000, Geneformer's). */
  targetSum?: number;
  /** obs columns returned with each row, as strings. */
  obsColumns?: string[];
  /** Rows read per block (default 2048). */
  blockRows?: number;
}

/**
 * Why a row has the ids it has. Everything but "ok" comes with empty ids: "not-primary"
 * (is_primary_data is False), "too-few-genes" (zero counts, or fewer than minGenes expressed genes
 * over all genes of the matrix), "no-tokens" (passed the filters, but no expressed gene is in the
 * vocabulary with a median).
 */
export type CellRowStatus = "ok" | "not-primary" | "too-few-genes" | "no-tokens";

export interface TokenizedRow {
  /** Row in the input (0-based, file order). */
  row: number;
  /** Token ids ([CLS] first when cls); empty unless status is "ok". Owned by the caller. */
  ids: Int32Array;
  status: CellRowStatus;
  /** More ranked genes than fitted in maxLen. */
  truncated: boolean;
  /** Requested obs columns: categorical -> category name, numbers/bools as text, null when missing. */
  obs: Record<string, string | null>;
}

export interface CellTokenizeStats extends CleanStats {
  /** Rows yielded so far (every row, kept or not). */
  rows: number;
  /** Rows with a non-empty sequence. */
  tokenized: number;
  /** Rows that passed the filters but hold no tokenizable gene. */
  noTokens: number;
  truncated: number;
  tokens: number;
}

export interface CellTokenizer {
  readonly path: string;
  /** Rows of the input (obs rows / barcodes); `cells()` yields exactly this many. */
  readonly nCells: number;
  /** The input's gene plan (counts location, kept genes, id source). */
  readonly plan: InputPlan;
  /** The vocabulary actually used, with [CLS]/[EOS] appended when requested. */
  readonly vocab: Vocabulary;
  readonly clsId: number | null;
  readonly eosId: number | null;
  /** Vocabulary genes of this input that have a median, i.e. can become tokens. */
  readonly tokenizableGenes: number;
  /** Filled in while `cells()` runs. */
  readonly stats: CellTokenizeStats;
  /** obs names (h5ad obs index / 10x barcodes) of every row, read in blocks. */
  obsNames(): string[];
  /** Every row in file order. Restartable: each call starts at row 0 and resets `stats`. */
  cells(): Generator<TokenizedRow>;
  /** Release the input file. Idempotent; `cells()`/`obsNames()` throw afterwards. */
  close(): void;
}

/**
 * Open `input` and plan its tokenization. Errors are one-line GmErrors naming the file: unreadable
 * or unknown file type, no raw counts, genes given as symbols without a gene map, no vocabulary gene
 * in the file, a requested obs column that does not exist.
 */
export async function tokenizeCellFile(input: string, opts: CellTokenizeOptions): Promise<CellTokenizer> {
  const eos = opts.eos ?? false;
  if (!Number.isInteger(opts.maxLen) || opts.maxLen < 1 + (opts.cls ? 1 : 0) + (eos ? 1 : 0)) throw usageError(`maxLen must be an integer large enough for the special tokens (got ${opts.maxLen})`);
  const blockRows = opts.blockRows ?? TOKENIZE_DEFAULTS.blockRows;
  if (!Number.isInteger(blockRows) || blockRows < 1) throw usageError(`blockRows must be a positive integer (got ${blockRows})`);
  const minGenes = opts.minGenes ?? 0;
  if (!Number.isInteger(minGenes) || minGenes < 0) throw usageError(`minGenes must be a non-negative integer (got ${minGenes})`);
  const targetSum = opts.targetSum ?? TOKENIZE_DEFAULTS.targetSum;
  if (!(targetSum > 0) || !Number.isFinite(targetSum)) throw usageError(`targetSum must be a positive number (got ${targetSum})`);
  const allowNonInteger = opts.allowNonInteger ?? false;
  const obsColumns = [...new Set(opts.obsColumns ?? [])];

  // The token table exactly as tokenize() builds it: specials appended, genes with a median.
  const vocab = opts.vocab.withSpecials([...(opts.cls ? ["[CLS]"] : []), ...(eos ? ["[EOS]"] : [])]);
  const clsId = opts.cls ? vocab.get("[CLS]")! : null;
  const eosId = eos ? vocab.get("[EOS]")! : null;
  const genes = vocab.genes().filter((g) => opts.medians.has(g));
  if (genes.length === 0) throw usageError("no gene of the vocabulary has a median; medians and vocabulary do not belong together");
  const table = {
    index: new Map(genes.map((g, i) => [g, i])),
    tokenIds: Int32Array.from(genes, (g) => vocab.get(g)!),
    medians: Float64Array.from(genes, (g) => opts.medians.get(g)!),
  };

  // planInput reports unreadable files, missing counts and "no vocabulary gene" (naming
  // --gene-map / --gene-id-column) with the same messages as gm tokenize.
  const geneMap = typeof opts.geneMap === "string" ? loadGeneMap(opts.geneMap) : opts.geneMap;
  const plan = await planInput(input, { countsLayer: opts.countsLayer, allowNonInteger, geneIdColumn: opts.geneIdColumn, geneMap, vocab });
  const { tokenOf, medianOf } = mapGeneTable(plan.genes, table);
  let tokenizableGenes = 0;
  for (let i = 0; i < tokenOf.length; i++) if (tokenOf[i] >= 0) tokenizableGenes++;
  if (tokenizableGenes === 0) {
    throw inputError(input, `none of its ${plan.genes.length} vocabulary genes has a median, so no cell can produce a token; check that the medians belong to the vocabulary`);
  }

  const file: CellFile = await openCellFile(input);
  let open = true;
  try {
    const avail = file.obsColumns();
    const missing = obsColumns.filter((c) => !avail.includes(c));
    if (missing.length) throw inputError(input, `obs has no column '${missing[0]}' (available: ${avail.join(", ") || "none"})`);
  } catch (e) {
    file.close();
    throw e;
  }

  const settings: TokenizeSettings = {
    maxLen: opts.maxLen,
    clsId,
    eosId,
    targetSum,
    keepColumns: obsColumns,
    minGenes,
    allowNonInteger,
    blockRows,
    batchRows: TOKENIZE_DEFAULTS.batchRows,
    maxShardBytes: TOKENIZE_DEFAULTS.maxShardBytes,
    vocabSize: vocab.size,
  };
  const stats: CellTokenizeStats = { ...emptyCleanStats(), rows: 0, tokenized: 0, noTokens: 0, truncated: 0, tokens: 0 };
  const ensureOpen = () => {
    if (!open) throw new Error(`${input}: cell tokenizer already closed`);
  };

  function* cells(): Generator<TokenizedRow> {
    ensureOpen();
    Object.assign(stats, emptyCleanStats(), { rows: 0, tokenized: 0, noTokens: 0, truncated: 0, tokens: 0 });
    const tok = new UnitTokenizer(settings);
    // cleanRows counts into its own record; the public stats mirror it after every block.
    const clean = emptyCleanStats();
    const empty = new Int32Array(0);
    let blockStart = 0;
    for (const block of cleanRows(file, plan, { minGenes, allowNonInteger, blockRows, obsColumns, cellIds: false }, 0, plan.nCells, clean)) {
      const cols: [string, Column][] = obsColumns.map((c) => [c, block.obs.columns.get(c)!]);
      const status = rowStatuses(plan, block.nRows, block.obsRows, block.obs.columns);
      let k = 0; // next kept cell of the block
      for (let r = 0; r < block.nRows; r++) {
        const obs: Record<string, string | null> = {};
        for (const [name, col] of cols) obs[name] = columnValueAsString(col, r);
        const row = blockStart + r;
        stats.rows++;
        if (k < block.nCells && block.obsRows[k] === r) {
          const res = tok.cell(block.genes, block.counts, block.indptr[k], block.indptr[k + 1], block.nCounts[k], tokenOf, medianOf);
          k++;
          if (res.n === 0) {
            stats.noTokens++;
            yield { row, ids: empty, status: "no-tokens", truncated: false, obs };
            continue;
          }
          stats.tokenized++;
          stats.tokens += res.n;
          if (res.truncated) stats.truncated++;
          yield { row, ids: tok.tokens.slice(0, res.n), status: "ok", truncated: res.truncated, obs };
        } else {
          yield { row, ids: empty, status: status[r], truncated: false, obs };
        }
      }
      blockStart += block.nRows;
      Object.assign(stats, clean);
    }
  }

  return {
    path: input,
    nCells: plan.nCells,
    plan,
    vocab,
    clsId,
    eosId,
    tokenizableGenes,
    stats,
    obsNames(): string[] {
      ensureOpen();
      const out: string[] = [];
      for (let a = 0; a < plan.nCells; a += blockRows) {
        const b = Math.min(plan.nCells, a + blockRows);
        for (const name of file.readObs([], a, b, true).index) out.push(name);
      }
      return out;
    },
    cells,
    close(): void {
      if (!open) return;
      open = false;
      file.close();
    },
  };
}

/**
 * Status of each row of a block cleanRows yielded. cleanRows reports only kept rows, so a dropped row
 * is "not-primary" where clean.ts's own primaryMask says so, and otherwise failed the count filters
 * (zero counts, or fewer than minGenes expressed genes; cleanRows counts the two apart in its stats).
 */
function rowStatuses(plan: InputPlan, nRows: number, kept: Int32Array, obsCols: Map<string, Column>): CellRowStatus[] {
  const out = new Array<CellRowStatus>(nRows).fill("too-few-genes");
  for (let i = 0; i < kept.length; i++) out[kept[i]] = "ok";
  if (kept.length === nRows || !plan.hasPrimaryColumn) return out;
  const primary = primaryMask(obsCols.get("is_primary_data")!, nRows);
  for (let r = 0; r < nRows; r++) if (out[r] !== "ok" && !primary[r]) out[r] = "not-primary";
  return out;
}
