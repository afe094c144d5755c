/**
 * The WebAssembly kernels (native/wasm/rank.c, built by scripts/build-wasm.sh into
 * packages/data/wasm/rank.wasm): ranking, block tokenization and t-digest accumulation. The module
 * is compiled once per thread; each caller gets its own instance (its own memory).
 */
import { readFileSync } from "node:fs";

let compiled: WebAssembly.Module | undefined;

export function newKernelInstance<T>(): T {
  if (!compiled) {
    // Resolved next to dist/ (packages/data/wasm/rank.wasm): shipped, not built at install time.
    compiled = new WebAssembly.Module(readFileSync(new URL("../wasm/rank.wasm", import.meta.url)));
  }
  // asin from the host so that t-digest decisions are bit-identical to the TypeScript port
  return new WebAssembly.Instance(compiled, { env: { asin: Math.asin } }).exports as unknown as T;
}
