/**
 * `gm evaluate annotation | integration | reconstruction | gene-pairs` (alias `gm eval`). Each
 * writes OUT/metrics.json and OUT/report.html with its figures (OUT/figures/*.svg, and .png with
 * --png), rendered headlessly from vega-lite specs.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Logger } from "@gm/core";
import { GM_VERSION, inputError, usageError, writeJsonAtomic } from "@gm/core";
import { columnValueAsString, openCellFile, readObsm } from "@gm/data";
import {
  barSpec,
  buildReport,
  classificationReport,
  heatmapSpec,
  histogramSpec,
  integrationScores,
  lineSpec,
  renderSvg,
  scatterSpec,
  writeReport,
  type ReportSection as HtmlSection,
  type TopLevelSpec,
} from "@gm/eval";

/** A report section whose figures are named (rendered once, shared with figures/). */
type ReportSection = Omit<HtmlSection, "figures"> & { figureNames?: string[] };

interface Figure {
  name: string;
  caption: string;
  spec: TopLevelSpec;
}

/** metrics.json + report.html (+ figures) into `out`. */
async function finish(out: string, title: string, metrics: unknown, sections: ReportSection[], figures: Figure[], o: { png?: boolean; provenance: Record<string, string> }, log: Logger): Promise<string> {
  fs.mkdirSync(out, { recursive: true });
  writeJsonAtomic(path.join(out, "metrics.json"), metrics);
  const rendered = await Promise.all(figures.map(async (f) => ({ ...f, svg: await renderSvg(f.spec) })));
  const byName = new Map(rendered.map((f) => [f.name, f]));
  const withFigures = sections.map((s) => ({ ...s, figures: (s.figureNames ?? []).map((n) => ({ caption: byName.get(n)!.caption, svg: byName.get(n)!.svg })) }));
  const html = buildReport({ title, sections: withFigures, provenance: { gm: GM_VERSION, created: new Date().toISOString(), ...o.provenance } });
  writeReport(out, html, rendered.map((f) => ({ name: f.name, svg: f.svg })), { png: Boolean(o.png) });
  const file = path.join(out, "report.html");
  log.info({ report: file, metrics: path.join(out, "metrics.json") }, `report -> ${file}`);
  return file;
}

// ------------------------------------------------------------------------------------------------
// annotation

