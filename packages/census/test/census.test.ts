import { describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import type { Logger } from "@gm/core";
import {
  backoffMs,
  buildPlan,
  CellxgeneApi,
  datasetPaths,
  declaredSha256,
  displayText,
  filterReason,
  formatBytes,
  isRetryable,
  isSafeId,
  HttpStatusError,
  linkNext,
  listingPage,
  Manifest,
  matchesTerms,
  normalizeDataset,
  NO_FILTERS,
  parseContentRange,
  parseIdList,
  parseRetryAfter,
  parseSize,
  schemaMatches,
  TransientError,
} from "../dist/index.js";
import { tmpDir } from "../../../tests/helpers/paths.js";

describe("sizes", () => {
  it("parses decimal and binary units like coreutils", () => {
    expect(parseSize("500GB")).toBe(500e9);
    expect(parseSize("1.5TiB")).toBe(1.5 * 2 ** 40);
    expect(parseSize("1.5 tib")).toBe(1.5 * 2 ** 40);
    expect(parseSize("750M")).toBe(750 * 2 ** 20);
    expect(parseSize("10kB")).toBe(10_000);
    expect(parseSize("1234")).toBe(1234);
    expect(parseSize("1e9")).toBe(1e9);
    expect(parseSize("2 B")).toBe(2);
    for (const bad of ["", "GB", "5XB", "-1GB", "1,5GB", "1.2.3"]) expect(parseSize(bad), bad).toBeUndefined();
  });
  it("formats sizes", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(575_672)).toBe("576 kB");
    expect(formatBytes(2_302_990)).toBe("2.30 MB");
    expect(formatBytes(1.5e12)).toBe("1.50 TB");
  });
});

describe("retries", () => {
  const policy = { baseMs: 100, maxMs: 1000 };
  it("backs off exponentially with jitter, capped, never below Retry-After", () => {
    expect(backoffMs(1, policy, undefined, () => 0)).toBe(50);
    expect(backoffMs(1, policy, undefined, () => 1)).toBe(100);
    expect(backoffMs(3, policy, undefined, () => 1)).toBe(400);
    expect(backoffMs(30, policy, undefined, () => 1)).toBe(1000);
    expect(backoffMs(30, policy, undefined, () => 0)).toBe(500);
    expect(backoffMs(1, policy, 5000, () => 0.5)).toBe(5000);
    expect(backoffMs(1, policy, 10 * 3_600_000, () => 0.5)).toBe(3_600_000); // a broken header cannot park us for days
    const spread = new Set(Array.from({ length: 50 }, () => backoffMs(4, policy)));
    expect(spread.size).toBeGreaterThan(10);
  });
  it("reads Retry-After as seconds or an HTTP date", () => {
    expect(parseRetryAfter("3")).toBe(3000);
    expect(parseRetryAfter(null)).toBeUndefined();
    expect(parseRetryAfter("soon")).toBeUndefined();
    const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT");
    expect(parseRetryAfter("Wed, 21 Oct 2015 07:28:30 GMT", now)).toBe(30_000);
  });
  it("retries network errors, 408/429/5xx and transient checks, not other 4xx", () => {
    expect(isRetryable(new HttpStatusError(503, "", "u"))).toBe(true);
    expect(isRetryable(new HttpStatusError(429, "", "u"))).toBe(true);
    expect(isRetryable(new HttpStatusError(404, "", "u"))).toBe(false);
    expect(isRetryable(new HttpStatusError(403, "", "u"))).toBe(false);
    expect(isRetryable(new TransientError("size mismatch"))).toBe(true);
    expect(isRetryable(new TypeError("fetch failed", { cause: Object.assign(new Error("x"), { code: "ECONNRESET" }) }))).toBe(true);
    expect(isRetryable(new TypeError("terminated"))).toBe(true);
    expect(isRetryable(Object.assign(new Error("no space"), { code: "ENOSPC" }))).toBe(false);
  });
  it("parses Content-Range and declared sha256 digests", () => {
    expect(parseContentRange("bytes 100-199/200")).toEqual({ start: 100, end: 199, total: 200 });
    expect(parseContentRange("bytes 0-9/*")).toEqual({ start: 0, end: 9, total: undefined });
    expect(parseContentRange("items 1-2/3")).toBeUndefined();
    const sum = createHash("sha256").update("abc").digest();
    const hex = sum.toString("hex");
    expect(declaredSha256(new Headers({ "repr-digest": `sha-512=:AAAA:, sha-256=:${sum.toString("base64")}:` }), 206)).toBe(hex);
    expect(declaredSha256(new Headers({ digest: `SHA-256=${sum.toString("base64")}` }), 200)).toBe(hex);
    expect(declaredSha256(new Headers({ digest: `SHA-256=${sum.toString("base64")}` }), 206)).toBeUndefined();
    expect(declaredSha256(new Headers({ "x-amz-checksum-sha256": sum.toString("base64") }), 200)).toBe(hex);
    expect(declaredSha256(new Headers({ "x-amz-checksum-sha256": `${sum.toString("base64")}-3` }), 200)).toBeUndefined();
  });
});

