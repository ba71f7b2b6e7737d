//! Which demo service each filter calls, declared once per filter, so the Envoy runner starts
//! what the running filters need without knowing any filter.
//!
//! A filter that calls out (`dispatch_http_call`) names an Envoy cluster in its `pluginConfig`
//! the way a mesh names it (`outbound|443||idp.bank.svc.cluster.local`). Locally, `make run`
//! looks up each running filter in [`DECLARATIONS`], asks the declared [`DemoService`] which
//! clusters that configuration calls, points those clusters at the service on loopback, and
//! starts it. A new filter that calls out adds one [`Declaration`] here, plus a service if none
//! of the existing ones answers what it asks.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;

use crate::DemoError;
use crate::identity_provider::IdentityProvider;
use crate::otlp_collector::OtlpCollectorService;

/// A filter and the demo service that answers its callouts.
pub struct Declaration {
    /// The filter: its crate, its WasmPlugin's `metadata.name`.
    pub filter: &'static str,
    /// The service standing in for what it calls.
    pub service: &'static dyn DemoService,
    /// A counter of the filter's (`/stats` name) that turns non-zero once the filter has what
    /// it needs from the service; `make run` waits for it before printing example requests.
    pub ready_counter: Option<&'static str>,
}

/// Every filter that calls a demo service.
pub const DECLARATIONS: &[Declaration] = &[
    Declaration {
        filter: "jwt-auth",
        service: &IdentityProvider,
        ready_counter: Some("banking_jwt_auth_jwks_fetch_ok"),
    },
    Declaration {
        filter: "audit-log",
        service: &OtlpCollectorService,
        ready_counter: None,
    },
];

/// The declarations for `filter` (none for a filter that calls nothing).
pub fn declared_for(filter: &str) -> impl Iterator<Item = &'static Declaration> {
    DECLARATIONS.iter().filter(move |d| d.filter == filter)
}

/// A kind of demo service: what it reads from the calling filter's configuration, and how it
/// starts.
pub trait DemoService: Sync {
    /// A short name for the banner, e.g. `idp`.
    fn name(&self) -> &'static str;

    /// The clusters, as `plugin_config` names them, whose calls this service answers; empty
    /// when this configuration calls nothing (the service is then not started). A
    /// configuration the service cannot follow is an error naming the field.
    fn clusters(&self, plugin_config: &Value) -> Result<Vec<String>, DemoError>;

    /// Starts the service on `addr` (port 0: any free port) for `plugin_config`.
    fn start(
        &self,
        addr: SocketAddr,
        plugin_config: &Value,
    ) -> Result<Box<dyn RunningService>, DemoError>;
}

/// A started demo service; it stops when dropped.
pub trait RunningService {
    /// Where it listens.
    fn addr(&self) -> SocketAddr;

    /// One banner line: what it serves.
    fn describe(&self) -> String;

    /// Files to leave in the run's work directory, e.g. `("demo-token", token)`.
    fn files(&self) -> Vec<(&'static str, String)>;

    /// Lines showing a request through Envoy at `listener` that uses the service, printed once
    /// the filter is ready; `workdir` holds [`RunningService::files`].
    fn examples(&self, listener: SocketAddr, workdir: &Path) -> Vec<String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_filter_is_declared_at_most_once_and_names_a_filter_crate() {
        let filters = workspace_dirs::repo_root().join("filters");
        for (i, declaration) in DECLARATIONS.iter().enumerate() {
            assert!(
                filters
                    .join(declaration.filter)
                    .join("Cargo.toml")
                    .is_file(),
                "{} is declared but filters/{} does not exist",
                declaration.filter,
                declaration.filter
            );
            assert!(
                DECLARATIONS[..i]
                    .iter()
                    .all(|d| d.filter != declaration.filter),
                "{} is declared twice",
                declaration.filter
            );
        }
    }

    #[test]
    fn jwt_auth_calls_the_identity_provider_and_banking_headers_calls_nothing() {
        let names: Vec<&str> = declared_for("jwt-auth").map(|d| d.service.name()).collect();
        assert_eq!(names, ["idp"]);
        assert_eq!(declared_for("banking-headers").count(), 0);
    }
}
