/**
 * Access to a `gm tokenize` output folder by record batch: the index is validated once, then any
 * batch is read on its own with two positioned reads (the shard's schema message and the batch's
 * message), so a loader never reads a shard through and memory stays at one buffer.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { DataType, RecordBatchStreamReader, type RecordBatch } from "apache-arrow";
import { inputError } from "@gm/core";
import type { DatasetBatch, DatasetIndex, DatasetShard } from "./types.js";

export const INDEX_FILE = "gm_index.json";
export const STATE_FILE = "state.json";
export const TOKENS_FORMAT = "gm.tokens/1";

const RERUN = "re-run gm tokenize into a new folder";

function isNonNegInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** Reads and checks gm_index.json (and the presence and sizes of the shards it lists). */
export function readDatasetIndex(dir: string): DatasetIndex {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw inputError(dir, "no such folder; the loader needs a gm tokenize output folder, run gm tokenize first");
  const indexFile = path.join(dir, INDEX_FILE);
  const stateFile = path.join(dir, STATE_FILE);
  if (!fs.existsSync(indexFile)) {
    const why = fs.existsSync(stateFile) ? "a datasets folder without gm's shard index" : "not a gm tokenize output folder";
    throw inputError(indexFile, `missing (${why}); run gm tokenize first`);
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(fs.readFileSync(indexFile, "utf8")) as Record<string, unknown>;
  } catch (e) {
    throw inputError(indexFile, `cannot be read as JSON (${(e as Error).message}); ${RERUN}`);
  }
  // state.json is written last by gm tokenize: without it the shards may be incomplete.
  if (!fs.existsSync(stateFile)) throw inputError(stateFile, "missing: gm tokenize did not finish (state.json is written last); re-run the same gm tokenize command to complete it");
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw inputError(indexFile, `is not a JSON object; ${RERUN}`);
  if (raw.format !== TOKENS_FORMAT) throw inputError(indexFile, `field format is ${JSON.stringify(raw.format)}, expected "${TOKENS_FORMAT}"; write the dataset with this version of gm tokenize`);
  for (const f of ["rows", "tokens", "max_len", "vocab_size"] as const) {
    if (!isNonNegInt(raw[f])) throw inputError(indexFile, `field ${f} must be a non-negative integer (got ${JSON.stringify(raw[f])}); ${RERUN}`);
  }
  for (const f of ["pad_id", "cls_id", "eos_id"] as const) {
    if (raw[f] !== null && raw[f] !== undefined && !isNonNegInt(raw[f])) throw inputError(indexFile, `field ${f} must be a token id or null (got ${JSON.stringify(raw[f])}); ${RERUN}`);
  }
  if (raw.rows === 0) throw inputError(indexFile, "field rows is 0: the dataset is empty; tokenize inputs that hold cells passing the filters");
  if (!Array.isArray(raw.shards) || raw.shards.length === 0) throw inputError(indexFile, `field shards must be a non-empty list; ${RERUN}`);
  const columns = Array.isArray(raw.columns) ? (raw.columns as unknown[]).map(String) : ["input_ids", "length"];

  const shards: DatasetShard[] = [];
  let rows = 0;
  (raw.shards as unknown[]).forEach((s0, i) => {
    const s = s0 as Record<string, unknown>;
    const where = `shards[${i}]`;
    if (!s || typeof s.file !== "string" || s.file === "" || path.isAbsolute(s.file) || s.file.split(/[\\/]/).includes("..")) throw inputError(indexFile, `field ${where}.file must be a file name inside the folder; ${RERUN}`);
    if (!isNonNegInt(s.rows) || !isNonNegInt(s.bytes)) throw inputError(indexFile, `fields ${where}.rows and ${where}.bytes must be non-negative integers; ${RERUN}`);
    if (!Array.isArray(s.batches)) throw inputError(indexFile, `field ${where}.batches must be a list; ${RERUN}`);
    const batches: DatasetBatch[] = [];
    let end = 0;
    let batchRows = 0;
    (s.batches as unknown[]).forEach((b0, j) => {
      const b = b0 as Record<string, unknown>;
      const w = `${where}.batches[${j}]`;
      if (!b || !isNonNegInt(b.offset) || !isNonNegInt(b.length) || !isNonNegInt(b.rows) || b.length === 0 || b.rows === 0) throw inputError(indexFile, `field ${w} needs integer offset, length > 0 and rows > 0; ${RERUN}`);
      // The first batch's offset is the schema's size: it must hold a schema; batches must not overlap.
      if ((j === 0 && b.offset === 0) || b.offset < end || b.offset + b.length > (s.bytes as number)) throw inputError(indexFile, `field ${w} (offset ${b.offset}, length ${b.length}) lies outside its shard or overlaps the previous batch; ${RERUN}`);
      end = b.offset + b.length;
      batchRows += b.rows;
      batches.push({ offset: b.offset, length: b.length, rows: b.rows });
    });
    if (batchRows !== s.rows) throw inputError(indexFile, `field ${where}.rows is ${s.rows} but its batches hold ${batchRows} rows; ${RERUN}`);
    rows += s.rows;
    const file = path.join(dir, s.file);
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch {
      throw inputError(file, `shard missing (listed as ${where}.file in ${INDEX_FILE}); restore it or ${RERUN}`);
    }
    if (size < s.bytes) throw inputError(file, `shard is ${size} bytes but ${INDEX_FILE} ${where}.bytes says ${s.bytes}: the file is truncated; restore it or ${RERUN}`);
    shards.push({ file: s.file, rows: s.rows, bytes: s.bytes, batches });
  });
  if (rows !== raw.rows) throw inputError(indexFile, `field rows is ${raw.rows} but the shards hold ${rows} rows; ${RERUN}`);
  return {
    format: TOKENS_FORMAT,
    gm_version: typeof raw.gm_version === "string" ? raw.gm_version : undefined,
    rows,
    tokens: raw.tokens as number,
    max_len: raw.max_len as number,
    vocab_size: raw.vocab_size as number,
    pad_id: (raw.pad_id as number | null | undefined) ?? null,
    cls_id: (raw.cls_id as number | null | undefined) ?? null,
    eos_id: (raw.eos_id as number | null | undefined) ?? null,
    columns,
    shards,
  };
}

