//! The module's `proxy_on_*` exports and a small dispatcher from context ids to the
//! filter's root and stream contexts.
//!
//! Ours rather than the SDK's because the SDK's dispatcher unwraps on the way
//! (`set_effective_context().unwrap()`, `expect("invalid token_id")` for a callout it did
//! not register): a host that answers oddly, or a response for a call the dispatcher did not
//! see, traps the VM. Here a context or token we do not know is logged and answered with
//! the safe default: a stream phase fails closed, anything else is dropped.
//!
//! Contexts live in `Rc<RefCell<..>>` and the registry is borrowed only to look one up, so
//! a filter may call any hostcall (including [`super::dispatch_http_call`], which records
//! its token here) from inside a callback.

use super::calls::{self, BufferType, HeaderPairs, HostResult, MapType, Status};
use super::respond;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// How long the module keeps a filter's contexts, chosen in [`crate::filter_main!`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifecycle {
    /// A stream lives from `proxy_on_context_create` to `proxy_on_delete`, and so does a
    /// root.
    #[default]
    Full,
    /// The filter acts on request headers only. The module does not export
    /// `proxy_on_delete`, so Envoy enters the VM twice per stream instead of three times:
    /// a stream's context is made when its request headers arrive (Envoy creates it just
    /// before them) and dropped when that callback returns. Such a stream gets no later
    /// callback: it must not pause to resume later, and a callout it dispatches is never
    /// answered to it. A root the proxy deleted (a configuration push that kept the VM) is
    /// found with `proxy_set_effective_context`, which refuses a context the host no longer
    /// has, and released: at every tick of a root of the VM and whenever a root is created.
    RequestHeadersOnly,
}

/// Streams a [`Lifecycle::RequestHeadersOnly`] filter remembers between
/// `proxy_on_context_create` and their request headers. Envoy calls the two back to back,
/// so one would do; a stream whose headers never reach the filter (an earlier filter
/// answered it, or it was reset while an earlier filter held it) is created only to be
/// logged, and is pushed out, oldest first.
const OPENED_STREAMS: usize = 1024;

/// What a stream callback tells the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pass the stream on to the next filter.
    Continue,
    /// Stop here: after a local response, or until the filter resumes the stream.
    Pause,
}

impl Action {
    fn code(self) -> u32 {
        match self {
            Action::Continue => 0,
            Action::Pause => 1,
        }
    }
}

/// A response to an HTTP callout, read from the host on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallResponse {
    pub token: u32,
    pub headers: usize,
    pub body_size: usize,
    pub trailers: usize,
}

impl CallResponse {
    /// The response's `:status`; `None` when the call failed (reset, timeout, no cluster):
    /// Envoy then delivers no headers at all.
    pub fn status(&self) -> HostResult<Option<u16>> {
        if self.headers == 0 {
            return Ok(None);
        }
        let status = calls::map_value(MapType::CallResponseHeaders, ":status")?;
        Ok(status.and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok()))
    }

    pub fn headers(&self) -> HostResult<HeaderPairs> {
        if self.headers == 0 {
            return Ok(Vec::new());
        }
        calls::map(MapType::CallResponseHeaders)
    }

    pub fn body(&self) -> HostResult<Vec<u8>> {
        if self.body_size == 0 {
            return Ok(Vec::new());
        }
        Ok(calls::buffer(BufferType::CallResponseBody, 0, self.body_size)?.unwrap_or_default())
    }
}

/// A plugin's root context: one per VM, configured once, alive as long as the plugin.
pub trait RootContext {
    /// The VM configuration (`vmConfig.configuration`); false refuses to start.
    fn on_vm_start(&mut self, _vm_configuration: &[u8]) -> bool {
        true
    }
    /// The plugin configuration, as istiod passes `pluginConfig`; false refuses it.
    fn on_configure(&mut self, configuration: &[u8]) -> bool;
    fn on_tick(&mut self) {}
    fn on_queue_ready(&mut self, _queue: u32) {}
    /// A response to a callout this root dispatched.
    fn on_http_call_response(&mut self, _response: CallResponse) {}
    /// The VM is shutting down: flush what must not be lost. Returning false defers the
    /// shutdown until the filter calls [`super::done`], later (from a tick or a callout
    /// response): Envoy refuses `proxy_done` from inside `on_done`.
    fn on_done(&mut self) -> bool {
        true
    }
    /// A new HTTP stream of this plugin.
    fn new_stream(&self, context_id: u32) -> Box<dyn StreamContext>;
}

