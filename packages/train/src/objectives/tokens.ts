import { IGNORE_INDEX } from "@gm/engine";

/**
 * The model's token space as the objectives see it: which ids are genes (eligible for masking and
 * for random replacement) and which are specials ([UNK], [PAD], [CLS], [EOS], [MASK]).
 */
export interface TokenSpace {
  /** Model vocabulary size (the data's, plus [MASK] for MLM). */
  vocabSize: number;
  padId: number;
  unkId: number;
  /** [MASK] id, or -1 when the objective adds none (NTP). */
  maskId: number;
  /** Gene ids are [firstGene, endGene). */
  firstGene: number;
  endGene: number;
}

export function isGene(space: TokenSpace, id: number): boolean {
  return id >= space.firstGene && id < space.endGene;
}

/** A micro-batch prepared for the engine: right-padded tokens, lengths, loss targets. */
export interface PreparedBatch {
  tokens: Int32Array;
  lengths: Int32Array;
  targets: Int32Array;
  batch: number;
  length: number;
  /** Positions that carry a loss (targets != -100). */
  lossPositions: number;
  /** Non-pad tokens. */
  tokenCount: number;
}

export { IGNORE_INDEX };

/** Right-pads cells into [batch, length] (length = the longest cell) filled with padId. */
export function padCells(cells: Int32Array[], padId: number): { tokens: Int32Array; lengths: Int32Array; length: number } {
  const length = Math.max(1, ...cells.map((c) => c.length));
  const tokens = new Int32Array(cells.length * length).fill(padId);
  const lengths = new Int32Array(cells.length);
  cells.forEach((c, b) => {
    tokens.set(c, b * length);
    lengths[b] = c.length;
  });
  return { tokens, lengths, length };
}
