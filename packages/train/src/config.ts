/**
 * The pretraining run config (configs/pretrain/*.json): a nested JSON document validated key by key.
 * Unknown keys are errors (a typo must never fall back to a default silently). Command-line flags
 * override single fields; the resolved config is written to OUT/run.json and pins the run for
 * --resume.
 */
import * as path from "node:path";
import { createHash } from "node:crypto";
import { readJsonFile, usageError } from "@gm/core";
import type { ModelConfigInput } from "@gm/engine";
import type { ScheduleKind } from "./schedule.js";

export type ObjectiveKind = "mlm" | "ntp";

export interface RunConfig {
  /** A configs/models name, a path to a model config JSON, or an inline model config (vocab_size optional: taken from the data). */
  model: string | (Partial<ModelConfigInput> & Record<string, unknown>);
  objective: {
    type: ObjectiveKind;
    mask_prob: number;
    mask_token_prob: number;
    random_token_prob: number;
    infonce: { pairs: string | null; gene_map: string | null; gamma: number; tau: number };
  };
  data: { dir: string | null; max_length: number; buffer_batches: number; shuffle: boolean; prefetch: number };
  batch: { micro_batch: number; global_batch: number | null };
  optimizer: { lr: number; beta1: number; beta2: number; eps: number; weight_decay: number; max_grad_norm: number };
  schedule: { type: ScheduleKind; warmup_steps: number; min_lr_ratio: number };
  train: { max_steps: number | null; epochs: number | null; seed: number };
  checkpoint: { every: number; keep_last: number };
  log: { every: number };
}

export const RUN_DEFAULTS: RunConfig = {
  model: "genemamba-24l-512d",
  objective: {
    type: "mlm",
    mask_prob: 0.15,
    mask_token_prob: 0.8,
    random_token_prob: 0.1,
    infonce: { pairs: null, gene_map: null, gamma: 0.1, tau: 0.1 },
  },
  data: { dir: null, max_length: 2048, buffer_batches: 4, shuffle: true, prefetch: 4 },
  batch: { micro_batch: 8, global_batch: null },
  optimizer: { lr: 5e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, max_grad_norm: 1.0 },
  schedule: { type: "linear", warmup_steps: 0, min_lr_ratio: 0 },
  train: { max_steps: null, epochs: 1, seed: 42 },
  checkpoint: { every: 500, keep_last: 3 },
  log: { every: 10 },
};

/** "section": a nested object with its own schema (SECTIONS). */
type Kind = "number" | "int" | "posint" | "bool" | "string" | "string?" | { oneOf: string[] } | "int?" | "posint?" | "section";

const SCHEMA: Record<string, Record<string, Kind>> = {
  objective: { type: { oneOf: ["mlm", "ntp"] }, mask_prob: "number", mask_token_prob: "number", random_token_prob: "number", infonce: "section" },
  data: { dir: "string?", max_length: "posint", buffer_batches: "posint", shuffle: "bool", prefetch: "int" },
  batch: { micro_batch: "posint", global_batch: "posint?" },
  optimizer: { lr: "number", beta1: "number", beta2: "number", eps: "number", weight_decay: "number", max_grad_norm: "number" },
  schedule: { type: { oneOf: ["cosine", "linear", "constant"] }, warmup_steps: "int", min_lr_ratio: "number" },
  train: { max_steps: "posint?", epochs: "posint?", seed: "int" },
  checkpoint: { every: "posint", keep_last: "int" },
  log: { every: "posint" },
};
const SECTIONS: Record<string, Record<string, Kind>> = {
  "objective.infonce": { pairs: "string?", gene_map: "string?", gamma: "number", tau: "number" },
};

function check(source: string, key: string, v: unknown, kind: Kind): unknown {
  const bad = (what: string) => usageError(`${source}: ${key} must be ${what}, got ${JSON.stringify(v)}`);
  if (typeof kind === "object") {
    if (typeof v !== "string" || !kind.oneOf.includes(v)) throw bad(`one of ${kind.oneOf.join(", ")}`);
    return v;
  }
  if (kind.endsWith("?") && v === null) return v;
  const base = kind.replace("?", "");
  switch (base) {
    case "number":
      if (typeof v !== "number" || !Number.isFinite(v)) throw bad("a number");
      return v;
    case "int":
      if (!Number.isInteger(v) || (v as number) < 0) throw bad("a non-negative integer");
      return v;
    case "posint":
      if (!Number.isInteger(v) || (v as number) < 1) throw bad("a positive integer");
      return v;
    case "bool":
      if (typeof v !== "boolean") throw bad("true or false");
      return v;
    case "string":
      if (typeof v !== "string" || !v) throw bad("a non-empty string");
      return v;
  }
  throw new Error(`schema kind ${kind}`);
}