describe("ids and paths", () => {
  it("accepts UUID-like ids only and keeps every path inside OUT", () => {
    expect(isSafeId("0aab20b3-c30c-4606-bd2e-d20dae739c45")).toBe(true);
    for (const bad of ["", "..", ".", "../x", "a/b", "a\\b", "/abs", "C:x", "a b", "é", "-x", "a\u0000b", "x".repeat(129)]) {
      expect(isSafeId(bad), bad).toBe(false);
      expect(() => datasetPaths("/out", bad, "v1")).toThrow(/unsafe dataset_id|missing dataset_id/);
      expect(() => datasetPaths("/out", "d1", bad)).toThrow(/unsafe dataset_version_id|missing dataset_version_id/);
    }
    const p = datasetPaths("/data/out", "d1", "v1");
    expect(p).toMatchObject({ dir: "/data/out/d1", final: "/data/out/d1/v1.h5ad", part: "/data/out/d1/.v1.h5ad.part", relative: "d1/v1.h5ad" });
  });
  it("strips terminal control characters from API text", () => {
    expect(displayText("a\u001b[31mred\nb\u009bc")).toBe("a?[31mred?b?c");
    expect(displayText("x".repeat(300), 10)).toBe(`${"x".repeat(9)}…`);
  });
  it("reads ids files", () => {
    expect(parseIdList("# c\nab-1\n\n  cd-2  # note\nab-1\n../x\n")).toEqual({ ids: ["ab-1", "cd-2"], invalid: [{ line: 6, text: "../x" }] });
  });
});

