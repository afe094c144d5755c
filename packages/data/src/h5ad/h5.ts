import fs from "node:fs";
import h5wasm from "h5wasm/node";
import { install_local_plugins } from "h5wasm-plugins";

/** h5wasm is a WASM module that must finish loading once per thread before use. */
let ready: Promise<void> | undefined;
export function h5ready(): Promise<void> {
  if (!ready) {
    silenceHdf5Diagnostics();
    // LZF, Blosc, Zstd, ... filters (h5py's LZF is common in older h5ad files) come as WASM plugins.
    ready = h5wasm.ready.then((m) => {
      install_local_plugins(m);
    });
  }
  return ready;
}

/**
 * The HDF5 C library prints its error stack ("HDF5-DIAG: Error detected ...", 20+ lines) to stderr
 * before h5wasm throws. gm reports one clear line instead, so those lines are filtered out of this
 * thread's stderr; the most specific one ("minor: ...") is kept for the error message.
 */
let lastDiagnostic = "";
let silenced = false;
const DIAG_LINE = /^(HDF5-DIAG: |  #\d{3}: |    major: |    minor: )/;
const DIAG_STARTS = ["HDF5-DIAG: ", "  #000: ", "    major: ", "    minor: "];

/** Could `partial` (an unfinished line) still become an HDF5 diagnostic line? */
function mayBeDiagnostic(partial: string): boolean {
  if (DIAG_LINE.test(partial)) return true;
  return DIAG_STARTS.some((p) => p.startsWith(partial.replace(/^( {2}#)\d{1,3}/, (m) => "  #000".slice(0, m.length))));
}

function silenceHdf5Diagnostics(): void {
  if (silenced) return;
  silenced = true;
  // The HDF5 C library writes its error stack to fd 2 in pieces (fprintf), through Emscripten's
  // NODERAWFS, i.e. fs.writeSync(2, ...). Lines are assembled here and diagnostic lines dropped.
  const origWriteSync = fs.writeSync as unknown as (fd: number, buf: unknown, ...rest: unknown[]) => number;
  let pending = "";
  const emit = (text: string) => {
    if (text) origWriteSync(2, text);
  };
  (fs as unknown as { writeSync: unknown }).writeSync = (fd: number, buf: unknown, ...rest: unknown[]): number => {
    if (fd !== 2) return origWriteSync(fd, buf, ...rest);
    let text: string;
    let n: number;
    if (typeof buf === "string") {
      text = buf;
      n = Buffer.byteLength(buf);
    } else if (ArrayBuffer.isView(buf)) {
      const off = (rest[0] as number | undefined) ?? 0;
      n = (rest[1] as number | undefined) ?? buf.byteLength - off;
      text = Buffer.from(buf.buffer, buf.byteOffset + off, n).toString("utf8");
    } else {
      return origWriteSync(fd, buf, ...rest);
    }
    pending += text;
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (DIAG_LINE.test(line)) {
        const m = /^ {2}#\d{3}: .* in \w+\(\): (.*)$/.exec(line);
        if (m) lastDiagnostic = m[1];
      } else emit(line + "\n");
    }
    if (pending && !mayBeDiagnostic(pending)) {
      emit(pending);
      pending = "";
    }
    return n;
  };
}

/** The last HDF5 library diagnostic seen on this thread (e.g. "truncated file: eof = ..."). */
export function takeHdf5Diagnostic(): string {
  const d = lastDiagnostic;
  lastDiagnostic = "";
  return d;
}

export type H5File = InstanceType<typeof h5wasm.File>;
export type H5Group = InstanceType<typeof h5wasm.Group>;
export type H5Dataset = InstanceType<typeof h5wasm.Dataset>;
export { h5wasm };

export function isGroup(o: unknown): o is H5Group {
  return o instanceof h5wasm.Group;
}
export function isDataset(o: unknown): o is H5Dataset {
  return o instanceof h5wasm.Dataset;
}

/** An attribute's value as a JS value (strings, numbers, arrays), or undefined. */
export function attr(obj: { attrs: Record<string, { value: unknown }> }, name: string): unknown {
  const a = obj.attrs[name];
  if (!a) return undefined;
  const v = a.value;
  if (typeof v === "bigint") return Number(v);
  if (v instanceof BigInt64Array || v instanceof BigUint64Array) return Array.from(v, Number);
  return v;
}

export function attrString(obj: { attrs: Record<string, { value: unknown }> }, name: string): string | undefined {
  const v = attr(obj, name);
  if (typeof v === "string") return v;
  if (Array.isArray(v) && v.length === 1 && typeof v[0] === "string") return v[0];
  return undefined;
}

export function attrStrings(obj: { attrs: Record<string, { value: unknown }> }, name: string): string[] | undefined {
  const v = attr(obj, name);
  if (v === undefined) return undefined;
  if (typeof v === "string") return [v];
  if (Array.isArray(v)) return v.map(String);
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>, String);
  return undefined;
}

/** Convert any numeric typed array (incl. BigInt64Array) to Float64Array. */
export function toFloat64(v: unknown): Float64Array {
  if (v instanceof Float64Array) return v;
  if (v instanceof BigInt64Array || v instanceof BigUint64Array) {
    const out = new Float64Array(v.length);
    for (let i = 0; i < v.length; i++) out[i] = Number(v[i]);
    return out;
  }
  if (ArrayBuffer.isView(v)) return Float64Array.from(v as unknown as ArrayLike<number>);
  if (Array.isArray(v)) return Float64Array.from(v.map(Number));
  if (typeof v === "number" || typeof v === "bigint") return Float64Array.of(Number(v));
  if (v === null || v === undefined) return new Float64Array(0);
  throw new Error(`expected a numeric array, got ${typeof v}`);
}

/** Int32Array view of an integer dataset slice; throws if values exceed int32. */
export function toInt32(v: unknown): Int32Array {
  if (v instanceof Int32Array) return v;
  if (v instanceof BigInt64Array || v instanceof BigUint64Array) {
    const out = new Int32Array(v.length);
    for (let i = 0; i < v.length; i++) {
      const x = Number(v[i]);
      if (x > 2147483647 || x < -2147483648) throw new RangeError(`index ${x} exceeds int32`);
      out[i] = x;
    }
    return out;
  }
  if (ArrayBuffer.isView(v)) return Int32Array.from(v as unknown as ArrayLike<number>);
  throw new Error(`expected an integer array, got ${typeof v}`);
}

export function toStrings(v: unknown): string[] {
  if (Array.isArray(v)) return v.map((x) => (x === null || x === undefined ? "" : String(x)));
  if (typeof v === "string") return [v];
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>, String);
  throw new Error(`expected a string array, got ${typeof v}`);
}
