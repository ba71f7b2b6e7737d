//! What a test can make the host do that a well-behaved Envoy rarely does: answer a chosen
//! status from a named hostcall for its next N calls ([`crate::Host::fail_hostcall`]), and
//! run a closure right after a VM's named hostcall returns ([`crate::Plugin::after_hostcall`])
//! so that another VM's request lands exactly between, say, a read and its CAS write.
//!
//! Every hostcall (the `env.proxy_*` set and WASI's clock and randomness) starts with
//! [`enter`], which also counts calls by name ([`crate::Host::hostcall_count`]).

use crate::state::{SharedHost, VmState};
use wasmtime::Caller;

/// A status a hostcall answers instead of doing its work.
pub(crate) struct Fault {
    pub(crate) call: String,
    pub(crate) status: i32,
    pub(crate) remaining: u32,
    /// Only this VM's calls, or every VM's.
    pub(crate) vm: Option<usize>,
}

/// A closure to run once, after `vm` returns from `call` for the `skip + 1`-th time.
pub(crate) struct AfterHook {
    pub(crate) call: String,
    pub(crate) vm: usize,
    pub(crate) skip: u32,
    pub(crate) hook: Box<dyn FnOnce()>,
}

/// Runs the VM's armed after-hook for its call, if any, when the hostcall returns.
pub(crate) struct AfterCall {
    host: SharedHost,
    vm: usize,
    call: &'static str,
}

impl Drop for AfterCall {
    fn drop(&mut self) {
        let hook = {
            let mut state = self.host.borrow_mut();
            let found = state
                .after_hooks
                .iter()
                .position(|h| h.vm == self.vm && h.call == self.call);
            match found {
                Some(i) if state.after_hooks[i].skip > 0 => {
                    state.after_hooks[i].skip -= 1;
                    None
                }
                Some(i) => Some(state.after_hooks.remove(i)),
                None => None,
            }
        };
        // The host state is released: the hook may drive any other VM of this host.
        if let Some(hook) = hook {
            (hook.hook)();
        }
    }
}

/// Counts the call and answers an armed fault's status, or lets the call proceed with a
/// guard that runs the after-hook when it returns.
pub(crate) fn enter(c: &Caller<'_, VmState>, call: &'static str) -> Result<AfterCall, i32> {
    let vm = c.data().vm;
    let host = c.data().host.clone();
    {
        let mut state = host.borrow_mut();
        *state.call_counts.entry(call.to_string()).or_default() += 1;
        let armed = state
            .faults
            .iter()
            .position(|f| f.call == call && f.remaining > 0 && f.vm.is_none_or(|v| v == vm));
        if let Some(i) = armed {
            let fault = &mut state.faults[i];
            fault.remaining -= 1;
            let status = fault.status;
            if fault.remaining == 0 {
                state.faults.remove(i);
            }
            return Err(status);
        }
    }
    Ok(AfterCall { host, vm, call })
}

/// Starts a hostcall: `hostcall!(c, "proxy_get_shared_data");` returns the armed fault's
/// status, else keeps a guard alive to the end of the function.
macro_rules! hostcall {
    ($c:expr, $name:literal) => {
        let _after = match crate::faults::enter(&$c, $name) {
            Ok(guard) => guard,
            Err(status) => return Ok(status),
        };
    };
}

pub(crate) use hostcall;
