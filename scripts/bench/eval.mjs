#!/usr/bin/env node
// pnpm bench:eval — (1) gm embed's throughput (cells/s) on a tokenized simulated dataset with a
// demo-sized model (4 layers, d 128) at 64 and 256 tokens per cell; (2) the cost of the integration
// metrics at 10k and 100k cells (kNN + KMeans + Louvain sweep + silhouettes + graph connectivity, no
// UMAP), and side by side in the same run a scikit-learn script (scripts/bench/eval_sklearn.py)
// computing the same cell-type silhouette and KMeans NMI/ARI on the same embedding.
// Results: printed and written to .bench/eval.json.
//
// Environment: GM_BENCH_THREADS (default 2), GM_BENCH_SIZES (default "10000,100000").
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { GeneMamba, distanceSums, loadNative } from "@gm/engine";
import { aswLabel, ariSklearn, integrationScores, kmeansLabels, nmi } from "@gm/eval";
import { embed, writeNpy } from "@gm/train";
import { createLogger } from "@gm/core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const gm = path.join(root, "packages/cli/bin/gm.js");
const threads = Number(process.env.GM_BENCH_THREADS ?? 2);
const sizes = (process.env.GM_BENCH_SIZES ?? "10000,100000").split(",").map(Number);
const work = path.join(root, ".bench", "eval");
fs.mkdirSync(work, { recursive: true });
const env = { ...process.env, GM_THREADS: String(threads), GM_NO_PROGRESS: "1" };
loadNative().setThreads(threads);
const log = createLogger("warn");
const results = { threads, embed: [], integration: [] };

// (1) embedding throughput
const data = path.join(work, "data");
if (!fs.existsSync(path.join(data, "tok", "state.json"))) {
  const run = (args) => execFileSync(process.execPath, [gm, "--log-level", "warn", ...args], { cwd: root, stdio: "inherit", env });
  run(["simulate", "--cells", "4000", "--genes", "4000", "--cell-types", "6", "--batches", "2", "--seed", "3", "--out", path.join(data, "raw", "sim.h5ad")]);
  run(["preprocess", path.join(data, "raw"), "--out", path.join(data, "pre"), "--workers", "2"]);
  run(["tokenize", path.join(data, "pre"), "--out", path.join(data, "tok"), "--medians", path.join(data, "pre", "gene_medians.json"), "--max-len", "2048", "--workers", "2"]);
}
const modelDir = path.join(work, "model");
fs.rmSync(modelDir, { recursive: true, force: true });
const vocab = JSON.parse(fs.readFileSync(path.join(data, "tok", "vocab.json"), "utf8"));
const vocabSize = Math.max(...Object.values(vocab.specials)) + 1 + vocab.genes.length;
GeneMamba.create({ vocab_size: vocabSize, d_model: 128, n_layer: 4, d_state: 32, headdim: 32, combine: "gate" }, 1).save(modelDir);
fs.copyFileSync(path.join(data, "tok", "vocab.json"), path.join(modelDir, "vocab.json"));
for (const maxLength of [64, 256]) {
  const r = await embed({ model: modelDir, inputs: [path.join(data, "tok")], out: path.join(work, "emb.npy"), key: "X", batchSize: 32, maxLength, geneContext: false, batchColumn: "file", pooling: "mean" }, log);
  results.embed.push({ cells: r.cells, max_length: maxLength, seconds: r.seconds, cells_per_second: r.cellsPerSecond });
  console.log(`embed: ${r.cells} cells, ${maxLength} tokens: ${r.cellsPerSecond.toFixed(0)} cells/s (${r.seconds.toFixed(1)} s)`);
}

// (2) integration metrics: a 64-d embedding of 10 overlapping cell types x 2 batches
function embedding(n, d = 64, types = 10) {
  let s = 12345;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  const centre = Array.from({ length: types * d }, () => 3 * (u() - 0.5));
  const x = new Float32Array(n * d), labels = new Int32Array(n), batches = [];
  for (let i = 0; i < n; i++) {
    const t = Math.floor(u() * types);
    labels[i] = t;
    const b = u() < 0.5 ? 0 : 1;
    batches.push(`batch${b}`);
    for (let c = 0; c < d; c++) x[i * d + c] = centre[t * d + c] + 0.3 * b * (c === 0 ? 1 : 0) + Math.sqrt(-2 * Math.log(u())) * Math.cos(6.283185307 * u());
  }
  return { x, labels, batches, d };
}
const time = (f) => {
  const t = process.hrtime.bigint();
  const v = f();
  return [v, Number(process.hrtime.bigint() - t) / 1e9];
};
for (const n of sizes) {
  const { x, labels, batches, d } = embedding(n);
  const names = Array.from(labels, (l) => `type${l}`);
  const [asw, tSil] = time(() => aswLabel(x, n, d, labels, { distanceSums }));
  const [km, tKm] = time(() => kmeansLabels(x, n, d, 10, { seed: 0 }));
  const gmNmi = nmi(labels, km), gmAri = ariSklearn(labels, km);
  const [full, tFull] = time(() => integrationScores({ x, n, d, labels: names, batches, k: 15, seed: 0, louvain: true, umapMaxCells: 0, distanceSums }));
  writeNpy(path.join(work, "X.npy"), x, [n, d]);
  writeNpy(path.join(work, "labels.npy"), labels, [n]);
  const py = spawnSync("/usr/bin/python3", [path.join(root, "scripts/bench/eval_sklearn.py"), path.join(work, "X.npy"), path.join(work, "labels.npy")], { encoding: "utf8", env: { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) } });
  const sk = py.status === 0 ? JSON.parse(py.stdout.trim().split("\n").pop()) : null;
  if (!sk) console.error(`scikit-learn side failed: ${py.stderr.trim().split("\n").pop()}`);
  const row = {
    cells: n,
    gm: { silhouette_s: tSil, kmeans_s: tKm, asw_label: asw, nmi: gmNmi, ari: gmAri, all_metrics_s: tFull, stages_s: full.seconds },
    sklearn: sk,
    speedup_silhouette: sk ? sk.silhouette_s / tSil : null,
    speedup_silhouette_plus_kmeans: sk ? (sk.silhouette_s + sk.kmeans_s) / (tSil + tKm) : null,
  };
  results.integration.push(row);
  console.log(`integration ${n} cells: gm silhouette ${tSil.toFixed(2)} s + KMeans ${tKm.toFixed(2)} s (ASW ${asw.toFixed(4)}, NMI ${gmNmi.toFixed(4)}, ARI ${gmAri.toFixed(4)}); all metrics ${tFull.toFixed(1)} s ${JSON.stringify(full.seconds)}`);
  if (sk) console.log(`  scikit-learn: silhouette ${sk.silhouette_s.toFixed(2)} s + KMeans ${sk.kmeans_s.toFixed(2)} s (ASW ${sk.asw_label.toFixed(4)}, NMI ${sk.nmi.toFixed(4)}, ARI ${sk.ari.toFixed(4)}); gm/sklearn speed: silhouette ${row.speedup_silhouette.toFixed(2)}x, silhouette+KMeans ${row.speedup_silhouette_plus_kmeans.toFixed(2)}x`);
}
fs.writeFileSync(path.join(root, ".bench", "eval.json"), JSON.stringify(results, null, 2));
