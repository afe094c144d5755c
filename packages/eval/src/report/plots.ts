/**
 * Vega-Lite specifications for the evaluation report and a headless renderer (SVG via vega's
 * "none" renderer, PNG via resvg). No canvas package and no browser are needed.
 *
 * Data are embedded inline in each spec (`data.values`), so a spec is a self-contained JSON
 * document that can also be opened in the Vega editor. Bins, densities and normalisations are
 * computed here rather than with Vega transforms, so the numbers in the plot are exactly the
 * numbers this module computed (and can be tested without rendering).
 */

import { Resvg } from "@resvg/resvg-js";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

export type { TopLevelSpec };

const SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json";
const WIDTH = 400;
const HEIGHT = 400;

/** Natural order for category names: "2" before "10", case-insensitive ties by code point. */
function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, "en", { numeric: true, sensitivity: "base" }) || (a < b ? -1 : a > b ? 1 : 0);
}

/** Format a number to 4 significant digits for text marks ("n/a" for NaN). */
function fmt4(v: number): string {
  if (!Number.isFinite(v)) return "n/a";
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  return Math.abs(v) >= 1e4 ? v.toFixed(0) : v.toPrecision(4);
}

/** Convert HSL (degrees, [0,1], [0,1]) to a #rrggbb string. */
function hsl(h: number, s: number, l: number): string {
  const a = s * Math.min(l, 1 - l);
  const f = (n: number): string => {
    const kk = (n + h / 30) % 12;
    const c = l - a * Math.max(-1, Math.min(kk - 3, 9 - kk, 1));
    return Math.round(255 * c)
      .toString(16)
      .padStart(2, "0");
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}

/**
 * A categorical palette: Vega's tableau10/tableau20 up to 20 categories; beyond that, distinct
 * colours along the golden-angle hue sequence with alternating lightness. (Vega would otherwise
 * cycle its 20 colours, making category 1 and 21 indistinguishable.)
 */
export function categoricalPalette(count: number): { scheme: "tableau10" | "tableau20" } | { range: string[] } {
  if (count <= 10) return { scheme: "tableau10" };
  if (count <= 20) return { scheme: "tableau20" };
  const range: string[] = [];
  for (let i = 0; i < count; i++) {
    const lightness = [0.45, 0.62, 0.33][i % 3];
    range.push(hsl((i * 137.508) % 360, 0.65, lightness));
  }
  return { range };
}

// ---------------------------------------------------------------------------------------------

export interface ScatterInput {
  x: Float32Array | number[];
  y: Float32Array | number[];
  /** Category of each point (e.g. cell type or batch). */
  color: string[];
  title: string;
  colorTitle: string;
  xTitle?: string;
  yTitle?: string;
  /** Mark area in px² (default: 4 above 5,000 points, 10 above 1,000, else 20). */
  pointSize?: number;
}

/**
 * UMAP-style scatter plot coloured by category, with a legend listing every category in natural
 * order. Meant for up to ~20k points (subsample larger data first); non-finite points are left
 * out. Axis ticks are hidden because UMAP coordinates carry no units.
 */
export function scatterSpec(input: ScatterInput): TopLevelSpec {
  const n = input.x.length;
  if (input.y.length !== n || input.color.length !== n) {
    throw new RangeError(`x, y and color must have the same length (${n}, ${input.y.length}, ${input.color.length})`);
  }
  const values: { x: number; y: number; c: string }[] = [];
  for (let i = 0; i < n; i++) {
    const x = input.x[i];
    const y = input.y[i];
    if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
    values.push({ x: Math.round(x * 1e4) / 1e4, y: Math.round(y * 1e4) / 1e4, c: String(input.color[i]) });
  }
  const categories = Array.from(new Set(values.map((v) => v.c))).sort(naturalCompare);
  const size = input.pointSize ?? (n > 5000 ? 4 : n > 1000 ? 10 : 20);
  const axis = { ticks: false, labels: false, grid: false };
  return {
    $schema: SCHEMA,
    title: input.title,
    width: WIDTH,
    height: HEIGHT,
    data: { values },
    // aria: false drops a per-point aria-label, which would triple the SVG size at 20k points
    mark: { type: "circle", size, opacity: 0.8, aria: false },
    encoding: {
      x: { field: "x", type: "quantitative", title: input.xTitle ?? "UMAP1", axis, scale: { zero: false } },
      y: { field: "y", type: "quantitative", title: input.yTitle ?? "UMAP2", axis, scale: { zero: false } },
      color: {
        field: "c",
        type: "nominal",
        title: input.colorTitle,
        scale: { domain: categories, ...categoricalPalette(categories.length) },
        legend: {
          symbolLimit: categories.length,
          columns: Math.max(1, Math.ceil(categories.length / 30)),
          labelLimit: 180,
          symbolType: "circle",
        },
      },
    },
  };
}

// ---------------------------------------------------------------------------------------------

export interface HeatmapInput {
  /** Class names, the order of both rows (true) and columns (predicted). */
  labels: string[];
  /** matrix[i][j] = number of cells of true class i predicted as class j. */
  matrix: number[][];
  title: string;
  /** "row": colour by the fraction of each true class (recall view); counts stay as text. */
  normalize?: "row";
}

/** The values a heatmap spec plots, exposed for tests and tables. */
export interface HeatmapCell {
  t: string;
  p: string;
  count: number;
  value: number;
}

/** Cells of a confusion matrix, optionally row-normalised (empty rows give 0). */
export function heatmapCells(input: HeatmapInput): HeatmapCell[] {
  const L = input.labels.length;
  if (input.matrix.length !== L || input.matrix.some((r) => r.length !== L)) {
    throw new RangeError(`matrix must be ${L} × ${L} to match labels`);
  }
  if (new Set(input.labels).size !== L) throw new RangeError("labels must be distinct");
  const cells: HeatmapCell[] = [];
  for (let i = 0; i < L; i++) {
    const row = input.matrix[i];
    let sum = 0;
    for (const v of row) sum += Number.isFinite(v) ? v : 0;
    for (let j = 0; j < L; j++) {
      const count = Number.isFinite(row[j]) ? row[j] : 0;
      const value = input.normalize === "row" ? (sum > 0 ? count / sum : 0) : count;
      cells.push({ t: input.labels[i], p: input.labels[j], count, value });
    }
  }
  return cells;
}

/**
 * Confusion-matrix heatmap: rows are true classes (axis "true"), columns predicted classes
 * (axis "predicted"), both in the order of `labels`. Counts are printed in the cells when there
 * are at most 30 classes (beyond that the text would be illegible), in white on dark cells.
 */
export function heatmapSpec(input: HeatmapInput): TopLevelSpec {
  const cells = heatmapCells(input);
  const L = input.labels.length;
  let max = 0;
  for (const c of cells) if (c.value > max) max = c.value;
  const threshold = input.normalize === "row" ? 0.5 : max / 2;
  const cellPx = Math.max(8, Math.min(40, Math.floor(600 / Math.max(1, L))));
  const colorTitle = input.normalize === "row" ? "fraction of true class" : "count";
  const base = {
    x: { field: "p", type: "nominal" as const, title: "predicted", sort: input.labels, axis: { labelAngle: -45, labelLimit: 120 } },
    y: { field: "t", type: "nominal" as const, title: "true", sort: input.labels, axis: { labelLimit: 120 } },
  };
  const rect = {
    mark: { type: "rect" as const },
    encoding: {
      ...base,
      color: {
        field: "value",
        type: "quantitative" as const,
        title: colorTitle,
        scale: { scheme: "blues", domainMin: 0, ...(input.normalize === "row" ? { domainMax: 1 } : {}) },
      },
    },
  };
  const text = {
    mark: { type: "text" as const, fontSize: L > 15 ? 8 : 11 },
    encoding: {
      ...base,
      text: { field: "label", type: "nominal" as const },
      color: {
        condition: { test: `datum.value > ${threshold}`, value: "white" },
        value: "black",
      },
    },
  };
  const values = cells.map((c) => ({ ...c, label: fmt4(c.count) }));
  return {
    $schema: SCHEMA,
    title: input.title,
    width: cellPx * L,
    height: cellPx * L,
    data: { values },
    layer: L <= 30 ? [rect, text] : [rect],
  };
}

// ---------------------------------------------------------------------------------------------

export interface HistogramInput {
  series: { name: string; values: number[] | Float32Array | Float64Array }[];
  title: string;
  /** Number of equal-width bins over `extent` (default 50). */
  bins?: number;
  /** Histogram range (default [-1, 1], the silhouette range). */
  extent?: [number, number];
  xTitle?: string;
}

export interface HistogramBin {
  series: string;
  x0: number;
  x1: number;
  count: number;
  density: number;
}

/**
 * numpy-style density histogram: equal bins over `extent`, the last bin closed on the right,
 * values outside the extent and non-finite values ignored, density = count / (in-range total ×
 * bin width), so every non-empty series integrates to 1 and series of different sizes compare.
 */
export function histogramBins(input: HistogramInput): HistogramBin[] {
  const bins = input.bins ?? 50;
  const [lo, hi] = input.extent ?? [-1, 1];
  if (!Number.isInteger(bins) || bins < 1) throw new RangeError(`bins must be a positive integer, got ${bins}`);
  if (!(hi > lo)) throw new RangeError(`extent must be increasing, got [${lo}, ${hi}]`);
  const width = (hi - lo) / bins;
  const out: HistogramBin[] = [];
  for (const s of input.series) {
    const counts = new Float64Array(bins);
    let total = 0;
    for (const v of s.values) {
      if (!Number.isFinite(v) || v < lo || v > hi) continue;
      const b = v === hi ? bins - 1 : Math.min(bins - 1, Math.floor((v - lo) / width));
      counts[b]++;
      total++;
    }
    for (let b = 0; b < bins; b++) {
      out.push({
        series: s.name,
        x0: lo + b * width,
        x1: b === bins - 1 ? hi : lo + (b + 1) * width,
        count: counts[b],
        density: total > 0 ? counts[b] / (total * width) : 0,
      });
    }
  }
  return out;
}

/** Overlaid, semi-transparent density histograms (e.g. per-cell silhouettes per label set). */
export function histogramSpec(input: HistogramInput): TopLevelSpec {
  const values = histogramBins(input);
  const [lo, hi] = input.extent ?? [-1, 1];
  const names = input.series.map((s) => s.name);
  return {
    $schema: SCHEMA,
    title: input.title,
    width: WIDTH,
    height: 250,
    data: { values },
    mark: { type: "bar", opacity: 0.5, binSpacing: 0 },
    encoding: {
      x: { field: "x0", type: "quantitative", bin: { binned: true }, title: input.xTitle ?? "value", scale: { domain: [lo, hi] } },
      x2: { field: "x1" },
      y: { field: "density", type: "quantitative", stack: null, title: "density" },
      color: { field: "series", type: "nominal", title: null, scale: { domain: names, ...categoricalPalette(names.length) } },
    },
  };
}

// ---------------------------------------------------------------------------------------------

export interface LineInput {
  series: { name: string; x: number[]; y: number[] }[];
  title: string;
  xTitle: string;
  yTitle: string;
  /** Log-scale y axis (useful for losses); non-positive values are then dropped. */
  logY?: boolean;
}

/** Line chart of one or more series (loss curves, metric vs. step); non-finite points dropped. */
export function lineSpec(input: LineInput): TopLevelSpec {
  const values: { series: string; x: number; y: number }[] = [];
  for (const s of input.series) {
    if (s.x.length !== s.y.length) throw new RangeError(`series "${s.name}": x and y differ in length`);
    for (let i = 0; i < s.x.length; i++) {
      const x = s.x[i];
      const y = s.y[i];
      if (!Number.isFinite(x) || !Number.isFinite(y) || (input.logY && y <= 0)) continue;
      values.push({ series: s.name, x, y });
    }
  }
  const names = input.series.map((s) => s.name);
  return {
    $schema: SCHEMA,
    title: input.title,
    width: WIDTH * 1.5,
    height: 250,
    data: { values },
    mark: { type: "line", strokeWidth: 1.5 },
    encoding: {
      x: { field: "x", type: "quantitative", title: input.xTitle },
      y: {
        field: "y",
        type: "quantitative",
        title: input.yTitle,
        scale: input.logY ? { type: "log" } : { zero: false },
      },
      color: { field: "series", type: "nominal", title: null, scale: { domain: names, ...categoricalPalette(names.length) } },
    },
  };
}

// ---------------------------------------------------------------------------------------------

export interface BarInput {
  labels: string[];
  values: (number | null)[];
  title: string;
  valueTitle?: string;
}

/**
 * Horizontal bar chart in the given order (per-class F1, metric summary), values printed at the
 * bar ends. NaN/null values keep their label on the axis but get no bar. When every value lies
 * in [0, 1] the axis is fixed to [0, 1] so that bars of different reports compare by eye.
 */
export function barSpec(input: BarInput): TopLevelSpec {
  if (input.labels.length !== input.values.length) throw new RangeError("labels and values differ in length");
  if (new Set(input.labels).size !== input.labels.length) throw new RangeError("labels must be distinct");
  const values: { label: string; value: number; text: string }[] = [];
  input.labels.forEach((label, i) => {
    const v = input.values[i];
    if (v === null || !Number.isFinite(v)) return;
    values.push({ label, value: v, text: fmt4(v) });
  });
  const unit = values.every((v) => v.value >= 0 && v.value <= 1);
  const y = { field: "label", type: "nominal" as const, title: null, sort: null, scale: { domain: input.labels }, axis: { labelLimit: 200 } };
  const x = {
    field: "value",
    type: "quantitative" as const,
    title: input.valueTitle ?? "value",
    ...(unit ? { scale: { domain: [0, 1] } } : {}),
  };
  return {
    $schema: SCHEMA,
    title: input.title,
    width: WIDTH,
    height: Math.max(60, 18 * input.labels.length),
    data: { values },
    layer: [
      { mark: { type: "bar", color: "#4c78a8" }, encoding: { x, y } },
      {
        mark: { type: "text", align: "left", dx: 3, fontSize: 10 },
        encoding: { x, y, text: { field: "text", type: "nominal" } },
      },
    ],
  };
}

// ---------------------------------------------------------------------------------------------

/**
 * Render a Vega-Lite spec to an SVG string headlessly: compile to Vega, run a View with the
 * "none" renderer (no DOM, no canvas) and serialise the scenegraph. Without the optional `canvas`
 * package vega estimates text widths, which only affects label truncation and legend spacing.
 */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const compiled = compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export interface PngOptions {
  /** Zoom factor (default 2, for crisp figures on high-DPI screens and in slides). */
  scale?: number;
  /** Load the operating system's fonts (default true). */
  loadSystemFonts?: boolean;
  /** Extra font files to load (.ttf/.otf), e.g. a font bundled with a deployment. */
  fontFiles?: string[];
  /** Extra directories of fonts to load. */
  fontDirs?: string[];
  /** Family used when the SVG asks for one that is not installed (resvg's default: the first font found). */
  defaultFontFamily?: string;
}

/**
 * Rasterise an SVG to PNG with resvg.
 *
 * Fonts: resvg draws text only with fonts it has loaded. With system fonts loaded (default) the
 * generic `sans-serif` that Vega uses falls back to an installed face. When no font is available
 * at all (minimal containers), resvg neither throws nor draws the text: the PNG still renders,
 * with marks, axes and legend symbols but without labels; the SVG keeps the text. Pass
 * `fontFiles`/`fontDirs` to make PNG text independent of the machine. resvg's font warnings
 * are silenced (`logLevel: "error"`) so they do not flood the CLI's stderr.
 */
export function renderPng(svg: string, opts: PngOptions = {}): Buffer {
  const scale = opts.scale ?? 2;
  if (!(scale > 0) || !Number.isFinite(scale)) throw new RangeError(`scale must be > 0, got ${scale}`);
  const resvg = new Resvg(svg, {
    fitTo: { mode: "zoom", value: scale },
    background: "white",
    logLevel: "error",
    font: {
      loadSystemFonts: opts.loadSystemFonts ?? true,
      ...(opts.fontFiles ? { fontFiles: opts.fontFiles } : {}),
      ...(opts.fontDirs ? { fontDirs: opts.fontDirs } : {}),
      ...(opts.defaultFontFamily ? { defaultFontFamily: opts.defaultFontFamily } : {}),
    },
  });
  return resvg.render().asPng();
}
