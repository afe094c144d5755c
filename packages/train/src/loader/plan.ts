/**
 * The loader's schedule: which record batches form which buffer in an epoch, how a buffer's cells
 * become step batches, and how a step is split over micro-steps and ranks. Everything here is a pure
 * function of the index's row counts, the options and the seed, except `steps`, which also reads the
 * buffer's batches. The same code runs in the prefetch worker and in the calling thread, so both
 * give the same bytes.
 */
import { inputError } from "@gm/core";
import { BatchReader } from "./dataset.js";
import { Rng, Stream } from "../rng.js";
import type { Cell, DatasetIndex, LoaderOptions, LoaderPosition, PackedStep, ResolvedLoaderOptions, StepBatch } from "./types.js";

function positiveInt(dir: string, name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) throw inputError(dir, `loader option ${name} must be a positive integer (got ${JSON.stringify(v)}); set ${name} to 1 or more`);
  return v;
}

function nonNegInt(dir: string, name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw inputError(dir, `loader option ${name} must be a non-negative integer (got ${JSON.stringify(v)})`);
  return v;
}

/** Fills in defaults and checks every option (errors name the dataset folder and the option). */
export function resolveOptions(opts: LoaderOptions): ResolvedLoaderOptions {
  const dir = opts.dir;
  if (typeof dir !== "string" || dir === "") throw inputError(String(dir), "loader option dir must name a gm tokenize output folder");
  if (typeof opts.seed !== "number" || !Number.isSafeInteger(opts.seed)) throw inputError(dir, `loader option seed must be an integer (got ${JSON.stringify(opts.seed)})`);
  const worldSize = positiveInt(dir, "worldSize", opts.worldSize);
  const microBatch = positiveInt(dir, "microBatch", opts.microBatch);
  const accumulation = positiveInt(dir, "accumulation", opts.accumulation);
  const maxLength = positiveInt(dir, "maxLength", opts.maxLength);
  const bufferBatches = positiveInt(dir, "bufferBatches", opts.bufferBatches ?? 4);
  const prefetch = nonNegInt(dir, "prefetch", opts.prefetch ?? 4);
  const ranks = opts.ranks ?? Array.from({ length: worldSize }, (_, r) => r);
  if (!Array.isArray(ranks) || ranks.length === 0) throw inputError(dir, "loader option ranks must list at least one rank (or be left out for all ranks)");
  const seen = new Set<number>();
  for (const r of ranks) {
    if (typeof r !== "number" || !Number.isInteger(r) || r < 0 || r >= worldSize) throw inputError(dir, `loader option ranks holds ${JSON.stringify(r)}, out of range: ranks must lie in 0..${worldSize - 1} (worldSize ${worldSize})`);
    if (seen.has(r)) throw inputError(dir, `loader option ranks lists rank ${r} twice; list each hosted rank once`);
    seen.add(r);
  }
  const s = opts.start ?? { epoch: 0, buffer: 0, step: 0 };
  if (s === null || typeof s !== "object") throw inputError(dir, "loader option start must be a position {epoch, buffer, step}");
  const start = { epoch: nonNegInt(dir, "start.epoch", s.epoch), buffer: nonNegInt(dir, "start.buffer", s.buffer), step: nonNegInt(dir, "start.step", s.step) };
  if (opts.shuffle != null && typeof opts.shuffle !== "boolean") throw inputError(dir, "loader option shuffle must be true or false");
  return { dir, seed: opts.seed, worldSize, ranks: [...ranks], microBatch, accumulation, maxLength, bufferBatches, shuffle: opts.shuffle ?? true, start, prefetch };
}

/** Cells per optimizer step across all ranks: G = R * b * A. */
export function stepCells(o: Pick<ResolvedLoaderOptions, "worldSize" | "microBatch" | "accumulation">): number {
  return o.worldSize * o.microBatch * o.accumulation;
}

