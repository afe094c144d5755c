/**
 * Train/validation splits for fine-tuning. The stratified split keeps every class in both parts
 * (the reference's manual 0.9/0.1 `obs["partition"]`), so validation macro-F1 is defined for all
 * classes; a class with a single cell cannot be split and is an error, not a silent drop.
 */
import { inputError } from "@gm/core";
import { Rng, Stream } from "./rng.js";

export type Part = "train" | "val";

export function stratifiedSplit(labels: string[], valFraction: number, seed: number, source: string, labelKey: string): Part[] {
  if (!(valFraction > 0 && valFraction < 1)) throw inputError(source, `--val-fraction must be between 0 and 1 (got ${valFraction})`);
  const byClass = new Map<string, number[]>();
  labels.forEach((l, i) => {
    const a = byClass.get(l);
    if (a) a.push(i);
    else byClass.set(l, [i]);
  });
  const single = [...byClass].filter(([, idx]) => idx.length < 2).map(([l]) => l);
  if (single.length)
    throw inputError(
      source,
      `${labelKey}: class${single.length > 1 ? "es" : ""} ${single.slice(0, 5).map((s) => JSON.stringify(s)).join(", ")}${single.length > 5 ? ` and ${single.length - 5} more` : ""} ha${single.length > 1 ? "ve" : "s"} one cell; a stratified split needs at least 2 per class: drop ${single.length > 1 ? "them" : "it"} or give --split-key`,
    );
  const parts: Part[] = new Array(labels.length).fill("train");
  for (const [label, idx] of [...byClass].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const order = Int32Array.from(idx);
    new Rng(seed, Stream.split, hashLabel(label)).shuffle(order);
    const nVal = Math.min(order.length - 1, Math.max(1, Math.round(order.length * valFraction)));
    for (let k = 0; k < nVal; k++) parts[order[k]] = "val";
  }
  return parts;
}

const TRAIN = new Set(["train", "training", "trn"]);
const VAL = new Set(["val", "valid", "validation", "test", "eval", "dev"]);

/** Parts from an existing split column (train / val|test values, case-insensitive). */
export function splitFromColumn(values: (string | null)[], source: string, splitKey: string): Part[] {
  const bad = new Set<string>();
  const parts = values.map((v) => {
    const s = (v ?? "").toLowerCase();
    if (TRAIN.has(s)) return "train" as const;
    if (VAL.has(s)) return "val" as const;
    bad.add(String(v));
    return "train" as const;
  });
  if (bad.size) throw inputError(source, `${splitKey}: value${bad.size > 1 ? "s" : ""} ${[...bad].slice(0, 5).map((b) => JSON.stringify(b)).join(", ")} ${bad.size > 1 ? "are" : "is"} neither train nor val/test; use train and test (or val)`);
  if (!parts.includes("val")) throw inputError(source, `${splitKey}: no cell is marked val/test; the split needs a validation part`);
  if (!parts.includes("train")) throw inputError(source, `${splitKey}: no cell is marked train`);
  return parts;
}

function hashLabel(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}