function mergeSection(source: string, name: string, target: Record<string, unknown>, input: unknown, schema: Record<string, Kind>): void {
  if (input === undefined) return;
  if (!input || typeof input !== "object" || Array.isArray(input)) throw usageError(`${source}: '${name}' must be an object`);
  for (const [k, v] of Object.entries(input as Record<string, unknown>)) {
    if (!(k in schema)) throw usageError(`${source}: unknown key '${name}.${k}' (known: ${Object.keys(schema).join(", ")})`);
    if (schema[k] === "section") {
      mergeSection(source, `${name}.${k}`, target[k] as Record<string, unknown>, v, SECTIONS[`${name}.${k}`]);
      continue;
    }
    target[k] = check(source, `${name}.${k}`, v, schema[k]);
  }
}

/** Validates a run config document (partial; defaults fill the rest). Paths resolve against `baseDir`. */
export function resolveRunConfig(input: unknown, source: string, baseDir = process.cwd()): RunConfig {
  const cfg = structuredClone(RUN_DEFAULTS);
  if (!input || typeof input !== "object" || Array.isArray(input)) throw usageError(`${source}: a run config must be a JSON object`);
  for (const [k, v] of Object.entries(input as Record<string, unknown>)) {
    if (k === "$comment" || k === "notes") continue;
    if (k === "model") {
      if (typeof v === "string" && v) cfg.model = /[\\/]|\.json$/.test(v) ? path.resolve(baseDir, v) : v;
      else if (v && typeof v === "object" && !Array.isArray(v)) cfg.model = v as RunConfig["model"];
      else throw usageError(`${source}: model must be a configs/models name, a path, or an inline model config`);
      continue;
    }
    if (!(k in SCHEMA)) throw usageError(`${source}: unknown key '${k}' (known: model, ${Object.keys(SCHEMA).join(", ")})`);
    mergeSection(source, k, (cfg as unknown as Record<string, Record<string, unknown>>)[k], v, SCHEMA[k]);
  }
  const inf = cfg.objective.infonce;
  for (const key of ["pairs", "gene_map"] as const) if (inf[key]) inf[key] = path.resolve(baseDir, inf[key]!);
  if (cfg.data.dir) cfg.data.dir = path.resolve(baseDir, cfg.data.dir);
  validate(cfg, source);
  return cfg;
}

export function validate(cfg: RunConfig, source: string): void {
  const o = cfg.objective;
  if (!(o.mask_prob > 0 && o.mask_prob <= 1)) throw usageError(`${source}: objective.mask_prob must be in (0, 1]`);
  if (o.mask_token_prob < 0 || o.random_token_prob < 0 || o.mask_token_prob + o.random_token_prob > 1)
    throw usageError(`${source}: objective.mask_token_prob and random_token_prob must be >= 0 and sum to at most 1`);
  if (o.infonce.tau <= 0) throw usageError(`${source}: objective.infonce.tau must be positive`);
  if (o.infonce.gamma < 0) throw usageError(`${source}: objective.infonce.gamma must be >= 0`);
  const p = cfg.optimizer;
  if (!(p.lr > 0)) throw usageError(`${source}: optimizer.lr must be positive`);
  if (!(p.beta1 >= 0 && p.beta1 < 1 && p.beta2 >= 0 && p.beta2 < 1)) throw usageError(`${source}: optimizer betas must be in [0, 1)`);
  if (!(p.eps > 0) || p.weight_decay < 0 || p.max_grad_norm < 0) throw usageError(`${source}: optimizer.eps must be positive, weight_decay and max_grad_norm >= 0`);
  if (!(cfg.schedule.min_lr_ratio >= 0 && cfg.schedule.min_lr_ratio <= 1)) throw usageError(`${source}: schedule.min_lr_ratio must be in [0, 1]`);
  if (cfg.train.max_steps === null && cfg.train.epochs === null) throw usageError(`${source}: give train.max_steps or train.epochs`);
}

export function loadRunConfig(file: string): RunConfig {
  return resolveRunConfig(readJsonFile(file, "run config"), file, path.dirname(path.resolve(file)));
}

/** The fields that define the computation: a resumed run must match them bit for bit. */
export function runFingerprint(cfg: RunConfig, extra: Record<string, unknown>): string {
  const pinned = { model: cfg.model, objective: cfg.objective, data: { ...cfg.data, prefetch: undefined }, batch: cfg.batch, optimizer: cfg.optimizer, schedule: cfg.schedule, train: cfg.train, ...extra };
  return createHash("sha256").update(JSON.stringify(pinned)).digest("hex").slice(0, 16);
}
