import * as fs from "node:fs";
import * as path from "node:path";
import { randomBytes } from "node:crypto";
import { inputError } from "./errors.js";

/** A sibling temporary name in the same directory, so rename() is atomic. */
export function tempNameFor(target: string): string {
  const dir = path.dirname(target);
  return path.join(dir, `.${path.basename(target)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
}

/** Write a file through a temporary name and rename it into place: readers never see half a file. */
export function writeFileAtomic(target: string, data: string | Uint8Array): void {
  writeFileAtomicWith(target, (fd) => fs.writeSync(fd, data as never));
}

/** writeFileAtomic for content written piece by piece: `write` gets the temporary file's descriptor. */
export function writeFileAtomicWith(target: string, write: (fd: number) => void): void {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = tempNameFor(target);
  try {
    const fd = fs.openSync(tmp, "w");
    try {
      write(fd);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

export function writeJsonAtomic(target: string, value: unknown): void {
  writeFileAtomic(target, JSON.stringify(value, null, 2) + "\n");
}

/** Remove stale temporaries left by a crashed run (names made by tempNameFor). */
export function removeStaleTemporaries(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  let n = 0;
  for (const name of fs.readdirSync(dir)) {
    if (name.startsWith(".") && name.includes(".tmp-")) {
      fs.rmSync(path.join(dir, name), { recursive: true, force: true });
      n++;
    }
  }
  return n;
}

export function readJsonFile<T = unknown>(file: string, what = "JSON file"): T {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw inputError(file, code === "ENOENT" ? `${what} not found; check the path` : `cannot read ${what} (${code})`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw inputError(file, `${what} is not valid JSON (${(e as Error).message})`);
  }
}
