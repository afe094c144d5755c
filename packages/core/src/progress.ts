import cliProgress from "cli-progress";
import { getLogger } from "./log.js";

/** Progress reporting for long jobs: a bar on stderr (items/s, ETA) on a TTY, periodic log lines otherwise. */
export interface Progress {
  /** Advance by n items. */
  increment(n?: number): void;
  /** Raise the total when it becomes known or grows. */
  setTotal(total: number): void;
  stop(): void;
}

export interface ProgressOptions {
  label: string;
  total: number;
  unit?: string;
  /** Force on/off; default: on when stderr is a TTY and GM_NO_PROGRESS is unset. */
  enabled?: boolean;
  /** Interval between log lines when not on a TTY (ms). */
  logEveryMs?: number;
}

function formatRate(v: number): string {
  if (!Number.isFinite(v)) return "-";
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return v.toFixed(1);
}

function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s % 60).padStart(2, "0")}s`;
}

export function createProgress(opts: ProgressOptions): Progress {
  const unit = opts.unit ?? "items";
  const tty = opts.enabled ?? (Boolean(process.stderr.isTTY) && !process.env.GM_NO_PROGRESS);
  const start = Date.now();
  let done = 0;
  let total = opts.total;
  if (tty) {
    const bar = new cliProgress.SingleBar(
      {
        stream: process.stderr,
        format: `${opts.label} [{bar}] {percentage}% | {value}/{total} ${unit} | {rate} ${unit}/s | ETA {eta_h}`,
        hideCursor: true,
        clearOnComplete: false,
        etaBuffer: 50,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { rate: "-", eta_h: "?" });
    return {
      increment(n = 1) {
        done += n;
        const secs = (Date.now() - start) / 1000;
        const rate = done / Math.max(secs, 1e-3);
        bar.update(done, { rate: formatRate(rate), eta_h: formatEta((total - done) / rate) });
      },
      setTotal(t) {
        total = t;
        bar.setTotal(t);
      },
      stop() {
        bar.stop();
      },
    };
  }
  const log = getLogger();
  const every = opts.logEveryMs ?? 10_000;
  let last = start;
  return {
    increment(n = 1) {
      done += n;
      const now = Date.now();
      if (now - last >= every) {
        last = now;
        const rate = done / ((now - start) / 1000);
        log.info({ progress: opts.label, done, total, rate: Number(rate.toFixed(1)), eta: formatEta((total - done) / rate) }, `${opts.label}: ${done}/${total} ${unit}`);
      }
    },
    setTotal(t) {
      total = t;
    },
    stop() {},
  };
}
