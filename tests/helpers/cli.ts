import { spawnSync } from "node:child_process";
import { gmBin, repoRoot } from "./paths.js";

export interface GmResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the real gm binary (JSON logs, no progress bars). */
export function gm(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): GmResult {
  const r = spawnSync(process.execPath, [gmBin, "--log-format", "json", ...args], {
    cwd: opts.cwd ?? repoRoot,
    env: { ...process.env, GM_NO_PROGRESS: "1", ...opts.env },
    encoding: "utf8",
    timeout: 300_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** The stderr lines that are not JSON log records (i.e. what a user reads as errors). */
export function errorLines(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l.trim() && !l.startsWith("{"));
}
