//! Answering a request: problem responses, and the one meaning of "fail closed".

use super::calls::{self, HeaderPairs, HostError, HostResult, MapType, StreamType};
use super::dispatch::Action;
use crate::problem::{CONTENT_TYPE, Problem};

/// The request headers, values as bytes (client bytes may be non-UTF-8).
pub fn request_headers() -> HostResult<HeaderPairs> {
    calls::map(MapType::RequestHeaders)
}

/// The response headers, values as bytes.
pub fn response_headers() -> HostResult<HeaderPairs> {
    calls::map(MapType::ResponseHeaders)
}

/// Sets (replaces) a request header.
pub fn set_request_header(name: &str, value: &[u8]) -> HostResult<()> {
    calls::replace_map_value(MapType::RequestHeaders, name, value)
}

/// Removes a request header.
pub fn remove_request_header(name: &str) -> HostResult<()> {
    calls::remove_map_value(MapType::RequestHeaders, name)
}

/// Sets (replaces) a response header.
pub fn set_response_header(name: &str, value: &[u8]) -> HostResult<()> {
    calls::replace_map_value(MapType::ResponseHeaders, name, value)
}

/// Answers the request locally with `problem` as `application/problem+json`, plus `extra`
/// headers (e.g. `www-authenticate`, `x-correlation-id`).
pub fn send_problem(problem: &Problem, extra: &[(&str, &str)]) -> HostResult<()> {
    let body = problem.to_json();
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(extra.len() + 2);
    headers.push(("content-type", CONTENT_TYPE));
    headers.push(("cache-control", "no-store"));
    headers.extend_from_slice(extra);
    calls::send_local_response(problem.status, &headers, &body)
}

/// Refuses a request with `problem`; if the host will not send it, fails closed.
pub fn refuse(filter: &str, problem: &Problem, extra: &[(&str, &str)]) -> Action {
    match send_problem(problem, extra) {
        Ok(()) => Action::Pause,
        Err(e) => fail_closed(filter, &e.to_string()),
    }
}

/// The problem every filter answers when the host refused a call it needed.
pub fn host_failure_problem() -> Problem {
    Problem::new(
        500,
        "proxy-host-call-failed",
        "Request could not be checked",
        "the proxy refused an operation this filter needs to check the request",
    )
}

/// Fails the current stream closed after `what` went wrong (a [`HostError`] names the
/// call): a 500 problem response if one can still be sent, else a reset of the stream;
/// never `Continue`, never a pause left to time out. Logged at critical.
pub fn fail_closed(filter: &str, what: &str) -> Action {
    super::logging::critical(&format!("{filter}: failing closed: {what}"));
    if send_problem(&host_failure_problem(), &[]).is_ok() {
        return Action::Pause;
    }
    // One reset ends both directions in Envoy.
    if let Err(e) = calls::reset(StreamType::Request) {
        super::logging::critical(&format!(
            "{filter}: the stream could not be reset either ({e}); it stays paused"
        ));
    }
    Action::Pause
}

/// [`fail_closed`] for a refused hostcall.
pub fn fail_closed_on(filter: &str, error: &HostError) -> Action {
    fail_closed(filter, &error.to_string())
}
