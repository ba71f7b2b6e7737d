//! JWT validation filter with banking scopes and customer binding.
//!
//! A pure, host-agnostic core decides every request: [`config`] (the pluginConfig),
//! [`jwks`] (key sets), [`signature`] (the proxy's BoringSSL through [`native`] for RS* and
//! ES*, ring in Wasm for the rest and for proxies without it), [`token`] (finding and pre-checking tokens), [`verify`] (signature and claims),
//! [`policy`] (scopes, customer binding, outputs and the identity handed on), [`cache`]
//! (verified tokens), [`key_manager`] (each provider's keys and when a remote set is
//! fetched) and [`fetch`] (the shared-data protocol that lets the workers share one fetch).
//! `filter` is the thin proxy-wasm shell around it, left out of `wasm32-unknown-unknown`
//! builds, where the core's tests run under wasm-bindgen-test.

pub mod base64url;
pub mod cache;
pub mod config;
pub mod decision;
pub mod fetch;
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub mod filter;
pub mod jwks;
pub mod key_manager;
pub mod native;
pub mod policy;
pub mod signature;
pub mod token;
pub mod verify;

#[cfg(test)]
mod testkeys;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
banking_filter_common::filter_main!(
    |context_id| Box::new(filter::Root::new(context_id)),
    request_headers_only
);
