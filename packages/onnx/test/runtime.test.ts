import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GeneMamba, padBatch } from "@gm/engine";
import { encodeModel, exportOnnx, hasCudaProvider, OnnxRunner, type OnnxBatch } from "@gm/onnx";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gm-onnx-runtime-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const V = 30;
const d = 16;
let model: GeneMamba;
let file: string;

beforeAll(async () => {
  const dir = path.join(tmp, "model");
  fs.mkdirSync(dir, { recursive: true });
  model = GeneMamba.create({ vocab_size: V, d_model: d, n_layer: 1, mixer: "mamba2", combine: "gate", d_state: 8, headdim: 8, chunk_size: 4 }, 7);
  model.save(dir);
  const vocab: Record<string, number> = { "[UNK]": 0, "[PAD]": 1 };
  for (let i = 2; i < V; i++) vocab[`ENSG${String(i).padStart(11, "0")}`] = i;
  fs.writeFileSync(path.join(dir, "vocab.json"), JSON.stringify(vocab));
  file = path.join(tmp, "model.onnx");
  await exportOnnx({ model: dir, out: file });
});

/** A padded batch of `rows` cells of pseudo-random lengths and genes. */
function makeBatch(seed: number, rows: number): OnnxBatch {
  let s = seed + 1;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31), s / 2 ** 31);
  const seqs = Array.from({ length: rows }, () => Array.from({ length: 1 + Math.floor(rnd() * 12) }, () => 2 + Math.floor(rnd() * (V - 2))));
  const b = padBatch(seqs, 1);
  return { ids: b.tokens, lengths: b.lengths, batch: b.batch, length: b.length };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let e = 0;
  for (let i = 0; i < a.length; i++) e = Math.max(e, Math.abs(a[i] - b[i]));
  return e;
}

