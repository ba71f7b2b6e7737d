//! Native proxy-wasm host on wasmtime that runs the real compiled filters.
