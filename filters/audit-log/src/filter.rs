//! The proxy-wasm shell: one record per request in `on_log` (after the response, refused
//! requests included), each VM's chain (genesis at configure, checkpoints on the tick), every
//! record as a proxy log line, and, with `otlp`, batches to the collector from the root
//! context.

use banking_filter_common::ids::hex;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use banking_filter_common::clock;
use banking_filter_common::headers;
use banking_filter_common::host::filter_state;
use banking_filter_common::host::{self, Action, CallResponse, RootContext, StreamContext};
use banking_filter_common::ids;
use banking_filter_common::metrics::{Counter, Gauge, Histogram, metric_name};
use banking_filter_common::problem::Problem;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use banking_filter_common::host::BufferType;
use banking_filter_common::route::Route;

use crate::body::{self, Unread};
use crate::chain::{self, Chain};
use crate::config::{BufferFull, Config, FILTER, LineLevel, PanMode};
use crate::mask::PanMasking;
use crate::otlp::{self, Answer, Outbox, Outgoing};
use crate::record::{self, RecordPolicy, RequestFacts};

/// Metric names are `banking_audit_log_<what>`.
const METRICS_FILTER: &str = "audit_log";
/// What every record line starts with, so a log pipeline can pick records out.
pub const LOG_PREFIX: &str = "banking-audit ";
/// The OTLP resource's `service.name`.
const SERVICE: &str = "banking-audit-log";

struct Metrics {
    written: Counter,
    shipped: Counter,
    retried: Counter,
    dropped: Counter,
    rejected: Counter,
    refused_requests: Counter,
    buffered: Gauge,
    /// Milliseconds from sending a batch to the collector's answer.
    ship_latency: Histogram,
    /// Requests by configured operation and outcome, then `other`.
    by_operation: Vec<(String, OutcomeCount)>,
    other_operation: OutcomeCount,
}

/// One counter per outcome of [`record::outcome`].
struct OutcomeCount {
    success: Counter,
    failure: Counter,
    denied: Counter,
}

impl OutcomeCount {
    fn define(operation: &str) -> OutcomeCount {
        let name = crate::config::metric_operation_name(operation);
        let counter = |outcome: &str| {
            Counter::define(&metric_name(
                METRICS_FILTER,
                &format!("requests_{name}_{outcome}"),
            ))
        };
        OutcomeCount {
            success: counter("success"),
            failure: counter("failure"),
            denied: counter("denied"),
        }
    }

    fn count(&self, outcome: &str) {
        match outcome {
            "success" => self.success.increment(),
            "denied" => self.denied.increment(),
            _ => self.failure.increment(),
        }
    }
}

impl Metrics {
    /// A request's outcome under its operation, if configured, else `other`.
    fn count_request(&self, operation: Option<&str>, outcome: &str) {
        let counts = operation
            .and_then(|op| self.by_operation.iter().find(|(name, _)| name == op))
            .map_or(&self.other_operation, |(_, counts)| counts);
        counts.count(outcome);
    }

    fn define(operations: &[String]) -> Metrics {
        let counter = |what: &str| Counter::define(&metric_name(METRICS_FILTER, what));
        Metrics {
            ship_latency: Histogram::define(&metric_name(METRICS_FILTER, "ship_latency_ms")),
            by_operation: operations
                .iter()
                .map(|op| (op.clone(), OutcomeCount::define(op)))
                .collect(),
            other_operation: OutcomeCount::define("other"),
            written: counter("records_written"),
            shipped: counter("records_shipped"),
            retried: counter("batches_retried"),
            dropped: counter("records_dropped"),
            rejected: counter("records_rejected"),
            refused_requests: counter("requests_refused"),
            buffered: Gauge::define(&metric_name(METRICS_FILTER, "records_buffered")),
        }
    }
}