/// One HTTP stream through the filter. Every phase passes by default.
pub trait StreamContext {
    fn on_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_request_trailers(&mut self, _trailers: usize) -> Action {
        Action::Continue
    }
    fn on_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_response_trailers(&mut self, _trailers: usize) -> Action {
        Action::Continue
    }
    /// A response to a callout this stream dispatched; the stream is the effective context.
    fn on_http_call_response(&mut self, _response: CallResponse) {}
    /// After the response (or the reset): the place for access-log style work.
    fn on_log(&mut self) {}
}

type NewRoot = Rc<dyn Fn(u32) -> Box<dyn RootContext>>;
type Shared<T> = Rc<RefCell<Box<T>>>;

#[derive(Default)]
struct Registry {
    new_root: Option<NewRoot>,
    roots: HashMap<u32, Shared<dyn RootContext>>,
    streams: HashMap<u32, Shared<dyn StreamContext>>,
    /// [`Lifecycle::RequestHeadersOnly`]: (stream, its root), in the order created.
    opened: VecDeque<(u32, u32)>,
    /// Roots the host would not say were gone or alive, warned about once.
    unclear_roots: Vec<u32>,
    /// Callout token -> the context that dispatched it.
    callouts: HashMap<u32, u32>,
    /// The context of the callback running now.
    current: u32,
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
    /// Apart from the registry, so no borrow of it can make a callback take the wrong one.
    static LIFECYCLE: Cell<Lifecycle> = const { Cell::new(Lifecycle::Full) };
}

/// Runs `f` on the registry if it is not already borrowed (it never is across a callback).
fn registry<R>(f: impl FnOnce(&mut Registry) -> R) -> Option<R> {
    REGISTRY.with(|r| r.try_borrow_mut().ok().map(|mut r| f(&mut r)))
}

/// Installs the logger, the panic hook and the root factory. Called by [`crate::filter_main`].
pub fn start(new_root: NewRoot, lifecycle: Lifecycle) {
    super::logging::install();
    LIFECYCLE.with(|l| l.set(lifecycle));
    registry(|r| r.new_root = Some(new_root));
}

fn lifecycle() -> Lifecycle {
    LIFECYCLE.with(Cell::get)
}

/// [`Lifecycle::RequestHeadersOnly`]: drops every root but `current` that the host no
/// longer has. Only `BadArgument` (what Envoy answers for a context id it does not know)
/// counts as gone; any other answer keeps the root, and is logged. False when the host
/// would not switch back to `current`: what runs next would act for another root.
#[must_use]
fn release_deleted_roots(current: u32) -> bool {
    let others: Vec<u32> = registry(|r| {
        r.roots
            .keys()
            .copied()
            .filter(|id| *id != current)
            .collect()
    })
    .unwrap_or_default();
    if others.is_empty() {
        return true;
    }
    let mut gone = Vec::new();
    let mut unclear = Vec::new();
    for id in others {
        match calls::set_effective_context(id) {
            Ok(()) => {}
            Err(e) if e.status == Status::BAD_ARGUMENT => gone.push(id),
            Err(e) => unclear.push((id, e)),
        }
    }
    let restored = match calls::set_effective_context(current) {
        Ok(()) => true,
        Err(e) => {
            super::logging::critical(&format!("cannot return to context {current}: {e}"));
            false
        }
    };
    // Logged for the current root, once per kept root: a host that refuses the probe
    // refuses it at every tick.
    for (id, e) in unclear {
        let first = registry(|r| {
            let first = !r.unclear_roots.contains(&id);
            if first {
                r.unclear_roots.push(id);
            }
            first
        });
        if first.unwrap_or(false) {
            log::warn!("cannot tell whether root context {id} is still in use ({e}); kept");
        }
    }
    // Dropped outside the registry: a root's drop may call the host.
    let released: Vec<Shared<dyn RootContext>> = registry(|r| {
        r.callouts.retain(|_, caller| !gone.contains(caller));
        r.unclear_roots.retain(|id| !gone.contains(id));
        gone.iter().filter_map(|id| r.roots.remove(id)).collect()
    })
    .unwrap_or_default();
    for id in &gone {
        log::info!("root context {id} is gone from the proxy; its state is released");
    }
    drop(released);
    restored
}

pub(super) fn record_callout(token: u32) {
    registry(|r| {
        let current = r.current;
        r.callouts.insert(token, current)
    });
}

pub(super) fn record_callout_for(token: u32, context: u32) {
    registry(|r| r.callouts.insert(token, context));
}

/// The context whose callback is running.
pub(super) fn current_context() -> u32 {
    registry(|r| r.current).unwrap_or(0)
}

fn enter(context: u32) {
    registry(|r| r.current = context);
}

