/**
 * Evaluations that need the model: gene-rank reconstruction and gene-pair similarity.
 *
 * Reconstruction (GeneMamba's examples/reconstruct experiment, per cell): the model reads each
 * cell's ranked genes and its argmax prediction is compared with the input. "same" compares the
 * prediction at position t with input token t (the reference's unshifted comparison, the natural
 * one for an MLM-trained model); "next" compares the prediction at t with input t+1 (a next-gene
 * model's own target). Scores are per cell and averaged; GeneMamba's BLEU is also given on all cells
 * concatenated as its script computes it (its concatenated Levenshtein is O(N^2) and omitted).
 *
 * Gene pairs: cosine similarity of the input embeddings of both genes for positive and negative
 * pairs (Gene2Vec benchmark files or a CSV), ROC-AUC of similarity as a score of the label, and the
 * Euclidean / KL / JS distances between the two similarity distributions.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createProgress, inputError, usageError, type Logger } from "@gm/core";
import { loadGeneMap } from "@gm/data";
import { padBatch } from "@gm/engine";
import { bleuGeneMamba, cosineSimilarity, distributionDistances, reconstructionScores, rocAuc, type DistributionDistances, type ReconstructionScores } from "@gm/eval";
import { bundleMedians, loadModelBundle, type ModelBundle } from "./bundle.js";
import { openCellSource } from "./cells.js";

export interface ReconstructionOptions {
  model: string;
  data: string;
  maxCells: number;
  maxLength: number;
  topK: number;
  batchSize: number;
  mode?: "same" | "next";
  medians?: string;
  countsLayer?: string;
  geneIdColumn?: string;
  geneMap?: string;
}

export interface ReconstructionResult {
  cells: number;
  mode: "same" | "next";
  mean: Record<keyof ReconstructionScores, number | null>;
  bleuGeneMambaConcatenated: number;
  perCell: ReconstructionScores[];
  /** Mean input length (tokens compared per cell). */
  meanLength: number;
  seconds: number;
}

/** The checkpoint's pretraining objective when recorded (trainer_state.json / run.json of the run). */
function objectiveOf(b: ModelBundle): "mlm" | "ntp" | undefined {
  for (const f of [path.join(b.dir, "..", "run.json"), path.join(b.dir, "trainer_state.json")]) {
    if (!fs.existsSync(f)) continue;
    const text = fs.readFileSync(f, "utf8");
    const m = /"objective"\s*:\s*\{[^}]*"type"\s*:\s*"(mlm|ntp)"/.exec(text);
    if (m) return m[1] as "mlm" | "ntp";
  }
  return undefined;
}

export async function reconstruction(o: ReconstructionOptions, log: Logger): Promise<ReconstructionResult> {
  const t0 = Date.now();
  const bundle = loadModelBundle(o.model, { medians: o.medians });
  const objective = objectiveOf(bundle);
  const mode = o.mode ?? (objective === "ntp" ? "next" : "same");
  if (mode !== "same" && mode !== "next") throw usageError(`--mode must be same or next (got ${String(mode)})`);
  log.info({ objective: objective ?? "unknown", mode }, `reconstruction: comparing the prediction at t with input ${mode === "same" ? "t" : "t+1"}${objective ? ` (model pretrained with ${objective})` : ""}`);
  const src = await openCellSource(o.data, { vocab: bundle.vocab, medians: () => bundleMedians(bundle), maxGenes: o.maxLength, columns: [], countsLayer: o.countsLayer, geneIdColumn: o.geneIdColumn, geneMap: o.geneMap });
  const cells: Int32Array[] = [];
  for (const c of src.cells()) {
    if (c.ids.length >= 2) cells.push(c.ids);
    if (cells.length >= o.maxCells) break;
  }
  src.close();
  if (cells.length === 0) throw inputError(o.data, "no cell with at least 2 genes of the model's vocabulary");
  const perCell: ReconstructionScores[] = [];
  const catIn: number[] = [], catOut: number[] = [];
  const model = bundle.model;
  const progress = createProgress({ label: "reconstruct", total: cells.length, unit: "cells" });
  for (let s = 0; s < cells.length; s += o.batchSize) {
    const chunk = cells.slice(s, s + o.batchSize);
    const b = padBatch(chunk, model.config.pad_token_id);
    const pred = model.predictTokens(b);
    chunk.forEach((ids, r) => {
      const row = pred.subarray(r * b.length, r * b.length + ids.length);
      const input = mode === "same" ? ids : ids.subarray(1);
      const output = mode === "same" ? row : row.subarray(0, ids.length - 1);
      perCell.push(reconstructionScores(input, output, o.topK));
      for (const v of input) catIn.push(v);
      for (const v of output) catOut.push(v);
    });
    progress.increment(chunk.length);
  }
  progress.stop();
  const keys = Object.keys(perCell[0]) as (keyof ReconstructionScores)[];
  const mean = {} as Record<keyof ReconstructionScores, number | null>;
  for (const k of keys) {
    let sum = 0, n = 0;
    for (const p of perCell) if (Number.isFinite(p[k])) (sum += p[k]), n++;
    mean[k] = n ? sum / n : null;
  }
  return {
    cells: cells.length,
    mode,
    mean,
    bleuGeneMambaConcatenated: bleuGeneMamba(catIn, catOut),
    perCell,
    meanLength: catIn.length / cells.length,
    seconds: (Date.now() - t0) / 1000,
  };
}

