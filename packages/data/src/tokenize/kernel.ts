/**
 * Tokenize a whole CSR row block in one WebAssembly call (native/wasm/rank.c, tokenize_block):
 * validation, n_counts, the min-genes filter, Geneformer values and ranking. It implements exactly
 * the rules of clean.ts + UnitTokenizer (tests check both paths give the same tokens) and is used
 * for inputs without duplicated gene ids; those go through the JS path, which sums duplicates.
 */
import { inputError } from "@gm/core";
import type { CsrBlock } from "../types.js";
import { rankKernel } from "../rank.js";
import { badValue, nonInteger } from "../clean.js";

export interface BlockTokens {
  /** Per row: 0 kept, 1 not primary, 2 zero counts, 3 fewer than minGenes genes, 4 no vocabulary gene. */
  status: Uint8Array;
  truncated: Uint8Array;
  /** Row r's tokens are ids[offsets[r] .. offsets[r+1]) (empty for dropped rows). */
  offsets: Int32Array;
  ids: Int32Array;
}

export interface BlockSettings {
  minGenes: number;
  allowNonInteger: boolean;
  targetSum: number;
  /** Ranked genes kept per cell (max-len minus the specials). */
  room: number;
  clsId: number | null;
  eosId: number | null;
}

const align = (n: number) => (n + 7) & ~7;

export class BlockTokenizer {
  private readonly k = rankKernel();

  /**
   * colToken/colMedian: per matrix column, the token id (-1 when the gene is not tokenized) and
   * the median. file/location only label errors.
   */
  constructor(
    private readonly colToken: Int32Array,
    private readonly colMedian: Float64Array,
    private readonly s: BlockSettings,
    private readonly file: string,
    private readonly location: string,
  ) {}

  /** rowTotal: n_counts per row when known (preprocessed cells); otherwise summed from the block. */
  run(block: CsrBlock, primary: Uint8Array | null, rowTotal: Float64Array | null = null): BlockTokens {
    const n = block.nRows;
    const nnz = block.indices.length;
    const f64 = block.data instanceof Float64Array;
    const G = this.colToken.length;
    const specials = (this.s.clsId !== null ? 1 : 0) + (this.s.eosId !== null ? 1 : 0);
    const outCap = Math.min(nnz + specials * n, n * (this.s.room + specials));
    // arena layout
    let off = 0;
    const place = (bytes: number) => {
      const at = off;
      off += align(bytes);
      return at;
    };
    const oIndptr = place(4 * (n + 1));
    const oIndices = place(4 * nnz);
    const oData = place((f64 ? 8 : 4) * nnz);
    const oPrimary = place(n);
    const oTotal = place(8 * n);
    const oToken = place(4 * G);
    const oMedian = place(8 * G);
    const oOut = place(4 * Math.max(outCap, 1));
    const oOff = place(4 * (n + 1));
    const oStatus = place(n);
    const oTrunc = place(n);
    const base = this.k.arena(off);
    if (base === 0) throw new Error(`cannot allocate ${off} bytes of WebAssembly memory for a row block`);
    const buf = this.k.memory.buffer;
    new Int32Array(buf, base + oIndptr, n + 1).set(block.indptr);
    new Int32Array(buf, base + oIndices, nnz).set(block.indices);
    if (f64) new Float64Array(buf, base + oData, nnz).set(block.data);
    else new Float32Array(buf, base + oData, nnz).set(block.data);
    if (primary) new Uint8Array(buf, base + oPrimary, n).set(primary);
    if (rowTotal) new Float64Array(buf, base + oTotal, n).set(rowTotal);
    new Int32Array(buf, base + oToken, G).set(this.colToken);
    new Float64Array(buf, base + oMedian, G).set(this.colMedian);
    const rc = this.k.tokenize_block(
      n,
      base + oIndptr,
      base + oIndices,
      base + oData,
      f64 ? 1 : 0,
      primary ? base + oPrimary : 0,
      rowTotal ? base + oTotal : 0,
      base + oToken,
      base + oMedian,
      this.s.minGenes,
      this.s.allowNonInteger ? 1 : 0,
      this.s.targetSum,
      this.s.room,
      this.s.clsId ?? -1,
      this.s.eosId ?? -1,
      base + oOut,
      base + oOff,
      base + oStatus,
      base + oTrunc,
    );
    if (rc === 1) throw badValue(this.file, this.location, this.k.err_value(), block.rowStart + this.k.err_row(), undefined, this.k.err_col());
    if (rc === 2) throw nonInteger(this.file, this.location, this.k.err_value(), block.rowStart + this.k.err_row(), undefined);
    if (rc !== 0) throw inputError(this.file, `a cell (row ${block.rowStart + this.k.err_row()}) holds more genes than the tokenizer supports`);
    const offsets = new Int32Array(buf, base + oOff, n + 1).slice();
    return {
      status: new Uint8Array(buf, base + oStatus, n).slice(),
      truncated: new Uint8Array(buf, base + oTrunc, n).slice(),
      offsets,
      ids: new Int32Array(buf, base + oOut, offsets[n]).slice(),
    };
  }
}
