/**
 * From the API listing to a plan: filters, explicit ids, skip reasons, id safety, budgets and what is
 * already on disk. Pure apart from stat() calls under OUT, so --dry-run and a real run agree.
 */
import * as fs from "node:fs";
import { h5adAsset, type CensusDataset, type OntologyTerm } from "./api.js";
import { datasetPaths, displayId, displayText, isSafeId, unsafeIdReason } from "./ids.js";
import type { DatasetDescription, Manifest } from "./manifest.js";
import { formatBytes, formatCount } from "./size.js";

export interface Filters {
  /** each list: OR of labels (case-insensitive) or ontology term ids; empty = any */
  organism: string[];
  assay: string[];
  tissue: string[];
  disease: string[];
  minCells: number;
  /** "5", "5.2" or "5.2.0": matches versions with these leading components */
  schemaVersion?: string;
  /** keep datasets whose is_primary_data includes true */
  primaryOnly: boolean;
}

export const NO_FILTERS: Filters = { organism: [], assay: [], tissue: [], disease: [], minCells: 0, primaryOnly: false };

export interface Budgets {
  maxDatasets?: number;
  maxBytes?: number;
}

export type PlanAction = "fetch" | "present" | "skip" | "error";

export interface PlanItem extends DatasetDescription {
  action: PlanAction;
  /** the H5AD asset's filesize */
  bytes?: number;
  url?: string;
  /** <dataset_id>/<dataset_version_id>.h5ad, relative to OUT */
  path?: string;
  /** skip / error: why; fetch / present: a note (resume point, refetch cause, older versions) */
  reason?: string;
  /** fetch: bytes already in the partial file (the resume point) */
  partial_bytes?: number;
  /** present: the manifest has a line for this version */
  recorded?: boolean;
}

export interface PlanTotals {
  listed: number;
  /** datasets left out by the filters (not shown one by one) */
  unmatched: number;
  selected: { datasets: number; bytes: number; cells: number };
  present: { datasets: number; bytes: number };
  fetch: { datasets: number; bytes: number; partialBytes: number };
  skipped: number;
  errors: number;
}

export interface Plan {
  source: string;
  out?: string;
  items: PlanItem[];
  totals: PlanTotals;
}

const lower = (s: string) => s.trim().toLowerCase();

/** A dataset matches when any of its values has a wanted label or ontology term id. */
export function matchesTerms(values: OntologyTerm[], wanted: string[]): boolean {
  if (!wanted.length) return true;
  const w = new Set(wanted.map(lower));
  return values.some((v) => w.has(lower(v.label)) || (v.ontology_term_id !== "" && w.has(lower(v.ontology_term_id))));
}

/** "5" matches 5.x.y, "5.2" matches 5.2.y, "5.2.0" only itself. */
export function schemaMatches(actual: string, wanted: string): boolean {
  const a = actual.trim().split(".");
  const w = wanted.trim().split(".");
  if (w.length > a.length) return false;
  return w.every((c, i) => Number(c) === Number(a[i]) && c !== "" && a[i] !== "");
}

const labels = (t: OntologyTerm[]) => t.map((x) => x.label || x.ontology_term_id);

function shortList(v: string[]): string {
  if (!v.length) return "none";
  return v.length > 3 ? `${v.slice(0, 3).map((s) => displayText(s, 60)).join(", ")}, … (${v.length})` : v.map((s) => displayText(s, 60)).join(", ");
}

