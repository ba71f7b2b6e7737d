//! The raw imports of proxy-wasm ABI 0.2.1 (and the two WASI calls we make directly).
//!
//! Every import returns the host's status as a plain `u32`, never as an enum: a host that
//! answers a code this build does not know must produce an error, not undefined behaviour.
//! Off wasm32-wasi (native unit tests, docs) the same names exist and answer
//! `Unimplemented`, so shells compile everywhere and fail closed if ever called there.

#![allow(clippy::too_many_arguments)]

/// `Status::Unimplemented`, what the native stand-ins answer.
#[cfg(not(target_os = "wasi"))]
const UNIMPLEMENTED: u32 = 12;

macro_rules! imports {
    ($module:literal; $(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;)*) => {
        #[cfg(target_os = "wasi")]
        #[link(wasm_import_module = $module)]
        unsafe extern "C" {
            $(pub fn $name($($arg: $ty),*) -> $ret;)*
        }

        $(
            #[cfg(not(target_os = "wasi"))]
            #[allow(unused_variables)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                UNIMPLEMENTED as $ret
            }
        )*
    };
}

imports! { "env";
    fn proxy_log(level: u32, message: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(buffer: u32, start: usize, max_size: usize, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_set_buffer_bytes(buffer: u32, start: usize, size: usize, data: *const u8, data_size: usize) -> u32;
    fn proxy_get_header_map_pairs(map: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_set_header_map_pairs(map: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_header_map_value(map: u32, key: *const u8, key_size: usize, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(map: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(map: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_get_property(path: *const u8, path_size: usize, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_get_shared_data(key: *const u8, key_size: usize, return_data: *mut *mut u8, return_size: *mut usize, return_cas: *mut u32) -> u32;
    fn proxy_set_shared_data(key: *const u8, key_size: usize, value: *const u8, value_size: usize, cas: u32) -> u32;
    fn proxy_register_shared_queue(name: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_resolve_shared_queue(vm_id: *const u8, vm_id_size: usize, name: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_dequeue_shared_queue(queue: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_enqueue_shared_queue(queue: u32, value: *const u8, value_size: usize) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_close_stream(stream: u32) -> u32;
    fn proxy_send_local_response(status: u32, details: *const u8, details_size: usize, body: *const u8, body_size: usize, headers: *const u8, headers_size: usize, grpc_status: i32) -> u32;
    fn proxy_http_call(upstream: *const u8, upstream_size: usize, headers: *const u8, headers_size: usize, body: *const u8, body_size: usize, trailers: *const u8, trailers_size: usize, timeout_ms: u32, return_token: *mut u32) -> u32;
    fn proxy_set_effective_context(context: u32) -> u32;
    fn proxy_done() -> u32;
    fn proxy_call_foreign_function(name: *const u8, name_size: usize, args: *const u8, args_size: usize, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric: u32, value: u64) -> u32;
    fn proxy_get_metric(metric: u32, return_value: *mut u64) -> u32;
}

// WASI preview1 answers errno as u16.
imports! { "wasi_snapshot_preview1";
    fn clock_time_get(clock: u32, precision: u64, return_time: *mut u64) -> u16;
}
