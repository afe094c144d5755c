// End to end on real data: pbmc68k_reduced_counts.h5ad -> gm tokenize (the real binary) -> a small
// GeneMamba trained for a few steps on those tokens with a masked-token objective -> checkpoint ->
// reload -> cell embeddings. Checks the pieces fit: the tokenizer's ids fit the engine's vocabulary,
// the loss falls on real cells, and a checkpoint written mid-run reproduces the embeddings.
import { describe, expect, it } from "vitest";
import * as path from "node:path";
import { readTokenizedCells } from "@gm/data";
import { GeneMamba, IGNORE_INDEX, padBatch } from "@gm/engine";
import { gm } from "./helpers/cli.js";
import { hasShared, shared, tmpDir } from "./helpers/paths.js";

describe.skipIf(!hasShared)("engine on tokenized real data (pbmc68k)", () => {
  it("tokenize -> train -> checkpoint -> embeddings", () => {
    const dir = tmpDir("gm-engine-e2e-");
    const tok = path.join(dir, "tok");
    const r = gm(["tokenize", shared("h5ad/pbmc68k_reduced_counts.h5ad"), "--out", tok, "--medians", shared("genes/gene_medians_v1.json"),
      "--vocab", shared("genes/vocab_25426.json"), "--gene-map", shared("genes/gene_symbols.json"), "--counts-layer", "counts",
      "--max-len", "128", "--keep-columns", "bulk_labels"]);
    expect(r.code, r.stderr).toBe(0);
    const read = [...readTokenizedCells(tok, ["bulk_labels"])];
    const ids = read.map((c) => c.ids), labels = read.map((c) => String(c.columns.bulk_labels));
    expect(ids.length).toBeGreaterThan(600);
    expect(labels.length).toBe(ids.length);

    const model = GeneMamba.create({ vocab_size: 25426, d_model: 64, n_layer: 2, headdim: 32, d_state: 16, combine: "gate" }, 1);
    // Masked-token objective on real cells: 15% of positions replaced by [UNK] and scored.
    let s = 7;
    const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    const cells = ids.slice(0, 32);
    const batch = padBatch(cells);
    const inputs = batch.tokens.slice();
    const targets = new Int32Array(inputs.length).fill(IGNORE_INDEX);
    for (let b = 0; b < batch.batch; b++)
      for (let t = 0; t < batch.lengths[b]; t++)
        if (rand() < 0.15) {
          targets[b * batch.length + t] = inputs[b * batch.length + t];
          inputs[b * batch.length + t] = 0;
        }
    const train = { ...batch, tokens: inputs, targets };
    const losses: number[] = [];
    for (let step = 1; step <= 8; step++) losses.push(model.trainStep(train, { lr: 3e-3, weightDecay: 0.01, maxGradNorm: 1, step }).loss);
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses[7]).toBeLessThan(losses[0] - 0.5);

    const ckpt = path.join(dir, "checkpoint-8");
    model.save(ckpt);
    const back = GeneMamba.load(ckpt);
    const probe = padBatch(ids.slice(100, 116));
    const e1 = model.cellEmbeddings(probe, "mean"), e2 = back.cellEmbeddings(probe, "mean");
    expect(e2.length).toBe(16 * 64);
    expect(Buffer.from(e1.buffer).equals(Buffer.from(e2.buffer))).toBe(true);
    expect(e1.every(Number.isFinite)).toBe(true);
  });
});
