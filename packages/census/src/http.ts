/**
 * HTTP plumbing shared by the API client and the downloader: the User-Agent, retry policy
 * (exponential backoff with jitter, Retry-After), error classification and a JSON GET with retries.
 * Node's global fetch (undici) does the transfers.
 */
import { GM_VERSION, type Logger } from "@gm/core";

export const USER_AGENT = `gm/${GM_VERSION} (census-fetch; node/${process.versions.node})`;

export interface RetryPolicy {
  /** Consecutive failed attempts allowed after the first (0 = no retry). */
  retries: number;
  /** First backoff delay (ms); doubles on each consecutive failure. */
  baseMs: number;
  /** Largest backoff delay (ms). */
  maxMs: number;
  /** Abort a request when no byte arrives for this long (ms). */
  stallMs: number;
}

function envMs(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === "") return dflt;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : dflt;
}

/** The policy from the environment (GM_FETCH_RETRY_BASE_MS, GM_FETCH_RETRY_MAX_MS, GM_FETCH_STALL_MS). */
export function retryPolicy(retries: number): RetryPolicy {
  return {
    retries,
    baseMs: envMs("GM_FETCH_RETRY_BASE_MS", 1000),
    maxMs: envMs("GM_FETCH_RETRY_MAX_MS", 300_000),
    stallMs: envMs("GM_FETCH_STALL_MS", 120_000),
  };
}

/** The longest Retry-After we wait for (a broken server must not park a worker for days). */
export const RETRY_AFTER_CAP_MS = 3_600_000;

/**
 * Delay before retry number `attempt` (1-based): base·2^(attempt-1) capped at maxMs, with "equal
 * jitter" (uniformly in [d/2, d]) so that parallel transfers do not retry in lockstep; never less
 * than the server's Retry-After.
 */
export function backoffMs(attempt: number, policy: Pick<RetryPolicy, "baseMs" | "maxMs">, retryAfterMs?: number, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(Math.max(attempt - 1, 0), 40));
  const jittered = exp / 2 + (random() * exp) / 2;
  const ra = retryAfterMs === undefined ? 0 : Math.min(retryAfterMs, RETRY_AFTER_CAP_MS);
  return Math.round(Math.max(jittered, ra));
}

/** Retry-After: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const t = Date.parse(v);
  if (Number.isNaN(t)) return undefined;
  return Math.max(0, t - now);
}

/** A non-success HTTP status. 408, 425, 429 and 5xx are retried; other 4xx are final. */
export class HttpStatusError extends Error {
  readonly status: number;
  readonly url: string;
  readonly retryAfterMs?: number;
  constructor(status: number, statusText: string, url: string, retryAfterMs?: number) {
    super(`HTTP ${status}${statusText ? ` ${statusText}` : ""} from ${url}`);
    this.name = "HttpStatusError";
    this.status = status;
    this.url = url;
    this.retryAfterMs = retryAfterMs;
  }
  get retryable(): boolean {
    return this.status === 408 || this.status === 425 || this.status === 429 || this.status >= 500;
  }
}

/** A problem worth another attempt that is not an HTTP status (bad size, checksum, short body). */
export class TransientError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TransientError";
  }
}

/** Network-level failures (reset, refused, DNS, TLS, premature close, stall abort) are retried. */
export function isRetryable(e: unknown): boolean {
  if (e instanceof HttpStatusError) return e.retryable;
  if (e instanceof TransientError) return true;
  if (!(e instanceof Error)) return false;
  if (e.name === "AbortError" || e.name === "TimeoutError") return true;
  // undici: TypeError("fetch failed", { cause }) / TypeError("terminated", { cause: SocketError })
  if (e instanceof TypeError && /fetch failed|terminated|network|socket/i.test(e.message)) return true;
  const code = (e as NodeJS.ErrnoException).code ?? ((e as { cause?: NodeJS.ErrnoException }).cause?.code as string | undefined);
  return typeof code === "string" && /^(ECONNRESET|ECONNREFUSED|ECONNABORTED|EPIPE|ETIMEDOUT|EAI_AGAIN|ENOTFOUND|ENETUNREACH|EHOSTUNREACH|UND_ERR_\w+)$/.test(code);
}