export interface GenePairsOptions {
  model: string;
  pairs: string;
  part: string;
  geneMap?: string;
}

export interface GenePairsResult {
  pairs: { total: number; scored: number; positive: number; negative: number; unknownGenes: number };
  rocAuc: number;
  distances: DistributionDistances;
  similarities: { positive: number[]; negative: number[] };
}

interface Pair {
  a: string;
  b: string;
  label: 0 | 1;
}

/** Gene2Vec's <part>_text.txt ("A B" per line) + <part>_label.txt, or a CSV a,b,label. */
export function readGenePairs(location: string, part: string): Pair[] {
  if (!fs.existsSync(location)) throw inputError(location, "gene-pair file or folder not found");
  if (fs.statSync(location).isDirectory()) {
    const tf = path.join(location, `${part}_text.txt`), lf = path.join(location, `${part}_label.txt`);
    if (!fs.existsSync(tf) || !fs.existsSync(lf)) throw inputError(location, `no ${part}_text.txt / ${part}_label.txt here (a Gene2Vec predictionData folder); choose --part train, valid or test`);
    const text = fs.readFileSync(tf, "utf8").split(/\r?\n/).filter((l) => l.trim());
    const labels = fs.readFileSync(lf, "utf8").split(/\r?\n/).filter((l) => l.trim());
    if (text.length !== labels.length) throw inputError(lf, `has ${labels.length} labels for ${text.length} pairs in ${path.basename(tf)}`);
    return text.map((l, i) => {
      const [a, b] = l.trim().split(/\s+/);
      const y = labels[i].trim();
      if (!b || (y !== "0" && y !== "1")) throw inputError(i % 2 ? lf : tf, `line ${i + 1}: expected "GENE_A GENE_B" and a 0/1 label`);
      return { a, b, label: y === "1" ? 1 : 0 };
    });
  }
  const lines = fs.readFileSync(location, "utf8").split(/\r?\n/).filter((l) => l.trim() && !l.startsWith("#"));
  const out: Pair[] = [];
  lines.forEach((l, i) => {
    const f = l.split(/[,\t]/).map((x) => x.trim());
    if (i === 0 && !/^[01]$/.test(f[2] ?? "")) return; // header
    if (f.length < 3 || !/^[01]$/.test(f[2])) throw inputError(location, `line ${i + 1}: expected gene_a,gene_b,label (label 0 or 1)`);
    out.push({ a: f[0], b: f[1], label: f[2] === "1" ? 1 : 0 });
  });
  return out;
}

export function genePairs(o: GenePairsOptions, log: Logger): GenePairsResult {
  const bundle = loadModelBundle(o.model);
  const pairs = readGenePairs(o.pairs, o.part);
  const map = o.geneMap ? loadGeneMap(o.geneMap) : undefined;
  const d = bundle.model.config.d_model;
  const table = bundle.model.tensor("embeddings.weight");
  const idOf = (g: string): number | undefined => bundle.vocab.get(g) ?? (map ? bundle.vocab.get(map.get(g) ?? "") : undefined) ?? (map ? bundle.vocab.get(map.get(g.toUpperCase()) ?? "") : undefined);
  const pos: number[] = [], neg: number[] = [];
  const scores: number[] = [], labels: number[] = [];
  const unknown = new Set<string>();
  for (const p of pairs) {
    const ia = idOf(p.a), ib = idOf(p.b);
    if (ia === undefined) unknown.add(p.a);
    if (ib === undefined) unknown.add(p.b);
    if (ia === undefined || ib === undefined) continue;
    const s = cosineSimilarity(table.subarray(ia * d, ia * d + d), table.subarray(ib * d, ib * d + d));
    (p.label ? pos : neg).push(s);
    scores.push(s);
    labels.push(p.label);
  }
  if (!pos.length || !neg.length)
    throw inputError(o.pairs, `only ${pos.length} positive and ${neg.length} negative pairs have both genes in the model's vocabulary${map ? "" : "; pass --gene-map for gene symbols"}`);
  log.info({ scored: scores.length, of: pairs.length, unknownGenes: unknown.size }, `gene pairs: ${scores.length} of ${pairs.length} pairs have both genes in the vocabulary`);
  return {
    pairs: { total: pairs.length, scored: scores.length, positive: pos.length, negative: neg.length, unknownGenes: unknown.size },
    rocAuc: rocAuc(scores, labels),
    distances: distributionDistances(pos, neg),
    similarities: { positive: pos, negative: neg },
  };
}
