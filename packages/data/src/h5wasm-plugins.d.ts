// h5wasm-plugins ships no types; we use one function of it.
declare module "h5wasm-plugins" {
  export function install_local_plugins(h5wasmModule: unknown): void;
}