/** One line describing a failure, with undici's cause when that is where the detail is. */
export function describeError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const cause = (e as { cause?: unknown }).cause;
  if (cause instanceof Error && cause.message && !e.message.includes(cause.message)) {
    const code = (cause as NodeJS.ErrnoException).code;
    return `${e.message}: ${cause.message}${code && !cause.message.includes(code) ? ` (${code})` : ""}`;
  }
  return e.message;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * An AbortController that fires when `touch()` has not been called for `ms` milliseconds (a stalled
 * connection), or when the caller aborts.
 */
export class StallTimer {
  readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly ms: number) {
    this.touch();
  }
  get signal(): AbortSignal {
    return this.controller.signal;
  }
  touch(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.ms > 0) {
      this.timer = setTimeout(() => {
        const err = new Error(`no data for ${Math.round(this.ms / 1000)} s`);
        err.name = "TimeoutError";
        this.controller.abort(err);
      }, this.ms);
      this.timer.unref?.();
    }
  }
  clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

export interface RetryState {
  /** Consecutive failures so far (reset by callers when an attempt made progress). */
  failures: number;
}

/**
 * Run `attempt` until it succeeds, a final error occurs, or `policy.retries` consecutive retryable
 * failures have happened. `attempt` may reset `state.failures` to 0 when it made progress.
 */
export async function withRetries<T>(
  what: string,
  policy: RetryPolicy,
  log: Logger,
  attempt: (state: RetryState) => Promise<T>,
  onRetry?: (e: unknown, delayMs: number, state: RetryState) => void,
): Promise<T> {
  const state: RetryState = { failures: 0 };
  let total = 0;
  for (;;) {
    try {
      return await attempt(state);
    } catch (e) {
      total++;
      if (!isRetryable(e)) throw e;
      state.failures++;
      // a hard cap keeps a link that drops every few bytes from looping for ever
      if (state.failures > policy.retries || total > Math.max(1000, policy.retries * 10)) {
        const err = new GaveUpError(`${describeError(e)} (gave up after ${total} attempt${total === 1 ? "" : "s"})`, e);
        throw err;
      }
      const delay = backoffMs(state.failures, policy, e instanceof HttpStatusError ? e.retryAfterMs : undefined);
      if (onRetry) onRetry(e, delay, state);
      else log.warn({ what, attempt: total, delayMs: delay, error: describeError(e) }, `${what}: ${describeError(e)}; retry ${state.failures}/${policy.retries} in ${(delay / 1000).toFixed(1)} s`);
      await sleep(delay);
    }
  }
}

/** Retries exhausted; `cause` is the last failure. */
export class GaveUpError extends Error {
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = "GaveUpError";
  }
}

export interface JsonResponse {
  body: unknown;
  headers: Headers;
  url: string;
}

/** GET a JSON document with retries. */
export async function getJson(url: string, policy: RetryPolicy, log: Logger): Promise<JsonResponse> {
  return withRetries(`GET ${url}`, policy, log, async () => {
    const stall = new StallTimer(policy.stallMs);
    try {
      const res = await fetch(url, {
        headers: { "user-agent": USER_AGENT, accept: "application/json" },
        signal: stall.signal,
        redirect: "follow",
      });
      if (!res.ok) {
        await res.body?.cancel().catch(() => {});
        throw new HttpStatusError(res.status, res.statusText, url, parseRetryAfter(res.headers.get("retry-after")));
      }
      const chunks: Buffer[] = [];
      if (res.body) {
        for await (const chunk of res.body) {
          stall.touch();
          chunks.push(Buffer.from(chunk as Uint8Array));
        }
      }
      const text = Buffer.concat(chunks).toString("utf8");
      try {
        return { body: JSON.parse(text), headers: res.headers, url: res.url || url };
      } catch (e) {
        // a truncated or HTML error page from a proxy: worth another try
        throw new TransientError(`${url} did not return JSON (${(e as Error).message}; ${text.length} bytes)`);
      }
    } finally {
      stall.clear();
    }
  });
}
