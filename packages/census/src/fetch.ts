/**
 * `gm census-fetch`: list, plan, then download (bounded concurrency) and record each dataset version.
 * Per-dataset failures are collected and the run goes on; the caller turns them into the exit code.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { ExitCode, GmError, asOutputError, inputError, removeStaleTemporaries, type Logger } from "@gm/core";
import { CellxgeneApi } from "./api.js";
import { datasetFailure, downloadDataset, sha256File, SpaceBook } from "./download.js";
import { describeError, retryPolicy } from "./http.js";
import { datasetPaths, displayText } from "./ids.js";
import { acquireLock } from "./lock.js";
import { Manifest, type ManifestEntry } from "./manifest.js";
import { buildPlan, parseIdList, type Budgets, type Filters, type Plan, type PlanItem } from "./plan.js";
import { createFetchProgress, type FetchProgress } from "./progress.js";
import { formatBytes, formatCount, formatDuration } from "./size.js";

export interface CensusFetchOptions {
  apiUrl: string;
  out?: string;
  dryRun: boolean;
  filters: Filters;
  /** --datasets FILE */
  idsFile?: string;
  budgets: Budgets;
  concurrency: number;
  /** consecutive failed attempts allowed per request */
  retries: number;
  /** bytes to leave free on OUT's file system */
  keepFree: number;
  /** re-runs check present files by size + sha256 ("full") or size only ("size") */
  verify: "full" | "size";
  /** progress bars (default: stderr is a TTY and GM_NO_PROGRESS unset) */
  progress?: boolean;
}

export type OutcomeStatus = "fetched" | "present" | "failed";

export interface DatasetOutcome {
  dataset_id: string;
  dataset_version_id: string;
  status: OutcomeStatus;
  path?: string;
  bytes?: number;
  sha256?: string;
  /** fetched: bytes already on disk from an earlier run */
  resumed_from?: number;
  attempts?: number;
  /** present: found in place without a manifest line, hashed and recorded */
  recovered?: boolean;
  /** present: failed verification and was fetched again */
  refetched?: boolean;
  message?: string;
  exit_code?: number;
}

export interface CensusFetchResult {
  plan: Plan;
  dryRun: boolean;
  outcomes: DatasetOutcome[];
  fetched: number;
  present: number;
  failed: number;
  bytesDownloaded: number;
  seconds: number;
  /** 0, or 3 (input: API, network, bad ids) / 4 (output: disk full, permissions) when datasets failed */
  exitCode: number;
}

function manifestEntry(item: PlanItem, bytes: number, sha256: string, fetchedAt: Date): ManifestEntry {
  return {
    dataset_id: item.dataset_id,
    dataset_version_id: item.dataset_version_id,
    title: item.title,
    collection_id: item.collection_id,
    collection_name: item.collection_name,
    organism: item.organism,
    assay: item.assay,
    tissue: item.tissue,
    disease: item.disease,
    cell_count: item.cell_count,
    schema_version: item.schema_version,
    bytes,
    sha256,
    url: item.url ?? "",
    path: `${item.dataset_id}/${item.dataset_version_id}.h5ad`,
    fetched_at: fetchedAt.toISOString(),
  };
}

function readIds(file: string): ReturnType<typeof parseIdList> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw inputError(file, code === "ENOENT" ? "ids file not found; check the --datasets path" : `cannot read the ids file (${code})`);
  }
  return parseIdList(text);
}

