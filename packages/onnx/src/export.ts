/**
 * `gm export --onnx`: writes a gm model folder (backbone, optionally the fine-tuning head) as an
 * ONNX graph (opset 17, IR 8) built op by op from the checkpoint's tensors, with the vocabulary,
 * medians and labels in metadata_props (see metadata.ts for the contract). No Python, no native
 * addon: the weights are read from model.safetensors directly.
 *
 * The graph is the engine's forward pass (native/src/model.cpp) in ONNX ops:
 *  - both directions in one batch: rows [x; ReverseSequence(x, lengths)], so pads stay at the end of
 *    every row and the causal conv and scan never let a pad reach a valid position; the same masks as
 *    the engine (conv input and activated conv output zeroed at pads) so pad rows match too;
 *  - causal depthwise conv1d as Conv(group = channels, pads = [K-1, 0]);
 *  - the selective scan either in the chunked matrix (SSD) form for Mamba-2 (dense MatMuls inside
 *    chunks of Q steps, chunk states combined through a chunk-level decay matrix; no loop at all) or
 *    as an ONNX Scan over time (both mixers; Mamba-1's per-channel decay has no small matrix form).
 *    Segment sums of log-decays use the cumulative-sum-of-masked-matrix form, so no exp(a - b) of
 *    two large prefix sums loses precision on long cells.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { GM_VERSION, inputError, usageError, writeFileAtomic } from "@gm/core";
import {
  HEAD_FILE,
  LABELS_FILE,
  MEDIANS_FILE,
  MODEL_FILE,
  VOCAB_FILE,
  readHeader,
  readTensor,
  resolveConfig,
  resolveModelDir,
  type HeadConfig,
  type ModelConfig,
  type ModelConfigInput,
  type SafetensorsHeader,
} from "@gm/engine";
import { GraphBuilder } from "./graph.js";
import { DataType, encodeModel, type ModelMsg } from "./proto.js";
import { GM_ONNX_FORMAT, OUTPUTS, type OnnxScan } from "./metadata.js";

export const OPSET = 17;
export const IR_VERSION = 8;
const PROTOBUF_LIMIT = 2 ** 31 - 1;

export interface ExportOptions {
  model: string;
  out: string;
  withClassifier?: boolean;
  fp16?: boolean;
  withLogits?: boolean;
  /** Default: "ssd" for Mamba-2, "loop" for Mamba-1 (the only form it has). */
  scan?: OnnxScan;
  /** Chunk length Q of the SSD form (default 32). */
  chunk?: number;
}

export interface ExportResult {
  out: string;
  bytes: number;
  outputs: string[];
  scan: OnnxScan;
  config: ModelConfig;
  seconds: number;
}

/** Tensors of a checkpoint by name (float32), with a clear error for a missing one. */
class Weights {
  constructor(
    readonly file: string,
    private readonly header: SafetensorsHeader,
  ) {}
  get(name: string): Float32Array {
    if (!this.header.tensors.has(name)) throw inputError(this.file, `has no tensor ${name}; the checkpoint does not match its config`);
    const t = readTensor(this.file, this.header, name);
    if (!(t instanceof Float32Array)) throw inputError(this.file, `tensor ${name} is not a float tensor`);
    return t;
  }
}

interface Shared {
  g: GraphBuilder;
  c: ModelConfig;
  w: Weights;
  scan: OnnxScan;
  chunk: number;
  /** The combine gate's Linear, shared by every layer (read once). */
  aggr?: { w: Float32Array; b: Float32Array };
  /** lengths (int64 [B]) and the mixer rows' float mask of valid positions [R, L, 1]. */
  lengths: string;
  rowMask: string;
}

