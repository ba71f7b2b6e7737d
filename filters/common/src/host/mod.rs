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
#[macro_export]
macro_rules! filter_main {
    ($new_root:expr) => {
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
            $crate::host::start(::std::rc::Rc::new($new_root));
        }
    };
}
