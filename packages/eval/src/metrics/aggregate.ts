/**
 * Aggregate scores (evaluation.md §6): GeneMamba / scGPT AvgBIO and AvgBATCH, and the
 * scib-metrics `Benchmarker` total.
 */

/** How NaN entries are treated by the averages. */
export interface AggregateOptions {
  /**
   * - `"omit"` (default): mean of the non-NaN values (`np.nanmean`), NaN only if all are NaN.
   * - `"propagate"`: plain `np.mean`, NaN if any entry is NaN. This is what GeneMamba's
   *   `eval_scib_metrics` literally computes before it drops NaN entries from its result dict,
   *   so there a NaN metric removes `avg_bio` / `avg_batch` from the output altogether.
   */
  nan?: "omit" | "propagate";
}

/** Mean of the non-NaN values (`np.nanmean`); NaN when there is none. */
export function nanMean(values: readonly number[]): number {
  let s = 0;
  let c = 0;
  for (const v of values) {
    if (Number.isNaN(v)) continue;
    s += v;
    c++;
  }
  return c === 0 ? NaN : s / c;
}

function average(values: readonly number[], opts: AggregateOptions): number {
  const mode = opts.nan ?? "omit";
  if (mode === "omit") return nanMean(values);
  if (mode !== "propagate") throw new Error(`nan must be "omit" or "propagate" (got ${String(mode)}).`);
  let s = 0;
  for (const v of values) s += v;
  return s / values.length;
}

/** AvgBIO = mean(NMI_cluster/label, ARI_cluster/label, ASW_label) (GeneMamba, scGPT, paper App. B.3). */
export function avgBio(m: { nmi: number; ari: number; aswLabel: number }, opts: AggregateOptions = {}): number {
  return average([m.nmi, m.ari, m.aswLabel], opts);
}

/** AvgBATCH = mean(ASW_label/batch, graph_conn) (GeneMamba; scGPT zero-shot tutorial). */
export function avgBatch(m: { aswBatch: number; graphConnectivity: number }, opts: AggregateOptions = {}): number {
  return average([m.aswBatch, m.graphConnectivity], opts);
}

/**
 * scib-metrics `Benchmarker.get_results(min_max_scale=False)` total: 0.4·batch + 0.6·bio, where
 * bio and batch are the means of their metric groups (use {@link nanMean} to form them, as
 * pandas' groupby mean skips NaN).
 */
export function scibMetricsTotal(bio: number, batch: number): number {
  return 0.4 * batch + 0.6 * bio;
}
