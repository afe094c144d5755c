#!/usr/bin/env node
// pnpm bench:data — preprocess and tokenize throughput (cells/s per worker) and peak RSS on a simulated
// file of 200,000 cells x 20,000 genes, side by side in one run with a plain numpy/h5py implementation
// of the Geneformer tokenizer (scripts/bench/geneformer_numpy.py) on the same file, medians and vocabulary.
//
// Options (environment): GM_BENCH_CELLS (default 200000), GM_BENCH_DIR (default .bench),
// GM_BENCH_SMALL_CELLS (default 20000; a second, smaller file to show peak RSS does not grow with input).
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { readTokenizedCells } from "@gm/data";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const gm = path.join(root, "packages/cli/bin/gm.js");
const dir = path.resolve(root, process.env.GM_BENCH_DIR ?? ".bench");
const CELLS = Number(process.env.GM_BENCH_CELLS ?? 200000);
const SMALL = Number(process.env.GM_BENCH_SMALL_CELLS ?? 20000);
const PY = "/usr/bin/python3";
fs.mkdirSync(dir, { recursive: true });

function ensurePython() {
  const ok = spawnSync(PY, ["-c", "import numpy, h5py"], { stdio: "ignore" }).status === 0;
  if (!ok) {
    console.error("installing Debian python3-numpy python3-h5py for the numpy reference ...");
    execFileSync("bash", ["-c", "apt-get update -qq && apt-get install -y -qq python3-numpy python3-h5py"], { stdio: "inherit" });
  }
}

/** Run gm, return its final summary record (JSON log line with peakRssMb) and wall seconds. */
function runGm(args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [gm, "--log-format", "json", ...args], { encoding: "utf8", env: { ...process.env, GM_NO_PROGRESS: "1" }, maxBuffer: 1 << 28 });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`gm ${args.join(" ")} failed:\n${r.stderr}`);
  const lines = r.stderr.trim().split("\n").filter((l) => l.startsWith("{"));
  const last = JSON.parse(lines[lines.length - 1]);
  return { ...last, wall };
}

function simulate(cells, file) {
  if (fs.existsSync(file)) return;
  console.error(`simulating ${cells} cells x 20000 genes -> ${file}`);
  runGm(["simulate", "--cells", String(cells), "--genes", "20000", "--cell-types", "10", "--batches", "4", "--seed", "1", "--out", file]);
}

function rmrf(p) {
  fs.rmSync(p, { recursive: true, force: true });
}

function readTokens(tokDir) {
  return Array.from(readTokenizedCells(tokDir), (c) => c.ids);
}

function readNumpyTokens(file) {
  const buf = fs.readFileSync(file);
  const i32 = new Int32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const n = i32[0];
  const lengths = i32.subarray(1, 1 + n);
  let p = 1 + n;
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push(i32.subarray(p, p + lengths[i]));
    p += lengths[i];
  }
  return out;
}

ensurePython();
const big = path.join(dir, `sim-${CELLS}.h5ad`);
const small = path.join(dir, `sim-${SMALL}.h5ad`);
simulate(CELLS, big);
simulate(SMALL, small);

const results = { machine: { cpus: (await import("node:os")).cpus().length, node: process.version }, cells: CELLS, rows: [] };
const row = (name, cells, seconds, workers, rssMb, note = "") => {
  const r = { name, cells, seconds: Number(seconds.toFixed(2)), workers, cells_per_s: Math.round(cells / seconds), cells_per_s_per_worker: Math.round(cells / seconds / workers), peak_rss_mb: rssMb, note };
  results.rows.push(r);
  console.error(JSON.stringify(r));
  return r;
};

