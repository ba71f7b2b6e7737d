//! A loaded plugin (one VM with its root context) and the HTTP streams a test drives through it.

use std::rc::Rc;
use std::time::Duration;

use crate::abi::{HeaderList, header_name, property_key};
use crate::error::HarnessError;
use crate::faults::{AfterHook, Fault};
use crate::host::Host;
use crate::proxy::{call_response, is_stream_ended};
use crate::state::{CallResponse, StreamState};
use crate::types::{Action, HostStatus, HttpCall, LocalResponse, LogEntry, LogLevel};
use crate::vm::Vm;

/// One filter-state value as a chain shares it: key, value, created read-only.
pub(crate) type FilterStateEntry = (Vec<u8>, Vec<u8>, bool);

fn headers_from<V: AsRef<[u8]>>(headers: &[(&str, V)]) -> HeaderList {
    headers
        .iter()
        .map(|(name, value)| (header_name(name.as_bytes()), value.as_ref().to_vec()))
        .collect()
}

fn or_panic<T>(result: Result<T, HarnessError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// One VM of a loaded filter, with its root context configured. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Plugin {
    pub(crate) vm: Rc<Vm>,
}

impl Plugin {
    /// The proxy this plugin runs in.
    pub fn host(&self) -> Host {
        Host {
            inner: Rc::clone(&self.vm.host),
        }
    }

    /// Opens a new HTTP stream (`proxy_on_context_create` for an `HttpContext`).
    ///
    /// Panics if the filter traps; see [`Plugin::try_stream`].
    pub fn stream(&self) -> Stream {
        or_panic(self.try_stream())
    }

    /// [`Plugin::stream`] returning the trap as an error.
    pub fn try_stream(&self) -> Result<Stream, HarnessError> {
        if self.vm.is_busy() {
            return Err(HarnessError::Busy {
                function: "proxy_on_context_create".to_string(),
            });
        }
        let (id, root) = self.vm.with_state(|s| {
            let id = s.next_context;
            s.next_context += 1;
            s.streams.insert(
                id,
                StreamState {
                    root: s.root_context,
                    ..StreamState::default()
                },
            );
            (id, s.root_context)
        });
        self.vm
            .call::<(i32, i32), ()>("proxy_on_context_create", id, (id as i32, root as i32))?;
        Ok(Stream {
            vm: self.vm.clone(),
            id,
        })
    }

    /// Messages logged at exactly `level`, oldest first.
    pub fn logs(&self, level: LogLevel) -> Vec<String> {
        self.vm.with_state(|s| {
            s.logs
                .iter()
                .filter(|l| l.level == level)
                .map(|l| l.message.clone())
                .collect()
        })
    }

    /// Every log line with its level, oldest first (WASI stdout is info, stderr is error).
    pub fn all_logs(&self) -> Vec<LogEntry> {
        self.vm.with_state(|s| s.logs.clone())
    }

    /// Forgets the logs captured so far.
    pub fn clear_logs(&self) {
        self.vm.with_state(|s| s.logs.clear());
    }

    /// Why the VM failed (a trap), if it did. A failed VM takes no more calls, as in Envoy.
    pub fn failure(&self) -> Option<String> {
        self.vm.failed.borrow().clone()
    }

