//! The `env.proxy_*` hostcalls of proxy-wasm ABI 0.2.1, answering from the fake proxy's state
//! with the statuses Envoy (proxy-wasm-cpp-host) returns.

use wasmtime::{Caller, Linker, Result};

use crate::abi::{
    HeaderList, Status, buffer_type, deserialize_pairs, header_name, map_type, serialize_pairs,
    stream_type,
};
use crate::memory::{copy_out, read, read_string, write_u32, write_u64};
use crate::properties;
use crate::state::{
    CallResponse, Metric, PendingCall, Queue, StreamState, Tick, VmState, metric_id, metric_index,
};
use crate::types::{HttpCall, LocalResponse, LogLevel, MetricKind};

type Ctx<'a> = Caller<'a, VmState>;

/// Unwraps a memory read, turning an out-of-bounds pointer into `InvalidMemoryAccess`.
macro_rules! arg {
    ($read:expr) => {
        match $read? {
            Some(value) => value,
            None => return Ok(Status::InvalidMemoryAccess.code()),
        }
    };
}

fn status(s: Status) -> Result<i32> {
    Ok(s.code())
}

pub(crate) fn link(linker: &mut Linker<VmState>) -> Result<()> {
    linker.func_wrap("env", "proxy_log", proxy_log)?;
    linker.func_wrap("env", "proxy_get_log_level", proxy_get_log_level)?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        proxy_get_current_time_nanoseconds,
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        proxy_set_tick_period_milliseconds,
    )?;
    linker.func_wrap("env", "proxy_get_configuration", proxy_get_configuration)?;
    linker.func_wrap("env", "proxy_get_buffer_bytes", proxy_get_buffer_bytes)?;
    linker.func_wrap("env", "proxy_get_buffer_status", proxy_get_buffer_status)?;
    linker.func_wrap("env", "proxy_set_buffer_bytes", proxy_set_buffer_bytes)?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        proxy_get_header_map_pairs,
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        proxy_set_header_map_pairs,
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        proxy_get_header_map_size,
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        proxy_get_header_map_value,
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        proxy_replace_header_map_value,
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        proxy_remove_header_map_value,
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        proxy_add_header_map_value,
    )?;
    linker.func_wrap("env", "proxy_get_property", proxy_get_property)?;
    linker.func_wrap("env", "proxy_set_property", proxy_set_property)?;
    linker.func_wrap("env", "proxy_get_shared_data", proxy_get_shared_data)?;
    linker.func_wrap("env", "proxy_set_shared_data", proxy_set_shared_data)?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        proxy_register_shared_queue,
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        proxy_resolve_shared_queue,
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        proxy_dequeue_shared_queue,
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        proxy_enqueue_shared_queue,
    )?;
    linker.func_wrap("env", "proxy_continue_stream", proxy_continue_stream)?;
    linker.func_wrap("env", "proxy_close_stream", proxy_close_stream)?;
    linker.func_wrap("env", "proxy_continue_request", |c: Ctx<'_>| {
        continue_or_close(c, stream_type::HTTP_REQUEST, false)
    })?;
    linker.func_wrap("env", "proxy_continue_response", |c: Ctx<'_>| {
        continue_or_close(c, stream_type::HTTP_RESPONSE, false)
    })?;
    linker.func_wrap("env", "proxy_clear_route_cache", proxy_clear_route_cache)?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        proxy_send_local_response,
    )?;
    linker.func_wrap("env", "proxy_http_call", proxy_http_call)?;
    linker.func_wrap("env", "proxy_grpc_call", proxy_grpc_call)?;
    linker.func_wrap("env", "proxy_grpc_stream", proxy_grpc_stream)?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| status(Status::NotFound),
    )?;
    linker.func_wrap("env", "proxy_grpc_cancel", |_: Ctx<'_>, _: i32| {
        status(Status::NotFound)
    })?;
    linker.func_wrap("env", "proxy_grpc_close", |_: Ctx<'_>, _: i32| {
        status(Status::NotFound)
    })?;
    linker.func_wrap("env", "proxy_get_status", proxy_get_status)?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        proxy_set_effective_context,
    )?;
    linker.func_wrap("env", "proxy_done", proxy_done)?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        proxy_call_foreign_function,
    )?;
    linker.func_wrap("env", "proxy_define_metric", proxy_define_metric)?;
    linker.func_wrap("env", "proxy_increment_metric", proxy_increment_metric)?;
    linker.func_wrap("env", "proxy_record_metric", proxy_record_metric)?;
    linker.func_wrap("env", "proxy_get_metric", proxy_get_metric)?;
    // Emscripten-era helpers Envoy still links; harmless to provide.
    linker.func_wrap("env", "pthread_equal", |a: i32, b: i32| i32::from(a == b))?;
    linker.func_wrap("env", "emscripten_notify_memory_growth", |_: i32| {})?;
    Ok(())
}

