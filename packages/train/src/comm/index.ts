export * from "./communicator.js";
export * from "./local-ring.js";
export * from "./topology.js";
export * from "./tcp-ring.js";
