import { describe, expect, it } from "vitest";
import { downsampleMinMax, lineChartSvg, type Series } from "@gm/train";

/**
 * A tiny XML well-formedness checker: one root element, balanced and properly nested tags,
 * quoted attributes without raw '<' or '&', no duplicate attributes, only known entities in text.
 */
function checkWellFormed(xml: string): { root: string; elements: Map<string, number> } {
  const elements = new Map<string, number>();
  const stack: string[] = [];
  let root = "";
  let closedRoot = false;
  const entity = /^&(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/;
  const tag = /<(\/?)([A-Za-z_][\w:.-]*)((?:\s+[A-Za-z_][\w:.-]*\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>/y;
  const attr = /([A-Za-z_][\w:.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g;
  let i = xml.startsWith("<?xml") ? xml.indexOf("?>") + 2 : 0;
  while (i < xml.length) {
    const c = xml[i];
    if (c === "<") {
      tag.lastIndex = i;
      const m = tag.exec(xml);
      if (!m) throw new Error(`malformed tag at ${i}: ${xml.slice(i, i + 40)}`);
      const [, close, name, attrs, selfClose] = m;
      if (close) {
        if (attrs.trim() || selfClose) throw new Error(`bad closing tag ${name}`);
        const open = stack.pop();
        if (open !== name) throw new Error(`</${name}> closes <${open}>`);
        if (!stack.length) closedRoot = true;
      } else {
        if (closedRoot || (!stack.length && root)) throw new Error(`content after the root element: <${name}>`);
        if (!root) root = name;
        const seen = new Set<string>();
        for (const a of attrs.matchAll(attr)) {
          if (seen.has(a[1])) throw new Error(`duplicate attribute ${a[1]} on <${name}>`);
          seen.add(a[1]);
          const v = a[2] ?? a[3] ?? "";
          for (let k = v.indexOf("&"); k >= 0; k = v.indexOf("&", k + 1))
            if (!entity.test(v.slice(k))) throw new Error(`raw & in attribute ${a[1]} of <${name}>`);
        }
        elements.set(name, (elements.get(name) ?? 0) + 1);
        if (!selfClose) stack.push(name);
        else if (!stack.length) closedRoot = true;
      }
      i = m.index + m[0].length;
    } else {
      if (c === "&" && !entity.test(xml.slice(i))) throw new Error(`raw & in text at ${i}`);
      if (c === ">") throw new Error(`raw > in text at ${i}`);
      if (!stack.length && c.trim()) throw new Error(`text outside the root element at ${i}`);
      i++;
    }
  }
  if (stack.length) throw new Error(`unclosed <${stack.join("> <")}>`);
  if (!root) throw new Error("no root element");
  return { root, elements };
}

const pathPoints = (svg: string) => [...svg.matchAll(/<path d="([^"]*)"/g)].map((m) => (m[1].match(/[ML]/g) ?? []).length);

describe("line chart SVG", () => {
  const loss: [number, number][] = Array.from({ length: 300 }, (_, i) => [i * 10, 8 * Math.exp(-i / 60) + 1.2]);
  const lr: [number, number][] = Array.from({ length: 300 }, (_, i) => [i * 10, 3e-4 * Math.min(1, i / 30)]);

  it("renders two axes, a legend and escaped text", () => {
    const svg = lineChartSvg({
      title: "Pretraining <run> & \"friends\"",
      xLabel: "step",
      leftLabel: "loss",
      rightLabel: "learning rate",
      series: [
        { name: "train loss", points: loss },
        { name: "val <loss>", points: loss.filter((_, i) => i % 50 === 0) },
        { name: "lr", points: lr, axis: "right" },
      ],
    });
    const { root, elements } = checkWellFormed(svg);
    expect(root).toBe("svg");
    expect(svg).toContain('xmlns="http://www.w3.org/2000/svg"');
    expect(elements.get("path")).toBe(3);
    expect(svg).toContain("train loss");
    expect(svg).toContain("val &lt;loss&gt;");
    expect(svg).toContain("lr (right)");
    expect(svg).toContain("Pretraining &lt;run&gt; &amp; &quot;friends&quot;");
    expect(svg).toContain(">learning rate</text>");
    // right axis: compact 1e-4 style labels on 1-2-5 steps
    expect(svg).toMatch(/>1e-4<\/text>/);
    expect(svg).toMatch(/>3e-4<\/text>/);
    // x axis: nice steps
    expect(svg).toMatch(/>1000<\/text>/);
    expect(svg).not.toMatch(/NaN|Infinity|undefined/);
  });

  it("is well-formed for no series, empty series, one point and non-finite points", () => {
    const variants: Series[][] = [
      [],
      [{ name: "loss", points: [] }],
      [{ name: "loss", points: [[5, 2.5]] }],
      [{ name: "lr", points: [[0, 0]], axis: "right" }],
      [{ name: "loss", points: [[0, NaN], [1, Infinity], [2, 3], [NaN, 1], [3, -Infinity], [4, 2]] }],
      [{ name: "all bad", points: [[0, NaN], [1, NaN]] }, { name: "lr", points: [[0, 1e-3], [1, 1e-3]], axis: "right" }],
    ];
    for (const series of variants) {
      for (const logLeft of [false, true]) {
        const svg = lineChartSvg({ title: "t", xLabel: "step", leftLabel: "loss", rightLabel: "lr", series, logLeft });
        expect(() => checkWellFormed(svg), JSON.stringify(series)).not.toThrow();
        expect(svg).not.toMatch(/NaN|Infinity|undefined/);
        for (const s of series) expect(svg).toContain(s.name);
      }
    }
    expect(lineChartSvg({ title: "t", xLabel: "x", leftLabel: "y", series: [] })).toContain("no data");
    const one = lineChartSvg({ title: "t", xLabel: "x", leftLabel: "y", series: [{ name: "loss", points: [[5, 2.5]] }] });
    expect(checkWellFormed(one).elements.get("circle")).toBe(1);
    const gaps = lineChartSvg({ title: "t", xLabel: "x", leftLabel: "y", series: [{ name: "loss", points: [[0, NaN], [1, 3], [2, Infinity], [3, 2]] }] });
    expect(pathPoints(gaps)).toEqual([2]);
  });

  it("log left axis: decade ticks, non-positive values skipped", () => {
    const pts: [number, number][] = [[0, 0], [1, -1], ...Array.from({ length: 50 }, (_, i) => [i + 2, 10 ** (2 - i / 10)] as [number, number])];
    const svg = lineChartSvg({ title: "t", xLabel: "x", leftLabel: "loss", series: [{ name: "loss", points: pts }], logLeft: true });
    checkWellFormed(svg);
    expect(pathPoints(svg)).toEqual([50]);
    expect(svg).toMatch(/>100<\/text>/);
    expect(svg).toMatch(/>1e-3<\/text>/);
  });

  it("downsamples long series to at most ~2,000 points and keeps spikes", () => {
    const n = 100_000;
    const pts: [number, number][] = Array.from({ length: n }, (_, i) => [i, Math.sin(i / 1000)]);
    pts[54_321] = [54_321, 50]; // a loss spike
    pts[77_777] = [77_777, -50];
    const d = downsampleMinMax(pts);
    expect(d.length).toBeLessThanOrEqual(2000);
    expect(d.length).toBeGreaterThan(1900);
    expect(d[0]).toBe(pts[0]);
    expect(d[d.length - 1]).toBe(pts[n - 1]);
    expect(d).toContainEqual([54_321, 50]);
    expect(d).toContainEqual([77_777, -50]);
    for (let i = 1; i < d.length; i++) expect(d[i][0]).toBeGreaterThan(d[i - 1][0]);
    expect(downsampleMinMax(pts.slice(0, 1500))).toHaveLength(1500);

    const svg = lineChartSvg({ title: "long", xLabel: "step", leftLabel: "loss", series: [{ name: "loss", points: pts }] });
    checkWellFormed(svg);
    const [count] = pathPoints(svg);
    expect(count).toBeLessThanOrEqual(2000);
    expect(svg.length).toBeLessThan(100_000);
    expect(svg).toMatch(/>60<\/text>/); // the spikes (±50) set the axis range
    expect(svg).toMatch(/>-60<\/text>/);
  });

  it("formats large x values compactly and honours width/height", () => {
    const svg = lineChartSvg({
      title: "t",
      xLabel: "tokens",
      leftLabel: "loss",
      series: [{ name: "loss", points: [[0, 3], [2_000_000, 2]] }],
      width: 600,
      height: 300,
    });
    checkWellFormed(svg);
    expect(svg).toContain('width="600" height="300" viewBox="0 0 600 300"');
    expect(svg).toMatch(/>500k<\/text>/);
    expect(svg).toMatch(/>2M<\/text>/);
  });

  it("the checker itself rejects broken XML", () => {
    expect(() => checkWellFormed("<svg><g></svg>")).toThrow();
    expect(() => checkWellFormed("<svg><text>a & b</text></svg>")).toThrow();
    expect(() => checkWellFormed('<svg a="1" a="2"/>')).toThrow();
    expect(() => checkWellFormed("<svg></svg><svg></svg>")).toThrow();
  });
});
