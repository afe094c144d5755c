#!/usr/bin/env node
// pnpm bench:onnx — embedding throughput through onnxruntime vs the native engine, same data, same
// threads, one process:
//  (1) forward passes only (padded batches of 32 cells of random genes, 64 and 256 tokens) on a
//      demo-sized model (mamba2, gate, 4 layers, d 128): native engine vs onnxruntime with the SSD
//      scan at chunk 16/32/64 and with the Scan-over-time form; and the Mamba-1 mixer (Scan form only);
//  (2) `gm embed` end to end (tokenized simulated cells -> .npy) with --runtime native and onnx.
// Results: printed and written to .bench/onnx.json.
// Environment: GM_BENCH_THREADS (default 2), GM_BENCH_CELLS (default 512), GM_BENCH_LARGE=1 adds the
// reference size (genemamba-24l-512d at 2,048 tokens).
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { execFileSync } from "node:child_process";
import ort from "onnxruntime-node";
import { GeneMamba, loadNative, padBatch } from "@gm/engine";
import { exportOnnx } from "@gm/onnx";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const gm = path.join(root, "packages/cli/bin/gm.js");
const threads = Number(process.env.GM_BENCH_THREADS ?? 2);
const nCells = Number(process.env.GM_BENCH_CELLS ?? 512);
const work = path.join(root, ".bench", "onnx");
fs.mkdirSync(work, { recursive: true });
loadNative().setThreads(threads);
const results = { threads, cells: nCells, forward: [], embed: [] };
const V = 4000;
const BATCH = 32;

function modelFolder(name, mixer) {
  const dir = path.join(work, name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const model = GeneMamba.create({ vocab_size: V, d_model: 128, n_layer: 4, d_state: mixer === "mamba2" ? 32 : 16, headdim: 32, combine: "gate", mixer }, 1);
  model.save(dir);
  const vocab = { "[UNK]": 0, "[PAD]": 1 };
  for (let i = 2; i < V; i++) vocab[`G${i}`] = i;
  fs.writeFileSync(path.join(dir, "vocab.json"), JSON.stringify(vocab));
  return { dir, model };
}

function batches(L) {
  let s = 7;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  const out = [];
  for (let c = 0; c < nCells; c += BATCH) {
    const seqs = [];
    for (let i = 0; i < Math.min(BATCH, nCells - c); i++) {
      const n = Math.max(1, Math.round(L * (0.5 + 0.5 * rnd()))); // cells shorter than the cap, as real ones
      seqs.push(Array.from({ length: n }, () => 2 + Math.floor(rnd() * (V - 2))));
    }
    out.push(padBatch(seqs, 1));
  }
  return out;
}

async function timeOnnx(file, bs) {
  const session = await ort.InferenceSession.create(file, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: "all" });
  const feeds = (b) => ({
    input_ids: new ort.Tensor("int64", BigInt64Array.from(b.tokens, (v) => BigInt(v)), [b.batch, b.length]),
    lengths: new ort.Tensor("int64", BigInt64Array.from(b.lengths, (v) => BigInt(v)), [b.batch]),
  });
  await session.run(feeds(bs[0]), ["mean_embedding"]); // warm-up
  const t0 = performance.now();
  for (const b of bs) await session.run(feeds(b), ["mean_embedding"]);
  const s = (performance.now() - t0) / 1000;
  await session.release();
  return s;
}

function timeNative(model, bs) {
  model.forward(bs[0]);
  const t0 = performance.now();
  for (const b of bs) model.forward(b);
  return (performance.now() - t0) / 1000;
}

for (const mixer of ["mamba2", "mamba1"]) {
  const { dir, model } = modelFolder(`model-${mixer}`, mixer);
  const forms = mixer === "mamba2" ? [["ssd", 16], ["ssd", 32], ["ssd", 64], ["loop", 0]] : [["loop", 0]];
  for (const L of [64, 256]) {
    const bs = batches(L);
    const native = timeNative(model, bs);
    const row = { mixer, max_length: L, native_cells_per_second: nCells / native, onnx: {} };
    for (const [scan, chunk] of forms) {
      const file = path.join(work, `${mixer}-${scan}${chunk || ""}.onnx`);
      if (!fs.existsSync(file) || L === 64) await exportOnnx({ model: dir, out: file, scan, chunk: chunk || undefined });
      const s = await timeOnnx(file, bs);
      row.onnx[`${scan}${chunk || ""}`] = { cells_per_second: nCells / s, ratio_to_native: native / s };
    }
    results.forward.push(row);
    console.log(
      `forward ${mixer} L<=${L}: native ${(nCells / native).toFixed(0)} cells/s; ` +
        Object.entries(row.onnx).map(([k, v]) => `onnx ${k} ${v.cells_per_second.toFixed(0)} (${v.ratio_to_native.toFixed(2)}x)`).join(", "),
    );
  }
}

