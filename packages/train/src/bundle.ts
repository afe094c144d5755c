/**
 * A model folder as downstream commands see it: a pretrain checkpoint (model.safetensors,
 * config.json, vocab.json, gene_medians.json) or a fine-tuned one (the same plus
 * classifier.safetensors and labels.json). The vocabulary and medians travel with the weights so
 * h5ad input can be tokenized exactly as the model was trained.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { inputError, readJsonFile } from "@gm/core";
import { loadMedians, loadVocabulary, type Vocabulary } from "@gm/data";
import { ClassifierHead, GeneMamba, HEAD_FILE, LABELS_FILE, MEDIANS_FILE, resolveModelDir } from "@gm/engine";

export { HEAD_FILE, LABELS_FILE, resolveModelDir };
export const CLS_TOKEN = "[CLS]";

export interface LabelsInfo {
  format: "gm.labels/1";
  label_key: string;
  classes: string[];
}

export interface ModelBundle {
  dir: string;
  model: GeneMamba;
  vocab: Vocabulary;
  /** The checkpoint's gene medians (undefined when it has none: pass --medians). */
  mediansFile?: string;
  head?: ClassifierHead;
  labels?: LabelsInfo;
  /** Token id of [CLS] when the vocabulary has one (fine-tuned models). */
  clsId?: number;
}

export function loadModelBundle(location: string, opts: { medians?: string } = {}): ModelBundle {
  const dir = resolveModelDir(location);
  const vocabFile = path.join(dir, "vocab.json");
  if (!fs.existsSync(vocabFile)) throw inputError(dir, "has no vocab.json; gm needs the model's vocabulary next to its weights");
  const vocab = loadVocabulary(vocabFile);
  const model = GeneMamba.load(dir);
  if (model.config.vocab_size !== vocab.size)
    throw inputError(vocabFile, `holds ${vocab.size} tokens but the model's vocab_size is ${model.config.vocab_size}; the model and vocabulary do not belong together`);
  const mediansFile = opts.medians ?? (fs.existsSync(path.join(dir, MEDIANS_FILE)) ? path.join(dir, MEDIANS_FILE) : undefined);
  const bundle: ModelBundle = { dir, model, vocab, mediansFile, clsId: vocab.get(CLS_TOKEN) };
  if (fs.existsSync(path.join(dir, HEAD_FILE))) {
    bundle.head = ClassifierHead.load(path.join(dir, HEAD_FILE));
    bundle.labels = readJsonFile<LabelsInfo>(path.join(dir, LABELS_FILE), "labels file");
    if (bundle.head.config.n_classes !== bundle.labels.classes.length)
      throw inputError(path.join(dir, LABELS_FILE), `lists ${bundle.labels.classes.length} classes but the head has ${bundle.head.config.n_classes}`);
  }
  return bundle;
}

/** The gene medians for tokenizing h5ad input, or a clear error saying how to provide them. */
export function bundleMedians(b: ModelBundle): Map<string, number> {
  if (!b.mediansFile) throw inputError(b.dir, `has no ${MEDIANS_FILE}; pass --medians FILE (the gene_medians.json gm preprocess wrote for the pretraining data)`);
  return loadMedians(b.mediansFile);
}