/** The selective scan, chunked matrix form (Mamba-2: one decay per step and head). */
function scanSsd(s: Shared, x: string, dt: string, Bm: string, Cm: string, A: Float32Array): string {
  const { g, c } = s;
  const E = c.expand * c.d_model, H = E / c.headdim, P = c.headdim, N = c.d_state, Q = s.chunk;
  return g.scope("ssd", () => {
    const L = g.dim(x, 1);
    const padLen = g.op("Mod", [g.sub(g.constI([Q], [1]), g.op("Mod", [L, g.constI([Q], [1])])), g.constI([Q], [1])]);
    const pads = g.concat([g.constI([0, 0, 0, 0], [4]), padLen, g.constI([0], [1])], 0);
    const pad = (v: string) => g.op("Pad", [v, pads]);
    const Xt = g.transpose(g.reshape(pad(x), [0, -1, Q, H, P]), [0, 3, 1, 2, 4]); // [R,H,nc,Q,P]
    const dtt = g.transpose(g.reshape(pad(dt), [0, -1, Q, H]), [0, 3, 1, 2]); // [R,H,nc,Q]
    const Bc = g.reshape(pad(Bm), [0, -1, Q, N]); // [R,nc,Q,N]
    const Cc = g.reshape(pad(Cm), [0, -1, Q, N]);
    const dA = g.mul(dtt, g.constF(A, [H, 1, 1]));
    const cum = g.op("CumSum", [dA, g.constI([-1])]);
    const decay = g.exp(segsum(g, dA)); // [R,H,nc,Q,Q]: exp(sum dA over (s, t]) for s <= t
    // Inside each chunk: Y[t] = sum_s (C_t . B_s) decay[t,s] dt_s x_s
    const CB = g.unsqueeze(g.matmul(Cc, g.transpose(Bc, [0, 1, 3, 2])), [1]); // [R,1,nc,Q,Q]
    const W = g.mul(g.mul(CB, decay), g.unsqueeze(dtt, [3]));
    const Ydiag = g.matmul(W, Xt); // [R,H,nc,Q,P]
    // Each chunk's own end state: S = sum_s decay[Q-1,s] dt_s x_s B_s^T
    const toEnd = g.op("Gather", [decay, g.constI([Q - 1])], { axis: { i: 3 } }); // [R,H,nc,Q]
    const Xw = g.mul(Xt, g.unsqueeze(g.mul(toEnd, dtt), [4]));
    const S = g.matmul(g.transpose(Xw, [0, 1, 2, 4, 3]), g.unsqueeze(Bc, [1])); // [R,H,nc,P,N]
    // States entering chunk z: sum_{c<z} exp(sum of chunk totals c+1..z-1) S_c
    const totals = g.op("Gather", [cum, g.constI([Q - 1])], { axis: { i: 3 } }); // [R,H,nc]
    const padded = g.op("Pad", [totals, g.constI([0, 0, 1, 0, 0, 0], [6])]); // [R,H,nc+1], a 0 first
    const between = g.op("Slice", [g.exp(segsum(g, padded)), g.constI([0, 1], [2]), g.constI([-1, 2 ** 62], [2]), g.constI([2, 3], [2])]); // [R,H,nc,nc]
    const enter = g.reshape(g.matmul(between, g.reshape(S, [0, 0, 0, P * N])), [0, 0, 0, P, N]);
    const Yoff = g.mul(g.matmul(g.unsqueeze(Cc, [1]), g.transpose(enter, [0, 1, 2, 4, 3])), g.unsqueeze(g.exp(cum), [4]));
    const Y = g.reshape(g.transpose(g.add(Ydiag, Yoff), [0, 2, 3, 1, 4]), [0, -1, E]); // [R,Lp,E]
    return g.op("Slice", [Y, g.constI([0], [1]), L, g.constI([1], [1])]);
  });
}

/**
 * seg[..., i, j] = sum_{k=j+1..i} x[..., k] for j <= i, -inf above the diagonal (x: [..., T]), as a
 * cumulative sum of a masked matrix: exact segment sums, no difference of large prefix sums.
 */
function segsum(g: GraphBuilder, x: string): string {
  return g.scope("segsum", () => {
    const T = g.dim(x, -1);
    const full = g.concat([g.op("Shape", [x]), T], 0);
    const rep = g.op("Expand", [g.unsqueeze(x, [-1]), full]); // rep[i, j] = x_i
    const idx = g.op("Range", [g.constI([0]), g.squeeze(T, [0]), g.constI([1])]);
    const i = g.unsqueeze(idx, [1]);
    const j = g.unsqueeze(idx, [0]);
    const below = g.op("Where", [g.op("Greater", [i, j]), rep, g.constF([0])]);
    const sums = g.op("CumSum", [below, g.constI([-2])]);
    return g.op("Where", [g.op("GreaterOrEqual", [i, j]), sums, g.constF([-Infinity])]);
  });
}