// ---- logging, clock, configuration ------------------------------------------------------

fn proxy_log(mut c: Ctx<'_>, level: i32, ptr: i32, len: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_log");
    let message = arg!(read(&mut c, ptr, len));
    let Some(level) = LogLevel::from_abi(level) else {
        return status(Status::BadArgument);
    };
    c.data_mut()
        .log(level, String::from_utf8_lossy(&message).into_owned());
    status(Status::Ok)
}

fn proxy_get_log_level(mut c: Ctx<'_>, ret: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_get_log_level");
    let level = c.data().host.borrow().log_level.to_abi();
    if !write_u32(&mut c, ret, level as u32)? {
        return status(Status::InvalidMemoryAccess);
    }
    status(Status::Ok)
}

fn proxy_get_current_time_nanoseconds(mut c: Ctx<'_>, ret: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_get_current_time_nanoseconds");
    let now = c.data().host.borrow().now_nanos;
    if !write_u64(&mut c, ret, now)? {
        return status(Status::InvalidMemoryAccess);
    }
    status(Status::Ok)
}

fn proxy_set_tick_period_milliseconds(mut c: Ctx<'_>, period: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_set_tick_period_milliseconds");
    let now = c.data().host.borrow().now_nanos;
    let period_nanos = u64::from(period as u32) * 1_000_000;
    let vm = c.data_mut();
    let root = vm.current_root();
    if period_nanos == 0 {
        vm.ticks.remove(&root);
    } else {
        vm.ticks.insert(
            root,
            Tick {
                period_nanos,
                next_due: now + period_nanos,
            },
        );
    }
    status(Status::Ok)
}

fn proxy_get_configuration(mut c: Ctx<'_>, ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_get_configuration");
    let config = c.data().plugin_config.clone();
    Ok(copy_out(&mut c, &config, ptr_ptr, size_ptr)?.code())
}

fn proxy_get_status(mut c: Ctx<'_>, code_ptr: i32, ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_get_status");
    // Only gRPC sets a status, and gRPC is not simulated: report OK with no message.
    if !write_u32(&mut c, code_ptr, 0)? {
        return status(Status::InvalidMemoryAccess);
    }
    Ok(copy_out(&mut c, &[], ptr_ptr, size_ptr)?.code())
}

// ---- buffers ----------------------------------------------------------------------------

fn buffer(vm: &mut VmState, kind: i32) -> Option<&mut Vec<u8>> {
    match kind {
        buffer_type::REQUEST_BODY => vm.current_stream()?.request_body.as_mut(),
        buffer_type::RESPONSE_BODY => vm.current_stream()?.response_body.as_mut(),
        buffer_type::HTTP_CALL_RESPONSE_BODY => vm.call_response.as_mut().map(|r| &mut r.body),
        buffer_type::VM_CONFIGURATION => Some(&mut vm.vm_config),
        buffer_type::PLUGIN_CONFIGURATION if vm.configuring => Some(&mut vm.plugin_config),
        _ => None,
    }
}

