import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  barSpec,
  buildReport,
  escapeHtml,
  formatNumber,
  heatmapSpec,
  inlineSvg,
  renderSvg,
  scatterSpec,
  writeReport,
} from "../../src/report/index.js";
import { countMarks, parseXml, walk, type XmlNode } from "./svg.js";

const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

function allNodes(root: XmlNode, name: string): XmlNode[] {
  const out: XmlNode[] = [];
  walk(root, (n) => {
    if (n.name === name) out.push(n);
  });
  return out;
}

describe("formatNumber / escapeHtml", () => {
  it("formats to 4 significant digits, integers in full, NaN/null as n/a", () => {
    expect(formatNumber(0.812345)).toBe("0.8123");
    expect(formatNumber(0.5)).toBe("0.5000");
    expect(formatNumber(12.3456)).toBe("12.35");
    expect(formatNumber(-0.000123456)).toBe("-0.0001235");
    expect(formatNumber(1234.56)).toBe("1235");
    expect(formatNumber(123456.7)).toBe("123457");
    expect(formatNumber(42)).toBe("42");
    expect(formatNumber(Number.NaN)).toBe("n/a");
    expect(formatNumber(null)).toBe("n/a");
    expect(formatNumber(Number.POSITIVE_INFINITY)).toBe("∞");
  });

  it("escapes the five HTML-significant characters", () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe("&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  });
});

describe("inlineSvg", () => {
  it("prefixes ids and their references, and strips scripts and event handlers", () => {
    const svg =
      '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><defs><clipPath id="clip1"><rect/></clipPath></defs>' +
      '<script>alert(2)</script><g clip-path="url(#clip1)"><use href="#clip1"/><a href="javascript:alert(3)"><text>on=1</text></a></g></svg>';
    const out = inlineSvg(svg, "p-");
    expect(out.startsWith("<svg")).toBe(true);
    expect(out).not.toMatch(/<script|onload|javascript:|<\?xml/i);
    expect(out).toContain('id="p-clip1"');
    expect(out).toContain("url(#p-clip1)");
    expect(out).toContain('href="#p-clip1"');
    expect(out).toContain("<text>on=1</text>"); // text content untouched
    expect(() => inlineSvg("<div>nope</div>")).toThrow(/not an SVG/);
  });
});

describe("buildReport", () => {
  it("embeds the figures inline, formats numbers and escapes every user string", async () => {
    const evil = `<script>alert("x")</script>`;
    const scatter = await renderSvg(
      scatterSpec({ x: [0, 1, 2, 3], y: [3, 2, 1, 0], color: ["a", "b", "a", "b"], title: "umap", colorTitle: "type" }),
    );
    // the same SVG twice: both copies define the same gradient id (Vega numbers gradients per
    // process, so SVGs rendered by different runs collide the same way)
    const h1 = await renderSvg(heatmapSpec({ labels: ["a", "b"], matrix: [[1, 0], [0, 1]], title: "h1", normalize: "row" }));
    const h2 = h1;
    expect(h1).toMatch(/id="gradient_\d+"/);
    const html = buildReport({
      title: `Report ${evil}`,
      subtitle: "sub & title",
      sections: [
        {
          heading: `Integration ${evil}`,
          text: `line one\n${evil}`,
          metrics: { [`NMI ${evil}`]: 0.812345, ARI: Number.NaN, ASW: null, note: `<b>bold</b>` },
          table: {
            columns: ["label", `F1 ${evil}`],
            rows: [
              ["B <cell>", 0.91234],
              ["T cell", null],
            ],
          },
          figures: [
            { caption: `UMAP ${evil}`, svg: scatter },
            { caption: "cm 1", svg: h1 },
          ],
        },
        { heading: "Second", figures: [{ caption: "cm 2", svg: h2 }] },
      ],
      provenance: { checkpoint: `ckpt ${evil}`, gm: "0.1.0" },
    });

    // self-contained: no scripts, no external resources
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/<link|<img|\ssrc=|@import/i);
    expect(html.startsWith("<!DOCTYPE html>")).toBe(true);
    // every user string escaped
    expect(html).toContain("Report &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;");
    expect(html).toContain("sub &amp; title");
    expect(html).toContain("B &lt;cell&gt;");
    expect(html).toContain("&lt;b&gt;bold&lt;/b&gt;");
    // numbers
    expect(html).toContain(">0.8123<");
    expect(html).toContain(">0.9123<");
    expect(html).not.toMatch(/NaN|null/);
    expect((html.match(/>n\/a</g) ?? []).length).toBe(3); // ARI, ASW, the null F1

    // well-formed, with the three figures inline and their ids unique document-wide
    const root = parseXml(html);
    expect(root.name).toBe("html");
    const svgs = allNodes(root, "svg");
    expect(svgs.length).toBe(3);
    expect(countMarks(svgs[0], "mark-symbol")).toBe(4);
    expect(countMarks(svgs[1], "mark-rect")).toBe(4);
    const ids: string[] = [];
    walk(root, (n) => {
      if (n.attrs.id !== undefined) ids.push(n.attrs.id);
    });
    expect(new Set(ids).size).toBe(ids.length);
    const refs = Array.from(html.matchAll(/url\(#([^)]+)\)/g), (m) => m[1]);
    expect(refs.length).toBeGreaterThanOrEqual(2);
    for (const r of refs) expect(ids).toContain(r);
    expect(allNodes(root, "figcaption").map((f) => f.text)).toEqual([`UMAP ${evil}`, "cm 1", "cm 2"]);
  });

  it("rejects table rows of the wrong width", () => {
    expect(() =>
      buildReport({ title: "t", sections: [{ heading: "h", table: { columns: ["a", "b"], rows: [["x"]] } }] }),
    ).toThrow(/row 0/);
  });
});

describe("writeReport", () => {
  it("writes report.html and figures atomically, with PNGs when asked", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gm-report-"));
    tmpDirs.push(dir);
    const svg = await renderSvg(barSpec({ labels: ["a", "b"], values: [0.2, 0.7], title: "bars" }));
    const html = buildReport({ title: "r", sections: [{ heading: "h", figures: [{ caption: "c", svg }] }] });
    const out = writeReport(dir, html, [{ name: "f1-per-class", svg }, { name: "umap.celltype", svg }], { png: true });
    expect(out.html).toBe(path.join(dir, "report.html"));
    expect(fs.readFileSync(out.html, "utf8")).toBe(html);
    const figs = fs.readdirSync(path.join(dir, "figures")).sort();
    expect(figs).toEqual(["f1-per-class.png", "f1-per-class.svg", "umap.celltype.png", "umap.celltype.svg"]);
    expect(fs.readFileSync(path.join(dir, "figures", "f1-per-class.svg"), "utf8")).toBe(svg);
    const png = fs.readFileSync(path.join(dir, "figures", "umap.celltype.png"));
    expect(Array.from(png.subarray(0, 8))).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    // no temporaries left behind
    expect(fs.readdirSync(dir).sort()).toEqual(["figures", "report.html"]);

    const dir2 = fs.mkdtempSync(path.join(os.tmpdir(), "gm-report-"));
    tmpDirs.push(dir2);
    writeReport(dir2, html, [{ name: "only", svg }], { png: false });
    expect(fs.readdirSync(path.join(dir2, "figures"))).toEqual(["only.svg"]);
  });

  it("rejects unsafe or duplicate figure names before writing anything", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gm-report-"));
    tmpDirs.push(dir);
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>';
    expect(() => writeReport(dir, "<html/>", [{ name: "../escape", svg }], { png: false })).toThrow(/invalid figure name/);
    expect(() => writeReport(dir, "<html/>", [{ name: "a/b", svg }], { png: false })).toThrow(/invalid figure name/);
    expect(() => writeReport(dir, "<html/>", [{ name: "x", svg }, { name: "x", svg }], { png: false })).toThrow(/duplicate/);
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});
