// gm -> PyTorch: a checkpoint gm trained and saved loads into the PyTorch reference
// (scripts/reference/check_checkpoint.py), which reproduces gm's logits. Needs Debian's python3-torch;
// skipped where it is not installed (CI). The other direction is reference.test.ts.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { GeneMamba, IGNORE_INDEX, padBatch, writeSafetensors, type ModelConfigInput } from "@gm/engine";
import { repoRoot, tmpDir } from "../../../tests/helpers/paths.js";

const PY = "/usr/bin/python3";
const hasTorch = spawnSync(PY, ["-c", "import torch"], { stdio: "ignore" }).status === 0;

describe.skipIf(!hasTorch)("checkpoints move from gm to PyTorch", () => {
  const configs: ModelConfigInput[] = [
    { vocab_size: 30, d_model: 16, n_layer: 2, headdim: 8, d_state: 8, combine: "gate" },
    { vocab_size: 30, d_model: 16, n_layer: 2, d_state: 4, mixer: "mamba1", combine: "concat" },
    { vocab_size: 30, d_model: 16, n_layer: 2, headdim: 8, d_state: 8, combine: "unidirectional" },
  ];
  for (const cfg of configs) {
    it(`${cfg.mixer ?? "mamba2"} / ${cfg.combine}`, () => {
      const m = GeneMamba.create(cfg, 3);
      const seqs = [[2, 5, 9, 11, 3, 7, 8, 20, 4], [6, 6, 2, 29, 14], [3, 4]];
      const b = padBatch(seqs);
      const targets = new Int32Array(b.tokens.length).fill(IGNORE_INDEX);
      seqs.forEach((s, r) => s.forEach((tok, t) => (targets[r * b.length + t] = (tok * 7) % 28 + 2)));
      for (let step = 1; step <= 3; step++) m.trainStep({ ...b, targets }, { lr: 1e-2, weightDecay: 0.1, maxGradNorm: 1, step });
      const dir = tmpDir("gm-interop-");
      m.save(path.join(dir, "ckpt"));
      const logits = m.forward(b, { logits: true }).logits!;
      writeSafetensors(path.join(dir, "probe.safetensors"), [
        { name: "input.tokens", shape: [b.batch, b.length], data: b.tokens },
        { name: "input.lengths", shape: [b.batch], data: b.lengths },
        { name: "output.logits", shape: [b.batch, b.length, 30], data: logits },
      ]);
      const r = spawnSync(PY, [path.join(repoRoot, "scripts/reference/check_checkpoint.py"), path.join(dir, "ckpt"), path.join(dir, "probe.safetensors")], { encoding: "utf8" });
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout.trim()).max_rel_err).toBeLessThan(1e-4);
    });
  }
});