fn proxy_get_buffer_bytes(
    mut c: Ctx<'_>,
    kind: i32,
    start: i32,
    max: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_get_buffer_bytes");
    let (start, max) = (start as u32 as usize, max as u32 as usize);
    if start.checked_add(max).is_none() {
        return status(Status::BadArgument);
    }
    let Some(buf) = buffer(c.data_mut(), kind) else {
        return status(Status::NotFound);
    };
    let slice = buf
        .get(start..)
        .map_or(&[][..], |rest| &rest[..max.min(rest.len())])
        .to_vec();
    Ok(copy_out(&mut c, &slice, ptr_ptr, size_ptr)?.code())
}

fn proxy_get_buffer_status(mut c: Ctx<'_>, kind: i32, len_ptr: i32, flags_ptr: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_get_buffer_status");
    let Some(len) = buffer(c.data_mut(), kind).map(|b| b.len()) else {
        return status(Status::NotFound);
    };
    if !write_u32(&mut c, len_ptr, len as u32)? || !write_u32(&mut c, flags_ptr, 0)? {
        return status(Status::InvalidMemoryAccess);
    }
    status(Status::Ok)
}

/// Envoy supports three forms only: prepend (start 0, size 0), replace everything (start 0,
/// size >= length) and append (start >= length). Anything else is BadArgument there, so here too.
fn proxy_set_buffer_bytes(
    mut c: Ctx<'_>,
    kind: i32,
    start: i32,
    size: i32,
    ptr: i32,
    len: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_set_buffer_bytes");
    let data = arg!(read(&mut c, ptr, len));
    let (start, size) = (start as u32 as usize, size as u32 as usize);
    let Some(buf) = buffer(c.data_mut(), kind) else {
        return status(Status::NotFound);
    };
    if start == 0 && size == 0 {
        buf.splice(0..0, data);
    } else if start == 0 && size >= buf.len() {
        *buf = data;
    } else if start >= buf.len() {
        buf.extend_from_slice(&data);
    } else {
        return status(Status::BadArgument);
    }
    status(Status::Ok)
}

// ---- header maps ------------------------------------------------------------------------

/// The map a hostcall addresses, if it exists right now. Envoy answers BadArgument for a map
/// that does not exist yet (response headers during the request path, request trailers
/// before they arrived, callout response outside `on_http_call_response`).
fn header_map(vm: &mut VmState, kind: i32) -> Option<&mut HeaderList> {
    match kind {
        map_type::REQUEST_HEADERS => {
            let stream = vm.current_stream()?;
            if stream.request_headers_released && !stream.logging {
                return None;
            }
            stream.request_headers.as_mut()
        }
        map_type::RESPONSE_HEADERS => {
            let stream = vm.current_stream()?;
            if stream.response_headers_released && !stream.logging {
                return None;
            }
            stream.response_headers.as_mut()
        }
        map_type::REQUEST_TRAILERS => vm.current_stream()?.request_trailers.as_mut(),
        map_type::RESPONSE_TRAILERS => vm.current_stream()?.response_trailers.as_mut(),
        map_type::HTTP_CALL_RESPONSE_HEADERS => vm.call_response.as_mut().map(|r| &mut r.headers),
        map_type::HTTP_CALL_RESPONSE_TRAILERS => vm.call_response.as_mut().map(|r| &mut r.trailers),
        _ => None,
    }
}

fn proxy_get_header_map_pairs(
    mut c: Ctx<'_>,
    kind: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_get_header_map_pairs");
    let Some(map) = header_map(c.data_mut(), kind) else {
        return status(Status::BadArgument);
    };
    let bytes = if map.is_empty() {
        Vec::new()
    } else {
        serialize_pairs(map)
    };
    Ok(copy_out(&mut c, &bytes, ptr_ptr, size_ptr)?.code())
}

fn proxy_set_header_map_pairs(mut c: Ctx<'_>, kind: i32, ptr: i32, len: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_set_header_map_pairs");
    let bytes = arg!(read(&mut c, ptr, len));
    let Some(pairs) = deserialize_pairs(&bytes) else {
        return status(Status::BadArgument);
    };
    let Some(map) = header_map(c.data_mut(), kind) else {
        return status(Status::BadArgument);
    };
    *map = pairs
        .into_iter()
        .map(|(k, v)| (header_name(&k), v))
        .collect();
    status(Status::Ok)
}

