//! The proxy-wasm shell: reads from the host, calls the core, applies the decision, and
//! drives remote JWKS fetches from the root context.
//!
//! Remote keys are fetched by the root context only, from `on_tick`, never while a request
//! waits: a token naming an unknown `kid` is refused at once with 401 and marks its
//! provider for a re-fetch on the next tick, and until a provider's first set arrives its
//! tokens get 503 with `Retry-After: 1`. That keeps request handling free of callouts and
//! pauses, and one fetch serves every worker (see [`crate::fetch`]).
//!
//! `on_configure` starts no fetch: Envoy also configures a short-lived VM on the main
//! thread just to validate the config and destroys it straight after, so a fetch started
//! there would be thrown away while its marker kept every worker from fetching until the
//! marker ran out (timeout + 1 s). The first tick comes [`FIRST_TICK`] after configure
//! instead, then every [`TICK`].
//!
//! A request that finds no keys, or no key with its `kid`, first looks at the shared set
//! and installs it if another worker fetched a newer one, so a worker never refuses a
//! token with keys the proxy already has while it waits for its own tick.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use banking_filter_common::clock::{self, Timestamp};
use banking_filter_common::host;
use banking_filter_common::ids;
use banking_filter_common::metrics::{Counter, OutcomeCounters, metric_name};
use banking_filter_common::problem::Problem;
use banking_filter_common::shared::HostSharedData;
use log::{debug, error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

use crate::cache::TokenCache;
use crate::config::{Config, KeySource, RemoteJwks};
use crate::decision::{Allow, AllowKind, Decision, Denial, DenyReason};
use crate::fetch::{self, JwksRecord};
use crate::jwks::{KeyOrigin, KeySet};
use crate::policy::{self, CacheUse, ProviderKeys, Request};

/// Metric names use this filter segment: `banking_jwt_auth_<what>`.
pub const METRIC_FILTER: &str = "jwt_auth";

/// How often the root context looks at shared data and schedules fetches.
pub const TICK: Duration = Duration::from_secs(1);

/// Delay from `on_configure` to the first tick, which starts the first fetch: short, as
/// requests get 503 until the keys arrive, but on a timer, so that a VM Envoy destroys
/// right after configuring it never starts one.
pub const FIRST_TICK: Duration = Duration::from_millis(100);

struct Metrics {
    allowed: Counter,
    bypassed: Counter,
    cache_hit: Counter,
    cache_miss: Counter,
    jwks_fetch_ok: Counter,
    jwks_fetch_failed: Counter,
    denied: OutcomeCounters<DenyReason>,
}

impl Metrics {
    fn define() -> Result<Metrics, String> {
        let counter = |what: &str| {
            let name = metric_name(METRIC_FILTER, what);
            Counter::define(&name).map_err(|s| format!("defining metric {name}: {s:?}"))
        };
        Ok(Metrics {
            allowed: counter("allowed")?,
            bypassed: counter("bypassed")?,
            cache_hit: counter("cache_hit")?,
            cache_miss: counter("cache_miss")?,
            jwks_fetch_ok: counter("jwks_fetch_ok")?,
            jwks_fetch_failed: counter("jwks_fetch_failed")?,
            denied: OutcomeCounters::define(METRIC_FILTER)?,
        })
    }
}

/// Per-VM state the root context and every stream share.
struct VmState {
    config: Config,
    metrics: Metrics,
    keys: RefCell<Vec<ProviderKeys>>,
    cache: RefCell<TokenCache>,
    /// Per provider: a stream saw a `kid` the set lacks since the last fetch.
    unknown_kid_seen: RefCell<Vec<bool>>,
    /// Per provider: `fetched_at` of the shared record this VM installed.
    installed: RefCell<Vec<Option<Timestamp>>>,
    /// Per provider: `fetched_at` of the newest shared record this VM found unusable, so
    /// that requests do not parse it (and log about it) again.
    unusable: RefCell<Vec<Option<Timestamp>>>,
}

impl VmState {
    fn remote(&self, index: usize) -> Option<&RemoteJwks> {
        match &self.config.providers.get(index)?.keys {
            KeySource::Remote(remote) => Some(remote),
            KeySource::Inline(_) => None,
        }
    }

    fn installed(&self, index: usize) -> Option<Timestamp> {
        self.installed.borrow().get(index).copied().flatten()
    }

    /// Installs the shared set of a remote provider if another VM fetched a newer one than
    /// this VM has. True when the keys changed.
    fn adopt_shared(&self, index: usize) -> bool {
        let Some(remote) = self.remote(index) else {
            return false;
        };
        let unusable = self.unusable.borrow().get(index).copied().flatten();
        let seen = self.installed(index).max(unusable);
        match fetch::read_newer_record(&HostSharedData, remote, seen) {
            Some(record) => self.install(index, &record),
            None => false,
        }
    }

    /// Makes `record` this VM's key set for provider `index`. True when it was usable.
    fn install(&self, index: usize, record: &JwksRecord) -> bool {
        let Some(provider) = self.config.providers.get(index) else {
            return false;
        };
        match KeySet::parse(
            &record.body,
            &provider.allowed_algorithms,
            KeyOrigin::Remote,
        ) {
            Ok(set) => {
                if let Some(slot) = self.keys.borrow_mut().get_mut(index) {
                    *slot = ProviderKeys {
                        set: Some(Rc::new(set)),
                        version: record.fetched_at.unix_millis().max(1),
                    };
                }
                if let Some(slot) = self.installed.borrow_mut().get_mut(index) {
                    *slot = Some(record.fetched_at);
                }
                if let Some(seen) = self.unknown_kid_seen.borrow_mut().get_mut(index) {
                    *seen = false;
                }
                true
            }
            Err(e) => {
                if let Some(slot) = self.unusable.borrow_mut().get_mut(index) {
                    *slot = Some(record.fetched_at);
                }
                warn!(
                    "jwt-auth: shared JWKS for issuer {} is unusable, keeping the current keys: {e}",
                    provider.issuer
                );
                false
            }
        }
    }
}

pub struct JwtAuthRoot {
    state: Option<Rc<VmState>>,
    /// Random id of this VM in fetch markers.
    owner: u64,
    /// Pending JWKS calls: token -> provider index.
    in_flight: HashMap<u32, usize>,
    /// The tick runs at [`TICK`] (after the first one, which comes sooner).
    steady_tick: bool,
}

impl JwtAuthRoot {
    pub fn new(context_id: u32) -> Self {
        let owner = ids::random_bytes::<8>()
            .map(u64::from_le_bytes)
            .unwrap_or_else(|_| clock::now().0 ^ u64::from(context_id));
        JwtAuthRoot {
            state: None,
            // 0 marks a marker nobody holds.
            owner: owner.max(1),
            in_flight: HashMap::new(),
            steady_tick: false,
        }
    }

    fn remotes(state: &VmState) -> Vec<(usize, RemoteJwks)> {
        state
            .config
            .providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.keys {
                KeySource::Remote(r) => Some((i, r.clone())),
                KeySource::Inline(_) => None,
            })
            .collect()
    }

    /// Installs newer shared sets and starts the fetches that are due.
    fn sync_and_fetch(&mut self, now: Timestamp) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let store = HostSharedData;
        for (index, remote) in Self::remotes(&state) {
            state.adopt_shared(index);
            if self.in_flight.values().any(|p| *p == index) {
                continue;
            }
            let fetched_at = state.installed(index);
            let last_attempt = fetch::read_marker(&store, &remote)
                .map(|m| m.attempted_at)
                .filter(|t| t.0 > 0);
            let unknown_kid = state
                .unknown_kid_seen
                .borrow()
                .get(index)
                .copied()
                .unwrap_or(false);
            if !fetch::fetch_due(&remote, fetched_at, last_attempt, unknown_kid, now) {
                continue;
            }
            let hold = remote.timeout + Duration::from_secs(1);
            if !fetch::try_take(&store, &remote, self.owner, now, hold) {
                continue;
            }
            self.dispatch(&state, index, &remote, now);
        }
    }

    fn dispatch(&mut self, state: &VmState, index: usize, remote: &RemoteJwks, now: Timestamp) {
        let headers = vec![
            (":method", "GET"),
            (":path", remote.path.as_str()),
            (":authority", remote.authority.as_str()),
            ("accept", "application/json, application/jwk-set+json"),
        ];
        match hostcalls::dispatch_http_call(&remote.cluster, headers, None, vec![], remote.timeout)
        {
            Ok(token) => {
                self.in_flight.insert(token, index);
                if let Some(seen) = state.unknown_kid_seen.borrow_mut().get_mut(index) {
                    *seen = false;
                }
                debug!(
                    "jwt-auth: fetching JWKS from cluster {} path {}",
                    remote.cluster, remote.path
                );
            }
            Err(status) => {
                state.metrics.jwks_fetch_failed.increment();
                warn!(
                    "jwt-auth: could not call cluster {} for the JWKS ({status:?}); retrying in {:?}",
                    remote.cluster, remote.retry_interval
                );
                let _ = fetch::release(
                    &HostSharedData,
                    remote,
                    self.owner,
                    now.plus(remote.retry_interval),
                );
            }
        }
    }

    fn on_jwks_response(&mut self, index: usize, fetched: Result<Vec<u8>, String>) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let Some((_, remote)) = Self::remotes(&state).into_iter().find(|(i, _)| *i == index) else {
            return;
        };
        let Some(provider) = state.config.providers.get(index) else {
            return;
        };
        let now = clock::now();
        let store = HostSharedData;
        let parsed = fetched.and_then(|body| {
            KeySet::parse(&body, &provider.allowed_algorithms, KeyOrigin::Remote)
                .map(|set| (set, body))
                .map_err(|e| e.to_string())
        });
        match parsed {
            Ok((set, body)) => {
                for skipped in set.skipped() {
                    warn!(
                        "jwt-auth: JWKS of issuer {}: skipped {skipped}",
                        provider.issuer
                    );
                }
                let record = JwksRecord {
                    fetched_at: now,
                    body,
                };
                if let Err(e) = fetch::publish(&store, &remote, &record) {
                    warn!("jwt-auth: could not share the fetched JWKS: {e:?}");
                }
                state.install(index, &record);
                state.metrics.jwks_fetch_ok.increment();
                info!(
                    "jwt-auth: JWKS of issuer {} fetched: {} usable key entries",
                    provider.issuer,
                    set.entries().len()
                );
                let _ = fetch::release(&store, &remote, self.owner, now);
            }
            Err(problem) => {
                state.metrics.jwks_fetch_failed.increment();
                let kept = if state.installed(index).is_some() {
                    "keeping the last good set"
                } else {
                    "no keys yet: its tokens get 503"
                };
                warn!(
                    "jwt-auth: JWKS fetch for issuer {} from cluster {} failed: {problem}; {kept}; retrying in {:?}",
                    provider.issuer, remote.cluster, remote.retry_interval
                );
                let _ =
                    fetch::release(&store, &remote, self.owner, now.plus(remote.retry_interval));
            }
        }
    }
}

