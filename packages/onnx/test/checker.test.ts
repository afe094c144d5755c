// onnx's own checker (full_check: operator schemas, types, shape inference) on exported models, with
// Debian's python3-onnx (scripts/reference/check_onnx.py). Skipped where it is not installed.
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { ClassifierHead, GeneMamba } from "@gm/engine";
import { exportOnnx } from "@gm/onnx";

const PY = "/usr/bin/python3";
const hasOnnx = fs.existsSync(PY) && spawnSync(PY, ["-c", "import onnx"]).status === 0;
const script = path.resolve(__dirname, "../../../scripts/reference/check_onnx.py");

describe.skipIf(!hasOnnx)("exported models pass onnx.checker.check_model(full_check=True)", () => {
  it("mamba2 SSD + classifier, fp16, mamba1 Scan, logits", async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gm-onnx-check-"));
    const files: string[] = [];
    for (const [mixer, combine] of [["mamba2", "gate"], ["mamba1", "concat"]] as const) {
      const dir = path.join(tmp, mixer);
      fs.mkdirSync(dir);
      GeneMamba.create({ vocab_size: 12, d_model: 8, n_layer: 1, mixer, combine, d_state: 4, headdim: 4 }, 1).save(dir);
      fs.writeFileSync(path.join(dir, "vocab.json"), JSON.stringify(Object.fromEntries(["[UNK]", "[PAD]", ...Array.from({ length: 10 }, (_, i) => `G${i}`)].map((t, i) => [t, i]))));
      ClassifierHead.create({ d_in: 8, n_classes: 2, hidden: 6 }, 1).save(path.join(dir, "classifier.safetensors"));
      fs.writeFileSync(path.join(dir, "labels.json"), JSON.stringify({ format: "gm.labels/1", label_key: "t", classes: ["a", "b"] }));
      files.push((await exportOnnx({ model: dir, out: path.join(tmp, `${mixer}.onnx`), withClassifier: true, withLogits: true })).out);
      files.push((await exportOnnx({ model: dir, out: path.join(tmp, `${mixer}-fp16.onnx`), fp16: true })).out);
    }
    const res = spawnSync(PY, [script, ...files], { encoding: "utf8" });
    const reports = res.stdout.trim().split("\n").map((l) => JSON.parse(l) as { ok: boolean; error?: string; opset: [string, number][]; outputs: string[] });
    expect(reports.map((r) => r.error ?? "ok")).toEqual(files.map(() => "ok"));
    expect(res.status).toBe(0);
    expect(reports[0].opset).toEqual([["", 17]]);
    expect(reports[0].outputs).toEqual(["hidden_states", "cls_embedding", "mean_embedding", "logits", "class_logits", "class_probabilities"]);
    // and the script really fails on a broken model
    const broken = path.join(tmp, "broken.onnx");
    const bytes = fs.readFileSync(files[0]);
    fs.writeFileSync(broken, Buffer.from(bytes.toString("latin1").replace("ReverseSequence", "ReverseSequencf"), "latin1"));
    expect(() => execFileSync(PY, [script, broken], { stdio: "pipe" })).toThrow();
  });
});
