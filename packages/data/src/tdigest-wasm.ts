/**
 * A DigestSet whose arrays live in WebAssembly memory, so that adding values (the hot path of
 * gm preprocess: ~2,000 values per cell) runs in the compiled port of the same flush (rank.c,
 * digest_add_run) while queries, merges and serialisation stay in the TypeScript class. Both give
 * bit-identical digests (packages/data/test/tdigest.test.ts).
 */
import { DigestSet, tdigestBufferSize, tdigestCapacity, tdigestCompression, tdigestFlushConstants, type DigestStorage } from "./tdigest.js";
import { newKernelInstance } from "./kernel.js";

interface DigestExports {
  memory: WebAssembly.Memory;
  arena(bytes: number): number;
  digest_init(
    data: number, nCent: number, nBuf: number, nonUnit: number, totalW: number, bufferW: number, minV: number, maxV: number,
    stride: number, B: number, cap: number, c: number, cosPc: number, sinPc: number, qFirst: number, qAlways: number,
  ): void;
  digest_add_run(i: number, vals: number, n: number): number;
}

/** Doubles per addRun call copied into the kernel at once. */
const INPUT = 1 << 16;
const CAPACITY_SLACK = 2; // as tdigest.ts

export class WasmDigestSet extends DigestSet {
  private readonly k: DigestExports;
  private readonly input: Float64Array;
  private readonly inputPtr: number;

  constructor(size: number, compression = 100) {
    const k = newKernelInstance<DigestExports>();
    const c = tdigestCompression(compression);
    const B = tdigestBufferSize(c);
    const cap = tdigestCapacity(c) + CAPACITY_SLACK;
    const stride = 2 * B + 2 * cap;
    const bytes = 8 * size * stride + 4 * size * 2 + size + 8 * size * 4 + 8 * INPUT + 64;
    const base = k.arena(bytes);
    if (base === 0) throw new Error(`cannot allocate ${bytes} bytes of WebAssembly memory for ${size} t-digests`);
    const buf = k.memory.buffer;
    let at = base;
    const ptrs = new Map<string, number>();
    const take = (name: string, n: number, width: number) => {
      at = (at + 7) & ~7;
      ptrs.set(name, at);
      const p = at;
      at += n * width;
      return p;
    };
    const storage: DigestStorage = {
      float64: (name, n) => new Float64Array(buf, take(name, n, 8), n),
      int32: (name, n) => new Int32Array(buf, take(name, n, 4), n),
      uint8: (name, n) => new Uint8Array(buf, take(name, n, 1), n),
    };
    super(size, c, storage);
    if (this.capacity !== cap || this.bufferSize !== B) throw new Error("WasmDigestSet: layout differs from DigestSet");
    this.k = k;
    this.inputPtr = take("input", INPUT, 8);
    this.input = new Float64Array(buf, this.inputPtr, INPUT);
    const f = tdigestFlushConstants(c);
    const p = (name: string) => ptrs.get(name)!;
    k.digest_init(p("data"), p("nCent"), p("nBuf"), p("nonUnit"), p("totalW"), p("bufferW"), p("minV"), p("maxV"), stride, B, cap, c, f.cosPc, f.sinPc, f.qFirst, f.qAlways);
  }

  /** Adds values[start..end) to digest i in order (unit weights; non-finite values skipped). */
  override addRun(i: number, values: Float64Array, start = 0, end = values.length): void {
    if (!(i >= 0 && i < this.size) || !Number.isInteger(i)) throw new RangeError(`digest index ${i} out of range [0, ${this.size})`);
    for (let a = start; a < end; a += INPUT) {
      const b = Math.min(end, a + INPUT);
      this.input.set(values.subarray(a, b));
      if (this.k.digest_add_run(i, this.inputPtr, b - a) !== 0) throw new Error(`t-digest centroid capacity ${this.capacity} exceeded (compression ${this.compression})`);
    }
  }
}
