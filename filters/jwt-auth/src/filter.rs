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
//! thread just to validate the config (proxy-wasm-cpp-host's configuration canary: a clone
//! of the base VM that gets `on_vm_start` and `on_configure` like a worker's, then is killed
//! before the main thread returns to its event loop), so a fetch started there would be
//! thrown away while its marker kept every worker from fetching until the marker ran out
//! (timeout + 1 s). Nothing in the ABI tells that VM from a worker's (proxy-wasm/spec#103
//! asks for such a flag), but only a VM that lives on gets another callback: the first tick
//! comes [`FIRST_TICK`] (1 ms) after configure, on the worker's own event loop, and starts
//! the fetch there; then every [`TICK`].
//!
//! A request that finds no keys, or no key with its `kid`, first reads the shared set's
//! 14-byte stamp and installs the set if another worker fetched a newer one, so a worker
//! normally does not refuse a token with keys the proxy already has while it waits for its
//! own tick (at worst, with a stamp that lags, it does until that tick), and a client
//! sending unknown `kid`s cannot make each request copy the set.
//!
//! Later filters learn who the caller is from filter state, under the common contract
//! (`banking_filter_common::identity`): every allowed request gets `banking.jwt.identity`,
//! one JSON object encoded once per verified token (a bypass says why no token was needed),
//! every refused one who refused and why. The root context declares those names read-only where the proxy can (see
//! `host::filter_state`), so a later filter cannot overwrite what this one verified.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use banking_filter_common::clock;
use banking_filter_common::host::filter_state;
use banking_filter_common::host::{
    self, Action, CallResponse, HostError, RootContext, Status, StreamContext,
};
use banking_filter_common::identity::names;
use banking_filter_common::ids;
use banking_filter_common::metrics::{Counter, OutcomeCounters, metric_name};
use banking_filter_common::mode::WouldDenyLog;
use banking_filter_common::shared::HostSharedData;
use log::{debug, error, info, warn};

use crate::cache::TokenCache;
use crate::config::Config;
use crate::decision::{Allow, AllowKind, Decision, Denial, DenyReason, Published, WouldDeny};
use crate::fetch;
use crate::key_manager::{CalloutError, JwksCallout, KeyEvent, KeyManager};
use crate::native::{self, HostCallFailed, Probe, SignatureChecks, SignatureHost};
use crate::policy::{self, CacheUse, Request};

/// Metric names use this filter segment: `banking_jwt_auth_<what>`.
pub const METRIC_FILTER: &str = "jwt_auth";
/// How this filter names itself in logs.
const FILTER: &str = "jwt-auth";

/// How often the root context looks at shared data and schedules fetches.
pub const TICK: Duration = Duration::from_secs(1);

/// Delay from `on_configure` to the first tick, which starts the first fetch: the shortest
/// period the ABI has, as requests get 503 until the keys arrive, but on a timer, so that a
/// VM Envoy destroys right after configuring it never starts one.
pub const FIRST_TICK: Duration = Duration::from_millis(1);

struct Metrics {
    allowed: Counter,
    bypassed: Counter,
    cache_hit: Counter,
    cache_miss: Counter,
    jwks_fetch_ok: Counter,
    jwks_fetch_failed: Counter,
    /// A value under this plugin's shared-data keys that is not its record (a neighbour's
    /// mistake, an old build's format, a stamp in the future): ignored and refetched.
    shared_record_ignored: Counter,
    /// Signatures the proxy's `verify_signature` checked, and those checked in Wasm.
    signature_by_proxy: Counter,
    signature_in_wasm: Counter,
    denied: OutcomeCounters<DenyReason>,
    would_deny: OutcomeCounters<WouldDeny>,
}

