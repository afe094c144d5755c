/**
 * Masked gene modelling (BERT / Geneformer style), the default objective for bidirectional models:
 * per cell, round(maskProb * genes) gene positions (at least one) are selected without replacement;
 * of those, 80% become [MASK], 10% a uniformly random gene and 10% stay unchanged; the loss is taken
 * at the selected positions only (every other target is -100). Randomness is keyed by
 * (seed, epoch, sample), so a cell is masked the same way whichever rank or micro-batch holds it.
 */
import { Rng, Stream } from "../rng.js";
import { padBatch } from "@gm/engine";
import { IGNORE_INDEX, isGene, type PreparedBatch, type TokenSpace } from "./tokens.js";

export interface MlmOptions {
  maskProb: number;
  /** Of the selected positions: share replaced by [MASK] and share by a random gene (rest unchanged). */
  maskTokenProb: number;
  randomTokenProb: number;
}

export const MLM_DEFAULTS: MlmOptions = { maskProb: 0.15, maskTokenProb: 0.8, randomTokenProb: 0.1 };

export interface CellRef {
  ids: Int32Array;
  sample: number;
}

/** Masks one cell in place into `tokens`/`targets` (views of the cell's row). Returns the selected count. */
export function maskCell(ids: Int32Array, tokens: Int32Array, targets: Int32Array, space: TokenSpace, o: MlmOptions, rng: Rng): number {
  const genePos: number[] = [];
  for (let t = 0; t < ids.length; t++) if (isGene(space, ids[t])) genePos.push(t);
  if (genePos.length === 0) return 0;
  const k = Math.max(1, Math.round(o.maskProb * genePos.length));
  // partial Fisher-Yates: the first k entries become a uniform k-subset
  for (let i = 0; i < k; i++) {
    const j = i + rng.below(genePos.length - i);
    const tmp = genePos[i];
    genePos[i] = genePos[j];
    genePos[j] = tmp;
  }
  const nGenes = space.endGene - space.firstGene;
  for (let i = 0; i < k; i++) {
    const t = genePos[i];
    targets[t] = ids[t];
    const u = rng.uniform();
    if (u < o.maskTokenProb) tokens[t] = space.maskId;
    else if (u < o.maskTokenProb + o.randomTokenProb) tokens[t] = space.firstGene + rng.below(nGenes);
  }
  return k;
}

export function prepareMlm(cells: CellRef[], space: TokenSpace, o: MlmOptions, seed: number, epoch: number): PreparedBatch {
  if (space.maskId < 0) throw new Error("MLM needs a [MASK] token id");
  const { tokens, lengths, length } = padBatch(cells.map((c) => c.ids), space.padId);
  const targets = new Int32Array(tokens.length).fill(IGNORE_INDEX);
  let lossPositions = 0, tokenCount = 0;
  cells.forEach((c, b) => {
    const row = b * length;
    const rng = new Rng(seed, Stream.mask, epoch, c.sample);
    lossPositions += maskCell(c.ids, tokens.subarray(row, row + c.ids.length), targets.subarray(row, row + c.ids.length), space, o, rng);
    tokenCount += c.ids.length;
  });
  return { tokens, lengths, targets, batch: cells.length, length, lossPositions, tokenCount };
}
