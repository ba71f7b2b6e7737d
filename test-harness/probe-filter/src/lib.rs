//! A fixture filter that exercises host calls on command, so the harness's own tests run against a real .wasm.
//!
//! Each request names one hostcall in its `x-probe` header (space-separated words); the filter
//! performs it and reports the outcome in the `x-probe-result` request header (and an info log
//! line). Commands:
//!
//! | `x-probe`                            | does                                               |
//! |--------------------------------------|----------------------------------------------------|
//! | `shared-get KEY`                     | result `VALUE CAS`, or `not-found`                 |
//! | `shared-set KEY VALUE [CAS]`         | result `ok` or `cas-mismatch`                      |
//! | `http-call CLUSTER TIMEOUT_MS`       | dispatches GET /probe; pauses; on the response sets `x-probe-call-status` (`failed` if no headers) and `x-probe-call-body`, then resumes |
//! | `queue-enqueue VM_ID NAME ITEM`      | result `ok`, `not-found`                           |
//! | `log LEVEL MESSAGE...`               | logs at trace/debug/info/warn/error/critical       |
//! | `stdout MESSAGE...`                  | prints to WASI stdout                              |
//! | `metric-inc NAME` / `gauge-set NAME V` / `histogram-record NAME V` / `metric-get NAME` | metrics |
//! | `set-header NAME VALUE` / `add-header NAME VALUE` / `remove-header NAME` | request header edits |
//! | `copy-header FROM TO`                | copies raw bytes of one request header to another  |
//! | `header-count` / `replace-all-headers` | whole-map get (result the count) / set (`:path /replaced`, `x-only \xffyes`) |
//! | `response-header-in-request`         | reads a response header too early (Envoy: BadArgument, the SDK panics) |
//! | `grpc-reply MESSAGE...` / `reset`    | `send_grpc_response` (PermissionDenied) / `reset_http_request` |
//! | `local-reply STATUS [BODY...]`       | `send_http_response` with `x-probe: local`         |
//! | `property-get A.B.C`                 | result the value, or `none`                        |
//! | `property-set A.B VALUE`             | sets a stream property                             |
//! | `filter-state NAME`                  | result the one-segment property NAME (what another filter set), or `none` |
//! | `set-filter-state NAME VALUE`        | sets the one-segment property NAME; result `ok`, or the status name the host answered (`BadArgument` for a read-only one) |
//! | `time` / `wasi-time` / `random N`    | result the proxy-wasm / WASI clock in nanoseconds, or N random bytes in hex |
//! | `env NAME`                           | result the WASI environment variable, or `unset`   |
//! | `foreign NAME ARG`                   | calls foreign function NAME with ARG; result its answer, or `error STATUS` |
//! | `panic`                              | panics (the hook logs it at critical)              |
//! | `slot-setup`                         | creates the slot table (below); result `created N` |
//! | `slot-incr KEY`                      | adds one to KEY's counter in the slot table at the proxy-wasm clock; result the new count, or `error ...` |
//! | `slot-home KEY`                      | result the slot KEY's probe starts at              |
//!
//! The slot table is `banking_filter_common::slots` over shared data, compiled in from source
//! (see [`shared`]): namespace `probe/slots`, 8 slots, a probe of 4, keys up to 64 bytes,
//! counts kept 60 s. Each `slot-incr` logs the table's events (`slot events [...]`).
//!
//! A request trailer `x-probe-trailer` gets `x-probe-trailer-seen: yes` added beside it.
//! Every response gets `x-probe-saw-status` with the `:status` the filter saw, which shows a
//! local reply passing through the response path. A request body is rewritten per
//! `x-probe-body: prepend|append|replace TEXT`.
//!
//! Every completed stream counts `probe_logs` in `on_log`.
//!
//! Plugin configuration: whitespace-separated `tick_ms=N` (tick period; each tick counts
//! `probe_ticks` and stores it in shared data `probe_ticks`), `queue=NAME` (registers a queue
//! and logs what arrives), `refuse=REASON` (refuses the configuration), `flush_on_done=KEY`
//! (at VM shutdown, writes `flushed` to shared data KEY and defers: `proxy_done` follows on
//! the next tick).

