import * as path from "node:path";
import { preprocess, PREPROCESS_DEFAULTS, simulate, tokenize, TOKENIZE_DEFAULTS } from "@gm/data";

/**
 * A small simulated dataset carried through preprocess and tokenize into `root`/tok (one cell type
 * batch, one worker): what the end-to-end pretraining tests train on. Returns the tokenized folder.
 */
export async function simulatedTokens(root: string, o: { cells: number; genes: number; seed: number; maxLen: number }): Promise<string> {
  await simulate({ cells: o.cells, genes: o.genes, cellTypes: 3, batches: 1, seed: o.seed, out: path.join(root, "raw", "sim.h5ad") });
  await preprocess({ ...PREPROCESS_DEFAULTS, inputs: [path.join(root, "raw")], out: path.join(root, "pre"), minGenes: 20, unitCells: o.cells, workers: 1 });
  const tok = path.join(root, "tok");
  await tokenize({ ...TOKENIZE_DEFAULTS, input: [path.join(root, "pre")], out: tok, medians: path.join(root, "pre", "gene_medians.json"), maxLen: o.maxLen, batchRows: 100, unitCells: o.cells, workers: 1 });
  return tok;
}
