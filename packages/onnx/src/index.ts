export * from "./proto.js";
export * from "./metadata.js";
export * from "./graph.js";
export * from "./export.js";
export * from "./runtime.js";
