/**
 * OUT/manifest.jsonl: one JSON line per dataset version that was downloaded and verified, written
 * after the file was renamed into place. One line per dataset_version_id: a refetch replaces the
 * line (the file is rewritten atomically); a new download appends one (fsync'd).
 *
 * Reading is tolerant: a line cut short by a crash, or a duplicate, is dropped and the file is
 * repaired (rewritten atomically) before the next write.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "@gm/core";

export const MANIFEST_NAME = "manifest.jsonl";

/** What the plan and the manifest both record of a dataset version. */
export interface DatasetDescription {
  dataset_id: string;
  dataset_version_id: string;
  title: string;
  collection_id: string;
  collection_name: string;
  organism: string[];
  assay: string[];
  tissue: string[];
  disease: string[];
  cell_count: number | null;
  schema_version: string;
}

export interface ManifestEntry extends DatasetDescription {
  /** file size in bytes (equal to the API's filesize) */
  bytes: number;
  /** hex sha256 of the file */
  sha256: string;
  /** where it was downloaded from */
  url: string;
  /** the file, relative to OUT: <dataset_id>/<dataset_version_id>.h5ad */
  path: string;
  /** ISO 8601 time the download completed (or, for a file found in place unrecorded, its mtime) */
  fetched_at: string;
}

function isEntry(v: unknown): v is ManifestEntry {
  const o = v as ManifestEntry;
  return Boolean(o) && typeof o === "object" && typeof o.dataset_id === "string" && typeof o.dataset_version_id === "string" && typeof o.sha256 === "string" && typeof o.bytes === "number";
}

export class Manifest {
  readonly file: string;
  private readonly byVersion = new Map<string, ManifestEntry>();
  /** lines that were unreadable or duplicated on load */
  readonly dropped: number;
  private needsRewrite: boolean;

  private constructor(file: string, entries: ManifestEntry[], dropped: number, needsRewrite: boolean) {
    this.file = file;
    for (const e of entries) this.byVersion.set(e.dataset_version_id, e);
    this.dropped = dropped;
    this.needsRewrite = needsRewrite;
  }

  /** Read OUT/manifest.jsonl (absent = empty). */
  static load(out: string): Manifest {
    const file = path.join(out, MANIFEST_NAME);
    let text = "";
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    const entries = new Map<string, ManifestEntry>();
    let dropped = 0;
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        dropped++;
        continue;
      }
      if (!isEntry(v)) {
        dropped++;
        continue;
      }
      if (entries.has(v.dataset_version_id)) dropped++;
      entries.set(v.dataset_version_id, v); // the last line wins
    }
    const needsRewrite = dropped > 0 || (text.length > 0 && !text.endsWith("\n"));
    return new Manifest(file, [...entries.values()], dropped, needsRewrite);
  }

  get size(): number {
    return this.byVersion.size;
  }

  get(versionId: string): ManifestEntry | undefined {
    return this.byVersion.get(versionId);
  }

  entries(): ManifestEntry[] {
    return [...this.byVersion.values()];
  }

  /** Rewrite the file when loading found damage (call before writing; dry runs never do). */
  repair(): boolean {
    if (!this.needsRewrite) return false;
    this.rewrite();
    return true;
  }

  /** Add or replace the line of entry.dataset_version_id. */
  record(entry: ManifestEntry): void {
    const replacing = this.byVersion.has(entry.dataset_version_id);
    this.byVersion.set(entry.dataset_version_id, entry);
    if (replacing || this.needsRewrite) {
      this.rewrite();
      return;
    }
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const fd = fs.openSync(this.file, "a");
    try {
      fs.writeSync(fd, JSON.stringify(entry) + "\n");
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Drop the line of a version whose file turned out bad. */
  remove(versionId: string): boolean {
    if (!this.byVersion.delete(versionId)) return false;
    this.rewrite();
    return true;
  }

  private rewrite(): void {
    writeFileAtomic(this.file, this.entries().map((e) => JSON.stringify(e) + "\n").join(""));
    this.needsRewrite = false;
  }
}