/**
 * The selective scan as an ONNX Scan over time, for both mixers with one body: the state is
 * [R, H, P, N] (Mamba-1: H = channels, P = 1, A [H, N]; Mamba-2: A [H, 1]).
 */
function scanLoop(s: Shared, x: string, dt: string, Bm: string, Cm: string, A: Float32Array, H: number, P: number, Na: number): string {
  const { g, c } = s;
  const N = c.d_state, E = H * P;
  return g.scope("scan", () => {
    const body = g.subgraph("body");
    const h = body.input("h_in", DataType.FLOAT, ["rows", H, P, N]);
    const dtT = body.input("dt_t", DataType.FLOAT, ["rows", H]);
    const xT = body.input("x_t", DataType.FLOAT, ["rows", E]);
    const bT = body.input("B_t", DataType.FLOAT, ["rows", N]);
    const cT = body.input("C_t", DataType.FLOAT, ["rows", N]);
    const decay = body.unsqueeze(body.exp(body.mul(body.unsqueeze(dtT, [2]), body.constF(A, [H, Na]))), [2]); // [R,H,1,Na]
    const dtx = body.unsqueeze(body.mul(body.reshape(xT, [0, H, P]), body.unsqueeze(dtT, [2])), [3]); // [R,H,P,1]
    const hNext = body.add(body.mul(decay, h), body.mul(dtx, body.unsqueeze(bT, [1, 2])));
    // y = h . C: for Mamba-1 (P = 1) as Mul + ReduceSum, since a MatMul would be rows x channels
    // 1xN GEMMs per step (measured 2x slower); for Mamba-2 the [P, N] x [N, 1] MatMul is faster.
    const y =
      P === 1
        ? body.reshape(body.op("ReduceSum", [body.mul(hNext, body.unsqueeze(cT, [1, 2])), body.constI([3], [1])], { keepdims: { i: 0 } }), [0, E])
        : body.reshape(body.matmul(hNext, body.unsqueeze(cT, [1, 3])), [0, E]);
    body.output("h_out", hNext, DataType.FLOAT, ["rows", H, P, N]);
    body.output("y_t", y, DataType.FLOAT, ["rows", E]);
    const init = g.op("ConstantOfShape", [g.concat([g.dim(x, 0), g.constI([H, P, N], [3])], 0)]);
    const outs = g.opN("Scan", [init, dt, x, Bm, Cm], 2, {
      body: { g: body.build() },
      num_scan_inputs: { i: 4 },
      scan_input_axes: { ints: [1, 1, 1, 1] },
      scan_output_axes: { ints: [1] },
    });
    return outs[1];
  });
}

/** Causal depthwise conv1d + SiLU on [R, L, C] with the engine's pad masks before and after. */
function convSilu(s: Shared, x: string, layer: string, C: number): string {
  const { g, c, w } = s;
  const K = c.d_conv;
  const masked = g.mul(x, s.rowMask);
  const conv = g.op("Conv", [g.transpose(masked, [0, 2, 1]), g.weight(`${layer}conv1d.weight`, w.get(`${layer}conv1d.weight`), [C, 1, K]), g.weight(`${layer}conv1d.bias`, w.get(`${layer}conv1d.bias`), [C])], {
    group: { i: C },
    kernel_shape: { ints: [K] },
    pads: { ints: [K - 1, 0] },
  });
  return g.mul(g.silu(g.transpose(conv, [0, 2, 1])), s.rowMask);
}

