/**
 * safetensors reader and writer (https://github.com/huggingface/safetensors): an 8-byte little-endian
 * header length, a JSON header {name: {dtype, shape, data_offsets}, __metadata__}, then raw data.
 * Pure TypeScript with positioned reads, so a checkpoint streams straight into the engine's flat
 * parameter buffer instead of being loaded whole; the npm packages for the format either pull in a
 * WASM build of the Rust crate or read the entire file into memory.
 */
import * as fs from "node:fs";
import { inputError, writeFileAtomicWith } from "@gm/core";

export type DType = "F32" | "F64" | "F16" | "BF16" | "I32" | "I64";
const BYTES: Record<DType, number> = { F32: 4, F64: 8, F16: 2, BF16: 2, I32: 4, I64: 8 };

export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** Byte range inside the data section. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
  dataStart: number;
}

export function readHeader(file: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw inputError(file, code === "ENOENT" ? "checkpoint not found; check the path" : `cannot open checkpoint (${code})`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const lenBuf = Buffer.alloc(8);
    if (size < 8 || fs.readSync(fd, lenBuf, 0, 8, 0) !== 8) throw inputError(file, "not a safetensors file (shorter than its 8-byte header length)");
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen <= 0 || headerLen > 100_000_000 || 8 + headerLen > size)
      throw inputError(file, "not a safetensors file (bad header length); is it a PyTorch .bin or truncated?");
    const hb = Buffer.alloc(headerLen);
    fs.readSync(fd, hb, 0, headerLen, 8);
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(hb.toString("utf8")) as Record<string, unknown>;
    } catch {
      throw inputError(file, "safetensors header is not valid JSON; the file is corrupt");
    }
    const tensors = new Map<string, TensorEntry>();
    let metadata: Record<string, string> = {};
    const dataStart = 8 + headerLen;
    for (const [name, v] of Object.entries(json)) {
      if (name === "__metadata__") {
        metadata = (v ?? {}) as Record<string, string>;
        continue;
      }
      const t = v as { dtype: string; shape: number[]; data_offsets: [number, number] };
      if (!(t.dtype in BYTES)) throw inputError(file, `tensor ${name} has dtype ${t.dtype}; gm reads F32, F64, F16, BF16, I32 and I64`);
      const dtype = t.dtype as DType;
      const [begin, end] = t.data_offsets;
      const numel = t.shape.reduce((a, b) => a * b, 1);
      if (end - begin !== numel * BYTES[dtype] || dataStart + end > size)
        throw inputError(file, `tensor ${name}: data range does not match its shape (file truncated or corrupt)`);
      tensors.set(name, { name, dtype, shape: t.shape, begin, end });
    }
    return { tensors, metadata, dataStart };
  } finally {
    fs.closeSync(fd);
  }
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** Reads one floating-point tensor into `out` (converted to float32). */
export function readTensorInto(file: string, header: SafetensorsHeader, entry: TensorEntry, out: Float32Array, fd?: number): void {
  const own = fd === undefined;
  const f = own ? fs.openSync(file, "r") : fd;
  try {
    const bytes = entry.end - entry.begin;
    const pos = header.dataStart + entry.begin;
    const numel = bytes / BYTES[entry.dtype];
    if (numel !== out.length) throw inputError(file, `tensor ${entry.name} has ${numel} values, expected ${out.length}`);
    if (entry.dtype === "F32") {
      readFully(f, Buffer.from(out.buffer, out.byteOffset, bytes), pos);
      return;
    }
    const buf = Buffer.alloc(bytes);
    readFully(f, buf, pos);
    if (entry.dtype === "F64") for (let i = 0; i < numel; i++) out[i] = buf.readDoubleLE(i * 8);
    else if (entry.dtype === "F16") for (let i = 0; i < numel; i++) out[i] = f16ToF32(buf.readUInt16LE(i * 2));
    else if (entry.dtype === "BF16") {
      const u = new Uint32Array(1);
      const fl = new Float32Array(u.buffer);
      for (let i = 0; i < numel; i++) {
        u[0] = buf.readUInt16LE(i * 2) << 16;
        out[i] = fl[0];
      }
    } else throw inputError(file, `tensor ${entry.name} is an integer tensor (${entry.dtype}), expected floating point`);
  } finally {
    if (own) fs.closeSync(f);
  }
}

/** Reads an integer (I32/I64) or float tensor as a plain typed array, for fixtures and small tensors. */
export function readTensor(file: string, header: SafetensorsHeader, name: string): Float32Array | Int32Array {
  const e = header.tensors.get(name);
  if (!e) throw inputError(file, `tensor ${name} is missing`);
  const numel = e.shape.reduce((a, b) => a * b, 1);
  if (e.dtype === "I32" || e.dtype === "I64") {
    const buf = Buffer.alloc(e.end - e.begin);
    const fd = fs.openSync(file, "r");
    try {
      readFully(fd, buf, header.dataStart + e.begin);
    } finally {
      fs.closeSync(fd);
    }
    const out = new Int32Array(numel);
    for (let i = 0; i < numel; i++) out[i] = e.dtype === "I32" ? buf.readInt32LE(i * 4) : Number(buf.readBigInt64LE(i * 8));
    return out;
  }
  const out = new Float32Array(numel);
  readTensorInto(file, header, e, out);
  return out;
}

function readFully(fd: number, buf: Buffer, pos: number): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, Math.min(buf.length - done, 1 << 30), pos + done);
    if (n <= 0) throw new Error("unexpected end of file");
    done += n;
  }
}

export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array | Int32Array;
}

/** Writes a safetensors file through a temporary name (fsync + rename): never a half-written file. */
export function writeSafetensors(file: string, tensors: TensorToWrite[], metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.data.byteLength;
    header[t.name] = { dtype: t.data instanceof Int32Array ? "I32" : "F32", shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);  // data section 8-byte aligned
  const hb = Buffer.from(json, "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hb.length));
  writeFileAtomicWith(file, (fd) => {
    fs.writeSync(fd, len);
    fs.writeSync(fd, hb);
    for (const t of tensors) {
      const b = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      let done = 0;
      while (done < b.length) done += fs.writeSync(fd, b, done, Math.min(b.length - done, 1 << 30));
    }
  });
}
