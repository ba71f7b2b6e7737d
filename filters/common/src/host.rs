//! The proxy-wasm side every filter shell needs: panic hook, header reads, problem responses.

use crate::problem::{CONTENT_TYPE, Problem};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType};

/// Longest panic message logged; a panic should never carry request data, but if one does,
/// this bounds how much reaches the log.
const MAX_PANIC_LOG: usize = 256;

/// Replaces the SDK's panic hook with one that logs at critical without itself panicking.
/// Call it after `proxy_wasm::set_log_level`, which installs the SDK's own hook.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let mut message = format!("filter panicked: {info}");
        if message.len() > MAX_PANIC_LOG {
            let mut cut = MAX_PANIC_LOG;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let _ = hostcalls::log(LogLevel::Critical, &message);
    }));
}

/// The request headers, values as bytes (client bytes may be non-UTF-8). A host error reads
/// as no headers, which every filter's checks then refuse.
pub fn request_headers() -> Vec<(String, Vec<u8>)> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
}

/// Answers the request locally with `problem` as `application/problem+json`, plus `extra`
/// headers (e.g. `www-authenticate`, `x-correlation-id`).
pub fn send_problem(problem: &Problem, extra: &[(&str, &str)]) {
    let body = problem.to_json();
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(extra.len() + 2);
    headers.push(("content-type", CONTENT_TYPE));
    headers.push(("cache-control", "no-store"));
    headers.extend_from_slice(extra);
    // The SDK's wrapper panics if the host refuses; Envoy accepts a local reply on any
    // live stream, and if it ever refused there would be no one left to tell but the log.
    let status = u32::from(problem.status);
    if let Err(e) = hostcalls::send_http_response(status, headers, Some(&body)) {
        log::error!("could not send the {status} problem response: {e:?}");
    }
}

/// Removes a request header. Unlike the SDK's trait method, a host error is returned rather
/// than panicking, so the caller can fail closed.
pub fn remove_request_header(name: &str) -> Result<(), String> {
    hostcalls::remove_map_value(MapType::HttpRequestHeaders, name).map_err(|s| format!("{s:?}"))
}

/// Sets (replaces) a request header; errors are returned, not panicked on.
pub fn set_request_header(name: &str, value: &str) -> Result<(), String> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
        .map_err(|s| format!("{s:?}"))
}

/// Sets (replaces) a response header; errors are returned, not panicked on.
pub fn set_response_header(name: &str, value: &str) -> Result<(), String> {
    hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value))
        .map_err(|s| format!("{s:?}"))
}
