export * from "./config.js";
export * from "./model.js";
export * from "./safetensors.js";
export { loadNative, ADDON_PATH } from "./native.js";
export * from "./head.js";
export { distanceSums } from "./analysis.js";
export * from "./folder.js";
