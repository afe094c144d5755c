export * from "./types.js";
export * from "./h5ad/read.js";
