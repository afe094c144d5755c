/**
 * What travels inside an exported .onnx file besides the graph (ModelProto.metadata_props), so
 * `gm embed --runtime onnx` and `gm predict` need only the file and the data:
 *   gm.format        "gm.onnx/1"
 *   gm.config        the backbone's ModelConfig (JSON; vocab_size includes [CLS] for fine-tuned models)
 *   gm.vocab         the model's vocab.json, verbatim
 *   gm.gene_medians  gene_medians.json, verbatim (when the model folder had one)
 *   gm.labels        labels.json, verbatim (with --with-classifier)
 *   gm.head_config   the classifier head's HeadConfig (JSON, with --with-classifier)
 *   gm.outputs       JSON list of the graph's output names
 *   gm.precision     "fp32" | "fp16" (fp16: weights stored in half precision, computed in fp32)
 *   gm.scan          "ssd" | "loop" (how the selective scan is expressed)
 *   gm.source        the model folder it was exported from
 *
 * Graph inputs: input_ids int64 [batch, sequence] (right-padded with pad_token_id), lengths int64
 * [batch] (valid tokens per row). Outputs: hidden_states [batch, sequence, d_model] (after the final
 * RMSNorm), cls_embedding [batch, d_model] (= hidden_states[:, 0]), mean_embedding [batch, d_model]
 * (mean over the valid positions), optionally logits [batch, sequence, vocab], and with a classifier
 * class_logits / class_probabilities [batch, n_classes] computed from cls_embedding.
 */
import { inputError } from "@gm/core";
import { parseMedians, parseVocabulary, type Vocabulary } from "@gm/data";
import { resolveConfig, type HeadConfig, type ModelConfig, type ModelConfigInput } from "@gm/engine";
import { readMetadataProps } from "./proto.js";

export const GM_ONNX_FORMAT = "gm.onnx/1";
export const CLS_TOKEN = "[CLS]";
export const OUTPUTS = {
  hidden: "hidden_states",
  cls: "cls_embedding",
  mean: "mean_embedding",
  logits: "logits",
  classLogits: "class_logits",
  classProbabilities: "class_probabilities",
} as const;

export type OnnxPrecision = "fp32" | "fp16";
export type OnnxScan = "ssd" | "loop";

export interface OnnxLabels {
  label_key: string;
  classes: string[];
}

export interface GmOnnxModel {
  file: string;
  config: ModelConfig;
  vocab: Vocabulary;
  medians?: Map<string, number>;
  labels?: OnnxLabels;
  headConfig?: HeadConfig;
  /** Token id of [CLS] when the vocabulary has one (fine-tuned models). */
  clsId?: number;
  outputs: string[];
  precision: OnnxPrecision;
  scan: OnnxScan;
  source?: string;
}

function json<T>(file: string, key: string, text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw inputError(file, `metadata ${key} is not valid JSON (${(e as Error).message}); re-export the model with gm export --onnx`);
  }
}

/** Reads and checks a gm-exported .onnx file's metadata (not its weights). */
export function readGmOnnx(file: string): GmOnnxModel {
  const p = readMetadataProps(file);
  const format = p.get("gm.format");
  if (format !== GM_ONNX_FORMAT)
    throw inputError(file, format ? `was written in format ${format}; this gm reads ${GM_ONNX_FORMAT}` : "is an ONNX model but not one gm exported (no gm.format metadata); export it with gm export --onnx");
  const need = (k: string) => {
    const v = p.get(k);
    if (v === undefined) throw inputError(file, `has no ${k} metadata; re-export the model with gm export --onnx`);
    return v;
  };
  const config = resolveConfig(json<ModelConfigInput>(file, "gm.config", need("gm.config")), `${file} (gm.config)`);
  const vocab = parseVocabulary(need("gm.vocab"), `${file} (gm.vocab)`);
  if (vocab.size !== config.vocab_size) throw inputError(file, `gm.vocab holds ${vocab.size} tokens but gm.config says vocab_size ${config.vocab_size}`);
  const mediansText = p.get("gm.gene_medians");
  const labelsText = p.get("gm.labels");
  const headText = p.get("gm.head_config");
  return {
    file,
    config,
    vocab,
    medians: mediansText ? parseMedians(json(file, "gm.gene_medians", mediansText), `${file} (gm.gene_medians)`) : undefined,
    labels: labelsText ? json<OnnxLabels>(file, "gm.labels", labelsText) : undefined,
    headConfig: headText ? json<HeadConfig>(file, "gm.head_config", headText) : undefined,
    clsId: vocab.get(CLS_TOKEN),
    outputs: json<string[]>(file, "gm.outputs", need("gm.outputs")),
    precision: (p.get("gm.precision") ?? "fp32") as OnnxPrecision,
    scan: (p.get("gm.scan") ?? "ssd") as OnnxScan,
    source: p.get("gm.source"),
  };
}
