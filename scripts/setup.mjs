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
  // hnswlib-node compiles with node-gyp at install: point it at this Node's own headers so it never
  // downloads them (CI reaches only the npm registry).
  const nodeDir = path.resolve(path.dirname(process.execPath), "..");
  const gypEnv = !process.env.npm_config_nodedir && fs.existsSync(path.join(nodeDir, "include", "node", "node_api.h")) ? { npm_config_nodedir: nodeDir } : {};
  run("npx", ["--yes", PNPM, "install", "--frozen-lockfile", "--config.confirmModulesPurge=false"], { ONNXRUNTIME_NODE_INSTALL: "skip", CI: process.env.CI ?? "true", ...gypEnv });
  fs.writeFileSync(stamp, want);
}
if (!process.argv.includes("--install-only")) {
  run(process.execPath, [path.join(root, "node_modules", "typescript", "bin", "tsc"), "-b", "packages/core", "packages/data", "packages/census", "packages/engine", "packages/train", "packages/eval", "packages/onnx", "packages/cli"]);
  if (!process.argv.includes("--no-native")) buildNative();
}

// The C++ engine (native/): cmake-js compiles it against Node-API; rebuilt when its sources change.
function buildNative() {
  const nativeDir = path.join(root, "native");
  const out = path.join(nativeDir, "build");
  const addon = path.join(out, "Release", "gm_native.node");
  const nativeStamp = path.join(out, ".gm-native-stamp");
  const hash = createHash("sha1");
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (p !== out && e.name !== "wasm") walk(p);
      } else {
        hash.update(p).update(fs.readFileSync(p));
      }
    }
  };
  walk(nativeDir);
  // The CUDA backend detection (native/cmake/cuda.cmake) runs when CMake configures and reads these
  // variables: when they change, configure again (the old cache would keep the old answer).
  const cudaEnv = JSON.stringify(["GM_CUDA", "GM_CUDA_HOME", "CUDA_HOME", "CUDA_PATH", "GM_NVIDIA_WHEELS"].map((k) => process.env[k] ?? null));
  hash.update(cudaEnv);
  const wantNative = hash.digest("hex");
  if (fs.existsSync(addon) && fs.existsSync(nativeStamp) && fs.readFileSync(nativeStamp, "utf8") === wantNative) return;
  const envStamp = path.join(out, ".gm-native-env");
  if (fs.existsSync(envStamp) && fs.readFileSync(envStamp, "utf8") !== cudaEnv) fs.rmSync(path.join(out, "CMakeCache.txt"), { force: true });
  ensureToolchain();
  console.error("gm setup: building the native engine (native/ -> native/build) ...");
  const cmakeJs = path.join(root, "packages", "engine", "node_modules", "cmake-js", "bin", "cmake-js");
  execFileSync(process.execPath, [cmakeJs, "compile", "--directory", nativeDir, "--out", out], {
    cwd: path.join(root, "packages", "engine"),
    stdio: ["ignore", "ignore", "inherit"],
  });
  fs.writeFileSync(nativeStamp, wantNative);
  fs.writeFileSync(envStamp, cudaEnv);
}

// cmake, a C++ compiler and OpenBLAS: installed with apt-get when missing and we are root.
function ensureToolchain() {
  const has = (cmd) => {
    try {
      execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  };
  // The OpenMP build of OpenBLAS shares our OpenMP threads (see native/CMakeLists.txt); the pthread
  // build also works, about 15% slower, so it is upgraded when we can install packages.
  const arch = ["x86_64", "aarch64"];
  const blasOmp = arch.some((a) => fs.existsSync(`/usr/include/${a}-linux-gnu/openblas-openmp/cblas.h`));
  const blas = blasOmp || arch.some((a) => fs.existsSync(`/usr/include/${a}-linux-gnu/openblas-pthread/cblas.h`)) || fs.existsSync("/usr/include/openblas/cblas.h");
  const missing = [];
  if (!has("cmake")) missing.push("cmake");
  if (!has("g++")) missing.push("g++");
  if (!blas) missing.push("libopenblas-openmp-dev");
  const root_ = typeof process.getuid === "function" && process.getuid() === 0;
  if (!missing.length) {
    if (!blasOmp && root_ && has("apt-get")) {
      try {
        execFileSync("sh", ["-c", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-openmp-dev"], { stdio: "ignore" });
      } catch {
        // keep the pthread build
      }
    }
    return;
  }
  if (root_ && has("apt-get")) {
    console.error(`gm setup: installing ${missing.join(", ")} with apt-get ...`);
    try {
      execFileSync("sh", ["-c", `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing.join(" ")}`], { stdio: ["ignore", "ignore", "inherit"] });
      return;
    } catch {
      // fall through to the message below
    }
  }
  console.error(`gm setup: the native engine needs ${missing.join(", ")}; install them (Debian/Ubuntu: sudo apt-get install ${missing.join(" ")}) and run npm run setup again`);
  process.exit(1);
}
