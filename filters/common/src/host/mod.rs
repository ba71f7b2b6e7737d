//! The host boundary: every proxy-wasm import, every `proxy_on_*` export, and nothing
//! between them that can panic.
//!
//! We replaced the proxy-wasm SDK rather than vendoring it. Its hostcall wrappers end in
//! `status => panic!` at 52 sites and its dispatcher unwraps, so "errors are returned" was
//! false wherever a filter called the host; a vendored copy would be 3,000 lines to audit
//! and re-audit on every update. ABI 0.2.1 is small and stable: [`abi`] declares its
//! imports with plain `u32` statuses, [`calls`] wraps each to return
//! `Result<_, HostError>` naming the call, [`dispatch`] routes the exports to a filter's
//! [`RootContext`] and [`StreamContext`] (traits as small as the SDK's), [`respond`] holds
//! the one way to refuse and to fail closed, and [`logging`] the logger and panic hook.
//!
//! A filter's `lib.rs` (the crate root, so the export is reachable) starts it with
//! `banking_filter_common::filter_main!(|_| Box::new(filter::Root::default()));`.

mod abi;
pub mod calls;
pub mod dispatch;
pub mod filter_state;
pub mod logging;
pub mod respond;

pub use calls::*;
pub use dispatch::{Action, CallResponse, RootContext, StreamContext, start};
pub use logging::critical;
pub use respond::*;

/// Exports `_initialize`, which Envoy calls once per VM before any context exists: it runs
/// the module's constructors, then installs the logger, the panic hook and `$new_root`,
/// the factory of the filter's root context (`Fn(u32) -> Box<dyn RootContext>`).
///
/// Then exports the per-stream callbacks the filter names, of `request_body`,
/// `request_trailers`, `response_headers`, `response_body`, `response_trailers`, `log` and
/// `done`: `filter_main!(|_| Box::new(Root), [response_headers])`. Envoy (proxy-wasm-cpp-host)
/// enters the VM for a callback only when the module exports it, and each entry costs
/// microseconds on every request, so a filter exports what it uses and no more. The
/// context, `proxy_on_request_headers` and the root's callbacks but `done` are always
/// exported, and `proxy_on_delete` with a list.
///
/// A filter that acts on request headers alone writes
/// `filter_main!(|_| Box::new(Root), request_headers_only)`: no stream callback besides
/// `proxy_on_request_headers`, and no `proxy_on_delete` either
/// ([`dispatch::Lifecycle::RequestHeadersOnly`] says how its contexts are kept without it).
#[macro_export]
macro_rules! filter_main {
    ($new_root:expr) => {
        $crate::filter_main!($new_root, []);
    };
    ($new_root:expr, request_headers_only) => {
        $crate::filter_main!(
            @initialize $new_root,
            $crate::host::dispatch::Lifecycle::RequestHeadersOnly
        );
    };
    ($new_root:expr, [$($callback:ident),* $(,)?]) => {
        $crate::filter_main!(@initialize $new_root, $crate::host::dispatch::Lifecycle::Full);
        $crate::export_stream_callback!(delete);
        $($crate::export_stream_callback!($callback);)*
    };
    (@initialize $new_root:expr, $lifecycle:expr) => {
        #[cfg(target_os = "wasi")]
        unsafe extern "C" {
            fn __wasm_call_ctors();
        }

        // Unexported off wasm32, so native test builds of several filters do not collide.
        #[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
        pub extern "C" fn _initialize() {
            #[cfg(target_os = "wasi")]
            // SAFETY: called once, by the host, before anything else runs in the module.
            unsafe {
                __wasm_call_ctors();
            }
            $crate::host::start(::std::rc::Rc::new($new_root), $lifecycle);
        }
    };
}

/// One optional callback for [`filter_main!`].
#[doc(hidden)]
#[macro_export]
macro_rules! export_stream_callback {
    (request_body) => {
        #[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
        pub extern "C" fn proxy_on_request_body(context: u32, size: usize, end: u32) -> u32 {
            $crate::host::dispatch::proxy_on_request_body(context, size, end)
        }
    };
    (request_trailers) => {
        #[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
        pub extern "C" fn proxy_on_request_trailers(context: u32, trailers: usize) -> u32 {
            $crate::host::dispatch::proxy_on_request_trailers(context, trailers)
        }
    };
    (response_headers) => {
        #[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
        pub extern "C" fn proxy_on_response_headers(context: u32, headers: usize, end: u32) -> u32 {
            $crate::host::dispatch::proxy_on_response_headers(context, headers, end)
        }
    };
    (response_body) => {
        #[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
        pub extern "C" fn proxy_on_response_body(context: u32, size: usize, end: u32) -> u32 {
            $crate::host::dispatch::proxy_on_response_body(context, size, end)
        }
    };
    (response_trailers) => {
        #[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
        pub extern "C" fn proxy_on_response_trailers(context: u32, trailers: usize) -> u32 {
            $crate::host::dispatch::proxy_on_response_trailers(context, trailers)
        }
    };
    (log) => {
        #[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
        pub extern "C" fn proxy_on_log(context: u32) {
            $crate::host::dispatch::proxy_on_log(context)
        }
    };
    (delete) => {
        #[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
        pub extern "C" fn proxy_on_delete(context: u32) {
            $crate::host::dispatch::proxy_on_delete(context)
        }
    };
    (done) => {
        #[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
        pub extern "C" fn proxy_on_done(context: u32) -> u32 {
            $crate::host::dispatch::proxy_on_done(context)
        }
    };
}
