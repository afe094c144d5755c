/**
 * Training checkpoints: OUT/checkpoint-<step>/ holding
 *   model.safetensors      parameters under the reference tensor names (float32)
 *   config.json            the model config
 *   vocab.json             the vocabulary, [MASK] included when the objective added it
 *   optimizer.safetensors  AdamW moments: exp_avg.<tensor> and exp_avg_sq.<tensor>
 *   trainer_state.json     step, loader position, RNG seed and streams, schedule, run fingerprint
 * A checkpoint is assembled in a hidden temporary folder, every file fsynced, and renamed into place
 * in one step: a run killed while saving leaves only a temporary (removed at the next start), never a
 * half-written checkpoint-<step>. The latest checkpoint is the highest complete step.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { randomBytes } from "node:crypto";
import { inputError, readJsonFile, writeJsonAtomic } from "@gm/core";
import { type GeneMamba, MEDIANS_FILE, readHeader, readTensorInto, writeSafetensors } from "@gm/engine";
import type { LoaderPosition } from "./loader/index.js";

export interface TrainerState {
  format: "gm.pretrain-state/1";
  step: number;
  epoch: number;
  loader: LoaderPosition;
  rng: { seed: number; scheme: string };
  fingerprint: string;
  world_size: number;
  tokens_seen: number;
  cells_seen: number;
  lr: number;
  loss: number;
  saved_at: string;
}

const CHECKPOINT_RE = /^checkpoint-(\d+)$/;

export function checkpointDir(out: string, step: number): string {
  return path.join(out, `checkpoint-${step}`);
}

/** Complete checkpoints in OUT, by step ascending. */
export function listCheckpoints(out: string): { step: number; dir: string }[] {
  if (!fs.existsSync(out)) return [];
  return fs
    .readdirSync(out)
    .map((n) => CHECKPOINT_RE.exec(n))
    .filter((m): m is RegExpExecArray => m !== null && fs.existsSync(path.join(out, m[0], "trainer_state.json")))
    .map((m) => ({ step: Number(m[1]), dir: path.join(out, m[0]) }))
    .sort((a, b) => a.step - b.step);
}

export function latestCheckpoint(out: string): { step: number; dir: string } | undefined {
  const all = listCheckpoints(out);
  return all[all.length - 1];
}

/** Removes temporaries of checkpoints that were being written when a run died. */
export function removePartialCheckpoints(out: string): number {
  if (!fs.existsSync(out)) return 0;
  let n = 0;
  for (const name of fs.readdirSync(out))
    if (name.startsWith(".checkpoint-") && name.includes(".tmp-")) {
      fs.rmSync(path.join(out, name), { recursive: true, force: true });
      n++;
    }
  return n;
}

function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  } catch {
    // directories cannot be fsynced on every platform; the rename is still atomic
  }
}

/** The medians file inside a checkpoint folder. */
export { MEDIANS_FILE };

/** The medians a tokenized dataset was made with (recorded in its tokenize.json), if still on disk. */
export function datasetMediansFile(dataDir: string): string | undefined {
  const f = path.join(dataDir, "tokenize.json");
  if (!fs.existsSync(f)) return undefined;
  const m = (JSON.parse(fs.readFileSync(f, "utf8")) as { medians?: string }).medians;
  return m && fs.existsSync(m) ? m : undefined;
}

export interface SaveOptions {
  out: string;
  model: GeneMamba;
  vocabJson: unknown;
  state: TrainerState;
  /** The gene medians the data was tokenized with (copied as gene_medians.json, so downstream commands can tokenize h5ad input). */
  mediansFile?: string;
  /** Test hook: called after the model file is written, before the rename (simulates a crash). */
  afterModelWritten?: () => void;
}

