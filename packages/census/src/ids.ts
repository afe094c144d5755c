/**
 * Dataset ids become folder and file names under OUT, so they are checked against a strict pattern
 * before any path is made from them; titles and other free text never reach a path.
 */
import * as path from "node:path";

/** UUID-like: letters, digits and hyphens, starting with a letter or digit, at most 128 characters. */
export const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9-]{0,127}$/;

export function isSafeId(id: unknown): id is string {
  return typeof id === "string" && SAFE_ID.test(id);
}

/** Free text from the API made safe for one terminal line: no control characters, bounded length. */
export function displayText(s: unknown, max = 200): string {
  const t = (typeof s === "string" ? s : s === undefined || s === null ? "" : JSON.stringify(s)) ?? "";
  // C0 and C1 controls and DEL (escape sequences could rewrite the terminal), and line separators
  // eslint-disable-next-line no-control-regex
  const clean = t.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, "?");
  return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean;
}

/** An id for messages: as is when safe, else quoted with odd characters shown. */
export function displayId(id: unknown): string {
  if (isSafeId(id)) return id;
  return JSON.stringify(displayText(id, 80));
}

/** Why an id is refused, or undefined when it is safe. */
export function unsafeIdReason(what: string, id: unknown): string | undefined {
  if (isSafeId(id)) return undefined;
  if (typeof id !== "string" || id === "") return `missing ${what}`;
  return `unsafe ${what} ${displayId(id)} (ids must match ${SAFE_ID.source}); refusing to make a path from it`;
}

export interface DatasetPaths {
  /** OUT/<dataset_id> */
  dir: string;
  /** OUT/<dataset_id>/<dataset_version_id>.h5ad */
  final: string;
  /** OUT/<dataset_id>/.<dataset_version_id>.h5ad.part: the download in progress (kept across runs for resume) */
  part: string;
  /** OUT/<dataset_id>/.<dataset_version_id>.h5ad.part.json: the validators (ETag, size, URL) of the partial bytes */
  partMeta: string;
  /** final, relative to OUT with forward slashes (as recorded in the manifest) */
  relative: string;
}

/**
 * Paths of one dataset version under OUT. Throws when an id is unsafe; also checks (defence in
 * depth) that every path stays inside OUT.
 */
export function datasetPaths(out: string, datasetId: string, versionId: string): DatasetPaths {
  const bad = unsafeIdReason("dataset_id", datasetId) ?? unsafeIdReason("dataset_version_id", versionId);
  if (bad) throw new Error(bad);
  const root = path.resolve(out);
  const dir = path.join(root, datasetId);
  const p: DatasetPaths = {
    dir,
    final: path.join(dir, `${versionId}.h5ad`),
    part: path.join(dir, `.${versionId}.h5ad.part`),
    partMeta: path.join(dir, `.${versionId}.h5ad.part.json`),
    relative: `${datasetId}/${versionId}.h5ad`,
  };
  for (const f of [p.dir, p.final, p.part, p.partMeta]) {
    const rel = path.relative(root, f);
    if (!rel || rel.startsWith("..") || path.isAbsolute(rel)) throw new Error(`path ${displayText(f)} would leave ${displayText(root)}; refusing`);
  }
  return p;
}