impl Metrics {
    fn define() -> Metrics {
        let counter = |what: &str| Counter::define(&metric_name(METRIC_FILTER, what));
        Metrics {
            allowed: counter("allowed"),
            bypassed: counter("bypassed"),
            cache_hit: counter("cache_hit"),
            cache_miss: counter("cache_miss"),
            jwks_fetch_ok: counter("jwks_fetch_ok"),
            jwks_fetch_failed: counter("jwks_fetch_failed"),
            shared_record_ignored: counter("shared_record_ignored"),
            signature_by_proxy: counter("signature_by_proxy"),
            signature_in_wasm: counter("signature_in_wasm"),
            denied: OutcomeCounters::define(METRIC_FILTER),
            would_deny: OutcomeCounters::define(METRIC_FILTER),
        }
    }
}

/// Per-VM state the root context and every stream share.
struct VmState {
    config: Config,
    metrics: Metrics,
    keys: RefCell<KeyManager>,
    cache: RefCell<TokenCache>,
    /// Dry-run: when each would-be refusal reason was last logged.
    would_deny_log: RefCell<WouldDenyLog>,
    /// Whether the proxy's `verify_signature` passed the configure-time probe.
    proxy_verifies: bool,
}

impl VmState {
    /// Logs and counts what the key manager reports.
    fn report(&self, events: Vec<KeyEvent>) {
        for event in events {
            self.report_one(event);
        }
    }

    fn report_one(&self, event: KeyEvent) {
        let issuer = |provider: usize| {
            self.config
                .providers
                .get(provider)
                .map_or("?", |p| p.issuer.as_str())
        };
        let keys = self.keys.borrow();
        let remote = |provider: usize| keys.remote(provider);
        match event {
            KeyEvent::MarkerNotCreated { error, .. } => {
                warn!("{FILTER}: could not create the JWKS fetch marker or stamp: {error:?}");
            }
            KeyEvent::FetchStarted { provider } => {
                if let Some(remote) = remote(provider) {
                    debug!(
                        "{FILTER}: fetching JWKS from cluster {} path {}",
                        remote.cluster, remote.path
                    );
                }
            }
            KeyEvent::CalloutRefused { provider, error } => {
                self.metrics.jwks_fetch_failed.increment();
                if let Some(remote) = remote(provider) {
                    warn!(
                        "{FILTER}: could not call cluster {} for the JWKS ({error}); retrying in {:?}",
                        remote.cluster, remote.retry_interval
                    );
                }
            }
            KeyEvent::Fetched {
                provider,
                set,
                shared,
                announced,
            } => {
                for skipped in set.skipped() {
                    warn!(
                        "{FILTER}: JWKS of issuer {}: skipped {skipped}",
                        issuer(provider)
                    );
                }
                if let Err(e) = shared {
                    warn!("{FILTER}: could not share the fetched JWKS: {e:?}");
                }
                if let Err(e) = announced {
                    warn!(
                        "{FILTER}: could not write the fetched JWKS's stamp ({e:?}): the other \
                         workers take the set at their next tick"
                    );
                }
                self.metrics.jwks_fetch_ok.increment();
                if set.is_empty() {
                    warn!(
                        "{FILTER}: JWKS of issuer {} holds no usable key ({}): every token of \
                         this issuer is refused until it publishes one",
                        issuer(provider),
                        set.why_empty()
                    );
                } else {
                    info!(
                        "{FILTER}: JWKS of issuer {} fetched: {} usable key entries",
                        issuer(provider),
                        set.entries().len()
                    );
                }
            }
            KeyEvent::FetchFailed {
                provider,
                problem,
                kept_last_good,
                stale,
            } => {
                self.metrics.jwks_fetch_failed.increment();
                let kept = if stale {
                    "the last good set is past maxStaleness: its tokens get 503"
                } else if kept_last_good {
                    "keeping the last good set"
                } else {
                    "no keys yet: its tokens get 503"
                };
                if let Some(remote) = remote(provider) {
                    warn!(
                        "{FILTER}: JWKS fetch for issuer {} from cluster {} failed: {problem}; {kept}; retrying in {:?}",
                        issuer(provider),
                        remote.cluster,
                        remote.retry_interval
                    );
                }
            }
            KeyEvent::Stale {
                provider,
                fetched_at,
            } => {
                if let Some(remote) = remote(provider) {
                    let age = clock::now()
                        .map(|now| now.since(fetched_at).as_secs())
                        .unwrap_or_default();
                    error!(
                        "{FILTER}: JWKS of issuer {} could not be refreshed for {age}s, past \
                         maxStaleness ({:?}): its tokens get 503 until a fetch from cluster {} \
                         succeeds",
                        issuer(provider),
                        remote.max_staleness,
                        remote.cluster
                    );
                }
            }
            KeyEvent::Installed { provider, .. } => {
                debug!(
                    "{FILTER}: installed the shared JWKS of issuer {}",
                    issuer(provider)
                );
            }
            KeyEvent::Unusable { provider, error } => {
                warn!(
                    "{FILTER}: shared JWKS for issuer {} is unusable, keeping the current keys: {error}",
                    issuer(provider)
                );
            }
            KeyEvent::RecordIgnored {
                provider,
                why,
                first,
            } => {
                self.metrics.shared_record_ignored.increment();
                if first && let Some(remote) = remote(provider) {
                    warn!(
                        "{FILTER}: the shared JWKS record under {} is not this plugin's ({}); \
                         ignoring it and fetching the keys",
                        fetch::record_key(remote),
                        why.describe()
                    );
                }
            }
        }
    }
}