/// A batch the collector has not answered yet.
struct InFlight {
    token: u32,
    records: usize,
    /// The last record's sequence number: what an answer acknowledges up to.
    last: Option<u64>,
    /// Monotonic nanoseconds when it was sent.
    sent_at: u64,
}

/// Records `reject` lets the outbox hold past its bounds: the records of the requests it
/// refuses while full (one each), so refusing never pushes out a waiting record.
const REJECT_RESERVE: usize = 1000;

/// What one VM keeps: its chain, its outbox and where shipping stands.
struct Vm {
    config: Config,
    policy: RecordPolicy,
    root_id: u32,
    chain: RefCell<Chain>,
    outbox: RefCell<Outbox>,
    in_flight: RefCell<Option<InFlight>>,
    /// Failed attempts of the batch at the head of the outbox.
    attempts: RefCell<u32>,
    /// Monotonic nanoseconds before which no batch is sent (a collector's Retry-After).
    hold_until: RefCell<u64>,
    next_checkpoint: RefCell<u64>,
    /// Sequence numbers the outbox dropped that no `gap` record has told yet.
    dropped: RefCell<Vec<u64>>,
    /// What this VM last added to the shared buffered-records gauge.
    reported_buffered: RefCell<u64>,
    /// Bytes of request bodies this VM's streams hold (see [`BODY_BUDGET`]).
    body_bytes: RefCell<usize>,
    /// The genesis record and its time, until the chain starts (see `on_configure`).
    genesis: RefCell<Option<(Map<String, Value>, u64)>>,
    /// The key of the checkpoints' MACs (`checkpointKeyEnv`).
    checkpoint_key: Option<Vec<u8>>,
    /// The host asked the root to shut down: ship what is left, then say done.
    closing: RefCell<bool>,
    metrics: Metrics,
}

impl Vm {
    /// Puts the genesis on the chain, once, before anything else.
    fn start_chain(&self) {
        let genesis = self.genesis.borrow_mut().take();
        if let Some((genesis, time_ms)) = genesis {
            log::info!("{FILTER}: chain {} started", self.chain.borrow().id());
            self.emit(genesis, time_ms, None);
        }
    }

    /// Whether the chain has started (its genesis is on it).
    fn started(&self) -> bool {
        self.genesis.borrow().is_none()
    }

    /// Seals `record` on the chain, logs it, and queues it for the collector; records the
    /// outbox had to drop for it are told on the chain by a `gap` record right after.
    fn emit(&self, record: Map<String, Value>, time_ms: u64, trace: Option<(String, String)>) {
        self.start_chain();
        self.append(record, time_ms, trace);
        let dropped = std::mem::take(&mut *self.dropped.borrow_mut());
        if let (Some(first), Some(last)) = (dropped.first(), dropped.last()) {
            // A gap record may push out one more record itself: told by the next gap.
            let gap = json!({"kind": "gap", "time": record::rfc3339_ms(time_ms),
                "dropped": dropped.len(), "firstSeq": first, "lastSeq": last});
            if let Value::Object(gap) = gap {
                self.append(gap, time_ms, None);
            }
        }
        let Some(otlp) = &self.config.otlp else {
            return;
        };
        self.report_buffered();
        if self.outbox.borrow().len() >= otlp.batch_records {
            self.ship(true);
        }
    }

    fn append(&self, record: Map<String, Value>, time_ms: u64, trace: Option<(String, String)>) {
        let (line, seq) = {
            let mut chain = self.chain.borrow_mut();
            let seq = chain.len();
            (chain.seal(record), seq)
        };
        let level = match self.config.log_level {
            LineLevel::Debug => log::Level::Debug,
            LineLevel::Info => log::Level::Info,
            LineLevel::Warn => log::Level::Warn,
        };
        log::log!(level, "{LOG_PREFIX}{line}");
        self.metrics.written.increment();
        if self.config.otlp.is_none() {
            return;
        }
        let chain = self.chain.borrow().id().to_string();
        let slack = match self.config.otlp.as_ref().map(|o| o.on_buffer_full) {
            Some(BufferFull::Reject) => REJECT_RESERVE,
            _ => 0,
        };
        let dropped = self.outbox.borrow_mut().push(
            Outgoing {
                line,
                time_ms,
                chain,
                seq,
                trace,
            },
            slack,
        );
        if !dropped.is_empty() {
            self.metrics.dropped.add(dropped.len() as u64);
            self.dropped.borrow_mut().extend(dropped);
        }
    }

