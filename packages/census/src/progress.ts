/**
 * Progress of a census-fetch run: on a terminal, one bar for the whole plan (bytes, bytes/s, ETA)
 * and one per active transfer (cli-progress MultiBar on stderr); otherwise a pino log line every
 * GM_PROGRESS_LOG_MS (default 10 s) while bytes flow.
 */
import cliProgress from "cli-progress";
import type { Logger } from "@gm/core";
import { formatBytes, formatDuration } from "./size.js";

export interface TransferBar {
  /** bytes of the file on disk (or received) so far */
  update(bytes: number): void;
  /** remove the bar; `completed` counts the file as done in the plan bar, else drops it from the total */
  finish(completed: boolean): void;
}

export interface FetchProgress {
  /** `start`: the bytes the plan already counted for this item (its partial file); updates then report the real position */
  transfer(label: string, total: number, start: number): TransferBar;
  /** a present file failed verification and is fetched again */
  addTotal(bytes: number): void;
  /** a plan item that needs no transfer any more (present, or failed before starting) */
  settle(bytes: number, completed: boolean): void;
  stop(): void;
}

export interface FetchProgressOptions {
  /** bytes to bring to disk in this run, partial files included */
  totalBytes: number;
  /** bytes already there (partial files) */
  startBytes: number;
  datasets: number;
  enabled?: boolean;
  log: Logger;
}

export function createFetchProgress(o: FetchProgressOptions): FetchProgress {
  const tty = o.enabled ?? (Boolean(process.stderr.isTTY) && !process.env.GM_NO_PROGRESS);
  const t0 = Date.now();
  let total = o.totalBytes;
  let base = o.startBytes; // bytes of finished transfers plus partials of transfers not started
  const active = new Map<number, { start: number; now: number }>();
  let nextId = 0;
  let doneDatasets = 0;
  const startValue = o.startBytes;

  const value = () => {
    let v = base;
    for (const a of active.values()) v += a.now - a.start;
    return v;
  };
  const stats = () => {
    const v = value();
    const secs = Math.max((Date.now() - t0) / 1000, 1e-3);
    const rate = (v - startValue) / secs;
    const eta = rate > 0 ? (total - v) / rate : Infinity;
    return { v, rate, eta };
  };

  const planName = () => `all ${doneDatasets}/${o.datasets}`.padEnd(8 + 2 * String(o.datasets).length);
  let multi: cliProgress.MultiBar | undefined;
  let planBar: cliProgress.SingleBar | undefined;
  const planPayload = () => {
    const s = stats();
    return { value_h: formatBytes(s.v), total_h: formatBytes(total), rate_h: `${formatBytes(s.rate)}/s`, eta_h: formatDuration(s.eta), done: doneDatasets, n: o.datasets };
  };
  const redraw = () => {
    if (planBar) planBar.update(value(), planPayload());
  };
  if (tty) {
    multi = new cliProgress.MultiBar(
      {
        stream: process.stderr,
        hideCursor: true,
        clearOnComplete: false,
        autopadding: true,
        format: "{name} [{bar}] {percentage}% | {value_h}/{total_h} | {rate_h} | ETA {eta_h}",
      },
      cliProgress.Presets.shades_classic,
    );
    planBar = multi.create(Math.max(total, 1), value(), { name: planName(), ...planPayload() });
  }

  let timer: NodeJS.Timeout | undefined;
  if (!tty) {
    const every = Number(process.env.GM_PROGRESS_LOG_MS) > 0 ? Number(process.env.GM_PROGRESS_LOG_MS) : 10_000;
    let last = -1;
    timer = setInterval(() => {
      const s = stats();
      if (s.v === last) return;
      last = s.v;
      o.log.info(
        { progress: "census-fetch", bytes: s.v, total, rate: Math.round(s.rate), active: active.size, datasetsDone: doneDatasets, datasets: o.datasets },
        `census-fetch: ${formatBytes(s.v)} of ${formatBytes(total)}, ${formatBytes(s.rate)}/s, ETA ${formatDuration(s.eta)}, ${doneDatasets}/${o.datasets} datasets, ${active.size} active`,
      );
    }, every);
    timer.unref();
  }

  const setPlanName = () => planBar?.update({ name: planName() });

  return {
    transfer(label, size, start) {
      const id = nextId++;
      base -= start; // the partial bytes now count through the transfer
      active.set(id, { start: 0, now: start });
      let bar: cliProgress.SingleBar | undefined;
      if (multi) bar = multi.create(Math.max(size, 1), start, { name: label.slice(0, 8).padEnd(planName().length), value_h: formatBytes(start), total_h: formatBytes(size), rate_h: "", eta_h: "" });
      const t1 = Date.now();
      const first = start;
      let last = 0;
      return {
        update(bytes) {
          const a = active.get(id);
          if (!a) return;
          a.now = bytes;
          const now = Date.now();
          if (bar && now - last > 100) {
            last = now;
            const rate = (bytes - first) / Math.max((now - t1) / 1000, 1e-3);
            bar.update(bytes, { value_h: formatBytes(bytes), rate_h: `${formatBytes(Math.max(rate, 0))}/s`, eta_h: formatDuration(rate > 0 ? (size - bytes) / rate : Infinity) });
            redraw();
          }
        },
        finish(completed) {
          const a = active.get(id);
          if (!a) return;
          active.delete(id);
          if (completed) {
            base += size;
            doneDatasets++;
          } else {
            total -= size;
            planBar?.setTotal(Math.max(total, 1));
          }
          if (bar && multi) multi.remove(bar);
          setPlanName();
          redraw();
        },
      };
    },
    addTotal(bytes) {
      total += bytes;
      planBar?.setTotal(Math.max(total, 1));
    },
    settle(bytes, completed) {
      if (completed) doneDatasets++;
      else {
        total -= bytes;
        planBar?.setTotal(Math.max(total, 1));
      }
      setPlanName();
      redraw();
    },
    stop() {
      if (timer) clearInterval(timer);
      if (multi) {
        redraw();
        multi.stop();
      }
    },
  };
}
