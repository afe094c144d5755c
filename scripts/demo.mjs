#!/usr/bin/env node
// The README's main job on built-in demo data, into demo-output/: simulate -> preprocess -> tokenize ->
// pretrain a small GeneMamba -> fine-tune it for cell types on a second (held-out) simulated dataset
// -> embed that dataset -> export it to ONNX and predict with onnxruntime -> evaluate annotation, integration, reconstruction and gene pairs, each with
// an HTML report.
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

// Downstream: a second simulated dataset (another donor set: new seed, same genes) as an h5ad, which
// finetune and embed tokenize on the fly with the checkpoint's vocabulary and medians.
step("simulate a downstream dataset (held out)", ["simulate", "--cells", "3000", "--genes", "4000", "--cell-types", "6", "--batches", "2", "--seed", "8", "--out", rel("downstream.h5ad")]);
step("finetune: [CLS] + classifier head, early stopping on validation macro-F1", ["finetune", "--model", rel("pretrain"), "--data", rel("downstream.h5ad"), "--label-key", "cell_type", "--max-length", "64", "--epochs", "4", "--lr", "1e-3", "--out", rel("finetune")]);
step("embed: CLS embeddings into obsm['X_genemamba']", ["embed", "--model", rel("finetune/best"), "--data", rel("downstream.h5ad"), "--max-length", "64", "--out", rel("downstream_embedded.h5ad")]);
step("export: the fine-tuned model + classifier as one ONNX file (vocabulary, medians and labels inside)", ["export", "--model", rel("finetune/best"), "--onnx", rel("onnx/downstream.onnx"), "--with-classifier"]);
step("predict: cell types with onnxruntime from the .onnx file alone", ["predict", "--model", rel("onnx/downstream.onnx"), "--data", rel("downstream.h5ad"), "--max-length", "64", "--label-key", "cell_type", "--out", rel("onnx/predictions.csv")]);
step("evaluate integration: NMI/ARI, ASW, batch ASW, graph connectivity, UMAPs", ["evaluate", "integration", "--data", rel("downstream_embedded.h5ad"), "--label-key", "cell_type", "--batch-key", "batch", "--umap-max-cells", "3000", "--out", rel("reports/integration")]);
step("evaluate reconstruction: predicted gene ranking vs input", ["evaluate", "reconstruction", "--model", rel("pretrain"), "--data", rel("tok"), "--max-cells", "300", "--max-length", "64", "--out", rel("reports/reconstruction")]);

// Gene pairs from the simulator's programs: genes of one program are positives, random pairs of
// genes from different programs negatives.
const sets = fs.readFileSync(path.join(out, "gene_sets.gmt"), "utf8").trim().split("\n").map((l) => l.split("\t").slice(2));
let seed = 12345;
const rand = (n) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
const pairLines = ["gene_a,gene_b,label"];
for (let i = 0; i < 2000; i++) {
  const s = sets[rand(sets.length)];
  pairLines.push(`${s[rand(s.length)]},${s[rand(s.length)]},1`);
  const a = rand(sets.length), b = (a + 1 + rand(sets.length - 1)) % sets.length;
  pairLines.push(`${sets[a][rand(sets[a].length)]},${sets[b][rand(sets[b].length)]},0`);
}
fs.writeFileSync(path.join(out, "gene_pairs.csv"), pairLines.join("\n") + "\n");
step("evaluate gene-pairs: embedding similarity of co-programmed genes", ["evaluate", "gene-pairs", "--model", rel("pretrain"), "--pairs", rel("gene_pairs.csv"), "--out", rel("reports/gene_pairs")]);

const ft = JSON.parse(fs.readFileSync(path.join(out, "finetune", "metrics.json"), "utf8"));
const integ = JSON.parse(fs.readFileSync(path.join(out, "reports", "integration", "metrics.json"), "utf8"));
const rec = JSON.parse(fs.readFileSync(path.join(out, "reports", "reconstruction", "metrics.json"), "utf8"));
const gp = JSON.parse(fs.readFileSync(path.join(out, "reports", "gene_pairs", "metrics.json"), "utf8"));
const f4 = (v) => (v === null || v === undefined ? "n/a" : v.toFixed(4));
console.log(`  finetune: ${ft.cells.train} train / ${ft.cells.val} validation cells, ${ft.classes.length} types: validation accuracy ${f4(ft.val.accuracy)}, macro-F1 ${f4(ft.val.macroF1)} (best epoch ${ft.best_epoch}); report ${rel("finetune/report/report.html")}`);
console.log(`  integration: AvgBIO ${f4(integ.avg_bio)} (NMI ${f4(integ.nmi_louvain)}, ARI ${f4(integ.ari_louvain)}, ASW ${f4(integ.asw_label)}), AvgBATCH ${f4(integ.avg_batch)} (batch ASW ${f4(integ.asw_batch)}, GC ${f4(integ.graph_connectivity)}); report ${rel("reports/integration/report.html")}`);
console.log(`  reconstruction: Levenshtein ${f4(rec.levenshtein)}, BLEU-4 ${f4(rec.bleu_nltk)} (NLTK), Spearman ${f4(rec.spearman)}, top-10 overlap ${f4(rec.top_k_overlap)} over ${rec.cells} cells`);
console.log(`  gene pairs: ROC-AUC ${f4(gp.roc_auc)}, Jensen-Shannon distance ${f4(gp.js)} over ${gp.scored} pairs`);
