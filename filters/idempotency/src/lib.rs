//! Idempotency filter: one execution per `Idempotency-Key` on payment routes.
//!
//! [`config`], [`key`], [`fingerprint`], [`record`], [`policy`], [`store`] (the embedded
//! store) and [`webdis`] (Redis through Webdis) are the pure core; `filter` is the thin
//! proxy-wasm shell.

pub mod config;
pub mod fingerprint;
pub mod key;
pub mod policy;
pub mod record;
pub mod store;
pub mod webdis;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
mod filter;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
banking_filter_common::filter_main!(
    |id| Box::new(filter::Root::new(id)),
    [
        request_body,
        request_trailers,
        response_headers,
        response_body,
        log,
        done
    ]
);
