//! The proxy-wasm shell: reads the key, the verified identity and the body, reserves the key
//! in the store, and settles it when the response is known.
//!
//! A request with a key has its body held (Envoy buffers it, up to the listener's buffer
//! limit; a larger body gets Envoy's 413) until the whole body is here, so the fingerprint
//! covers it; then it is admitted, replayed or refused. Its headers go upstream first (see
//! `on_request_headers`). The response is watched as it passes (never delayed) and kept when
//! the stream ends, in `on_log`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use banking_filter_common::clock;
use banking_filter_common::headers;
use banking_filter_common::host::filter_state;
use banking_filter_common::host::{
    self, Action, BufferType, CallResponse, RootContext, StreamContext, StreamType,
};
use banking_filter_common::identity::{VerifiedIdentity, names};
use banking_filter_common::metrics::{Outcome, OutcomeCounters};
use banking_filter_common::problem::Problem;
use banking_filter_common::route::{self, Route};
use banking_filter_common::shared::HostSharedData;
use banking_filter_common::slots::{SlotEvent, SlotTable};

use crate::config::{Config, FILTER, MAX_STORED_HEADER_BYTES, Scope, Store};
use crate::fingerprint::{Fingerprint, FingerprintBuilder};
use crate::key::{self, KeyDefect};
use crate::policy::{self, Admission, Conflict, Ending, Settlement};
use crate::record::{Record, StoredResponse};
use crate::store::{self, KeyScope, RecordKey, RecordStore, Reservation, SlotStore, StoreFailure};
use crate::webdis::{self, WebdisCall, WebdisStore};

/// Counter names are `banking_idempotency_<outcome>`.
const METRICS_FILTER: &str = "idempotency";
/// The response header a replay carries.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// What the filter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    Reserved,
    Replayed,
    Conflict(Conflict),
    InvalidKey,
    InvalidPath,
    IdentityRequired,
    StoreFull,
    StoreUnavailable,
    Stored,
    Released,
    SettleFailed,
}

impl Outcome for Count {
    const ALL: &'static [Count] = &[
        Count::Reserved,
        Count::Replayed,
        Count::Conflict(Conflict::InFlight),
        Count::Conflict(Conflict::OutcomeUnknown),
        Count::Conflict(Conflict::ResponseNotKept),
        Count::Conflict(Conflict::KeyReused),
        Count::InvalidKey,
        Count::InvalidPath,
        Count::IdentityRequired,
        Count::StoreFull,
        Count::StoreUnavailable,
        Count::Stored,
        Count::Released,
        Count::SettleFailed,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Count::Reserved => "reserved",
            Count::Replayed => "replayed",
            Count::Conflict(Conflict::InFlight) => "in_flight",
            Count::Conflict(Conflict::OutcomeUnknown) => "outcome_unknown",
            Count::Conflict(Conflict::ResponseNotKept) => "response_not_kept",
            Count::Conflict(Conflict::KeyReused) => "key_reused",
            Count::InvalidKey => "invalid_key",
            Count::InvalidPath => "invalid_path",
            Count::IdentityRequired => "identity_required",
            Count::StoreFull => "store_full",
            Count::StoreUnavailable => "store_unavailable",
            Count::Stored => "stored",
            Count::Released => "released",
            Count::SettleFailed => "settle_failed",
        }
    }
}

/// What every stream shares.
struct Plugin {
    config: Config,
    /// The embedded store's table; `None` with Redis.
    table: Option<SlotTable>,
    /// The root context, which owns the calls that settle keys in Redis.
    root_id: u32,
    counts: OutcomeCounters<Count>,
    slot_events: OutcomeCounters<SlotEvent>,
    /// Redis writes settling a key (callout token -> what it counts when it succeeds).
    settling: RefCell<HashMap<u32, Count>>,
    /// Reservations whose request ended before Redis answered (callout token -> key): if
    /// the answer says the key was reserved, nothing went upstream, so the root releases it.
    orphaned: RefCell<HashMap<u32, RecordKey>>,
    /// The host asked the root to shut down while Redis writes were in flight.
    closing: std::cell::Cell<bool>,
}

