/**
 * A single-file HTML evaluation report: inline CSS, inline SVG figures, no scripts and no
 * external assets, so it can be mailed, archived next to a checkpoint or opened offline.
 */

import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "@gm/core";
import { renderPng, type PngOptions } from "./plots.js";

export type MetricValue = number | string | null;
export type CellValue = string | number | null;

export interface ReportFigure {
  caption: string;
  /** An SVG document, normally from `renderSvg`. */
  svg: string;
}

export interface ReportSection {
  heading: string;
  text?: string;
  metrics?: Record<string, MetricValue>;
  table?: { columns: string[]; rows: CellValue[][] };
  figures?: ReportFigure[];
}

export interface ReportInput {
  title: string;
  subtitle?: string;
  sections: ReportSection[];
  /** Where the numbers came from: model, checkpoint, dataset, gm version, command line, date. */
  provenance?: Record<string, string>;
}

/** Escape text for HTML element content and double- or single-quoted attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => {
    switch (c) {
      case "&":
        return "&amp;";
      case "<":
        return "&lt;";
      case ">":
        return "&gt;";
      case '"':
        return "&quot;";
      default:
        return "&#39;";
    }
  });
}

/**
 * Report formatting of numbers: NaN and null are "n/a" (scib returns NaN for undefined metrics,
 * e.g. ARI on a single cluster), ±Infinity "∞"/"−∞", integers in full, and other numbers with
 * 4 significant digits ("0.8123", "0.5000", "12.35"), without exponents below 1e4 except for
 * magnitudes under 1e-6; from 1e4 on they are rounded to integers.
 */
export function formatNumber(v: number | null | undefined): string {
  if (v === null || v === undefined || Number.isNaN(v)) return "n/a";
  if (v === Infinity) return "∞";
  if (v === -Infinity) return "−∞";
  if (Number.isInteger(v) && Math.abs(v) < 1e21) return String(v);
  if (Math.abs(v) >= 1e4) return Math.round(v).toString();
  return v.toPrecision(4);
}

function formatCell(v: CellValue | undefined): string {
  if (typeof v === "number" || v === null || v === undefined) return escapeHtml(formatNumber(v ?? null));
  return escapeHtml(v);
}

let figureCounter = 0;

/**
 * Prepare an SVG document for inlining into HTML:
 * - drops the XML declaration, DOCTYPE and comments (invalid or useless inside HTML);
 * - prefixes every `id` and its references (`url(#…)`, `href="#…"`) with a per-figure prefix:
 *   Vega names clip paths and gradients `clip1`, `gradient_0`, … in every SVG, and inline
 *   SVGs share one id namespace, so without this a later figure would be clipped or filled
 *   with an earlier figure's definitions;
 * - as defence in depth, removes `<script>` and `<foreignObject>` elements, `on…=` event
 *   attributes and `javascript:` links. This is not a general sanitiser: figures are expected
 *   to come from `renderSvg`, not from untrusted users.
 */