export async function censusFetch(o: CensusFetchOptions, log: Logger): Promise<CensusFetchResult> {
  const t0 = Date.now();
  const policy = retryPolicy(o.retries);
  const ids = o.idsFile ? { ...readIds(o.idsFile), file: o.idsFile } : undefined;
  if (ids && ids.ids.length === 0 && ids.invalid.length === 0) throw inputError(o.idsFile!, "the ids file holds no dataset ids (one per line)");
  const out = o.out ? path.resolve(o.out) : undefined;

  let release: (() => void) | undefined;
  if (!o.dryRun) {
    if (!out) throw new GmError("census-fetch needs --out DIR (or --dry-run)", ExitCode.usage);
    try {
      fs.mkdirSync(out, { recursive: true });
    } catch (e) {
      throw asOutputError(e) ?? e;
    }
    release = acquireLock(out);
    const stale = removeStaleTemporaries(out);
    if (stale) log.info({ out, stale }, `removed ${stale} stale temporary file(s) from ${out}`);
  }
  try {
    const api = new CellxgeneApi(o.apiUrl, policy, log);
    let listing;
    try {
      listing = await api.listDatasets(o.filters.schemaVersion);
    } catch (e) {
      throw new GmError(`cannot list datasets from ${displayText(o.apiUrl, 200)}: ${describeError(e)}; check --api-url / GM_CELLXGENE_API_URL and the network`, ExitCode.input);
    }
    log.info({ source: listing.source, datasets: listing.datasets.length, pages: listing.pages }, `${listing.datasets.length} datasets listed by ${listing.source}`);

    const manifest = out && fs.existsSync(out) ? Manifest.load(out) : undefined;
    if (manifest && manifest.dropped) log.warn({ file: manifest.file, dropped: manifest.dropped }, `${manifest.file}: ${manifest.dropped} unreadable or duplicated line(s) dropped`);
    if (manifest && !o.dryRun) manifest.repair();

    const plan = buildPlan({ datasets: listing.datasets, source: listing.source, filters: o.filters, budgets: o.budgets, ids, out, manifest });
    const t = plan.totals;
    log.info(
      { selected: t.selected, present: t.present, fetch: t.fetch, skipped: t.skipped, errors: t.errors, unmatched: t.unmatched },
      `plan: ${t.selected.datasets} datasets (${formatBytes(t.selected.bytes)}, ${formatCount(t.selected.cells)} cells), ${t.present.datasets} present, ${t.fetch.datasets} to fetch (${formatBytes(t.fetch.bytes - t.fetch.partialBytes)}), ${t.skipped} skipped, ${t.errors} errors`,
    );
    const outcomes: DatasetOutcome[] = [];
    for (const it of plan.items) {
      if (it.action === "skip") log.info({ dataset: it.dataset_id, reason: it.reason }, `skip ${displayText(it.dataset_id, 80)}: ${displayText(it.reason, 300)}`);
      if (it.action === "error") {
        const message = `${displayText(it.dataset_id, 80)}: ${displayText(it.reason, 300)}`;
        outcomes.push({ dataset_id: it.dataset_id, dataset_version_id: it.dataset_version_id, status: "failed", message, exit_code: ExitCode.input });
        if (!o.dryRun) log.error({ dataset: it.dataset_id }, message);
      }
    }
    if (o.dryRun) return finishResult(plan, true, outcomes, t0);

    const work = [...plan.items.filter((i) => i.action === "present"), ...plan.items.filter((i) => i.action === "fetch")];
    const progress = createFetchProgress({ totalBytes: t.fetch.bytes, startBytes: t.fetch.partialBytes, datasets: work.length, enabled: o.progress, log });
    const space = new SpaceBook();
    const ctx = { o, out: out!, manifest: manifest ?? Manifest.load(out!), progress, space, log, policy };
    const results: DatasetOutcome[] = new Array(work.length);
    let next = 0;
    const worker = async () => {
      while (next < work.length) {
        const i = next++;
        results[i] = await runItem(work[i], ctx);
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.max(1, Math.min(o.concurrency, work.length)) }, worker));
    } finally {
      progress.stop();
    }
    outcomes.push(...results);
    return finishResult(plan, false, outcomes, t0);
  } finally {
    release?.();
  }
}

function finishResult(plan: Plan, dryRun: boolean, outcomes: DatasetOutcome[], t0: number): CensusFetchResult {
  const failed = outcomes.filter((x) => x.status === "failed");
  return {
    plan,
    dryRun,
    outcomes,
    fetched: outcomes.filter((x) => x.status === "fetched").length,
    present: outcomes.filter((x) => x.status === "present").length,
    failed: failed.length,
    bytesDownloaded: outcomes.reduce((s, x) => s + (x.status === "fetched" ? (x.bytes ?? 0) - (x.resumed_from ?? 0) : 0), 0),
    seconds: (Date.now() - t0) / 1000,
    exitCode: failed.length === 0 ? 0 : failed.some((x) => x.exit_code === ExitCode.output) ? ExitCode.output : ExitCode.input,
  };
}

interface RunContext {
  o: CensusFetchOptions;
  out: string;
  manifest: Manifest;
  progress: FetchProgress;
  space: SpaceBook;
  log: Logger;
  policy: ReturnType<typeof retryPolicy>;
}