describe("API records and filters", () => {
  const d = normalizeDataset({
    dataset_id: "d1",
    dataset_version_id: "v1",
    title: "T",
    organism: [{ label: "Homo sapiens", ontology_term_id: "NCBITaxon:9606" }],
    assay: [
      { label: "10x 3' v2", ontology_term_id: "EFO:0009899" },
      { label: "10x 3' v3", ontology_term_id: "EFO:0009922" },
    ],
    tissue: [{ label: "lung", ontology_term_id: "UBERON:0002048", tissue_type: "tissue" }],
    disease: [{ label: "normal", ontology_term_id: "PATO:0000461" }],
    cell_count: 1500,
    schema_version: "5.2.0",
    is_primary_data: [false, true],
    assets: [
      { filetype: "RDS", filesize: 10, url: "https://x/v1.rds" },
      { filetype: "H5AD", filesize: 20, url: "https://x/v1.h5ad" },
    ],
  });
  it("normalises records and tolerates junk", () => {
    expect(d).toMatchObject({ dataset_id: "d1", cell_count: 1500, is_primary_data: [false, true], tombstone: false });
    const junk = normalizeDataset({ dataset_id: 5, organism: "Homo sapiens", assay: null, cell_count: "x", assets: [null, { filesize: -1 }], is_primary_data: true });
    expect(junk).toMatchObject({ dataset_id: "5", organism: [{ label: "Homo sapiens", ontology_term_id: "" }], assay: [], cell_count: null, is_primary_data: [true] });
    expect(junk.assets).toEqual([{ filetype: "", filesize: undefined, url: "" }]);
    expect(normalizeDataset(null).dataset_id).toBe("");
  });
  it("matches labels case-insensitively or ontology ids, any value, several wanted values", () => {
    expect(matchesTerms(d.assay, ["10X 3' V3"])).toBe(true);
    expect(matchesTerms(d.assay, ["efo:0009899"])).toBe(true);
    expect(matchesTerms(d.assay, ["Smart-seq2", "EFO:0009922"])).toBe(true);
    expect(matchesTerms(d.assay, ["Smart-seq2"])).toBe(false);
    expect(matchesTerms(d.assay, [])).toBe(true);
    expect(schemaMatches("5.2.0", "5")).toBe(true);
    expect(schemaMatches("5.2.0", "5.2")).toBe(true);
    expect(schemaMatches("5.2.0", "5.2.0")).toBe(true);
    expect(schemaMatches("5.2.0", "5.20")).toBe(false);
    expect(schemaMatches("5.2", "5.2.0")).toBe(false);
    expect(filterReason(d, { ...NO_FILTERS, minCells: 2000 })).toMatch(/1,500 cells, fewer than --min-cells 2,000/);
    expect(filterReason(d, { ...NO_FILTERS, organism: ["Mus musculus"] })).toMatch(/organism is Homo sapiens, not Mus musculus/);
    expect(filterReason(d, { ...NO_FILTERS, primaryOnly: true })).toBeUndefined();
    expect(filterReason({ ...d, is_primary_data: [false] }, { ...NO_FILTERS, primaryOnly: true })).toMatch(/no primary data/);
  });
  it("plans budgets oldest first and reports skips and errors", () => {
    const mk = (i: number, extra: Record<string, unknown> = {}) =>
      normalizeDataset({ dataset_id: `d${i}`, dataset_version_id: `v${i}`, published_at: `202${i}-01-01`, cell_count: 100 * i, assets: [{ filetype: "H5AD", filesize: 1000 * i, url: `https://x/v${i}.h5ad` }], ...extra });
    const datasets = [mk(3), mk(1), mk(2), mk(4, { tombstone: true }), mk(5, { assets: [] }), mk(6, { dataset_id: "../6" }), mk(7, { assets: [{ filetype: "H5AD", filesize: 5, url: "file:///etc/passwd" }] }), mk(1)];
    const plan = buildPlan({ datasets, source: "s", filters: NO_FILTERS, budgets: { maxBytes: 4500 } });
    expect(plan.items.map((i) => [i.action, i.dataset_id])).toEqual([
      ["fetch", "d1"],
      ["fetch", "d2"],
      ["skip", "d1"],
      ["skip", "d3"],
      ["skip", "d4"],
      ["skip", "d5"],
      ["error", "../6"],
      ["error", "d7"],
    ]);
    expect(plan.items[3].reason).toMatch(/would exceed --max-bytes/);
    expect(plan.totals).toMatchObject({ listed: 8, selected: { datasets: 2, bytes: 3000, cells: 300 }, skipped: 4, errors: 2 });
    const two = buildPlan({ datasets, source: "s", filters: NO_FILTERS, budgets: { maxDatasets: 1 } });
    expect(two.items.filter((i) => i.action === "fetch").map((i) => i.dataset_id)).toEqual(["d1"]);
  });
});

describe("listings", () => {
  it("reads arrays, Link headers, next URLs and page tokens", () => {
    expect(linkNext('<https://a/x?page=2>; rel="next", <https://a/x?page=9>; rel="last"')).toBe("https://a/x?page=2");
    expect(linkNext('<https://a/x?page=1>; rel="prev"')).toBeUndefined();
    const base = "https://api/curation/v1/datasets";
    expect(listingPage([1, 2], new Headers(), base, "w")).toEqual({ items: [1, 2], next: undefined });
    expect(listingPage([1], new Headers({ link: "</curation/v1/datasets?p=2>; rel=next" }), base, "w")).toEqual({ items: [1], next: "https://api/curation/v1/datasets?p=2" });
    expect(listingPage({ datasets: [1], next: "?page=2" }, undefined, base, "w")).toEqual({ items: [1], next: "https://api/curation/v1/datasets?page=2" });
    expect(listingPage({ items: [1], next_page_token: "abc" }, undefined, `${base}?schema_version=5`, "w")).toEqual({ items: [1], next: `${base}?schema_version=5&page_token=abc` });
    expect(listingPage({ results: [], next: null }, undefined, base, "w")).toEqual({ items: [] });
    expect(() => listingPage({ detail: "oops" }, undefined, base, "w")).toThrow(/holds no list/);
    expect(() => listingPage("text", undefined, base, "w")).toThrow(/expected a JSON array or object/);
  });
});

const quiet = { warn() {}, info() {}, debug() {}, error() {}, child() { return quiet; } } as unknown as Logger;

