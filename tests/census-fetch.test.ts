/**
 * gm census-fetch end to end: the real binary against a local HTTP server (127.0.0.1, random port)
 * that serves the curation API's JSON shapes and real h5ad bytes from ../shared/data/h5ad, with
 * injectable faults (cut connections, 5xx, 429 + Retry-After, 404, wrong sizes, corrupt bytes,
 * throttling). The binary runs through async spawn: spawnSync would block the server in this process.
 */
import { afterEach, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { errorLines, type GmResult } from "./helpers/cli.js";
import { gmBin, hasShared, repoRoot, shared, tmpDir } from "./helpers/paths.js";

// ---------------------------------------------------------------- the fake curation API + file host

type Fault =
  | { kind: "status"; status: number; retryAfter?: string }
  | { kind: "cut"; after: number } // send the headers and `after` body bytes, then drop the socket
  | { kind: "short"; bytes: number } // a complete 200 with a wrong Content-Length (fewer bytes)
  | { kind: "long"; extra: number } // a chunked 200 with extra bytes
  | { kind: "corrupt" }; // right size, one byte flipped, Repr-Digest of the real bytes

interface Served {
  name: string;
  method: string;
  range?: string;
  ifRange?: string;
  ua?: string;
  status: number;
  at: number;
}

interface ServerOptions {
  /** API records; "BASE" in strings is replaced by the server's origin */
  datasets: Record<string, unknown>[];
  /** file name (as in the asset URL /files/<name>) -> bytes */
  files: Map<string, Buffer>;
  /** page size: serve /datasets as {datasets, next} pages */
  paginate?: number;
  /** /datasets answers 404; /collections has the records */
  collectionsOnly?: boolean;
  /** send each file in chunks of this size with a delay between them */
  throttle?: { chunk: number; delayMs: number };
  /** send Repr-Digest on good answers */
  digests?: boolean;
}

class FakeCellxgene {
  readonly faults = new Map<string, Fault[]>();
  /** faults applied to every request of a file */
  readonly always = new Map<string, Fault>();
  readonly log: Served[] = [];
  readonly apiLog: { url: string; ua?: string }[] = [];
  onFileRequest?: (name: string, n: number) => void;
  private server!: http.Server;
  origin = "";

  constructor(readonly o: ServerOptions) {}

  get apiUrl(): string {
    return `${this.origin}/curation/v1`;
  }

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e) => {
        res.destroy(e as Error);
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.origin = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  fileRequests(name: string): Served[] {
    return this.log.filter((r) => r.name === name);
  }

  private json(res: http.ServerResponse, body: unknown, status = 200): void {
    const text = JSON.stringify(body).replaceAll("BASE", this.origin);
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
    res.end(text);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.origin);
    const ua = req.headers["user-agent"];
    if (url.pathname.startsWith("/curation/v1/")) {
      this.apiLog.push({ url: url.pathname + url.search, ua });
      const route = url.pathname.slice("/curation/v1".length);
      const all = this.o.datasets;
      if (route === "/datasets") {
        if (this.o.collectionsOnly) return this.json(res, { detail: "not found" }, 404);
        if (!this.o.paginate) return this.json(res, all);
        const page = Number(url.searchParams.get("page") ?? "0");
        const items = all.slice(page * this.o.paginate, (page + 1) * this.o.paginate);
        const more = (page + 1) * this.o.paginate < all.length;
        return this.json(res, { datasets: items, next: more ? `/curation/v1/datasets?page=${page + 1}` : null });
      }
      if (route === "/collections") {
        const ids = [...new Set(all.map((d) => String(d.collection_id)))];
        return this.json(res, ids.map((id) => ({ collection_id: id, name: `collection ${id}` })));
      }
      const m = /^\/collections\/([^/]+)$/.exec(route);
      if (m) {
        const ds = all.filter((d) => d.collection_id === m[1]).map((d) => ({ ...d, collection_id: undefined, collection_name: undefined }));
        return this.json(res, { collection_id: m[1], name: `collection ${m[1]}`, datasets: ds });
      }
      return this.json(res, { detail: "not found" }, 404);
    }
    const fm = /^\/files\/(.+)$/.exec(url.pathname);
    const name = fm ? decodeURIComponent(fm[1]) : "";
    const bytes = this.o.files.get(name);
    const n = this.log.filter((r) => r.name === name).length;
    this.onFileRequest?.(name, n);
    const entry: Served = { name, method: req.method ?? "GET", range: req.headers.range, ifRange: req.headers["if-range"] as string | undefined, ua, status: 0, at: Date.now() };
    this.log.push(entry);
    if (!bytes) {
      entry.status = 404;
      res.writeHead(404, { "content-type": "text/plain" });
      return void res.end("no such file");
    }
    const fault = this.faults.get(name)?.shift() ?? this.always.get(name);
    const etag = `"${createHash("sha256").update(bytes).digest("hex").slice(0, 16)}"`;
    const digest = `sha-256=:${createHash("sha256").update(bytes).digest("base64")}:`;
    if (fault?.kind === "status") {
      entry.status = fault.status;
      res.writeHead(fault.status, fault.retryAfter ? { "retry-after": fault.retryAfter } : {});
      return void res.end("failure");
    }
    if (fault?.kind === "short") {
      entry.status = 200;
      res.writeHead(200, { "content-length": fault.bytes, etag });
      return void res.end(bytes.subarray(0, fault.bytes));
    }
    if (fault?.kind === "long") {
      entry.status = 200;
      res.writeHead(200, { etag }); // chunked: no length announced
      res.write(bytes);
      return void res.end(Buffer.alloc(fault.extra, 7));
    }
    if (fault?.kind === "corrupt") {
      entry.status = 200;
      const bad = Buffer.from(bytes);
      bad[bad.length >> 1] ^= 0xff;
      res.writeHead(200, { "content-length": bad.length, etag, "repr-digest": digest });
      return void res.end(bad);
    }
    let start = 0;
    const range = req.headers.range;
    const rangeOk = range && (!req.headers["if-range"] || req.headers["if-range"] === etag);
    const headers: http.OutgoingHttpHeaders = { etag, "accept-ranges": "bytes" };
    if (this.o.digests) headers["repr-digest"] = digest;
    if (range && rangeOk) {
      const rm = /^bytes=(\d+)-$/.exec(range);
      start = rm ? Number(rm[1]) : 0;
      if (start >= bytes.length) {
        entry.status = 416;
        res.writeHead(416, { "content-range": `bytes */${bytes.length}` });
        return void res.end();
      }
      entry.status = 206;
      res.writeHead(206, { ...headers, "content-range": `bytes ${start}-${bytes.length - 1}/${bytes.length}`, "content-length": bytes.length - start });
    } else {
      entry.status = 200;
      res.writeHead(200, { ...headers, "content-length": bytes.length });
    }
    const body = bytes.subarray(start);
    if (fault?.kind === "cut") {
      res.write(body.subarray(0, fault.after), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    if (this.o.throttle) {
      for (let i = 0; i < body.length; i += this.o.throttle.chunk) {
        if (res.destroyed) return;
        const ok = res.write(body.subarray(i, i + this.o.throttle.chunk));
        if (!ok) await new Promise((r) => res.once("drain", r));
        await new Promise((r) => setTimeout(r, this.o.throttle!.delayMs));
      }
      return void res.end();
    }
    res.end(body);
  }
}

// ---------------------------------------------------------------- datasets built from the shared files

const H5 = (f: string) => shared("h5ad", f);
const SRC = {
  heart: "cellxgene_heart_invalid_CL.h5ad",
  pbmc10k: "pbmc_10k_protein_v3_legacy.h5ad",
  pbmc5k: "pbmc_5k_protein_v3_legacy.h5ad",
  example: "cellxgene_example_valid.h5ad",
  multiome: "multiome_subset_100_100_legacy.h5ad",
};
const readSrc = (k: keyof typeof SRC) => fs.readFileSync(H5(SRC[k]));

const uuid = (prefix: string, i: number) => `${prefix}0000000-0000-4000-8000-${String(i).padStart(12, "0")}`;
const HUMAN = { label: "Homo sapiens", ontology_term_id: "NCBITaxon:9606" };
const MOUSE = { label: "Mus musculus", ontology_term_id: "NCBITaxon:10090" };
const V3 = { label: "10x 3' v3", ontology_term_id: "EFO:0009922" };
const V5 = { label: "10x 5' v2", ontology_term_id: "EFO:0009900" };
const SMART = { label: "Smart-seq2", ontology_term_id: "EFO:0008931" };

interface Spec {
  i: number;
  file?: keyof typeof SRC;
  organism?: object[];
  assay?: object[];
  tissue?: string;
  disease?: { label: string; ontology_term_id: string };
  cells?: number;
  tombstone?: boolean;
  rdsOnly?: boolean;
  title?: string;
  did?: string;
  vid?: string;
  filesize?: number;
  year?: number;
}

function record(s: Spec, files: Map<string, Buffer>): Record<string, unknown> {
  const did = s.did ?? uuid("d", s.i);
  const vid = s.vid ?? uuid("f", s.i);
  const fileName = `v${s.i}.h5ad`; // URLs never carry the (possibly hostile) ids
  const bytes = s.file ? readSrc(s.file) : Buffer.from("not an h5ad");
  files.set(fileName, bytes);
  const assets = [{ filetype: "RDS", filesize: 123, url: `BASE/files/v${s.i}.rds` }];
  if (!s.rdsOnly) assets.unshift({ filetype: "H5AD", filesize: s.filesize ?? bytes.length, url: `BASE/files/${fileName}` });
  return {
    dataset_id: did,
    dataset_version_id: vid,
    title: s.title ?? `dataset ${s.i}`,
    collection_id: uuid("c", s.i % 3),
    collection_name: `collection ${s.i % 3}`,
    organism: s.organism ?? [HUMAN],
    assay: s.assay ?? [V3],
    tissue: [{ label: s.tissue ?? "blood", ontology_term_id: s.tissue === "heart" ? "UBERON:0000948" : "UBERON:0000178", tissue_type: "tissue" }],
    disease: [s.disease ?? { label: "normal", ontology_term_id: "PATO:0000461" }],
    cell_type: [{ label: "T cell", ontology_term_id: "CL:0000084" }],
    cell_count: s.cells ?? 5000,
    primary_cell_count: s.cells ?? 5000,
    schema_version: "5.2.0",
    is_primary_data: [true],
    x_approximate_distribution: "COUNT",
    published_at: `${s.year ?? 2020 + s.i}-01-01T00:00:00.000Z`,
    processing_status: "SUCCESS",
    ...(s.tombstone ? { tombstone: true } : {}),
    assets,
  };
}

/** The corpus used by most tests: 3 human 10x 3' v3 datasets with >= 1000 cells, and 5 that are not. */
function corpus(): { datasets: Record<string, unknown>[]; files: Map<string, Buffer> } {
  const files = new Map<string, Buffer>();
  const specs: Spec[] = [
    { i: 1, file: "heart", tissue: "heart", cells: 5000, disease: { label: "myocardial infarction", ontology_term_id: "MONDO:0005068" } },
    { i: 2, file: "pbmc10k", cells: 10000 },
    { i: 3, file: "pbmc5k", assay: [V5, V3], cells: 5000 },
    { i: 4, file: "example", organism: [MOUSE], cells: 3000 },
    { i: 5, file: "multiome", assay: [SMART], cells: 2000 },
    { i: 6, file: "example", cells: 500 },
    { i: 7, file: "example", cells: 2000, tombstone: true },
    { i: 8, cells: 2000, rdsOnly: true },
  ];
  return { datasets: specs.map((s) => record(s, files)), files };
}

const did = (i: number) => uuid("d", i);
const vid = (i: number) => uuid("f", i);

// ---------------------------------------------------------------- running gm

function gmAsync(args: string[], env: Record<string, string> = {}): Promise<GmResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [gmBin, "--log-format", "json", ...args], {
      cwd: repoRoot,
      env: { ...process.env, GM_NO_PROGRESS: "1", GM_FETCH_RETRY_BASE_MS: "5", GM_FETCH_RETRY_MAX_MS: "50", ...env },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Start gm and SIGKILL it after delayMs (if still running). */
function killAfter(args: string[], delayMs: number, env: Record<string, string>): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [gmBin, "--log-format", "json", ...args], { stdio: "ignore", env: { ...process.env, GM_NO_PROGRESS: "1", GM_FETCH_RETRY_BASE_MS: "5", ...env } });
    const t = setTimeout(() => child.kill("SIGKILL"), delayMs);
    child.on("exit", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function manifestLines(out: string): Record<string, unknown>[] {
  const text = fs.readFileSync(path.join(out, "manifest.jsonl"), "utf8");
  expect(text.endsWith("\n")).toBe(true);
  return text
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Every file under dir, relative, sorted. */
function walk(dir: string): string[] {
  const out: string[] = [];
  const rec = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) rec(p);
      else out.push(path.relative(dir, p).split(path.sep).join("/"));
    }
  };
  if (fs.existsSync(dir)) rec(dir);
  return out.sort();
}

/** OUT holds exactly these dataset files (byte-identical to their sources), recorded once each. */
function expectComplete(out: string, expected: { i: number; file: keyof typeof SRC }[]): void {
  const files = walk(out);
  expect(files).toEqual([...expected.map((e) => `${did(e.i)}/${vid(e.i)}.h5ad`), "manifest.jsonl"].sort());
  const lines = manifestLines(out);
  expect(lines.map((l) => l.dataset_version_id).sort()).toEqual(expected.map((e) => vid(e.i)).sort());
  for (const e of expected) {
    const src = readSrc(e.file);
    const got = fs.readFileSync(path.join(out, did(e.i), `${vid(e.i)}.h5ad`));
    expect(got.equals(src), `${e.file} differs`).toBe(true);
    const line = lines.find((l) => l.dataset_version_id === vid(e.i))!;
    expect(line).toMatchObject({ dataset_id: did(e.i), bytes: src.length, sha256: sha(src), path: `${did(e.i)}/${vid(e.i)}.h5ad`, url: expect.stringMatching(/\/files\/v\d+\.h5ad$/) });
    expect(typeof line.fetched_at).toBe("string");
    expect(Number.isNaN(Date.parse(line.fetched_at as string))).toBe(false);
  }
}

const FILTER = ["--organism", "homo sapiens", "--assay", "EFO:0009922", "--min-cells", "1000"];
const SELECTED = [
  { i: 1, file: "heart" as const },
  { i: 2, file: "pbmc10k" as const },
  { i: 3, file: "pbmc5k" as const },
];

const servers: FakeCellxgene[] = [];
async function serve(o: ServerOptions): Promise<FakeCellxgene> {
  const s = await new FakeCellxgene(o).start();
  servers.push(s);
  return s;
}
afterEach(async () => {
  while (servers.length) await servers.pop()!.stop();
});

function planOf(r: GmResult): { action: string; dataset_id: string; reason?: string; bytes?: number; partial_bytes?: number; recorded?: boolean }[] {
  expect(r.stdout.trim().startsWith("{"), r.stderr).toBe(true);
  return JSON.parse(r.stdout).plan.items;
}

const byAction = (items: { action: string; dataset_id: string }[], action: string) =>
  items
    .filter((i) => i.action === action)
    .map((i) => i.dataset_id)
    .sort();

// ---------------------------------------------------------------- tests

describe("gm census-fetch: usage", () => {
  it("rejects bad flags with exit code 2 and one clear line", async () => {
    const one = (r: GmResult, re: RegExp) => {
      expect(r.code, r.stderr).toBe(2);
      const lines = errorLines(r.stderr).filter((l) => !l.startsWith("(run with --help"));
      expect(lines.length, r.stderr).toBe(1);
      expect(lines[0]).toMatch(re);
    };
    one(await gmAsync(["census-fetch", "--dry-run", "--max-bytes", "5XB"]), /--max-bytes "5XB": not a size/);
    one(await gmAsync(["census-fetch", "--dry-run", "--keep-free", "lots"]), /--keep-free "lots": not a size/);
    one(await gmAsync(["census-fetch", "--dry-run", "--concurrency", "0"]), /--concurrency must be an integer >= 1/);
    one(await gmAsync(["census-fetch", "--dry-run", "--min-cells", "-5"]), /--min-cells must be an integer >= 0/);
    one(await gmAsync(["census-fetch", "--organism", "Homo sapiens"]), /needs --out DIR/);
    one(await gmAsync(["census-fetch", "--dry-run", "--api-url", "ftp://example.org/x"]), /--api-url .*must be an http\(s\) URL/);
    one(await gmAsync(["census-fetch", "--dry-run", "--schema-version", "five"]), /--schema-version "five"/);
    one(await gmAsync(["census-fetch", "--dry-run", "--verify", "never"]), /--verify/);
    const h = await gmAsync(["census-fetch", "--help"]);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/Examples:\n {2}\$ gm census-fetch/);
    expect(h.stdout).toMatch(/GM_CELLXGENE_API_URL/);
  });

  it("fails with exit 3 and one line when the API cannot be reached", async () => {
    const s = await serve({ datasets: [], files: new Map() });
    const url = s.apiUrl;
    await s.stop();
    servers.pop();
    const r = await gmAsync(["census-fetch", "--dry-run", "--api-url", url, "--retries", "1"]);
    expect(r.code, r.stderr).toBe(3);
    const lines = errorLines(r.stderr);
    expect(lines.length, r.stderr).toBe(1);
    expect(lines[0]).toMatch(/^gm: error: cannot list datasets from http:\/\/127\.0\.0\.1:\d+\/curation\/v1: .*fetch failed.*ECONNREFUSED.*gave up after 2 attempts/);
  });
});