    /// The tick period the filter's root context set, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        self.vm.with_state(|s| {
            s.ticks
                .get(&s.root_context)
                .map(|t| Duration::from_nanos(t.period_nanos))
        })
    }

    /// Calls `on_tick` now, without moving the clock. [`Host::advance`] is the usual way.
    ///
    /// Panics if the filter traps; see [`Plugin::try_tick`].
    pub fn tick(&self) {
        or_panic(self.try_tick())
    }

    /// [`Plugin::tick`] returning the trap as an error.
    pub fn try_tick(&self) -> Result<(), HarnessError> {
        let root = self.vm.with_state(|s| s.root_context);
        self.try_tick_root(root)
    }

    pub(crate) fn try_tick_root(&self, root: u32) -> Result<(), HarnessError> {
        self.vm
            .call::<i32, ()>("proxy_on_tick", root, root as i32)
            .map(|_| ())
    }

    /// [`Host::fail_hostcall`] for this VM's calls only.
    pub fn fail_hostcall(&self, call: &str, status: HostStatus, times: u32) {
        let vm = self.vm.key;
        self.vm.host.state.borrow_mut().faults.push(Fault {
            call: call.to_string(),
            status: status.code(),
            remaining: times,
            vm: Some(vm),
        });
    }

    /// Runs `hook` once, right after this VM's next `call` hostcall returns its result and
    /// before the filter's code sees it: the interleaving hook for races. Drive another
    /// VM's request from the hook (`after_hostcall("proxy_get_shared_data", ...)` lets VM B
    /// write between VM A's read and its CAS write), then A resumes with what it read.
    /// The hook must not drive this same VM (its calls fail with [`HarnessError::Busy`]).
    pub fn after_hostcall(&self, call: &str, hook: impl FnOnce() + 'static) {
        self.after_nth_hostcall(call, 1, hook);
    }

    /// [`Plugin::after_hostcall`] after the `n`-th call from now (1 = the next), for a race
    /// window later in a callback: a tick that reads a record, then a marker, then the
    /// marker again before its CAS write, is interrupted there with `n = 3`.
    pub fn after_nth_hostcall(&self, call: &str, n: u32, hook: impl FnOnce() + 'static) {
        let vm = self.vm.key;
        self.vm.host.state.borrow_mut().after_hooks.push(AfterHook {
            call: call.to_string(),
            vm,
            skip: n.saturating_sub(1),
            hook: Box::new(hook),
        });
    }

    /// Shuts the VM down as Envoy does when the plugin goes away: `proxy_on_done` on the
    /// root context, then `proxy_on_delete`. A filter that defers (answers false from
    /// `on_done`) keeps running, ticks and callouts included, until it calls `proxy_done`;
    /// then this returns true on a later call. Once shut down the VM takes no more calls
    /// ([`HarnessError::VmFailed`] says "shut down").
    pub fn shutdown(&self) -> Result<bool, HarnessError> {
        let root = self.vm.with_state(|s| s.root_context);
        let (asked, done) = self.vm.with_state(|s| (s.shutdown_asked, s.done_requested));
        if !asked {
            // Envoy shuts every root of the VM down; one a push replaced goes first.
            self.delete_replaced_roots()?;
            self.vm.with_state(|s| s.shutdown_asked = true);
            let finished = self
                .vm
                .call::<i32, i32>("proxy_on_done", root, root as i32)?;
            if finished == Some(0) {
                // Only now does Envoy accept `proxy_done` (its pending-done list).
                self.vm.with_state(|s| s.shutdown_deferred = true);
                return Ok(false);
            }
        } else if !done {
            return Ok(false);
        }
        self.vm
            .call::<i32, ()>("proxy_on_delete", root, root as i32)?;
        *self.vm.failed.borrow_mut() = Some("shut down".to_string());
        Ok(true)
    }

    /// Replaces this VM with a fresh one of the same module and configuration, as Envoy
    /// reloads a plugin: the old VM is shut down (if it still runs) and gone; what the
    /// proxy shares (shared data, queues, metrics, clock) survives.
    pub fn restart(&self) -> Result<Plugin, HarnessError> {
        if self.failure().is_none() {
            // A filter that defers its shutdown is not waited for: a restart does not.
            let _ = self.shutdown();
            *self.vm.failed.borrow_mut() = Some("restarted".to_string());
        }
        let options = self
            .vm
            .host
            .state
            .borrow()
            .load_options
            .get(&self.vm.key)
            .cloned()
            .unwrap_or_default();
        self.host().load_with(options)
    }

    /// A configuration push that keeps this VM, as Envoy applies a changed `pluginConfig`
    /// when the module and `vmConfig` are unchanged: [`Plugin::push_config`], then
    /// [`Plugin::delete_replaced_roots`] at once.
    pub fn reconfigure(&self, plugin_config: impl AsRef<[u8]>) -> Result<(), HarnessError> {
        self.push_config(plugin_config)?;
        self.delete_replaced_roots()
    }

    /// The first half of a configuration push: a new root context starts in this VM
    /// (`proxy_on_context_create`, `proxy_on_vm_start`, then `proxy_on_configure` with
    /// `plugin_config`, which should differ from the current one: Envoy keeps the root of an
    /// identical configuration). From then on new streams belong to the new root. The old
    /// root lives on, ticking and answering its callouts, until
    /// [`Plugin::delete_replaced_roots`], as in Envoy until the streams of the old
    /// configuration have ended. Its declared properties are set aside.
    ///
    /// A configuration the new root refuses leaves the old root in place, as Envoy keeps
    /// the previous configuration ([`HarnessError::ConfigureFailed`]).
    pub fn push_config(&self, plugin_config: impl AsRef<[u8]>) -> Result<(), HarnessError> {
        let plugin_config = plugin_config.as_ref().to_vec();
        let config_len = plugin_config.len() as i32;
        let (old, new, vm_config_len, saved) = self.vm.with_state(|s| {
            let new = s.next_context;
            s.next_context += 1;
            let old = std::mem::replace(&mut s.root_context, new);
            s.other_roots.push(old);
            let saved = (
                std::mem::replace(&mut s.plugin_config, plugin_config),
                std::mem::take(&mut s.root_properties),
                std::mem::take(&mut s.declared_read_only),
                std::mem::take(&mut s.declared),
            );
            (old, new, s.vm_config.len() as i32, saved)
        });
        let started = self
            .vm
            .call::<(i32, i32), ()>("proxy_on_context_create", new, (new as i32, 0))
            .and_then(|_| {
                self.vm.call::<(i32, i32), i32>(
                    "proxy_on_vm_start",
                    new,
                    (new as i32, vm_config_len),
                )
            })
            .and_then(|started| {
                if started == Some(0) {
                    return Ok(Some(0));
                }
                self.vm.with_state(|s| s.configuring = true);
                let configured = self.vm.call::<(i32, i32), i32>(
                    "proxy_on_configure",
                    new,
                    (new as i32, config_len),
                );
                self.vm.with_state(|s| s.configuring = false);
                configured
            })?;
        if started == Some(0) {
            let logs = self.vm.with_state(|s| {
                s.root_context = old;
                s.other_roots.retain(|root| *root != old);
                s.ticks.remove(&new);
                s.http_calls.retain(|_, call| call.root != new);
                let (config, properties, read_only, declared) = saved;
                s.plugin_config = config;
                s.root_properties = properties;
                s.declared_read_only = read_only;
                s.declared = declared;
                s.logs.iter().map(|l| l.message.clone()).collect()
            });
            return Err(HarnessError::ConfigureFailed { logs });
        }
        Ok(())
    }

    /// The second half of a configuration push: each root a [`Plugin::push_config`]
    /// replaced is shut down (`proxy_on_done` and `proxy_on_delete`, each only if the module
    /// exports it) and is gone, as Envoy deletes it: `proxy_set_effective_context` refuses
    /// its id, its timer stops and its pending callouts are cancelled. Envoy does so once
    /// the old root's streams have ended, and keeps a root that defers its shutdown until
    /// it calls `proxy_done`; the harness waits for neither: a test that needs them drives
    /// those streams to their end first.
    pub fn delete_replaced_roots(&self) -> Result<(), HarnessError> {
        let replaced = self.vm.with_state(|s| s.other_roots.clone());
        for old in replaced {
            self.vm.call::<i32, i32>("proxy_on_done", old, old as i32)?;
            self.vm
                .call::<i32, ()>("proxy_on_delete", old, old as i32)?;
            self.vm.with_state(|s| {
                s.other_roots.retain(|root| *root != old);
                s.ticks.remove(&old);
                s.http_calls.retain(|_, call| call.root != old);
            });
        }
        Ok(())
    }

    /// Whether the module exports `name` (Envoy calls an optional callback only then).
    pub fn exports(&self, name: &str) -> bool {
        self.vm.has_export(name)
    }

    /// The size of the VM's linear memory, in bytes: it grows, never shrinks, so a test
    /// that repeats a workload sees whether memory is reused or leaks.
    pub fn memory_bytes(&self) -> usize {
        self.vm.memory_bytes()
    }

    /// HTTP callouts the filter dispatched that are still waiting, oldest first.
    pub fn pending_http_calls(&self) -> Vec<HttpCall> {
        self.vm
            .with_state(|s| s.http_calls.values().map(|p| p.call.clone()).collect())
    }

    /// Answers a pending callout: the filter's `on_http_call_response` runs with these
    /// response headers (`:status` first) and body available through the call-response
    /// accessors.
    ///
    /// Panics on an unknown token or a trap; see [`Plugin::try_respond_http_call`].
    pub fn respond_http_call(
        &self,
        token: u32,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        or_panic(self.try_respond_http_call(token, status, headers, body))
    }

    /// [`Plugin::respond_http_call`] with raw byte header values.
    pub fn respond_http_call_bytes(
        &self,
        token: u32,
        status: u32,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) {
        or_panic(self.try_respond_http_call(token, status, headers, body))
    }

    /// [`Plugin::respond_http_call`] returning errors; header values may be `&str` or `&[u8]`.
    pub fn try_respond_http_call<V: AsRef<[u8]>>(
        &self,
        token: u32,
        status: u32,
        headers: &[(&str, V)],
        body: &[u8],
    ) -> Result<(), HarnessError> {
        let response = call_response(status, headers_from(headers), body.to_vec());
        self.deliver_call_response(token, Some(response))
    }

    /// Fails a pending callout (connection failure, reset): the filter gets a response with
    /// no headers and no body, as Envoy reports any callout failure.
    pub fn fail_http_call(&self, token: u32) {
        or_panic(self.deliver_call_response(token, None))
    }

    pub(crate) fn deliver_call_response(
        &self,
        token: u32,
        response: Option<CallResponse>,
    ) -> Result<(), HarnessError> {
        let response = response.unwrap_or(CallResponse {
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
        });
        let counts = (
            response.headers.len() as i32,
            response.body.len() as i32,
            response.trailers.len() as i32,
        );
        let root = self.vm.with_state(|s| {
            s.http_calls.remove(&token).map(|call| {
                s.call_response = Some(response);
                call.root
            })
        });
        let Some(root) = root else {
            return Err(HarnessError::UnknownHttpCall { token });
        };
        // Envoy attributes callouts to the root context; the module's dispatcher routes the
        // response to the context that dispatched it and switches the effective context.
        let result = self.vm.call::<(i32, i32, i32, i32, i32), ()>(
            "proxy_on_http_call_response",
            root,
            (root as i32, token as i32, counts.0, counts.1, counts.2),
        );
        self.vm.with_state(|s| s.call_response = None);
        result.map(|_| ())
    }

    /// A shared-data entry (value, CAS) in this plugin's VM id namespace.
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let vm_id = self.vm.with_state(|s| s.vm_id.clone());
        self.host().shared_data_in(&vm_id, key)
    }

    /// A property the filter set from its root context.
    pub fn root_property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.vm
            .with_state(|s| s.root_properties.get(&property_key(path)).cloned())
    }
}