fn proxy_get_header_map_size(mut c: Ctx<'_>, kind: i32, ret: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_get_header_map_size");
    let Some(map) = header_map(c.data_mut(), kind) else {
        return status(Status::BadArgument);
    };
    // Envoy reports the map's byte size, not its entry count.
    let size: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if !write_u32(&mut c, ret, size as u32)? {
        return status(Status::InvalidMemoryAccess);
    }
    status(Status::Ok)
}

fn proxy_get_header_map_value(
    mut c: Ctx<'_>,
    kind: i32,
    key_ptr: i32,
    key_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_get_header_map_value");
    let key = header_name(&arg!(read(&mut c, key_ptr, key_len)));
    let Some(map) = header_map(c.data_mut(), kind) else {
        return status(Status::BadArgument);
    };
    // Envoy returns the first value when a header repeats.
    let Some(value) = map.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()) else {
        return status(Status::NotFound);
    };
    Ok(copy_out(&mut c, &value, ptr_ptr, size_ptr)?.code())
}

fn proxy_replace_header_map_value(
    mut c: Ctx<'_>,
    kind: i32,
    key_ptr: i32,
    key_len: i32,
    ptr: i32,
    len: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_replace_header_map_value");
    let key = header_name(&arg!(read(&mut c, key_ptr, key_len)));
    let value = arg!(read(&mut c, ptr, len));
    let Some(map) = header_map(c.data_mut(), kind) else {
        return status(Status::BadArgument);
    };
    replace_header(map, &key, value);
    status(Status::Ok)
}

/// Sets a header to one value: the first occurrence keeps its place, the others go.
pub(crate) fn replace_header(map: &mut HeaderList, key: &str, value: Vec<u8>) {
    match map.iter().position(|(k, _)| k == key) {
        Some(first) => {
            map[first].1 = value;
            let mut index = 0;
            map.retain(|(k, _)| {
                let keep = index <= first || k != key;
                index += 1;
                keep
            });
        }
        None => map.push((key.to_string(), value)),
    }
}

fn proxy_remove_header_map_value(
    mut c: Ctx<'_>,
    kind: i32,
    key_ptr: i32,
    key_len: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_remove_header_map_value");
    let key = header_name(&arg!(read(&mut c, key_ptr, key_len)));
    let Some(map) = header_map(c.data_mut(), kind) else {
        return status(Status::BadArgument);
    };
    map.retain(|(k, _)| *k != key);
    status(Status::Ok)
}

fn proxy_add_header_map_value(
    mut c: Ctx<'_>,
    kind: i32,
    key_ptr: i32,
    key_len: i32,
    ptr: i32,
    len: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_add_header_map_value");
    let key = header_name(&arg!(read(&mut c, key_ptr, key_len)));
    let value = arg!(read(&mut c, ptr, len));
    let Some(map) = header_map(c.data_mut(), kind) else {
        return status(Status::BadArgument);
    };
    map.push((key, value));
    status(Status::Ok)
}

// ---- properties -------------------------------------------------------------------------

fn proxy_get_property(
    mut c: Ctx<'_>,
    path_ptr: i32,
    path_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_get_property");
    let path = arg!(read(&mut c, path_ptr, path_len));
    let Some(value) = properties::lookup(c.data_mut(), &path) else {
        return status(Status::NotFound);
    };
    Ok(copy_out(&mut c, &value, ptr_ptr, size_ptr)?.code())
}