    /// Sends the next batch unless one is in flight or the collector asked to wait.
    /// `for_root`: called from a stream, so the call is made on the root's behalf.
    fn ship(&self, for_root: bool) {
        let Some(otlp) = &self.config.otlp else {
            return;
        };
        if self.in_flight.borrow().is_some() || self.outbox.borrow().is_empty() {
            return;
        }
        // Without a clock, no wait is kept: better resend early than never.
        let now = clock::monotonic().map_or(u64::MAX, |m| m.0);
        if now < *self.hold_until.borrow() {
            return;
        }
        let (records, last, payload) = self.outbox.borrow().batch(otlp.batch_records, SERVICE);
        let headers = [
            (":method", "POST"),
            (":path", otlp.path.as_str()),
            (":authority", otlp.authority.as_str()),
            ("content-type", "application/json"),
        ];
        let sent = if for_root {
            host::dispatch_http_call_for(
                self.root_id,
                &otlp.cluster,
                &headers,
                &payload,
                otlp.timeout,
            )
        } else {
            host::dispatch_http_call(&otlp.cluster, &headers, &payload, otlp.timeout)
        };
        match sent {
            Ok(token) => {
                self.outbox.borrow_mut().mark_sending(records);
                *self.in_flight.borrow_mut() = Some(InFlight {
                    token,
                    records,
                    last,
                    sent_at: now,
                })
            }
            Err(e) => {
                log::warn!("{FILTER}: cannot send records to the collector: {e}");
                self.retry_later(otlp::backoff(*self.attempts.borrow()));
            }
        }
    }

    /// Moves the gauge shared by every worker by this VM's change, so it sums the workers.
    fn report_buffered(&self) {
        let now = self.outbox.borrow().len() as u64;
        let before = std::mem::replace(&mut *self.reported_buffered.borrow_mut(), now);
        let delta =
            i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX);
        if delta != 0 {
            self.metrics.buffered.add(delta);
        }
    }

    fn retry_later(&self, wait: Duration) {
        self.metrics.retried.increment();
        *self.attempts.borrow_mut() += 1;
        let now = clock::monotonic().map(|m| m.0).unwrap_or(0);
        *self.hold_until.borrow_mut() =
            now.saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
    }

    /// A checkpoint (`kind` `checkpoint`, or `end` when the chain closes): how many records
    /// came before it and the last one's hash, with a MAC under the checkpoint key if any.
    fn checkpoint(&self, kind: &str, time_ms: u64) {
        let (chain_id, count, head) = {
            let chain = self.chain.borrow();
            (
                chain.id().to_string(),
                chain.len(),
                chain.head().to_string(),
            )
        };
        let time = record::rfc3339_ms(time_ms);
        let record = json!({"kind": kind, "time": time,
            "count": count, "covers": count.saturating_sub(1), "head": head});
        if let Value::Object(mut record) = record {
            if let Some(key) = &self.checkpoint_key {
                let stated = chain::Checkpoint {
                    kind,
                    chain: &chain_id,
                    count,
                    head: &head,
                    time: &time,
                };
                record.insert("mac".into(), chain::checkpoint_mac(key, &stated).into());
            }
            self.emit(record, time_ms, None);
        }
    }
}

pub(crate) struct Root {
    id: u32,
    vm: Option<Rc<Vm>>,
}

impl Root {
    pub(crate) fn new(id: u32) -> Root {
        Root { id, vm: None }
    }
}