/// The proxy's `verify_signature` foreign function.
struct HostSignatures;

impl SignatureHost for HostSignatures {
    fn verify_signature(&self, arguments: &[u8]) -> Result<Vec<u8>, HostCallFailed> {
        host::call_foreign_function(native::VERIFY_SIGNATURE, arguments).map_err(|e| {
            if e.status == Status::NOT_FOUND {
                HostCallFailed::Absent
            } else {
                HostCallFailed::Failed
            }
        })
    }
}

/// Probes the proxy's `verify_signature` and says, once, which path signatures take.
fn choose_signature_path() -> bool {
    match native::probe(&HostSignatures) {
        Probe::Sound => {
            info!(
                "{FILTER}: RS256/384/512 and ES256/384 signatures are checked by the proxy's \
                 verify_signature (BoringSSL); PS*, EdDSA and HS* in Wasm"
            );
            true
        }
        Probe::Absent => {
            warn!(
                "{FILTER}: the proxy has no verify_signature: every signature is checked in Wasm, \
                 at two to three times the CPU"
            );
            false
        }
        Probe::Unsound(why) => {
            warn!(
                "{FILTER}: the proxy's verify_signature failed its check ({why}): every \
                 signature is checked in Wasm"
            );
            false
        }
    }
}

/// JWKS fetches through the host's HTTP callouts.
struct HostCallout;

impl JwksCallout for HostCallout {
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<u32, CalloutError> {
        host::dispatch_http_call(cluster, headers, &[], timeout)
            .map_err(|e| CalloutError(e.to_string()))
    }
}

