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