fn now_ms() -> u64 {
    clock::now().map(|t| t.unix_millis()).unwrap_or(0)
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
        let pans = match config.pan_masking {
            PanMode::Truncate => PanMasking::Truncate,
            PanMode::KeyedHash => match std::env::var(&config.pan_key_env) {
                Ok(key) if key.len() >= 16 => PanMasking::KeyedHash(key.into_bytes()),
                _ => {
                    log::error!(
                        "{FILTER}: panMasking: keyedHash needs a key of at least 16 bytes in the environment variable {} (vmConfig.env)",
                        config.pan_key_env
                    );
                    return false;
                }
            },
        };
        let checkpoint_key = match &config.checkpoint_key_env {
            None => None,
            Some(name) => match std::env::var(name) {
                Ok(key) if key.len() >= 32 => Some(key.into_bytes()),
                _ => {
                    log::error!(
                        "{FILTER}: checkpointKeyEnv: the environment variable {name} must hold a key of at least 32 bytes (vmConfig.env)"
                    );
                    return false;
                }
            },
        };
        let chain_id = match ids::random_bytes::<16>() {
            Ok(bytes) => hex(&bytes),
            Err(e) => {
                log::error!("{FILTER}: no randomness for the chain id: {}", e.0);
                return false;
            }
        };
        let period = config
            .otlp
            .as_ref()
            .map_or(config.checkpoint_interval, |o| {
                o.flush_interval.min(config.checkpoint_interval)
            });
        // Records always go to the proxy log; a proxy that logs Wasm above their level drops
        // those lines, and only the collector has them.
        let wanted = match config.log_level {
            LineLevel::Debug => host::LogLevel::Debug,
            LineLevel::Info => host::LogLevel::Info,
            LineLevel::Warn => host::LogLevel::Warn,
        };
        if let Ok(level) = host::log_level()
            && level > wanted
        {
            log::warn!(
                "{FILTER}: the proxy logs Wasm at {level:?}, above logLevel {:?}: record lines will not reach the proxy log (set the wasm component's level)",
                config.log_level
            );
        }
        if let Err(e) = host::set_tick_period(period) {
            log::error!("{FILTER}: cannot set the tick period: {e}");
            return false;
        }
        let (capacity, max_bytes) = config
            .otlp
            .as_ref()
            .map_or((0, 0), |o| (o.buffer_records, o.buffer_bytes));
        let vm = Rc::new(Vm {
            policy: RecordPolicy {
                pans,
                query: config.query.clone(),
            },
            root_id: self.id,
            chain: RefCell::new(Chain::new(chain_id.clone())),
            outbox: RefCell::new(Outbox::new(capacity, max_bytes)),
            in_flight: RefCell::new(None),
            attempts: RefCell::new(0),
            hold_until: RefCell::new(0),
            next_checkpoint: RefCell::new(0),
            dropped: RefCell::new(Vec::new()),
            reported_buffered: RefCell::new(0),
            closing: RefCell::new(false),
            checkpoint_key,
            genesis: RefCell::new(None),
            body_bytes: RefCell::new(0),
            metrics: Metrics::define(&config.metric_operations),
            config,
        });
        let time_ms = now_ms();
        *vm.next_checkpoint.borrow_mut() = time_ms.saturating_add(
            u64::try_from(vm.config.checkpoint_interval.as_millis()).unwrap_or(u64::MAX),
        );
        // The genesis names what this chain records under: the plugin, its configuration
        // (hashed: pluginConfig is visible in config_dump anyway, but a hash is enough to
        // tell two apart) and when the VM started; the previous chain of this VM, if any.
        // It goes on the chain at the VM's first tick or request: Envoy also configures a VM
        // on its main thread only to check the configuration, which never ticks nor serves,
        // and whose chain would be a genesis left waiting forever.
        let genesis = json!({"kind": "genesis", "time": record::rfc3339_ms(time_ms),
            "instance": vm.config.instance, "configSha256": hex(&Sha256::digest(configuration)),
            "previousChain": self.vm.as_ref().map(|old| old.chain.borrow().id().to_string())});
        if let Value::Object(genesis) = genesis {
            *vm.genesis.borrow_mut() = Some((genesis, time_ms));
        }
        log::info!("{FILTER}: chain {chain_id} configured");
        self.vm = Some(vm);
        true
    }

    fn on_tick(&mut self) {
        let Some(vm) = self.vm.clone() else {
            return;
        };
        vm.start_chain();
        let time_ms = now_ms();
        let due = time_ms >= *vm.next_checkpoint.borrow();
        if due {
            *vm.next_checkpoint.borrow_mut() = time_ms.saturating_add(
                u64::try_from(vm.config.checkpoint_interval.as_millis()).unwrap_or(u64::MAX),
            );
            vm.checkpoint("checkpoint", time_ms);
        }
        vm.ship(false);
    }

    fn on_http_call_response(&mut self, response: CallResponse) {
        let Some(vm) = self.vm.clone() else {
            return;
        };
        let batch = vm
            .in_flight
            .borrow_mut()
            .take_if(|f| f.token == response.token);
        let Some(batch) = batch else {
            return;
        };
        if let Ok(now) = clock::monotonic() {
            vm.metrics
                .ship_latency
                .record(now.0.saturating_sub(batch.sent_at) / 1_000_000);
        }
        let status = response.status().ok().flatten();
        let response_headers = response.headers().unwrap_or_default();
        let retry_after = headers::lookup(&response_headers, "retry-after")
            .single()
            .and_then(|v| std::str::from_utf8(v).ok().map(str::to_string));
        let body = response.body().unwrap_or_default();
        let attempts = *vm.attempts.borrow();
        match otlp::answer(status, retry_after.as_deref(), &body, attempts) {
            Answer::Taken { rejected } => {
                if let Some(last) = batch.last {
                    vm.outbox.borrow_mut().acknowledge(last);
                }
                *vm.attempts.borrow_mut() = 0;
                vm.metrics
                    .shipped
                    .add((batch.records as u64).saturating_sub(rejected));
                vm.metrics.rejected.add(rejected);
            }
            Answer::Refused => {
                log::warn!(
                    "{FILTER}: the collector refused a batch of {} records ({status:?}); dropped",
                    batch.records
                );
                if let Some(last) = batch.last {
                    vm.outbox.borrow_mut().acknowledge(last);
                }
                *vm.attempts.borrow_mut() = 0;
                vm.metrics.rejected.add(batch.records as u64);
            }
            Answer::Retry(wait) => {
                vm.outbox.borrow_mut().sending_failed();
                vm.retry_later(wait);
            }
        }
        vm.report_buffered();
        if *vm.closing.borrow() {
            if vm.outbox.borrow().is_empty() {
                if let Err(e) = host::done() {
                    log::warn!("{FILTER}: could not finish shutting down: {e}");
                }
            } else {
                vm.ship(false);
            }
        }
    }

    /// A plugin update or a drain: the records still waiting go to the collector first (the
    /// host gives up on the VM after its own deadline; what is left then is still in the
    /// proxy log).
    fn on_done(&mut self) -> bool {
        let Some(vm) = self.vm.clone() else {
            return true;
        };
        if !vm.started() {
            // A VM that never ticked nor served: no chain to close.
            return true;
        }
        // The chain's last record says it ended here and how long it was: a chain without
        // one ended abruptly (a crash) or was cut.
        vm.checkpoint("end", now_ms());
        if vm.config.otlp.is_none() || vm.outbox.borrow().is_empty() {
            return true;
        }
        *vm.closing.borrow_mut() = true;
        *vm.hold_until.borrow_mut() = 0;
        vm.ship(false);
        false
    }

    fn new_stream(&self, _context_id: u32) -> Box<dyn StreamContext> {
        Box::new(Stream {
            vm: self.vm.clone(),
            facts: RequestFacts::default(),
            body: None,
        })
    }
}

