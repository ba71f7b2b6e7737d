//! Idempotency filter (work in progress, issue 10): one execution per `Idempotency-Key` on
//! payment routes. So far the pure core only: the key header ([`key`]), the request
//! fingerprint ([`fingerprint`]), the stored record ([`record`]) and the semantics
//! ([`policy`]). The stores, the proxy-wasm shell and its WasmPlugin come next.

pub mod config;
pub mod fingerprint;
pub mod key;
pub mod policy;
pub mod record;
