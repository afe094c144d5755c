export * from "./metrics/index.js";
export * from "./analysis/index.js";
export * from "./report/index.js";
export * from "./tasks/integration.js";