/** The token lists of one record batch: row i is values[offsets[i], offsets[i+1]). */
export interface TokenBatch {
  values: Int32Array;
  offsets: Int32Array;
  rows: number;
}

/** Arrow's end-of-stream marker: continuation 0xFFFFFFFF, then a zero metadata length. */
const EOS = Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

/** Reads single record batches by position; caches each shard's (small) schema message. */
export class BatchReader {
  private readonly schemas = new Map<number, Buffer>();

  constructor(
    private readonly dir: string,
    private readonly index: DatasetIndex,
  ) {}

  private readAt(file: string, fd: number, into: Buffer, at: number, length: number, position: number): void {
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, into, at + done, length - done, position + done);
      if (n === 0) throw inputError(file, `ends at byte ${position + done}, before the ${length} bytes ${INDEX_FILE} places at ${position}: the shard is truncated; restore it or ${RERUN}`);
      done += n;
    }
  }

  read(shard: number, batch: number): TokenBatch {
    const s = this.index.shards[shard];
    const b = s.batches[batch];
    const file = path.join(this.dir, s.file);
    const schemaLen = s.batches[0].offset;
    // One exclusive allocation at offset 0: Arrow's 8-byte-aligned buffers stay aligned for zero-copy views.
    const buf = Buffer.allocUnsafeSlow(schemaLen + b.length + EOS.length);
    let fd: number;
    try {
      fd = fs.openSync(file, "r");
    } catch (e) {
      throw inputError(file, `shard cannot be opened (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); restore it or ${RERUN}`);
    }
    try {
      const schema = this.schemas.get(shard);
      if (schema) schema.copy(buf, 0);
      else {
        this.readAt(file, fd, buf, 0, schemaLen, 0);
        this.schemas.set(shard, Buffer.from(buf.subarray(0, schemaLen)));
      }
      this.readAt(file, fd, buf, schemaLen, b.length, b.offset);
    } finally {
      fs.closeSync(fd);
    }
    EOS.copy(buf, schemaLen + b.length);
    const what = `record batch ${batch} (bytes ${b.offset}..${b.offset + b.length}, shards[${shard}].batches[${batch}] in ${INDEX_FILE})`;
    let rb: RecordBatch | undefined;
    try {
      const reader = RecordBatchStreamReader.from(buf);
      const first = reader.next();
      rb = first.done ? undefined : first.value;
    } catch (e) {
      throw inputError(file, `${what} fails to decode (${(e as Error).message}); the shard is corrupt, ${RERUN}`);
    }
    if (!rb) throw inputError(file, `${what} fails to decode (no record batch at that offset); the shard is corrupt, ${RERUN}`);
    if (rb.numRows !== b.rows) throw inputError(file, `${what} holds ${rb.numRows} rows, ${INDEX_FILE} says ${b.rows}; ${RERUN}`);
    const col = rb.getChild("input_ids");
    if (!col) throw inputError(file, `${what} has no input_ids column (columns: ${rb.schema.fields.map((f) => f.name).join(", ") || "none"}); not a gm tokenize shard, run gm tokenize`);
    const child = DataType.isList(col.type) ? col.type.children[0]?.type : undefined;
    if (!child || !DataType.isInt(child) || child.bitWidth !== 32 || !child.isSigned || col.data.length !== 1) {
      throw inputError(file, `${what}: column input_ids is ${String(col.type)}, expected list<int32>; not a gm tokenize shard, run gm tokenize`);
    }
    const data = col.data[0];
    if (data.nullCount > 0) throw inputError(file, `${what}: column input_ids holds nulls; the shard is corrupt, ${RERUN}`);
    const cd = data.children[0];
    const raw = data.valueOffsets as Int32Array;
    const values = (cd.values as Int32Array).subarray(cd.offset, cd.offset + cd.length);
    const offsets = raw.subarray(data.offset, data.offset + rb.numRows + 1);
    // Cheap structural check: garbage offsets would otherwise become garbage cells.
    for (let i = 0; i < rb.numRows; i++) {
      if (!(offsets[i] >= 0 && offsets[i + 1] >= offsets[i] && offsets[i + 1] <= values.length)) throw inputError(file, `${what}: input_ids offsets are invalid at row ${i}; the shard is corrupt, ${RERUN}`);
    }
    return { values, offsets, rows: rb.numRows };
  }
}
