import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import ort from "onnxruntime-node";
import { ClassifierHead, COMBINE_MODES, GeneMamba, padBatch, type CombineMode, type MixerKind } from "@gm/engine";
import { decodeModel, encodeModel, exportOnnx, fromFloat16, readGmOnnx, toFloat16 } from "@gm/onnx";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gm-onnx-export-"));
const V = 40;

function modelDir(name: string, mixer: MixerKind, combine: CombineMode, seed: number): { dir: string; model: GeneMamba } {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const model = GeneMamba.create({ vocab_size: V, d_model: 16, n_layer: 2, mixer, combine, d_state: 8, headdim: 8, chunk_size: 4 }, seed);
  // Larger step sizes than the init's (dt 1e-3..0.1) so the decays are far from 1 and the scan matters.
  for (const t of model.tensors) if (t.name.endsWith("dt_bias") || t.name.endsWith("dt_proj.bias")) model.tensor(t.name).fill(0.5);
  model.save(dir);
  const vocab: Record<string, number> = { "[UNK]": 0, "[PAD]": 1 };
  for (let i = 2; i < V; i++) vocab[`ENSG${String(i).padStart(11, "0")}`] = i;
  fs.writeFileSync(path.join(dir, "vocab.json"), JSON.stringify(vocab));
  return { dir, model };
}

function batch(seed: number) {
  const lengths = [11, 8, 4, 1];
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31), s / 2 ** 31);
  return padBatch(lengths.map((n) => Array.from({ length: n }, () => 2 + Math.floor(rnd() * (V - 2)))), 1);
}

async function runOnnx(file: string, b: ReturnType<typeof padBatch>, outputs: string[]) {
  const session = await ort.InferenceSession.create(file, { intraOpNumThreads: 1 });
  const feeds = {
    input_ids: new ort.Tensor("int64", BigInt64Array.from(Array.from(b.tokens, BigInt)), [b.batch, b.length]),
    lengths: new ort.Tensor("int64", BigInt64Array.from(Array.from(b.lengths, BigInt)), [b.batch]),
  };
  const r = await session.run(feeds, outputs);
  await session.release();
  return Object.fromEntries(outputs.map((k) => [k, r[k].data as Float32Array]));
}

function maxRelErr(a: Float32Array, b: Float32Array): number {
  let scale = 0;
  for (const v of b) scale = Math.max(scale, Math.abs(v));
  let err = 0;
  for (let i = 0; i < a.length; i++) err = Math.max(err, Math.abs(a[i] - b[i]));
  return err / scale;
}

const cases: [MixerKind, CombineMode, "ssd" | "loop"][] = [
  ...COMBINE_MODES.map((m) => ["mamba2", m, "ssd"] as [MixerKind, CombineMode, "ssd"]),
  ["mamba2", "gate", "loop"],
  ...COMBINE_MODES.map((m) => ["mamba1", m, "loop"] as [MixerKind, CombineMode, "loop"]),
];

describe("gm export --onnx: onnxruntime matches the native engine", () => {
  it.each(cases)("%s / %s / %s scan: hidden states, embeddings and logits within 1e-4 on a padded batch", async (mixer, combine, scan) => {
    const { dir, model } = modelDir(`${mixer}-${combine}-${scan}`, mixer, combine, 3);
    const out = path.join(dir, "model.onnx");
    const r = await exportOnnx({ model: dir, out, withLogits: true, scan, chunk: 4 });
    expect(r.outputs).toEqual(["hidden_states", "cls_embedding", "mean_embedding", "logits"]);
    const b = batch(5);
    const native = model.forward(b, { logits: true });
    const logits = native.logits!;
    const got = await runOnnx(out, b, ["hidden_states", "cls_embedding", "mean_embedding", "logits"]);
    expect(maxRelErr(got.hidden_states, native.hidden)).toBeLessThan(1e-4);
    expect(maxRelErr(got.logits, logits)).toBeLessThan(1e-4);
    const d = 16;
    const cls = new Float32Array(b.batch * d);
    const mean = new Float32Array(b.batch * d);
    for (let r0 = 0; r0 < b.batch; r0++) {
      cls.set(native.hidden.subarray(r0 * b.length * d, r0 * b.length * d + d), r0 * d);
      for (let t = 0; t < b.lengths[r0]; t++) for (let c = 0; c < d; c++) mean[r0 * d + c] += native.hidden[(r0 * b.length + t) * d + c] / b.lengths[r0];
    }
    expect(maxRelErr(got.cls_embedding, cls)).toBeLessThan(1e-4);
    expect(maxRelErr(got.mean_embedding, mean)).toBeLessThan(1e-4);
  });
});

