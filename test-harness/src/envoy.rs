//! A real Envoy in front of a demo upstream, configured from `wasmplugins/` the way istiod would.
//!
//! This is what `make run` and the end-to-end tests stand on. The Envoy bootstrap is generated
//! from the WasmPlugin files themselves, so the local setup cannot drift from what a cluster
//! applies:
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use test_harness::envoy::{self, BootstrapOptions, DemoUpstream, RunningEnvoy, StartOptions};
//!
//! let repo = envoy::repo_root();
//! let plugins = envoy::load_wasmplugins(&repo.join("wasmplugins"))?;   // istiod's order
//! let upstream = DemoUpstream::start("127.0.0.1:0".parse()?)?;
//! let options = BootstrapOptions::ephemeral(upstream.addr(), envoy::wasm_dir(&repo));
//! let bootstrap = envoy::bootstrap(&envoy::only(&plugins, &["banking-headers"])?, &options)?;
//! let proxy = RunningEnvoy::start(&envoy::find_envoy(&repo)?, &bootstrap, &StartOptions::for_test("demo"))?;
//! let response = envoy::client::get(proxy.listener(), "/health", std::time::Duration::from_secs(5))?;
//! assert_eq!(response.status, 200);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`wasmplugin`]: reads `WasmPlugin` resources and orders them as istiod does.
//! - [`bootstrap`]: the Envoy bootstrap (listener, HTTP filters, demo upstream cluster, admin).
//! - [`locate`]: finds Envoy (`$ENVOY`, `envoy` on PATH, `func-e run`, `.venv/bin/envoy`).
//! - [`process`]: starts Envoy, waits until it serves, and kills it when dropped.
//! - [`upstream`]: the demo upstream that echoes what reached it.
//! - [`client`]: a raw HTTP/1.1 client, so tests can send bytes no ordinary client would.
//! - [`jwks_server`]: a stand-in identity provider's JWKS endpoint that can rotate keys, fail
//!   or vanish, reached through an Istio-named cluster ([`BootstrapOptions::with_cluster`]).
//! - [`demo_idp`]: the demo identity provider `make run` starts for jwt-auth: a key, its
//!   JWKS, and a ready-made token.
//! - [`jwt_minter`]: keys and tokens from Python's `cryptography`, for the end-to-end tests
//!   and `make bench`.

pub mod bootstrap;
pub mod client;
pub mod demo_idp;
pub mod jwks_server;
pub mod jwt_minter;
pub mod locate;
pub mod process;
pub mod upstream;
pub mod wasmplugin;

use std::fmt;
use std::path::{Path, PathBuf};

pub use bootstrap::{BootstrapOptions, NamedCluster, bootstrap};
pub use demo_idp::DemoIdentityProvider;
pub use jwks_server::{JwksAvailability, JwksFetch, JwksServer};
pub use locate::{EnvoyBinary, find_envoy};
pub use process::{RunningEnvoy, StartOptions};
pub use upstream::{DemoUpstream, SeenRequest};
pub use wasmplugin::{FailStrategy, Phase, WasmPlugin, load_wasmplugins, only, wasmplugin_files};

/// Why Envoy could not be configured or started; the message says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyError(pub String);

impl fmt::Display for EnvoyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EnvoyError {}

impl From<std::io::Error> for EnvoyError {
    fn from(error: std::io::Error) -> Self {
        EnvoyError(error.to_string())
    }
}

/// The repository root: this crate lives in `<root>/test-harness`.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the repo root when relative),
/// else `target/`.
pub fn target_dir(repo_root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => repo_root.join(dir),
        _ => repo_root.join("target"),
    }
}

/// Where `make wasm` leaves the filters: `<target dir>/wasm32-wasip1/release`.
pub fn wasm_dir(repo_root: &Path) -> PathBuf {
    target_dir(repo_root).join("wasm32-wasip1").join("release")
}