describe("API client", () => {
  it("lists datasets across Link-header pages with a retried 503, and reads collections and datasets", async () => {
    const seen: string[] = [];
    let fails = 1;
    const server = http.createServer((req, res) => {
      seen.push(`${req.url} ${req.headers["user-agent"]?.split("/")[0]}`);
      const send = (body: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(200, { "content-type": "application/json", ...headers });
        res.end(JSON.stringify(body));
      };
      if (req.url === "/v1/datasets?schema_version=5") return send([{ dataset_id: "d1", assets: [] }], { link: '</v1/datasets?schema_version=5&page=2>; rel="next"' });
      if (req.url === "/v1/datasets?schema_version=5&page=2") {
        if (fails-- > 0) {
          res.writeHead(503, { "retry-after": "0" });
          return void res.end();
        }
        return send([{ dataset_id: "d2", organism: [{ label: "Homo sapiens", ontology_term_id: "NCBITaxon:9606" }] }]);
      }
      if (req.url === "/v1/collections?visibility=PUBLIC") return send([{ collection_id: "c1", name: "C one" }]);
      if (req.url === "/v1/collections/c1") return send({ collection_id: "c1", name: "C one", datasets: [{ dataset_id: "d3" }] });
      if (req.url === "/v1/collections/c1/datasets/d3") return send({ dataset_id: "d3", dataset_version_id: "v3", collection_id: "c1" });
      res.writeHead(404);
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/`;
      const api = new CellxgeneApi(base, { retries: 2, baseMs: 1, maxMs: 5, stallMs: 5000 }, quiet);
      const l = await api.listDatasets("5");
      expect(l.datasets.map((d) => d.dataset_id)).toEqual(["d1", "d2"]);
      expect(l.pages).toBe(2);
      expect(l.datasets[1].organism[0].ontology_term_id).toBe("NCBITaxon:9606");
      expect((await api.listCollections()).map((c) => c.collection_id)).toEqual(["c1"]);
      expect(((await api.getCollection("c1")).datasets as unknown[]).length).toBe(1);
      expect(await api.getDataset("c1", "d3")).toMatchObject({ dataset_id: "d3", dataset_version_id: "v3", collection_id: "c1" });
      const via = await api.listDatasetsViaCollections();
      expect(via.datasets.map((d) => [d.dataset_id, d.collection_id, d.collection_name])).toEqual([["d3", "c1", "C one"]]);
      expect(seen.filter((s) => s.includes("page=2"))).toEqual(["/v1/datasets?schema_version=5&page=2 gm", "/v1/datasets?schema_version=5&page=2 gm"]);
      await expect(api.getDataset("c1", "nope")).rejects.toThrow(/HTTP 404/);
    } finally {
      server.close();
    }
  });
});

describe("manifest", () => {
  const entry = (v: string, sha = "aa") => ({
    dataset_id: `d-${v}`,
    dataset_version_id: v,
    title: "t",
    collection_id: "c",
    collection_name: "cn",
    organism: [],
    assay: [],
    tissue: [],
    disease: [],
    cell_count: 1,
    schema_version: "5",
    bytes: 10,
    sha256: sha,
    url: "u",
    path: `d-${v}/${v}.h5ad`,
    fetched_at: "2024-01-01T00:00:00.000Z",
  });
  it("appends, replaces a refetched version, and repairs a line cut by a crash", () => {
    const dir = tmpDir("gm-census-unit-");
    const m = Manifest.load(dir);
    expect(m.size).toBe(0);
    m.record(entry("v1"));
    m.record(entry("v2"));
    m.record(entry("v1", "bb"));
    const lines = () => fs.readFileSync(path.join(dir, "manifest.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(lines().map((l) => [l.dataset_version_id, l.sha256])).toEqual([
      ["v1", "bb"],
      ["v2", "aa"],
    ]);
    fs.appendFileSync(path.join(dir, "manifest.jsonl"), JSON.stringify(entry("v2", "cc")) + "\n" + '{"dataset_id":"d-v3","datas');
    const m2 = Manifest.load(dir);
    expect(m2.dropped).toBe(2);
    expect(m2.get("v2")?.sha256).toBe("cc");
    expect(m2.repair()).toBe(true);
    m2.record(entry("v3"));
    expect(lines().map((l) => [l.dataset_version_id, l.sha256])).toEqual([
      ["v1", "bb"],
      ["v2", "cc"],
      ["v3", "aa"],
    ]);
    expect(m2.remove("v1")).toBe(true);
    expect(Manifest.load(dir).entries().map((e) => e.dataset_version_id)).toEqual(["v2", "v3"]);
    expect(fs.readdirSync(dir)).toEqual(["manifest.jsonl"]);
  });
});
