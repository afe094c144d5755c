/**
 * A client of the public CELLxGENE Discover curation API (no key needed for GETs).
 *
 * The primary listing is GET /datasets: every public dataset with full metadata, collection_id,
 * collection_name and assets. It is a plain JSON array today; paginated shapes are followed too
 * (a Link rel="next" header, an object holding the list plus a `next` URL or a `next_page_token`).
 * When a deployment has no /datasets route (404/405), the client falls back to
 * GET /collections?visibility=PUBLIC and GET /collections/{id}, which carry the same dataset records.
 */
import type { Logger } from "@gm/core";
import { getJson, HttpStatusError, type RetryPolicy } from "./http.js";
import { displayText } from "./ids.js";

export const DEFAULT_API_URL = "https://api.cellxgene.cziscience.com/curation/v1";

export interface OntologyTerm {
  label: string;
  ontology_term_id: string;
}

export interface DatasetAsset {
  filetype: string;
  /** bytes, when the API gives a usable number */
  filesize?: number;
  url: string;
}

/** One dataset as the rest of census-fetch sees it: typed, defaulted, ids not yet validated. */
export interface CensusDataset {
  /** as received; checked against SAFE_ID before any path is made from it */
  dataset_id: string;
  dataset_version_id: string;
  title: string;
  collection_id: string;
  collection_name: string;
  organism: OntologyTerm[];
  assay: OntologyTerm[];
  tissue: OntologyTerm[];
  disease: OntologyTerm[];
  cell_count: number | null;
  schema_version: string;
  is_primary_data: boolean[];
  published_at?: string;
  tombstone: boolean;
  processing_status?: string;
  assets: DatasetAsset[];
}

function str(v: unknown): string {
  return typeof v === "string" ? v : v === undefined || v === null ? "" : typeof v === "number" || typeof v === "boolean" ? String(v) : JSON.stringify(v);
}

function terms(v: unknown): OntologyTerm[] {
  const list = Array.isArray(v) ? v : v === undefined || v === null ? [] : [v];
  const out: OntologyTerm[] = [];
  for (const t of list) {
    if (typeof t === "string") out.push({ label: t, ontology_term_id: "" });
    else if (t && typeof t === "object") {
      const o = t as Record<string, unknown>;
      out.push({ label: str(o.label), ontology_term_id: str(o.ontology_term_id) });
    }
  }
  return out;
}

function count(v: unknown): number | null {
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  return Number.isFinite(n) && n >= 0 ? Math.floor(n) : null;
}

function assets(v: unknown): DatasetAsset[] {
  if (!Array.isArray(v)) return [];
  const out: DatasetAsset[] = [];
  for (const a of v) {
    if (!a || typeof a !== "object") continue;
    const o = a as Record<string, unknown>;
    const size = count(o.filesize);
    out.push({ filetype: str(o.filetype).toUpperCase(), filesize: size === null ? undefined : size, url: str(o.url) });
  }
  return out;
}

/** Read one dataset record defensively: missing or mistyped fields get empty values, never throw. */
export function normalizeDataset(raw: unknown, collection?: { id: string; name: string }): CensusDataset {
  const o = (raw && typeof raw === "object" ? raw : {}) as Record<string, unknown>;
  const primary = Array.isArray(o.is_primary_data) ? o.is_primary_data : o.is_primary_data === undefined ? [] : [o.is_primary_data];
  return {
    dataset_id: str(o.dataset_id ?? o.id),
    dataset_version_id: str(o.dataset_version_id),
    title: str(o.title ?? o.name),
    collection_id: str(o.collection_id ?? collection?.id),
    collection_name: str(o.collection_name ?? collection?.name),
    organism: terms(o.organism),
    assay: terms(o.assay),
    tissue: terms(o.tissue),
    disease: terms(o.disease),
    cell_count: count(o.cell_count),
    schema_version: str(o.schema_version),
    is_primary_data: primary.map((b) => b === true || b === "true" || b === "True"),
    published_at: typeof o.published_at === "string" ? o.published_at : undefined,
    tombstone: o.tombstone === true || o.tombstone === "true",
    processing_status: typeof o.processing_status === "string" ? o.processing_status : undefined,
    assets: assets(o.assets),
  };
}

/** The dataset's H5AD asset, if it has one. */
export function h5adAsset(d: CensusDataset): DatasetAsset | undefined {
  return d.assets.find((a) => a.filetype === "H5AD");
}

/** `next` target of an RFC 8288 Link header. */
export function linkNext(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  for (const m of header.matchAll(/<([^>]*)>([^,<]*)/g)) {
    for (const param of m[2].split(";")) {
      const kv = /^\s*rel\s*=\s*"?([^"]*)"?\s*$/i.exec(param);
      if (kv && kv[1].toLowerCase().split(/\s+/).includes("next")) return m[1];
    }
  }
  return undefined;
}