impl Plugin {
    /// The embedded store, counting slot events with `on_event`; `None` with Redis.
    fn slot_store<'a>(
        &'a self,
        on_event: &'a dyn Fn(SlotEvent),
    ) -> Option<SlotStore<'a, HostSharedData>> {
        Some(SlotStore {
            table: self.table.as_ref()?,
            store: &HostSharedData,
            on_event,
        })
    }

    fn webdis(&self) -> Option<&WebdisStore> {
        match &self.config.store {
            Store::Redis(webdis) => Some(webdis),
            Store::SharedData { .. } => None,
        }
    }
}

pub(crate) struct Root {
    id: u32,
    plugin: Option<Rc<Plugin>>,
}

impl Root {
    pub(crate) fn new(id: u32) -> Root {
        Root { id, plugin: None }
    }
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
        let table = match config.slot_table() {
            Ok(table) => table,
            Err(e) => {
                log::error!("{FILTER}: {e}");
                return false;
            }
        };
        filter_state::declare_and_log(FILTER, &names::REFUSAL);
        match (&table, &config.store) {
            (Some(table), _) => log::info!(
                "{FILTER}: embedded store of {} records, at most {} bytes of shared data",
                table.slot_count(),
                table.memory_bound_bytes()
            ),
            (None, Store::Redis(webdis)) => log::info!(
                "{FILTER}: Redis store through Webdis at cluster {}, keys {}*, timeout {} ms",
                webdis.cluster,
                webdis.key_prefix,
                webdis.timeout.as_millis()
            ),
            (None, Store::SharedData { .. }) => {}
        }
        self.plugin = Some(Rc::new(Plugin {
            config,
            table,
            root_id: self.id,
            counts: OutcomeCounters::define(METRICS_FILTER),
            slot_events: OutcomeCounters::define(METRICS_FILTER),
            settling: RefCell::new(HashMap::new()),
            orphaned: RefCell::new(HashMap::new()),
            closing: std::cell::Cell::new(false),
        }));
        true
    }

    /// A plugin update or a drain: the Redis writes in flight finish first (each within its
    /// timeout), or payments that executed would become "outcome unknown".
    fn on_done(&mut self) -> bool {
        let Some(plugin) = self.plugin.as_ref() else {
            return true;
        };
        if plugin.settling.borrow().is_empty() && plugin.orphaned.borrow().is_empty() {
            return true;
        }
        plugin.closing.set(true);
        false
    }

    /// A Redis write that settled a key has answered, or a reservation whose request is gone.
    fn on_http_call_response(&mut self, response: CallResponse) {
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        let orphan = plugin.orphaned.borrow_mut().remove(&response.token);
        if let Some(key) = orphan {
            if webdis::reserved(&webdis_reply(&response)) == Ok(true) {
                settle_in_redis(&plugin, &key, None);
            }
        } else if let Some(count) = plugin.settling.borrow_mut().remove(&response.token) {
            match webdis::written(&webdis_reply(&response)) {
                Ok(()) => plugin.counts.increment(count),
                Err(e) => {
                    plugin.counts.increment(Count::SettleFailed);
                    log::warn!(
                        "{FILTER}: could not settle a key in Redis ({e:?}); it stays reserved"
                    );
                }
            }
        }
        if plugin.closing.get()
            && plugin.settling.borrow().is_empty()
            && plugin.orphaned.borrow().is_empty()
            && let Err(e) = host::done()
        {
            log::warn!("{FILTER}: could not finish shutting down: {e}");
        }
    }

    fn new_stream(&self, _context_id: u32) -> Box<dyn StreamContext> {
        Box::new(Stream {
            plugin: self.plugin.clone(),
            waiting: None,
            reserved: None,
            calling: None,
            response: None,
        })
    }
}

/// A request whose body is still coming.
struct Waiting {
    key: RecordKey,
    fingerprint: FingerprintBuilder,
}

/// A request that holds its key's reservation.
struct Reserved {
    key: RecordKey,
    fingerprint: Fingerprint,
}

/// A Redis call the request waits for (paused), with its token.
struct Calling {
    token: u32,
    step: RedisStep,
    key: RecordKey,
    fingerprint: Fingerprint,
    /// Reservations left to try when the key turns out free again between a taken reserve
    /// and its read.
    retries: u8,
}

enum RedisStep {
    Reserve,
    Read,
}

/// The response as it passed.
struct Captured {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    /// `None` once it grew past the configured bound.
    body: Option<Vec<u8>>,
    code_details: Option<String>,
}

struct Stream {
    plugin: Option<Rc<Plugin>>,
    waiting: Option<Waiting>,
    reserved: Option<Reserved>,
    calling: Option<Calling>,
    response: Option<Captured>,
}

