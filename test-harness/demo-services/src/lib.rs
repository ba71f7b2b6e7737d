//! The loopback services the filters meet when they run in a local Envoy (`make run`, the
//! end-to-end tests, `make bench`), each on a port of its own and offline:
//!
//! - [`upstream`]: the demo upstream every request is routed to; it answers with a JSON echo
//!   of what reached it, so a person or a test sees what the filters let through, added or
//!   stripped. Also a binary: `cargo run -p demo-services --bin demo-upstream -- --port 8081`.
//! - [`declared`]: which service each filter calls and how its configuration names the
//!   cluster; the Envoy runner starts the services of the filters it runs from this table.
//! - [`identity_provider`]: the demo identity provider jwt-auth calls: a key made at start-up,
//!   its JWKS, and a ready-made demo token.
//! - [`jwks_server`]: a JWKS endpoint that can rotate keys, fail or vanish, for tests.
//! - [`jwt_minter`]: keys and tokens from Python's `cryptography` (`scripts/mint_jwt.py`), an
//!   implementation other than the filter's.
//! - [`otlp_collector`]: an OTLP/HTTP JSON logs collector for audit-log's records, which can
//!   be switched off and on.
//! - [`wire`]: the HTTP/1.1 reading these servers and the Envoy runner's raw client share.

pub mod declared;
pub mod identity_provider;
pub mod jwks_server;
pub mod jwt_minter;
pub mod otlp_collector;
pub mod upstream;
pub mod wire;

#[cfg(test)]
mod test_client;

use std::fmt;

pub use declared::{DECLARATIONS, Declaration, DemoService, RunningService, declared_for};
pub use identity_provider::DemoIdentityProvider;
pub use jwks_server::{JwksAvailability, JwksFetch, JwksServer};
pub use otlp_collector::OtlpCollector;
pub use upstream::{DemoUpstream, SeenRequest};

/// Why a demo service could not start or a token could not be minted; the message says what
/// to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoError(pub String);

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DemoError {}

impl From<std::io::Error> for DemoError {
    fn from(error: std::io::Error) -> Self {
        DemoError(error.to_string())
    }
}