/** The first filter a dataset fails, worded for the plan; undefined when it passes all. */
export function filterReason(d: CensusDataset, f: Filters): string | undefined {
  for (const key of ["organism", "assay", "tissue", "disease"] as const) {
    if (!matchesTerms(d[key], f[key])) return `${key} is ${shortList(labels(d[key]))}, not ${f[key].map((s) => displayText(s, 60)).join(" or ")}`;
  }
  if (f.minCells > 0 && (d.cell_count === null || d.cell_count < f.minCells)) return `${d.cell_count === null ? "no" : formatCount(d.cell_count)} cells, fewer than --min-cells ${formatCount(f.minCells)}`;
  if (f.schemaVersion && !schemaMatches(d.schema_version, f.schemaVersion)) return `schema ${displayText(d.schema_version || "unknown", 40)}, not ${displayText(f.schemaVersion, 40)}`;
  if (f.primaryOnly && !d.is_primary_data.includes(true)) return "holds no primary data (is_primary_data false)";
  return undefined;
}

/** Ids file: one dataset_id or dataset_version_id per line; blank lines and # comments ignored. */
export function parseIdList(text: string): { ids: string[]; invalid: { line: number; text: string }[] } {
  const ids: string[] = [];
  const invalid: { line: number; text: string }[] = [];
  const seen = new Set<string>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const t = raw.replace(/#.*$/, "").trim();
    if (!t) return;
    if (!isSafeId(t)) invalid.push({ line: i + 1, text: t });
    else if (!seen.has(t)) {
      seen.add(t);
      ids.push(t);
    }
  });
  return { ids, invalid };
}

function itemOf(d: CensusDataset, action: PlanAction, reason?: string): PlanItem {
  const a = h5adAsset(d);
  return {
    action,
    dataset_id: d.dataset_id,
    dataset_version_id: d.dataset_version_id,
    title: d.title,
    collection_id: d.collection_id,
    collection_name: d.collection_name,
    organism: labels(d.organism),
    assay: labels(d.assay),
    tissue: labels(d.tissue),
    disease: labels(d.disease),
    cell_count: d.cell_count,
    schema_version: d.schema_version,
    bytes: a?.filesize,
    url: a?.url,
    reason,
  };
}

function idOnlyItem(id: string, reason: string): PlanItem {
  return {
    action: "error",
    dataset_id: id,
    dataset_version_id: "",
    title: "",
    collection_id: "",
    collection_name: "",
    organism: [],
    assay: [],
    tissue: [],
    disease: [],
    cell_count: null,
    schema_version: "",
    reason,
  };
}

function httpUrl(u: string): boolean {
  try {
    const p = new URL(u);
    return p.protocol === "http:" || p.protocol === "https:";
  } catch {
    return false;
  }
}

