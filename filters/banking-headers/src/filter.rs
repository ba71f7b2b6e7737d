//! The proxy-wasm shell: reads the request from Envoy, asks the policy, applies the decision.

use crate::config::{BankingHeader, Config};
use crate::policy::{self, Decision, Outcome};
use banking_filter_common::host;
use banking_filter_common::ids;
use banking_filter_common::metrics::OutcomeCounters;
use banking_filter_common::problem::Problem;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;

/// Counter names are `banking_headers_<outcome>`.
const METRICS_FILTER: &str = "headers";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    host::install_panic_hook();
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// What every stream shares: the validated config and the counters, fixed at configure time.
struct Plugin {
    config: Config,
    counters: Option<OutcomeCounters<Outcome>>,
}

#[derive(Default)]
struct Root {
    plugin: Option<Rc<Plugin>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log::error!("banking-headers: {e}");
                return false;
            }
        };
        // Counters are for watching, not for deciding: without them the filter still works.
        let counters = OutcomeCounters::define(METRICS_FILTER)
            .map_err(|e| log::warn!("banking-headers: counters unavailable: {e}"))
            .ok();
        self.plugin = Some(Rc::new(Plugin { config, counters }));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            plugin: self.plugin.clone(),
            correlation_id: None,
        }))
    }
}

struct Stream {
    plugin: Option<Rc<Plugin>>,
    /// Set once the request is allowed; echoed on the response.
    correlation_id: Option<String>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _count: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            // Envoy does not start streams for a plugin whose configuration failed; if one
            // arrives anyway, fail closed.
            return refuse_unconfigured();
        };
        let headers = host::request_headers();
        let decision = policy::decide(&plugin.config, &headers, || {
            ids::random_bytes::<16>()
                .map_err(|e| log::error!("banking-headers: no randomness: {}", e.0))
                .ok()
        });
        if let Some(counters) = &plugin.counters {
            for outcome in policy::outcomes(&decision) {
                counters.increment(outcome);
            }
        }
        match decision {
            Decision::Allow {
                set_headers,
                remove_headers,
                correlation_id,
                ..
            } => {
                if let Err(e) = apply(&remove_headers, &set_headers) {
                    return refuse_unmodifiable(&e);
                }
                self.correlation_id = Some(correlation_id);
                Action::Continue
            }
            Decision::Bypass { remove_headers } => match apply(&remove_headers, &[]) {
                Ok(()) => Action::Continue,
                Err(e) => refuse_unmodifiable(&e),
            },
            Decision::Deny {
                reason, problem, ..
            } => {
                log::debug!("banking-headers: refused: {}", reason.slug());
                let echo = problem
                    .correlation_id
                    .as_deref()
                    .map(|id| (BankingHeader::CorrelationId.name(), id));
                host::send_problem(&problem, echo.as_slice());
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _count: usize, _end_of_stream: bool) -> Action {
        if let Some(id) = &self.correlation_id
            && let Err(e) = host::set_response_header(BankingHeader::CorrelationId.name(), id)
        {
            log::warn!("banking-headers: could not echo the correlation id: {e}");
        }
        Action::Continue
    }
}

/// Applies header changes; an internal header that cannot be removed must not reach the
/// upstream, so any failure is returned for the caller to refuse the request.
fn apply(remove: &[String], set: &[(String, String)]) -> Result<(), String> {
    for name in remove {
        host::remove_request_header(name).map_err(|e| format!("removing {name}: {e}"))?;
    }
    for (name, value) in set {
        host::set_request_header(name, value).map_err(|e| format!("setting {name}: {e}"))?;
    }
    Ok(())
}

fn refuse_unmodifiable(error: &str) -> Action {
    log::error!("banking-headers: request refused, headers could not be rewritten: {error}");
    host::send_problem(
        &Problem::new(
            500,
            "header-rewrite-failed",
            "Request headers could not be rewritten",
            "the proxy could not apply the banking-header policy to this request",
        ),
        &[],
    );
    Action::Pause
}

fn refuse_unconfigured() -> Action {
    log::error!("banking-headers: request refused, the plugin is not configured");
    host::send_problem(
        &Problem::new(
            500,
            "filter-not-configured",
            "Banking-header filter not configured",
            "the proxy's banking-header filter has no valid configuration",
        ),
        &[],
    );
    Action::Pause
}
