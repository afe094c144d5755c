#!/usr/bin/env node
// The README's main job on built-in demo data: simulate -> preprocess -> tokenize -> a few training
// steps of a small GeneMamba on the native engine, into demo-output/.
// Later stages (gm pretrain, finetune, evaluate) replace the engine stage as they land.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { readTokenizedCells } from "@gm/data";
import { GeneMamba, IGNORE_INDEX, loadModelConfig, padBatch } from "@gm/engine";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const out = path.join(root, "demo-output");
const gm = path.join(root, "packages", "cli", "bin", "gm.js");

function step(title, args) {
  console.error(`\n== ${title}\n$ gm ${args.join(" ")}`);
  const t0 = Date.now();
  execFileSync(process.execPath, [gm, ...args], { stdio: "inherit", cwd: root });
  console.error(`   (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });
const rel = (p) => path.relative(root, path.join(out, p));
step("simulate a CELLxGENE-like dataset", ["simulate", "--cells", "4000", "--genes", "20000", "--cell-types", "6", "--batches", "2", "--seed", "7", "--out", rel("raw/demo.h5ad")]);
step("preprocess: filter, normalise, gene medians", ["preprocess", rel("raw"), "--out", rel("pre"), "--workers", "2", "--unit-cells", "2000"]);
step("tokenize: rank-value tokens in HF datasets layout", ["tokenize", rel("pre"), "--out", rel("tok"), "--medians", rel("pre/gene_medians.json"), "--max-len", "2048", "--keep-columns", "cell_type,batch", "--workers", "2"]);

const manifest = JSON.parse(fs.readFileSync(path.join(out, "pre", "manifest.json"), "utf8"));
const index = JSON.parse(fs.readFileSync(path.join(out, "tok", "gm_index.json"), "utf8"));
console.log(`\nDemo done (${path.relative(root, out)}/):`);
console.log(`  cells: ${manifest.totals.cells_in} simulated, ${manifest.totals.cells_out} kept (dropped: ${JSON.stringify(manifest.totals.dropped)})`);
console.log(`  genes: ${manifest.genes.with_median} with a median, vocabulary of ${manifest.genes.vocabulary_size} tokens`);
console.log(`  tokenized: ${index.rows} cells, ${(index.tokens / index.rows).toFixed(0)} tokens per cell, ${index.shards.length} shard(s) in ${rel("tok")}`);

// The engine on the demo tokens: a masked-token objective (15% of positions replaced by [UNK] and
// scored) for a few AdamW steps, then a checkpoint and cell embeddings.
console.error(`\n== engine: train configs/models/demo-4l-128d for 12 steps on 16 demo cells`);
const t0 = Date.now();
const cells = [];
for (const cell of readTokenizedCells(path.join(out, "tok"))) {
  if (cells.length === 16) break;
  cells.push(cell.ids);
}
const model = GeneMamba.create({ ...loadModelConfig("demo-4l-128d"), vocab_size: manifest.genes.vocabulary_size }, 7);
const batch = padBatch(cells, 1, 512);
const tokens = batch.tokens.slice();
const targets = new Int32Array(tokens.length).fill(IGNORE_INDEX);
let seed = 7;
const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
for (let b = 0; b < batch.batch; b++)
  for (let t = 0; t < batch.lengths[b]; t++)
    if (rand() < 0.15) (targets[b * batch.length + t] = tokens[b * batch.length + t]), (tokens[b * batch.length + t] = 0);
const losses = [];
for (let s = 1; s <= 12; s++) losses.push(model.trainStep({ ...batch, tokens, targets }, { lr: 2e-3, weightDecay: 0.01, maxGradNorm: 1, step: s }).loss);
model.save(path.join(out, "model"));
const emb = model.cellEmbeddings(padBatch(cells, 1, 512), "mean");
console.error(`   (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
console.log(`  engine: ${model.numParameters.toLocaleString("en-US")} parameters, masked-token loss ${losses[0].toFixed(3)} -> ${losses[losses.length - 1].toFixed(3)} over 12 steps; checkpoint in ${rel("model")} (model.safetensors + config.json); ${emb.length / model.config.d_model} cell embeddings of width ${model.config.d_model}`);