function fileSize(p: string): number | undefined {
  try {
    const st = fs.statSync(p);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

/** .h5ad files of other versions in OUT/<dataset_id>/ (older downloads). */
function otherVersions(dir: string, versionId: string): string[] {
  try {
    return fs
      .readdirSync(dir)
      .filter((n) => n.endsWith(".h5ad") && !n.startsWith(".") && n !== `${versionId}.h5ad`)
      .map((n) => n.slice(0, -5))
      .sort();
  } catch {
    return [];
  }
}

export interface PlanInput {
  datasets: CensusDataset[];
  source: string;
  filters: Filters;
  budgets: Budgets;
  /** --datasets: only these dataset or version ids */
  ids?: { ids: string[]; invalid: { line: number; text: string }[]; file: string };
  out?: string;
  manifest?: Manifest;
}

export function buildPlan(input: PlanInput): Plan {
  const { filters, budgets } = input;
  const items: PlanItem[] = [];
  let unmatched = 0;
  const wanted = input.ids ? new Set(input.ids.ids) : undefined;
  const found = new Set<string>();
  const seen = new Set<string>();
  const candidates: CensusDataset[] = [];
  for (const d of input.datasets) {
    if (wanted) {
      const hit = [d.dataset_id, d.dataset_version_id].filter((x) => wanted.has(x));
      if (!hit.length) {
        unmatched++;
        continue;
      }
      hit.forEach((x) => found.add(x));
    }
    const key = d.dataset_id || d.dataset_version_id;
    if (seen.has(key)) {
      items.push(itemOf(d, "skip", "listed twice; the first record is used"));
      continue;
    }
    seen.add(key);
    const why = filterReason(d, filters);
    if (why) {
      if (wanted) items.push(itemOf(d, "skip", `does not match the filters: ${why}`));
      else unmatched++;
      continue;
    }
    candidates.push(d);
  }
  if (input.ids) {
    for (const bad of input.ids.invalid) {
      items.push(idOnlyItem(bad.text, `${input.ids.file}:${bad.line}: ${unsafeIdReason("id", bad.text)}`));
    }
    for (const id of input.ids.ids) {
      if (!found.has(id)) items.push(idOnlyItem(id, `${input.ids.file}: ${id} is not among the public datasets (withdrawn, private, or mistyped?)`));
    }
  }

  // oldest first: a budget keeps choosing the same datasets as new ones are published
  const order = (d: CensusDataset) => `${d.published_at ?? "\uffff"}\u0000${d.dataset_id}`;
  candidates.sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));

  let selected = 0;
  let selectedBytes = 0;
  for (const d of candidates) {
    if (d.tombstone) {
      items.push(itemOf(d, "skip", "withdrawn (tombstone)"));
      continue;
    }
    if (d.processing_status && d.processing_status.toUpperCase() !== "SUCCESS") {
      items.push(itemOf(d, "skip", `not processed (processing_status ${displayText(d.processing_status, 40)})`));
      continue;
    }
    const asset = h5adAsset(d);
    if (!asset) {
      const types = [...new Set(d.assets.map((a) => a.filetype).filter(Boolean))];
      items.push(itemOf(d, "skip", `no H5AD asset${types.length ? ` (only ${displayText(types.join(", "), 60)})` : ""}`));
      continue;
    }
    const unsafe = unsafeIdReason("dataset_id", d.dataset_id) ?? unsafeIdReason("dataset_version_id", d.dataset_version_id);
    if (unsafe) {
      items.push(itemOf(d, "error", unsafe));
      continue;
    }
    if (!httpUrl(asset.url)) {
      items.push(itemOf(d, "error", `H5AD asset URL ${displayText(asset.url, 100)} is not an http(s) URL`));
      continue;
    }
    if (asset.filesize === undefined || asset.filesize <= 0) {
      items.push(itemOf(d, "skip", "the API gives no filesize for the H5AD asset, so a download could not be checked"));
      continue;
    }
    if (budgets.maxDatasets !== undefined && selected >= budgets.maxDatasets) {
      items.push(itemOf(d, "skip", `beyond --max-datasets ${budgets.maxDatasets}`));
      continue;
    }
    if (budgets.maxBytes !== undefined && selectedBytes + asset.filesize > budgets.maxBytes) {
      items.push(itemOf(d, "skip", `${formatBytes(asset.filesize)} would exceed --max-bytes ${formatBytes(budgets.maxBytes)} (${formatBytes(selectedBytes)} selected)`));
      continue;
    }
    selected++;
    selectedBytes += asset.filesize;
    const item = itemOf(d, "fetch");
    item.path = `${d.dataset_id}/${d.dataset_version_id}.h5ad`;
    if (input.out) {
      const p = datasetPaths(input.out, d.dataset_id, d.dataset_version_id);
      const notes: string[] = [];
      const have = fileSize(p.final);
      const rec = input.manifest?.get(d.dataset_version_id);
      if (have === asset.filesize) {
        item.action = "present";
        item.recorded = Boolean(rec);
        if (!rec) notes.push("not in the manifest yet: hashed and recorded on the run");
      } else {
        if (have !== undefined) notes.push(`the file in place has ${formatCount(have)} bytes, not ${formatCount(asset.filesize)}: fetched again`);
        else if (rec) notes.push("in the manifest but the file is missing: fetched again");
        const part = fileSize(p.part);
        if (part !== undefined && part > 0 && part <= asset.filesize) {
          item.partial_bytes = part;
          notes.push(`resumes at ${formatBytes(part)}`);
        }
      }
      const older = otherVersions(p.dir, d.dataset_version_id);
      if (older.length) notes.push(`older version(s) in ${displayId(d.dataset_id)}/: ${older.join(", ")} (kept; preprocess would read them too)`);
      if (notes.length) item.reason = notes.join("; ");
    }
    items.push(item);
  }

  const order2: Record<PlanAction, number> = { fetch: 0, present: 1, skip: 2, error: 3 };
  const sorted = items.map((it, i) => ({ it, i })).sort((a, b) => order2[a.it.action] - order2[b.it.action] || a.i - b.i).map((x) => x.it);
  const totals: PlanTotals = {
    listed: input.datasets.length,
    unmatched,
    selected: { datasets: 0, bytes: 0, cells: 0 },
    present: { datasets: 0, bytes: 0 },
    fetch: { datasets: 0, bytes: 0, partialBytes: 0 },
    skipped: 0,
    errors: 0,
  };
  for (const it of sorted) {
    if (it.action === "fetch" || it.action === "present") {
      totals.selected.datasets++;
      totals.selected.bytes += it.bytes ?? 0;
      totals.selected.cells += it.cell_count ?? 0;
      const t = it.action === "fetch" ? totals.fetch : totals.present;
      t.datasets++;
      t.bytes += it.bytes ?? 0;
      if (it.action === "fetch") totals.fetch.partialBytes += it.partial_bytes ?? 0;
    } else if (it.action === "skip") totals.skipped++;
    else totals.errors++;
  }
  return { source: input.source, out: input.out, items: sorted, totals };
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + " ".repeat(n - s.length);
}

