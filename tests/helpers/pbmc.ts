import h5wasm from "h5wasm/node";
import { shared } from "./paths.js";

export const PBMC_COUNTS = shared("h5ad/pbmc68k_reduced_counts.h5ad");

/** layers/counts of pbmc68k_reduced_counts.h5ad read with h5wasm directly (not through gm's reader). */
export async function readPbmcCounts(): Promise<{ indptr: number[]; indices: Int32Array; data: Int32Array; genes: string[]; cells: string[] }> {
  await h5wasm.ready;
  const f = new h5wasm.File(PBMC_COUNTS, "r");
  try {
    return {
      indptr: Array.from(f.get("layers/counts/indptr").value as BigInt64Array, Number),
      indices: f.get("layers/counts/indices").value as Int32Array,
      data: f.get("layers/counts/data").value as Int32Array,
      genes: f.get("var/index").value as string[],
      cells: f.get("obs/index").value as string[],
    };
  } finally {
    f.close();
  }
}