fn root(context: u32) -> Option<Shared<dyn RootContext>> {
    enter(context);
    registry(|r| r.roots.get(&context).cloned()).flatten()
}

fn stream(context: u32) -> Option<Shared<dyn StreamContext>> {
    enter(context);
    registry(|r| r.streams.get(&context).cloned()).flatten()
}

/// Runs a root callback; `default` when the root is unknown or busy.
fn on_root<R>(context: u32, default: R, f: impl FnOnce(&mut dyn RootContext) -> R) -> R {
    match root(context) {
        Some(root) => match root.try_borrow_mut() {
            Ok(mut root) => f(root.as_mut()),
            Err(_) => default,
        },
        None => default,
    }
}

/// Runs a stream phase. A stream we do not know (its root refused to configure, or the
/// host called out of order) fails closed rather than passing the request on unchecked.
fn on_stream_phase(context: u32, phase: impl FnOnce(&mut dyn StreamContext) -> Action) -> u32 {
    let action = match stream(context) {
        Some(stream) => match stream.try_borrow_mut() {
            Ok(mut stream) => phase(stream.as_mut()),
            Err(_) => respond::fail_closed("dispatcher", "a re-entered stream context"),
        },
        None => respond::fail_closed("dispatcher", "a stream context it never created"),
    };
    action.code()
}

#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The host asks for memory to hand us a buffer; [`calls`] takes it back as a `Vec`.
#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    // Null when memory runs out, which the host answers as a failed call; aborting here
    // would trap the VM.
    let mut buffer: Vec<u8> = Vec::new();
    if buffer.try_reserve_exact(size).is_err() {
        return std::ptr::null_mut();
    }
    buffer.resize(size, 0);
    Box::into_raw(buffer.into_boxed_slice()).cast::<u8>()
}

#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub extern "C" fn proxy_on_context_create(context: u32, root_context: u32) {
    enter(context);
    if root_context == 0 {
        // The factory runs outside the registry borrow: it may call the host.
        let new_root = registry(|r| r.new_root.clone()).flatten();
        match new_root.map(|new_root| new_root(context)) {
            Some(root) => {
                registry(|r| r.roots.insert(context, Rc::new(RefCell::new(root))));
            }
            None => super::logging::critical("no root context factory: filter_main! did not run"),
        }
        // Nothing runs after it in this callback, and the host resets the effective
        // context before the next.
        if lifecycle() == Lifecycle::RequestHeadersOnly {
            let _ = release_deleted_roots(context);
        }
        return;
    }
    if lifecycle() == Lifecycle::RequestHeadersOnly {
        registry(|r| {
            if r.opened.len() >= OPENED_STREAMS {
                r.opened.pop_front();
            }
            r.opened.push_back((context, root_context));
        });
        return;
    }
    let stream = on_root(root_context, None, |root| Some(root.new_stream(context)));
    if let Some(stream) = stream {
        registry(|r| r.streams.insert(context, Rc::new(RefCell::new(stream))));
    }
}

#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub extern "C" fn proxy_on_vm_start(context: u32, vm_configuration_size: usize) -> u32 {
    super::logging::follow_host_level();
    let configuration = if vm_configuration_size == 0 {
        Vec::new()
    } else {
        match calls::buffer(BufferType::VmConfiguration, 0, vm_configuration_size) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(e) => {
                super::logging::critical(&format!("cannot read the VM configuration: {e}"));
                return 0;
            }
        }
    };
    u32::from(on_root(context, false, |root| {
        root.on_vm_start(&configuration)
    }))
}

#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub extern "C" fn proxy_on_configure(context: u32, _plugin_configuration_size: usize) -> u32 {
    super::logging::follow_host_level();
    let configuration = match calls::plugin_configuration() {
        Ok(bytes) => bytes,
        Err(e) => {
            super::logging::critical(&format!("cannot read the plugin configuration: {e}"));
            return 0;
        }
    };
    u32::from(on_root(context, false, |root| {
        root.on_configure(&configuration)
    }))
}

#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub extern "C" fn proxy_on_tick(context: u32) {
    enter(context);
    if lifecycle() == Lifecycle::RequestHeadersOnly && !release_deleted_roots(context) {
        // Its timers and callouts would be another root's: skip this tick, not the next.
        return;
    }
    on_root(context, (), |root| root.on_tick());
}

#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub extern "C" fn proxy_on_queue_ready(context: u32, queue: u32) {
    on_root(context, (), |root| root.on_queue_ready(queue));
}

#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub extern "C" fn proxy_on_request_headers(context: u32, headers: usize, end: u32) -> u32 {
    if lifecycle() == Lifecycle::RequestHeadersOnly {
        return on_opened_stream(context, |s| s.on_request_headers(headers, end != 0));
    }
    on_stream_phase(context, |s| s.on_request_headers(headers, end != 0))
}

