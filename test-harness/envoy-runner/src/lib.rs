//! A real Envoy in front of the demo upstream, configured from `wasmplugins/` the way istiod
//! would: what `make run` (the `local-envoy` binary) and the end-to-end tests stand on. It
//! does not depend on wasmtime or on the emulated host: `make run` builds only this, the demo
//! services and Envoy's configuration.
//!
//! The Envoy bootstrap is generated from the WasmPlugin files themselves, so the local setup
//! cannot drift from what a cluster applies:
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use demo_services::DemoUpstream;
//! use envoy_runner::{self as envoy, BootstrapOptions, RunningEnvoy, StartOptions};
//!
//! let repo = envoy::repo_root();
//! let plugins = envoy::load_wasmplugins(&repo.join("wasmplugins"))?;   // istiod's order
//! let upstream = DemoUpstream::start("127.0.0.1:0".parse()?)?;
//! let options = BootstrapOptions::ephemeral(upstream.addr(), envoy::wasm_dir());
//! let bootstrap = envoy::bootstrap(&envoy::only(&plugins, &["banking-headers"])?, &options)?;
//! let proxy = RunningEnvoy::start(&envoy::find_envoy(&repo)?, &bootstrap, &StartOptions::for_test("demo"))?;
//! let response = envoy::client::get(proxy.listener(), "/health", std::time::Duration::from_secs(5))?;
//! assert_eq!(response.status, 200);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`wasmplugin`]: reads `WasmPlugin` resources and orders them as istiod does.
//! - [`bootstrap`]: the Envoy bootstrap (listener with Istio's default path normalisation,
//!   HTTP filters, the demo upstream and named clusters, admin).
//! - [`locate`]: finds Envoy (`$ENVOY`, `envoy` on PATH, `func-e run`, `.venv/bin/envoy`).
//! - [`process`]: starts Envoy, waits until it serves, and kills it when dropped.
//! - [`client`]: a raw HTTP/1.1 client, so tests can send bytes no ordinary client would.
//! - [`redis`]: Redis behind Webdis from `deploy/idempotency-redis/`, the idempotency
//!   filter's shared store.
//! - [`fixture`]: the end-to-end tests' Envoy under test, bounded in requests and time, and
//!   the test data the emulated host's tests share with them.
//!
//! The services Envoy talks to (demo upstream, identity provider, JWKS server) are in the
//! `demo-services` crate, declared per filter there.

pub mod bootstrap;
pub mod client;
pub mod fixture;
pub mod locate;
pub mod process;
pub mod redis;
pub mod wasmplugin;

use std::fmt;

pub use bootstrap::{
    BootstrapOptions, NamedCluster, PathNormalization, bootstrap, write_plugin_config,
};
pub use locate::{EnvoyBinary, find_envoy};
pub use process::{RunningEnvoy, StartOptions};
// Where things are, defined once for the workspace and shared with the emulated host.
pub use wasmplugin::{FailStrategy, Phase, WasmPlugin, load_wasmplugins, only, wasmplugin_files};
pub use workspace_dirs::{repo_root, target_dir, wasm_dir};

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

impl From<demo_services::DemoError> for EnvoyError {
    fn from(error: demo_services::DemoError) -> Self {
        EnvoyError(error.0)
    }
}
