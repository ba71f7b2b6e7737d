//! Audit-log filter: one masked, hash-chained record per request (PCI DSS v4.0.1 Requirement
//! 10), shipped over OTLP without silent loss.
//!
//! [`config`], [`mask`] (card numbers, IBANs and e-mail addresses, before anything leaves the
//! VM), [`record`] (the request record, PCI DSS 10.2.2's fields), [`body`] (banking
//! context picked from JSON bodies), [`chain`] (the per-VM hash
//! chain and its canonical bytes), [`otlp`] (the outbox and OTLP/HTTP JSON batches) and
//! [`verify`] (what `tools/audit-verify` checks) are the pure core; `filter` is the thin
//! proxy-wasm shell.

pub mod body;
pub mod chain;
pub mod config;
pub mod mask;
pub mod otlp;
pub mod record;
pub mod verify;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
mod filter;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
banking_filter_common::filter_main!(
    |id| Box::new(filter::Root::new(id)),
    [request_body, log, done]
);
