//! Rate-limit filter: per-customer, per-client, per-address and proxy-wide limits per banking
//! operation, one bucket per key shared by every worker of the proxy, refusing with 429 and
//! the IETF `RateLimit` fields.
//!
//! [`config`], [`bucket`], [`key`], [`policy`], [`store`] and [`fields`] are the pure core;
//! `filter` is the thin proxy-wasm shell.

pub mod bucket;
pub mod config;
pub mod fields;
pub mod key;
pub mod policy;
pub mod store;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
mod filter;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
banking_filter_common::filter_main!(|_| Box::new(filter::Root::default()), [response_headers]);
