export * from "./config.js";
export * from "./model.js";
export * from "./safetensors.js";
export { gpuRuntimeReport, gpuScanFromEnv, loadNative, ADDON_PATH, BUILD_INFO_PATH, type GpuOptions, type GpuRuntimeReport, type NativeBuildInfo } from "./native.js";
export * from "./head.js";
export { distanceSums } from "./analysis.js";
export * from "./folder.js";