describe.skipIf(!hasShared)("gm census-fetch against a local CELLxGENE", () => {
  it("filters select the right datasets, the dry run matches the real run, and the folder preprocesses", async () => {
    const c = corpus();
    const s = await serve(c);
    const env = { GM_CELLXGENE_API_URL: s.apiUrl };
    const dir = tmpDir("gm-census-");
    const out = path.join(dir, "raw");

    // filters: label (any case) or ontology id, any value of a dataset, several values = OR
    const dry = await gmAsync(["census-fetch", ...FILTER, "--dry-run", "--json", "--out", out], env);
    expect(dry.code, dry.stderr).toBe(0);
    const plan = planOf(dry);
    expect(byAction(plan, "fetch")).toEqual([did(1), did(2), did(3)]);
    expect(byAction(plan, "skip")).toEqual([did(7), did(8)]);
    expect(plan.find((i) => i.dataset_id === did(7))!.reason).toMatch(/withdrawn \(tombstone\)/);
    expect(plan.find((i) => i.dataset_id === did(8))!.reason).toMatch(/no H5AD asset \(only RDS\)/);
    expect(JSON.parse(dry.stdout).plan.totals).toMatchObject({ listed: 8, unmatched: 3, selected: { datasets: 3, cells: 20000 }, fetch: { datasets: 3 }, present: { datasets: 0 } });
    expect(fs.existsSync(out)).toBe(false); // a dry run writes nothing

    const text = await gmAsync(["census-fetch", ...FILTER, "--dry-run"], env);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^ {2}fetch +${did(1)} +${vid(1)} +\\d+ kB +5,000 +dataset 1`, "m"));
    expect(text.stdout).toMatch(/selected: 3 datasets, [\d.]+ MB, 20,000 cells; already present: 0 \(0 B\); to download: 3/);
    expect(text.stdout).toMatch(/skipped: 2; errors: 0; not matching the filters: 3/);

    const sel = async (args: string[]) => {
      const r = await gmAsync(["census-fetch", "--dry-run", "--json", ...args], env);
      expect(r.code, r.stderr).toBe(0);
      return byAction(planOf(r), "fetch");
    };
    expect(await sel(["--assay", "Smart-seq2", "--assay", "10x 3' V3", "--min-cells", "1000", "--organism", "NCBITaxon:9606"])).toEqual([did(1), did(2), did(3), did(5)]);
    expect(await sel(["--assay", "10x 5' v2"])).toEqual([did(3)]);
    expect(await sel(["--tissue", "heart"])).toEqual([did(1)]);
    expect(await sel(["--disease", "MONDO:0005068"])).toEqual([did(1)]);
    expect(await sel(["--organism", "Mus musculus"])).toEqual([did(4)]);
    expect(await sel(["--schema-version", "5.2", "--min-cells", "10000"])).toEqual([did(2)]);
    expect(await sel(["--schema-version", "4"])).toEqual([]);
    // budgets: oldest first, present ones included
    expect(await sel([...FILTER, "--max-datasets", "2"])).toEqual([did(1), did(2)]);
    const heart = readSrc("heart").length;
    const p10k = readSrc("pbmc10k").length;
    expect(await sel([...FILTER, "--max-bytes", String(heart + p10k)])).toEqual([did(1), did(2)]);
    expect(await sel([...FILTER, "--max-bytes", `${(heart + 1000) / 1000}kB`])).toEqual([did(1)]);
    // explicit ids (dataset or version ids), filters still apply
    const ids = path.join(dir, "ids.txt");
    fs.writeFileSync(ids, `# wanted\n${did(2)}\n${vid(4)}  # a version id\n\n`);
    const r = await gmAsync(["census-fetch", "--dry-run", "--json", "--datasets", ids], env);
    expect(byAction(planOf(r), "fetch")).toEqual([did(2), did(4)]);
    const r2 = await gmAsync(["census-fetch", "--dry-run", "--json", "--datasets", ids, "--organism", "Homo sapiens"], env);
    expect(byAction(planOf(r2), "fetch")).toEqual([did(2)]);
    expect(planOf(r2).find((i) => i.dataset_id === did(4))).toMatchObject({ action: "skip", reason: expect.stringMatching(/does not match the filters: organism is Mus musculus/) });

    // the real run downloads exactly the dry run's datasets
    const run = await gmAsync(["census-fetch", ...FILTER, "--out", out, "--concurrency", "2"], env);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^census-fetch: 3 fetched \([\d.]+ MB downloaded\), 0 already present and verified, 2 skipped, 0 failed/);
    expectComplete(out, SELECTED);
    expect(s.log.every((q) => q.ua?.startsWith("gm/0.") && q.ua.includes("census-fetch"))).toBe(true);
    expect(s.apiLog.every((q) => q.ua?.startsWith("gm/"))).toBe(true);
    expect(s.log.map((q) => q.name).sort()).toEqual(["v1.h5ad", "v2.h5ad", "v3.h5ad"]);

    // a second dry run sees them present and recorded; a re-run verifies and downloads nothing
    const again = planOf(await gmAsync(["census-fetch", ...FILTER, "--dry-run", "--json", "--out", out], env));
    expect(byAction(again, "present")).toEqual([did(1), did(2), did(3)]);
    expect(again.filter((i) => i.action === "present").every((i) => i.recorded)).toBe(true);
    const before = fs.readFileSync(path.join(out, "manifest.jsonl"));
    const rerun = await gmAsync(["census-fetch", ...FILTER, "--out", out, "--json"], env);
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(JSON.parse(rerun.stdout)).toMatchObject({ fetched: 0, present: 3, failed: 0 });
    expect(s.log.length).toBe(3);
    expect(fs.readFileSync(path.join(out, "manifest.jsonl")).equals(before)).toBe(true);

    // gm preprocess reads the download folder as it is
    const pre = path.join(dir, "pre");
    const p = await gmAsync(["preprocess", out, "--out", pre, "--gene-map", shared("genes/gene_symbols.json"), "--min-genes", "10"]);
    expect(p.code, p.stderr).toBe(0);
    const manifest = JSON.parse(fs.readFileSync(path.join(pre, "manifest.json"), "utf8"));
    expect(JSON.stringify(manifest)).toContain(`${vid(1)}.h5ad`);
    expect(JSON.stringify(manifest)).toContain(`${vid(3)}.h5ad`);
  });

  it("follows paginated listings and falls back to /collections", async () => {
    for (const mode of [{ paginate: 3 }, { collectionsOnly: true }]) {
      const c = corpus();
      const s = await serve({ ...c, ...mode });
      const r = await gmAsync(["census-fetch", ...FILTER, "--dry-run", "--json", "--api-url", s.apiUrl]);
      expect(r.code, r.stderr).toBe(0);
      const plan = planOf(r);
      expect(byAction(plan, "fetch")).toEqual([did(1), did(2), did(3)]);
      expect(JSON.parse(r.stdout).plan.totals.listed).toBe(8);
      if (mode.paginate) expect(s.apiLog.map((q) => q.url)).toEqual(["/curation/v1/datasets", "/curation/v1/datasets?page=1", "/curation/v1/datasets?page=2"]);
      else {
        expect(s.apiLog[0].url).toBe("/curation/v1/datasets");
        expect(s.apiLog[1].url).toBe("/curation/v1/collections?visibility=PUBLIC");
        expect(plan.find((i) => i.dataset_id === did(1))).toMatchObject({ collection_name: `collection ${uuid("c", 1)}` });
      }
    }
  });

  it("resumes a transfer cut in the middle with a Range request and ends byte-identical", async () => {
    const c = corpus();
    const s = await serve({ ...c, digests: true });
    const dir = tmpDir("gm-census-");
    const out = path.join(dir, "raw");
    const cut = 700_001;
    s.faults.set("v2.h5ad", [{ kind: "cut", after: cut }]);
    // a partial file left by an earlier run: hashed first, then resumed
    const p5k = readSrc("pbmc5k");
    fs.mkdirSync(path.join(out, did(3)), { recursive: true });
    fs.writeFileSync(path.join(out, did(3), `.${vid(3)}.h5ad.part`), p5k.subarray(0, 300_000));
    const dry = planOf(await gmAsync(["census-fetch", ...FILTER, "--dry-run", "--json", "--out", out, "--api-url", s.apiUrl]));
    expect(dry.find((i) => i.dataset_id === did(3))).toMatchObject({ action: "fetch", partial_bytes: 300_000 });

    const r = await gmAsync(["census-fetch", ...FILTER, "--out", out, "--api-url", s.apiUrl]);
    expect(r.code, r.stderr).toBe(0);
    expectComplete(out, SELECTED);
    const q2 = s.fileRequests("v2.h5ad");
    expect(q2.length).toBe(2);
    expect(q2[0].range).toBeUndefined();
    const m = /^bytes=(\d+)-$/.exec(q2[1].range ?? "");
    expect(m, q2[1].range).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    expect(Number(m![1])).toBeLessThanOrEqual(cut);
    expect(q2[1].ifRange).toMatch(/^"[0-9a-f]{16}"$/); // the ETag of the first answer guards the resume
    expect(q2[1].status).toBe(206);
    const q3 = s.fileRequests("v3.h5ad");
    expect(q3.map((q) => [q.range, q.status])).toEqual([["bytes=300000-", 206]]);
    expect(r.stdout).toMatch(/3 fetched \([\d.]+ MB downloaded, 1 resumed\)/);
    expect(r.stderr).toMatch(/resuming at 300 kB/);
  });

  it("retries 500s and 429 (honouring Retry-After); a 404 fails that dataset only, exit 3 after a summary", async () => {
    const c = corpus();
    const s = await serve(c);
    const dir = tmpDir("gm-census-");
    const out = path.join(dir, "raw");
    s.faults.set("v1.h5ad", [
      { kind: "status", status: 500 },
      { kind: "status", status: 500 },
    ]);
    s.o.files.delete("v2.h5ad"); // 404
    s.faults.set("v3.h5ad", [{ kind: "status", status: 429, retryAfter: "1" }]);
    const r = await gmAsync(["census-fetch", ...FILTER, "--out", out, "--api-url", s.apiUrl, "--concurrency", "3"]);
    expect(r.code, r.stderr).toBe(3);
    expect(s.fileRequests("v1.h5ad").map((q) => q.status)).toEqual([500, 500, 200]);
    expect(s.fileRequests("v2.h5ad").map((q) => q.status)).toEqual([404]); // not retried
    const q3 = s.fileRequests("v3.h5ad");
    expect(q3.map((q) => q.status)).toEqual([429, 200]);
    expect(q3[1].at - q3[0].at).toBeGreaterThanOrEqual(950);
    const lines = errorLines(r.stderr);
    expect(lines.length, r.stderr).toBe(1);
    expect(lines[0]).toMatch(new RegExp(`^gm: error: 1 of 3 dataset\\(s\\) failed, first: ${did(2)}: HTTP 404 Not Found from http://127.0.0.1:\\d+/files/v2.h5ad`));
    expect(r.stdout).toMatch(/^census-fetch: 2 fetched .* 1 failed/);
    expect(r.stdout).toMatch(new RegExp(`failed:\\n {2}${did(2)}: HTTP 404`));
    // the others are complete and recorded; nothing of the failed one is left behind
    expect(walk(out)).toEqual([`${did(1)}/${vid(1)}.h5ad`, `${did(3)}/${vid(3)}.h5ad`, "manifest.jsonl"]);
    expect(manifestLines(out).map((l) => l.dataset_id).sort()).toEqual([did(1), did(3)]);
    // gave up after the retries: a clear line too
    s.always.set("v1.h5ad", { kind: "status", status: 503 });
    fs.rmSync(out, { recursive: true });
    const r2 = await gmAsync(["census-fetch", "--datasets", writeIds(dir, [did(1)]), "--out", out, "--api-url", s.apiUrl, "--retries", "2"]);
    expect(r2.code).toBe(3);
    expect(errorLines(r2.stderr)[0]).toMatch(/HTTP 503 Service Unavailable .*\(gave up after 3 attempts\)/);
  });

  it("a download whose size or checksum does not match is fetched again, never renamed into place", async () => {
    const c = corpus();
    const s = await serve(c);
    const dir = tmpDir("gm-census-");
    const out = path.join(dir, "raw");
    const final = (i: number) => path.join(out, did(i), `${vid(i)}.h5ad`);
    const seenInPlace: string[] = [];
    s.onFileRequest = (name, n) => {
      const i = Number(/^v(\d)/.exec(name)![1]);
      if (n > 0 && fs.existsSync(final(i))) seenInPlace.push(name);
    };
    s.faults.set("v1.h5ad", [{ kind: "short", bytes: 1000 }]); // complete answer, wrong length
    s.faults.set("v2.h5ad", [{ kind: "corrupt" }]); // right length, bad bytes, server digest
    s.always.set("v3.h5ad", { kind: "long", extra: 10 }); // always too long
    const r = await gmAsync(["census-fetch", ...FILTER, "--out", out, "--api-url", s.apiUrl, "--retries", "2"]);
    expect(r.code, r.stderr).toBe(3);
    expect(seenInPlace).toEqual([]);
    expect(s.fileRequests("v1.h5ad").length).toBe(2);
    expect(s.fileRequests("v2.h5ad").length).toBe(2);
    expect(s.fileRequests("v3.h5ad").length).toBe(3);
    expect(r.stderr).toMatch(/size mismatch: the server sends 1,000 bytes, the API says/);
    expect(r.stderr).toMatch(/checksum mismatch: sha256 [0-9a-f]{12}… differs from the server's/);
    expect(errorLines(r.stderr)[0]).toMatch(new RegExp(`first: ${did(3)}: size mismatch: the server sent more than the [\\d,]+ bytes the API gives \\(gave up after 3 attempts\\)`));
    expect(fs.existsSync(final(3))).toBe(false);
    expect(fs.readdirSync(path.join(out, did(3)))).toEqual([]); // no partial either
    expect(manifestLines(out).map((l) => l.dataset_id).sort()).toEqual([did(1), did(2)]);

    // damage the files in place: a flipped byte (same size) and a truncation; a re-run refetches both
    s.always.clear();
    const b1 = fs.readFileSync(final(1));
    b1[1234] ^= 1;
    fs.writeFileSync(final(1), b1);
    fs.truncateSync(final(2), 5000);
    const dry = planOf(await gmAsync(["census-fetch", ...FILTER, "--dry-run", "--json", "--out", out, "--api-url", s.apiUrl]));
    expect(dry.find((i) => i.dataset_id === did(1))?.action).toBe("present"); // only hashing can tell
    expect(dry.find((i) => i.dataset_id === did(2))).toMatchObject({ action: "fetch", reason: expect.stringMatching(/has 5,000 bytes/) });
    const r2 = await gmAsync(["census-fetch", ...FILTER, "--out", out, "--api-url", s.apiUrl, "--json"]);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stderr).toMatch(/sha256 [0-9a-f]{12}… differs from the manifest's/);
    const sum = JSON.parse(r2.stdout);
    expect(sum).toMatchObject({ fetched: 3, present: 0, failed: 0 });
    expect(sum.outcomes.find((o: { dataset_id: string }) => o.dataset_id === did(1))).toMatchObject({ status: "fetched", refetched: true });
    expectComplete(out, SELECTED);
    // --verify size trusts sizes: a same-size damage goes unnoticed by design, a truncation does not
    const b3 = fs.readFileSync(final(3));
    b3[99] ^= 1;
    fs.writeFileSync(final(3), b3);
    const r3 = await gmAsync(["census-fetch", ...FILTER, "--out", out, "--api-url", s.apiUrl, "--json", "--verify", "size"]);
    expect(JSON.parse(r3.stdout)).toMatchObject({ fetched: 0, present: 3 });
  });

  it("ids and titles crafted with ../, absolute paths or odd characters never write outside OUT", async () => {
    const files = new Map<string, Buffer>();
    const hostile: Spec[] = [
      { i: 1, file: "example", did: "../../escape-1" },
      { i: 2, file: "example", vid: "../../../escape-2" },
      { i: 3, file: "example", did: "/tmp/gm-census-abs-escape" },
      { i: 4, file: "example", did: "..", vid: ".." },
      { i: 5, file: "example", did: "ok\u001b[31mred\nline" },
      { i: 6, file: "example", vid: "C:\\Windows\\x" },
      { i: 7, file: "example", did: "a/b" },
      { i: 8, file: "multiome", title: "../../../../tmp/gm-census-title-escape", did: uuid("d", 8), vid: uuid("f", 8) },
    ];
    const datasets = hostile.map((h) => record(h, files));
    datasets.push({ ...record({ i: 9, file: "example" }, files), dataset_id: null });
    const s = await serve({ datasets, files });
    const sandbox = tmpDir("gm-census-sandbox-");
    const out = path.join(sandbox, "a", "b", "c", "out");
    const ids = path.join(sandbox, "ids.txt");
    fs.writeFileSync(ids, `${uuid("d", 8)}\n../../etc/passwd\n/abs/path\n${uuid("d", 99)}\n`);
    fs.rmSync("/tmp/gm-census-abs-escape", { recursive: true, force: true });

    const dry = await gmAsync(["census-fetch", "--dry-run", "--out", out, "--api-url", s.apiUrl]);
    expect(dry.code).toBe(3);
    expect(dry.stdout).not.toMatch(/\u001b/); // no terminal escapes from API text
    const r = await gmAsync(["census-fetch", "--out", out, "--api-url", s.apiUrl, "--json"]);
    expect(r.code, r.stderr).toBe(3);
    const sum = JSON.parse(r.stdout);
    const failed = sum.outcomes.filter((o: { status: string }) => o.status === "failed");
    expect(failed.length).toBe(8);
    for (const f of failed) expect(f.message).toMatch(/unsafe dataset(_version)?_id .*refusing to make a path from it|missing dataset_id/);
    expect(sum.outcomes.filter((o: { status: string }) => o.status === "fetched").map((o: { dataset_id: string }) => o.dataset_id)).toEqual([uuid("d", 8)]);
    const r2 = await gmAsync(["census-fetch", "--out", out, "--api-url", s.apiUrl, "--datasets", ids]);
    expect(r2.code).toBe(3);
    expect(r2.stdout).toMatch(/ids\.txt:2: unsafe id "..\/..\/etc\/passwd"/);
    expect(r2.stdout).toMatch(/ids\.txt:3: unsafe id "\/abs\/path"/);
    expect(r2.stdout).toMatch(new RegExp(`${uuid("d", 99)} is not among the public datasets`));

    // everything written is inside OUT, under the one safe id
    expect(walk(sandbox)).toEqual(["a/b/c/out/" + `${uuid("d", 8)}/${uuid("f", 8)}.h5ad`, "a/b/c/out/manifest.jsonl", "ids.txt"]);
    expect(fs.existsSync("/tmp/gm-census-abs-escape")).toBe(false);
    expect(fs.existsSync("/tmp/gm-census-title-escape")).toBe(false);
    expect(s.fileRequests("v8.h5ad").length).toBe(1);
    expect(s.log.length).toBe(1); // nothing else was even requested
  });

  it("killed at random points and re-run, it ends with a complete, verified set and no duplicate manifest lines", async () => {
    const c = corpus();
    const s = await serve({ ...c, throttle: { chunk: 16 * 1024, delayMs: 10 } });
    const dir = tmpDir("gm-census-kill-");
    const out = path.join(dir, "raw");
    const args = ["census-fetch", ...FILTER, "--out", out, "--concurrency", "2"];
    const env = { GM_CELLXGENE_API_URL: s.apiUrl };
    // spread over start-up, listing, transfers, renames and manifest writes
    const delays = [300, 450, 600, 750, 900, 1050];
    for (const d of delays) await killAfter(args, d + Math.floor(Math.random() * 150), env);
    const partials = walk(out).filter((f) => f.endsWith(".part"));
    const resumable = partials.filter((f) => fs.statSync(path.join(out, f)).size > 0);
    const before = s.log.length;
    const r = await gmAsync(args, env);
    expect(r.code, r.stderr).toBe(0);
    expectComplete(out, SELECTED);
    if (resumable.length) expect(s.log.slice(before).some((q) => q.range)).toBe(true);
    // and once more: nothing to do, nothing duplicated
    const r2 = await gmAsync([...args, "--json"], env);
    expect(JSON.parse(r2.stdout)).toMatchObject({ fetched: 0, present: 3, failed: 0 });
    expectComplete(out, SELECTED);
  });

  it("checks free space before each download (exit 4) and refuses a second writer", async () => {
    const c = corpus();
    const s = await serve(c);
    const dir = tmpDir("gm-census-");
    const out = path.join(dir, "raw");
    const r = await gmAsync(["census-fetch", ...FILTER, "--out", out, "--api-url", s.apiUrl, "--keep-free", "1000PB"]);
    expect(r.code, r.stderr).toBe(4);
    expect(errorLines(r.stderr)[0]).toMatch(/3 of 3 dataset\(s\) failed, first: .*not enough free space in .*plus --keep-free 1000 PB/);
    expect(s.log.length).toBe(0);
    expect(walk(out)).toEqual([]);
    // a live lock holder (this test process) blocks a second run
    fs.writeFileSync(path.join(out, ".census-fetch.lock"), JSON.stringify({ pid: process.pid, host: (await import("node:os")).hostname(), started: "now" }));
    const r2 = await gmAsync(["census-fetch", ...FILTER, "--out", out, "--api-url", s.apiUrl]);
    expect(r2.code).toBe(4);
    expect(errorLines(r2.stderr)).toEqual([expect.stringMatching(new RegExp(`another gm census-fetch \\(pid ${process.pid} `))]);
    fs.rmSync(path.join(out, ".census-fetch.lock"));
  });
});

function writeIds(dir: string, ids: string[]): string {
  const f = path.join(dir, `ids-${ids.length}-${Date.now()}.txt`);
  fs.writeFileSync(f, ids.join("\n") + "\n");
  return f;
}
