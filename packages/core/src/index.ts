export * from "./errors.js";
export * from "./fsutil.js";
export * from "./log.js";
export * from "./progress.js";
export * from "./workers.js";
export * from "./version.js";
