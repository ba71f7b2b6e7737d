//! Every hostcall a filter makes, wrapped to return `Result<_, HostError>` and never panic.
//!
//! The proxy-wasm SDK ends each of its wrappers in `status => panic!`, so a host that
//! answers an unexpected status (a header map that is gone, a full store, a refused
//! callout) traps the VM and with it every stream on that worker. Here every status that
//! is not an expected answer becomes a [`HostError`] naming the call, for the caller to fail
//! closed on. Buffers the host hands back were allocated by our own
//! `proxy_on_memory_allocate` (see [`super::dispatch`]) and are taken back as `Vec`s.

use super::abi;
use std::fmt;
use std::ptr::{null, null_mut};
use std::time::Duration;

/// A proxy-wasm status code as the host answered it (ABI 0.2.1 numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    pub const OK: Status = Status(0);
    pub const NOT_FOUND: Status = Status(1);
    pub const BAD_ARGUMENT: Status = Status(2);
    pub const SERIALIZATION_FAILURE: Status = Status(3);
    pub const PARSE_FAILURE: Status = Status(4);
    pub const EMPTY: Status = Status(7);
    pub const CAS_MISMATCH: Status = Status(8);
    pub const INTERNAL_FAILURE: Status = Status(10);
    pub const UNIMPLEMENTED: Status = Status(12);

    /// The ABI's name for the code, or "Unknown" for a code ABI 0.2.1 does not define.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 13] = [
            "Ok",
            "NotFound",
            "BadArgument",
            "SerializationFailure",
            "ParseFailure",
            "BadExpression",
            "InvalidMemoryAccess",
            "Empty",
            "CasMismatch",
            "ResultMismatch",
            "InternalFailure",
            "BrokenConnection",
            "Unimplemented",
        ];
        usize::try_from(self.0)
            .ok()
            .and_then(|i| NAMES.get(i))
            .copied()
            .unwrap_or("Unknown")
    }
}

/// A hostcall the host refused: which call, and what it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError {
    pub call: &'static str,
    pub status: Status,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} answered {} ({})",
            self.call,
            self.status.name(),
            self.status.0
        )
    }
}

impl std::error::Error for HostError {}

pub type HostResult<T> = Result<T, HostError>;

fn check(call: &'static str, status: u32) -> HostResult<()> {
    if status == Status::OK.0 {
        Ok(())
    } else {
        Err(HostError {
            call,
            status: Status(status),
        })
    }
}

/// Like [`check`], with `NotFound` (and `Empty`) read as "absent" rather than an error.
fn check_found(call: &'static str, status: u32) -> HostResult<bool> {
    match Status(status) {
        Status::OK => Ok(true),
        Status::NOT_FOUND | Status::EMPTY => Ok(false),
        other => Err(HostError {
            call,
            status: other,
        }),
    }
}

/// Takes back a buffer the host filled through `proxy_on_memory_allocate`.
fn take_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host got `data` from `proxy_on_memory_allocate(size)`, which hands out a
    // `Box<[u8]>` of exactly `size` bytes: the layout of a Vec with capacity `size`.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// The proxy's log levels, in the ABI's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// Header maps a filter can address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    RequestHeaders = 0,
    RequestTrailers = 1,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
    CallResponseHeaders = 6,
    CallResponseTrailers = 7,
}

/// Buffers a filter can address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    RequestBody = 0,
    ResponseBody = 1,
    CallResponseBody = 4,
    VmConfiguration = 6,
    PluginConfiguration = 7,
}

/// The two directions of an HTTP stream, for continue and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    Request = 0,
    Response = 1,
}

/// Metric kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// Header pairs with byte values, as the host stores them.
pub type HeaderPairs = Vec<(String, Vec<u8>)>;

// ---- logging and time --------------------------------------------------------------------

pub fn log(level: LogLevel, message: &str) -> HostResult<()> {
    // SAFETY (all calls below): pointers and lengths describe live slices or locals for the
    // duration of the call; the host copies what it reads and writes only where told.
    check("proxy_log", unsafe {
        abi::proxy_log(level as u32, message.as_ptr(), message.len())
    })
}

pub fn log_level() -> HostResult<LogLevel> {
    let mut level = 0u32;
    check("proxy_get_log_level", unsafe {
        abi::proxy_get_log_level(&mut level)
    })?;
    Ok(match level {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Critical,
    })
}