fn proxy_set_property(
    mut c: Ctx<'_>,
    path_ptr: i32,
    path_len: i32,
    ptr: i32,
    len: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_set_property");
    let path = arg!(read(&mut c, path_ptr, path_len));
    let value = arg!(read(&mut c, ptr, len));
    let vm = c.data_mut();
    let declared_read_only = vm.declared_read_only.contains(&path);
    match vm.current_stream() {
        Some(stream) => {
            // Envoy: an existing value keeps the prototype it was created with; a new one
            // takes the writing plugin's declaration. A read-only value takes one write.
            if stream.read_only.contains(&path) {
                return status(Status::BadArgument);
            }
            if declared_read_only && !stream.properties.contains_key(&path) {
                stream.read_only.insert(path.clone());
            }
            if !stream.filter_state.contains(&path) {
                stream.filter_state.push(path.clone());
            }
            stream.properties.insert(path, value);
        }
        None => {
            vm.root_properties.insert(path, value);
        }
    }
    status(Status::Ok)
}

// ---- shared data and queues -------------------------------------------------------------

fn proxy_get_shared_data(
    mut c: Ctx<'_>,
    key_ptr: i32,
    key_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
    cas_ptr: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_get_shared_data");
    let key = arg!(read_string(&mut c, key_ptr, key_len));
    let slot = (c.data().vm_id.clone(), key);
    let found = c.data().host.borrow().shared_data.get(&slot).cloned();
    let Some((value, cas)) = found else {
        return status(Status::NotFound);
    };
    let copied = copy_out(&mut c, &value, ptr_ptr, size_ptr)?;
    if copied != Status::Ok {
        return status(copied);
    }
    {
        let mut host = c.data().host.borrow_mut();
        let read = u64::try_from(value.len()).unwrap_or(u64::MAX);
        host.shared_data_bytes_read = host.shared_data_bytes_read.saturating_add(read);
    }
    if !write_u32(&mut c, cas_ptr, cas)? {
        return status(Status::InvalidMemoryAccess);
    }
    status(Status::Ok)
}

fn proxy_set_shared_data(
    mut c: Ctx<'_>,
    key_ptr: i32,
    key_len: i32,
    ptr: i32,
    len: i32,
    cas: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_set_shared_data");
    let key = arg!(read_string(&mut c, key_ptr, key_len));
    let value = arg!(read(&mut c, ptr, len));
    let vm_id = c.data().vm_id.clone();
    let result = c
        .data()
        .host
        .borrow_mut()
        .set_shared(&vm_id, &key, value, cas as u32);
    status(if result.is_ok() {
        Status::Ok
    } else {
        Status::CasMismatch
    })
}

fn proxy_register_shared_queue(
    mut c: Ctx<'_>,
    name_ptr: i32,
    name_len: i32,
    ret: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_register_shared_queue");
    let name = arg!(read_string(&mut c, name_ptr, name_len));
    let vm = c.data();
    let (owner_vm, owner_context) = (vm.vm, vm.current_context());
    let token = {
        let mut host = vm.host.borrow_mut();
        let slot = (vm.vm_id.clone(), name);
        let token = match host.queue_tokens.get(&slot) {
            Some(token) => *token,
            None => {
                let token = host.next_queue_token;
                host.next_queue_token += 1;
                host.queue_tokens.insert(slot, token);
                token
            }
        };
        // The last registration wins notifications; queued items survive re-registration.
        let queue = host.queues.entry(token).or_insert_with(|| Queue {
            items: Default::default(),
            owner_vm,
            owner_context,
        });
        queue.owner_vm = owner_vm;
        queue.owner_context = owner_context;
        token
    };
    if !write_u32(&mut c, ret, token)? {
        return status(Status::InvalidMemoryAccess);
    }
    status(Status::Ok)
}

fn proxy_resolve_shared_queue(
    mut c: Ctx<'_>,
    vm_ptr: i32,
    vm_len: i32,
    name_ptr: i32,
    name_len: i32,
    ret: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_resolve_shared_queue");
    let vm_id = arg!(read_string(&mut c, vm_ptr, vm_len));
    let name = arg!(read_string(&mut c, name_ptr, name_len));
    let token = c
        .data()
        .host
        .borrow()
        .queue_tokens
        .get(&(vm_id, name))
        .copied();
    let Some(token) = token else {
        return status(Status::NotFound);
    };
    if !write_u32(&mut c, ret, token)? {
        return status(Status::InvalidMemoryAccess);
    }
    status(Status::Ok)
}