async function runItem(item: PlanItem, c: RunContext): Promise<DatasetOutcome> {
  const base = { dataset_id: item.dataset_id, dataset_version_id: item.dataset_version_id, path: item.path };
  const p = datasetPaths(c.out, item.dataset_id, item.dataset_version_id);
  const expected = item.bytes!;
  let refetched = false;
  try {
    if (item.action === "present") {
      const bad = await verifyPresent(item, p.final, c);
      if (!bad.reason) {
        // leftovers of a run killed between the rename and the clean-up
        fs.rmSync(p.part, { force: true });
        fs.rmSync(p.partMeta, { force: true });
        c.progress.settle(0, true);
        return { ...base, status: "present", bytes: expected, sha256: bad.sha256, recovered: bad.recovered };
      }
      c.log.warn({ dataset: item.dataset_id, reason: bad.reason }, `${item.dataset_id}: ${bad.reason}; fetching it again`);
      refetched = true;
      c.progress.addTotal(expected);
    }
    // a file in place that is not the one we want (wrong size or failed verification) goes first
    if (fs.existsSync(p.final)) {
      fs.rmSync(p.final, { force: true });
      c.manifest.remove(item.dataset_version_id);
    }
    if (fs.existsSync(p.dir)) removeStaleTemporaries(p.dir);
    const bar = c.progress.transfer(item.dataset_id, expected, refetched ? 0 : (item.partial_bytes ?? 0));
    let ok = false;
    try {
      const r = await downloadDataset(
        { label: item.dataset_id, url: item.url!, expectedBytes: expected, paths: p },
        { policy: c.policy, log: c.log, keepFree: c.o.keepFree, space: c.space, bar },
      );
      const prev = c.manifest.get(item.dataset_version_id);
      if (prev && prev.sha256 !== r.sha256 && prev.bytes === r.bytes) {
        c.log.warn({ dataset: item.dataset_id, before: prev.sha256, now: r.sha256 }, `${item.dataset_id}: the new download's sha256 differs from the one recorded earlier for this version; recording the new one`);
      }
      c.manifest.record(manifestEntry(item, r.bytes, r.sha256, new Date()));
      ok = true;
      c.log.info(
        { dataset: item.dataset_id, version: item.dataset_version_id, bytes: r.bytes, sha256: r.sha256, resumedFrom: r.resumedFrom, attempts: r.attempts },
        `fetched ${item.path} (${formatBytes(r.bytes)}${r.resumedFrom ? `, resumed at ${formatBytes(r.resumedFrom)}` : ""}${r.attempts > 1 ? `, ${r.attempts} attempts` : ""})`,
      );
      return { ...base, status: "fetched", refetched: refetched || undefined, bytes: r.bytes, sha256: r.sha256, resumed_from: r.resumedFrom, attempts: r.attempts };
    } finally {
      bar.finish(ok);
    }
  } catch (e) {
    const f = datasetFailure(item.dataset_id, e);
    c.log.error({ dataset: item.dataset_id, exitCode: f.exitCode }, f.message);
    return { ...base, status: "failed", message: f.message, exit_code: f.exitCode, refetched: refetched || undefined };
  }
}

/** Check a file found in place: size, then sha256 against the manifest; record it when unrecorded. */
async function verifyPresent(item: PlanItem, file: string, c: RunContext): Promise<{ reason?: string; sha256?: string; recovered?: boolean }> {
  const st = fs.statSync(file);
  if (st.size !== item.bytes) return { reason: `the file has ${formatCount(st.size)} bytes, the API says ${formatCount(item.bytes!)}` };
  const rec = c.manifest.get(item.dataset_version_id);
  if (rec && rec.bytes !== st.size) return { reason: `the file has ${formatCount(st.size)} bytes, the manifest says ${formatCount(rec.bytes)}` };
  if (rec && c.o.verify === "size") return { sha256: rec.sha256 };
  const { sha256 } = await sha256File(file);
  if (rec && rec.sha256 !== sha256) return { reason: `sha256 ${sha256.slice(0, 12)}… differs from the manifest's ${rec.sha256.slice(0, 12)}… (damaged file)` };
  if (!rec) {
    // renamed into place (after its size check) by a run that stopped before writing the manifest line
    c.manifest.record(manifestEntry(item, st.size, sha256, st.mtime));
    c.log.info({ dataset: item.dataset_id, sha256 }, `${item.path}: in place but not in the manifest; hashed and recorded`);
    return { sha256, recovered: true };
  }
  return { sha256 };
}

/** The end-of-run summary for stdout. */
export function formatSummary(r: CensusFetchResult): string {
  const lines: string[] = [];
  const refetched = r.outcomes.filter((x) => x.refetched && x.status === "fetched").length;
  const resumed = r.outcomes.filter((x) => x.status === "fetched" && (x.resumed_from ?? 0) > 0).length;
  lines.push(
    `census-fetch: ${r.fetched} fetched (${formatBytes(r.bytesDownloaded)} downloaded${resumed ? `, ${resumed} resumed` : ""}${refetched ? `, ${refetched} refetched after failing verification` : ""}), ` +
      `${r.present} already present and verified, ${r.plan.totals.skipped} skipped, ${r.failed} failed, in ${formatDuration(r.seconds)}${r.plan.out ? ` -> ${displayText(r.plan.out, 200)}` : ""}`,
  );
  const failed = r.outcomes.filter((x) => x.status === "failed");
  if (failed.length) {
    lines.push("failed:");
    for (const f of failed) lines.push(`  ${displayText(f.message, 400)}`);
  }
  return lines.join("\n") + "\n";
}
