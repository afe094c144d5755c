// gm export --onnx -> gm embed --runtime onnx / gm predict, end to end through the binary, on a tiny
// model pretrained and fine-tuned on simulated cells: onnxruntime gives the native engine's
// embeddings and predictions, and the errors are one clear line.
import { beforeAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { createLogger } from "@gm/core";
import { openCellFile, preprocess, PREPROCESS_DEFAULTS, simulate, tokenize, TOKENIZE_DEFAULTS } from "@gm/data";
import { finetune, FINETUNE_DEFAULTS, pretrain, resolveRunConfig } from "@gm/train";
import { errorLines, gm } from "./helpers/cli.js";
import { tmpDir } from "./helpers/paths.js";

const log = createLogger("silent");
let root: string, raw: string, tok: string, ft: string, onnx: string;
const L = "32";

/** float32 data of a .npy file gm wrote (format 1.0). */
function readNpy(file: string): { shape: number[]; data: Float32Array } {
  const b = fs.readFileSync(file);
  const hl = b.readUInt16LE(8);
  const header = b.subarray(10, 10 + hl).toString("latin1");
  const shape = /\(([^)]*)\)/.exec(header)![1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const bytes = b.subarray(10 + hl);
  return { shape, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let e = 0;
  for (let i = 0; i < a.length; i++) e = Math.max(e, Math.abs(a[i] - b[i]));
  return e;
}

/** RFC 4180 rows (quoted fields with commas / doubled quotes). */
function readCsv(file: string): string[][] {
  const rows: string[][] = [];
  for (const line of fs.readFileSync(file, "utf8").trimEnd().split("\n")) {
    const row: string[] = [];
    let i = 0;
    while (i <= line.length) {
      if (line[i] === '"') {
        let v = "";
        i++;
        while (i < line.length) {
          if (line[i] === '"' && line[i + 1] === '"') (v += '"'), (i += 2);
          else if (line[i] === '"') break;
          else v += line[i++];
        }
        row.push(v);
        i += 2;
      } else {
        const j = line.indexOf(",", i);
        const end = j < 0 ? line.length : j;
        row.push(line.slice(i, end));
        i = end + 1;
      }
    }
    rows.push(row);
  }
  return rows;
}

beforeAll(async () => {
  root = tmpDir("gm-onnx-cli-");
  raw = path.join(root, "sim.h5ad");
  await simulate({ cells: 240, genes: 300, cellTypes: 3, batches: 1, seed: 5, out: raw });
  const pre = path.join(root, "pre");
  await preprocess({ ...PREPROCESS_DEFAULTS, inputs: [raw], out: pre, minGenes: 20 });
  tok = path.join(root, "tok");
  await tokenize({ ...TOKENIZE_DEFAULTS, input: [pre], out: tok, medians: path.join(pre, "gene_medians.json"), maxLen: 32, keepColumns: ["cell_type"] });
  const model = { d_model: 16, n_layer: 2, headdim: 8, d_state: 8, chunk_size: 8, combine: "gate" };
  const config = resolveRunConfig(
    { model, data: { dir: tok, max_length: 32 }, batch: { micro_batch: 16, global_batch: 16 }, optimizer: { lr: 3e-3 }, schedule: { type: "cosine", warmup_steps: 1 }, train: { max_steps: 4, seed: 1 }, checkpoint: { every: 4 }, log: { every: 100 } },
    "test config",
  );
  await pretrain({ config, out: path.join(root, "pre-run"), log });
  await finetune({ ...FINETUNE_DEFAULTS, model: path.join(root, "pre-run"), data: tok, out: path.join(root, "ft"), labelKey: "cell_type", maxLength: 32, epochs: 1, lr: 1e-3, batchSize: 16, head: { hidden: 16, n_layers: 3, dropout: 0.5 } }, log);
  ft = path.join(root, "ft", "best");
  onnx = path.join(root, "ft.onnx");
  const r = gm(["export", "--model", ft, "--onnx", onnx, "--with-classifier"]);
  expect(r.code, r.stderr).toBe(0);
});

describe("gm embed --runtime onnx", () => {
  it("gives the native embeddings within 1e-4: cls pooling from h5ad, mean pooling + context gene embeddings from tokens", () => {
    const out = (n: string) => path.join(root, n);
    let r = gm(["embed", "--model", ft, "--data", raw, "--out", out("native.npy"), "--max-length", L, "--batch-size", "16"]);
    expect(r.code, r.stderr).toBe(0);
    r = gm(["embed", "--model", onnx, "--data", raw, "--out", out("onnx.npy"), "--max-length", L, "--batch-size", "7", "--workers", "2", "--threads", "2", "--provider", "cpu"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/"runtime":"onnx"/);
    const a = readNpy(out("native.npy")), b = readNpy(out("onnx.npy"));
    expect(b.shape).toEqual([240, 16]);
    expect(a.shape).toEqual(b.shape);
    expect(maxAbsDiff(a.data, b.data)).toBeLessThan(1e-4);

    const mean = ["--data", tok, "--pooling", "mean", "--gene-context", "--max-length", L, "--batch-size", "16"];
    r = gm(["embed", "--model", ft, ...mean, "--out", out("native-mean.npy"), "--genes-out", out("native-genes.tsv")]);
    expect(r.code, r.stderr).toBe(0);
    r = gm(["embed", "--model", onnx, "--runtime", "onnx", ...mean, "--out", out("onnx-mean.npy"), "--genes-out", out("onnx-genes.tsv"), "--workers", "2", "--threads", "2"]);
    expect(r.code, r.stderr).toBe(0);
    expect(maxAbsDiff(readNpy(out("native-mean.npy")).data, readNpy(out("onnx-mean.npy")).data)).toBeLessThan(1e-4);
    const ga = fs.readFileSync(out("native-genes.tsv"), "utf8").trim().split("\n"), gb = fs.readFileSync(out("onnx-genes.tsv"), "utf8").trim().split("\n");
    expect(gb.map((l) => l.split("\t")[0])).toEqual(ga.map((l) => l.split("\t")[0]));
    expect(ga.length).toBeGreaterThan(100);
    const nums = (lines: string[]) => lines.slice(1).flatMap((l) => l.split("\t").slice(1).map(Number));
    expect(maxAbsDiff(nums(ga), nums(gb))).toBeLessThan(1e-4);
  });
});

describe("gm predict", () => {
  it("the .onnx (class_probabilities) and the native folder (its head) give the same labels and probabilities, in input order", async () => {
    const p1 = path.join(root, "pred-onnx.csv"), p2 = path.join(root, "pred-native.csv");
    fs.writeFileSync(p1, "an old file that is overwritten\n");
    let r = gm(["predict", "--model", onnx, "--data", raw, "--out", p1, "--max-length", L, "--batch-size", "9", "--workers", "2", "--threads", "2", "--label-key", "cell_type"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/accuracy \d\.\d{4}, macro-F1 \d\.\d{4} on 240 labelled cells/);
    r = gm(["predict", "--model", ft, "--data", raw, "--out", p2, "--max-length", L]);
    expect(r.code, r.stderr).toBe(0);
    const a = readCsv(p1), b = readCsv(p2);
    const classes = (JSON.parse(fs.readFileSync(path.join(ft, "labels.json"), "utf8")) as { classes: string[] }).classes;
    expect(a[0]).toEqual(["cell", "predicted", "probability", ...classes.map((c) => `p_${c}`)]);
    expect(b[0]).toEqual(a[0]);
    expect(a.length).toBe(241);
    const f = await openCellFile(raw);
    const obs = f.readObs([], 0, f.nCells).index;
    f.close();
    expect(a.slice(1).map((x) => x[0])).toEqual(obs);
    expect(b.slice(1).map((x) => x[0])).toEqual(obs);
    let maxErr = 0;
    for (let i = 1; i < a.length; i++) {
      const pa = a[i].slice(3).map(Number), pb = b[i].slice(3).map(Number);
      maxErr = Math.max(maxErr, maxAbsDiff(pa, pb));
      expect(Math.abs(pa.reduce((s, v) => s + v, 0) - 1)).toBeLessThan(1e-5);
      expect(Number(a[i][2])).toBe(Math.max(...pa));
      // same label unless the two best classes are tied to within the tolerance
      const sorted = [...pb].sort((x, y) => y - x);
      if (sorted[0] - sorted[1] > 2e-4) expect(a[i][1]).toBe(b[i][1]);
    }
    expect(maxErr).toBeLessThan(1e-4);
  });

  it("refuses with one clear line and writes nothing: no classifier, not fine-tuned, another vocabulary, no shared gene, genes table from onnx", async () => {
    const bare = path.join(root, "bare.onnx");
    expect(gm(["export", "--model", ft, "--onnx", bare]).code).toBe(0);
    const out = path.join(root, "never.csv");
    const cases: [string[], number, RegExp][] = [
      [["predict", "--model", bare, "--data", raw, "--out", out], 3, /bare\.onnx: was exported without --with-classifier.*gm export --onnx --with-classifier/],
      [["predict", "--model", path.join(root, "pre-run"), "--data", raw, "--out", out], 3, /is not a fine-tuned model/],
      [["predict", "--model", onnx, "--data", raw, "--out", out, "--runtime", "native"], 2, /--runtime native needs a gm model folder/],
      [["predict", "--model", onnx, "--data", raw, "--out", out, "--gene-id-column", "feature_name"], 3, /sim\.h5ad: none of its 300 genes is in the vocabulary/],
      [["embed", "--model", onnx, "--data", raw, "--out", path.join(root, "never.npy"), "--genes-out", path.join(root, "never.tsv")], 2, /--genes-out without --gene-context.*\.onnx/],
      [["embed", "--model", path.join(root, "missing.onnx"), "--data", raw, "--out", path.join(root, "never.npy")], 3, /missing\.onnx: ONNX model not found/],
    ];
    // data tokenized for another vocabulary (50 genes the model does not know)
    const other = path.join(root, "other");
    await simulate({ cells: 40, genes: 350, cellTypes: 2, batches: 1, seed: 9, out: path.join(other, "raw.h5ad") });
    await preprocess({ ...PREPROCESS_DEFAULTS, inputs: [path.join(other, "raw.h5ad")], out: path.join(other, "pre"), minGenes: 20 });
    await tokenize({ ...TOKENIZE_DEFAULTS, input: [path.join(other, "pre")], out: path.join(other, "tok"), medians: path.join(other, "pre", "gene_medians.json"), maxLen: 32 });
    cases.push([["predict", "--model", onnx, "--data", path.join(other, "tok"), "--out", out], 3, /not in the model's vocabulary/]);
    for (const [args, code, re] of cases) {
      const r = gm(args);
      const lines = errorLines(r.stderr);
      expect(r.code, `${args.join(" ")}\n${r.stderr}`).toBe(code);
      expect(lines.length, r.stderr).toBe(1);
      expect(lines[0]).toMatch(re);
    }
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.existsSync(path.join(root, "never.npy"))).toBe(false);
  });
});
