/**
 * Cell-type annotation metrics with scikit-learn 1.2 semantics (`accuracy_score`,
 * `precision_recall_fscore_support`, `f1_score`, `confusion_matrix`), as used by
 * GeneMamba's `examples/annotation/cell_type_annotation.py` (evaluation.md §7).
 */
import { checkSameLength, compareCodePoints } from "./labels.js";

/** One row of the per-class table (sklearn `precision_recall_fscore_support(average=None)`). */
export interface ClassReportRow {
  label: string;
  precision: number;
  recall: number;
  f1: number;
  /** Number of samples of this class in `yTrue`. */
  support: number;
}

export interface ClassificationReport {
  n: number;
  /** `accuracy_score`: mean(yTrue == yPred). */
  accuracy: number;
  /** `f1_score(average="macro")`: unweighted mean of the per-class F1 over the class set. */
  macroF1: number;
  /** `f1_score(average="micro")`: equals accuracy for single-label data (up to rounding). */
  microF1: number;
  /** `precision_score(average="macro")`. */
  macroPrecision: number;
  /** `recall_score(average="macro")`. */
  macroRecall: number;
  /** `precision_score(average="weighted")`: weights = support in yTrue. */
  weightedPrecision: number;
  /** `recall_score(average="weighted")`. */
  weightedRecall: number;
  /** `f1_score(average="weighted")`. */
  weightedF1: number;
  /** One row per class, in class-set order. */
  perClass: ClassReportRow[];
  /** `confusion_matrix(yTrue, yPred)`: rows = true class, columns = predicted class. */
  confusion: { labels: string[]; matrix: number[][] };
}

/**
 * Classification report with scikit-learn semantics.
 *
 * - Class set: the sorted union of `yTrue` and `yPred` (sklearn `unique_labels`, Python string
 *   order), so a class that is only predicted scores precision = recall = F1 = 0 and lowers
 *   macro-F1.
 * - Zero division (`zero_division="warn"`, the default) gives 0: precision of a never-predicted
 *   class, recall of a class absent from `yTrue`, and F1 when precision + recall = 0.
 * - F1 = 2·P·R/(P + R) computed from the rounded P and R, exactly like sklearn.
 * - Weighted averages use `np.average(x, weights=support)`.
 */
export function classificationReport(yTrue: readonly string[], yPred: readonly string[]): ClassificationReport {
  checkSameLength(yTrue, yPred, "classificationReport", "yTrue", "yPred");
  const n = yTrue.length;
  if (n === 0) throw new Error("classificationReport: yTrue and yPred are empty; at least one sample is needed.");
  const set = new Set<string>();
  for (let i = 0; i < n; i++) {
    if (typeof yTrue[i] !== "string" || typeof yPred[i] !== "string") {
      throw new Error(`classificationReport: sample ${i} has a label that is not a string.`);
    }
    set.add(yTrue[i]);
    set.add(yPred[i]);
  }
  const labels = [...set].sort(compareCodePoints);
  const index = new Map<string, number>();
  labels.forEach((l, i) => index.set(l, i));
  const k = labels.length;
  const matrix: number[][] = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  const tp = new Float64Array(k);
  const predSum = new Float64Array(k);
  const trueSum = new Float64Array(k);
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const t = index.get(yTrue[i]) as number;
    const p = index.get(yPred[i]) as number;
    matrix[t][p]++;
    trueSum[t]++;
    predSum[p]++;
    if (t === p) {
      tp[t]++;
      correct++;
    }
  }
  const div = (a: number, b: number) => (b === 0 ? 0 : a / b);
  const f1Of = (p: number, r: number) => {
    const denom = p + r;
    return (2 * p * r) / (denom === 0 ? 1 : denom);
  };
  const perClass: ClassReportRow[] = [];
  let sumP = 0, sumR = 0, sumF = 0, wP = 0, wR = 0, wF = 0;
  for (let c = 0; c < k; c++) {
    const precision = div(tp[c], predSum[c]);
    const recall = div(tp[c], trueSum[c]);
    const f1 = f1Of(precision, recall);
    perClass.push({ label: labels[c], precision, recall, f1, support: trueSum[c] });
    sumP += precision;
    sumR += recall;
    sumF += f1;
    wP += precision * trueSum[c];
    wR += recall * trueSum[c];
    wF += f1 * trueSum[c];
  }
  // micro: pooled counts; Σ tp = correct, Σ pred = Σ true = n.
  const microP = div(correct, n);
  const microR = div(correct, n);
  return {
    n,
    accuracy: correct / n,
    macroF1: sumF / k,
    microF1: f1Of(microP, microR),
    macroPrecision: sumP / k,
    macroRecall: sumR / k,
    weightedPrecision: wP / n,
    weightedRecall: wR / n,
    weightedF1: wF / n,
    perClass,
    confusion: { labels, matrix },
  };
}
