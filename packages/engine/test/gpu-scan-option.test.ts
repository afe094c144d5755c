// GeneMamba.create(..., { kind: "cuda", scan }) through the emulated GPU addon (GM_GPU_EMULATION=1
// selects gm_native_emul.node when @gm/engine loads, hence a child process): "ssd" and "recurrent"
// give the same loss and gradients in fp32 (the chunked SSD form and the recurrence are the same
// scan), GM_GPU_SCAN is the default, and a bad value is one clear error.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { repoRoot } from "../../../tests/helpers/paths.js";

const EMUL = path.join(repoRoot, "native/build/Release/gm_native_emul.node");
const ENGINE = path.join(repoRoot, "packages/engine/dist/index.js");

const SCRIPT = `
const { GeneMamba } = await import(${JSON.stringify(ENGINE)});
const cfg = { vocab_size: 40, d_model: 16, n_layer: 2, d_state: 8, headdim: 8, chunk_size: 4 };
const B = 2, L = 9;
const tokens = new Int32Array(B * L).map((_, i) => 2 + ((i * 7) % 37));
const targets = new Int32Array(B * L).map((_, i) => (i % 3 || (i >= L && i % L >= 6) ? -100 : 2 + ((i * 5) % 37)));  // -100 at row 1's pads
const batch = { tokens, targets, lengths: Int32Array.from([9, 6]), batch: B, length: L };
const out = {};
for (const scan of [undefined, "recurrent", "ssd"]) {
  const m = GeneMamba.create(cfg, 3, { kind: "cuda", dtype: "float32", ...(scan ? { scan } : {}) });
  m.zeroGrad();
  const { loss } = m.forwardBackward(batch);
  out[scan ?? "default"] = { loss, grads: Array.from(m.grads) };
}
try { GeneMamba.create(cfg, 3, { kind: "cuda", scan: "fast" }); out.bad = null; } catch (e) { out.bad = String(e.message); }
console.log(JSON.stringify(out));
`;

function run(env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", SCRIPT], { encoding: "utf8", env: { ...process.env, GM_GPU_EMULATION: "1", OMP_NUM_THREADS: "1", ...env } });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as Record<string, { loss: number; grads: number[] } | string | null>;
}
const maxRel = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i]))) / Math.max(...b.map(Math.abs));

describe.skipIf(!fs.existsSync(EMUL) || !fs.existsSync(ENGINE))("the GPU engine's scan option (emulated addon)", () => {
  it("scan: ssd and recurrent agree in fp32 (loss and every gradient within 1e-5); the default is the recurrence; a bad value is refused", () => {
    const out = run();
    const rec = out.recurrent as { loss: number; grads: number[] }, ssd = out.ssd as { loss: number; grads: number[] }, def = out.default as { loss: number; grads: number[] };
    expect(Math.abs(ssd.loss - rec.loss) / rec.loss).toBeLessThan(1e-5);
    expect(maxRel(ssd.grads, rec.grads)).toBeLessThan(1e-5);
    expect(def.grads).toEqual(rec.grads);  // bitwise: the same kernels
    expect(out.bad).toMatch(/options\.scan must be "recurrent" or "ssd", got "fast"/);
  });

  it("GM_GPU_SCAN=ssd makes the SSD scan the default", () => {
    const out = run({ GM_GPU_SCAN: "ssd" });
    const ssd = out.ssd as { grads: number[] }, def = out.default as { grads: number[] }, rec = out.recurrent as { grads: number[] };
    expect(def.grads).toEqual(ssd.grads);
    expect(def.grads).not.toEqual(rec.grads);  // a different summation order: not bitwise the recurrence
  });
});
