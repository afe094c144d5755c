import type { Logger } from "@gm/core";
import { GmError, usageError } from "@gm/core";
import { censusFetch, formatPlan, formatSummary, parseSize, type CensusFetchResult } from "@gm/census";

/** Values from a config file bypass commander's parsers: check them here. */
function intValue(v: unknown, name: string, min: number): number {
  const n = typeof v === "number" ? v : Number(v);
  if (!Number.isInteger(n) || n < min) throw usageError(`${name} must be an integer >= ${min} (got ${JSON.stringify(v)})`);
  return n;
}

function sizeValue(v: unknown, name: string): number {
  const n = typeof v === "number" ? v : parseSize(String(v));
  if (n === undefined || !Number.isFinite(n) || n < 0) {
    throw usageError(`${name} ${JSON.stringify(v)}: not a size; use bytes or a unit, e.g. 500GB, 1.5TiB, 750MiB (KB/MB/GB/TB = powers of 1000, K/M/G/T and KiB.. = powers of 1024)`);
  }
  return n;
}

function strings(v: unknown, name: string): string[] {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const x of list) if (typeof x !== "string" || !x.trim()) throw usageError(`${name} takes a non-empty name or ontology term id`);
  return (list as string[]).map((s) => s.trim());
}

function apiUrlValue(v: unknown): string {
  const s = String(v ?? "");
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw usageError(`--api-url ${JSON.stringify(s)}: not a URL; e.g. https://api.cellxgene.cziscience.com/curation/v1`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw usageError(`--api-url ${JSON.stringify(s)}: must be an http(s) URL`);
  return s;
}

function jsonResult(r: CensusFetchResult): unknown {
  return r.dryRun ? { dry_run: true, plan: r.plan } : { dry_run: false, totals: r.plan.totals, fetched: r.fetched, present: r.present, failed: r.failed, bytes_downloaded: r.bytesDownloaded, seconds: r.seconds, outcomes: r.outcomes, skipped: r.plan.items.filter((i) => i.action === "skip") };
}

export async function run(o: Record<string, unknown>, _args: string[], log: Logger): Promise<void> {
  const dryRun = Boolean(o.dryRun);
  const out = o.out as string | undefined;
  if (!dryRun && !out) throw usageError("gm census-fetch needs --out DIR (or --dry-run to print the plan)");
  const verify = String(o.verify ?? "full");
  if (verify !== "full" && verify !== "size") throw usageError(`--verify ${JSON.stringify(verify)}: use full or size`);
  const schemaVersion = o.schemaVersion === undefined ? undefined : String(o.schemaVersion).trim();
  if (schemaVersion !== undefined && !/^\d+(\.\d+){0,2}$/.test(schemaVersion)) throw usageError(`--schema-version ${JSON.stringify(schemaVersion)}: use X, X.Y or X.Y.Z, e.g. 5.2`);

  const r = await censusFetch(
    {
      apiUrl: apiUrlValue(o.apiUrl),
      out,
      dryRun,
      filters: {
        organism: strings(o.organism, "--organism"),
        assay: strings(o.assay, "--assay"),
        tissue: strings(o.tissue, "--tissue"),
        disease: strings(o.disease, "--disease"),
        minCells: intValue(o.minCells ?? 0, "--min-cells", 0),
        schemaVersion,
        primaryOnly: Boolean(o.primaryOnly),
      },
      idsFile: o.datasets as string | undefined,
      budgets: {
        maxDatasets: o.maxDatasets === undefined ? undefined : intValue(o.maxDatasets, "--max-datasets", 1),
        maxBytes: o.maxBytes === undefined ? undefined : sizeValue(o.maxBytes, "--max-bytes"),
      },
      concurrency: intValue(o.concurrency ?? 2, "--concurrency", 1),
      retries: intValue(o.retries ?? 10, "--retries", 0),
      keepFree: sizeValue(o.keepFree ?? "1GiB", "--keep-free"),
      verify,
    },
    log,
  );

  process.stdout.write(o.json ? JSON.stringify(jsonResult(r), null, 2) + "\n" : dryRun ? formatPlan(r.plan) : formatSummary(r));
  if (r.exitCode) {
    const failed = r.outcomes.filter((x) => x.status === "failed");
    const n = r.plan.totals.selected.datasets + r.plan.totals.errors;
    throw new GmError(
      dryRun
        ? `the plan has ${failed.length} error(s), first: ${failed[0].message}`
        : `${failed.length} of ${n} dataset(s) failed, first: ${failed[0].message}; the others are complete, and re-running the same command retries the failed ones`,
      r.exitCode as 3 | 4,
    );
  }
}
