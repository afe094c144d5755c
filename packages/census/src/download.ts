/**
 * One H5AD download: HTTP Range resume of the partial file, retries with backoff, a free-space check,
 * a sha256 computed while streaming (the partial bytes are hashed first), a size check against the
 * API's filesize, a check against any sha256 digest the server declares, then fsync + rename into
 * place. The partial file (.<version>.h5ad.part) lives next to the final name, so `gm preprocess`
 * (which skips dot-files) never reads it, and it survives restarts.
 */
import { createHash, type Hash } from "node:crypto";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import { ExitCode, GmError, asOutputError, writeJsonAtomic, type Logger } from "@gm/core";
import { describeError, HttpStatusError, parseRetryAfter, StallTimer, TransientError, USER_AGENT, withRetries, type RetryPolicy } from "./http.js";
import type { DatasetPaths } from "./ids.js";
import type { TransferBar } from "./progress.js";
import { formatBytes, formatCount } from "./size.js";

export interface DownloadTask {
  /** for messages: the dataset id */
  label: string;
  url: string;
  /** the API's filesize */
  expectedBytes: number;
  paths: DatasetPaths;
}

/** Bytes that running transfers still have to write, so parallel downloads do not overbook the disk. */
export class SpaceBook {
  private readonly pending = new Map<string, number>();
  set(key: string, remaining: number): void {
    this.pending.set(key, Math.max(0, remaining));
  }
  release(key: string): void {
    this.pending.delete(key);
  }
  othersThan(key: string): number {
    let s = 0;
    for (const [k, v] of this.pending) if (k !== key) s += v;
    return s;
  }
}

export interface DownloadContext {
  policy: RetryPolicy;
  log: Logger;
  /** bytes to leave free on the output file system */
  keepFree: number;
  space: SpaceBook;
  bar?: TransferBar;
  /** free bytes of the file system holding `dir` (tests may replace it) */
  freeBytes?: (dir: string) => Promise<number>;
}

export interface DownloadResult {
  bytes: number;
  sha256: string;
  /** bytes that were already on disk when this run started on the file */
  resumedFrom: number;
  attempts: number;
}

interface PartMeta {
  url: string;
  bytes: number;
  etag?: string;
  last_modified?: string;
}

const WRITE_BLOCK = 1 << 20;
const FLUSH_MS = 500;

class OversizeError extends TransientError {}

async function defaultFreeBytes(dir: string): Promise<number> {
  const st = await fsp.statfs(dir);
  return Number(st.bavail) * Number(st.bsize);
}

function sizeOf(p: string): number {
  try {
    return fs.statSync(p).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw e;
  }
}

function readMeta(p: string): PartMeta | undefined {
  try {
    const v = JSON.parse(fs.readFileSync(p, "utf8")) as PartMeta;
    return v && typeof v === "object" && typeof v.url === "string" && typeof v.bytes === "number" ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Hash the first n bytes of a file into h. */
export async function hashFileInto(file: string, h: Hash, n?: number, onBytes?: (done: number) => void): Promise<number> {
  if (n === 0) return 0;
  let done = 0;
  const stream = fs.createReadStream(file, n === undefined ? { highWaterMark: WRITE_BLOCK } : { start: 0, end: n - 1, highWaterMark: WRITE_BLOCK });
  for await (const chunk of stream) {
    h.update(chunk as Buffer);
    done += (chunk as Buffer).length;
    onBytes?.(done);
  }
  return done;
}

export async function sha256File(file: string, onBytes?: (done: number) => void): Promise<{ sha256: string; bytes: number }> {
  const h = createHash("sha256");
  const bytes = await hashFileInto(file, h, undefined, onBytes);
  return { sha256: h.digest("hex"), bytes };
}

/**
 * sha256 digests a server may declare for the whole file, as lowercase hex: RFC 9530 Repr-Digest
 * (`sha-256=:b64:`), RFC 3230 Digest (`SHA-256=b64`), S3's x-amz-checksum-sha256 (single-part only).
 * For a 206 answer only Repr-Digest describes the whole file.
 */
export function declaredSha256(headers: Headers, status: number): string | undefined {
  const b64hex = (b64: string): string | undefined => {
    const buf = Buffer.from(b64, "base64");
    return buf.length === 32 ? buf.toString("hex") : undefined;
  };
  const repr = headers.get("repr-digest");
  if (repr) {
    const m = /(?:^|,)\s*sha-256\s*=\s*:([A-Za-z0-9+/=]+):/i.exec(repr);
    if (m) return b64hex(m[1]);
  }
  if (status !== 200) return undefined;
  const dig = headers.get("digest");
  if (dig) {
    const m = /(?:^|,)\s*sha-256\s*=\s*([A-Za-z0-9+/=]+)/i.exec(dig);
    if (m) return b64hex(m[1]);
  }
  const amz = headers.get("x-amz-checksum-sha256");
  if (amz && !amz.includes("-")) return b64hex(amz.trim());
  return undefined;
}

/** `bytes START-END/TOTAL` (TOTAL may be *). */
export function parseContentRange(v: string | null): { start: number; end: number; total?: number } | undefined {
  if (!v) return undefined;
  const m = /^\s*bytes\s+(\d+)-(\d+)\s*\/\s*(\d+|\*)\s*$/i.exec(v);
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === "*" ? undefined : Number(m[3]) };
}

/** A failure that no retry will fix, with the exit code it stands for (3 input, 4 output). */
export class DatasetError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = ExitCode.input,
  ) {
    super(message);
    this.name = "DatasetError";
  }
}

