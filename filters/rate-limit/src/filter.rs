//! The proxy-wasm shell: reads the request, the verified identity and the clock from Envoy,
//! asks the policy, charges buckets in shared data, applies the decision.
//!
//! A refusal is also recorded in filter state (the common contract's `banking.decision.*`,
//! declared read-only where the proxy can) for the audit-log filter. Every worker's root
//! context counts the slots in use once per [`CENSUS_PERIOD`] for the occupancy gauges.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use banking_filter_common::host::filter_state;
use banking_filter_common::host::{self, Action, RootContext, StreamContext};
use banking_filter_common::identity::names;
use banking_filter_common::metrics::{Counter, Gauge, Outcome, OutcomeCounters, metric_name};
use banking_filter_common::route;
use banking_filter_common::shared::HostSharedData;
use banking_filter_common::slots::SlotEvent;
use banking_filter_common::{ids, record};

use crate::config::{Config, FILTER};
use crate::fields::response_fields;
use crate::key::{self, KeySecret};
use crate::policy::{self, Applicable, Decision, LimitOutcome, Reason, Request};
use crate::store::{self, SlotBuckets};

/// Counter names are `banking_rate_limit_<what>`.
const METRICS_FILTER: &str = "rate_limit";
/// How often each worker counts a part of each limit's slots for the slots-in-use gauge.
const CENSUS_PERIOD: Duration = Duration::from_secs(5);
/// Slots a tick reads per limit: a bounded pause of the worker's event loop whatever the
/// table's size (a 4,096-slot table is counted through every 20 s).
const CENSUS_SLOTS_PER_TICK: u32 = 1024;

/// Where a limit's rolling count stands: the live slots of each part last counted.
#[derive(Default)]
struct Census {
    next: u32,
    live_by_part: Vec<u64>,
}

/// One limit's counters and gauge.
struct LimitMetrics {
    /// In `LimitOutcome::ALL` order.
    outcomes: Vec<Counter>,
    slots_in_use: Gauge,
}

impl LimitMetrics {
    fn define(limit: &str) -> LimitMetrics {
        LimitMetrics {
            outcomes: LimitOutcome::ALL
                .iter()
                .map(|o| {
                    Counter::define(&metric_name(
                        METRICS_FILTER,
                        &format!("{}_{limit}", o.suffix()),
                    ))
                })
                .collect(),
            slots_in_use: Gauge::define(&metric_name(
                METRICS_FILTER,
                &format!("slots_in_use_{limit}"),
            )),
        }
    }

    fn count(&self, outcome: LimitOutcome) {
        if let Some(i) = LimitOutcome::ALL.iter().position(|o| *o == outcome)
            && let Some(counter) = self.outcomes.get(i)
        {
            counter.increment();
        }
    }
}