export function saveCheckpoint(o: SaveOptions): string {
  const final = checkpointDir(o.out, o.state.step);
  const tmp = path.join(o.out, `.checkpoint-${o.state.step}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  fs.mkdirSync(tmp, { recursive: true });
  try {
    o.model.save(tmp, { gm_step: String(o.state.step) });
    o.afterModelWritten?.();
    writeSafetensors(path.join(tmp, "optimizer.safetensors"), adamTensors(o.model), { format: "gm.adamw/1", step: String(o.state.step) });
    writeJsonAtomic(path.join(tmp, "vocab.json"), o.vocabJson);
    writeJsonAtomic(path.join(tmp, "trainer_state.json"), o.state);
    if (o.mediansFile) fs.copyFileSync(o.mediansFile, path.join(tmp, MEDIANS_FILE));
    fsyncDir(tmp);
    if (fs.existsSync(final)) fs.rmSync(final, { recursive: true, force: true });
    fs.renameSync(tmp, final);
    fsyncDir(o.out);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return final;
}

/** Keeps the newest `keep` checkpoints (0 = keep all). */
export function pruneCheckpoints(out: string, keep: number): string[] {
  if (keep <= 0) return [];
  const all = listCheckpoints(out);
  const drop = all.slice(0, Math.max(0, all.length - keep));
  for (const c of drop) fs.rmSync(c.dir, { recursive: true, force: true });
  return drop.map((c) => c.dir);
}

export function readTrainerState(dir: string): TrainerState {
  const file = path.join(dir, "trainer_state.json");
  const s = readJsonFile<TrainerState>(file, "trainer state");
  if (s?.format !== "gm.pretrain-state/1") throw inputError(file, `not a gm pretrain checkpoint state (format ${JSON.stringify(s?.format)})`);
  return s;
}

/** Anything with AdamW moments over a tensor table: the backbone, the fine-tuning head. */
export interface AdamOwner {
  readonly tensors: { name: string; shape: number[]; offset: number; numel: number }[];
  optimizerState(): { m: Float32Array; v: Float32Array };
  /** After the moments were written (a GPU model uploads them). */
  commitOptimizerState?(): void;
}

/** The owner's AdamW moments as safetensors entries `<prefix>exp_avg.<name>` / `<prefix>exp_avg_sq.<name>` (views, no copy). */
export function adamTensors(owner: AdamOwner, prefix = ""): { name: string; shape: number[]; data: Float32Array }[] {
  const { m, v } = owner.optimizerState();
  return owner.tensors.flatMap((t) => [
    { name: `${prefix}exp_avg.${t.name}`, shape: t.shape, data: m.subarray(t.offset, t.offset + t.numel) },
    { name: `${prefix}exp_avg_sq.${t.name}`, shape: t.shape, data: v.subarray(t.offset, t.offset + t.numel) },
  ]);
}

/** Reads the AdamW moments of each (prefix, owner) part from an optimizer state file into the owners' buffers. */
export function readAdamState(file: string, parts: { prefix: string; owner: AdamOwner }[]): void {
  const header = readHeader(file);
  const fd = fs.openSync(file, "r");
  try {
    for (const { prefix, owner } of parts) {
      const { m, v } = owner.optimizerState();
      for (const t of owner.tensors)
        for (const [k, buf] of [["exp_avg", m], ["exp_avg_sq", v]] as const) {
          const name = `${prefix}${k}.${t.name}`;
          const e = header.tensors.get(name);
          if (!e) throw inputError(file, `missing tensor ${name}; the optimizer state does not match the model`);
          if (e.shape.join(",") !== t.shape.join(",")) throw inputError(file, `tensor ${name} has shape [${e.shape}], the model needs [${t.shape}]`);
          readTensorInto(file, header, e, buf.subarray(t.offset, t.offset + t.numel), fd);
        }
      owner.commitOptimizerState?.();
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Loads the AdamW moments of a checkpoint into the model's optimizer buffers. */
export function loadOptimizerState(dir: string, model: GeneMamba): void {
  const file = path.join(dir, "optimizer.safetensors");
  if (!fs.existsSync(file)) throw inputError(file, "missing: the checkpoint has no optimizer state; it cannot be resumed exactly");
  readAdamState(file, [{ prefix: "", owner: model }]);
}