use std::time::{Duration, UNIX_EPOCH};

// `banking_filter_common` exports the proxy-wasm ABI itself, so it cannot link beside the
// SDK (the linker sees every `proxy_on_*` twice). Its shared-data store and slot table are
// plain Rust, so they are compiled in from source, over `host` below in place of common's
// host module: the .wasm runs the very code the filters use.
#[allow(dead_code)]
#[path = "../../../filters/common/src/shared.rs"]
mod shared;
#[allow(dead_code)]
#[path = "../../../filters/common/src/slots.rs"]
mod slots;

/// The two calls of `banking_filter_common::host` that [`shared::HostSharedData`] makes, over the SDK.
/// (This and `metrics` are all of common that the two files name beyond themselves.)
mod host {
    use proxy_wasm::hostcalls;
    use std::fmt;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Status(pub u32);

    impl Status {
        pub const CAS_MISMATCH: Status = Status(8);
        const OTHER: Status = Status(u32::MAX);
    }

    #[derive(Debug)]
    pub struct HostError {
        pub status: Status,
    }

    impl fmt::Display for HostError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "shared data answered status {}", self.status.0)
        }
    }

    fn error(status: proxy_wasm::types::Status) -> HostError {
        let status = match status {
            proxy_wasm::types::Status::CasMismatch => Status::CAS_MISMATCH,
            _ => Status::OTHER,
        };
        HostError { status }
    }

    pub fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, u32), HostError> {
        let (value, cas) = hostcalls::get_shared_data(key).map_err(error)?;
        Ok((value, cas.unwrap_or(0)))
    }

    pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        hostcalls::set_shared_data(key, Some(value), Some(cas)).map_err(error)
    }
}

/// `banking_filter_common::metrics::Outcome`, which [`slots::SlotEvent`] implements.
#[allow(dead_code)]
mod metrics {
    pub trait Outcome: Copy + 'static {
        const ALL: &'static [Self];
        fn suffix(self) -> &'static str;
    }
}

/// The probe's slot table; see the module doc.
fn slot_table() -> Result<slots::SlotTable, slots::InvalidTable> {
    slots::SlotTable::new("probe/slots", 8, 4, 64, 32)
}

/// How long a `slot-incr` count lives.
const SLOT_TTL_MS: u64 = 60_000;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, GrpcStatusCode, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot::default()) });
}}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

#[derive(Default)]
struct ProbeRoot {
    ticks: u64,
    queue: Option<(String, u32)>,
    flush_on_done: Option<String>,
    shutting_down: bool,
}

