// gm pretrain across OS processes (the multi-node launch lines, on one machine over loopback): the
// TCP ring gives bitwise the weights of the same ranks in one process, and a process that dies
// stops the others with one clear error line.
import { beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { listCheckpoints } from "@gm/train";
import { errorLines, gm } from "./helpers/cli.js";
import { gmBin, repoRoot, tmpDir } from "./helpers/paths.js";
import { freePort } from "./helpers/net.js";
import { simulatedTokens } from "./helpers/tokenized.js";

let root: string, tok: string, cfg: string;

beforeAll(async () => {
  root = tmpDir("gm-pretrain-mp-");
  tok = await simulatedTokens(root, { cells: 400, genes: 400, seed: 3, maxLen: 32 });
  cfg = path.join(root, "config.json");
  // The smallest model there is (2 layers, d 32) and accumulation 2 (micro 2 x 2 ranks x 2 = 8 cells a step).
  fs.writeFileSync(
    cfg,
    JSON.stringify({
      model: { d_model: 32, n_layer: 2, headdim: 16, d_state: 8, chunk_size: 16, combine: "gate" },
      data: { max_length: 24, buffer_batches: 2, prefetch: 1 },
      batch: { micro_batch: 2, global_batch: 8 },
      optimizer: { lr: 3e-3, weight_decay: 0.01 },
      schedule: { type: "cosine", warmup_steps: 2, min_lr_ratio: 0.1 },
      train: { max_steps: 6, seed: 4 },
      checkpoint: { every: 3, keep_last: 0 },
      log: { every: 1 },
    }),
  );
});


function launch(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [gmBin, "--log-format", "json", "pretrain", ...args], { cwd: repoRoot, env: { ...process.env, GM_NO_PROGRESS: "1", GM_LOG_LEVEL: "info", ...env } });
  let stderr = "";
  const listeners: ((s: string) => void)[] = [];
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
    for (const l of listeners) l(stderr);
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
  return { child, exited, stderr: () => stderr, onStderr: (l: (s: string) => void) => listeners.push(l) };
}

const file = (dir: string, step: number, name: string) => fs.readFileSync(path.join(dir, `checkpoint-${step}`, name));
const losses = (dir: string) => fs.readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).loss as number);

