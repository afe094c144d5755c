export * from "./plots.js";
export * from "./html.js";
