//! The proxy-wasm shell: reads the request from Envoy, asks the policy, applies the decision.
//!
//! A refusal is also recorded in filter state (filter and reason slug, the common
//! contract's `banking.decision.*`, declared read-only where the proxy can) for the
//! audit-log filter.

use crate::config::{BankingHeader, Config};
use crate::policy::{self, Decision, Outcome};
use banking_filter_common::host::filter_state;
use banking_filter_common::host::{self, Action, RootContext, StreamContext};
use banking_filter_common::identity::names;
use banking_filter_common::ids;
use banking_filter_common::metrics::OutcomeCounters;
use banking_filter_common::mode::WouldDenyLog;
use std::cell::RefCell;
use std::rc::Rc;

/// Counter names are `banking_headers_<outcome>`.
const METRICS_FILTER: &str = "headers";
/// How this filter names itself in logs.
const FILTER: &str = "banking-headers";

/// What every stream shares: the validated config and the counters, fixed at configure time.
struct Plugin {
    config: Config,
    counters: OutcomeCounters<Outcome>,
    /// Dry-run: when each would-be refusal reason was last logged.
    would_deny_log: RefCell<WouldDenyLog>,
}

#[derive(Default)]
pub(crate) struct Root {
    plugin: Option<Rc<Plugin>>,
}

impl RootContext for Root {
    fn on_configure(&mut self, configuration: &[u8]) -> bool {
        let config = match Config::from_json(configuration) {
            Ok(c) => c,
            Err(e) => {
                log::error!("{FILTER}: {e}");
                return false;
            }
        };
        let counters = OutcomeCounters::define(METRICS_FILTER);
        filter_state::declare_and_log(FILTER, &names::REFUSAL);
        if config.mode.is_dry_run() {
            log::warn!("{FILTER}: dry-run mode: requests are never refused, only counted");
        }
        self.plugin = Some(Rc::new(Plugin {
            config,
            counters,
            would_deny_log: RefCell::default(),
        }));
        true
    }

    fn new_stream(&self, _context_id: u32) -> Box<dyn StreamContext> {
        Box::new(Stream {
            plugin: self.plugin.clone(),
            correlation_id: None,
        })
    }
}

struct Stream {
    plugin: Option<Rc<Plugin>>,
    /// Set once the request is allowed; echoed on the response.
    correlation_id: Option<String>,
}

impl StreamContext for Stream {
    fn on_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            // Envoy does not start streams for a plugin whose configuration failed; if one
            // arrives anyway, fail closed.
            return host::fail_closed(FILTER, "a stream arrived before a valid configuration");
        };
        let headers = match host::request_headers() {
            Ok(headers) => headers,
            Err(e) => return host::fail_closed_on(FILTER, &e),
        };
        let decision = policy::decide(&plugin.config, &headers, || {
            ids::random_bytes::<16>()
                .map_err(|e| log::error!("{FILTER}: no randomness: {}", e.0))
                .ok()
        });
        // Counted once applied: a request failed closed was not allowed.
        let outcomes = policy::outcomes(&decision);
        let count = || {
            for outcome in &outcomes {
                plugin.counters.increment(*outcome);
            }
        };
        match decision {
            Decision::Allow {
                set_headers,
                remove_headers,
                correlation_id,
                ..
            } => {
                if let Err(e) = apply(&remove_headers, &set_headers) {
                    return host::fail_closed_on(FILTER, &e);
                }
                count();
                self.correlation_id = Some(correlation_id);
                Action::Continue
            }
            Decision::Bypass { remove_headers } => match apply(&remove_headers, &[]) {
                Ok(()) => {
                    count();
                    Action::Continue
                }
                Err(e) => host::fail_closed_on(FILTER, &e),
            },
            Decision::Deny {
                reason,
                remove_headers,
                ..
            } if plugin.config.mode.is_dry_run() => {
                // Internal headers still go: dry-run relaxes refusals, not protection.
                if let Err(e) = apply(&remove_headers, &[]) {
                    return host::fail_closed_on(FILTER, &e);
                }
                for outcome in &outcomes {
                    plugin.counters.increment(match outcome {
                        Outcome::Rejected(r) => Outcome::WouldDeny(*r),
                        other => *other,
                    });
                }
                let slug = reason.slug();
                filter_state::report_would_deny(FILTER, slug, slug, &plugin.would_deny_log);
                Action::Continue
            }
            Decision::Deny {
                reason, problem, ..
            } => {
                count();
                log::debug!("{FILTER}: refused: {}", reason.slug());
                // Best effort: the audit trail must not turn this answer into another one.
                filter_state::record_refusal(FILTER, reason.slug());
                let echo = problem
                    .correlation_id
                    .as_deref()
                    .map(|id| (BankingHeader::CorrelationId.name(), id));
                host::refuse(FILTER, &problem, echo.as_slice())
            }
        }
    }

    fn on_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        // The echo is a courtesy to the client, not a control: a refusal costs a log line.
        if let Some(id) = &self.correlation_id
            && let Err(e) =
                host::set_response_header(BankingHeader::CorrelationId.name(), id.as_bytes())
        {
            log::warn!("{FILTER}: could not echo the correlation id: {e}");
        }
        Action::Continue
    }
}

/// Applies header changes; an internal header that cannot be removed must not reach the
/// upstream, so the first refusal is returned for the caller to fail closed on.
fn apply(remove: &[String], set: &[(String, String)]) -> Result<(), host::HostError> {
    for name in remove {
        host::remove_request_header(name)?;
    }
    for (name, value) in set {
        host::set_request_header(name, value.as_bytes())?;
    }
    Ok(())
}