describe("gm pretrain across processes (TCP ring)", () => {
  it("2 processes (--nnodes 2 / torchrun env) give checkpoints bitwise identical to --ranks 2 in one process", async () => {
    const ref = path.join(root, "ref");
    const r = gm(["pretrain", "--config", cfg, "--data", tok, "--out", ref, "--ranks", "2"]);
    expect(r.code, r.stderr).toBe(0);

    const out = path.join(root, "mp");
    const port = await freePort();
    const node0 = launch(["--config", cfg, "--data", tok, "--out", out, "--nnodes", "2", "--node-rank", "0", "--master-addr", "127.0.0.1", "--master-port", String(port)]);
    // node 1 as torchrun would start it; its --out is elsewhere to show that it writes nothing
    const out1 = path.join(root, "mp-node1");
    const node1 = launch(["--config", cfg, "--data", tok, "--out", out1], { RANK: "1", WORLD_SIZE: "2", LOCAL_WORLD_SIZE: "1", MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port) });
    const codes = await Promise.all([node0.exited, node1.exited]);
    expect(codes, node0.stderr() + node1.stderr()).toEqual([0, 0]);
    expect(node0.stderr()).toMatch(/data parallel: 2 ranks = 2 nodes × 1 cpu rank, 2 processes, this one \(node 0\) hosts rank 0; master 127\.0\.0\.1:\d+ \(launcher gm\)/);
    expect(node1.stderr()).toMatch(/2 processes, this one \(node 1\) hosts rank 1; master 127\.0\.0\.1:\d+ \(launcher torchrun\)/);
    expect(fs.existsSync(out1)).toBe(false);

    expect(listCheckpoints(out).map((c) => c.step)).toEqual([3, 6]);
    for (const step of [3, 6]) {
      expect(file(out, step, "model.safetensors").equals(file(ref, step, "model.safetensors")), `weights at step ${step}`).toBe(true);
      expect(file(out, step, "optimizer.safetensors").equals(file(ref, step, "optimizer.safetensors"))).toBe(true);
    }
    expect(losses(out)).toEqual(losses(ref));
    const sum = (d: string) => JSON.parse(fs.readFileSync(path.join(d, "summary.json"), "utf8")).unigram_baseline;
    expect(sum(out)).toBe(sum(ref));
  });

  it("2 nodes x --ranks 2 (4 ranks, 2 per process) match --ranks 4 in one process bitwise", async () => {
    const ref = path.join(root, "ref4");
    const r = gm(["pretrain", "--config", cfg, "--data", tok, "--out", ref, "--ranks", "4", "--max-steps", "3"]);
    expect(r.code, r.stderr).toBe(0);
    const out = path.join(root, "mp4");
    const port = await freePort();
    const common = ["--config", cfg, "--data", tok, "--out", out, "--max-steps", "3", "--ranks", "2", "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", String(port)];
    const node0 = launch([...common, "--node-rank", "0"]);
    const node1 = launch([...common, "--node-rank", "1"]);
    expect(await Promise.all([node0.exited, node1.exited]), node0.stderr() + node1.stderr()).toEqual([0, 0]);
    expect(node1.stderr()).toMatch(/4 ranks = 2 nodes × 2 cpu ranks, 2 processes, this one \(node 1\) hosts ranks 2-3/);
    expect(file(out, 3, "model.safetensors").equals(file(ref, 3, "model.safetensors"))).toBe(true);
    expect(losses(out)).toEqual(losses(ref));
  });

  it("SIGTERM to one process stops both after the same step; --resume on both continues bitwise", async () => {
    const ref = path.join(root, "ref40");
    const steps = ["--max-steps", "40", "--save-every", "1000"];
    const r = gm(["pretrain", "--config", cfg, "--data", tok, "--out", ref, "--ranks", "2", ...steps]);
    expect(r.code, r.stderr).toBe(0);
    const out = path.join(root, "mp-stop");
    const port = await freePort();
    const world = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", String(port)];
    const node0 = launch(["--config", cfg, "--data", tok, "--out", out, ...steps, ...world, "--node-rank", "0"]);
    const node1 = launch(["--config", cfg, "--data", tok, "--out", out, ...steps, ...world, "--node-rank", "1"]);
    let signalled = false;
    node1.onStderr((s) => {
      if (!signalled && /"step":3\b/.test(s)) {
        signalled = true;
        node1.child.kill("SIGTERM");
      }
    });
    expect(await Promise.all([node0.exited, node1.exited]), node0.stderr() + node1.stderr()).toEqual([130, 130]);
    const cps = listCheckpoints(out);
    expect(cps.length).toBe(1);
    expect(cps[0].step).toBeLessThan(40);
    const stopped = (s: string) => Number(/stopped at step (\d+)/.exec(s)?.[1]);
    expect(stopped(node0.stderr())).toBe(cps[0].step);
    expect(stopped(node1.stderr())).toBe(cps[0].step);
    // both resume from the shared run folder
    const port2 = await freePort();
    const world2 = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", String(port2)];
    const res0 = launch(["--resume", out, ...world2, "--node-rank", "0"]);
    const res1 = launch(["--resume", out, ...world2, "--node-rank", "1"]);
    expect(await Promise.all([res0.exited, res1.exited]), res0.stderr() + res1.stderr()).toEqual([0, 0]);
    expect(file(out, 40, "model.safetensors").equals(file(ref, 40, "model.safetensors"))).toBe(true);
    expect(losses(out)).toEqual(losses(ref));
  });

  it("killing the node-rank 1 process mid-run makes node-rank 0 exit non-zero with one clear error line within seconds", async () => {
    const port = await freePort();
    const out = path.join(root, "mp-kill");
    const common = ["--config", cfg, "--data", tok, "--out", out, "--max-steps", "400", "--save-every", "1000", "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", String(port)];
    const node0 = launch([...common, "--node-rank", "0"]);
    const node1 = launch([...common, "--node-rank", "1"]);
    let killedAt = 0;
    node0.onStderr((s) => {
      if (!killedAt && /"step":3\b/.test(s)) {
        killedAt = Date.now();
        node1.child.kill("SIGKILL");
      }
    });
    const code = await node0.exited;
    expect(killedAt, node0.stderr()).toBeGreaterThan(0);
    expect(Date.now() - killedAt).toBeLessThan(15_000);
    expect(code).toBe(1);
    const lines = errorLines(node0.stderr());
    expect(lines, node0.stderr()).toEqual([expect.stringMatching(/^gm: error: step \d+: rank 1 \(127\.0\.0\.1:\d+\) left the group: its process exited or lost the connection.*; no checkpoint was written; restart every process with gm pretrain --resume/)]);
    await node1.exited;
  });

  it("an error in one process (here a NaN gradient on rank 1 only) stops the other with that error", async () => {
    const port = await freePort();
    const out = path.join(root, "mp-nan");
    const common = ["--config", cfg, "--data", tok, "--out", out, "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", String(port)];
    const node0 = launch([...common, "--node-rank", "0"]);
    const node1 = launch([...common, "--node-rank", "1"], { GM_FAILPOINT: "nan-grad:2" });
    expect(await Promise.all([node0.exited, node1.exited])).toEqual([1, 1]);
    expect(errorLines(node1.stderr())).toEqual([expect.stringMatching(/^gm: error: step 2: the gradient norm is NaN; nothing new was saved/)]);
    expect(errorLines(node0.stderr())).toEqual([expect.stringMatching(/^gm: error: step 2: rank 1 \(127\.0\.0\.1:\d+\) left the group: step 2: the gradient norm is NaN/)]);
  });
});