impl Context for ProbeRoot {
    fn on_done(&mut self) -> bool {
        let Some(key) = &self.flush_on_done else {
            return true;
        };
        let _ = self.set_shared_data(key, Some(b"flushed"), None);
        self.shutting_down = true;
        self.set_tick_period(Duration::from_millis(10));
        false
    }
}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        let config = self.get_vm_configuration().unwrap_or_default();
        log(
            LogLevel::Info,
            &format!("vm_config={}", String::from_utf8_lossy(&config)),
        );
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config).into_owned();
        for setting in config.split_whitespace() {
            match setting.split_once('=') {
                Some(("tick_ms", ms)) => match ms.parse::<u64>() {
                    Ok(ms) => self.set_tick_period(Duration::from_millis(ms)),
                    Err(_) => {
                        log(LogLevel::Error, "tick_ms: not a number of milliseconds");
                        return false;
                    }
                },
                Some(("queue", name)) => {
                    let id = self.register_shared_queue(name);
                    self.queue = Some((name.to_string(), id));
                }
                Some(("flush_on_done", key)) => self.flush_on_done = Some(key.to_string()),
                Some(("refuse", reason)) => {
                    log(LogLevel::Error, &format!("refused: {reason}"));
                    return false;
                }
                _ => {
                    log(LogLevel::Error, &format!("unknown setting: {setting}"));
                    return false;
                }
            }
        }
        true
    }

    fn on_tick(&mut self) {
        if self.shutting_down {
            let _ = hostcalls::done();
            return;
        }
        self.ticks += 1;
        if let Ok(id) = hostcalls::define_metric(MetricType::Counter, "probe_ticks") {
            let _ = hostcalls::increment_metric(id, 1);
        }
        let _ = self.set_shared_data("probe_ticks", Some(self.ticks.to_string().as_bytes()), None);
        let nanos = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        log(LogLevel::Debug, &format!("tick {} at {nanos}", self.ticks));
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let name = self
            .queue
            .as_ref()
            .map_or_else(String::new, |(name, _)| name.clone());
        while let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
            log(
                LogLevel::Info,
                &format!("queue {name} got {}", String::from_utf8_lossy(&item)),
            );
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One stream. Envoy lends the request headers only until the filter continues past them,
/// so what the body phase needs is read in the headers phase.
#[derive(Default)]
struct Probe {
    body_rewrite: Option<Vec<u8>>,
}

impl Probe {
    fn report(&self, result: &str) {
        log(LogLevel::Info, &format!("probe result: {result}"));
        self.set_http_request_header("x-probe-result", Some(result));
    }

    fn metric(&self, kind: MetricType, name: &str) -> Option<u32> {
        hostcalls::define_metric(kind, name).ok()
    }

    /// Runs one command; `Action::Pause` when it waits for something.
    fn run(&mut self, words: &[&str]) -> Action {
        match words {
            ["shared-get", key] => {
                let result = match self.get_shared_data(key) {
                    (Some(value), cas) => {
                        format!("{} {}", String::from_utf8_lossy(&value), cas.unwrap_or(0))
                    }
                    (None, Some(cas)) => format!(" {cas}"),
                    (None, None) => "not-found".to_string(),
                };
                self.report(&result);
            }
            // A binary value, as hex: what a neighbour's module may leave under any key.
            ["shared-set-hex", key, hex] => {
                let bytes: Option<Vec<u8>> = (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                    })
                    .collect();
                let result = match bytes {
                    Some(bytes) => match self.set_shared_data(key, Some(&bytes), None) {
                        Ok(()) => "ok",
                        Err(_) => "refused",
                    },
                    None => "bad-hex",
                };
                self.report(result);
            }
            ["shared-set", key, value, rest @ ..] => {
                let cas = rest.first().and_then(|c| c.parse::<u32>().ok());
                let result = match self.set_shared_data(key, Some(value.as_bytes()), cas) {
                    Ok(()) => "ok",
                    Err(_) => "cas-mismatch",
                };
                self.report(result);
            }
            ["http-call", cluster, timeout_ms] => {
                let timeout = Duration::from_millis(timeout_ms.parse().unwrap_or(1000));
                let headers = vec![
                    (":method", "GET"),
                    (":path", "/probe"),
                    (":authority", *cluster),
                    ("x-probe-caller", "harness-probe"),
                ];
                match self.dispatch_http_call(cluster, headers, Some(b"probe"), vec![], timeout) {
                    Ok(token) => {
                        log(LogLevel::Info, &format!("dispatched {token}"));
                        return Action::Pause;
                    }
                    Err(status) => self.report(&format!("dispatch-failed {status:?}")),
                }
            }
            ["queue-enqueue", vm_id, name, item] => {
                let result = match self.resolve_shared_queue(vm_id, name) {
                    Some(id) => match self.enqueue_shared_queue(id, Some(item.as_bytes())) {
                        Ok(()) => "ok",
                        Err(_) => "enqueue-failed",
                    },
                    None => "not-found",
                };
                self.report(result);
            }
            ["log", level, message @ ..] => {
                let level = match *level {
                    "trace" => LogLevel::Trace,
                    "debug" => LogLevel::Debug,
                    "info" => LogLevel::Info,
                    "warn" => LogLevel::Warn,
                    "error" => LogLevel::Error,
                    _ => LogLevel::Critical,
                };
                log(level, &message.join(" "));
            }
            ["stdout", message @ ..] => println!("{}", message.join(" ")),
            ["metric-inc", name] => {
                if let Some(id) = self.metric(MetricType::Counter, name) {
                    let _ = hostcalls::increment_metric(id, 1);
                }
            }
            ["gauge-set", name, value] => {
                if let Some(id) = self.metric(MetricType::Gauge, name) {
                    let _ = hostcalls::record_metric(id, value.parse().unwrap_or(0));
                }
            }
            ["histogram-record", name, value] => {
                if let Some(id) = self.metric(MetricType::Histogram, name) {
                    let _ = hostcalls::record_metric(id, value.parse().unwrap_or(0));
                }
            }
            ["metric-get", name] => {
                let value = self
                    .metric(MetricType::Counter, name)
                    .and_then(|id| hostcalls::get_metric(id).ok());
                self.report(&value.map_or_else(|| "none".to_string(), |v| v.to_string()));
            }
            ["set-header", name, value] => self.set_http_request_header(name, Some(value)),
            ["add-header", name, value] => self.add_http_request_header(name, value),
            ["remove-header", name] => self.remove_http_request_header(name),
            ["header-count"] => {
                let count = self.get_http_request_headers_bytes().len();
                self.report(&count.to_string());
            }
            ["replace-all-headers"] => {
                self.set_http_request_headers_bytes(vec![
                    (":path", b"/replaced".as_slice()),
                    ("x-only", b"\xffyes".as_slice()),
                ]);
            }
            ["response-header-in-request"] => {
                // Envoy has no response headers yet: the SDK panics on its BadArgument.
                let _ = self.get_http_response_header_bytes(":status");
            }
            ["grpc-reply", message @ ..] => {
                self.send_grpc_response(
                    GrpcStatusCode::PermissionDenied,
                    Some(&message.join(" ")),
                    vec![("x-probe", b"grpc".as_slice())],
                );
                return Action::Pause;
            }
            ["reset"] => self.reset_http_request(),
            ["copy-header", from, to] => {
                let value = self.get_http_request_header_bytes(from);
                self.set_http_request_header_bytes(to, value.as_deref());
            }
            ["local-reply", status, body @ ..] => {
                let body = body.join(" ");
                self.send_http_response(
                    status.parse().unwrap_or(500),
                    vec![("x-probe", "local")],
                    (!body.is_empty()).then_some(body.as_bytes()),
                );
                return Action::Pause;
            }
            ["property-get", path] => {
                let value = self.get_property(path.split('.').collect());
                let result = value.map_or_else(
                    || "none".to_string(),
                    |v| String::from_utf8_lossy(&v).into_owned(),
                );
                self.report(&result);
            }
            ["filter-state", name] => {
                let value = self.get_property(vec![name]);
                let result = value.map_or_else(
                    || "none".to_string(),
                    |v| String::from_utf8_lossy(&v).into_owned(),
                );
                self.report(&result);
            }
            ["property-set", path, value] => {
                self.set_property(path.split('.').collect(), Some(value.as_bytes()));
            }
            ["set-filter-state", name, value] => {
                // Straight to the import: the SDK's wrapper panics on any status but Ok.
                let status = unsafe {
                    raw::proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len())
                };
                let result = match status {
                    0 => "ok".to_string(),
                    1 => "NotFound".to_string(),
                    2 => "BadArgument".to_string(),
                    other => format!("status {other}"),
                };
                self.report(&result);
            }
            ["time"] => {
                let nanos = self
                    .get_current_time()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                self.report(&nanos.to_string());
            }
            ["wasi-time"] => {
                // std's clock goes through WASI clock_time_get, not the proxy-wasm hostcall.
                let nanos = std::time::SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                self.report(&nanos.to_string());
            }
            ["env", name] => {
                let value = std::env::var(name).unwrap_or_else(|_| "unset".to_string());
                self.report(&value);
            }
            ["random", n] => {
                let mut bytes = vec![0u8; n.parse().unwrap_or(8)];
                let result = match getrandom::getrandom(&mut bytes) {
                    Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
                    Err(_) => "no-randomness".to_string(),
                };
                self.report(&result);
            }
            ["foreign", name, arg] => {
                match hostcalls::call_foreign_function(name, Some(arg.as_bytes())) {
                    Ok(answer) => {
                        let answer = answer.unwrap_or_default();
                        self.report(&String::from_utf8_lossy(&answer));
                    }
                    Err(status) => self.report(&format!("error {status:?}")),
                }
            }
            ["slot-setup"] => {
                let result =
                    match slot_table().map(|t| t.ensure_created(&shared::HostSharedData, |_| {})) {
                        Ok(Ok(created)) => format!("created {created}"),
                        Ok(Err(e)) => format!("error {e:?}"),
                        Err(e) => format!("error {e:?}"),
                    };
                self.report(&result);
            }
            ["slot-incr", key] => {
                let now_ms = self
                    .get_current_time()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let mut events = Vec::new();
                let result = slot_table().map(|t| {
                    t.update(
                        &shared::HostSharedData,
                        key.as_bytes(),
                        now_ms,
                        8,
                        |e| events.push(e),
                        |current| {
                            let n = current
                                .and_then(|b| std::str::from_utf8(b).ok())
                                .and_then(|s| s.parse::<u64>().ok())
                                .unwrap_or(0)
                                + 1;
                            slots::SlotStep::Write {
                                value: n.to_string().into_bytes(),
                                expires_at_ms: now_ms.saturating_add(SLOT_TTL_MS),
                                result: n,
                            }
                        },
                    )
                });
                log(LogLevel::Info, &format!("slot events {events:?}"));
                let result = match result {
                    Ok(Ok(n)) => n.to_string(),
                    Ok(Err(e)) => format!("error {e:?}"),
                    Err(e) => format!("error {e:?}"),
                };
                self.report(&result);
            }
            ["slot-home", key] => {
                let result = slot_table().map_or_else(
                    |e| format!("error {e:?}"),
                    |t| t.home_slot(key.as_bytes()).to_string(),
                );
                self.report(&result);
            }
            ["panic"] => {
                // The probe exists to prove the harness reports a trap and the panic hook's log.
                #[allow(clippy::panic)]
                {
                    panic!("probe asked to panic");
                }
            }
            other => self.report(&format!("unknown command: {}", other.join(" "))),
        }
        Action::Continue
    }
}

