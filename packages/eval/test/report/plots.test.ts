import { describe, expect, it } from "vitest";
import {
  barSpec,
  categoricalPalette,
  heatmapCells,
  heatmapSpec,
  histogramBins,
  histogramSpec,
  lineSpec,
  renderPng,
  renderSvg,
  scatterSpec,
} from "../../src/report/index.js";
import { countMarks, groupsWithClass, parseXml, texts } from "./svg.js";

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function pngSize(png: Buffer): { width: number; height: number } {
  // IHDR is the first chunk: 8-byte signature, 4-byte length, "IHDR", width, height
  expect(png.subarray(12, 16).toString("latin1")).toBe("IHDR");
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

describe("scatterSpec", () => {
  it("renders one symbol per finite point with a legend entry per category", async () => {
    const n = 300;
    const x: number[] = [];
    const y: number[] = [];
    const color: string[] = [];
    for (let i = 0; i < n; i++) {
      x.push(Math.cos(i));
      y.push(Math.sin(i * 1.3));
      color.push(`type ${i % 4}`);
    }
    x[7] = Number.NaN; // dropped
    const svg = await renderSvg(scatterSpec({ x, y, color, title: "UMAP <cells>", colorTitle: "cell type" }));
    const root = parseXml(svg);
    expect(root.name).toBe("svg");
    expect(countMarks(root, "mark-symbol")).toBe(n - 1);
    expect(countMarks(root, "mark-symbol", "role-legend-symbol")).toBe(4);
    const t = texts(root);
    expect(t).toContain("UMAP <cells>"); // parsed text: vega escaped it in the SVG
    expect(svg).toContain("UMAP &lt;cells&gt;");
    expect(t).toContain("cell type");
    // natural order of categories in the legend
    const legendLabels = groupsWithClass(root, "mark-text", "role-legend-label").flatMap((g) => g.children.map((c) => c.text));
    expect(legendLabels).toEqual(["type 0", "type 1", "type 2", "type 3"]);
  });

  it("still works beyond 20 categories, with distinct colours and every category in the legend", async () => {
    const n = 600;
    const cats = 25;
    const x = Float32Array.from({ length: n }, (_, i) => i % 37);
    const y = Float32Array.from({ length: n }, (_, i) => (i * 7) % 41);
    const color = Array.from({ length: n }, (_, i) => `c${i % cats}`);
    const spec = scatterSpec({ x, y, color, title: "many", colorTitle: "cluster" });
    const svg = await renderSvg(spec);
    const root = parseXml(svg);
    expect(countMarks(root, "mark-symbol")).toBe(n);
    expect(countMarks(root, "mark-symbol", "role-legend-symbol")).toBe(cats);
    const fills = new Set<string>();
    for (const g of groupsWithClass(root, "mark-symbol", "role-mark")) for (const p of g.children) fills.add(p.attrs.fill);
    expect(fills.size).toBe(cats);
    const pal = categoricalPalette(cats);
    expect("range" in pal && new Set(pal.range).size).toBe(cats);
    expect(categoricalPalette(8)).toEqual({ scheme: "tableau10" });
  });

  it("rejects mismatched lengths", () => {
    expect(() => scatterSpec({ x: [1, 2], y: [1], color: ["a", "b"], title: "", colorTitle: "" })).toThrow(/same length/);
  });
});

describe("heatmapSpec", () => {
  const labels = ["B cell", "T cell", "NK"];
  const matrix = [
    [8, 2, 0],
    [1, 9, 0],
    [0, 0, 0],
  ];

  it("row-normalises colours and keeps counts", () => {
    const cells = heatmapCells({ labels, matrix, title: "cm", normalize: "row" });
    expect(cells.length).toBe(9);
    const row0 = cells.filter((c) => c.t === "B cell");
    expect(row0.map((c) => c.value)).toEqual([0.8, 0.2, 0]);
    expect(row0.map((c) => c.count)).toEqual([8, 2, 0]);
    // an empty true class gives zeros, not NaN
    expect(cells.filter((c) => c.t === "NK").every((c) => c.value === 0)).toBe(true);
  });

  it("draws L² cells with counts as text and axis titles true/predicted", async () => {
    const svg = await renderSvg(heatmapSpec({ labels, matrix, title: "confusion", normalize: "row" }));
    const root = parseXml(svg);
    expect(countMarks(root, "mark-rect")).toBe(9);
    expect(countMarks(root, "mark-text")).toBe(9);
    const t = texts(root);
    expect(t).toContain("true");
    expect(t).toContain("predicted");
    expect(t.filter((s) => s === "8").length).toBe(1);
    expect(t.filter((s) => s === "9").length).toBe(1);
  });

  it("omits the count text above 30 classes", async () => {
    const L = 31;
    const big = Array.from({ length: L }, (_, i) => Array.from({ length: L }, (_, j) => (i === j ? 5 : 1)));
    const names = Array.from({ length: L }, (_, i) => `class ${i}`);
    const spec = heatmapSpec({ labels: names, matrix: big, title: "big" });
    const root = parseXml(await renderSvg(spec));
    expect(countMarks(root, "mark-rect")).toBe(L * L);
    expect(countMarks(root, "mark-text")).toBe(0);
  });

  it("validates its input", () => {
    expect(() => heatmapSpec({ labels: ["a", "b"], matrix: [[1, 2]], title: "" })).toThrow(/2 × 2/);
    expect(() => heatmapSpec({ labels: ["a", "a"], matrix: [[1, 2], [3, 4]], title: "" })).toThrow(/distinct/);
  });
});

describe("histogramSpec", () => {
  it("bins like numpy with density normalisation over the extent", () => {
    const bins = histogramBins({
      series: [
        { name: "a", values: [-1, -0.99, 0, 0.5, 1, 1.5, Number.NaN] }, // 1.5 and NaN ignored
        { name: "b", values: Float64Array.from({ length: 1000 }, (_, i) => -1 + (2 * i) / 999) },
      ],
      title: "h",
      bins: 50,
      extent: [-1, 1],
    });
    expect(bins.length).toBe(100);
    const a = bins.filter((b) => b.series === "a");
    expect(a.reduce((s, b) => s + b.count, 0)).toBe(5);
    expect(a[0].count).toBe(2); // -1 and -0.99 share the first bin [-1, -0.96)
    expect(a[49].count).toBe(1); // the right edge 1 falls in the last, closed bin
    for (const name of ["a", "b"]) {
      const integral = bins.filter((b) => b.series === name).reduce((s, b) => s + b.density * (b.x1 - b.x0), 0);
      expect(integral).toBeCloseTo(1, 10);
    }
  });

  it("renders bins × series bars", async () => {
    const spec = histogramSpec({
      series: [
        { name: "cell type", values: [0.1, 0.2, 0.3] },
        { name: "batch", values: [-0.2, 0] },
      ],
      title: "silhouette",
      bins: 20,
    });
    const root = parseXml(await renderSvg(spec));
    expect(countMarks(root, "mark-rect")).toBe(40);
  });
});

describe("lineSpec and barSpec", () => {
  it("draws one line per series and drops non-finite points", async () => {
    const spec = lineSpec({
      series: [
        { name: "train", x: [1, 2, 3, 4], y: [4, 3, 2.5, 2] },
        { name: "valid", x: [1, 2, 3, 4], y: [4.2, Number.NaN, 3, 2.8] },
      ],
      title: "loss",
      xTitle: "step",
      yTitle: "loss",
    });
    const root = parseXml(await renderSvg(spec));
    expect(countMarks(root, "mark-line")).toBe(2);
    const t = texts(root);
    expect(t).toContain("step");
    expect(t).toContain("loss");
    expect(() => lineSpec({ series: [{ name: "a", x: [1], y: [] }], title: "", xTitle: "", yTitle: "" })).toThrow(/differ/);
  });

  it("draws a bar and a value label per finite value, keeping n/a labels on the axis", async () => {
    const spec = barSpec({ labels: ["B", "T", "NK"], values: [0.91234, null, 0.5], title: "F1 per class" });
    const root = parseXml(await renderSvg(spec));
    expect(countMarks(root, "mark-rect")).toBe(2);
    expect(countMarks(root, "mark-text")).toBe(2);
    const t = texts(root);
    expect(t).toContain("0.9123");
    expect(t).toContain("NK");
    expect(t).toContain("T");
  });
});

describe("renderPng", () => {
  it("produces a PNG scaled from the SVG size, with or without system fonts", async () => {
    const svg = await renderSvg(barSpec({ labels: ["a", "b"], values: [1, 2], title: "t" }));
    const root = parseXml(svg);
    const w = Number(root.attrs.width);
    const h = Number(root.attrs.height);
    const png = renderPng(svg, { scale: 2 });
    expect(Array.from(png.subarray(0, 8))).toEqual(PNG_SIGNATURE);
    expect(pngSize(png)).toEqual({ width: 2 * w, height: 2 * h });
    // no fonts at all: text is skipped, nothing throws
    const bare = renderPng(svg, { scale: 1, loadSystemFonts: false });
    expect(Array.from(bare.subarray(0, 8))).toEqual(PNG_SIGNATURE);
    expect(pngSize(bare)).toEqual({ width: w, height: h });
    expect(() => renderPng(svg, { scale: 0 })).toThrow(/scale/);
  });
});