fn proxy_dequeue_shared_queue(
    mut c: Ctx<'_>,
    token: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_dequeue_shared_queue");
    let item = {
        let mut host = c.data().host.borrow_mut();
        match host.queues.get_mut(&(token as u32)) {
            None => return status(Status::NotFound),
            Some(queue) => queue.items.pop_front(),
        }
    };
    let Some(item) = item else {
        return status(Status::Empty);
    };
    Ok(copy_out(&mut c, &item, ptr_ptr, size_ptr)?.code())
}

fn proxy_enqueue_shared_queue(mut c: Ctx<'_>, token: i32, ptr: i32, len: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_enqueue_shared_queue");
    let item = arg!(read(&mut c, ptr, len));
    let mut host = c.data().host.borrow_mut();
    let token = token as u32;
    let Some(queue) = host.queues.get_mut(&token) else {
        return status(Status::NotFound);
    };
    queue.items.push_back(item);
    let notify = (queue.owner_vm, queue.owner_context, token);
    // Delivered after the current callback returns, as Envoy posts it to the owner's dispatcher.
    host.queue_ready.push_back(notify);
    status(Status::Ok)
}

// ---- stream control ---------------------------------------------------------------------

fn continue_or_close(mut c: Ctx<'_>, which: i32, close: bool) -> Result<i32> {
    let Some(stream) = c.data_mut().current_stream() else {
        // Root contexts have no stream; Envoy treats this as a no-op.
        return status(Status::Ok);
    };
    match (which, close) {
        (stream_type::HTTP_REQUEST, false) => stream.request_resumed += 1,
        (stream_type::HTTP_RESPONSE, false) => stream.response_resumed += 1,
        (stream_type::HTTP_REQUEST, true) => stream.request_closed = true,
        (stream_type::HTTP_RESPONSE, true) => stream.response_closed = true,
        (stream_type::DOWNSTREAM | stream_type::UPSTREAM, _) => return status(Status::BadArgument),
        _ => return status(Status::BadArgument),
    }
    status(Status::Ok)
}

fn proxy_continue_stream(c: Ctx<'_>, which: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_continue_stream");
    continue_or_close(c, which, false)
}

fn proxy_close_stream(c: Ctx<'_>, which: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_close_stream");
    continue_or_close(c, which, true)
}

fn proxy_clear_route_cache(mut c: Ctx<'_>) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_clear_route_cache");
    if let Some(stream) = c.data_mut().current_stream() {
        stream.route_cache_cleared += 1;
    }
    status(Status::Ok)
}

#[allow(clippy::too_many_arguments)]
fn proxy_send_local_response(
    mut c: Ctx<'_>,
    code: i32,
    details_ptr: i32,
    details_len: i32,
    body_ptr: i32,
    body_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    grpc_status: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_send_local_response");
    let details = arg!(read(&mut c, details_ptr, details_len));
    let body = arg!(read(&mut c, body_ptr, body_len));
    let headers = arg!(read(&mut c, headers_ptr, headers_len));
    let Some(headers) = deserialize_pairs(&headers) else {
        return status(Status::BadArgument);
    };
    let Some(stream) = c.data_mut().current_stream() else {
        return status(Status::BadArgument);
    };
    if stream.local_response.is_none() {
        stream.local_response = Some(LocalResponse {
            status: code as u32,
            headers: headers
                .into_iter()
                .map(|(k, v)| (header_name(&k), v))
                .collect(),
            body,
            grpc_status: (grpc_status >= 0).then_some(grpc_status),
            details: String::from_utf8_lossy(&details).into_owned(),
        });
    }
    status(Status::Ok)
}

pub(crate) fn is_stream_ended(stream: &StreamState) -> bool {
    stream.local_response.is_some() || stream.request_closed || stream.response_closed
}

