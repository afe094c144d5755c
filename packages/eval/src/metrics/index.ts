/**
 * Evaluation metrics of gm (pure TypeScript, float64). The definitions follow the evaluation
 * reference (shared/reference/evaluation.md); each module names the library whose semantics it
 * reproduces. Fixtures: scripts/reference/eval_fixtures.py -> packages/eval/test/fixtures/metrics.json.
 */
export * from "./labels.js";
export * from "./classification.js";
export * from "./clustering.js";
export * from "./silhouette.js";
export * from "./graph.js";
export * from "./reconstruction.js";
export * from "./distributions.js";
export * from "./aggregate.js";