/** A record batch in the global list (shards in index order, batches in order). */
export interface BatchRef {
  shard: number;
  batch: number;
  rows: number;
  /** Global row index of the batch's first row. */
  firstSample: number;
}

export function allBatches(index: DatasetIndex): BatchRef[] {
  const out: BatchRef[] = [];
  let sample = 0;
  index.shards.forEach((s, i) =>
    s.batches.forEach((b, j) => {
      out.push({ shard: i, batch: j, rows: b.rows, firstSample: sample });
      sample += b.rows;
    }),
  );
  return out;
}

/** The buffers of one epoch: with shuffle the batch list is permuted per (seed, epoch) first. */
export function epochBuffers(batches: BatchRef[], o: Pick<ResolvedLoaderOptions, "seed" | "shuffle" | "bufferBatches">, epoch: number): BatchRef[][] {
  const order = Int32Array.from(batches, (_, i) => i);
  if (o.shuffle) new Rng(o.seed, Stream.batches, epoch).shuffle(order);
  const buffers: BatchRef[][] = [];
  for (let i = 0; i < order.length; i += o.bufferBatches) buffers.push(Array.from(order.subarray(i, i + o.bufferBatches), (k) => batches[k]));
  return buffers;
}

/** Step batches in a buffer, from row counts only (the last one may be short). */
export function bufferSteps(buffer: BatchRef[], G: number): number {
  return Math.ceil(buffer.reduce((s, b) => s + b.rows, 0) / G);
}

/**
 * Where cell part p (p = a*R + r) of a step of n cells starts: parts of b cells for a full step, else
 * n split into A*R contiguous parts as evenly as possible, earlier parts one larger. For n = G both
 * rules agree, and since parts are contiguous in (a, r) order, R ranks × b and 1 rank × R·b see the
 * same cells in every step.
 */
export function partStart(n: number, parts: number, p: number): number {
  const base = Math.floor(n / parts);
  const extra = n % parts;
  return p * base + Math.min(p, extra);
}

/**
 * Refuses a start position that the plan does not have, so a position recorded with other options
 * (or another dataset) fails clearly instead of silently continuing elsewhere.
 */
export function checkStart(index: DatasetIndex, o: ResolvedLoaderOptions): void {
  const { epoch, buffer, step } = o.start;
  const buffers = epochBuffers(allBatches(index), o, epoch);
  const steps = buffer < buffers.length ? bufferSteps(buffers[buffer], stepCells(o)) : 0;
  if (buffer >= buffers.length || step >= steps) {
    throw inputError(o.dir, `start position ${JSON.stringify(o.start)} does not exist (epoch ${epoch} has ${buffers.length} buffers${buffer < buffers.length ? `, buffer ${buffer} has ${steps} steps` : ""}); resume with the options and dataset the position was recorded with`);
  }
}

/**
 * The infinite sequence of steps from `o.start`, packed for the hosted ranks. Holds one buffer's
 * batches at a time.
 */
