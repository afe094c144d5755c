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

export function tmpDir(prefix = "gm-test-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}
