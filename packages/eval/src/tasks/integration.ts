/**
 * Integration scores of an embedding, computed the way GeneMamba's and scGPT's `eval_scib_metrics`
 * report them (scib.metrics with silhouette, graph connectivity, NMI and ARI), with the clustering
 * labelled by what it is:
 *  - NMI/ARI on KMeans with k = number of labels (scib-metrics' default);
 *  - NMI/ARI on an unweighted Louvain resolution sweep 0.1..2.0 keeping the best NMI (scib <= 1.1.5
 *    `opt_louvain`; Louvain, not Leiden, which has no npm implementation);
 *  - cell-type ASW rescaled, batch ASW per cell type (1 - |s|), isolated-label ASW;
 *  - graph connectivity on the k-NN graph in both variants (scib: symmetrised, connected components;
 *    scib-metrics: directed, strongly connected);
 *  - AvgBIO = mean(NMI, ARI, ASW_label) and AvgBATCH = mean(ASW_batch, GC) with the Louvain NMI/ARI
 *    and scib's GC, as GeneMamba/scGPT compute them.
 * Without labels (unlabelled data) every cell is one group: batch ASW and GC are still defined,
 * bio-conservation is not.
 */
import { knnGraph, type KnnGraph } from "../analysis/knn.js";
import { kmeansLabels, louvainSweep } from "../analysis/cluster.js";
import { subsampleIndices, umapLayout } from "../analysis/umap.js";
import { takeRows } from "../analysis/knn.js";
import { encodeLabels } from "../metrics/labels.js";
import { ariScib, ariSklearn, nmi } from "../metrics/clustering.js";
import { aswBatch, aswLabel, distanceSumsTs, isolatedLabelsAsw, type DistanceSums } from "../metrics/silhouette.js";
import { graphConnectivity } from "../metrics/graph.js";
import { avgBatch, avgBio } from "../metrics/aggregate.js";

export interface IntegrationInput {
  x: Float32Array;
  n: number;
  d: number;
  labels?: string[];
  batches?: string[];
  /** kNN size including the cell itself (scanpy n_neighbors). */
  k: number;
  seed: number;
  louvain: boolean;
  umapMaxCells: number;
  distanceSums?: DistanceSums;
  /** Called before each stage (progress logging). */
  onStage?: (stage: string) => void;
}

export interface IntegrationResult {
  metrics: Record<string, number | null>;
  notes: Record<string, string>;
  louvain?: { resolution: number; nClusters: number; nmi: number }[];
  perLabel: { label: string; cells: number; batch_asw: number | null; gc_scib: number | null; gc_scib_metrics: number | null }[];
  isolatedLabels: string[];
  seconds: Record<string, number>;
  umap?: { indices: Int32Array; coords: Float32Array };
  knn: KnnGraph;
}

const finite = (v: number): number | null => (Number.isFinite(v) ? v : null);

/**
 * The distance-sum kernel with a cache of whole-embedding calls: cell-type ASW and isolated-label
 * ASW both need the sums for the cell-type labels over all cells (the O(n²·d) part), so the second
 * reuses the first's (batch ASW's per-type calls in between are on subsets and are not kept).
 */
function reuseWholeSums(inner: DistanceSums, nAll: number): DistanceSums {
  const kept: { x: Float32Array; codes: Int32Array; k: number; sums: Float64Array }[] = [];
  return (x, n, d, codes, k) => {
    if (n !== nAll) return inner(x, n, d, codes, k);
    const hit = kept.find((e) => e.x === x && e.k === k && e.codes.every((c, i) => c === codes[i]));
    if (hit) return hit.sums;
    const sums = inner(x, n, d, codes, k);
    kept.push({ x, codes: Int32Array.from(codes), k, sums });
    return sums;
  };
}