/** Download task.url to task.paths.final; resumes any partial file. */
export async function downloadDataset(task: DownloadTask, ctx: DownloadContext): Promise<DownloadResult> {
  const { paths, expectedBytes: expected, url } = task;
  const log = ctx.log.child({ dataset: task.label });
  const freeBytes = ctx.freeBytes ?? defaultFreeBytes;
  try {
    await fsp.mkdir(paths.dir, { recursive: true });
  } catch (e) {
    throw asOutputError(e) ?? e;
  }
  let resumedFrom = -1;
  let attempts = 0;
  // the hash of the partial file's bytes, carried from one attempt to the next within this run
  let carry: { hash: Hash; bytes: number } | undefined;

  const discard = async (why: string) => {
    log.warn({ url, reason: why }, `${task.label}: ${why}; discarding the partial file`);
    carry = undefined;
    await fsp.rm(paths.part, { force: true });
    await fsp.rm(paths.partMeta, { force: true });
    ctx.bar?.update(0);
  };

  const attempt = async (state: { failures: number }): Promise<DownloadResult> => {
    attempts++;
    let offset = sizeOf(paths.part);
    const meta = readMeta(paths.partMeta);
    if (offset > 0 && meta && (meta.url !== url || meta.bytes !== expected)) {
      await discard(`the partial file was for ${meta.url !== url ? "another URL" : `a ${formatCount(meta.bytes)}-byte file`}`);
      offset = 0;
    }
    if (offset > expected) {
      await discard(`the partial file has ${formatCount(offset)} bytes, more than the ${formatCount(expected)} expected`);
      offset = 0;
    }
    if (resumedFrom < 0) resumedFrom = offset;
    ctx.bar?.update(offset);

    const remaining = expected - offset;
    ctx.space.set(task.label, remaining);
    const free = await freeBytes(paths.dir);
    const others = ctx.space.othersThan(task.label);
    if (free < remaining + ctx.keepFree + others) {
      throw new DatasetError(
        `${task.label}: not enough free space in ${paths.dir}: ${formatBytes(free)} free, ${formatBytes(remaining)} to download` +
          `${others ? ` plus ${formatBytes(others)} for other transfers` : ""} plus --keep-free ${formatBytes(ctx.keepFree)}; free space or lower --keep-free`,
        ExitCode.output,
      );
    }

    // the partial bytes go into the hash first (once per run; later attempts reuse the state)
    let hash: Hash;
    if (carry && carry.bytes === offset) hash = carry.hash.copy();
    else {
      hash = createHash("sha256");
      if (offset > 0) {
        log.info({ offset }, `${task.label}: resuming at ${formatBytes(offset)} of ${formatBytes(expected)}; hashing the partial file first`);
        await hashFileInto(paths.part, hash, offset);
      }
      carry = { hash: hash.copy(), bytes: offset };
    }

    if (offset === expected) return finish(hash, undefined);

    const headers: Record<string, string> = { "user-agent": USER_AGENT, "accept-encoding": "identity" };
    if (offset > 0) {
      headers.range = `bytes=${offset}-`;
      const validator = meta?.etag && !meta.etag.startsWith("W/") ? meta.etag : meta?.last_modified;
      if (validator) headers["if-range"] = validator;
    }
    const stall = new StallTimer(ctx.policy.stallMs);
    let fh: fsp.FileHandle | undefined;
    let pos = offset;
    const startPos = offset;
    try {
      const res = await fetch(url, { headers, signal: stall.signal, redirect: "follow" });
      if (res.status === 416) {
        await res.body?.cancel().catch(() => {});
        await discard(`the server refused the range ${headers.range} (HTTP 416)`);
        throw new TransientError(`HTTP 416 for ${headers.range}`);
      }
      if (!res.ok) {
        await res.body?.cancel().catch(() => {});
        throw new HttpStatusError(res.status, res.statusText, url, parseRetryAfter(res.headers.get("retry-after")));
      }
      if (res.status === 206) {
        const cr = parseContentRange(res.headers.get("content-range"));
        if (!cr || cr.start !== offset) {
          await res.body?.cancel().catch(() => {});
          await discard(`the server answered ${headers.range ?? "a plain GET"} with Content-Range ${res.headers.get("content-range") ?? "(none)"}`);
          throw new TransientError("unexpected Content-Range");
        }
        if (cr.total !== undefined && cr.total !== expected) {
          await res.body?.cancel().catch(() => {});
          await discard(`the server has ${formatCount(cr.total)} bytes, the API says ${formatCount(expected)}`);
          throw new TransientError(`size mismatch: the server has ${formatCount(cr.total)} bytes, the API says ${formatCount(expected)}`);
        }
      } else {
        // 200: the whole file (no Range sent, Range ignored, or If-Range found the file changed)
        if (offset > 0) log.info({ status: res.status }, `${task.label}: the server sent the whole file instead of a range; starting over`);
        const len = res.headers.get("content-length");
        if (len !== null && Number(len) !== expected) {
          await res.body?.cancel().catch(() => {});
          throw new TransientError(`size mismatch: the server sends ${formatCount(Number(len))} bytes, the API says ${formatCount(expected)}`);
        }
        offset = 0;
        pos = 0;
        hash = createHash("sha256");
        carry = { hash: hash.copy(), bytes: 0 };
        const m: PartMeta = { url, bytes: expected };
        const etag = res.headers.get("etag");
        const lm = res.headers.get("last-modified");
        if (etag) m.etag = etag;
        if (lm) m.last_modified = lm;
        writeJsonAtomic(paths.partMeta, m);
      }
      const declared = declaredSha256(res.headers, res.status);

      fh = await fsp.open(paths.part, offset === 0 ? "w" : "r+");
      let pending: Buffer[] = [];
      let pendingLen = 0;
      let lastFlush = Date.now();
      const flush = async () => {
        lastFlush = Date.now();
        if (!pendingLen) return;
        const buf = pendingLen === pending[0].length ? pending[0] : Buffer.concat(pending, pendingLen);
        pending = [];
        pendingLen = 0;
        let w = 0;
        while (w < buf.length) {
          const r = await fh!.write(buf, w, buf.length - w, pos + w);
          w += r.bytesWritten;
        }
        hash.update(buf);
        pos += buf.length;
        carry = { hash: hash.copy(), bytes: pos };
        ctx.space.set(task.label, expected - pos);
      };
      try {
        if (res.body) {
          for await (const chunk of res.body) {
            stall.touch();
            const u = chunk as Uint8Array;
            const c = Buffer.from(u.buffer, u.byteOffset, u.byteLength);
            if (pos + pendingLen + c.length > expected) {
              throw new OversizeError(`size mismatch: the server sent more than the ${formatCount(expected)} bytes the API gives`);
            }
            pending.push(c);
            pendingLen += c.length;
            ctx.bar?.update(pos + pendingLen);
            // write in blocks, and at least every FLUSH_MS so a killed run keeps what arrived
            if (pendingLen >= WRITE_BLOCK || Date.now() - lastFlush >= FLUSH_MS) await flush();
          }
        }
        await flush();
      } catch (e) {
        if (e instanceof OversizeError) {
          await fh.close();
          fh = undefined;
          await discard(e.message);
          throw e;
        }
        // keep every byte that did arrive: the next attempt resumes after them
        try {
          await flush();
          await fh.sync();
        } catch (w) {
          carry = undefined;
          throw asOutputError(w) ?? w;
        }
        throw e;
      }
      await fh.sync();
      await fh.close();
      fh = undefined;
      if (pos < expected) throw new TransientError(`the connection ended after ${formatCount(pos)} of ${formatCount(expected)} bytes`);
      return await finish(hash, declared);
    } catch (e) {
      const out = asOutputError(e);
      if (out) throw new DatasetError(`${task.label}: ${out.message}`, ExitCode.output);
      // a failure after new bytes arrived (and were kept) does not count against --retries
      if (pos > startPos && sizeOf(paths.part) > startPos) state.failures = 0;
      throw e;
    } finally {
      stall.clear();
      if (fh) await fh.close().catch(() => {});
    }
  };

  const finish = async (hash: Hash, declared: string | undefined): Promise<DownloadResult> => {
    const size = sizeOf(paths.part);
    if (size !== expected) {
      await discard(`the download has ${formatCount(size)} bytes, the API says ${formatCount(expected)}`);
      throw new TransientError(`size mismatch: ${formatCount(size)} bytes downloaded, ${formatCount(expected)} expected`);
    }
    const sha256 = hash.digest("hex");
    if (declared && declared !== sha256) {
      await discard(`sha256 ${sha256} differs from the server's ${declared}`);
      throw new TransientError(`checksum mismatch: sha256 ${sha256.slice(0, 12)}… differs from the server's ${declared.slice(0, 12)}…`);
    }
    try {
      await fsp.rename(paths.part, paths.final);
      await syncDir(paths.dir);
      await fsp.rm(paths.partMeta, { force: true });
    } catch (e) {
      throw new DatasetError(`${task.label}: ${(asOutputError(e) ?? (e as Error)).message}`, ExitCode.output);
    }
    carry = undefined;
    return { bytes: size, sha256, resumedFrom: Math.max(resumedFrom, 0), attempts };
  };

  try {
    return await withRetries(task.label, ctx.policy, log, attempt, (e, delay, state) => {
      const at = sizeOf(paths.part);
      log.warn(
        { url, error: describeError(e), retry: state.failures, retries: ctx.policy.retries, delayMs: delay, resumeAt: at },
        `${task.label}: ${describeError(e)}; retry ${state.failures}/${ctx.policy.retries} in ${(delay / 1000).toFixed(1)} s${at ? ` from byte ${formatCount(at)}` : ""}`,
      );
    });
  } finally {
    ctx.space.release(task.label);
  }
}

async function syncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, "r");
    await fh.sync();
  } catch {
    // not every platform can fsync a directory; the rename itself is atomic
  } finally {
    await fh?.close().catch(() => {});
  }
}

/** Errors of one dataset as a one-line message and exit code. */
export function datasetFailure(label: string, e: unknown): { message: string; exitCode: number } {
  if (e instanceof DatasetError) return { message: e.message, exitCode: e.exitCode };
  if (e instanceof GmError) return { message: e.message, exitCode: e.exitCode };
  const out = asOutputError(e);
  if (out) return { message: `${label}: ${out.message}`, exitCode: ExitCode.output };
  const cause = (e as { cause?: unknown }).cause;
  const http = e instanceof HttpStatusError ? e : cause instanceof HttpStatusError ? cause : undefined;
  if (http && http.status === 404) {
    return { message: `${label}: ${describeError(e)}; the file is gone (withdrawn or revised dataset?) — a re-run lists the current version`, exitCode: ExitCode.input };
  }
  return { message: `${label}: ${describeError(e)}`, exitCode: ExitCode.input };
}