/// What every stream shares: the validated config and the counters, fixed at configure time.
struct Plugin {
    config: Config,
    limits: Vec<LimitMetrics>,
    slot_events: OutcomeCounters<SlotEvent>,
    identity_required: Counter,
    unavailable: Counter,
    refunds_failed: Counter,
    /// Dry-run: when each limit's would-be refusal was last logged (monotonic ms).
    would_limit_logged: RefCell<Vec<Option<u64>>>,
    /// The proxy's secret slot keys are hashed with.
    secret: KeySecret,
    /// Per limit.
    census: RefCell<Vec<Census>>,
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
        let secret_name = format!("{}key-secret", record::key_prefix(FILTER, &config.instance));
        let secret = match store::key_secret(&HostSharedData, &secret_name, || {
            ids::random_bytes::<32>().ok()
        }) {
            Ok(secret) => secret,
            Err(e) => {
                log::error!("{FILTER}: {e}; refusing the configuration");
                return false;
            }
        };
        filter_state::declare_and_log(FILTER, &names::REFUSAL);
        if config.mode.is_dry_run() {
            log::warn!("{FILTER}: dry-run mode: requests are never refused, only counted");
        }
        log::info!(
            "{FILTER}: {} limits, buckets in shared data take at most {} bytes",
            config.limits.len(),
            config.memory_bound_bytes()
        );
        if let Err(e) = host::set_tick_period(CENSUS_PERIOD) {
            log::warn!("{FILTER}: no tick ({e}); the slots-in-use gauges stay at 0");
        }
        let limits = config
            .limits
            .iter()
            .map(|l| LimitMetrics::define(&l.name))
            .collect();
        let would_limit_logged = RefCell::new(vec![None; config.limits.len()]);
        let census = RefCell::new(config.limits.iter().map(|_| Census::default()).collect());
        self.plugin = Some(Rc::new(Plugin {
            limits,
            slot_events: OutcomeCounters::define(METRICS_FILTER),
            identity_required: Counter::define(&metric_name(METRICS_FILTER, "identity_required")),
            unavailable: Counter::define(&metric_name(METRICS_FILTER, "unavailable")),
            refunds_failed: Counter::define(&metric_name(METRICS_FILTER, "refund_failed")),
            would_limit_logged,
            secret,
            census,
            config,
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(plugin) = &self.plugin else {
            return;
        };
        let Ok(now) = host::monotonic_nanos() else {
            return;
        };
        let mut progress = plugin.census.borrow_mut();
        for ((limit, metrics), census) in plugin
            .config
            .limits
            .iter()
            .zip(&plugin.limits)
            .zip(progress.iter_mut())
        {
            let start = census.next;
            let part = (start / CENSUS_SLOTS_PER_TICK) as usize;
            let range = start..start.saturating_add(CENSUS_SLOTS_PER_TICK);
            match limit
                .table
                .census_of(&HostSharedData, now / 1_000_000, range)
            {
                Ok(counted) => {
                    if census.live_by_part.len() <= part {
                        census.live_by_part.resize(part + 1, 0);
                    }
                    if let Some(live) = census.live_by_part.get_mut(part) {
                        *live = u64::from(counted.live);
                    }
                    metrics.slots_in_use.set(census.live_by_part.iter().sum());
                }
                Err(e) => log::debug!("{FILTER}: census of {} failed: {e:?}", limit.name),
            }
            let next = start.saturating_add(CENSUS_SLOTS_PER_TICK);
            census.next = if next >= limit.table.slot_count() {
                0
            } else {
                next
            };
        }
    }

    fn new_stream(&self, _context_id: u32) -> Box<dyn StreamContext> {
        Box::new(Stream {
            plugin: self.plugin.clone(),
            response_fields: Vec::new(),
        })
    }
}

struct Stream {
    plugin: Option<Rc<Plugin>>,
    /// Added to the response: the most restrictive limit's standing.
    response_fields: Vec<(&'static str, String)>,
}

impl StreamContext for Stream {
    fn on_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            return host::fail_closed(FILTER, "a stream arrived before a valid configuration");
        };
        let config = &plugin.config;
        let headers = match host::request_headers() {
            Ok(headers) => headers,
            Err(e) => return host::fail_closed_on(FILTER, &e),
        };
        let limits = match policy::applicable(config, &headers) {
            Applicable::None => return Action::Continue,
            Applicable::Limits(limits) => limits,
            Applicable::InvalidPath(defect) => {
                if config.mode.is_dry_run() {
                    filter_state::record_would_deny(FILTER, route::INVALID_PATH);
                    return Action::Continue;
                }
                filter_state::record_refusal(FILTER, route::INVALID_PATH);
                return host::refuse(FILTER, &defect.problem(), &[]);
            }
        };
        let identity = if policy::needs_identity(config, &limits) {
            match filter_state::read_identity() {
                Ok(identity) => identity,
                Err(e) => {
                    return host::fail_closed(FILTER, &format!("verified identity: {e}"));
                }
            }
        } else {
            None
        };
        let now_ns = match host::monotonic_nanos() {
            Ok(now) => now,
            Err(e) => return host::fail_closed_on(FILTER, &e),
        };
        let on_event = |event| plugin.slot_events.increment(event);
        let buckets = SlotBuckets {
            store: &HostSharedData,
            on_event: &on_event,
        };
        let request = Request {
            headers: &headers,
            identity: identity.as_ref(),
            now_ns,
            secret: &plugin.secret,
        };
        let peer = || {
            host::property(&["source", "address"])
                .ok()
                .flatten()
                .and_then(|a| key::parse_address(&a))
        };
        let evaluation = policy::decide(config, &limits, &request, peer, &buckets);
        let dry_run = config.mode.is_dry_run();
        for (limit, outcome) in &evaluation.outcomes {
            // In dry-run nothing is refused: what would have been is counted as such.
            let outcome = match outcome {
                LimitOutcome::Limited | LimitOutcome::ContentionDenied if dry_run => {
                    LimitOutcome::WouldLimit
                }
                other => *other,
            };
            if let Some(metrics) = plugin.limits.get(*limit) {
                metrics.count(outcome);
            }
        }
        if evaluation.refunds_failed > 0 {
            plugin
                .refunds_failed
                .add(u64::from(evaluation.refunds_failed));
        }
        match evaluation.decision {
            Decision::Unlimited => Action::Continue,
            Decision::Allowed { most_restrictive } => {
                if config.response_fields.on_allowed
                    && let Some(standing) = most_restrictive
                {
                    self.response_fields = response_fields(config, &standing, None);
                }
                Action::Continue
            }
            Decision::Limited {
                reason,
                standing,
                retry_after_s,
            } => {
                if dry_run {
                    self.would_limit(&plugin, standing.limit, reason, now_ns);
                    return Action::Continue;
                }
                filter_state::record_refusal(FILTER, reason.slug());
                let problem = policy::problem(config, reason, standing.limit, retry_after_s);
                let fields = response_fields(config, &standing, Some(retry_after_s));
                let extra: Vec<(&str, &str)> =
                    fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
                host::refuse(FILTER, &problem, &extra)
            }
            Decision::Refused { reason, limit } => {
                if dry_run {
                    if let Some(metrics) = plugin.limits.get(limit) {
                        metrics.count(LimitOutcome::WouldLimit);
                    }
                    self.would_limit(&plugin, limit, reason, now_ns);
                    return Action::Continue;
                }
                match reason {
                    Reason::IdentityRequired => plugin.identity_required.increment(),
                    _ => plugin.unavailable.increment(),
                }
                filter_state::record_refusal(FILTER, reason.slug());
                let problem = policy::problem(config, reason, limit, 1);
                let extra: &[(&str, &str)] = if reason == Reason::Unavailable {
                    &[("retry-after", "1")]
                } else {
                    &[]
                };
                host::refuse(FILTER, &problem, extra)
            }
        }
    }

    fn on_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        // Advice to the client, not a control: a refused write costs a log line.
        for (name, value) in &self.response_fields {
            if let Err(e) = host::set_response_header(name, value.as_bytes()) {
                log::warn!("{FILTER}: could not add {name}: {e}");
                break;
            }
        }
        Action::Continue
    }
}

impl Stream {
    /// Dry-run: records the would-be refusal and logs it once per limit per window (a limit's
    /// own period, rather than every filter's minute: a limit of 100 an hour over a minute's
    /// requests says nothing new each minute).
    fn would_limit(&self, plugin: &Plugin, limit: usize, reason: Reason, now_ns: u64) {
        filter_state::record_would_deny(FILTER, reason.slug());
        let Some(l) = plugin.config.limits.get(limit) else {
            return;
        };
        let now_ms = now_ns / 1_000_000;
        let window_ms = l.rate.window_seconds().saturating_mul(1_000);
        let mut logged = plugin.would_limit_logged.borrow_mut();
        if let Some(last) = logged.get_mut(limit)
            && last.is_none_or(|at| now_ms.saturating_sub(at) >= window_ms)
        {
            *last = Some(now_ms);
            log::info!(
                "{FILTER}: dry-run: limit {} would refuse with {} {} (logged once per limit per window)",
                l.name,
                reason.status(),
                reason.slug()
            );
        }
    }
}