/** One layer's mixer on the mixer rows u [R, L, d]. */
function mixer(s: Shared, u: string, l: number): string {
  const { g, c, w } = s;
  const d = c.d_model, E = c.expand * d, N = c.d_state;
  const p = `mamba_mixer.layers.${l}.mamba.`;
  const negExp = (a: Float32Array) => Float32Array.from(a, (v) => -Math.exp(v));
  if (c.mixer === "mamba2") {
    const H = E / c.headdim, Cc = E + 2 * N;
    const proj = g.linear(u, `${p}in_proj.weight`, w.get(`${p}in_proj.weight`), 2 * E + 2 * N + H, d);
    const [z, xBC, dtRaw] = g.split(proj, [E, Cc, H], -1);
    const xc = convSilu(s, xBC, p, Cc);
    const [x, Bm, Cm] = g.split(xc, [E, N, N], -1);
    const dt = g.op("Softplus", [g.add(dtRaw, g.weight(`${p}dt_bias`, w.get(`${p}dt_bias`), [H]))]);
    const A = negExp(w.get(`${p}A_log`));
    const scanned = s.scan === "ssd" ? scanSsd(s, x, dt, Bm, Cm, A) : scanLoop(s, x, dt, Bm, Cm, A, H, c.headdim, 1);
    const D = w.get(`${p}D`);
    const Dexp = Float32Array.from({ length: E }, (_, k) => D[Math.floor(k / c.headdim)]);
    const y = g.add(scanned, g.mul(x, g.constF(Dexp, [E])));
    const o = g.rmsnorm(g.mul(y, g.silu(z)), g.weight(`${p}norm.weight`, w.get(`${p}norm.weight`), [E]), 1e-5);
    return g.linear(o, `${p}out_proj.weight`, w.get(`${p}out_proj.weight`), d, E);
  }
  const Rk = c.dt_rank;
  const proj = g.linear(u, `${p}in_proj.weight`, w.get(`${p}in_proj.weight`), 2 * E, d);
  const [xin, z] = g.split(proj, [E, E], -1);
  const x = convSilu(s, xin, p, E);
  const xdbl = g.linear(x, `${p}x_proj.weight`, w.get(`${p}x_proj.weight`), Rk + 2 * N, E);
  const [dtLow, Bm, Cm] = g.split(xdbl, [Rk, N, N], -1);
  const dt = g.op("Softplus", [g.linear(dtLow, `${p}dt_proj.weight`, w.get(`${p}dt_proj.weight`), E, Rk, { name: `${p}dt_proj.bias`, data: w.get(`${p}dt_proj.bias`) })]);
  const A = negExp(w.get(`${p}A_log`));
  const scanned = scanLoop(s, x, dt, Bm, Cm, A, E, 1, N);
  const y = g.add(scanned, g.mul(x, g.weight(`${p}D`, w.get(`${p}D`), [E])));
  return g.linear(g.mul(y, g.silu(z)), `${p}out_proj.weight`, w.get(`${p}out_proj.weight`), d, E);
}

/** One BiMamba layer: mixer over [x; rev(x)], residuals, combine. */
function layer(s: Shared, x: string, l: number): string {
  const { g, c } = s;
  const d = c.d_model;
  return g.scope(`layers.${l}`, () => {
    if (c.combine === "unidirectional") return g.add(mixer(s, x, l), x);
    const rev = (v: string) => g.op("ReverseSequence", [v, s.lengths], { batch_axis: { i: 0 }, time_axis: { i: 1 } });
    const m = mixer(s, g.concat([x, rev(x)], 0), l);
    const [mf, mb] = g.splitEqual(m, 2, 0);
    const f = g.add(mf, x);
    const b = g.add(rev(mb), x);
    const aggr = () => g.linear(g.concat([f, b], -1), "mamba_mixer.aggr.weight", s.aggr!.w, d, 2 * d, { name: "mamba_mixer.aggr.bias", data: s.aggr!.b });
    switch (c.combine) {
      case "gate":
        return g.add(b, g.mul(g.sigmoid(aggr()), g.sub(f, b))); // s*f + (1-s)*b
      case "concat":
        return aggr();
      case "mean":
        return g.mul(g.add(f, b), g.constF([0.5]));
      case "sum":
        return g.add(f, b);
    }
  });
}

/** GeneMamba's Classifier in inference mode: (Linear, BatchNorm (running stats), LeakyReLU) x (n-1), Linear. */
function classifierHead(g: GraphBuilder, x: string, file: string, hc: HeadConfig): string {
  const header = readHeader(file);
  const w = new Weights(file, header);
  return g.scope("classifier", () => {
    let h = x;
    let inDim = hc.d_in;
    for (let l = 0; l + 1 < hc.n_layers; l++) {
      const p = `classifier.layers.${l}.`;
      h = g.linear(h, `${p}linear.weight`, w.get(`${p}linear.weight`), hc.hidden, inDim, { name: `${p}linear.bias`, data: w.get(`${p}linear.bias`) });
      h = g.op("BatchNormalization", [h, ...["norm.weight", "norm.bias", "norm.running_mean", "norm.running_var"].map((n) => g.weight(p + n, w.get(p + n), [hc.hidden]))], { epsilon: { f: 1e-5 } });
      h = g.op("LeakyRelu", [h], { alpha: { f: hc.negative_slope } });
      inDim = hc.hidden;
    }
    return g.linear(h, "classifier.out.weight", w.get("classifier.out.weight"), hc.n_classes, inDim, { name: "classifier.out.bias", data: w.get("classifier.out.bias") });
  });
}

