/**
 * The pretraining data loader on a real `gm tokenize` output (simulated cells → preprocess →
 * tokenize with small units and 250-row record batches, so there are several shards and batches).
 * The properties tested are the ones training relies on: every cell once per epoch, determinism
 * across prefetch modes and resumption, rank slices that are disjoint and independent of how the
 * global batch is factored into ranks × micro-batch, and clear errors.
 */
import { beforeAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { tableFromArrays } from "apache-arrow";
import { ArrowFileSink, PREPROCESS_DEFAULTS, TOKENIZE_DEFAULTS, preprocess, readTokenizedCells, simulate, tokenize } from "@gm/data";
import { TokenLoader, readDatasetIndex, stepsPerEpoch, type LoaderOptions, type LoaderPosition, type StepBatch } from "@gm/train";
import { repoRoot, tmpDir } from "../../../tests/helpers/paths.js";

let dir: string; // the tokenized dataset
let ref: Int32Array[]; // its cells in dataset order, as readTokenizedCells yields them
let rows: number;

/** Fixture: 2,500 simulated cells × 2,000 genes, 4 preprocess units → 4 shards of 250-row batches. */
async function makeDataset(root: string): Promise<string> {
  await simulate({ cells: 2500, genes: 2000, cellTypes: 4, batches: 2, seed: 11, out: path.join(root, "raw", "sim.h5ad") });
  await preprocess({ ...PREPROCESS_DEFAULTS, inputs: [path.join(root, "raw")], out: path.join(root, "pre"), minGenes: 50, workers: 2, unitCells: 700 });
  const out = path.join(root, "tok");
  await tokenize({ ...TOKENIZE_DEFAULTS, input: [path.join(root, "pre")], out, medians: path.join(root, "pre", "gene_medians.json"), workers: 2, batchRows: 250 });
  return out;
}

beforeAll(async () => {
  dir = await makeDataset(tmpDir("gm-loader-"));
  ref = Array.from(readTokenizedCells(dir), (c) => c.ids);
  rows = ref.length;
});

const base = (o: Partial<LoaderOptions> = {}): LoaderOptions => ({ dir, seed: 7, worldSize: 2, microBatch: 4, accumulation: 2, maxLength: 200, prefetch: 0, ...o });

async function take(opts: LoaderOptions, n: number): Promise<StepBatch[]> {
  const l = new TokenLoader(opts);
  try {
    const out: StepBatch[] = [];
    for (let i = 0; i < n; i++) out.push(await l.next());
    return out;
  } finally {
    await l.close();
  }
}

/** All steps of epoch `epoch` (the loader is started at that epoch). */
async function epochSteps(opts: LoaderOptions, epoch = 0): Promise<StepBatch[]> {
  const l = new TokenLoader({ ...opts, start: { epoch, buffer: 0, step: 0 } });
  try {
    const out: StepBatch[] = [];
    for (;;) {
      const s = await l.next();
      expect(s.epoch).toBe(epoch);
      out.push(s);
      if (s.position.epoch !== epoch) return out;
    }
  } finally {
    await l.close();
  }
}

/** An exact fingerprint of a step: structure, samples and every token byte. */
function digest(s: StepBatch): string {
  const h = createHash("sha1");
  h.update(JSON.stringify({ epoch: s.epoch, position: s.position, cells: s.cells, shape: s.micro.map((m) => m.map((r) => r.map((c) => c.sample))) }));
  for (const m of s.micro) for (const r of m) for (const c of r) h.update(new Uint8Array(c.ids.buffer, c.ids.byteOffset, c.ids.byteLength)).update("|");
  return h.digest("hex");
}

const samplesOf = (s: StepBatch): number[] => s.micro.flat(2).map((c) => c.sample);
const sortedSamples = (s: StepBatch): number[] => samplesOf(s).sort((a, b) => a - b);

/** Tokens a padded batch would hold: per (micro-step, rank), the longest cell × cells. */
function paddedTokens(steps: StepBatch[]): number {
  let t = 0;
  for (const s of steps) for (const m of s.micro) for (const r of m) t += r.length * Math.max(0, ...r.map((c) => c.ids.length));
  return t;
}

describe("TokenLoader", () => {
  it("the fixture has several shards and record batches, and some cells longer than maxLength", () => {
    const idx = readDatasetIndex(dir);
    expect(idx.shards.length).toBeGreaterThanOrEqual(3);
    expect(idx.shards.reduce((s, x) => s + x.batches.length, 0)).toBeGreaterThanOrEqual(8);
    expect(idx.rows).toBe(rows);
    expect(ref.some((c) => c.length > 200)).toBe(true);
  });

  it("an epoch yields every cell exactly once, truncated, with its global row index (sync and prefetch)", async () => {
    for (const prefetch of [0, 4]) {
      const opts = base({ prefetch });
      const steps = await epochSteps(opts);
      expect(steps.length).toBe(stepsPerEpoch(readDatasetIndex(dir), opts));
      const seen = new Uint8Array(rows);
      const wrong: number[] = [];
      const G = 2 * 4 * 2;
      for (const s of steps) {
        expect(s.micro.length).toBe(2);
        expect(s.micro.every((m) => m.length === 2)).toBe(true);
        expect(samplesOf(s).length).toBe(s.cells);
        expect(s.cells).toBeLessThanOrEqual(G);
        for (const c of s.micro.flat(2)) {
          seen[c.sample]++;
          const want = ref[c.sample].subarray(0, 200);
          if (c.ids.length !== want.length || c.ids.some((v, i) => v !== want[i])) wrong.push(c.sample);
        }
      }
      expect(seen.every((x) => x === 1)).toBe(true);
      expect(wrong, "cells whose ids differ from readTokenizedCells").toEqual([]);
      // only a buffer's last step batch may be short: at most one per buffer
      const short = steps.filter((s) => s.cells < G).length;
      expect(short).toBeLessThanOrEqual(Math.ceil(readDatasetIndex(dir).shards.reduce((s, x) => s + x.batches.length, 0) / 4));
      expect(steps.at(-1)!.position).toEqual({ epoch: 1, buffer: 0, step: 0 });
    }
  });

  it("without shuffle, cells come in dataset order, split over (micro-step, rank) contiguously", async () => {
    const steps = await epochSteps(base({ shuffle: false }));
    expect(steps.flatMap(samplesOf)).toEqual(Array.from({ length: rows }, (_, i) => i));
    // and the next epoch is the same order again
    const e1 = await epochSteps(base({ shuffle: false }), 1);
    expect(e1.map(samplesOf)).toEqual(steps.map(samplesOf));
  });

  it("stepsPerEpoch counts the steps each epoch actually has, from row counts only", async () => {
    const idx = readDatasetIndex(dir);
    for (const o of [base(), base({ worldSize: 3, microBatch: 5, accumulation: 3, bufferBatches: 3 }), base({ shuffle: false, bufferBatches: 1 })]) {
      for (const epoch of [0, 1]) expect((await epochSteps(o, epoch)).length, JSON.stringify({ ...o, dir: undefined, epoch })).toBe(stepsPerEpoch(idx, o, epoch));
    }
  });

  it("the order is a function of (seed, epoch): same seed repeats, another seed or epoch differs", async () => {
    const a = (await epochSteps(base())).map(samplesOf);
    const again = (await epochSteps(base())).map(samplesOf);
    const otherSeed = (await epochSteps(base({ seed: 8 }))).map(samplesOf);
    const nextEpoch = (await epochSteps(base(), 1)).map(samplesOf);
    expect(again).toEqual(a);
    expect(otherSeed.flat()).not.toEqual(a.flat());
    expect(nextEpoch.flat()).not.toEqual(a.flat());
    // different plans of the same cells
    expect([...otherSeed.flat()].sort((x, y) => x - y)).toEqual([...a.flat()].sort((x, y) => x - y));
    // the first steps differ, not just some late swap
    expect(otherSeed[0]).not.toEqual(a[0]);
    expect(nextEpoch[0]).not.toEqual(a[0]);
  });

  it("length grouping needs much less padding than dataset order", async () => {
    const opts = base({ maxLength: 2048, worldSize: 1, microBatch: 8, accumulation: 1 });
    const grouped = paddedTokens(await epochSteps(opts));
    const ungrouped = paddedTokens(await epochSteps({ ...opts, shuffle: false }));
    const real = ref.reduce((s, c) => s + c.length, 0);
    expect(grouped).toBeGreaterThanOrEqual(real);
    expect(grouped).toBeLessThan(ungrouped);
    expect(grouped - real).toBeLessThan(0.25 * (ungrouped - real));
  });

  it("R = 4 ranks × b gives the cells of R = 1 × 4b in every step (and micro-step); rank slices are disjoint", async () => {
    const four = await epochSteps(base({ worldSize: 4, microBatch: 3, accumulation: 2 }));
    const one = await epochSteps(base({ worldSize: 1, microBatch: 12, accumulation: 2 }));
    expect(four.length).toBe(one.length);
    for (let i = 0; i < four.length; i++) {
      expect(sortedSamples(four[i])).toEqual(sortedSamples(one[i]));
      expect(four[i].position).toEqual(one[i].position);
      if (four[i].cells === 24) {
        for (let a = 0; a < 2; a++) expect(four[i].micro[a].flat().map((c) => c.sample)).toEqual(one[i].micro[a][0].map((c) => c.sample));
        for (const m of four[i].micro) expect(m.every((r) => r.length === 3)).toBe(true);
      } else {
        // a short step is spread as evenly as possible over the A*R parts
        const sizes = four[i].micro.flat().map((r) => r.length);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      }
      const all = samplesOf(four[i]);
      expect(new Set(all).size).toBe(all.length);
      expect(all.length).toBe(four[i].cells);
    }
  });

  it("prefetch 0 and prefetch 4 give the same steps byte for byte, across epochs", async () => {
    const n = stepsPerEpoch(readDatasetIndex(dir), base()) + 7;
    const sync = (await take(base(), n)).map(digest);
    const pre = (await take(base({ prefetch: 4 }), n)).map(digest);
    const pre1 = (await take(base({ prefetch: 1 }), n)).map(digest);
    expect(pre).toEqual(sync);
    expect(pre1).toEqual(sync);
  });

  it("resuming from a reported position continues exactly (mid-buffer, buffer boundary, epoch boundary)", async () => {
    const opts = base({ bufferBatches: 2 });
    const perEpoch = stepsPerEpoch(readDatasetIndex(dir), opts);
    const run = await take(opts, perEpoch + 6);
    const digests = run.map(digest);
    const mid = run.findIndex((s) => s.position.step > 0 && s.position.buffer > 0);
    const boundary = run.findIndex((s) => s.position.step === 0 && s.position.buffer > 0);
    const epochEnd = run.findIndex((s) => s.position.epoch === 1);
    expect(epochEnd).toBe(perEpoch - 1);
    for (const k of [mid, boundary, epochEnd]) {
      expect(k).toBeGreaterThanOrEqual(0);
      const start: LoaderPosition = run[k].position;
      for (const prefetch of [0, 3]) {
        const resumed = (await take({ ...opts, start, prefetch }, 5)).map(digest);
        expect(resumed, `resume at step ${k + 1} ${JSON.stringify(start)}, prefetch ${prefetch}`).toEqual(digests.slice(k + 1, k + 6));
      }
    }
  });

  it("ranks: [2] returns only rank 2's slices", async () => {
    const all = await take(base({ worldSize: 4, microBatch: 3 }), 6);
    const two = await take(base({ worldSize: 4, microBatch: 3, ranks: [2] }), 6);
    const some = await take(base({ worldSize: 4, microBatch: 3, ranks: [3, 1], prefetch: 2 }), 6);
    for (let i = 0; i < 6; i++) {
      expect(two[i].cells).toBe(all[i].cells);
      expect(two[i].position).toEqual(all[i].position);
      expect(two[i].micro.map((m) => m.length)).toEqual([1, 1]);
      for (let a = 0; a < 2; a++) {
        expect(two[i].micro[a][0].map((c) => c.sample)).toEqual(all[i].micro[a][2].map((c) => c.sample));
        expect(some[i].micro[a].map((r) => r.map((c) => c.sample))).toEqual([3, 1].map((r) => all[i].micro[a][r].map((c) => c.sample)));
      }
    }
  });

  it("close() while the worker is busy reading returns promptly and rejects the pending next()", async () => {
    // one buffer holding every batch: the worker is deep in reading when close() comes
    const l = new TokenLoader(base({ prefetch: 4, bufferBatches: 1000, maxLength: 2048 }));
    const pending = expect(l.next()).rejects.toThrow(/closed/);
    const t0 = Date.now();
    await l.close();
    expect(Date.now() - t0).toBeLessThan(2000);
    await pending;
    await expect(l.next()).rejects.toThrow(/closed/);
    await l.close(); // idempotent
    // and while it prepares the prefetched steps behind the first one
    const m = new TokenLoader(base({ prefetch: 4, bufferBatches: 1000, maxLength: 2048 }));
    await m.next();
    const t1 = Date.now();
    await m.close();
    expect(Date.now() - t1).toBeLessThan(2000);
  });

  it("a loader does not keep the process alive: neither after close() nor when left open", () => {
    const script = (close: boolean) => `
      import { TokenLoader } from "@gm/train";
      const l = new TokenLoader({ dir: ${JSON.stringify(dir)}, seed: 1, worldSize: 1, microBatch: 8, accumulation: 1, maxLength: 64, prefetch: 4 });
      const s = await l.next();
      ${close ? "await l.close();" : ""}
      console.log("ok", s.cells);`;
    for (const close of [true, false]) {
      const t0 = Date.now();
      const out = execFileSync(process.execPath, ["--input-type=module", "-e", script(close)], { cwd: repoRoot, timeout: 15_000, encoding: "utf8" });
      expect(out.trim()).toBe("ok 8");
      expect(Date.now() - t0).toBeLessThan(10_000);
    }
  });

  it("for await iterates and break closes the loader", async () => {
    const l = new TokenLoader(base({ prefetch: 2 }));
    let n = 0;
    for await (const s of l) {
      expect(s.cells).toBeGreaterThan(0);
      if (++n === 3) break;
    }
    await expect(l.next()).rejects.toThrow(/closed/);
  });
});

describe("TokenLoader validation", () => {
  /** A copy of the fixture to damage. */
  function copy(): string {
    const d = path.join(tmpDir("gm-loader-bad-"), "tok");
    fs.cpSync(dir, d, { recursive: true });
    return d;
  }
  const editIndex = (d: string, f: (x: Record<string, unknown>) => void) => {
    const file = path.join(d, "gm_index.json");
    const x = JSON.parse(fs.readFileSync(file, "utf8"));
    f(x);
    fs.writeFileSync(file, JSON.stringify(x));
  };

  it("a missing folder or index says to run gm tokenize first", () => {
    const missing = path.join(tmpDir(), "nope");
    expect(() => readDatasetIndex(missing)).toThrow(/nope: no such folder.*run gm tokenize first/);
    expect(() => new TokenLoader(base({ dir: tmpDir() }))).toThrow(/gm_index\.json: missing.*run gm tokenize first/);
  });

  it("an incomplete tokenize (no state.json), an unknown format and an empty dataset", () => {
    const a = copy();
    fs.rmSync(path.join(a, "state.json"));
    expect(() => readDatasetIndex(a)).toThrow(/state\.json: missing: gm tokenize did not finish/);
    const b = copy();
    editIndex(b, (x) => (x.format = "gm.tokens/0"));
    expect(() => readDatasetIndex(b)).toThrow(/gm_index\.json: field format is "gm\.tokens\/0"/);
    const c = copy();
    editIndex(c, (x) => {
      x.rows = 0;
      x.shards = [];
    });
    expect(() => new TokenLoader(base({ dir: c }))).toThrow(/rows is 0: the dataset is empty/);
  });

  it("a missing or truncated shard is named", () => {
    const a = copy();
    const idx = readDatasetIndex(a);
    fs.rmSync(path.join(a, idx.shards[1].file));
    expect(() => readDatasetIndex(a)).toThrow(new RegExp(`${idx.shards[1].file}: shard missing`));
    const b = copy();
    const f = path.join(b, idx.shards[2].file);
    fs.truncateSync(f, idx.shards[2].bytes - 1000);
    expect(() => new TokenLoader(base({ dir: b }))).toThrow(new RegExp(`${idx.shards[2].file}: shard is ${idx.shards[2].bytes - 1000} bytes but gm_index\\.json shards\\[2\\]\\.bytes says ${idx.shards[2].bytes}: the file is truncated`));
  });

  it("a batch that does not decode fails next() with the same GmError with and without the worker", async () => {
    const d = copy();
    const idx = readDatasetIndex(d);
    const f = path.join(d, idx.shards[0].file);
    const fd = fs.openSync(f, "r+");
    for (const b of idx.shards[0].batches) fs.writeSync(fd, Buffer.alloc(64, 0x5a), 0, 64, b.offset);
    fs.closeSync(fd);
    const messages: string[] = [];
    for (const prefetch of [0, 4]) {
      // no shuffle: the first buffer starts with shard 0
      const l = new TokenLoader(base({ dir: d, shuffle: false, prefetch }));
      const err = await l.next().then(
        () => undefined,
        (e: unknown) => e as Error & { exitCode?: number },
      );
      await l.close();
      expect(err, `prefetch ${prefetch}`).toBeDefined();
      expect(err!.name).toBe("GmError");
      expect(err!.exitCode).toBe(3);
      messages.push(err!.message);
    }
    expect(messages[0]).toMatch(new RegExp(`${idx.shards[0].file}: record batch 0 .* fails to decode`));
    expect(messages[1]).toBe(messages[0]);
  });

  it("a shard without an input_ids column is refused when read", async () => {
    const d = tmpDir("gm-loader-cols-");
    const table = tableFromArrays({ foo: Int32Array.from([1, 2, 3]) });
    const sink = new ArrowFileSink(path.join(d, "data-00000-of-00001.arrow"), table.schema, "stream");
    sink.write(table.batches[0]);
    sink.close();
    const bytes = fs.statSync(sink.path).size;
    fs.writeFileSync(path.join(d, "gm_index.json"), JSON.stringify({ format: "gm.tokens/1", rows: 3, tokens: 3, max_len: 8, vocab_size: 10, pad_id: 1, cls_id: null, eos_id: null, columns: ["foo"], shards: [{ file: "data-00000-of-00001.arrow", rows: 3, bytes, batches: sink.batches }] }));
    fs.writeFileSync(path.join(d, "state.json"), "{}");
    for (const prefetch of [0, 2]) {
      const l = new TokenLoader(base({ dir: d, worldSize: 1, microBatch: 1, accumulation: 1, prefetch }));
      await expect(l.next()).rejects.toThrow(/data-00000-of-00001\.arrow: record batch 0 .* has no input_ids column \(columns: foo\)/);
      await l.close();
    }
  });

  it("bad options are refused when the loader is built, naming the option", () => {
    const bad: [Partial<LoaderOptions>, RegExp][] = [
      [{ microBatch: 0 }, /microBatch must be a positive integer \(got 0\)/],
      [{ accumulation: 1.5 }, /accumulation must be a positive integer \(got 1\.5\)/],
      [{ worldSize: -1 }, /worldSize must be a positive integer/],
      [{ maxLength: "64" as unknown as number }, /maxLength must be a positive integer \(got "64"\)/],
      [{ worldSize: 4, ranks: [4] }, /ranks holds 4, out of range: ranks must lie in 0\.\.3/],
      [{ worldSize: 4, ranks: [1, 1] }, /ranks lists rank 1 twice/],
      [{ ranks: [] }, /ranks must list at least one rank/],
      [{ prefetch: -1 }, /prefetch must be a non-negative integer/],
      [{ bufferBatches: 0 }, /bufferBatches must be a positive integer/],
      [{ start: { epoch: 0, buffer: 99, step: 0 } }, /start position .* does not exist/],
      [{ start: { epoch: 0, buffer: 0, step: 10_000 } }, /start position .* does not exist/],
    ];
    for (const [o, re] of bad) expect(() => new TokenLoader(base(o)), JSON.stringify(o)).toThrow(re);
    expect(() => stepsPerEpoch(readDatasetIndex(dir), base({ microBatch: 0 }))).toThrow(/microBatch/);
  });
});
