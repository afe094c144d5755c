import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import ort from "onnxruntime-node";
import { COMBINE_MODES, GeneMamba, padBatch, type CombineMode, type MixerKind } from "@gm/engine";
import { exportOnnx } from "@gm/onnx";

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
