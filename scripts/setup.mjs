#!/usr/bin/env node
// Installs dependencies (pnpm, pinned, through npx — only Node 20 + npm are needed) and builds the
// TypeScript packages. Idempotent and quick when nothing changed; `npm run demo` and `npm test` call it.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PNPM = "pnpm@10.34.8";

const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 20 || (major === 20 && minor < 17)) {
  console.error(`gm needs Node >= 20.17 (found ${process.versions.node}); install a newer Node.js`);
  process.exit(1);
}

function run(cmd, args, env = {}) {
  execFileSync(cmd, args, { cwd: root, stdio: "inherit", env: { ...process.env, ...env } });
}

const lock = path.join(root, "pnpm-lock.yaml");
const stamp = path.join(root, "node_modules", ".gm-install-stamp");
const want = createHash("sha1")
  .update(fs.readFileSync(lock))
  .update(fs.readdirSync(path.join(root, "packages")).map((p) => fs.readFileSync(path.join(root, "packages", p, "package.json"), "utf8")).join("\n"))
  .digest("hex");
const have = fs.existsSync(stamp) ? fs.readFileSync(stamp, "utf8") : "";
if (have !== want) {
  console.error(`gm setup: installing dependencies with ${PNPM} ...`);
  // onnxruntime-node (used by later commands) must not download CUDA binaries at install time.
  run("npx", ["--yes", PNPM, "install", "--frozen-lockfile", "--config.confirmModulesPurge=false"], { ONNXRUNTIME_NODE_INSTALL: "skip", CI: process.env.CI ?? "true" });
  fs.writeFileSync(stamp, want);
}
if (!process.argv.includes("--install-only")) {
  run(process.execPath, [path.join(root, "node_modules", "typescript", "bin", "tsc"), "-b", "packages/core", "packages/data", "packages/census", "packages/cli"]);
}
