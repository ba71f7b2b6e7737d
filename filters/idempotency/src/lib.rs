//! Idempotency filter: one execution per `Idempotency-Key` on payment routes.
//!
//! [`config`], [`key`], [`fingerprint`], [`record`], [`policy`] and [`store`] are the pure
//! core; `filter` is the thin proxy-wasm shell. The embedded store (shared data) is built;
//! the Redis store through Webdis is not yet.

pub mod config;
pub mod fingerprint;
pub mod key;
pub mod policy;
pub mod record;
pub mod store;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
mod filter;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
banking_filter_common::filter_main!(
    |_| Box::new(filter::Root::default()),
    [request_body, response_headers, response_body, log]
);
