//! A fixture filter that exercises host calls on command, so the harness's own tests run against a real .wasm.