/** A fine-tuned-style folder: backbone + [CLS] + head with non-trivial BatchNorm running statistics. */
function finetunedDir(name: string) {
  const { dir, model } = modelDir(name, "mamba2", "gate", 11);
  const head = ClassifierHead.create({ d_in: 16, n_classes: 3, hidden: 12, n_layers: 3 }, 4);
  let s = 9;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31), s / 2 ** 31);
  for (const t of head.runningTensors) {
    const v = head.running.subarray(t.offset, t.offset + t.numel);
    for (let i = 0; i < v.length; i++) v[i] = t.name.endsWith("running_var") ? 0.5 + rnd() : rnd() - 0.5;
  }
  head.save(path.join(dir, "classifier.safetensors"));
  fs.writeFileSync(path.join(dir, "labels.json"), JSON.stringify({ format: "gm.labels/1", label_key: "cell_type", classes: ["B cell", "T cell", "NK, cell"] }));
  fs.writeFileSync(path.join(dir, "gene_medians.json"), JSON.stringify({ ENSG00000000002: 1.5, ENSG00000000003: 2.5 }));
  return { dir, model, head };
}

describe("gm export --onnx: long cells", () => {
  it("SSD over many chunks (300 tokens, chunk 32, large step sizes) stays within 1e-4 of the native scan", async () => {
    const { dir, model } = modelDir("long", "mamba2", "gate", 21);
    for (const t of model.tensors) if (t.name.endsWith("dt_bias")) model.tensor(t.name).fill(1.5);
    model.save(dir);
    const out = path.join(dir, "long.onnx");
    await exportOnnx({ model: dir, out });
    let s = 3;
    const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31), s / 2 ** 31);
    const b = padBatch([300, 257, 33].map((n) => Array.from({ length: n }, () => 2 + Math.floor(rnd() * (V - 2)))), 1);
    const native = model.forward(b).hidden;
    const got = await runOnnx(out, b, ["hidden_states"]);
    expect(maxRelErr(got.hidden_states, native)).toBeLessThan(1e-4);
  });
});