describe("OnnxRunner", () => {
  it("several workers: every run resolves with its own batch's outputs, matching the native engine", async () => {
    const runner = await OnnxRunner.open(file, { workers: 3, threads: 3, provider: "cpu" });
    try {
      expect(runner.workers).toBe(3);
      expect(runner.provider).toBe("cpu");
      expect(runner.threadsPerWorker).toBe(1);
      expect(runner.info.config.d_model).toBe(d);
      const batches = Array.from({ length: 12 }, (_, i) => makeBatch(i, 1 + (i % 5)));
      const runs = batches.map((b) => runner.run(b, ["hidden_states", "cls_embedding"]));
      // queued to the least busy worker: 12 batches over 3 workers, 4 each
      expect(runner.busy).toEqual([4, 4, 4]);
      const results = await Promise.all(runs);
      expect(runner.busy).toEqual([0, 0, 0]);
      results.forEach((r, i) => {
        const b = batches[i];
        expect(r.hidden_states.dims).toEqual([b.batch, b.length, d]);
        expect(r.cls_embedding.dims).toEqual([b.batch, d]);
        const native = model.forward({ tokens: b.ids, lengths: b.lengths, batch: b.batch, length: b.length }).hidden;
        expect(maxAbsDiff(r.hidden_states.data, native)).toBeLessThan(1e-4);
        for (let row = 0; row < b.batch; row++)
          expect(maxAbsDiff(r.cls_embedding.data.subarray(row * d, (row + 1) * d), native.subarray(row * b.length * d, row * b.length * d + d))).toBeLessThan(1e-4);
      });
      // the caller's arrays were copied, not transferred
      expect(batches[0].ids.length).toBe(batches[0].batch * batches[0].length);
    } finally {
      await runner.close();
    }
  });

  it("a wrong output name rejects with the model's outputs, and the runner keeps working", async () => {
    const runner = await OnnxRunner.open(file, { provider: "cpu", threads: 1 });
    try {
      await expect(runner.run(makeBatch(1, 2), ["class_probabilities"])).rejects.toThrow(/has no output class_probabilities; its outputs are hidden_states, cls_embedding, mean_embedding/);
      const bad = makeBatch(1, 2);
      await expect(runner.run({ ...bad, batch: 3 }, ["hidden_states"])).rejects.toThrow(/needs/);
      const r = await runner.run(makeBatch(2, 2), ["mean_embedding"]);
      expect(r.mean_embedding.dims).toEqual([2, d]);
    } finally {
      await runner.close();
    }
    await expect(runner.run(makeBatch(2, 2), ["mean_embedding"])).rejects.toThrow(/closed/);
  });

  it("a missing model, a corrupt file and a graph onnxruntime cannot load give one clear input error", async () => {
    const inputErr = async (p: Promise<unknown>, re: RegExp) => {
      const e = (await p.then(
        () => undefined,
        (x: unknown) => x,
      )) as { message: string; exitCode: number } | undefined;
      expect(e, "should reject").toBeDefined();
      expect(e!.message).toMatch(re);
      expect(e!.message).not.toContain("\n");
      expect(e!.exitCode).toBe(3);
    };
    await inputErr(OnnxRunner.open(path.join(tmp, "nope.onnx")), /nope\.onnx: ONNX model not found/);
    const junk = path.join(tmp, "junk.onnx");
    fs.writeFileSync(junk, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]));
    await inputErr(OnnxRunner.open(junk), /junk\.onnx: is not a readable ONNX model/);
    const truncated = path.join(tmp, "truncated.onnx");
    fs.writeFileSync(truncated, fs.readFileSync(file).subarray(0, 2000));
    await inputErr(OnnxRunner.open(truncated, { provider: "cpu" }), /truncated\.onnx: /);
    // gm metadata intact, graph broken: only onnxruntime notices
    const meta = Object.fromEntries((await import("@gm/onnx")).readMetadataProps(file));
    const broken = path.join(tmp, "broken.onnx");
    fs.writeFileSync(
      broken,
      encodeModel({
        ir_version: 8,
        producer_name: "gm",
        producer_version: "0",
        graph: { name: "g", node: [{ input: ["input_ids"], output: ["hidden_states"], name: "n", op_type: "NoSuchOp", attribute: [] }], initializer: [], input: [], output: [] },
        opset_import: [{ domain: "", version: 17 }],
        metadata_props: Object.entries(meta).map(([key, value]) => ({ key, value })),
      }),
    );
    await inputErr(OnnxRunner.open(broken, { provider: "cpu", workers: 2, threads: 2 }), /broken\.onnx: onnxruntime cannot load it \(.+\); re-export/);
  });

  it("bad options are usage errors; --provider cuda without onnxruntime's CUDA provider says so", async () => {
    await expect(OnnxRunner.open(file, { workers: 0 })).rejects.toThrow(/--workers must be a positive integer/);
    await expect(OnnxRunner.open(file, { threads: 1.5 })).rejects.toThrow(/--threads must be a positive integer/);
    await expect(OnnxRunner.open(file, { provider: "tpu" as never })).rejects.toThrow(/--provider must be cpu, cuda or auto/);
    if (!hasCudaProvider()) {
      await expect(OnnxRunner.open(file, { provider: "cuda" })).rejects.toThrow(/--provider cuda: this onnxruntime-node has no CUDA execution provider/);
      const auto = await OnnxRunner.open(file, { provider: "auto", threads: 1 });
      expect(auto.provider).toBe("cpu");
      await auto.close();
    }
  });

  it("a crashed worker rejects every pending run, and later runs", async () => {
    process.env.GM_FAILPOINT = "onnx-run:2"; // each worker's second run throws in the worker thread
    const runner = await OnnxRunner.open(file, { workers: 2, threads: 2, provider: "cpu" });
    delete process.env.GM_FAILPOINT;
    const r = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => runner.run(makeBatch(i, 4), ["hidden_states"])));
    // The first run of each worker succeeds in the worker, but its result may lose the race with the
    // other worker's crash (then it is rejected with the crash); the second runs and everything
    // queued behind them are always rejected.
    for (const x of r.slice(0, 2)) if (x.status === "rejected") expect(String(x.reason.message)).toMatch(/onnxruntime worker crashed: GM_FAILPOINT onnx-run:2/);
    for (const x of r.slice(2)) {
      expect(x.status).toBe("rejected");
      expect(String((x as PromiseRejectedResult).reason.message)).toMatch(/onnxruntime worker crashed: GM_FAILPOINT onnx-run:2/);
    }
    await expect(runner.run(makeBatch(0, 1), ["hidden_states"])).rejects.toThrow(/worker crashed/);
    await runner.close();
  });

  it("importing @gm/onnx does not load onnxruntime-node", () => {
    const script = `import { createRequire } from "node:module"; await import("@gm/onnx"); const loaded = Object.keys(createRequire(import.meta.url).cache).some((k) => k.includes("onnxruntime")); console.log(loaded ? "loaded" : "not-loaded");`;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { cwd: pkgDir, encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe("not-loaded");
    const check = spawnSync(process.execPath, ["--input-type=module", "-e", script.replace(`await import("@gm/onnx");`, `await import("onnxruntime-node");`)], { cwd: pkgDir, encoding: "utf8" });
    expect(check.stdout.trim()).toBe("loaded"); // the probe itself works
  });
});