/** Minimal RFC 4180 CSV reader (quoted fields, doubled quotes); predictions files are small. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [], field = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') (field += '"'), i++;
        else quoted = false;
      } else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ",") row.push(field), (field = "");
    else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      row.push(field), rows.push(row), (row = []), (field = "");
    } else field += ch;
  }
  if (field !== "" || row.length) row.push(field), rows.push(row);
  return rows.filter((r) => r.length > 1 || r[0] !== "");
}

export async function annotationReport(o: { predictions: string; out: string; part?: string; png?: boolean }, log: Logger): Promise<{ macroF1: number; accuracy: number; report: string }> {
  if (!fs.existsSync(o.predictions)) throw inputError(o.predictions, "predictions file not found (gm finetune writes OUT/predictions.csv)");
  const rows = parseCsv(fs.readFileSync(o.predictions, "utf8"));
  const header = rows[0] ?? [];
  const col = (name: string, required: boolean) => {
    const i = header.indexOf(name);
    if (i < 0 && required) throw inputError(o.predictions, `has no '${name}' column (columns: ${header.join(", ")}); it needs label and predicted`);
    return i;
  };
  const li = col("label", true), pi = col("predicted", true), parti = col("part", false);
  const part = o.part ?? "val";
  const body = rows.slice(1).filter((r) => part === "all" || parti < 0 || r[parti] === part);
  if (body.length === 0) throw inputError(o.predictions, `no row with part = ${part}${parti < 0 ? "" : ` (parts: ${[...new Set(rows.slice(1).map((r) => r[parti]))].join(", ")})`}; use --part all`);
  const yTrue = body.map((r) => r[li]), yPred = body.map((r) => r[pi]);
  const rep = classificationReport(yTrue, yPred);
  const figures: Figure[] = [
    { name: "confusion_matrix", caption: "Confusion matrix (rows: true class, colour: fraction of the row)", spec: heatmapSpec({ labels: rep.confusion.labels, matrix: rep.confusion.matrix, title: "Confusion matrix", normalize: "row" }) },
    { name: "per_class_f1", caption: "F1 per class (sklearn, zero division = 0)", spec: barSpec({ labels: rep.perClass.map((r) => r.label), values: rep.perClass.map((r) => r.f1), title: "F1 per class", valueTitle: "F1" }) },
  ];
  const sections: ReportSection[] = [
    {
      heading: "Summary",
      text: `${body.length} cells (${part === "all" ? "all parts" : `part ${part}`}) of ${path.resolve(o.predictions)}. Class set = sorted union of labels and predictions (sklearn).`,
      metrics: { accuracy: rep.accuracy, macro_f1: rep.macroF1, micro_f1: rep.microF1, weighted_precision: rep.weightedPrecision, weighted_recall: rep.weightedRecall, weighted_f1: rep.weightedF1 },
    },
    { heading: "Per class", table: { columns: ["class", "precision", "recall", "F1", "support"], rows: rep.perClass.map((r) => [r.label, r.precision, r.recall, r.f1, r.support]) }, figureNames: ["per_class_f1"] },
    { heading: "Confusion matrix", figureNames: ["confusion_matrix"] },
  ];
  // Training curves when the predictions come from gm finetune.
  const hist = path.join(path.dirname(o.predictions), "history.jsonl");
  if (fs.existsSync(hist)) {
    const recs = fs.readFileSync(hist, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as { epoch: number; train_loss: number; val_loss: number; val_macro_f1: number; val_accuracy: number });
    if (recs.length) {
      const x = recs.map((r) => r.epoch);
      figures.push(
        { name: "loss", caption: "Cross-entropy per epoch", spec: lineSpec({ series: [{ name: "train", x, y: recs.map((r) => r.train_loss) }, { name: "validation", x, y: recs.map((r) => r.val_loss) }], title: "Loss", xTitle: "epoch", yTitle: "cross-entropy" }) },
        { name: "validation", caption: "Validation accuracy and macro-F1 per epoch", spec: lineSpec({ series: [{ name: "accuracy", x, y: recs.map((r) => r.val_accuracy) }, { name: "macro-F1", x, y: recs.map((r) => r.val_macro_f1) }], title: "Validation", xTitle: "epoch", yTitle: "score" }) },
      );
      sections.push({ heading: "Training", text: `${recs.length} epochs from ${hist}.`, figureNames: ["loss", "validation"] });
    }
  }
  const metrics = { task: "annotation", predictions: path.resolve(o.predictions), part, ...rep };
  const report = await finish(o.out, "Cell-type annotation", metrics, sections, figures, { png: o.png, provenance: { predictions: path.resolve(o.predictions) } }, log);
  log.info({ accuracy: rep.accuracy, macroF1: rep.macroF1 }, `annotation: accuracy ${rep.accuracy.toFixed(4)}, macro-F1 ${rep.macroF1.toFixed(4)} on ${body.length} cells`);
  return { macroF1: rep.macroF1, accuracy: rep.accuracy, report };
}

export async function annotation(o: Record<string, unknown>, _a: string[], log: Logger): Promise<void> {
  if (!o.predictions) throw usageError("gm evaluate annotation needs --predictions FILE");
  if (!o.out) throw usageError("gm evaluate annotation needs --out DIR");
  await annotationReport({ predictions: String(o.predictions), out: String(o.out), part: o.part as string | undefined, png: Boolean(o.png) }, log);
}

// ------------------------------------------------------------------------------------------------
// integration

async function readObsStrings(file: string, columns: string[]): Promise<Record<string, string[]>> {
  const f = await openCellFile(file);
  try {
    const avail = f.obsColumns();
    for (const c of columns) if (!avail.includes(c)) throw inputError(file, `obs has no column '${c}' (available: ${avail.join(", ") || "none"})`);
    const df = f.readObs(columns, 0, f.nCells, false);
    const out: Record<string, string[]> = {};
    for (const c of columns) {
      const col = df.columns.get(c)!;
      out[c] = Array.from({ length: f.nCells }, (_, i) => columnValueAsString(col, i) ?? "nan");
    }
    return out;
  } finally {
    f.close();
  }
}

export async function integration(o: Record<string, unknown>, _a: string[], log: Logger): Promise<void> {
  if (!o.data) throw usageError("gm evaluate integration needs --data FILE.h5ad (with the embedding in obsm)");
  if (!o.out) throw usageError("gm evaluate integration needs --out DIR");
  const file = String(o.data);
  const key = String(o.embedding ?? "X_genemamba");
  const emb = await readObsm(file, key);
  const cols = [o.labelKey, o.batchKey].filter((c): c is string => typeof c === "string");
  const obs = await readObsStrings(file, cols);
  const labels = o.labelKey ? obs[String(o.labelKey)] : undefined;
  const batches = o.batchKey ? obs[String(o.batchKey)] : undefined;
  // The silhouettes' n^2 distance sums run in the native engine when it is built (BLAS), else in TS.
  let distanceSums;
  try {
    const engine = await import("@gm/engine");
    if (o.threads !== undefined) engine.loadNative().setThreads(Number(o.threads));
    engine.loadNative();
    distanceSums = engine.distanceSums;
  } catch (e) {
    log.warn({ err: (e as Error).message }, "native engine unavailable: silhouettes run in TypeScript (slow for large data)");
  }
  const t0 = Date.now();
  const r = integrationScores({
    x: emb.data,
    n: emb.nRows,
    d: emb.nCols,
    labels,
    batches,
    k: Number(o.neighbors ?? 15),
    seed: Number(o.seed ?? 0),
    louvain: o.louvain !== false,
    umapMaxCells: Number(o.umapMaxCells ?? 5000),
    distanceSums,
    onStage: (s) => log.debug({ stage: s }, `integration: ${s}`),
  });
  const seconds = (Date.now() - t0) / 1000;
  const figures: Figure[] = [];
  const umapNames: string[] = [];
  if (r.umap) {
    const xs = Array.from({ length: r.umap.indices.length }, (_, i) => r.umap!.coords[2 * i]);
    const ys = Array.from({ length: r.umap.indices.length }, (_, i) => r.umap!.coords[2 * i + 1]);
    for (const [name, values, title] of [["umap_label", labels, String(o.labelKey)], ["umap_batch", batches, String(o.batchKey)]] as const) {
      if (!values) continue;
      figures.push({ name, caption: `UMAP of ${key} coloured by ${title}`, spec: scatterSpec({ x: xs, y: ys, color: Array.from(r.umap.indices, (i) => values[i]), title: `UMAP by ${title}`, colorTitle: title }) });
      umapNames.push(name);
    }
  }
  if (r.louvain) figures.push({ name: "louvain_sweep", caption: "NMI of the Louvain clustering per resolution (the best is kept, ties keep the lower one)", spec: lineSpec({ series: [{ name: "NMI", x: r.louvain.map((l) => l.resolution), y: r.louvain.map((l) => l.nmi) }], title: "Louvain resolution sweep", xTitle: "resolution", yTitle: "NMI" }) });
  const m = r.metrics;
  const sections: ReportSection[] = [
    {
      heading: "Summary",
      text: `${emb.nRows} cells × ${emb.nCols} (obsm ${key}) of ${path.resolve(file)}; ${r.knn.k}-NN graph (self included) through hnswlib. ${Object.values(r.notes).join(". ")}.`,
      metrics: { AvgBIO: m.avg_bio ?? null, AvgBATCH: m.avg_batch ?? null },
    },
    {
      heading: "Biological conservation",
      metrics: {
        "NMI (Louvain sweep, scib<=1.1.5-like)": m.nmi_louvain ?? null,
        "ARI (Louvain sweep)": m.ari_louvain ?? null,
        "Louvain resolution": m.louvain_resolution ?? null,
        "NMI (KMeans, k = #labels, scib-metrics)": m.nmi_kmeans ?? null,
        "ARI (KMeans)": m.ari_kmeans ?? null,
        "cell-type ASW (rescaled)": m.asw_label ?? null,
        "isolated-label ASW": m.isolated_label_asw ?? null,
      },
      figureNames: [...(umapNames.includes("umap_label") ? ["umap_label"] : []), ...(r.louvain ? ["louvain_sweep"] : [])],
    },
    {
      heading: "Batch correction",
      metrics: { "batch ASW (1-|s| per cell type)": m.asw_batch ?? null, "graph connectivity (scib, symmetric)": m.graph_connectivity ?? null, "graph connectivity (scib-metrics, directed)": m.graph_connectivity_directed ?? null },
      table: { columns: ["label", "cells", "batch ASW", "GC (scib)", "GC (scib-metrics)"], rows: r.perLabel.map((p) => [p.label, p.cells, p.batch_asw, p.gc_scib, p.gc_scib_metrics]) },
      figureNames: umapNames.includes("umap_batch") ? ["umap_batch"] : [],
    },
    { heading: "Timing", metrics: Object.fromEntries(Object.entries(r.seconds).map(([k, v]) => [`${k} (s)`, v])) },
  ];
  const metrics = { task: "integration", data: path.resolve(file), embedding: key, label_key: o.labelKey ?? null, batch_key: o.batchKey ?? null, cells: emb.nRows, dim: emb.nCols, neighbors: r.knn.k, ...m, notes: r.notes, isolated_labels: r.isolatedLabels, louvain_sweep: r.louvain ?? null, per_label: r.perLabel, seconds: { ...r.seconds, total: seconds } };
  await finish(String(o.out), "Integration", metrics, sections, figures, { png: Boolean(o.png), provenance: { data: path.resolve(file), embedding: key } }, log);
  const show = (v: number | null | undefined) => (v === null || v === undefined ? "n/a" : v.toFixed(4));
  log.info({ ...m, seconds }, `integration: AvgBIO ${show(m.avg_bio)}, AvgBATCH ${show(m.avg_batch)}, NMI ${show(m.nmi_louvain ?? m.nmi_kmeans)}, ARI ${show(m.ari_louvain ?? m.ari_kmeans)}, ASW ${show(m.asw_label)}, batch ASW ${show(m.asw_batch)}, GC ${show(m.graph_connectivity)} in ${seconds.toFixed(1)} s`);
}

// ------------------------------------------------------------------------------------------------
// reconstruction and gene pairs (need the model)

export async function reconstruction(o: Record<string, unknown>, _a: string[], log: Logger): Promise<void> {
  for (const k of ["model", "data", "out"]) if (!o[k]) throw usageError(`gm evaluate reconstruction needs --${k}`);
  const train = await import("@gm/train");
  if (o.threads !== undefined) (await import("@gm/engine")).loadNative().setThreads(Number(o.threads));
  const r = await train.reconstruction(
    {
      model: String(o.model),
      data: String(o.data),
      maxCells: Number(o.maxCells ?? 1000),
      maxLength: Number(o.maxLength ?? 2048),
      topK: Number(o.topK ?? 10),
      batchSize: Number(o.batchSize ?? 16),
      mode: o.mode as "same" | "next" | undefined,
      medians: o.medians as string | undefined,
      countsLayer: o.countsLayer as string | undefined,
      geneIdColumn: o.geneIdColumn as string | undefined,
      geneMap: o.geneMap as string | undefined,
    },
    log,
  );
  const hist = (name: string, title: string, values: number[], extent: [number, number]): Figure => ({ name, caption: `${title} per cell`, spec: histogramSpec({ series: [{ name: title, values }], title, extent, xTitle: title }) });
  const maxLd = Math.max(1, ...r.perCell.map((p) => p.levenshtein));
  const figures = [
    hist("levenshtein", "Levenshtein distance", r.perCell.map((p) => p.levenshtein), [0, maxLd]),
    hist("bleu", "BLEU-4 (NLTK sentence_bleu)", r.perCell.map((p) => p.bleuNltk), [0, 1]),
    hist("spearman", "Spearman of gene ranks", r.perCell.map((p) => p.spearman).filter(Number.isFinite), [-1, 1]),
  ];
  const mm = r.mean;
  const sections: ReportSection[] = [
    {
      heading: "Summary",
      text: `${r.cells} cells (mean ${r.meanLength.toFixed(0)} tokens) of ${path.resolve(String(o.data))}; prediction at t compared with input ${r.mode === "same" ? "t (GeneMamba's unshifted comparison)" : "t+1 (next-gene target)"}. Means over cells.`,
      metrics: {
        "Levenshtein distance": mm.levenshtein,
        "normalised Levenshtein similarity": mm.normalizedLevenshtein,
        "exact match": mm.exactMatch,
        "BLEU-4 (GeneMamba's bleu_score, per cell)": mm.bleuGeneMamba,
        "BLEU-4 (GeneMamba's, all cells concatenated)": r.bleuGeneMambaConcatenated,
        "BLEU-4 (NLTK sentence_bleu)": mm.bleuNltk,
        "Spearman (gene ranks)": mm.spearman,
        "Pearson (gene ranks)": mm.pearson,
        [`top-${Number(o.topK ?? 10)} overlap`]: mm.topKOverlap,
      },
      figureNames: figures.map((f) => f.name),
    },
  ];
  const metrics = { task: "reconstruction", model: path.resolve(String(o.model)), data: path.resolve(String(o.data)), cells: r.cells, mode: r.mode, mean_length: r.meanLength, ...Object.fromEntries(Object.entries(mm).map(([k, v]) => [snake(k), v])), bleu_genemamba_concatenated: r.bleuGeneMambaConcatenated, top_k: Number(o.topK ?? 10), seconds: r.seconds };
  await finish(String(o.out), "Gene-rank reconstruction", metrics, sections, figures, { png: Boolean(o.png), provenance: { model: path.resolve(String(o.model)) } }, log);
  log.info(mm, `reconstruction: Levenshtein ${fmt(mm.levenshtein)}, BLEU ${fmt(mm.bleuNltk)} (NLTK) / ${fmt(mm.bleuGeneMamba)} (GeneMamba), Spearman ${fmt(mm.spearman)}, top-k ${fmt(mm.topKOverlap)} over ${r.cells} cells`);
}

const fmt = (v: number | null) => (v === null ? "n/a" : v.toFixed(4));
const snake = (s: string) => s.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());

export async function genePairs(o: Record<string, unknown>, _a: string[], log: Logger): Promise<void> {
  for (const k of ["model", "pairs", "out"]) if (!o[k]) throw usageError(`gm evaluate gene-pairs needs --${k}`);
  const train = await import("@gm/train");
  const r = train.genePairs({ model: String(o.model), pairs: String(o.pairs), part: String(o.part ?? "test"), geneMap: o.geneMap as string | undefined }, log);
  const figures: Figure[] = [
    { name: "similarity", caption: "Cosine similarity of the input gene embeddings, positive vs negative pairs (densities)", spec: histogramSpec({ series: [{ name: "positive", values: r.similarities.positive }, { name: "negative", values: r.similarities.negative }], title: "Gene-pair cosine similarity", extent: [-1, 1], xTitle: "cosine similarity" }) },
  ];
  const dd = r.distances;
  const sections: ReportSection[] = [
    {
      heading: "Summary",
      text: `${r.pairs.scored} of ${r.pairs.total} pairs scored (${r.pairs.positive} positive, ${r.pairs.negative} negative; ${r.pairs.unknownGenes} genes not in the vocabulary). Distances between the two 50-bin histograms on [-1, 1].`,
      metrics: { "ROC-AUC": r.rocAuc, "Euclidean distance": dd.euclidean, "KL(pos || neg), nats": dd.kl, "Jensen-Shannon distance": dd.js, "mean similarity, positive": dd.posMean, "mean similarity, negative": dd.negMean },
      figureNames: ["similarity"],
    },
  ];
  const metrics = { task: "gene-pairs", model: path.resolve(String(o.model)), pairs: path.resolve(String(o.pairs)), part: String(o.part ?? "test"), ...r.pairs, roc_auc: r.rocAuc, euclidean: dd.euclidean, kl: dd.kl, js: dd.js, pos_mean: dd.posMean, pos_std: dd.posStd, neg_mean: dd.negMean, neg_std: dd.negStd };
  await finish(String(o.out), "Gene-pair similarity", metrics, sections, figures, { png: Boolean(o.png), provenance: { model: path.resolve(String(o.model)), pairs: path.resolve(String(o.pairs)) } }, log);
  log.info({ rocAuc: r.rocAuc, js: dd.js }, `gene pairs: ROC-AUC ${r.rocAuc.toFixed(4)}, JS distance ${dd.js.toFixed(4)} over ${r.pairs.scored} pairs`);
}