/// [`Lifecycle::RequestHeadersOnly`]: makes the stream's context, runs its one phase and
/// drops it. A stream it has no record of fails closed, as [`on_stream_phase`] does.
fn on_opened_stream(context: u32, phase: impl FnOnce(&mut dyn StreamContext) -> Action) -> u32 {
    let opened = registry(|r| {
        let at = r
            .opened
            .iter()
            .rposition(|(stream, _)| *stream == context)?;
        r.opened.remove(at).map(|(_, root)| root)
    })
    .flatten();
    let stream = opened.and_then(|root| on_root(root, None, |root| Some(root.new_stream(context))));
    enter(context);
    let action = match stream {
        Some(mut stream) => phase(stream.as_mut()),
        None => respond::fail_closed("dispatcher", "a stream context it never created"),
    };
    action.code()
}

/// Exported only by a filter that asks for it (see [`crate::filter_main!`]).
pub extern "C" fn proxy_on_request_body(context: u32, body_size: usize, end: u32) -> u32 {
    on_stream_phase(context, |s| s.on_request_body(body_size, end != 0))
}

/// Exported only by a filter that asks for it (see [`crate::filter_main!`]).
pub extern "C" fn proxy_on_request_trailers(context: u32, trailers: usize) -> u32 {
    on_stream_phase(context, |s| s.on_request_trailers(trailers))
}

/// Exported only by a filter that asks for it (see [`crate::filter_main!`]).
pub extern "C" fn proxy_on_response_headers(context: u32, headers: usize, end: u32) -> u32 {
    on_stream_phase(context, |s| s.on_response_headers(headers, end != 0))
}

/// Exported only by a filter that asks for it (see [`crate::filter_main!`]).
pub extern "C" fn proxy_on_response_body(context: u32, body_size: usize, end: u32) -> u32 {
    on_stream_phase(context, |s| s.on_response_body(body_size, end != 0))
}

/// Exported only by a filter that asks for it (see [`crate::filter_main!`]).
pub extern "C" fn proxy_on_response_trailers(context: u32, trailers: usize) -> u32 {
    on_stream_phase(context, |s| s.on_response_trailers(trailers))
}

/// Envoy delivers every callout response to the root context; it goes to whichever context
/// dispatched the call. A token we never recorded is logged and dropped, not trapped on.
#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub extern "C" fn proxy_on_http_call_response(
    root_context: u32,
    token: u32,
    headers: usize,
    body_size: usize,
    trailers: usize,
) {
    enter(root_context);
    let response = CallResponse {
        token,
        headers,
        body_size,
        trailers,
    };
    let Some(caller) = registry(|r| r.callouts.remove(&token)).flatten() else {
        log::warn!("a response arrived for callout {token}, which this VM did not dispatch");
        return;
    };
    if root(caller).is_some() {
        on_root(caller, (), |root| root.on_http_call_response(response));
        return;
    }
    let Some(stream) = stream(caller) else {
        log::debug!("callout {token} answered after its stream ended");
        return;
    };
    if let Err(e) = calls::set_effective_context(caller) {
        super::logging::critical(&format!("callout {token} response dropped: {e}"));
        return;
    }
    match stream.try_borrow_mut() {
        Ok(mut stream) => stream.on_http_call_response(response),
        Err(_) => super::logging::critical("callout response for a re-entered stream dropped"),
    };
}

/// Exported only by a filter that asks for it (see [`crate::filter_main!`]).
pub extern "C" fn proxy_on_done(context: u32) -> u32 {
    if registry(|r| r.roots.contains_key(&context)).unwrap_or(false) {
        return u32::from(on_root(context, true, |root| root.on_done()));
    }
    1
}

/// Exported only by a filter that asks for it (see [`crate::filter_main!`]).
pub extern "C" fn proxy_on_log(context: u32) {
    if let Some(stream) = stream(context)
        && let Ok(mut stream) = stream.try_borrow_mut()
    {
        stream.on_log();
    }
}

/// Exported by every filter but a [`Lifecycle::RequestHeadersOnly`] one (see
/// [`crate::filter_main!`]).
pub extern "C" fn proxy_on_delete(context: u32) {
    // A stream's callouts stay recorded: Envoy still answers them after the stream is gone,
    // and such an answer is dropped quietly (see `proxy_on_http_call_response`).
    registry(|r| {
        r.streams.remove(&context);
        if r.roots.remove(&context).is_some() {
            r.callouts.retain(|_, caller| *caller != context);
        }
    });
}