struct Stream {
    vm: Option<Rc<Vm>>,
    facts: RequestFacts,
    /// On a route whose body is read: the body so far, copied as it passes.
    body: Option<BodyCopy>,
}

/// A request body copied as it passes (the filter never holds it back).
#[derive(Default)]
struct BodyCopy {
    bytes: Vec<u8>,
    /// Why it is no longer copied: past `maxBodyBytes`, or past the VM's budget.
    unread: Option<Unread>,
}

/// Bytes of request bodies one VM holds at once, over all its streams: past it, a body is
/// not read (`bodyUnread: busy`) rather than grow the VM's memory with the number of slow
/// uploads a client keeps open.
const BODY_BUDGET: usize = 16 << 20;

impl Drop for Stream {
    fn drop(&mut self) {
        self.release_body();
    }
}

impl Stream {
    /// Takes the body copy, giving its bytes back to the VM's budget.
    fn release_body(&mut self) -> Option<BodyCopy> {
        let copy = self.body.take()?;
        if let Some(vm) = &self.vm {
            let mut held = vm.body_bytes.borrow_mut();
            *held = held.saturating_sub(copy.bytes.len());
        }
        Some(copy)
    }

    /// Starts copying the body when the request's route is one whose body is read.
    fn watch_body(&mut self, vm: &Vm, request: &headers::HeaderPairs) {
        let Some((routes, _)) = &vm.config.body else {
            return;
        };
        if let Ok(Route::Rule(())) = routes.resolve(request) {
            self.body = Some(BodyCopy::default());
        }
    }
}