export function inlineSvg(svg: string, prefix = `f${++figureCounter}-`): string {
  let s = svg
    .replace(/<\?xml[\s\S]*?\?>/g, "")
    .replace(/<!DOCTYPE[\s\S]*?>/gi, "")
    .replace(/<!--[\s\S]*?-->/g, "")
    .replace(/<script[\s\S]*?<\/script\s*>/gi, "")
    .replace(/<script[^>]*\/>/gi, "")
    .replace(/<foreignObject[\s\S]*?<\/foreignObject\s*>/gi, "")
    .replace(/<[a-zA-Z][^>]*>/g, (tag) =>
      tag
        .replace(/\son[a-z]+\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)/gi, "")
        .replace(/(href\s*=\s*["'])\s*javascript:[^"']*/gi, "$1#"),
    )
    .trim();
  if (!/^<svg[\s>]/i.test(s)) throw new Error("figure is not an SVG document (it must start with <svg)");
  s = s.replace(/<[a-zA-Z][^>]*>/g, (tag) =>
    tag
      .replace(/(\sid\s*=\s*)(["'])([^"']+)\2/g, (_m, a: string, q: string, id: string) => `${a}${q}${prefix}${id}${q}`)
      .replace(/url\(\s*(["']?)#([^)"']+)\1\s*\)/g, (_m, q: string, id: string) => `url(${q}#${prefix}${id}${q})`)
      .replace(/(href\s*=\s*)(["'])#([^"']+)\2/g, (_m, a: string, q: string, id: string) => `${a}${q}#${prefix}${id}${q}`),
  );
  return s;
}

const CSS = `
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0; color: #1d2330; background: #fff; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 64px; }
header h1 { margin: 0 0 4px; font-size: 1.7em; }
header p.subtitle { margin: 0 0 16px; color: #5a6272; }
section { margin-top: 32px; border-top: 1px solid #e3e6eb; padding-top: 8px; }
h2 { font-size: 1.25em; margin: 12px 0; }
p.text { white-space: pre-wrap; margin: 8px 0 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #d9dde3; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f3f5f8; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
table.metrics td:first-child { font-weight: 500; }
figure { margin: 16px 0 24px; overflow-x: auto; }
figure svg { max-width: 100%; height: auto; }
figcaption { color: #5a6272; font-size: 0.9em; margin-top: 4px; }
footer { margin-top: 40px; color: #5a6272; font-size: 0.85em; }
`;

function renderMetrics(metrics: Record<string, MetricValue>): string {
  const rows = Object.entries(metrics).map(([k, v]) => {
    const isNum = typeof v === "number" || v === null;
    return `<tr><td>${escapeHtml(k)}</td><td${isNum ? ' class="num"' : ""}>${formatCell(v)}</td></tr>`;
  });
  return `<table class="metrics"><thead><tr><th>metric</th><th>value</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function renderTable(table: { columns: string[]; rows: CellValue[][] }): string {
  const head = table.columns.map((c) => `<th>${escapeHtml(c)}</th>`).join("");
  const body = table.rows
    .map((row, r) => {
      if (row.length !== table.columns.length) {
        throw new RangeError(`table row ${r} has ${row.length} cells, expected ${table.columns.length}`);
      }
      const cells = row.map((v) => `<td${typeof v === "string" ? "" : ' class="num"'}>${formatCell(v)}</td>`);
      return `<tr>${cells.join("")}</tr>`;
    })
    .join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

/**
 * Build the report as one HTML string. Every user-supplied string (title, headings, text,
 * metric names, table cells, captions, provenance) is HTML-escaped; numbers go through
 * {@link formatNumber}. Figures are inlined with {@link inlineSvg}.
 */
export function buildReport(input: ReportInput): string {
  // void elements are self-closed and the CSS has no angle brackets, so the document is also
  // well-formed XML (polyglot), which keeps it checkable by XML tools and tests

  const parts: string[] = [];
  parts.push("<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8" />');
  parts.push('<meta name="viewport" content="width=device-width, initial-scale=1" />');
  parts.push(`<title>${escapeHtml(input.title)}</title>`, `<style>${CSS}</style>`, "</head>", "<body>", "<main>");
  parts.push("<header>", `<h1>${escapeHtml(input.title)}</h1>`);
  if (input.subtitle !== undefined) parts.push(`<p class="subtitle">${escapeHtml(input.subtitle)}</p>`);
  parts.push("</header>");

  input.sections.forEach((sec, si) => {
    parts.push(`<section id="section-${si + 1}">`, `<h2>${escapeHtml(sec.heading)}</h2>`);
    if (sec.text !== undefined) parts.push(`<p class="text">${escapeHtml(sec.text)}</p>`);
    if (sec.metrics !== undefined) parts.push(renderMetrics(sec.metrics));
    if (sec.table !== undefined) parts.push(renderTable(sec.table));
    (sec.figures ?? []).forEach((fig, fi) => {
      parts.push(
        "<figure>",
        inlineSvg(fig.svg, `s${si + 1}f${fi + 1}-`),
        `<figcaption>${escapeHtml(fig.caption)}</figcaption>`,
        "</figure>",
      );
    });
    parts.push("</section>");
  });

  if (input.provenance !== undefined && Object.keys(input.provenance).length > 0) {
    const rows = Object.entries(input.provenance)
      .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(String(v))}</td></tr>`)
      .join("");
    parts.push('<footer><h2>Provenance</h2><table class="provenance"><tbody>', rows, "</tbody></table></footer>");
  }
  parts.push("</main>", "</body>", "</html>", "");
  return parts.join("\n");
}

export interface WriteReportOptions extends PngOptions {
  /** Also rasterise each figure to `figures/<name>.png`. */
  png: boolean;
}

export interface WrittenReport {
  html: string;
  figures: string[];
}

const FIGURE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Write `report.html` and `figures/<name>.svg` (plus `.png` when asked) under `dir`.
 *
 * Every file goes through a temporary sibling name and a rename, so a reader (or a crash)
 * never sees a half-written file; figures are written before `report.html`, so a report that
 * exists is complete. Figure names must be plain file names (letters, digits, `.`, `_`, `-`),
 * which keeps them inside `figures/` and portable.
 */
export function writeReport(
  dir: string,
  html: string,
  figures: { name: string; svg: string }[],
  opts: WriteReportOptions,
): WrittenReport {
  const seen = new Set<string>();
  for (const f of figures) {
    if (!FIGURE_NAME.test(f.name) || f.name.includes("..")) {
      throw new RangeError(`invalid figure name "${f.name}" (use letters, digits, ".", "_" and "-")`);
    }
    if (seen.has(f.name)) throw new RangeError(`duplicate figure name "${f.name}"`);
    seen.add(f.name);
  }
  const figDir = path.join(dir, "figures");
  fs.mkdirSync(figDir, { recursive: true });
  const written: string[] = [];
  for (const f of figures) {
    const svgPath = path.join(figDir, `${f.name}.svg`);
    writeFileAtomic(svgPath, f.svg);
    written.push(svgPath);
    if (opts.png) {
      const pngPath = path.join(figDir, `${f.name}.png`);
      writeFileAtomic(pngPath, renderPng(f.svg, opts));
      written.push(pngPath);
    }
  }
  const htmlPath = path.join(dir, "report.html");
  writeFileAtomic(htmlPath, html);
  return { html: htmlPath, figures: written };
}
