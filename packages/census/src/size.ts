/**
 * Byte sizes on the command line ("500GB", "1.5TiB", "750M", "1e9") and in messages.
 *
 * Units follow GNU coreutils: KB, MB, GB, TB, PB are powers of 1000; KiB, MiB, GiB, TiB, PiB and the
 * bare letters K, M, G, T, P are powers of 1024; B or no unit means bytes. Case is ignored.
 */

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  pb: 1e15,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  p: 2 ** 50,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
  pib: 2 ** 50,
};

/** Parse a size; returns undefined when the text is not a size (the caller words the error). */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)\s*([a-z]*)\s*$/i.exec(String(text));
  if (!m) return undefined;
  const factor = UNITS[m[2].toLowerCase()];
  if (factor === undefined) return undefined;
  const v = Number(m[1]) * factor;
  if (!Number.isFinite(v) || v < 0) return undefined;
  return Math.floor(v);
}

/** Human-readable decimal size: 0 B, 980 B, 12.3 kB, 4.56 GB, 1.20 TB. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return "?";
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  if (i === 0) return `${Math.round(v)} B`;
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}

/** 1234567 -> "1,234,567" (locale-independent). */
export function formatCount(n: number): string {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d${String(h).padStart(2, "0")}h`;
  if (h > 0) return `${h}h${String(m).padStart(2, "0")}m`;
  return `${m}m${String(s % 60).padStart(2, "0")}s`;
}