// ---- callouts ---------------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
fn proxy_http_call(
    mut c: Ctx<'_>,
    upstream_ptr: i32,
    upstream_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    body_ptr: i32,
    body_len: i32,
    trailers_ptr: i32,
    trailers_len: i32,
    timeout_ms: i32,
    token_ptr: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_http_call");
    let upstream = arg!(read_string(&mut c, upstream_ptr, upstream_len));
    let headers = arg!(read(&mut c, headers_ptr, headers_len));
    let body = arg!(read(&mut c, body_ptr, body_len));
    let trailers = arg!(read(&mut c, trailers_ptr, trailers_len));
    let (Some(headers), Some(trailers)) =
        (deserialize_pairs(&headers), deserialize_pairs(&trailers))
    else {
        return status(Status::BadArgument);
    };
    let headers: HeaderList = headers
        .into_iter()
        .map(|(k, v)| (header_name(&k), v))
        .collect();
    let trailers: HeaderList = trailers
        .into_iter()
        .map(|(k, v)| (header_name(&k), v))
        .collect();
    // Envoy refuses a callout without these three, and one to an unknown cluster.
    let has = |name: &str| headers.iter().any(|(k, _)| k == name);
    if !has(":method") || !has(":path") || !has(":authority") {
        return status(Status::BadArgument);
    }
    let token = {
        let mut host = c.data().host.borrow_mut();
        if let Some(clusters) = &host.clusters
            && !clusters.contains(&upstream)
        {
            return status(Status::BadArgument);
        }
        let token = host.next_http_token;
        host.next_http_token += 1;
        token
    };
    let now = c.data().host.borrow().now_nanos;
    let timeout_ms = timeout_ms as u32;
    let timeout = (timeout_ms > 0).then(|| std::time::Duration::from_millis(u64::from(timeout_ms)));
    let root = c.data().current_root();
    c.data_mut().http_calls.insert(
        token,
        PendingCall {
            root,
            call: HttpCall {
                token,
                upstream,
                headers,
                body,
                trailers,
                timeout,
            },
            deadline: (timeout_ms > 0).then(|| now + u64::from(timeout_ms) * 1_000_000),
        },
    );
    if !write_u32(&mut c, token_ptr, token)? {
        return status(Status::InvalidMemoryAccess);
    }
    status(Status::Ok)
}