// (1b) the reference size (genemamba-24l-512d, vocabulary 25,426) at 2,048 tokens, 2 cells per batch
if (process.env.GM_BENCH_LARGE === "1") {
  const dir = path.join(work, "model-24l-512d");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const { loadModelConfig } = await import("@gm/engine");
  const cfg = loadModelConfig("genemamba-24l-512d");
  const model = GeneMamba.create(cfg, 1);
  model.save(dir);
  const vocab = { "[UNK]": 0, "[PAD]": 1 };
  for (let i = 2; i < cfg.vocab_size; i++) vocab[`G${i}`] = i;
  fs.writeFileSync(path.join(dir, "vocab.json"), JSON.stringify(vocab));
  const file = path.join(work, "24l-512d.onnx");
  const t0 = performance.now();
  const r = await exportOnnx({ model: dir, out: file });
  const exportSeconds = (performance.now() - t0) / 1000;
  let s = 11;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  const bs = [0, 1].map(() => padBatch([0, 1].map(() => Array.from({ length: 2048 }, () => 2 + Math.floor(rnd() * (cfg.vocab_size - 2)))), 1));
  const native = timeNative(model, bs);
  const onnx = await timeOnnx(file, bs);
  const row = { config: "genemamba-24l-512d", max_length: 2048, cells: 4, export_seconds: exportSeconds, onnx_megabytes: r.bytes / 2 ** 20, native_seconds_per_cell: native / 4, onnx_seconds_per_cell: onnx / 4, ratio_to_native: native / onnx };
  results.large = row;
  console.log(`forward genemamba-24l-512d L 2048: native ${(native / 4).toFixed(2)} s/cell, onnx (ssd32) ${(onnx / 4).toFixed(2)} s/cell (${(native / onnx).toFixed(2)}x); export ${exportSeconds.toFixed(1)} s, ${(r.bytes / 2 ** 20).toFixed(0)} MB`);
}

// (2) gm embed end to end, when the CLI has the onnx runtime
const help = execFileSync(process.execPath, [gm, "embed", "--help"], { encoding: "utf8" });
if (help.includes("--runtime")) {
  const env = { ...process.env, GM_THREADS: String(threads), GM_NO_PROGRESS: "1" };
  const run = (args) => execFileSync(process.execPath, [gm, "--log-level", "warn", ...args], { cwd: root, stdio: "inherit", env });
  const data = path.join(work, "data");
  if (!fs.existsSync(path.join(data, "tok", "state.json"))) {
    run(["simulate", "--cells", String(nCells), "--genes", "3000", "--cell-types", "6", "--batches", "2", "--seed", "3", "--out", path.join(data, "raw", "sim.h5ad")]);
    run(["preprocess", path.join(data, "raw"), "--out", path.join(data, "pre"), "--workers", "2"]);
    run(["tokenize", path.join(data, "pre"), "--out", path.join(data, "tok"), "--medians", path.join(data, "pre", "gene_medians.json"), "--max-len", "2048", "--workers", "2"]);
  }
  const tokVocab = JSON.parse(fs.readFileSync(path.join(data, "tok", "vocab.json"), "utf8"));
  const vocabSize = Math.max(...Object.values(tokVocab.specials)) + 1 + tokVocab.genes.length;
  const mdir = path.join(work, "embed-model");
  fs.rmSync(mdir, { recursive: true, force: true });
  GeneMamba.create({ vocab_size: vocabSize, d_model: 128, n_layer: 4, d_state: 32, headdim: 32, combine: "gate" }, 1).save(mdir);
  fs.copyFileSync(path.join(data, "tok", "vocab.json"), path.join(mdir, "vocab.json"));
  const onnxFile = path.join(work, "embed-model.onnx");
  await exportOnnx({ model: mdir, out: onnxFile });
  for (const L of [64, 256]) {
    const row = { max_length: L };
    for (const [name, args] of [
      ["native", ["--model", mdir]],
      ["onnx", ["--model", onnxFile, "--runtime", "onnx", "--threads", String(threads)]],
    ]) {
      const t0 = performance.now();
      run(["embed", ...args, "--data", path.join(data, "tok"), "--out", path.join(work, `emb-${name}.npy`), "--pooling", "mean", "--max-length", String(L), "--batch-size", String(BATCH)]);
      row[`${name}_cells_per_second`] = nCells / ((performance.now() - t0) / 1000);
    }
    row.ratio = row.native_cells_per_second / row.onnx_cells_per_second;
    results.embed.push(row);
    console.log(`gm embed L<=${L} (whole command): native ${row.native_cells_per_second.toFixed(0)} cells/s, onnx ${row.onnx_cells_per_second.toFixed(0)} cells/s; native/onnx ${row.ratio.toFixed(2)}x`);
  }
} else console.log("gm embed has no --runtime yet; end-to-end comparison skipped");

fs.writeFileSync(path.join(root, ".bench", "onnx.json"), JSON.stringify(results, null, 2));
