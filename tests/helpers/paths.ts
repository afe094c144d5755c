import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** Real data shipped beside the repository (never copied into it). */
export const sharedData = path.resolve(repoRoot, "../shared/data");
export const hasShared = fs.existsSync(path.join(sharedData, "h5ad"));
export const shared = (...p: string[]) => path.join(sharedData, ...p);
export const gmBin = path.join(repoRoot, "packages/cli/bin/gm.js");

/** nvcc: the first of PATH and /usr/local/cuda/bin, or null. */
export function findNvcc(): string | null {
  for (const dir of [...(process.env.PATH ?? "").split(path.delimiter).filter(Boolean), "/usr/local/cuda/bin"]) {
    const p = path.join(dir, "nvcc");
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

const made: string[] = [];
let hooked = false;

/** A fresh temporary folder, removed when the test process exits (GM_KEEP_TMP=1 keeps it). */
export function tmpDir(prefix = "gm-test-"): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(d);
  if (!hooked && !process.env.GM_KEEP_TMP) {
    hooked = true;
    process.once("exit", () => {
      for (const m of made) fs.rmSync(m, { recursive: true, force: true });
    });
  }
  return d;
}
