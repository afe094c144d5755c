#!/usr/bin/env node
// The README's main job on built-in demo data: simulate -> preprocess -> tokenize, into demo-output/.
// Later stages (pretrain, finetune, evaluate) are appended here as they land.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

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
