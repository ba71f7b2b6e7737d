//! Banking-header enforcement filter: checks `x-customer-id`, `x-transaction-id`,
//! `x-banking-operation` and `x-correlation-id` against per-route rules, strips spoofable
//! internal headers, and answers bad requests with `400 application/problem+json`.
//!
//! [`config`] and [`policy`] are the pure core; `filter` is the thin proxy-wasm shell.

pub mod config;
pub mod policy;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
mod filter;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
banking_filter_common::filter_main!(|_| Box::new(filter::Root::default()), [response_headers]);