impl Context for JwtAuthRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(index) = self.in_flight.remove(&token_id) else {
            return;
        };
        let headers =
            hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let status = headers
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .and_then(|s| s.trim().parse::<u16>().ok());
        let fetched = match fetch::response_problem(status, body_size) {
            Some(problem) => Err(problem),
            None => Ok(
                hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
            ),
        };
        self.on_jwks_response(index, fetched);
    }
}

impl RootContext for JwtAuthRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let parsed = match Config::parse(&bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                error!("jwt-auth: {e}");
                return false;
            }
        };
        for warning in &parsed.warnings {
            warn!("jwt-auth: {warning}");
        }
        let metrics = match Metrics::define() {
            Ok(m) => m,
            Err(e) => {
                error!("jwt-auth: {e}");
                return false;
            }
        };
        let config = parsed.config;
        let keys: Vec<ProviderKeys> = config
            .providers
            .iter()
            .map(|p| match &p.keys {
                KeySource::Inline(set) => ProviderKeys {
                    set: Some(Rc::new(set.clone())),
                    version: 1,
                },
                KeySource::Remote(_) => ProviderKeys::default(),
            })
            .collect();
        let providers = config.providers.len();
        let cache = TokenCache::new(config.cache_entries, config.cache_ttl);
        let state = Rc::new(VmState {
            config,
            metrics,
            keys: RefCell::new(keys),
            cache: RefCell::new(cache),
            unknown_kid_seen: RefCell::new(vec![false; providers]),
            installed: RefCell::new(vec![None; providers]),
            unusable: RefCell::new(vec![None; providers]),
        });
        let remotes = Self::remotes(&state);
        self.state = Some(state);
        self.in_flight.clear();
        if !remotes.is_empty() {
            for (_, remote) in &remotes {
                if let Err(e) = fetch::ensure_marker(&HostSharedData, remote) {
                    warn!("jwt-auth: could not create the JWKS fetch marker: {e:?}");
                }
            }
            // No fetch from here (see the module notes): the first tick starts it. The
            // SDK's `set_tick_period` panics on a host error; without ticks no key would
            // ever arrive, so refuse the config instead.
            if let Err(status) = hostcalls::set_tick_period(FIRST_TICK) {
                error!(
                    "jwt-auth: the host refused a tick timer ({status:?}); remoteJwks cannot be fetched"
                );
                return false;
            }
            self.steady_tick = false;
        }
        true
    }

    fn on_tick(&mut self) {
        if !self.steady_tick {
            // Tried once: a host that refuses leaves the short period, which only costs ticks.
            self.steady_tick = true;
            if let Err(status) = hostcalls::set_tick_period(TICK) {
                warn!("jwt-auth: could not slow the tick to {TICK:?}: {status:?}");
            }
        }
        self.sync_and_fetch(clock::now());
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(JwtAuthStream {
            state: self.state.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct JwtAuthStream {
    state: Option<Rc<VmState>>,
}

impl Context for JwtAuthStream {}

impl HttpContext for JwtAuthStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(state) = self.state.clone() else {
            // Envoy does not create streams for a plugin whose configure failed; if one
            // arrives anyway, fail closed.
            host::send_problem(
                &Problem::new(
                    500,
                    "jwt-not-configured",
                    "Authentication unavailable",
                    "The authentication filter is not configured.",
                ),
                &[],
            );
            return Action::Pause;
        };
        let headers = host::request_headers();
        let request = Request::from_headers(&headers);
        let now = clock::now();
        let decide = || {
            let keys = state.keys.borrow();
            let mut cache = state.cache.borrow_mut();
            policy::authorize(&state.config, &keys, &mut cache, &request, now)
        };
        let mut evaluation = decide();
        // Another worker may have fetched the keys this one lacks since this VM's last
        // tick: look before refusing.
        if let Some(index) = evaluation.keys_wanted
            && state.adopt_shared(index)
        {
            evaluation = decide();
        }
        if let Some(index) = evaluation.refetch_provider
            && let Some(seen) = state.unknown_kid_seen.borrow_mut().get_mut(index)
        {
            *seen = true;
        }
        match evaluation.cache {
            Some(CacheUse::Hit) => state.metrics.cache_hit.increment(),
            Some(CacheUse::Miss) => state.metrics.cache_miss.increment(),
            None => {}
        }
        match evaluation.decision {
            Decision::Allow(allow) => {
                match allow.kind {
                    AllowKind::Verified => state.metrics.allowed.increment(),
                    AllowKind::Bypassed | AllowKind::Preflight => {
                        state.metrics.bypassed.increment();
                    }
                }
                apply(&allow);
                Action::Continue
            }
            Decision::Deny(denial) => {
                state.metrics.denied.increment(denial.reason);
                refuse(&denial, &state.config.realm);
                Action::Pause
            }
        }
    }
}

fn apply(allow: &Allow) {
    for name in &allow.remove_headers {
        if let Err(e) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name) {
            warn!("jwt-auth: could not remove header {name}: {e:?}");
        }
    }
    for (name, value) in &allow.set_headers {
        if let Err(e) =
            hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value))
        {
            warn!("jwt-auth: could not set header {name}: {e:?}");
        }
    }
    for (name, value) in &allow.filter_state {
        if let Err(status) = set_filter_state(name, value) {
            warn!("jwt-auth: could not set filter state {name}: status {status}");
        }
    }
}

fn refuse(denial: &Denial, realm: &str) {
    debug!(
        "jwt-auth: refused with {} ({})",
        denial.status(),
        denial.reason.slug()
    );
    let challenge = denial.www_authenticate(realm);
    let mut extra: Vec<(&str, &str)> = denial.extra_headers();
    if let Some(challenge) = &challenge {
        extra.push(("www-authenticate", challenge));
    }
    host::send_problem(&denial.problem(), &extra);
}

/// `set_property` without the SDK's wrapper, which panics on any status but Ok; a
/// filter-state key another filter made read-only must cost a log line, not the VM.
fn set_filter_state(name: &str, value: &[u8]) -> Result<(), u32> {
    #[cfg(target_arch = "wasm32")]
    {
        #[link(wasm_import_module = "env")]
        unsafe extern "C" {
            fn proxy_set_property(
                path_data: *const u8,
                path_size: usize,
                value_data: *const u8,
                value_size: usize,
            ) -> u32;
        }
        // SAFETY: both pointers and lengths describe live slices for the whole call; the
        // host copies the bytes and keeps no reference.
        let status =
            unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
        if status == 0 { Ok(()) } else { Err(status) }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (name, value);
        Ok(())
    }
}