/// One HTTP request/response through the filter (an `HttpContext`). Drive it phase by phase;
/// inspect what the filter left in headers and bodies, its local response, and whether it
/// resumed the stream.
///
/// Once the filter sent a local response or reset the stream, Envoy stops delivering that
/// stream's callbacks; so does the harness (the phase methods return [`Action::Pause`]
/// without calling the filter).
pub struct Stream {
    vm: Rc<Vm>,
    id: u32,
}

impl Stream {
    /// The context id of this stream.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn ended(&self) -> bool {
        self.vm
            .with_stream(self.id, |s| is_stream_ended(s))
            .unwrap_or(true)
    }

    fn phase(
        &mut self,
        export: &str,
        args: (i32, i32, i32),
        setup: impl FnOnce(&mut StreamState),
    ) -> Result<Action, HarnessError> {
        if self.ended() {
            return Ok(Action::Pause);
        }
        self.vm.with_stream(self.id, setup);
        let action = self.vm.call_action(export, self.id, args)?;
        // Envoy stops iteration after a local reply whatever the filter returned.
        let replied = self
            .vm
            .with_stream(self.id, |s| s.local_response.is_some())
            .unwrap_or(false);
        // Envoy lets go of a header map once the filter continues past it: later hostcalls
        // on it answer BadArgument until `on_log`.
        if action == Action::Continue && !replied {
            self.vm.with_stream(self.id, |s| match export {
                "proxy_on_request_headers" => s.request_headers_released = true,
                "proxy_on_response_headers" => s.response_headers_released = true,
                _ => {}
            });
        }
        Ok(if replied { Action::Pause } else { action })
    }

    fn phase2(
        &mut self,
        export: &str,
        count: i32,
        setup: impl FnOnce(&mut StreamState),
    ) -> Result<Action, HarnessError> {
        if self.ended() {
            return Ok(Action::Pause);
        }
        self.vm.with_stream(self.id, setup);
        let action = self
            .vm
            .call_action(export, self.id, (self.id as i32, count))?;
        let replied = self
            .vm
            .with_stream(self.id, |s| s.local_response.is_some())
            .unwrap_or(false);
        Ok(if replied { Action::Pause } else { action })
    }

    pub(crate) fn request_resume_count(&self) -> usize {
        self.vm
            .with_stream(self.id, |s| s.request_resumed)
            .unwrap_or(0)
    }

    /// Properties the filter set on this stream (filter state), for a chain to share, each
    /// with whether it was created read-only.
    pub(crate) fn filter_state_set(&self) -> Vec<FilterStateEntry> {
        self.vm
            .with_stream(self.id, |s| {
                s.filter_state
                    .iter()
                    .filter_map(|k| {
                        let value = s.properties.get(k)?.clone();
                        Some((k.clone(), value, s.read_only.contains(k)))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Lends a chain's filter state to this stream: readable as properties (read-only ones
    /// refusing a write, as Envoy's), not counted as set by this filter (so it is not handed
    /// back, stale, after the call).
    pub(crate) fn merge_filter_state(&mut self, entries: Vec<FilterStateEntry>) {
        self.vm.with_stream(self.id, |s| {
            s.filter_state.clear();
            for (key, value, read_only) in entries {
                if read_only {
                    s.read_only.insert(key.clone());
                }
                s.properties.insert(key, value);
            }
        });
    }

    /// Sets a property for this stream only, overriding the host default, e.g.
    /// `s.set_property(&["source", "address"], b"10.0.0.1:1234")`.
    pub fn set_property(&mut self, path: &[&str], value: impl AsRef<[u8]>) {
        self.vm.with_stream(self.id, |s| {
            s.properties
                .insert(property_key(path), value.as_ref().to_vec())
        });
    }

    /// A property as the filter sees it on this stream (override or value the filter set).
    pub fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.vm
            .with_stream(self.id, |s| s.properties.get(&property_key(path)).cloned())
            .flatten()
    }

    /// Delivers the request headers (names are lower-cased, as Envoy's codecs do; include
    /// pseudo-headers like `:method`, `:path`, `:authority`). Panics if the filter traps.
    pub fn request_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        or_panic(self.try_request_headers(headers, end_of_stream))
    }

    /// [`Stream::request_headers`] for raw byte values (e.g. non-UTF-8 client bytes).
    pub fn request_headers_bytes(
        &mut self,
        headers: &[(&str, &[u8])],
        end_of_stream: bool,
    ) -> Action {
        or_panic(self.try_request_headers(headers, end_of_stream))
    }

    /// [`Stream::request_headers`] returning a trap as an error; values may be `&str` or `&[u8]`.
    pub fn try_request_headers<V: AsRef<[u8]>>(
        &mut self,
        headers: &[(&str, V)],
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        let headers = headers_from(headers);
        let args = (
            self.id as i32,
            headers.len() as i32,
            i32::from(end_of_stream),
        );
        let action = self.phase("proxy_on_request_headers", args, |s| {
            s.request_headers = Some(headers)
        })?;
        // Envoy turns a Wasm filter's StopIteration on request headers into
        // StopAllIterationAndBuffer (unless the plugin sets `allow_on_headers_stop_iteration`,
        // which Istio's WasmPlugin cannot): the body is buffered and not shown to the filter
        // until it resumes the request.
        if action == Action::Pause && !end_of_stream {
            self.vm.with_stream(self.id, |s| {
                if s.local_response.is_none() {
                    s.request_stopped_all = Some(s.request_resumed);
                }
            });
        }
        Ok(action)
    }

    /// Delivers a request body chunk. While the filter pauses, Envoy buffers: the next chunk
    /// is appended and the filter sees the whole buffered body. After the filter stopped on
    /// the request headers (see [`Stream::request_headers`]) chunks are buffered without
    /// calling it, and answered `Pause`, until it resumes the request; the first chunk after
    /// that brings it the whole buffered body. Panics if the filter traps.
    pub fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Action {
        or_panic(self.try_request_body(chunk, end_of_stream))
    }

    /// [`Stream::request_body`] returning a trap as an error.
    pub fn try_request_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        if self.ended() {
            return Ok(Action::Pause);
        }
        let (size, held) = self
            .vm
            .with_stream(self.id, |s| {
                let held = match s.request_stopped_all {
                    Some(resumes) if s.request_resumed == resumes => true,
                    Some(_) => {
                        s.request_stopped_all = None;
                        false
                    }
                    None => false,
                };
                let buffering = s.request_body_buffering || held;
                let body = s.request_body.get_or_insert_with(Vec::new);
                if !buffering {
                    body.clear();
                }
                body.extend_from_slice(chunk);
                if held {
                    // Whatever was held goes to the filter with the next chunk after it resumes.
                    s.request_body_buffering = true;
                }
                (body.len(), held)
            })
            .unwrap_or((0, false));
        if held {
            return Ok(Action::Pause);
        }
        let args = (self.id as i32, size as i32, i32::from(end_of_stream));
        let action = self.phase("proxy_on_request_body", args, |_| {})?;
        self.vm.with_stream(self.id, |s| {
            s.request_body_buffering = action == Action::Pause
        });
        Ok(action)
    }

    /// Delivers the request trailers. Panics if the filter traps.
    pub fn request_trailers(&mut self, trailers: &[(&str, &str)]) -> Action {
        or_panic(self.try_request_trailers(trailers))
    }

    /// [`Stream::request_trailers`] for raw byte values.
    pub fn request_trailers_bytes(&mut self, trailers: &[(&str, &[u8])]) -> Action {
        or_panic(self.try_request_trailers(trailers))
    }

    /// [`Stream::request_trailers`] returning a trap as an error; values may be `&str` or `&[u8]`.
    pub fn try_request_trailers<V: AsRef<[u8]>>(
        &mut self,
        trailers: &[(&str, V)],
    ) -> Result<Action, HarnessError> {
        let trailers = headers_from(trailers);
        let count = trailers.len() as i32;
        self.phase2("proxy_on_request_trailers", count, |s| {
            s.request_trailers = Some(trailers)
        })
    }

    /// Delivers the upstream's response headers (include `:status`). Panics if the filter traps.
    pub fn response_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        or_panic(self.try_response_headers(headers, end_of_stream))
    }

    /// [`Stream::response_headers`] for raw byte values.
    pub fn response_headers_bytes(
        &mut self,
        headers: &[(&str, &[u8])],
        end_of_stream: bool,
    ) -> Action {
        or_panic(self.try_response_headers(headers, end_of_stream))
    }

    /// [`Stream::response_headers`] returning a trap as an error; values may be `&str` or `&[u8]`.
    pub fn try_response_headers<V: AsRef<[u8]>>(
        &mut self,
        headers: &[(&str, V)],
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        let headers = headers_from(headers);
        let args = (
            self.id as i32,
            headers.len() as i32,
            i32::from(end_of_stream),
        );
        self.phase("proxy_on_response_headers", args, |s| {
            s.response_headers = Some(headers)
        })
    }

    /// Delivers a response body chunk (buffered while the filter pauses, like the request
    /// body). Panics if the filter traps.
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Action {
        or_panic(self.try_response_body(chunk, end_of_stream))
    }

    /// [`Stream::response_body`] returning a trap as an error.
    pub fn try_response_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        if self.ended() {
            return Ok(Action::Pause);
        }
        let size = self.vm.with_stream(self.id, |s| {
            let body = s.response_body.get_or_insert_with(Vec::new);
            if !s.response_body_buffering {
                body.clear();
            }
            body.extend_from_slice(chunk);
            body.len()
        });
        let args = (
            self.id as i32,
            size.unwrap_or(0) as i32,
            i32::from(end_of_stream),
        );
        let action = self.phase("proxy_on_response_body", args, |_| {})?;
        self.vm.with_stream(self.id, |s| {
            s.response_body_buffering = action == Action::Pause
        });
        Ok(action)
    }

    /// Delivers the response trailers. Panics if the filter traps.
    pub fn response_trailers(&mut self, trailers: &[(&str, &str)]) -> Action {
        or_panic(self.try_response_trailers(trailers))
    }

    /// [`Stream::response_trailers`] for raw byte values.
    pub fn response_trailers_bytes(&mut self, trailers: &[(&str, &[u8])]) -> Action {
        or_panic(self.try_response_trailers(trailers))
    }

    /// [`Stream::response_trailers`] returning a trap as an error; values may be `&str` or `&[u8]`.
    pub fn try_response_trailers<V: AsRef<[u8]>>(
        &mut self,
        trailers: &[(&str, V)],
    ) -> Result<Action, HarnessError> {
        let trailers = headers_from(trailers);
        let count = trailers.len() as i32;
        self.phase2("proxy_on_response_trailers", count, |s| {
            s.response_trailers = Some(trailers)
        })
    }

    /// Ends the stream as Envoy does: `proxy_on_log` (Envoy logs every filter once the stream
    /// completes, request and response headers readable again), then `proxy_on_done` and
    /// `proxy_on_delete` as it destroys the filter. Panics if the filter traps.
    pub fn complete(&mut self) {
        or_panic(self.try_complete())
    }

    /// [`Stream::complete`] returning a trap as an error.
    pub fn try_complete(&mut self) -> Result<(), HarnessError> {
        self.try_log()?;
        self.try_destroy()
    }

    /// Makes `reply` the response this stream's `on_log` sees, unless it saw one pass, and
    /// `request` its request headers, unless it saw them.
    pub(crate) fn see_final_response(
        &mut self,
        reply: &LocalResponse,
        request: &[(String, Vec<u8>)],
    ) {
        self.vm.with_stream(self.id, |s| {
            if s.request_headers.is_none() && !request.is_empty() {
                s.request_headers = Some(request.to_vec());
            }
            if s.response_headers.is_none() {
                let mut headers =
                    vec![(":status".to_string(), reply.status.to_string().into_bytes())];
                headers.extend(reply.headers.iter().cloned());
                s.response_headers = Some(headers);
            }
            let details = property_key(&["response", "code_details"]);
            if !reply.details.is_empty() && !s.properties.contains_key(&details) {
                s.properties
                    .insert(details, reply.details.clone().into_bytes());
            }
        });
    }

    /// `proxy_on_log` once, with the stream's headers readable (what Envoy's access-log pass
    /// over every filter does). A chain logs every filter before it destroys any.
    pub(crate) fn try_log(&mut self) -> Result<(), HarnessError> {
        let first = self
            .vm
            .with_stream(self.id, |s| !std::mem::replace(&mut s.logged, true))
            .unwrap_or(false);
        if !first {
            return Ok(());
        }
        self.vm.with_stream(self.id, |s| s.logging = true);
        let result = self
            .vm
            .call::<i32, ()>("proxy_on_log", self.id, self.id as i32);
        self.vm.with_stream(self.id, |s| s.logging = false);
        result.map(|_| ())
    }

    /// `proxy_on_done` then `proxy_on_delete`, once.
    pub(crate) fn try_destroy(&mut self) -> Result<(), HarnessError> {
        let already = self
            .vm
            .with_stream(self.id, |s| std::mem::replace(&mut s.finished, true))
            .unwrap_or(true);
        if already {
            return Ok(());
        }
        let id = self.id as i32;
        self.vm.call::<i32, i32>("proxy_on_done", self.id, id)?;
        self.vm.call::<i32, ()>("proxy_on_delete", self.id, id)?;
        Ok(())
    }

    /// The local response the filter sent, as the client receives it: after Envoy ran it
    /// through this filter's response callbacks, with Envoy's defaults (`content-length`,
    /// `content-type: text/plain` for a body) unless the filter set its own.
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.vm
            .with_stream(self.id, |s| s.local_response.clone())
            .flatten()
    }

    /// A request header as the filter left it (what goes upstream): the first value.
    pub fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        find(&self.request_headers_now(), name)
    }

    /// All request headers as the filter left them, in order.
    pub fn request_headers_now(&self) -> Vec<(String, Vec<u8>)> {
        self.vm
            .with_stream(self.id, |s| s.request_headers.clone())
            .flatten()
            .unwrap_or_default()
    }

    /// Request trailers as the filter left them.
    pub fn request_trailers_now(&self) -> Vec<(String, Vec<u8>)> {
        self.vm
            .with_stream(self.id, |s| s.request_trailers.clone())
            .flatten()
            .unwrap_or_default()
    }

    /// The buffered request body as the filter left it.
    pub fn request_body_now(&self) -> Vec<u8> {
        self.vm
            .with_stream(self.id, |s| s.request_body.clone())
            .flatten()
            .unwrap_or_default()
    }

    /// A response header as the filter left it (what goes to the client): the first value.
    pub fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        find(&self.response_headers_now(), name)
    }

    /// All response headers as the filter left them, in order.
    pub fn response_headers_now(&self) -> Vec<(String, Vec<u8>)> {
        self.vm
            .with_stream(self.id, |s| s.response_headers.clone())
            .flatten()
            .unwrap_or_default()
    }

    /// Response trailers as the filter left them.
    pub fn response_trailers_now(&self) -> Vec<(String, Vec<u8>)> {
        self.vm
            .with_stream(self.id, |s| s.response_trailers.clone())
            .flatten()
            .unwrap_or_default()
    }

    /// The buffered response body as the filter left it.
    pub fn response_body_now(&self) -> Vec<u8> {
        self.vm
            .with_stream(self.id, |s| s.response_body.clone())
            .flatten()
            .unwrap_or_default()
    }

    /// Whether the filter resumed the request (`resume_http_request`, i.e. `proxy_continue_stream`).
    pub fn resumed(&self) -> bool {
        self.vm
            .with_stream(self.id, |s| s.request_resumed > 0)
            .unwrap_or(false)
    }

    /// Whether the filter resumed the response.
    pub fn response_resumed(&self) -> bool {
        self.vm
            .with_stream(self.id, |s| s.response_resumed > 0)
            .unwrap_or(false)
    }

    /// Whether the filter reset the stream (`reset_http_request` / `reset_http_response`).
    pub fn was_reset(&self) -> bool {
        self.vm
            .with_stream(self.id, |s| s.request_closed || s.response_closed)
            .unwrap_or(false)
    }

    /// How many times the filter cleared the route cache.
    pub fn route_cache_clears(&self) -> usize {
        self.vm
            .with_stream(self.id, |s| s.route_cache_cleared)
            .unwrap_or(0)
    }
}

fn find(headers: &[(String, Vec<u8>)], name: &str) -> Option<Vec<u8>> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.clone())
}