/// Wall-clock time in nanoseconds since the Unix epoch: for timestamps, never intervals.
pub fn wall_clock_nanos() -> HostResult<u64> {
    let mut nanos = 0u64;
    check("proxy_get_current_time_nanoseconds", unsafe {
        abi::proxy_get_current_time_nanoseconds(&mut nanos)
    })?;
    Ok(nanos)
}

/// Monotonic time in nanoseconds from an arbitrary origin (WASI's monotonic clock): for
/// intervals and rates, immune to wall-clock steps. Called directly rather than through
/// `std::time::Instant`, which panics when the host refuses.
pub fn monotonic_nanos() -> HostResult<u64> {
    const CLOCK_MONOTONIC: u32 = 1;
    let mut nanos = 0u64;
    let errno = unsafe { abi::clock_time_get(CLOCK_MONOTONIC, 1, &mut nanos) };
    check("clock_time_get", u32::from(errno))?;
    Ok(nanos)
}

/// Sets the root context's tick period; zero stops ticks.
pub fn set_tick_period(period: Duration) -> HostResult<()> {
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    check("proxy_set_tick_period_milliseconds", unsafe {
        abi::proxy_set_tick_period_milliseconds(millis)
    })
}

// ---- buffers -----------------------------------------------------------------------------

/// Up to `max` bytes of a buffer from `start`; `None` when the buffer does not exist.
pub fn buffer(kind: BufferType, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    let found = check_found("proxy_get_buffer_bytes", unsafe {
        abi::proxy_get_buffer_bytes(kind as u32, start, max, &mut data, &mut size)
    })?;
    Ok(found.then(|| take_buffer(data, size)))
}

/// Replaces `size` bytes at `start` of a buffer with `value` (Envoy accepts prepend,
/// replace-all and append).
pub fn set_buffer(kind: BufferType, start: usize, size: usize, value: &[u8]) -> HostResult<()> {
    check("proxy_set_buffer_bytes", unsafe {
        abi::proxy_set_buffer_bytes(kind as u32, start, size, value.as_ptr(), value.len())
    })
}

/// The whole plugin configuration (empty when none was given).
pub fn plugin_configuration() -> HostResult<Vec<u8>> {
    Ok(buffer(BufferType::PluginConfiguration, 0, u32::MAX as usize)?.unwrap_or_default())
}

// ---- header maps -------------------------------------------------------------------------

/// Every pair of a map, values as bytes (clients send non-UTF-8).
pub fn map(kind: MapType) -> HostResult<HeaderPairs> {
    let (mut data, mut size) = (null_mut(), 0usize);
    check("proxy_get_header_map_pairs", unsafe {
        abi::proxy_get_header_map_pairs(kind as u32, &mut data, &mut size)
    })?;
    let bytes = take_buffer(data, size);
    decode_pairs(&bytes).ok_or(HostError {
        call: "proxy_get_header_map_pairs",
        status: Status::SERIALIZATION_FAILURE,
    })
}

/// One header's first value; `None` when absent.
pub fn map_value(kind: MapType, name: &str) -> HostResult<Option<Vec<u8>>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    let found = check_found("proxy_get_header_map_value", unsafe {
        abi::proxy_get_header_map_value(
            kind as u32,
            name.as_ptr(),
            name.len(),
            &mut data,
            &mut size,
        )
    })?;
    let value = take_buffer(data, size);
    Ok(found.then_some(value))
}

