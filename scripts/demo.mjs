#!/usr/bin/env node
// The README's main job on built-in demo data: simulate -> preprocess -> tokenize -> pretrain a small
// GeneMamba, into demo-output/. Later stages (finetune, evaluate) extend it as they land.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { readTokenizedCells } from "@gm/data";
import { GeneMamba, padBatch } from "@gm/engine";

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
step("simulate a CELLxGENE-like dataset", ["simulate", "--cells", "12000", "--genes", "4000", "--cell-types", "6", "--batches", "2", "--seed", "7", "--out", rel("raw/demo.h5ad"), "--gene-sets", rel("gene_sets.gmt")]);
step("preprocess: filter, normalise, gene medians", ["preprocess", rel("raw"), "--out", rel("pre"), "--workers", "2", "--unit-cells", "4000"]);
step("tokenize: rank-value tokens in HF datasets layout", ["tokenize", rel("pre"), "--out", rel("tok"), "--medians", rel("pre/gene_medians.json"), "--max-len", "2048", "--keep-columns", "cell_type,batch", "--workers", "2"]);

const manifest = JSON.parse(fs.readFileSync(path.join(out, "pre", "manifest.json"), "utf8"));
const index = JSON.parse(fs.readFileSync(path.join(out, "tok", "gm_index.json"), "utf8"));
console.log(`\nDemo done (${path.relative(root, out)}/):`);
console.log(`  cells: ${manifest.totals.cells_in} simulated, ${manifest.totals.cells_out} kept (dropped: ${JSON.stringify(manifest.totals.dropped)})`);
console.log(`  genes: ${manifest.genes.with_median} with a median, vocabulary of ${manifest.genes.vocabulary_size} tokens`);
console.log(`  tokenized: ${index.rows} cells, ${(index.tokens / index.rows).toFixed(0)} tokens per cell, ${index.shards.length} shard(s) in ${rel("tok")}`);

// Pretraining on the demo tokens (configs/pretrain/demo.json): MLM + InfoNCE over the simulator's
// cell-type programs, a few minutes on 2 cores; then the checkpoint is loaded back for embeddings.
step("pretrain: MLM + gene-pair InfoNCE (configs/pretrain/demo.json)", ["pretrain", "--config", "configs/pretrain/demo.json", "--data", rel("tok"), "--out", rel("pretrain")]);
const metrics = fs.readFileSync(path.join(out, "pretrain", "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
const mean = (rs, k) => rs.reduce((a, r) => a + r[k], 0) / rs.length;
const head = metrics.slice(0, 10), tail = metrics.slice(-10);
const last = metrics[metrics.length - 1];
const ckpt = path.join(out, "pretrain", `checkpoint-${last.step}`);
const summary = JSON.parse(fs.readFileSync(path.join(out, "pretrain", "summary.json"), "utf8"));
const cells = [];
for (const cell of readTokenizedCells(path.join(out, "tok"))) {
  if (cells.length === 16) break;
  cells.push(cell.ids);
}
const model = GeneMamba.load(ckpt);
const emb = model.cellEmbeddings(padBatch(cells, 1, 64), "mean");
const tokS = mean(metrics, "tokens_per_second");
console.log(`  pretrain: ${model.numParameters.toLocaleString("en-US")} parameters, ${last.step} steps at ${tokS.toFixed(0)} tokens/s; MLM loss ${mean(head, "mlm_loss").toFixed(3)} (first 10 steps) -> ${mean(tail, "mlm_loss").toFixed(3)} (last 10) against a unigram baseline of ${summary.unigram_baseline.toFixed(3)} (the entropy of the masked genes: the best any context-free guess can do); InfoNCE ${mean(head, "infonce").toFixed(3)} -> ${mean(tail, "infonce").toFixed(3)}`);
console.log(`  checkpoint: ${path.relative(root, ckpt)} (model, optimizer, loader position; gm pretrain --resume continues it); metrics.jsonl and loss.svg in ${rel("pretrain")}`);
console.log(`  embeddings: ${emb.length / model.config.d_model} cells x ${model.config.d_model} from the checkpoint`);