impl Context for Probe {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body_size: usize, _: usize) {
        let status = if headers == 0 {
            "failed".to_string()
        } else {
            self.get_http_call_response_header_bytes(":status")
                .map_or_else(String::new, |s| String::from_utf8_lossy(&s).into_owned())
        };
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        log(
            LogLevel::Info,
            &format!("callout {token} answered {status}"),
        );
        self.set_http_request_header("x-probe-call-status", Some(&status));
        self.set_http_request_header_bytes("x-probe-call-body", Some(&body));
        self.resume_http_request();
    }
}

impl HttpContext for Probe {
    fn on_log(&mut self) {
        if let Ok(id) = hostcalls::define_metric(MetricType::Counter, "probe_logs") {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.body_rewrite = self.get_http_request_header_bytes("x-probe-body");
        let Some(command) = self.get_http_request_header_bytes("x-probe") else {
            return Action::Continue;
        };
        let command = String::from_utf8_lossy(&command).into_owned();
        let words: Vec<&str> = command.split_whitespace().collect();
        self.run(&words)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(how) = self.body_rewrite.clone() else {
            return Action::Continue;
        };
        if !end_of_stream {
            // Wait for the whole body: Envoy buffers while the filter pauses.
            return Action::Pause;
        }
        let how = String::from_utf8_lossy(&how).into_owned();
        match how.split_once(' ') {
            Some(("prepend", text)) => self.set_http_request_body(0, 0, text.as_bytes()),
            Some(("append", text)) => self.set_http_request_body(body_size, 0, text.as_bytes()),
            Some(("replace", text)) => self.set_http_request_body(0, body_size, text.as_bytes()),
            _ => {}
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self
            .get_http_request_trailer_bytes("x-probe-trailer")
            .is_some()
        {
            self.add_http_request_trailer("x-probe-trailer-seen", "yes");
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let status = self
            .get_http_response_header_bytes(":status")
            .unwrap_or_default();
        self.set_http_response_header_bytes("x-probe-saw-status", Some(&status));
        Action::Continue
    }
}

mod raw {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        pub fn proxy_set_property(
            path_data: *const u8,
            path_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
    }
}
