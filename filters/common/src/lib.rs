//! What every banking filter shares, written once: the host boundary ([`host`]: every
//! proxy-wasm import wrapped to return errors, the exports and their dispatcher, failing
//! closed), config loading and error reporting, problem+json responses, byte-safe header
//! access, the clock, id generation, a CAS retry loop over shared data, and metrics.
//!
//! Everything except [`host`] (and the few host-backed items marked in each module) is
//! plain Rust over plain data: it unit-tests natively and also runs compiled to
//! `wasm32-unknown-unknown` under wasm-bindgen-test, where the proxy-wasm parts are left out.

pub mod clock;
pub mod config;
pub mod headers;
pub mod identity;
pub mod ids;
pub mod metrics;
pub mod mode;
pub mod pattern;
pub mod problem;
pub mod protobuf;
pub mod record;
pub mod route;
pub mod shared;
pub mod slots;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub mod host;