/// The response the callback of a callout reads through the call-response map and buffer.
pub(crate) fn call_response(status_code: u32, headers: HeaderList, body: Vec<u8>) -> CallResponse {
    let mut all = vec![(":status".to_string(), status_code.to_string().into_bytes())];
    all.extend(headers);
    CallResponse {
        headers: all,
        body,
        trailers: Vec::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn proxy_grpc_call(
    _: Ctx<'_>,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
) -> Result<i32> {
    // gRPC callouts are not simulated; the SDK surfaces this as Err(InternalFailure).
    status(Status::InternalFailure)
}

#[allow(clippy::too_many_arguments)]
fn proxy_grpc_stream(
    _: Ctx<'_>,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
    _: i32,
) -> Result<i32> {
    status(Status::InternalFailure)
}

// ---- contexts ---------------------------------------------------------------------------

fn proxy_set_effective_context(mut c: Ctx<'_>, context: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_set_effective_context");
    let context = context as u32;
    let vm = c.data_mut();
    if !vm.has_context(context) {
        return status(Status::BadArgument);
    }
    vm.effective_context = context;
    status(Status::Ok)
}

fn proxy_done(mut c: Ctx<'_>) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_done");
    // Envoy accepts it only from a root whose `proxy_on_done` answered false.
    if !c.data().shutdown_deferred {
        return status(Status::NotFound);
    }
    c.data_mut().done_requested = true;
    status(Status::Ok)
}

fn proxy_call_foreign_function(
    mut c: Ctx<'_>,
    name_ptr: i32,
    name_len: i32,
    args_ptr: i32,
    args_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_call_foreign_function");
    let name = String::from_utf8_lossy(&arg!(read(&mut c, name_ptr, name_len))).into_owned();
    let args = arg!(read(&mut c, args_ptr, args_len));
    // Only what the test registered (Host::register_foreign_function), as Envoy has only
    // what its build registered; unknown names are NotFound there too.
    let function = {
        let mut host = c.data().host.borrow_mut();
        *host.foreign_calls.entry(name.clone()).or_default() += 1;
        host.foreign_functions.get(&name).cloned()
    };
    let Some(function) = function else {
        if name == properties::DECLARE_PROPERTY && c.data().host.borrow().declare_property {
            return status(properties::declare(c.data_mut(), &args));
        }
        return status(Status::NotFound);
    };
    match function(&args) {
        Ok(result) => Ok(copy_out(&mut c, &result, ptr_ptr, size_ptr)?.code()),
        Err(code) => Ok(code as i32),
    }
}

// ---- metrics ----------------------------------------------------------------------------

fn proxy_define_metric(
    mut c: Ctx<'_>,
    kind: i32,
    name_ptr: i32,
    name_len: i32,
    ret: i32,
) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_define_metric");
    let name = arg!(read_string(&mut c, name_ptr, name_len));
    let Some(kind) = MetricKind::from_abi(kind) else {
        return status(Status::BadArgument);
    };
    let id = {
        let mut host = c.data().host.borrow_mut();
        match host.metric_ids.get(&name).copied() {
            // One proxy, one stat per name: every VM defining it shares it.
            Some(id) => {
                let same_kind = metric_index(id)
                    .and_then(|i| host.metrics.get(i))
                    .is_some_and(|m| m.kind == kind);
                if !same_kind {
                    return status(Status::BadArgument);
                }
                id
            }
            None => {
                let id = metric_id(host.metrics.len(), kind);
                host.metrics.push(Metric {
                    name: name.clone(),
                    kind,
                    value: 0,
                    samples: Vec::new(),
                });
                host.metric_ids.insert(name, id);
                id
            }
        }
    };
    if !write_u32(&mut c, ret, id)? {
        return status(Status::InvalidMemoryAccess);
    }
    status(Status::Ok)
}

fn proxy_increment_metric(c: Ctx<'_>, id: i32, offset: i64) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_increment_metric");
    let mut host = c.data().host.borrow_mut();
    let Some(metric) = metric_index(id as u32).and_then(|i| host.metrics.get_mut(i)) else {
        return status(Status::NotFound);
    };
    match metric.kind {
        MetricKind::Counter if offset > 0 => {
            metric.value = metric.value.saturating_add(offset as u64)
        }
        MetricKind::Gauge if offset >= 0 => {
            metric.value = metric.value.saturating_add(offset as u64)
        }
        MetricKind::Gauge => metric.value = metric.value.saturating_sub(offset.unsigned_abs()),
        _ => return status(Status::BadArgument),
    }
    status(Status::Ok)
}

fn proxy_record_metric(c: Ctx<'_>, id: i32, value: i64) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_record_metric");
    let mut host = c.data().host.borrow_mut();
    let Some(metric) = metric_index(id as u32).and_then(|i| host.metrics.get_mut(i)) else {
        return status(Status::NotFound);
    };
    let value = value as u64;
    match metric.kind {
        MetricKind::Counter => metric.value = metric.value.saturating_add(value),
        MetricKind::Gauge => metric.value = value,
        MetricKind::Histogram => metric.samples.push(value),
    }
    status(Status::Ok)
}

fn proxy_get_metric(mut c: Ctx<'_>, id: i32, ret: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "proxy_get_metric");
    let value = {
        let host = c.data().host.borrow();
        match metric_index(id as u32).and_then(|i| host.metrics.get(i)) {
            None => return status(Status::NotFound),
            // Envoy cannot read a histogram back.
            Some(m) if m.kind == MetricKind::Histogram => return status(Status::BadArgument),
            Some(m) => m.value,
        }
    };
    if !write_u64(&mut c, ret, value)? {
        return status(Status::InvalidMemoryAccess);
    }
    status(Status::Ok)
}