fn refuse(plugin: &Plugin, count: Count, problem: &Problem, extra: &[(&str, &str)]) -> Action {
    plugin.counts.increment(count);
    filter_state::record_refusal(
        FILTER,
        problem.type_uri.rsplit(':').next().unwrap_or(FILTER),
    );
    host::refuse(FILTER, problem, extra)
}

fn now_ms() -> Result<u64, host::HostError> {
    clock::now().map(|t| t.unix_millis())
}

impl StreamContext for Stream {
    fn on_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            return host::fail_closed(FILTER, "a stream arrived before a valid configuration");
        };
        let config = &plugin.config;
        let request = match host::request_headers() {
            Ok(headers) => headers,
            Err(e) => return host::fail_closed_on(FILTER, &e),
        };
        let raw_path = headers::lookup(&request, ":path")
            .single()
            .unwrap_or_default();
        let path = match route::normalize(raw_path, config.routes.matching()) {
            Ok(path) => path,
            Err(defect) => return refuse(&plugin, Count::InvalidPath, &defect.problem(), &[]),
        };
        let method = headers::lookup(&request, ":method")
            .single()
            .unwrap_or_default();
        let route_name = match config.routes.route(method, &path) {
            Route::Rule(name) => name.clone(),
            Route::Bypass | Route::Unmatched | Route::NotAllowed => return Action::Continue,
        };
        let client_key = match key::parse(&request, config.key_bounds) {
            Ok(Some(k)) => k,
            Ok(None) => return self.key_problem(&plugin, KeyDefect::Missing),
            Err(defect) => return self.key_problem(&plugin, defect),
        };
        let identity = match filter_state::read_identity() {
            Ok(identity) => identity,
            Err(e) => return host::fail_closed(FILTER, &format!("verified identity: {e}")),
        };
        let Some(scope) = owner(config.scope, identity.as_ref()) else {
            let problem = Problem::new(
                403,
                "identity-required",
                "A verified identity is required",
                "Idempotency-Keys are kept per caller, and this request's verified identity names none",
            );
            return refuse(&plugin, Count::IdentityRequired, &problem, &[]);
        };
        let key = store::record_key(
            &KeyScope {
                kind: scope.0,
                issuer: &scope.1,
                owner: &scope.2,
                method,
                route: &route_name,
            },
            client_key.as_str(),
        );
        if config.mode.is_dry_run() {
            // Keys and identities are checked; nothing is reserved, replayed or refused.
            return Action::Continue;
        }
        let fingerprint =
            FingerprintBuilder::new(method, path.as_str(), &request, &config.fingerprint_headers);
        if end_of_stream {
            return self.admit(&plugin, key, fingerprint.finish());
        }
        self.waiting = Some(Waiting { key, fingerprint });
        // The headers go on; the body is held below until the key is decided. Envoy would
        // turn a StopIteration here into StopAll, which never delivers the body to a Wasm
        // filter unless the plugin sets `allow_on_headers_stop_iteration` (Istio cannot).
        // The upstream therefore sees the headers first; a request refused or replayed is
        // reset there before it has a body, so nothing is executed.
        Action::Continue
    }

    fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            return Action::Continue;
        };
        if self.waiting.is_none() {
            return Action::Continue;
        }
        if !end_of_stream {
            // Envoy keeps buffering.
            return Action::Pause;
        }
        let Some(mut waiting) = self.waiting.take() else {
            return Action::Continue;
        };
        match host::buffer(BufferType::RequestBody, 0, body_size) {
            Ok(body) => waiting.fingerprint.body(&body.unwrap_or_default()),
            Err(e) => return host::fail_closed_on(FILTER, &e),
        }
        self.admit(&plugin, waiting.key, waiting.fingerprint.finish())
    }

    /// A request with trailers never has a body callback with `end_of_stream`: its body is
    /// whole here, and the key is decided before the trailers (and the held body) go on.
    fn on_request_trailers(&mut self, _trailers: usize) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            return host::fail_closed(FILTER, "a stream arrived before a valid configuration");
        };
        let Some(mut waiting) = self.waiting.take() else {
            return Action::Continue;
        };
        match host::buffer(BufferType::RequestBody, 0, usize::MAX) {
            Ok(body) => waiting.fingerprint.body(&body.unwrap_or_default()),
            Err(e) => return host::fail_closed_on(FILTER, &e),
        }
        self.admit(&plugin, waiting.key, waiting.fingerprint.finish())
    }

    fn on_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            return Action::Continue;
        };
        if self.reserved.is_none() {
            return Action::Continue;
        }
        let response = host::response_headers().unwrap_or_default();
        let status = headers::lookup(&response, ":status")
            .single()
            .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
            .unwrap_or(0);
        let kept = plugin
            .config
            .stored_headers
            .iter()
            .flat_map(|name| {
                headers::all(&response, name)
                    .into_iter()
                    .map(move |value| (name.clone(), value.to_vec()))
            })
            .collect();
        let kept: Vec<(String, Vec<u8>)> = kept;
        let header_bytes: usize = kept.iter().map(|(n, v)| n.len() + v.len()).sum();
        let (kept, body) = if header_bytes > MAX_STORED_HEADER_BYTES {
            // Too much to replay exactly: a repeat is told the response was not kept.
            (Vec::new(), None)
        } else {
            (kept, Some(Vec::new()))
        };
        let code_details = host::property(&["response", "code_details"])
            .ok()
            .flatten()
            .and_then(|d| String::from_utf8(d).ok());
        self.response = Some(Captured {
            status,
            headers: kept,
            body,
            code_details,
        });
        Action::Continue
    }

    fn on_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            return Action::Continue;
        };
        let Some(captured) = self.response.as_mut() else {
            return Action::Continue;
        };
        if let Some(body) = captured.body.as_mut() {
            match host::buffer(BufferType::ResponseBody, 0, body_size) {
                Ok(chunk) => {
                    body.extend_from_slice(&chunk.unwrap_or_default());
                    if body.len() > plugin.config.max_stored_body_bytes {
                        captured.body = None;
                    }
                }
                // Not kept: a repeat is told so rather than given part of it.
                Err(_) => captured.body = None,
            }
        }
        Action::Continue
    }

    fn on_http_call_response(&mut self, response: CallResponse) {
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        let Some(calling) = self.calling.take_if(|c| c.token == response.token) else {
            return;
        };
        let reply = webdis_reply(&response);
        if self.on_redis_answer(&plugin, calling, &reply) == Action::Continue
            && self.calling.is_none()
            && let Err(e) = host::resume(StreamType::Request)
        {
            log::warn!("{FILTER}: could not resume a request after its key was reserved: {e}");
        }
    }

    fn on_log(&mut self) {
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        // The request ended (the client went away) while Redis had its reservation: the
        // root takes the answer over and releases the key if it was reserved.
        if let Some(Calling {
            token,
            step: RedisStep::Reserve,
            key,
            ..
        }) = self.calling.take()
        {
            host::adopt_callout(token, plugin.root_id);
            plugin.orphaned.borrow_mut().insert(token, key);
        }
        let Some(reserved) = self.reserved.take() else {
            return;
        };
        let ending = match &self.response {
            Some(c) => policy::ending_of(c.code_details.as_deref(), c.status, true),
            None => policy::ending_of(None, 0, true),
        };
        let Ok(now) = now_ms() else {
            plugin.counts.increment(Count::SettleFailed);
            return;
        };
        let settlement = match (policy::settle(ending, &plugin.config.settle), ending) {
            // No response to keep: the reservation stays, and becomes "outcome unknown"
            // when its lease ends. Never a second execution.
            (Settlement::Store, Ending::UpstreamFailed) => return,
            (Settlement::Store, _) => {
                let Some(captured) = self.response.take() else {
                    return;
                };
                Some(Record::Completed {
                    fingerprint: reserved.fingerprint,
                    response: StoredResponse {
                        status: captured.status,
                        headers: captured.headers,
                        body: captured.body,
                    },
                })
            }
            (Settlement::Release, _) => None,
        };
        let retention = millis(plugin.config.retention);
        if plugin.webdis().is_some() {
            settle_in_redis(&plugin, &reserved.key, settlement.as_ref());
            return;
        }
        let on_event = |event| plugin.slot_events.increment(event);
        let Some(store) = plugin.slot_store(&on_event) else {
            return;
        };
        let settled = match settlement {
            Some(record) => store
                .complete(&reserved.key, &record, now, retention)
                .map(|()| Count::Stored),
            None => store
                .release(&reserved.key, &reserved.fingerprint, now)
                .map(|()| Count::Released),
        };
        match settled {
            Ok(count) => plugin.counts.increment(count),
            Err(e) => {
                plugin.counts.increment(Count::SettleFailed);
                log::warn!("{FILTER}: could not settle a key ({e:?}); it stays reserved");
            }
        }
    }
}