/// A property's text.
fn text(path: &[&str]) -> Option<String> {
    let bytes = host::property(path).ok().flatten()?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// A property Envoy gives as a 64-bit little-endian integer.
fn number(path: &[&str]) -> Option<u64> {
    let bytes = host::property(path).ok().flatten()?;
    let bytes: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// What the request headers say: the method and path, and the client's banking headers.
/// The headers, read once, for the caller.
fn capture_request(facts: &mut RequestFacts) -> Option<Vec<(String, Vec<u8>)>> {
    let request = host::request_headers().ok()?;
    let one = |name: &str| {
        headers::lookup(&request, name)
            .single()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    facts.method = one(":method").unwrap_or_default();
    facts.path = one(":path").unwrap_or_default();
    facts.claimed_customer = one("x-customer-id");
    facts.operation = one("x-banking-operation");
    facts.transaction_id = one("x-transaction-id");
    facts.request_id = one("x-request-id");
    facts.traceparent = one("traceparent");
    Some(request)
}

impl StreamContext for Stream {
    fn on_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(vm) = self.vm.clone() else {
            return Action::Continue;
        };
        if let Some(request) = capture_request(&mut self.facts) {
            self.watch_body(&vm, &request);
        }
        let full = vm.config.otlp.as_ref().is_some_and(|o| {
            o.on_buffer_full == BufferFull::Reject && vm.outbox.borrow().is_full()
        });
        if full {
            // No audit, no transaction: this request could not be recorded.
            vm.metrics.refused_requests.increment();
            let problem = Problem::new(
                503,
                "audit-unavailable",
                "Audit trail unavailable",
                "the audit trail cannot take more records right now; retry later",
            );
            return host::refuse(FILTER, &problem, &[("retry-after", "1")]);
        }
        Action::Continue
    }

    fn on_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let (Some(vm), Some(copy)) = (&self.vm, &mut self.body) else {
            return Action::Continue;
        };
        let max = vm
            .config
            .body
            .as_ref()
            .map_or(0, |(_, policy)| policy.max_bytes);
        if copy.unread.is_some() {
            return Action::Continue;
        }
        let held = *vm.body_bytes.borrow();
        let unread = if copy.bytes.len().saturating_add(body_size) > max {
            Some(Unread::TooLarge)
        } else if held.saturating_add(body_size) > BODY_BUDGET {
            Some(Unread::Busy)
        } else {
            None
        };
        if let Some(unread) = unread {
            copy.unread = Some(unread);
            let freed = std::mem::take(&mut copy.bytes).len();
            *vm.body_bytes.borrow_mut() = held.saturating_sub(freed);
            return Action::Continue;
        }
        // Unless an earlier filter holds the body, the buffer is this chunk alone.
        match host::buffer(BufferType::RequestBody, 0, body_size) {
            Ok(Some(chunk)) => {
                copy.bytes.extend_from_slice(&chunk);
                *vm.body_bytes.borrow_mut() = held.saturating_add(chunk.len());
            }
            Ok(None) => {}
            Err(_) => {
                // A chunk the host would not give: the rest would not be the body sent.
                copy.unread = Some(Unread::NotJson);
                let freed = std::mem::take(&mut copy.bytes).len();
                *vm.body_bytes.borrow_mut() = held.saturating_sub(freed);
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(vm) = self.vm.clone() else {
            return;
        };
        let mut facts = std::mem::take(&mut self.facts);
        if facts.method.is_empty() {
            // An earlier filter answered before the request reached this one: its headers
            // are readable here all the same.
            let _ = capture_request(&mut facts);
        }
        // The response as it went out, local replies included: read here rather than in a
        // response-headers callback, one call into the VM fewer per request.
        let mut seen_status = None;
        if let Ok(response) = host::response_headers() {
            facts.correlation_id = headers::lookup(&response, "x-correlation-id")
                .single()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            seen_status = headers::lookup(&response, ":status")
                .single()
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
        }
        facts.time_ms = now_ms();
        facts.status = number(&["response", "code"])
            .and_then(|c| u16::try_from(c).ok())
            .or(seen_status)
            .unwrap_or(0);
        facts.response_flags = number(&["response", "flags"]).map(|f| f.to_string());
        facts.code_details = text(&["response", "code_details"]);
        facts.duration_ms = number(&["request", "duration"]).map_or(0, |ns| ns / 1_000_000);
        facts.request_bytes = number(&["request", "total_size"]).unwrap_or(0);
        facts.response_bytes = number(&["response", "total_size"]).unwrap_or(0);
        facts.source_address = text(&["source", "address"]);
        facts.peer_identity = text(&["connection", "uri_san_peer_certificate"]);
        facts.upstream_host = text(&["upstream", "address"]);
        facts.route = text(&["route_name"]);
        if let (Some(copy), Some((_, policy))) = (self.release_body(), &vm.config.body) {
            facts.body = Some(match copy.unread {
                Some(unread) => Err(unread),
                None => body::banking_context(&copy.bytes, policy, &vm.policy.pans),
            });
        }
        if let Ok(Some(identity)) = filter_state::read_identity() {
            facts.issuer = Some(identity.issuer);
            facts.subject = identity.subject;
            facts.customer = identity.customer;
            facts.client = identity.client;
            facts.jti = identity.claims.get("jti").cloned();
        }
        if let Ok(Some(refusal)) = filter_state::read_refusal() {
            facts.denied_by = Some(refusal.filter);
            facts.deny_reason = Some(refusal.reason);
        }
        let record = record::request_record(&facts, &vm.policy);
        // The OTLP record carries the trace context the audit record kept (checked and masked
        // once, in the record).
        let id = |name: &str| record.get(name).and_then(Value::as_str).map(str::to_string);
        let trace = id("traceId").zip(id("spanId"));
        vm.metrics.count_request(
            facts.operation.as_deref(),
            record::outcome(facts.status, facts.denied_by.as_deref()),
        );
        vm.emit(record, facts.time_ms, trace);
    }
}
