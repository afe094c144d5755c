/**
 * Next-gene prediction as the GeneMamba reference trains it: the target at position t is the token
 * at t+1, over each cell's valid prefix. Unlike the reference, pads are never scored (it scored
 * PAD -> PAD on every padded row). Caveat (docs/pretrain.md): with a bidirectional model the reverse
 * branch at position t has already read t+1, so the target is visible and the loss can be driven to
 * zero by copying; keep NTP for reproducing the paper and for the unidirectional variant.
 */
import { padBatch } from "@gm/engine";
import { IGNORE_INDEX, type PreparedBatch, type TokenSpace } from "./tokens.js";
import type { CellRef } from "./mlm.js";

export function prepareNtp(cells: CellRef[], space: TokenSpace): PreparedBatch {
  const { tokens, lengths, length } = padBatch(cells.map((c) => c.ids), space.padId);
  const targets = new Int32Array(tokens.length).fill(IGNORE_INDEX);
  let lossPositions = 0, tokenCount = 0;
  cells.forEach((c, b) => {
    const row = b * length;
    for (let t = 0; t + 1 < c.ids.length; t++) targets[row + t] = c.ids[t + 1];
    lossPositions += Math.max(0, c.ids.length - 1);
    tokenCount += c.ids.length;
  });
  return { tokens, lengths, targets, batch: cells.length, length, lossPositions, tokenCount };
}