export function integrationScores(inp: IntegrationInput): IntegrationResult {
  const { x, n, d } = inp;
  inp = { ...inp, distanceSums: reuseWholeSums(inp.distanceSums ?? distanceSumsTs, n) };
  if (n < 3) throw new Error(`integration metrics need at least 3 cells (got ${n})`);
  const seconds: Record<string, number> = {};
  const timed = <T>(stage: string, f: () => T): T => {
    inp.onStage?.(stage);
    const t = Date.now();
    const r = f();
    seconds[stage] = (Date.now() - t) / 1000;
    return r;
  };
  const k = Math.min(inp.k, n);
  const knn = timed("knn", () => knnGraph(x, n, d, k, { seed: inp.seed }));
  const metrics: Record<string, number | null> = {};
  const notes: Record<string, string> = {};
  const labels = inp.labels ?? new Array<string>(n).fill("all cells");
  const lab = encodeLabels(labels);
  const nLabels = lab.names.length;
  let louvainRows: IntegrationResult["louvain"];

  if (inp.labels && nLabels >= 2) {
    const km = timed("kmeans", () => kmeansLabels(x, n, d, nLabels, { seed: inp.seed }));
    metrics.nmi_kmeans = nmi(lab.codes, km);
    metrics.ari_kmeans = ariSklearn(lab.codes, km);
    if (inp.louvain) {
      const sweep = timed("louvain", () => louvainSweep(knn, n, { seed: inp.seed, score: (c) => nmi(lab.codes, c) }));
      metrics.nmi_louvain = sweep.best.score;
      metrics.ari_louvain = ariSklearn(lab.codes, sweep.best.labels);
      metrics.ari_louvain_scib_native = finite(ariScib(lab.codes, sweep.best.labels));
      metrics.louvain_resolution = sweep.best.resolution;
      louvainRows = sweep.all.map((r) => ({ resolution: r.resolution, nClusters: r.nClusters, nmi: r.score }));
    }
    metrics.asw_label = timed("asw_label", () => aswLabel(x, n, d, lab.codes, { distanceSums: inp.distanceSums }));
  } else if (inp.labels) notes.bio = `only one label (${lab.names[0]}): NMI, ARI and cell-type ASW are undefined`;
  else notes.bio = "no --label-key: bio-conservation metrics need cell-type labels; batch metrics treat all cells as one group";

  let batchRows: { label: string | number; score: number; skipped: boolean }[] = [];
  let isolated: string[] = [];
  if (inp.batches) {
    const bat = encodeLabels(inp.batches);
    if (bat.names.length < 2) notes.batch = `only one batch (${bat.names[0]}): batch metrics are undefined`;
    else {
      const ba = timed("asw_batch", () => aswBatch(x, n, d, lab.codes, bat.codes, { distanceSums: inp.distanceSums }));
      metrics.asw_batch = finite(ba.score);
      batchRows = ba.perLabel;
      if (inp.labels && nLabels >= 2) {
        const iso = timed("isolated_labels", () => isolatedLabelsAsw(x, n, d, lab.codes, bat.codes, { distanceSums: inp.distanceSums }));
        metrics.isolated_label_asw = finite(iso.score);
        isolated = iso.isolated.map((r) => lab.names[Number(r.label)] ?? String(r.label));
        if (!iso.isolated.length) notes.isolated_labels = "no isolated label (every label is in as many batches as the rarest one, which is all of them)";
      }
    }
  } else notes.batch = "no --batch-key: batch metrics need batches";

  const gcScib = timed("graph_connectivity", () => graphConnectivity(knn.neighbors, n, k, lab.codes, "scib"));
  const gcDirected = graphConnectivity(knn.neighbors, n, k, lab.codes, "scib-metrics");
  metrics.graph_connectivity = gcScib.score;
  metrics.graph_connectivity_directed = gcDirected.score;

  if (metrics.nmi_louvain !== undefined || metrics.nmi_kmeans !== undefined) {
    const useLouvain = metrics.nmi_louvain !== undefined;
    metrics.avg_bio = avgBio({ nmi: (useLouvain ? metrics.nmi_louvain : metrics.nmi_kmeans)!, ari: (useLouvain ? metrics.ari_louvain : metrics.ari_kmeans)!, aswLabel: metrics.asw_label ?? NaN });
    notes.avg_bio = `mean(NMI, ARI, ASW_label) with the ${useLouvain ? "Louvain-sweep" : "KMeans"} NMI/ARI`;
  }
  if (metrics.asw_batch !== undefined) {
    metrics.avg_batch = avgBatch({ aswBatch: metrics.asw_batch ?? NaN, graphConnectivity: gcScib.score });
    notes.avg_batch = "mean(ASW_batch, graph connectivity (scib, symmetrised 15-NN graph))";
  }

  const perLabel = lab.names.map((name, c) => {
    const b = batchRows.find((r) => Number(r.label) === c);
    return {
      label: name,
      cells: gcScib.perLabel.find((r) => Number(r.label) === c)?.nCells ?? 0,
      batch_asw: b && !b.skipped ? b.score : null,
      gc_scib: gcScib.perLabel.find((r) => Number(r.label) === c)?.fraction ?? null,
      gc_scib_metrics: gcDirected.perLabel.find((r) => Number(r.label) === c)?.fraction ?? null,
    };
  });

  let umap: IntegrationResult["umap"];
  if (inp.umapMaxCells > 0) {
    umap = timed("umap", () => {
      const indices = n > inp.umapMaxCells ? subsampleIndices(n, inp.umapMaxCells, inp.seed, labels) : Int32Array.from({ length: n }, (_, i) => i);
      const sub = indices.length === n ? knn : knnGraph(takeRows(x, d, indices), indices.length, d, Math.min(k, indices.length), { seed: inp.seed });
      return { indices, coords: umapLayout(sub, indices.length, { seed: inp.seed }) };
    });
    if (n > inp.umapMaxCells) notes.umap = `UMAP of a ${inp.umapMaxCells}-cell subsample (stratified by label)`;
  }
  for (const [key, v] of Object.entries(metrics)) if (v !== null && !Number.isFinite(v)) metrics[key] = null;
  return { metrics, notes, louvain: louvainRows, perLabel, isolatedLabels: isolated, seconds, umap, knn };
}