impl Stream {
    fn key_problem(&self, plugin: &Plugin, defect: KeyDefect) -> Action {
        let problem = Problem::new(
            400,
            defect.slug(),
            "Idempotency-Key required",
            defect.detail(plugin.config.key_bounds),
        )
        .with_header(key::HEADER);
        refuse(plugin, Count::InvalidKey, &problem, &[])
    }

    /// Reserves the key, or answers from its record. With Redis the request waits (paused)
    /// for the calls, and [`Stream::on_http_call_response`] goes on.
    fn admit(&mut self, plugin: &Plugin, key: RecordKey, fingerprint: Fingerprint) -> Action {
        self.reserve(plugin, key, fingerprint, 1)
    }

    fn reserve(
        &mut self,
        plugin: &Plugin,
        key: RecordKey,
        fingerprint: Fingerprint,
        retries: u8,
    ) -> Action {
        let now = match now_ms() {
            Ok(now) => now,
            Err(e) => return host::fail_closed_on(FILTER, &e),
        };
        let config = &plugin.config;
        let lease = millis(config.lease);
        let retention = millis(config.retention);
        let Admission::Reserve(reservation) = policy::admit(None, &fingerprint, now, lease) else {
            return host::fail_closed(FILTER, "a key without a record was not reserved");
        };
        if let Some(webdis) = plugin.webdis() {
            let call = webdis.reserve(&key, &reservation, retention);
            return self.call(
                plugin,
                webdis,
                &call,
                RedisStep::Reserve,
                key,
                fingerprint,
                retries,
            );
        }
        let on_event = |event| plugin.slot_events.increment(event);
        let Some(store) = plugin.slot_store(&on_event) else {
            return host::fail_closed(FILTER, "no store is configured");
        };
        match store.reserve(&key, &reservation, now, retention) {
            Ok(Reservation::Reserved) => self.hold(plugin, key, fingerprint),
            Ok(Reservation::Existing(record)) => answer(
                plugin,
                policy::admit(Some(&record), &fingerprint, now, lease),
            ),
            Err(failure) => store_problem(plugin, &failure),
        }
    }

