export * from "./rng.js";
export * from "./knn.js";
export * from "./umap.js";
export * from "./cluster.js";
