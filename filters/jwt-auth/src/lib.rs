//! JWT validation filter with banking scopes and customer binding.
//!
//! A pure, host-agnostic core decides every request: [`config`] (the pluginConfig),
//! [`jwks`] (key sets), [`signature`] (ring for RSA and ECDSA, jwt-simple for EdDSA and
//! HMAC), [`token`] (finding and pre-checking tokens), [`verify`] (signature and claims),
//! [`policy`] (scopes, customer binding, outputs), [`cache`] (verified tokens) and [`fetch`]
//! (when and how remote key sets are fetched and shared between workers). [`filter`] is the thin proxy-wasm shell around it.

pub mod cache;
pub mod config;
pub mod decision;
pub mod fetch;
pub mod filter;
pub mod jwks;
pub mod policy;
pub mod signature;
pub mod token;
pub mod verify;

#[cfg(test)]
mod testkeys;

banking_filter_common::filter_main!(|context_id| Box::new(filter::Root::new(context_id)));