/// Sets a header to one value, replacing any it had.
pub fn replace_map_value(kind: MapType, name: &str, value: &[u8]) -> HostResult<()> {
    check("proxy_replace_header_map_value", unsafe {
        abi::proxy_replace_header_map_value(
            kind as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Adds a value to a header, keeping those it had.
pub fn add_map_value(kind: MapType, name: &str, value: &[u8]) -> HostResult<()> {
    check("proxy_add_header_map_value", unsafe {
        abi::proxy_add_header_map_value(
            kind as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes every value of a header.
pub fn remove_map_value(kind: MapType, name: &str) -> HostResult<()> {
    check("proxy_remove_header_map_value", unsafe {
        abi::proxy_remove_header_map_value(kind as u32, name.as_ptr(), name.len())
    })
}

/// Replaces a whole map.
pub fn set_map<V: AsRef<[u8]>>(kind: MapType, pairs: &[(&str, V)]) -> HostResult<()> {
    let bytes = encode_pairs(pairs);
    check("proxy_set_header_map_pairs", unsafe {
        abi::proxy_set_header_map_pairs(kind as u32, bytes.as_ptr(), bytes.len())
    })
}

/// The ABI's map encoding: count, then (name length, value length) per pair, then each name
/// and value followed by a NUL.
pub fn encode_pairs<V: AsRef<[u8]>>(pairs: &[(&str, V)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| 10 + n.len() + v.as_ref().len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    let count = u32::try_from(pairs.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for (name, value) in pairs {
        for len in [name.len(), value.as_ref().len()] {
            out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
        }
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

/// Decodes [`encode_pairs`]' format; `None` when the bytes do not follow it. Names are read
/// lossily (Envoy only stores token characters in names), values as bytes.
pub fn decode_pairs(bytes: &[u8]) -> Option<HeaderPairs> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    };
    let count = word(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let name_len = word(4 + i * 8)?;
        let value_len = word(8 + i * 8)?;
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data = data.checked_add(name_len)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len)?.checked_add(1)?;
        pairs.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
    }
    Some(pairs)
}

// ---- properties --------------------------------------------------------------------------

fn property_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

/// A property (`["request", "path"]`, `["source", "address"]`, filter state ...); `None`
/// when the host has no such property.
pub fn property(path: &[&str]) -> HostResult<Option<Vec<u8>>> {
    let path = property_path(path);
    let (mut data, mut size) = (null_mut(), 0usize);
    let found = check_found("proxy_get_property", unsafe {
        abi::proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size)
    })?;
    let value = take_buffer(data, size);
    Ok(found.then_some(value))
}

/// Sets a property; Envoy keeps a top-level name as this stream's filter state.
pub fn set_property(path: &[&str], value: &[u8]) -> HostResult<()> {
    let path = property_path(path);
    check("proxy_set_property", unsafe {
        abi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len())
    })
}

// ---- shared data and queues --------------------------------------------------------------

/// A shared-data value and its CAS token; `(None, 0)` when the key is absent.
pub fn shared_data(key: &str) -> HostResult<(Option<Vec<u8>>, u32)> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    let found = check_found("proxy_get_shared_data", unsafe {
        abi::proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
    })?;
    let value = take_buffer(data, size);
    Ok(if found { (Some(value), cas) } else { (None, 0) })
}

/// Writes shared data; `cas` 0 writes unconditionally, any other value only if the entry
/// still carries it (else the error's status is [`Status::CAS_MISMATCH`]).
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> HostResult<()> {
    check("proxy_set_shared_data", unsafe {
        abi::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Registers a shared queue under this VM's id; `on_queue_ready` reports items for it.
pub fn register_queue(name: &str) -> HostResult<u32> {
    let mut id = 0u32;
    check("proxy_register_shared_queue", unsafe {
        abi::proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

/// Finds a queue another VM registered; `None` when there is none.
pub fn resolve_queue(vm_id: &str, name: &str) -> HostResult<Option<u32>> {
    let mut id = 0u32;
    let found = check_found("proxy_resolve_shared_queue", unsafe {
        abi::proxy_resolve_shared_queue(
            vm_id.as_ptr(),
            vm_id.len(),
            name.as_ptr(),
            name.len(),
            &mut id,
        )
    })?;
    Ok(found.then_some(id))
}

/// Takes the oldest item of a queue; `None` when it is empty.
pub fn dequeue(queue: u32) -> HostResult<Option<Vec<u8>>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    let found = check_found("proxy_dequeue_shared_queue", unsafe {
        abi::proxy_dequeue_shared_queue(queue, &mut data, &mut size)
    })?;
    let value = take_buffer(data, size);
    Ok(found.then_some(value))
}

pub fn enqueue(queue: u32, value: &[u8]) -> HostResult<()> {
    check("proxy_enqueue_shared_queue", unsafe {
        abi::proxy_enqueue_shared_queue(queue, value.as_ptr(), value.len())
    })
}

// ---- stream control ----------------------------------------------------------------------

/// Resumes a direction of the current stream after a pause.
pub fn resume(direction: StreamType) -> HostResult<()> {
    check("proxy_continue_stream", unsafe {
        abi::proxy_continue_stream(direction as u32)
    })
}

/// Resets a direction of the current stream: what failing closed does when no response can
/// be sent any more.
pub fn reset(direction: StreamType) -> HostResult<()> {
    check("proxy_close_stream", unsafe {
        abi::proxy_close_stream(direction as u32)
    })
}

/// Answers the current stream locally.
pub fn send_local_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
    let headers = encode_pairs(headers);
    let details = "";
    check("proxy_send_local_response", unsafe {
        abi::proxy_send_local_response(
            u32::from(status),
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// Makes `context` the one later hostcalls act on (used by the dispatcher before it hands
/// a callout response to the stream that made the call).
pub fn set_effective_context(context: u32) -> HostResult<()> {
    check("proxy_set_effective_context", unsafe {
        abi::proxy_set_effective_context(context)
    })
}

/// Tells the host a root context that deferred its shutdown has finished.
pub fn done() -> HostResult<()> {
    check("proxy_done", unsafe { abi::proxy_done() })
}

// ---- callouts and foreign functions ------------------------------------------------------

/// Starts an HTTP call to an upstream cluster; the response reaches the calling context's
/// `on_http_call_response` with the returned token (the dispatcher routes it).
pub fn dispatch_http_call(
    upstream: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> HostResult<u32> {
    let headers = encode_pairs(headers);
    let trailers = encode_pairs::<&str>(&[]);
    let timeout = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    let mut token = 0u32;
    check("proxy_http_call", unsafe {
        abi::proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            if body.is_empty() {
                null()
            } else {
                body.as_ptr()
            },
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout,
            &mut token,
        )
    })?;
    super::dispatch::record_callout(token);
    Ok(token)
}

/// [`dispatch_http_call`] on behalf of `context` (a root context, from inside a stream's
/// callback): its response goes to that context. Envoy answers every callout, whoever made
/// it, once it completes, even after the stream that made it has ended; a response for an
/// ended stream has nowhere to go, so work whose answer matters after the stream (a write
/// made in `on_log`) is dispatched for the root.
pub fn dispatch_http_call_for(
    context: u32,
    upstream: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> HostResult<u32> {
    let current = super::dispatch::current_context();
    set_effective_context(context)?;
    let dispatched = dispatch_http_call(upstream, headers, body, timeout);
    // Back to the stream for the rest of its callback, whatever the call did.
    if let Err(e) = set_effective_context(current) {
        log::warn!("could not make context {current} current again: {e}");
    }
    let token = dispatched?;
    super::dispatch::record_callout_for(token, context);
    Ok(token)
}

/// Hands the response to callout `token` (made by the stream running now) to `context` (a
/// root context): for a stream that ends before its call is answered.
pub fn adopt_callout(token: u32, context: u32) {
    super::dispatch::record_callout_for(token, context);
}

/// Calls a function the host registered by name (Envoy: `verify_signature`,
/// `declare_property`, ...); `NotFound` when the host has none by that name.
pub fn call_foreign_function(name: &str, args: &[u8]) -> HostResult<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    check("proxy_call_foreign_function", unsafe {
        abi::proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            &mut data,
            &mut size,
        )
    })?;
    Ok(take_buffer(data, size))
}

// ---- metrics -----------------------------------------------------------------------------

pub fn define_metric(kind: MetricType, name: &str) -> HostResult<u32> {
    let mut id = 0u32;
    check("proxy_define_metric", unsafe {
        abi::proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> HostResult<()> {
    check("proxy_increment_metric", unsafe {
        abi::proxy_increment_metric(id, offset)
    })
}

pub fn record_metric(id: u32, value: u64) -> HostResult<()> {
    check("proxy_record_metric", unsafe {
        abi::proxy_record_metric(id, value)
    })
}

pub fn metric(id: u32) -> HostResult<u64> {
    let mut value = 0u64;
    check("proxy_get_metric", unsafe {
        abi::proxy_get_metric(id, &mut value)
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_with_byte_values() {
        let pairs: Vec<(&str, &[u8])> = vec![(":path", b"/a"), ("x-bin", &[0xff, 0]), ("e", b"")];
        let decoded = decode_pairs(&encode_pairs(&pairs)).unwrap();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[1], ("x-bin".to_string(), vec![0xff, 0]));
        assert_eq!(decoded[2].1, Vec::<u8>::new());
    }

    #[test]
    fn malformed_pairs_are_refused_not_panicked_on() {
        let good = encode_pairs(&[("name", "value")]);
        for cut in 1..good.len() - 1 {
            assert_eq!(decode_pairs(&good[..cut]), None, "cut at {cut}");
        }
        // A count that claims more pairs than the bytes hold.
        assert_eq!(decode_pairs(&u32::MAX.to_le_bytes()), None);
    }

    #[test]
    fn unknown_statuses_are_named_not_trusted() {
        let e = check("proxy_log", 99).unwrap_err();
        assert_eq!(e.to_string(), "proxy_log answered Unknown (99)");
        assert_eq!(check_found("proxy_get_property", 1), Ok(false));
        assert!(check_found("proxy_get_property", 2).is_err());
    }
}
