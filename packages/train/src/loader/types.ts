/**
 * Types of the pretraining data loader. Kept apart from the implementation so the worker thread and
 * the main thread share them without importing each other.
 */

export interface LoaderOptions {
  /** A `gm tokenize` output folder (gm_index.json + Arrow stream shards + state.json). */
  dir: string;
  /** Any safe integer; the whole sequence of steps is a function of it and the other options. */
  seed: number;
  /** R: data-parallel ranks in total. */
  worldSize: number;
  /** The global ranks this process hosts (default: all 0..R-1); the loader returns only their slices. */
  ranks?: number[];
  /** b: cells per rank per micro-step. */
  microBatch: number;
  /** A: micro-steps per optimizer step. */
  accumulation: number;
  /** Each cell is truncated to its first maxLength tokens. */
  maxLength: number;
  /** Record batches per shuffle buffer (default 4). Bounds memory: one buffer is resident at a time. */
  bufferBatches?: number;
  /** Default true; false = dataset order, no length grouping. */
  shuffle?: boolean;
  /** Resume here (default {epoch: 0, buffer: 0, step: 0}): a `position` an earlier run reported. */
  start?: LoaderPosition;
  /** Steps prepared ahead in a worker thread (default 4); 0 = synchronous, in the calling thread. */
  prefetch?: number;
}

/** step = index of the next step batch inside that buffer of that epoch. */
export interface LoaderPosition {
  epoch: number;
  buffer: number;
  step: number;
}

/** One cell: its (truncated) token ids and its stable global row index in the dataset. */
export interface Cell {
  /** A view into the step's token buffer (one allocation per step, transferable between threads). */
  ids: Int32Array;
  /** Global row index (shards in index order, rows in order); callers seed per-cell randomness with it. */
  sample: number;
}

export interface StepBatch {
  epoch: number;
  /** The position AFTER this step: what a checkpoint stores to resume with the next step. */
  position: LoaderPosition;
  /** Cells in the whole step across all ranks (== R*b*A except possibly the last step of a buffer). */
  cells: number;
  /** micro[a][i] = cells of micro-step a for the i-th entry of options.ranks. */
  micro: Cell[][][];
}

export interface DatasetBatch {
  /** Byte offset of the record-batch message in the stream file. */
  offset: number;
  /** Message length (metadata + body) in bytes. */
  length: number;
  rows: number;
}

export interface DatasetShard {
  /** File name relative to the dataset folder. */
  file: string;
  rows: number;
  bytes: number;
  batches: DatasetBatch[];
}

/** The parsed, validated gm_index.json. */
export interface DatasetIndex {
  format: "gm.tokens/1";
  gm_version?: string;
  rows: number;
  tokens: number;
  max_len: number;
  vocab_size: number;
  pad_id: number | null;
  cls_id: number | null;
  eos_id: number | null;
  columns: string[];
  shards: DatasetShard[];
}

/** Options with defaults filled in and checked; what the generator (either thread) runs on. */
export interface ResolvedLoaderOptions {
  dir: string;
  seed: number;
  worldSize: number;
  ranks: number[];
  microBatch: number;
  accumulation: number;
  maxLength: number;
  bufferBatches: number;
  shuffle: boolean;
  start: LoaderPosition;
  prefetch: number;
}

/**
 * A step in transferable form: all hosted cells' ids in one Int32Array, so a step crosses the
 * thread boundary as four ArrayBuffers instead of thousands of small arrays (and is built the same
 * way with prefetch 0, so both modes are the same code).
 */
export interface PackedStep {
  epoch: number;
  position: LoaderPosition;
  cells: number;
  /** Token ids of the hosted cells, in (a, i, cell) order. */
  ids: Int32Array;
  /** Cell k's ids are ids[offsets[k], offsets[k+1]). */
  offsets: Int32Array;
  samples: Float64Array;
  /** Cells in part (a, i), a-major: counts[a * ranks.length + i]. */
  counts: Int32Array;
}