export async function exportOnnx(o: ExportOptions): Promise<ExportResult> {
  const t0 = Date.now();
  if (!o.out) throw usageError("gm export needs --onnx FILE (the .onnx file to write)");
  if (!/\.onnx$/i.test(o.out)) throw usageError(`--onnx ${o.out}: give a file name ending in .onnx`);
  const dir = resolveModelDir(o.model);
  const file = path.join(dir, MODEL_FILE);
  const header = readHeader(file);
  const cfgFile = path.join(dir, "config.json");
  if (!fs.existsSync(cfgFile)) throw inputError(dir, "has no config.json; gm export needs a gm model folder");
  const config = resolveConfig(JSON.parse(fs.readFileSync(cfgFile, "utf8")) as ModelConfigInput, cfgFile);
  const vocabFile = path.join(dir, VOCAB_FILE);
  if (!fs.existsSync(vocabFile)) throw inputError(dir, `has no ${VOCAB_FILE}; gm needs the model's vocabulary next to its weights`);
  const headFile = path.join(dir, HEAD_FILE);
  if (o.withClassifier && !fs.existsSync(headFile)) throw inputError(dir, `has no ${HEAD_FILE}: it is not a fine-tuned model; drop --with-classifier or export a gm finetune output (its best/ folder)`);
  const scan: OnnxScan = o.scan ?? (config.mixer === "mamba2" ? "ssd" : "loop");
  if (scan !== "ssd" && scan !== "loop") throw usageError(`--scan must be ssd or loop (got ${String(scan)})`);
  if (scan === "ssd" && config.mixer !== "mamba2") throw usageError("--scan ssd needs the mamba2 mixer (Mamba-1's per-channel decay has no chunked matrix form); use --scan loop");
  const chunk = o.chunk ?? 32;
  if (!Number.isInteger(chunk) || chunk < 1) throw usageError("the SSD chunk must be a positive integer");

  const g = new GraphBuilder("genemamba", !!o.fp16);
  const w = new Weights(file, header);
  const d = config.d_model;
  const ids = g.input("input_ids", DataType.INT64, ["batch", "sequence"]);
  const lengths = g.input("lengths", DataType.INT64, ["batch"]);
  const bidi = config.combine !== "unidirectional";
  // Valid-position mask [B, L, 1] from the lengths (Range < lengths), and the mixer rows' copy.
  const positions = g.op("Range", [g.constI([0]), g.squeeze(g.dim(ids, 1), [0]), g.constI([1])]);
  const valid = g.op("Less", [g.unsqueeze(positions, [0]), g.unsqueeze(lengths, [1])]);
  const mask = g.unsqueeze(g.op("Cast", [valid], { to: { i: DataType.FLOAT } }), [2]);
  const s: Shared = {
    g,
    c: config,
    w,
    scan,
    chunk,
    lengths,
    rowMask: bidi ? g.concat([mask, mask], 0) : mask,
    aggr: config.combine === "gate" || config.combine === "concat" ? { w: w.get("mamba_mixer.aggr.weight"), b: w.get("mamba_mixer.aggr.bias") } : undefined,
  };
  let x = g.op("Gather", [g.weight("embeddings.weight", w.get("embeddings.weight"), [config.vocab_size, d]), ids], { axis: { i: 0 } });
  for (let l = 0; l < config.n_layer; l++) x = layer(s, x, l);
  const hidden = g.rmsnorm(x, g.weight("norm_f.weight", w.get("norm_f.weight"), [d]), config.norm_eps);
  g.output(OUTPUTS.hidden, hidden, DataType.FLOAT, ["batch", "sequence", d]);
  const cls = g.op("Gather", [hidden, g.constI([0])], { axis: { i: 1 } });
  g.output(OUTPUTS.cls, cls, DataType.FLOAT, ["batch", d]);
  const count = g.op("Max", [g.op("Cast", [g.unsqueeze(lengths, [1])], { to: { i: DataType.FLOAT } }), g.constF([1])]);
  const mean = g.div(g.op("ReduceSum", [g.mul(hidden, mask), g.constI([1], [1])], { keepdims: { i: 0 } }), count);
  g.output(OUTPUTS.mean, mean, DataType.FLOAT, ["batch", d]);
  if (o.withLogits) {
    const logits = g.linear(hidden, "lm_head.weight", w.get("lm_head.weight"), config.vocab_size, d, { name: "lm_head.bias", data: w.get("lm_head.bias") });
    g.output(OUTPUTS.logits, logits, DataType.FLOAT, ["batch", "sequence", config.vocab_size]);
  }
  const metadata: Record<string, string> = {
    "gm.format": GM_ONNX_FORMAT,
    "gm.config": JSON.stringify(config),
    "gm.vocab": fs.readFileSync(vocabFile, "utf8"),
    "gm.precision": o.fp16 ? "fp16" : "fp32",
    "gm.scan": scan,
    "gm.source": path.resolve(dir),
  };
  if (fs.existsSync(path.join(dir, MEDIANS_FILE))) metadata["gm.gene_medians"] = fs.readFileSync(path.join(dir, MEDIANS_FILE), "utf8");
  if (o.withClassifier) {
    const headHeader = readHeader(headFile);
    if (!headHeader.metadata.head_config) throw inputError(headFile, "has no head_config metadata; not a gm classifier head");
    const hc = JSON.parse(headHeader.metadata.head_config) as HeadConfig;
    if (hc.d_in !== d) throw inputError(headFile, `head input width ${hc.d_in} differs from the model's d_model ${d}`);
    const labelsFile = path.join(dir, LABELS_FILE);
    if (!fs.existsSync(labelsFile)) throw inputError(dir, `has ${HEAD_FILE} but no ${LABELS_FILE}; the fine-tuned folder is incomplete`);
    const labelsText = fs.readFileSync(labelsFile, "utf8");
    const classes = (JSON.parse(labelsText) as { classes?: unknown[] }).classes;
    if (!Array.isArray(classes) || classes.length !== hc.n_classes) throw inputError(labelsFile, `lists ${classes?.length ?? 0} classes but the head has ${hc.n_classes}`);
    const logits = classifierHead(g, cls, headFile, hc);
    g.output(OUTPUTS.classLogits, logits, DataType.FLOAT, ["batch", hc.n_classes]);
    g.output(OUTPUTS.classProbabilities, g.op("Softmax", [logits], { axis: { i: -1 } }), DataType.FLOAT, ["batch", hc.n_classes]);
    metadata["gm.labels"] = labelsText;
    metadata["gm.head_config"] = JSON.stringify(hc);
  }
  const outputs = g.outputs.map((v) => v.name);
  metadata["gm.outputs"] = JSON.stringify(outputs);
  const model: ModelMsg = {
    ir_version: IR_VERSION,
    producer_name: "gm",
    producer_version: GM_VERSION,
    doc_string: `GeneMamba (${config.mixer}, ${config.combine}, ${config.n_layer} layers, d_model ${d}) exported by gm export --onnx`,
    graph: g.build(),
    opset_import: [{ domain: "", version: OPSET }],
    metadata_props: Object.entries(metadata).map(([key, value]) => ({ key, value })),
  };
  const weightBytes = g.initializers.reduce((a, t) => a + (t.raw_data?.byteLength ?? 0), 0);
  if (weightBytes > PROTOBUF_LIMIT - 64 * 2 ** 20)
    throw usageError(`the model's weights take ${(weightBytes / 2 ** 30).toFixed(2)} GiB, over protobuf's 2 GiB limit for one .onnx file; export with --fp16`);
  const bytes = encodeModel(model);
  fs.mkdirSync(path.dirname(path.resolve(o.out)), { recursive: true });
  writeFileAtomic(o.out, bytes);
  return { out: o.out, bytes: bytes.byteLength, outputs, scan, config, seconds: (Date.now() - t0) / 1000 };
}