/** The plan as text for stdout (one line per dataset shown, then totals). */
export function formatPlan(plan: Plan): string {
  const lines: string[] = [];
  lines.push(`census-fetch plan: ${plan.totals.listed} datasets listed by ${displayText(plan.source, 200)}${plan.out ? `; output ${displayText(plan.out, 200)}` : ""}`);
  if (plan.items.length) {
    lines.push(`  ${pad("ACTION", 8)}${pad("DATASET_ID", 38)}${pad("VERSION_ID", 38)}${pad("SIZE", 10)}${pad("CELLS", 11)}TITLE / REASON`);
  }
  for (const it of plan.items) {
    const size = it.bytes !== undefined ? formatBytes(it.bytes) : "-";
    const cells = it.cell_count !== null ? formatCount(it.cell_count) : "-";
    const desc =
      it.action === "fetch" || it.action === "present"
        ? `${displayText(it.title, 80)}${it.assay.length ? ` [${displayText(it.assay.join(", "), 60)}; ${displayText(it.organism.join(", "), 60)}]` : ""}${it.reason ? ` (${displayText(it.reason, 300)})` : ""}`
        : `${displayText(it.reason ?? "", 300)}${it.title ? ` — ${displayText(it.title, 60)}` : ""}`;
    lines.push(`  ${pad(it.action, 8)}${pad(displayId(it.dataset_id), 38)}${pad(it.dataset_version_id ? displayId(it.dataset_version_id) : "-", 38)}${pad(size, 10)}${pad(cells, 11)}${desc}`);
  }
  const t = plan.totals;
  lines.push(
    `selected: ${t.selected.datasets} datasets, ${formatBytes(t.selected.bytes)}, ${formatCount(t.selected.cells)} cells; ` +
      `already present: ${t.present.datasets} (${formatBytes(t.present.bytes)}); ` +
      `to download: ${t.fetch.datasets} (${formatBytes(t.fetch.bytes - t.fetch.partialBytes)}${t.fetch.partialBytes ? `; ${formatBytes(t.fetch.partialBytes)} more already in partial files` : ""})`,
  );
  lines.push(`skipped: ${t.skipped}; errors: ${t.errors}; not matching the filters: ${formatCount(t.unmatched)}`);
  return lines.join("\n") + "\n";
}