export function* packedSteps(index: DatasetIndex, o: ResolvedLoaderOptions): Generator<PackedStep, never> {
  const reader = new BatchReader(o.dir, index);
  const batches = allBatches(index);
  const G = stepCells(o);
  const R = o.worldSize;
  const A = o.accumulation;
  const parts = A * R;
  checkStart(index, o);
  let { epoch, buffer: firstBuffer, step: firstStep } = o.start;
  for (;;) {
    const buffers = epochBuffers(batches, o, epoch);
    for (let bi = firstBuffer; bi < buffers.length; bi++) {
      const buf = buffers[bi];
      // Cells of the buffer as flat columns: source batch, start in its values, truncated length, sample.
      const data = buf.map((b) => reader.read(b.shard, b.batch));
      const n = buf.reduce((s, b) => s + b.rows, 0);
      const src = new Int32Array(n);
      const begin = new Int32Array(n);
      const len = new Int32Array(n);
      const sample = new Float64Array(n);
      let k = 0;
      let maxLen = 0;
      buf.forEach((b, j) => {
        const { offsets } = data[j];
        for (let i = 0; i < b.rows; i++, k++) {
          src[k] = j;
          begin[k] = offsets[i];
          len[k] = Math.min(o.maxLength, offsets[i + 1] - offsets[i]);
          sample[k] = b.firstSample + i;
          if (len[k] > maxLen) maxLen = len[k];
        }
      });
      let order = Int32Array.from({ length: n }, (_, i) => i);
      const nSteps = Math.ceil(n / G);
      const stepOrder = Int32Array.from({ length: nSteps }, (_, i) => i);
      if (o.shuffle) {
        new Rng(o.seed, Stream.cells, epoch, bi).shuffle(order);
        // Stable counting sort by length, descending: equal lengths keep their shuffled order.
        const count = new Int32Array(maxLen + 2);
        for (let i = 0; i < n; i++) count[maxLen - len[order[i]] + 1]++;
        for (let v = 1; v < count.length; v++) count[v] += count[v - 1];
        const sorted = new Int32Array(n);
        for (let i = 0; i < n; i++) sorted[count[maxLen - len[order[i]]]++] = order[i];
        order = sorted;
        new Rng(o.seed, Stream.steps, epoch, bi).shuffle(stepOrder);
      }
      for (let si = bi === firstBuffer ? firstStep : 0; si < nSteps; si++) {
        const lo = stepOrder[si] * G;
        const cells = Math.min(n, lo + G) - lo;
        const position: LoaderPosition = si + 1 < nSteps ? { epoch, buffer: bi, step: si + 1 } : bi + 1 < buffers.length ? { epoch, buffer: bi + 1, step: 0 } : { epoch: epoch + 1, buffer: 0, step: 0 };
        // Hosted cells in (a, i) order.
        const counts = new Int32Array(A * o.ranks.length);
        const picked: number[] = [];
        for (let a = 0; a < A; a++) {
          o.ranks.forEach((r, i) => {
            const p = a * R + r;
            const from = partStart(cells, parts, p);
            const to = partStart(cells, parts, p + 1);
            counts[a * o.ranks.length + i] = to - from;
            for (let c = from; c < to; c++) picked.push(order[lo + c]);
          });
        }
        const offsets = new Int32Array(picked.length + 1);
        for (let c = 0; c < picked.length; c++) offsets[c + 1] = offsets[c] + len[picked[c]];
        const ids = new Int32Array(offsets[picked.length]);
        const samples = new Float64Array(picked.length);
        picked.forEach((cell, c) => {
          const v = data[src[cell]].values;
          ids.set(v.subarray(begin[cell], begin[cell] + len[cell]), offsets[c]);
          samples[c] = sample[cell];
        });
        yield { epoch, position, cells, ids, offsets, samples, counts };
      }
    }
    epoch++;
    firstBuffer = 0;
    firstStep = 0;
  }
}

/** The caller's view of a packed step: Cell objects whose ids are views into the step's one buffer. */
export function unpackStep(p: PackedStep, accumulation: number, hosted: number): StepBatch {
  const micro: Cell[][][] = [];
  let c = 0;
  for (let a = 0; a < accumulation; a++) {
    const perRank: Cell[][] = [];
    for (let i = 0; i < hosted; i++) {
      const part: Cell[] = [];
      for (let m = p.counts[a * hosted + i]; m > 0; m--, c++) part.push({ ids: p.ids.subarray(p.offsets[c], p.offsets[c + 1]), sample: p.samples[c] });
      perRank.push(part);
    }
    micro.push(perRank);
  }
  return { epoch: p.epoch, position: p.position, cells: p.cells, micro };
}

/** Steps in an epoch, from the index's row counts only (no shard is read). */
export function countEpochSteps(index: DatasetIndex, o: ResolvedLoaderOptions, epoch: number): number {
  const G = stepCells(o);
  return epochBuffers(allBatches(index), o, epoch).reduce((s, b) => s + bufferSteps(b, G), 0);
}
