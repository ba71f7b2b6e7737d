//! Plain values the harness hands to tests: log levels, filter actions, captured local
//! responses, recorded HTTP callouts and metrics.

use std::time::Duration;

/// The first value of header `name` in `headers`, whose names are stored lower-cased (as
/// Envoy's codecs leave them): `name` may be given in any case. Every header list the
/// harness hands out, in-process or from a real Envoy, is read through this.
pub(crate) fn first_header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_slice())
}

/// A proxy-wasm log level, as the filter passed it to `proxy_log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// `trace`
    Trace,
    /// `debug`
    Debug,
    /// `info` (also WASI stdout)
    Info,
    /// `warn`
    Warn,
    /// `error` (also WASI stderr)
    Error,
    /// `critical`: where the SDK's panic hook writes a panic message
    Critical,
}

impl LogLevel {
    pub(crate) fn from_abi(level: i32) -> Option<LogLevel> {
        Some(match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    pub(crate) fn to_abi(self) -> i32 {
        self as i32
    }
}

/// One captured log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Its level.
    pub level: LogLevel,
    /// The message, lossily decoded as UTF-8.
    pub message: String,
}

/// What a filter callback told the host to do with the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Keep going: pass the headers/body on.
    Continue,
    /// Stop iteration (and buffer, for bodies) until the filter resumes the stream. After
    /// `send_local_response` the host stops the stream whatever the filter returns, as Envoy does.
    Pause,
}

/// A response the filter produced itself with `send_http_response` / `send_grpc_response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u32,
    /// Headers the filter added, in order, names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
    /// gRPC status for `send_grpc_response`; `None` for plain HTTP (the SDK passes -1).
    pub grpc_status: Option<i32>,
    /// Envoy's "response code details" string, if the filter gave one.
    pub details: String,
}

impl LocalResponse {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        first_header(&self.headers, name)
    }

    /// The body as text (lossy), for readable assertions.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An outgoing HTTP callout (`dispatch_http_call`), waiting for the test to answer it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// Token the host returned to the filter; pass it to `respond_http_call`.
    pub token: u32,
    /// The upstream (Envoy cluster) name.
    pub upstream: String,
    /// Request headers, including `:method`, `:path`, `:authority`.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Timeout the filter asked for; `None` when it passed 0 (no timeout).
    pub timeout: Option<Duration>,
}

impl HttpCall {
    /// The first value of a request header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        first_header(&self.headers, name)
    }
}

/// The kind of a metric the filter defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down, or is set.
    Gauge,
    /// Records a distribution of values.
    Histogram,
}

impl MetricKind {
    pub(crate) fn from_abi(kind: i32) -> Option<MetricKind> {
        Some(match kind {
            0 => MetricKind::Counter,
            1 => MetricKind::Gauge,
            2 => MetricKind::Histogram,
            _ => return None,
        })
    }
}

/// A status a hostcall can be made to answer ([`crate::Host::fail_hostcall`]), in proxy-wasm
/// ABI 0.2.1 numbering; `Other` for any code, including ones the ABI does not define.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostStatus {
    NotFound,
    BadArgument,
    SerializationFailure,
    ParseFailure,
    InvalidMemoryAccess,
    Empty,
    CasMismatch,
    InternalFailure,
    Unimplemented,
    Other(i32),
}

impl HostStatus {
    pub fn code(self) -> i32 {
        match self {
            HostStatus::NotFound => 1,
            HostStatus::BadArgument => 2,
            HostStatus::SerializationFailure => 3,
            HostStatus::ParseFailure => 4,
            HostStatus::InvalidMemoryAccess => 6,
            HostStatus::Empty => 7,
            HostStatus::CasMismatch => 8,
            HostStatus::InternalFailure => 10,
            HostStatus::Unimplemented => 12,
            HostStatus::Other(code) => code,
        }
    }
}
