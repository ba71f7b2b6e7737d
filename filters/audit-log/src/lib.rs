//! Audit-log filter: one masked, hash-chained record per request (PCI DSS v4.0.1 Requirement
//! 10), shipped over OTLP without silent loss.
//!
//! Pure core so far: [`mask`] (card numbers, IBANs and e-mail addresses, before anything
//! leaves the VM), [`record`] (the request record, PCI DSS 10.2.2's fields), [`chain`] (the
//! per-VM hash chain and its canonical bytes) and [`verify`] (what `audit-verify` checks).
//! The proxy-wasm shell, OTLP shipping and the `audit-verify` binary are not built yet.

pub mod chain;
pub mod mask;
pub mod record;
pub mod verify;