describe("gm export --onnx: classifier, fp16, metadata, format", () => {
  it("exports the classifier head (inference-mode BatchNorm) with logits and probabilities within 1e-4", async () => {
    const { dir, model, head } = finetunedDir("finetuned");
    const out = path.join(dir, "with-head.onnx");
    const r = await exportOnnx({ model: dir, out, withClassifier: true, chunk: 4 });
    expect(r.outputs).toEqual(["hidden_states", "cls_embedding", "mean_embedding", "class_logits", "class_probabilities"]);
    const b = batch(8);
    const { hidden } = model.forward(b);
    const cls = new Float32Array(b.batch * 16);
    for (let i = 0; i < b.batch; i++) cls.set(hidden.subarray(i * b.length * 16, i * b.length * 16 + 16), i * 16);
    const logits = Float32Array.from(head.forward(cls, b.batch, false));
    const probs = new Float32Array(logits.length);
    for (let i = 0; i < b.batch; i++) {
      const row = logits.subarray(i * 3, i * 3 + 3);
      const m = Math.max(...row);
      const e = Array.from(row, (v) => Math.exp(v - m));
      const z = e.reduce((a, v) => a + v, 0);
      e.forEach((v, k) => (probs[i * 3 + k] = v / z));
    }
    const got = await runOnnx(out, b, ["class_logits", "class_probabilities"]);
    expect(maxRelErr(got.class_logits, logits)).toBeLessThan(1e-4);
    expect(maxRelErr(got.class_probabilities, probs)).toBeLessThan(1e-4);

    const info = readGmOnnx(out);
    expect(info.labels?.classes).toEqual(["B cell", "T cell", "NK, cell"]);
    expect(info.headConfig?.n_classes).toBe(3);
    expect(info.vocab.size).toBe(V);
    expect(info.medians?.get("ENSG00000000003")).toBe(2.5);
    expect(info.config.combine).toBe("gate");
    expect(info.outputs).toEqual(r.outputs);
    expect(info.precision).toBe("fp32");
  });

  it("fp16 export: half the size, hidden states within 1e-2 of fp32 (weights rounded to 11 significant bits)", async () => {
    const { dir, model } = modelDir("fp16", "mamba2", "gate", 5);
    const full = await exportOnnx({ model: dir, out: path.join(dir, "full.onnx"), chunk: 4 });
    const half = await exportOnnx({ model: dir, out: path.join(dir, "half.onnx"), fp16: true, chunk: 4 });
    const weightBytes = (f: string) => decodeModel(fs.readFileSync(f)).graph.initializer.reduce((a, t) => a + (t.raw_data?.byteLength ?? 0), 0);
    expect(half.bytes).toBeLessThan(full.bytes);
    expect(weightBytes(path.join(dir, "half.onnx"))).toBeLessThan(0.55 * weightBytes(path.join(dir, "full.onnx")));
    const b = batch(2);
    const native = model.forward(b).hidden;
    const got = await runOnnx(path.join(dir, "half.onnx"), b, ["hidden_states"]);
    const err = maxRelErr(got.hidden_states, native);
    expect(err).toBeGreaterThan(1e-6); // it really is the rounded weights
    expect(err).toBeLessThan(1e-2);
    expect(readGmOnnx(path.join(dir, "half.onnx")).precision).toBe("fp16");
  });

  it("writes IR 8 / opset 17 with the reference tensor names; float16 rounding is round-to-nearest-even", async () => {
    const { dir } = modelDir("format", "mamba1", "mean", 2);
    const out = path.join(dir, "m.onnx");
    await exportOnnx({ model: dir, out });
    const m = decodeModel(fs.readFileSync(out));
    expect(m.ir_version).toBe(8);
    expect(m.opset_import).toEqual([{ domain: "", version: 17 }]);
    const names = m.graph.initializer.map((t) => t.name);
    expect(names).toContain("embeddings.weight");
    expect(names).toContain("mamba_mixer.layers.1.mamba.in_proj.weight^T");
    expect(m.graph.node.some((n) => n.op_type === "Scan")).toBe(true);
    expect(m.graph.input.map((i) => i.name)).toEqual(["input_ids", "lengths"]);
    const h = toFloat16(Float32Array.of(1, -2, 65504, 1e6, 6e-8, 2.9e-8, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 0.1));
    expect(Array.from(h, fromFloat16)).toEqual([1, -2, 65504, Infinity, 2 ** -24, 0, 1, 1 + 2 * 2 ** -10, fromFloat16(0x2e66)]);
  });

  it("bad input: clear errors and nothing written", async () => {
    const { dir } = modelDir("errors", "mamba1", "gate", 2);
    const out = path.join(dir, "x.onnx");
    await expect(exportOnnx({ model: dir, out, withClassifier: true })).rejects.toThrow(/not a fine-tuned model/);
    await expect(exportOnnx({ model: dir, out, scan: "ssd" })).rejects.toThrow(/--scan ssd needs the mamba2 mixer/);
    await expect(exportOnnx({ model: dir, out: path.join(dir, "x.bin") })).rejects.toThrow(/ending in .onnx/);
    await expect(exportOnnx({ model: path.join(dir, "nope"), out })).rejects.toThrow(/model folder not found/);
    expect(fs.existsSync(out)).toBe(false);
    const plain = path.join(dir, "plain.onnx");
    fs.writeFileSync(plain, encodeModel({ ir_version: 8, producer_name: "x", producer_version: "1", graph: { name: "g", node: [], initializer: [], input: [], output: [] }, opset_import: [{ domain: "", version: 17 }], metadata_props: [] }));
    expect(() => readGmOnnx(plain)).toThrow(/not one gm exported/);
    fs.writeFileSync(path.join(dir, "junk.onnx"), "definitely not protobuf \xff\xff\xff");
    expect(() => readGmOnnx(path.join(dir, "junk.onnx"))).toThrow(/not a readable ONNX model/);
  });
});
