//! A stand-in OpenTelemetry collector for the audit-log filter: it takes OTLP/HTTP JSON logs
//! (`POST /v1/logs`), keeps every log record's body (the audit record), can be switched off
//! (503 with `Retry-After: 1`, as an overloaded collector answers) and on again, and serves
//! what it received as NDJSON at `GET /records`, ready for `audit-verify`.
//!
//! Each connection is served on its own thread, one request at a time; every response closes
//! the connection.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::DemoError;
use crate::declared::{DemoService, RunningService};
use crate::wire::{BodyEnd, Wire};

const MAX_HEAD_BYTES: usize = 16 << 10;
const MAX_BODY_BYTES: usize = 16 << 20;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Shared {
    records: Mutex<Vec<String>>,
    payloads: Mutex<Vec<Value>>,
    unavailable: AtomicBool,
    refused: Mutex<u64>,
}

/// A running collector; stops when dropped.
pub struct OtlpCollector {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl OtlpCollector {
    /// Binds `addr` (port 0: any free port) and serves.
    pub fn start(addr: SocketAddr) -> io::Result<OtlpCollector> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stopping) = (Arc::clone(&shared), Arc::clone(&stopping));
            std::thread::Builder::new()
                .name("otlp-collector".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        let Ok(stream) = stream else { continue };
                        let shared = Arc::clone(&shared);
                        let _ = std::thread::Builder::new()
                            .name("otlp-collector-conn".into())
                            .spawn(move || {
                                let _ = serve(&stream, &shared);
                            });
                    }
                })?
        };
        Ok(OtlpCollector {
            addr,
            shared,
            stopping,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The audit records received so far (each log record's body), in arrival order.
    pub fn records(&self) -> Vec<String> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every payload received, parsed.
    pub fn payloads(&self) -> Vec<Value> {
        self.shared
            .payloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Checks every payload received against OpenTelemetry's protobuf schema with
    /// `scripts/check_otlp.py` (`opentelemetry-proto` in the project's `.venv`); its report,
    /// or why it failed.
    pub fn check_schema(&self) -> Result<String, DemoError> {
        let python = workspace_dirs::repo_root().join(".venv/bin/python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_otlp.py");
        let mut child = std::process::Command::new(&python)
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| {
                DemoError(format!(
                    "cannot run {}: {e} (run `make jwt-minter`, which installs the OTLP schema)",
                    python.display()
                ))
            })?;
        let mut input = String::new();
        for payload in self.payloads() {
            input.push_str(&payload.to_string());
            input.push('\n');
        }
        // Dropped at the end of the statement, so the script sees end of input.
        child
            .stdin
            .take()
            .ok_or_else(|| DemoError("no stdin for the OTLP check".into()))?
            .write_all(input.as_bytes())?;
        let output = child.wait_with_output()?;
        let report = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(report)
        } else {
            Err(DemoError(format!(
                "the OTLP payloads do not fit the schema:\n{report}{}",
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    /// Batches answered 503 while switched off.
    pub fn refused(&self) -> u64 {
        *self
            .shared
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Off: every batch gets 503 with `Retry-After: 1`. On: taken.
    pub fn set_available(&self, available: bool) {
        self.shared.unavailable.store(!available, Ordering::SeqCst);
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: &TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut wire = Wire::new(stream);
    let Some((start, headers)) = wire.read_head(MAX_HEAD_BYTES)? else {
        return Ok(());
    };
    let body = wire.read_body(&headers, MAX_BODY_BYTES, BodyEnd::Empty)?;
    let start = String::from_utf8_lossy(&start).into_owned();
    let mut parts = start.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, extra, answer): (u16, &str, Vec<u8>) = match (method, target) {
        ("POST", "/v1/logs") if shared.unavailable.load(Ordering::SeqCst) => {
            *shared
                .refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner) += 1;
            (
                503,
                "retry-after: 1\r\n",
                b"collector unavailable\n".to_vec(),
            )
        }
        ("POST", "/v1/logs") => match serde_json::from_slice::<Value>(&body) {
            Ok(payload) if payload.get("resourceLogs").is_some() => {
                shared
                    .records
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(audit_log::otlp::record_bodies(&payload));
                shared
                    .payloads
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(payload);
                (200, "", b"{}".to_vec())
            }
            _ => (400, "", b"not an OTLP JSON logs payload\n".to_vec()),
        },
        ("GET", "/records") => {
            let records = shared
                .records
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .join("\n");
            (200, "", format!("{records}\n").into_bytes())
        }
        _ => (404, "", b"POST /v1/logs or GET /records\n".to_vec()),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
        answer.len()
    )?;
    out.write_all(&answer)?;
    out.flush()
}

/// The collector as `make run`'s demo service for audit-log's `otlp.cluster`.
pub struct OtlpCollectorService;

struct Running(OtlpCollector);

impl DemoService for OtlpCollectorService {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn clusters(&self, plugin_config: &Value) -> Result<Vec<String>, DemoError> {
        match plugin_config.pointer("/otlp/cluster") {
            None => Ok(Vec::new()),
            Some(Value::String(cluster)) => Ok(vec![cluster.clone()]),
            Some(_) => Err(DemoError("otlp.cluster is not a string".into())),
        }
    }

    fn start(
        &self,
        addr: SocketAddr,
        _plugin_config: &Value,
    ) -> Result<Box<dyn RunningService>, DemoError> {
        Ok(Box::new(Running(OtlpCollector::start(addr)?)))
    }
}

impl RunningService for Running {
    fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    fn describe(&self) -> String {
        format!(
            "http://{}/v1/logs  (OTLP collector: audit records; GET /records lists them)",
            self.0.addr()
        )
    }

    fn files(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    fn examples(&self, _listener: SocketAddr, _workdir: &Path) -> Vec<String> {
        vec![format!(
            "Audit records: check their chains with  curl -s http://{}/records | cargo run -q -p audit-verify",
            self.0.addr()
        )]
    }
}