// preprocess (1 worker), then tokenize from its output and straight from the h5ad
const pre = path.join(dir, "pre");
rmrf(pre);
const p1 = runGm(["preprocess", big, "--out", pre, "--workers", "1"]);
row("gm preprocess", p1.cellsIn, p1.seconds, 1, p1.peakRssMb, "read + clean + digest + write Arrow");
const preSmall = path.join(dir, "pre-small");
rmrf(preSmall);
const ps = runGm(["preprocess", small, "--out", preSmall, "--workers", "1"]);
row("gm preprocess (small file)", ps.cellsIn, ps.seconds, 1, ps.peakRssMb, `${SMALL} cells: peak RSS vs input size`);

const medians = path.join(pre, "gene_medians.json");
const vocab = path.join(pre, "vocab.json");
const tokPre = path.join(dir, "tok-pre");
rmrf(tokPre);
const t1 = runGm(["tokenize", pre, "--out", tokPre, "--medians", medians, "--workers", "1"]);
row("gm tokenize (preprocess folder)", t1.cellsIn, t1.seconds, 1, t1.peakRssMb, "Arrow shards in, HF dataset out");
const tokH5 = path.join(dir, "tok-h5ad");
rmrf(tokH5);
const t2 = runGm(["tokenize", big, "--out", tokH5, "--medians", medians, "--vocab", vocab, "--workers", "1"]);
row("gm tokenize (h5ad)", t2.cellsIn, t2.seconds, 1, t2.peakRssMb, "same work as the numpy reference");
const tokH5b = path.join(dir, "tok-h5ad-2w");
rmrf(tokH5b);
const t3 = runGm(["tokenize", big, "--out", tokH5b, "--medians", medians, "--vocab", vocab, "--workers", "2"]);
row("gm tokenize (h5ad, 2 workers)", t3.cellsIn, t3.seconds, 2, t3.peakRssMb);

// the numpy/h5py reference on the same file
const npOut = path.join(dir, "numpy-tokens.bin");
const np = spawnSync(PY, [path.join(root, "scripts/bench/geneformer_numpy.py"), "--h5ad", big, "--medians", medians, "--vocab", vocab, "--max-len", "2048", "--min-genes", "200", "--out", npOut], { encoding: "utf8", maxBuffer: 1 << 26 });
if (np.status !== 0) throw new Error(`numpy reference failed:\n${np.stderr}`);
const npRes = JSON.parse(np.stdout.trim().split("\n").pop());
const npRow = row("numpy/h5py Geneformer tokenizer", npRes.cells_in, npRes.seconds, 1, Math.round(npRes.peak_rss_mb), "scripts/bench/geneformer_numpy.py, 1 thread");

// same tokens?
const ours = readTokens(tokH5);
const theirs = readNumpyTokens(npOut);
let mismatches = 0;
for (let i = 0; i < Math.max(ours.length, theirs.length); i++) {
  const a = ours[i];
  const b = theirs[i];
  if (!a || !b || a.length !== b.length || a.some((x, k) => x !== b[k])) mismatches++;
}
results.token_check = { ours: ours.length, numpy: theirs.length, mismatching_cells: mismatches };
const ratio = t2.seconds > 0 ? npRow.seconds / t2.seconds : NaN;
results.tokenize_speedup_per_core = Number(ratio.toFixed(2));
fs.writeFileSync(path.join(dir, "results.json"), JSON.stringify(results, null, 2));

console.log(`\n| step | cells | workers | seconds | cells/s | cells/s per worker | peak RSS (MB) | note |`);
console.log(`|---|---:|---:|---:|---:|---:|---:|---|`);
for (const r of results.rows) console.log(`| ${r.name} | ${r.cells} | ${r.workers} | ${r.seconds} | ${r.cells_per_s} | ${r.cells_per_s_per_worker} | ${r.peak_rss_mb} | ${r.note} |`);
console.log(`\ntokenize speed-up over numpy, per core (h5ad in, tokens out): ${ratio.toFixed(2)}x`);
console.log(`token check: ${ours.length} cells from gm, ${theirs.length} from numpy, ${mismatches} cells differ`);
