/**
 * The layout of a gm model folder (what gm pretrain checkpoints and gm finetune write), shared by
 * the commands that read one: model.safetensors + config.json + vocab.json + gene_medians.json, and
 * for fine-tuned models classifier.safetensors + labels.json.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { inputError } from "@gm/core";

export const MODEL_FILE = "model.safetensors";
export const VOCAB_FILE = "vocab.json";
export const MEDIANS_FILE = "gene_medians.json";
export const HEAD_FILE = "classifier.safetensors";
export const LABELS_FILE = "labels.json";

/** Resolves `runs/x` (a finetune run: best/; a pretrain run: its latest checkpoint-N) or a model folder itself. */
export function resolveModelDir(location: string): string {
  if (!fs.existsSync(location)) throw inputError(location, "model folder not found; give a gm pretrain/finetune checkpoint folder (--model)");
  if (fs.existsSync(path.join(location, MODEL_FILE))) return location;
  for (const sub of ["best"]) if (fs.existsSync(path.join(location, sub, MODEL_FILE))) return path.join(location, sub);
  const cks = fs
    .readdirSync(location)
    .map((d) => /^checkpoint-(\d+)$/.exec(d))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => Number(b[1]) - Number(a[1]));
  if (cks.length) return path.join(location, cks[0][0]);
  throw inputError(location, `holds no ${MODEL_FILE} (nor best/ or checkpoint-N/ folders); give a gm pretrain/finetune checkpoint folder`);
}
