/**
 * A small hand-written SVG line chart for training curves (loss on the left axis, learning rate on
 * the right). No plotting dependency; the output is standalone SVG 1.1 that browsers and image
 * viewers open directly.
 */

export interface Series {
  name: string;
  points: [number, number][];
  /** Which y axis the series is drawn against (default "left"). */
  axis?: "left" | "right";
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  leftLabel: string;
  rightLabel?: string;
  series: Series[];
  width?: number;
  height?: number;
  /** Log-scale left axis (non-positive values on it are skipped). */
  logLeft?: boolean;
}

/** Most points drawn per series; longer series are reduced with {@link downsampleMinMax}. */
export const MAX_PLOT_POINTS = 2000;

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const FONT = "Helvetica, Arial, sans-serif";

/** Text for SVG content and attribute values. */
export function escapeXml(s: string): string {
  return String(s).replace(/[&<>"']/g, (c) => (c === "&" ? "&amp;" : c === "<" ? "&lt;" : c === ">" ? "&gt;" : c === '"' ? "&quot;" : "&apos;"));
}

/**
 * At most `maxPoints` points: the first and the last, and for each of the index buckets in between
 * its minimum and its maximum (in their original order), so spikes stay visible.
 */
export function downsampleMinMax(points: [number, number][], maxPoints = MAX_PLOT_POINTS): [number, number][] {
  const n = points.length;
  const max = Math.max(4, Math.floor(maxPoints));
  if (n <= max) return points;
  const buckets = Math.floor((max - 2) / 2);
  const out: [number, number][] = [points[0]];
  const inner = n - 2;
  for (let b = 0; b < buckets; b++) {
    const lo = 1 + Math.floor((b * inner) / buckets);
    const hi = 1 + Math.floor(((b + 1) * inner) / buckets);
    if (lo >= hi) continue;
    let iMin = lo;
    let iMax = lo;
    for (let i = lo + 1; i < hi; i++) {
      if (points[i][1] < points[iMin][1]) iMin = i;
      if (points[i][1] > points[iMax][1]) iMax = i;
    }
    if (iMin === iMax) out.push(points[iMin]);
    else if (iMin < iMax) out.push(points[iMin], points[iMax]);
    else out.push(points[iMax], points[iMin]);
  }
  out.push(points[n - 1]);
  return out;
}

/** A tidy number: removes binary noise such as 0.30000000000000004. */
const clean = (v: number) => (v === 0 ? 0 : Number(v.toPrecision(12)));

/** A 1-2-5 step giving about `target` intervals over `span`. */
function niceStep(span: number, target: number): number {
  const raw = span / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return clean((norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag);
}

interface Scale {
  lo: number;
  hi: number;
  ticks: number[];
  log: boolean;
  label: (v: number) => string;
}

function trimNum(s: string): string {
  return s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s;
}

function expLabel(v: number): string {
  const [m, e] = v.toExponential(3).split("e");
  return `${trimNum(m)}e${Number(e)}`;
}

function suffixLabel(v: number, step: number): string {
  const a = Math.abs(v);
  const [div, suf] = a >= 1e9 ? [1e9, "G"] : a >= 1e6 ? [1e6, "M"] : [1e3, "k"];
  const d = Math.min(6, Math.max(0, -Math.floor(Math.log10(step / div) + 1e-9)));
  return `${trimNum((v / div).toFixed(d))}${suf}`;
}

/** Compact tick labels chosen for the whole axis: 1e-4 style for tiny values, 20k for large ones. */
function linearLabeler(ticks: number[], step: number): (v: number) => string {
  const top = Math.max(...ticks.map(Math.abs));
  if (top > 0 && top < 1e-2) return (v) => (v === 0 ? "0" : expLabel(v));
  if (top >= 1e4) return (v) => (v === 0 ? "0" : suffixLabel(v, step));
  const d = Math.min(8, Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
  return (v) => (v === 0 ? "0" : v.toFixed(d));
}

function generalLabel(v: number): string {
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a < 1e-2) return expLabel(v);
  if (a >= 1e4) return suffixLabel(v, a / 10);
  return String(Number(v.toPrecision(3)));
}

function linearScale(min: number, max: number, target: number): Scale {
  if (!Number.isFinite(min) || !Number.isFinite(max)) [min, max] = [0, 1];
  if (min === max) {
    const pad = Math.abs(min) * 0.1 || 1;
    [min, max] = [min - pad, max + pad];
  }
  const step = niceStep(max - min, target);
  const lo = clean(Math.floor(min / step + 1e-9) * step);
  const hi = clean(Math.ceil(max / step - 1e-9) * step);
  const ticks: number[] = [];
  for (let k = Math.round(lo / step); k <= Math.round(hi / step) && ticks.length < 100; k++) ticks.push(clean(k * step));
  return { lo, hi, ticks, log: false, label: linearLabeler(ticks, step) };
}

function logScale(min: number, max: number): Scale {
  if (!(min > 0) || !(max > 0) || !Number.isFinite(min) || !Number.isFinite(max)) [min, max] = [1, 10];
  const e0 = Math.floor(Math.log10(min) + 1e-9);
  const e1 = Math.ceil(Math.log10(max) - 1e-9);
  const decades = Math.max(1, e1 - e0);
  let cands: number[] = [];
  if (decades <= 3) {
    for (let e = e0 - 1; e <= e1 + 1; e++) for (const m of [1, 2, 5]) cands.push(clean(m * 10 ** e));
  } else {
    const every = Math.ceil(decades / 6);
    for (let e = Math.floor(e0 / every) * every - every; e <= e1 + every; e += every) cands.push(clean(10 ** e));
  }
  cands = cands.sort((a, b) => a - b);
  let iLo = 0;
  while (iLo + 1 < cands.length && cands[iLo + 1] <= min * (1 + 1e-9)) iLo++;
  let iHi = cands.length - 1;
  while (iHi - 1 >= 0 && cands[iHi - 1] >= max * (1 - 1e-9)) iHi--;
  if (iLo >= iHi) {
    iLo = Math.max(0, iLo - 1);
    iHi = Math.min(cands.length - 1, iHi + 1);
  }
  const ticks = cands.slice(iLo, iHi + 1);
  return { lo: ticks[0], hi: ticks[ticks.length - 1], ticks, log: true, label: generalLabel };
}

const f = (v: number) => (Math.round(v * 10) / 10).toString();

/** Cleaned series: finite points only (positive y for a log axis), downsampled. */
function prepare(s: Series, logAxis: boolean): [number, number][] {
  const pts = (Array.isArray(s.points) ? s.points : []).filter(
    (p) => Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1]) && (!logAxis || p[1] > 0),
  );
  return downsampleMinMax(pts);
}

/** An SVG line chart with a left (loss) and an optional right (learning rate) y axis and a legend. */
export function lineChartSvg(opts: LineChartOptions): string {
  const W = opts.width !== undefined && Number.isFinite(opts.width) && opts.width >= 200 ? Math.round(opts.width) : 800;
  const H = opts.height !== undefined && Number.isFinite(opts.height) && opts.height >= 150 ? Math.round(opts.height) : 420;
  const series = (opts.series ?? []).map((s, i) => {
    const axis: "left" | "right" = s.axis === "right" ? "right" : "left";
    return { name: String(s.name ?? `series ${i + 1}`), axis, color: PALETTE[i % PALETTE.length], pts: prepare(s, axis === "left" && !!opts.logLeft) };
  });
  const hasRight = series.some((s) => s.axis === "right");
  const hasLeft = series.some((s) => s.axis === "left") || !hasRight;
  const all = series.flatMap((s) => s.pts);
  const empty = all.length === 0;

  // Legend rows (text width estimated at ~6.6 px a character at 12 px).
  const legendItems = series.map((s) => ({ ...s, label: `${s.axis === "right" && hasLeft ? `${s.name} (right)` : s.name}${s.pts.length === 0 ? " (no data)" : ""}` }));
  const rows: (typeof legendItems)[] = [];
  let rowW = 0;
  for (const it of legendItems) {
    const w = 30 + it.label.length * 6.6 + 16;
    if (!rows.length || rowW + w > W - 80) {
      rows.push([]);
      rowW = 0;
    }
    rows[rows.length - 1].push(it);
    rowW += w;
  }

  const mL = hasLeft ? 74 : 24;
  const mR = hasRight ? 74 : 24;
  const mT = 36 + rows.length * 18 + 10;
  const mB = 50;
  const pw = Math.max(10, W - mL - mR);
  const ph = Math.max(10, H - mT - mB);

  const range = (xs: number[]) => {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of xs) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    return [lo, hi] as const;
  };
  const [x0, x1] = range(all.map((p) => p[0]));
  const xs = linearScale(x0, x1, 6);
  const leftYs = series.filter((s) => s.axis === "left").flatMap((s) => s.pts.map((p) => p[1]));
  const rightYs = series.filter((s) => s.axis === "right").flatMap((s) => s.pts.map((p) => p[1]));
  const [l0, l1] = range(leftYs);
  const [r0, r1] = range(rightYs);
  const ls = opts.logLeft ? logScale(l0, l1) : linearScale(l0, l1, 5);
  const rs = linearScale(r0, r1, 5);

  const px = (v: number) => mL + ((v - xs.lo) / (xs.hi - xs.lo)) * pw;
  const py = (sc: Scale, v: number) => {
    const t = sc.log ? (Math.log10(v) - Math.log10(sc.lo)) / (Math.log10(sc.hi) - Math.log10(sc.lo)) : (v - sc.lo) / (sc.hi - sc.lo);
    return mT + (1 - t) * ph;
  };

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}" font-size="12">`,
    `<title>${escapeXml(opts.title ?? "")}</title>`,
    `<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${f(W / 2)}" y="22" text-anchor="middle" font-size="15" font-weight="bold" fill="#222222">${escapeXml(opts.title ?? "")}</text>`,
  );

  // Grid lines from the primary y axis, then the plot frame.
  const grid = hasLeft ? ls : rs;
  out.push(`<g stroke="#e6e6e6" stroke-width="1">`);
  for (const t of grid.ticks) out.push(`<line x1="${f(mL)}" y1="${f(py(grid, t))}" x2="${f(mL + pw)}" y2="${f(py(grid, t))}"/>`);
  for (const t of xs.ticks) out.push(`<line x1="${f(px(t))}" y1="${f(mT)}" x2="${f(px(t))}" y2="${f(mT + ph)}"/>`);
  out.push(`</g>`);
  out.push(`<rect x="${f(mL)}" y="${f(mT)}" width="${f(pw)}" height="${f(ph)}" fill="none" stroke="#888888" stroke-width="1"/>`);

  // Axes: ticks and labels.
  out.push(`<g fill="#444444">`);
  for (const t of xs.ticks) {
    const x = px(t);
    out.push(`<line x1="${f(x)}" y1="${f(mT + ph)}" x2="${f(x)}" y2="${f(mT + ph + 5)}" stroke="#888888"/>`);
    out.push(`<text x="${f(x)}" y="${f(mT + ph + 18)}" text-anchor="middle">${escapeXml(xs.label(t))}</text>`);
  }
  if (hasLeft) {
    for (const t of ls.ticks) {
      const y = py(ls, t);
      out.push(`<line x1="${f(mL - 5)}" y1="${f(y)}" x2="${f(mL)}" y2="${f(y)}" stroke="#888888"/>`);
      out.push(`<text x="${f(mL - 8)}" y="${f(y + 4)}" text-anchor="end">${escapeXml(ls.label(t))}</text>`);
    }
    const cy = mT + ph / 2;
    out.push(`<text x="16" y="${f(cy)}" text-anchor="middle" transform="rotate(-90 16 ${f(cy)})" fill="#222222">${escapeXml(opts.leftLabel ?? "")}</text>`);
  }
  if (hasRight) {
    for (const t of rs.ticks) {
      const y = py(rs, t);
      out.push(`<line x1="${f(mL + pw)}" y1="${f(y)}" x2="${f(mL + pw + 5)}" y2="${f(y)}" stroke="#888888"/>`);
      out.push(`<text x="${f(mL + pw + 8)}" y="${f(y + 4)}" text-anchor="start">${escapeXml(rs.label(t))}</text>`);
    }
    const cx = W - 14;
    const cy = mT + ph / 2;
    out.push(`<text x="${f(cx)}" y="${f(cy)}" text-anchor="middle" transform="rotate(90 ${f(cx)} ${f(cy)})" fill="#222222">${escapeXml(opts.rightLabel ?? "")}</text>`);
  }
  out.push(`<text x="${f(mL + pw / 2)}" y="${f(H - 10)}" text-anchor="middle" fill="#222222">${escapeXml(opts.xLabel ?? "")}</text>`);
  out.push(`</g>`);

  // Series.
  for (const s of series) {
    const sc = s.axis === "right" ? rs : ls;
    const dash = s.axis === "right" && hasLeft ? ` stroke-dasharray="6 3"` : "";
    const name = escapeXml(s.name);
    if (s.pts.length === 1) {
      const [x, y] = s.pts[0];
      out.push(`<circle cx="${f(px(x))}" cy="${f(py(sc, y))}" r="3" fill="${s.color}"><title>${name}</title></circle>`);
    } else if (s.pts.length > 1) {
      const d = s.pts.map((p, i) => `${i ? "L" : "M"}${f(px(p[0]))},${f(py(sc, p[1]))}`).join("");
      out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.5" stroke-linejoin="round"${dash}><title>${name}</title></path>`);
    }
  }
  if (empty) out.push(`<text x="${f(mL + pw / 2)}" y="${f(mT + ph / 2)}" text-anchor="middle" fill="#999999">no data</text>`);

  // Legend.
  out.push(`<g>`);
  rows.forEach((row, ri) => {
    const y = 40 + ri * 18;
    let x = mL;
    for (const it of row) {
      const dash = it.axis === "right" && hasLeft ? ` stroke-dasharray="6 3"` : "";
      out.push(`<line x1="${f(x)}" y1="${f(y - 4)}" x2="${f(x + 22)}" y2="${f(y - 4)}" stroke="${it.color}" stroke-width="2"${dash}/>`);
      out.push(`<text x="${f(x + 28)}" y="${f(y)}" fill="#222222">${escapeXml(it.label)}</text>`);
      x += 30 + it.label.length * 6.6 + 16;
    }
  });
  out.push(`</g>`);
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}