    /// The key is this request's: it goes upstream.
    fn hold(&mut self, plugin: &Plugin, key: RecordKey, fingerprint: Fingerprint) -> Action {
        plugin.counts.increment(Count::Reserved);
        self.reserved = Some(Reserved { key, fingerprint });
        Action::Continue
    }

    /// Sends one call to Webdis and pauses the request until it answers.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        plugin: &Plugin,
        webdis: &WebdisStore,
        call: &WebdisCall,
        step: RedisStep,
        key: RecordKey,
        fingerprint: Fingerprint,
        retries: u8,
    ) -> Action {
        match host::dispatch_http_call(
            &webdis.cluster,
            &call.headers(webdis),
            &call.body,
            webdis.timeout,
        ) {
            Ok(token) => {
                self.calling = Some(Calling {
                    token,
                    step,
                    key,
                    fingerprint,
                    retries,
                });
                Action::Pause
            }
            Err(e) => store_problem(plugin, &StoreFailure::Unavailable(e.to_string())),
        }
    }

    /// The next step after Webdis answered a reserve or a read.
    fn on_redis_answer(
        &mut self,
        plugin: &Plugin,
        calling: Calling,
        reply: &webdis::Reply,
    ) -> Action {
        let Some(webdis) = plugin.webdis() else {
            return host::fail_closed(FILTER, "a Redis answer without a Redis store");
        };
        let Calling {
            step,
            key,
            fingerprint,
            retries,
            ..
        } = calling;
        match step {
            RedisStep::Reserve => match webdis::reserved(reply) {
                Ok(true) => self.hold(plugin, key, fingerprint),
                Ok(false) => {
                    let read = webdis.read(&key);
                    self.call(
                        plugin,
                        webdis,
                        &read,
                        RedisStep::Read,
                        key,
                        fingerprint,
                        retries,
                    )
                }
                Err(failure) => store_problem(plugin, &failure),
            },
            RedisStep::Read => match webdis::read(reply) {
                Ok(Some(record)) => {
                    let now = match now_ms() {
                        Ok(now) => now,
                        Err(e) => return host::fail_closed_on(FILTER, &e),
                    };
                    let lease = millis(plugin.config.lease);
                    answer(
                        plugin,
                        policy::admit(Some(&record), &fingerprint, now, lease),
                    )
                }
                // Gone since the reserve found it (released or expired): reserve again.
                Ok(None) if retries > 0 => self.reserve(plugin, key, fingerprint, retries - 1),
                Ok(None) => store_problem(
                    plugin,
                    &StoreFailure::Unavailable("the key kept changing in Redis".to_string()),
                ),
                Err(failure) => store_problem(plugin, &failure),
            },
        }
    }
}