pub struct Root {
    state: Option<Rc<VmState>>,
    /// Random id of this VM in fetch markers.
    owner: u64,
    /// The tick runs at [`TICK`] (after the first one, which comes sooner).
    steady_tick: bool,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        let owner = ids::random_bytes::<8>()
            .map(u64::from_le_bytes)
            .unwrap_or_else(|_| clock::now().map_or(0, |t| t.0) ^ u64::from(context_id));
        Root {
            state: None,
            owner,
            steady_tick: false,
        }
    }

    /// A JWKS fetch came back; a host error reading it counts as a failed fetch.
    fn on_fetch_response(&mut self, state: &VmState, provider: usize, response: CallResponse) {
        let fetched = (|| -> Result<Vec<u8>, String> {
            let status = response.status().map_err(|e| e.to_string())?;
            match fetch::response_problem(status, response.body_size) {
                Some(problem) => Err(problem),
                None => response.body().map_err(|e| e.to_string()),
            }
        })();
        let now = match clock::now() {
            Ok(now) => now,
            Err(e) => {
                error!("{FILTER}: JWKS response dropped, no clock: {e}");
                return;
            }
        };
        let mut events = Vec::new();
        state
            .keys
            .borrow_mut()
            .on_fetched(provider, fetched, &HostSharedData, now, &mut events);
        state.report(events);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, configuration: &[u8]) -> bool {
        let parsed = match Config::parse(configuration) {
            Ok(parsed) => parsed,
            Err(e) => {
                error!("{FILTER}: {e}");
                return false;
            }
        };
        for warning in &parsed.warnings {
            warn!("{FILTER}: {warning}");
        }
        let metrics = Metrics::define();
        let config = parsed.config;
        let keys = KeyManager::new(&config, self.owner);
        let cache = TokenCache::new(config.cache_entries, config.cache_ttl);
        let state = Rc::new(VmState {
            config,
            metrics,
            keys: RefCell::new(keys),
            cache: RefCell::new(cache),
            would_deny_log: RefCell::default(),
            proxy_verifies: choose_signature_path(),
        });
        // Everything this filter publishes, read-only where the proxy can declare it.
        let published = [names::IDENTITY, names::DENIED_BY, names::DENY_REASON];
        filter_state::declare_and_log(FILTER, &published);
        if state.config.mode.is_dry_run() {
            warn!("{FILTER}: dry-run mode: requests are never refused, only counted");
        }
        let remote = state.keys.borrow().has_remote();
        if remote {
            let mut events = Vec::new();
            state
                .keys
                .borrow()
                .ensure_markers(&HostSharedData, &mut events);
            state.report(events);
        }
        self.state = Some(state);
        if remote {
            // No fetch from here (see the module notes): the first tick starts it. Without
            // ticks no key would ever arrive, so a refused timer refuses the config.
            if let Err(e) = host::set_tick_period(FIRST_TICK) {
                error!("{FILTER}: no tick timer ({e}); remoteJwks cannot be fetched");
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
            if let Err(e) = host::set_tick_period(TICK) {
                warn!("{FILTER}: could not slow the tick to {TICK:?}: {e}");
            }
        }
        let Some(state) = self.state.clone() else {
            return;
        };
        let now = match clock::now() {
            Ok(now) => now,
            Err(e) => {
                warn!("{FILTER}: tick skipped, no clock: {e}");
                return;
            }
        };
        let mut events = Vec::new();
        state
            .keys
            .borrow_mut()
            .on_tick(&HostSharedData, &mut HostCallout, now, &mut events);
        state.report(events);
    }

    fn on_http_call_response(&mut self, response: CallResponse) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let provider = state.keys.borrow_mut().take_call(response.token);
        if let Some(provider) = provider {
            self.on_fetch_response(&state, provider, response);
        }
    }

    fn new_stream(&self, _context_id: u32) -> Box<dyn StreamContext> {
        Box::new(Stream {
            state: self.state.clone(),
        })
    }
}

struct Stream {
    state: Option<Rc<VmState>>,
}

