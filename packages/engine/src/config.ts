/**
 * GeneMamba model configuration: gm's config.json (written next to every checkpoint) and the
 * reference checkpoints' config.json (d_model, mamba_layer, vocab_size; the combine mode is inferred
 * from the tensor names, as the reference stores none).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { inputError, readJsonFile } from "@gm/core";

export type MixerKind = "mamba2" | "mamba1";
export type CombineMode = "gate" | "mean" | "sum" | "concat" | "unidirectional";
export const COMBINE_MODES: CombineMode[] = ["gate", "mean", "sum", "concat", "unidirectional"];

export interface ModelConfig {
  model_type: "genemamba";
  vocab_size: number;
  d_model: number;
  n_layer: number;
  mixer: MixerKind;
  combine: CombineMode;
  d_state: number;
  /** Mamba-2 head width P (d_inner / headdim heads). */
  headdim: number;
  expand: number;
  d_conv: number;
  /** Mamba-1 low-rank step-size projection width; ceil(d_model / 16) by default. */
  dt_rank: number;
  norm_eps: number;
  pad_token_id: number;
  /** Scan chunk: steps between saved states and the block of the chunked Mamba-2 form (speed and memory; results differ by float rounding only). */
  chunk_size: number;
}

export type ModelConfigInput = Partial<ModelConfig> & { vocab_size: number; d_model: number; n_layer?: number; mamba_layer?: number };

export function resolveConfig(input: ModelConfigInput, source = "model config"): ModelConfig {
  const mixer = (input.mixer ?? "mamba2") as MixerKind;
  if (mixer !== "mamba2" && mixer !== "mamba1") throw inputError(source, `mixer must be "mamba2" or "mamba1", got ${JSON.stringify(input.mixer)}`);
  const combine = (input.combine ?? "gate") as CombineMode;
  if (!COMBINE_MODES.includes(combine)) throw inputError(source, `combine must be one of ${COMBINE_MODES.join(", ")}, got ${JSON.stringify(input.combine)}`);
  const d = input.d_model;
  const c: ModelConfig = {
    model_type: "genemamba",
    vocab_size: input.vocab_size,
    d_model: d,
    n_layer: input.n_layer ?? input.mamba_layer ?? NaN,
    mixer,
    combine,
    d_state: input.d_state ?? (mixer === "mamba2" ? 64 : 16),
    headdim: input.headdim ?? 64,
    expand: input.expand ?? 2,
    d_conv: input.d_conv ?? 4,
    dt_rank: input.dt_rank ?? Math.ceil(d / 16),
    norm_eps: input.norm_eps ?? 1e-5,
    pad_token_id: input.pad_token_id ?? 1,
    chunk_size: input.chunk_size ?? 64,
  };
  for (const k of ["vocab_size", "d_model", "n_layer", "d_state", "headdim", "expand", "d_conv", "dt_rank", "chunk_size"] as const) {
    if (!Number.isInteger(c[k]) || c[k] < 1) throw inputError(source, `${k} must be a positive integer, got ${JSON.stringify(c[k])}`);
  }
  if (mixer === "mamba2" && (c.expand * d) % c.headdim !== 0)
    throw inputError(source, `d_inner = expand * d_model = ${c.expand * d} must be a multiple of headdim ${c.headdim}`);
  if (c.vocab_size < 3) throw inputError(source, "vocab_size must be at least 3");
  return c;
}

/** Number of parameters of a configuration (matches the engine's tensor table). */
export function parameterCount(c: ModelConfig): number {
  const d = c.d_model, E = c.expand * d, N = c.d_state, K = c.d_conv, V = c.vocab_size;
  let layer: number;
  if (c.mixer === "mamba2") {
    const H = E / c.headdim;
    const dIn = 2 * E + 2 * N + H, conv = E + 2 * N;
    layer = dIn * d + conv * K + conv + 3 * H + E + d * E;
  } else {
    const R = c.dt_rank;
    layer = 2 * E * d + E * K + E + (R + 2 * N) * E + E * R + E + E * N + E + d * E;
  }
  const aggr = c.combine === "gate" || c.combine === "concat" ? 2 * d * d + d : 0;
  return V * d + c.n_layer * layer + aggr + d + V * d + V;
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** The repository's configs/models folder. */
export const MODEL_CONFIG_DIR = path.resolve(here, "..", "..", "..", "configs", "models");

/** A config by name from configs/models (e.g. "genemamba-24l-512d") or by path to a JSON file. */
export function loadModelConfig(nameOrPath: string): ModelConfig {
  const file = fs.existsSync(nameOrPath) ? nameOrPath : path.join(MODEL_CONFIG_DIR, `${nameOrPath.replace(/\.json$/, "")}.json`);
  if (!fs.existsSync(file)) {
    const known = fs.existsSync(MODEL_CONFIG_DIR) ? fs.readdirSync(MODEL_CONFIG_DIR).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5)) : [];
    throw inputError(nameOrPath, `no such model config; give a JSON file or one of: ${known.join(", ")}`);
  }
  return resolveConfig(readJsonFile<ModelConfigInput>(file, "model config"), file);
}