/// What a request whose key has a record gets.
fn answer(plugin: &Plugin, admission: Admission) -> Action {
    match admission {
        Admission::Replay(response) => replay(plugin, &response),
        Admission::Refuse(conflict) => {
            let problem = Problem::new(
                conflict.status(),
                conflict.slug(),
                "Idempotency-Key conflict",
                conflict.detail(),
            );
            let retry = conflict.retry_after_s().map(|s| s.to_string());
            let extra: Vec<(&str, &str)> = retry
                .as_deref()
                .map(|r| ("retry-after", r))
                .into_iter()
                .collect();
            refuse(plugin, Count::Conflict(conflict), &problem, &extra)
        }
        Admission::Reserve(_) => {
            host::fail_closed(FILTER, "a key's record asked to reserve it again")
        }
    }
}

/// Stores `record` under `key` in Redis, or releases the key (`None`), by a call the root
/// context owns: its answer comes after the stream has ended, and the root counts it.
fn settle_in_redis(plugin: &Plugin, key: &RecordKey, record: Option<&Record>) {
    let Some(webdis) = plugin.webdis() else {
        return;
    };
    let (call, count) = match record {
        Some(record) => (
            webdis.complete(key, record, millis(plugin.config.retention)),
            Count::Stored,
        ),
        None => (webdis.release(key), Count::Released),
    };
    match host::dispatch_http_call_for(
        plugin.root_id,
        &webdis.cluster,
        &call.headers(webdis),
        &call.body,
        webdis.timeout,
    ) {
        Ok(token) => {
            plugin.settling.borrow_mut().insert(token, count);
        }
        Err(e) => {
            plugin.counts.increment(Count::SettleFailed);
            log::warn!("{FILTER}: could not settle a key in Redis ({e}); it stays reserved");
        }
    }
}

/// Webdis's answer to a callout. A response that cannot be read counts as no answer.
fn webdis_reply(response: &CallResponse) -> webdis::Reply {
    let status = response.status().ok().flatten();
    let body = response.body().unwrap_or_default();
    webdis::reply(status, &body)
}

fn store_problem(plugin: &Plugin, failure: &StoreFailure) -> Action {
    let (count, slug, detail) = match failure {
        StoreFailure::Full => (
            Count::StoreFull,
            "idempotency-store-full",
            "no room to record this Idempotency-Key; retry later",
        ),
        StoreFailure::Unexpected(_) | StoreFailure::Unavailable(_) => (
            Count::StoreUnavailable,
            "idempotency-store-unavailable",
            "the Idempotency-Key could not be recorded; retry later",
        ),
    };
    log::warn!("{FILTER}: {slug}: {failure:?}");
    let problem = Problem::new(503, slug, "Idempotency-Key could not be recorded", detail);
    refuse(plugin, count, &problem, &[("retry-after", "1")])
}

/// Answers with the stored response, exactly, marked as a replay.
fn replay(plugin: &Plugin, response: &StoredResponse) -> Action {
    plugin.counts.increment(Count::Replayed);
    let mut headers: Vec<(&str, &str)> = response
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), std::str::from_utf8(v).ok()?)))
        .collect();
    headers.push((REPLAYED_HEADER, "true"));
    let body = response.body.as_deref().unwrap_or_default();
    match host::send_local_response(response.status, &headers, body) {
        Ok(()) => Action::Pause,
        Err(e) => host::fail_closed_on(FILTER, &e),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// (kind, issuer, owner) of a key under `scope`, from the verified identity.
fn owner(
    scope: Scope,
    identity: Option<&VerifiedIdentity>,
) -> Option<(&'static str, String, String)> {
    let identity = identity?;
    match scope {
        Scope::Subject => Some((
            "subject",
            identity.issuer.clone(),
            identity.subject.clone()?,
        )),
        Scope::Customer => Some(("customer", String::new(), identity.customer.clone()?)),
    }
}
