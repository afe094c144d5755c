/**
 * OUT/.census-fetch.lock: one writer per download folder. A lock whose process is gone (killed run)
 * is taken over; a live one is an error naming its pid.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ExitCode, GmError } from "@gm/core";

export const LOCK_NAME = ".census-fetch.lock";

interface LockInfo {
  pid: number;
  host: string;
  started: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Take the lock of OUT; returns the release function (also run on process exit). */
export function acquireLock(out: string): () => void {
  const file = path.join(out, LOCK_NAME);
  const me: LockInfo = { pid: process.pid, host: os.hostname(), started: new Date().toISOString() };
  for (let i = 0; i < 5; i++) {
    try {
      const fd = fs.openSync(file, "wx");
      try {
        fs.writeSync(fd, JSON.stringify(me) + "\n");
      } finally {
        fs.closeSync(fd);
      }
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        process.removeListener("exit", release);
        try {
          const cur = JSON.parse(fs.readFileSync(file, "utf8")) as LockInfo;
          if (cur.pid === me.pid && cur.host === me.host) fs.rmSync(file, { force: true });
        } catch {
          // gone already
        }
      };
      process.on("exit", release);
      return release;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    let other: LockInfo | undefined;
    try {
      other = JSON.parse(fs.readFileSync(file, "utf8")) as LockInfo;
    } catch {
      other = undefined; // unreadable (cut short by a crash): stale
    }
    const stale = !other || typeof other.pid !== "number" || (other.host === me.host && (other.pid === me.pid || !alive(other.pid)));
    if (!stale) {
      throw new GmError(
        `${out}: another gm census-fetch (pid ${other!.pid} on ${other!.host}, since ${other!.started}) is writing this folder; wait for it, or remove ${file} if that process is gone`,
        ExitCode.output,
      );
    }
    fs.rmSync(file, { force: true });
  }
  throw new GmError(`${file}: cannot take the lock; remove the file and retry`, ExitCode.output);
}