/** The items of one listing response and the URL of the next page, if any. */
export function listingPage(body: unknown, headers: Headers | undefined, requestUrl: string, what: string): { items: unknown[]; next?: string } {
  const fromLink = linkNext(headers?.get("link"));
  const resolve = (u: string) => new URL(u, requestUrl).toString();
  if (Array.isArray(body)) return { items: body, next: fromLink ? resolve(fromLink) : undefined };
  if (!body || typeof body !== "object") throw new Error(`${what}: expected a JSON array or object, got ${displayText(typeof body)}`);
  const o = body as Record<string, unknown>;
  const key = ["datasets", "collections", "items", "results", "data"].find((k) => Array.isArray(o[k]));
  if (!key) throw new Error(`${what}: the response holds no list (keys: ${displayText(Object.keys(o).join(", "))})`);
  let next: string | undefined = fromLink;
  const links = o.links as Record<string, unknown> | undefined;
  for (const v of [o.next, o.next_url, links && typeof links === "object" ? links.next : undefined]) {
    if (!next && typeof v === "string" && v) next = v;
  }
  if (next) return { items: o[key] as unknown[], next: resolve(next) };
  for (const [field, param] of [
    ["next_page_token", "page_token"],
    ["next_token", "next_token"],
    ["next_cursor", "cursor"],
  ] as const) {
    const t = o[field];
    if ((typeof t === "string" && t) || typeof t === "number") {
      const u = new URL(requestUrl);
      u.searchParams.set(param, String(t));
      return { items: o[key] as unknown[], next: u.toString() };
    }
  }
  return { items: o[key] as unknown[] };
}

export interface ListingResult {
  datasets: CensusDataset[];
  /** how the listing was obtained, for logs and the plan header */
  source: string;
  pages: number;
}

const MAX_PAGES = 100_000;

export class CellxgeneApi {
  readonly base: string;
  constructor(
    baseUrl: string,
    private readonly policy: RetryPolicy,
    private readonly log: Logger,
  ) {
    this.base = baseUrl.replace(/\/+$/, "");
  }

  private url(p: string, query?: Record<string, string | undefined>): string {
    const u = new URL(this.base + p);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, v);
    return u.toString();
  }

  /** Every item of a (possibly paginated) listing. */
  private async listAll(first: string, what: string): Promise<{ items: unknown[]; pages: number }> {
    const items: unknown[] = [];
    const seen = new Set<string>();
    let url: string | undefined = first;
    let pages = 0;
    while (url && !seen.has(url) && pages < MAX_PAGES) {
      seen.add(url);
      const r = await getJson(url, this.policy, this.log);
      const page = listingPage(r.body, r.headers, url, what);
      items.push(...page.items);
      pages++;
      if (pages > 1 || page.next) this.log.debug({ url, items: page.items.length }, `${what}: page ${pages}, ${page.items.length} items`);
      url = page.next;
    }
    return { items, pages };
  }

  /** GET /datasets (optionally ?schema_version=X): every public dataset with full metadata. */
  async listDatasets(schemaVersion?: string): Promise<ListingResult> {
    const url = this.url("/datasets", { schema_version: schemaVersion });
    try {
      const r = await this.listAll(url, "GET /datasets");
      return { datasets: r.items.map((d) => normalizeDataset(d)), source: url, pages: r.pages };
    } catch (e) {
      if (e instanceof HttpStatusError && (e.status === 404 || e.status === 405)) {
        this.log.warn({ url, status: e.status }, `GET /datasets answered ${e.status}; listing datasets through /collections instead`);
        return this.listDatasetsViaCollections();
      }
      throw e;
    }
  }

  /** GET /collections?visibility=PUBLIC: collections with dataset previews. */
  async listCollections(): Promise<Record<string, unknown>[]> {
    const r = await this.listAll(this.url("/collections", { visibility: "PUBLIC" }), "GET /collections");
    return r.items.filter((c): c is Record<string, unknown> => Boolean(c) && typeof c === "object");
  }

  /** GET /collections/{id}: one collection with its full datasets[] (assets included). */
  async getCollection(collectionId: string): Promise<Record<string, unknown>> {
    const r = await getJson(this.url(`/collections/${encodeURIComponent(collectionId)}`), this.policy, this.log);
    if (!r.body || typeof r.body !== "object" || Array.isArray(r.body)) throw new Error(`GET /collections/${displayText(collectionId)}: expected a JSON object`);
    return r.body as Record<string, unknown>;
  }

  /** GET /collections/{cid}/datasets/{did}: one dataset. */
  async getDataset(collectionId: string, datasetId: string): Promise<CensusDataset> {
    const r = await getJson(this.url(`/collections/${encodeURIComponent(collectionId)}/datasets/${encodeURIComponent(datasetId)}`), this.policy, this.log);
    return normalizeDataset(r.body);
  }

  /** The /collections route to the same records, for deployments without GET /datasets. */
  async listDatasetsViaCollections(concurrency = 4): Promise<ListingResult> {
    const cols = await this.listCollections();
    const ids = cols.map((c) => str(c.collection_id ?? c.id)).filter(Boolean);
    const results: CensusDataset[][] = new Array(ids.length);
    let next = 0;
    const worker = async () => {
      while (next < ids.length) {
        const i = next++;
        const c = await this.getCollection(ids[i]);
        const meta = { id: str(c.collection_id ?? c.id ?? ids[i]), name: str(c.name ?? c.collection_name) };
        results[i] = (Array.isArray(c.datasets) ? c.datasets : []).map((d) => normalizeDataset(d, meta));
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, ids.length) }, worker));
    return { datasets: results.flat(), source: this.url("/collections", { visibility: "PUBLIC" }), pages: ids.length + 1 };
  }
}