impl StreamContext for Stream {
    fn on_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(state) = self.state.clone() else {
            // Envoy does not create streams for a plugin whose configure failed; if one
            // arrives anyway, fail closed.
            return host::fail_closed(FILTER, "a stream arrived before a valid configuration");
        };
        let headers = match host::request_headers() {
            Ok(headers) => headers,
            Err(e) => return host::fail_closed_on(FILTER, &e),
        };
        // Without the time no expiry can be checked.
        let now = match clock::now() {
            Ok(now) => now,
            Err(e) => return host::fail_closed_on(FILTER, &e),
        };
        let request = Request::from_headers(&headers);
        let checks = if state.proxy_verifies {
            SignatureChecks::by_proxy(&HostSignatures)
        } else {
            SignatureChecks::in_wasm()
        };
        let decide = || {
            let keys = state.keys.borrow();
            let mut cache = state.cache.borrow_mut();
            policy::authorize(&state.config, &*keys, &mut cache, &request, now, &checks)
        };
        let mut evaluation = decide();
        // Another worker may have fetched the keys this one lacks since this VM's last
        // tick: look before refusing.
        if let Some(index) = evaluation.keys_wanted {
            let mut events = Vec::new();
            let adopted =
                state
                    .keys
                    .borrow_mut()
                    .adopt_announced(index, &HostSharedData, now, &mut events);
            state.report(events);
            if adopted {
                evaluation = decide();
            }
        }
        if let Some(index) = evaluation.refetch_provider {
            state.keys.borrow_mut().unknown_kid(index);
        }
        state
            .metrics
            .signature_by_proxy
            .add(u64::from(checks.proxy_count()));
        state
            .metrics
            .signature_in_wasm
            .add(u64::from(checks.wasm_count()));
        match evaluation.cache {
            Some(CacheUse::Hit) => state.metrics.cache_hit.increment(),
            Some(CacheUse::Miss) => state.metrics.cache_miss.increment(),
            None => {}
        }
        match evaluation.decision {
            Decision::Allow(allow) => {
                let Some(identity) = &allow.outputs.identity else {
                    return host::fail_closed(
                        FILTER,
                        "an allowed token has no identity to hand on",
                    );
                };
                if let Err(e) = apply(&allow, identity) {
                    return host::fail_closed_on(FILTER, &e);
                }
                // Counted once applied: a request failed closed was not allowed.
                match allow.kind {
                    AllowKind::Verified => state.metrics.allowed.increment(),
                    AllowKind::Bypassed | AllowKind::Preflight => {
                        state.metrics.bypassed.increment();
                    }
                }
                Action::Continue
            }
            Decision::Deny(denial) if state.config.mode.is_dry_run() => {
                // The headers this filter owns still go: dry-run relaxes refusals, not
                // protection. The identity names are written empty: no identity for a token
                // that did not pass, and (read-only) none a later filter can add.
                if let Err(e) = filter_state::publish_no_identity() {
                    return host::fail_closed_on(FILTER, &e);
                }
                for name in policy::owned_headers(&state.config, request.headers) {
                    if let Err(e) = host::remove_request_header(&name) {
                        return host::fail_closed_on(FILTER, &e);
                    }
                }
                state.metrics.would_deny.increment(WouldDeny(denial.reason));
                let slug = denial.reason.slug();
                let shown = format!("{} {slug}", denial.status());
                filter_state::report_would_deny(FILTER, slug, &shown, &state.would_deny_log);
                Action::Continue
            }
            Decision::Deny(denial) => {
                state.metrics.denied.increment(denial.reason);
                refuse(&denial, &state.config.realm)
            }
        }
    }
}

/// Applies an allowed request's header and filter-state changes. Each one matters: a
/// spoofed identity header that stays, or an identity later filters cannot read, is a
/// hole, so the first refusal is returned for the caller to fail closed on.
fn apply(allow: &Allow, handoff: &Published) -> Result<(), HostError> {
    let outputs = &allow.outputs;
    // Every copy a client sent goes first, whatever the host's replace does with copies.
    for name in &allow.remove_headers {
        host::remove_request_header(name)?;
    }
    for (name, value) in &outputs.set_headers {
        host::set_request_header(name, value)?;
    }
    filter_state::publish_encoded_authentication(&handoff.value)
}

fn refuse(denial: &Denial, realm: &str) -> Action {
    debug!(
        "{FILTER}: refused with {} ({})",
        denial.status(),
        denial.reason.slug()
    );
    // Best effort: the audit trail must not turn this answer into another one.
    filter_state::record_refusal(FILTER, denial.reason.slug());
    let challenge = denial.www_authenticate(realm);
    let mut extra: Vec<(&str, &str)> = denial.extra_headers();
    if let Some(challenge) = &challenge {
        extra.push(("www-authenticate", challenge));
    }
    host::refuse(FILTER, &denial.problem(), &extra)
}
