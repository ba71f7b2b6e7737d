//! The `Host`: one fake Envoy proxy. It loads plugins (VMs), owns what they share, and drives
//! time: advancing the virtual clock fires ticks and callout timeouts in time order.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::abi::property_key;
use crate::error::HarnessError;
use crate::faults::Fault;
use crate::plugin::Plugin;
use crate::state::{HostState, SharedHost, VmState};
use crate::types::{HostStatus, LogLevel, MetricKind};
use crate::vm::{self, Vm};

pub(crate) struct HostInner {
    pub(crate) state: SharedHost,
    vms: RefCell<Vec<Weak<Vm>>>,
    pumping: Cell<bool>,
}

impl HostInner {
    fn vm(&self, key: usize) -> Option<Rc<Vm>> {
        self.vms.borrow().get(key).and_then(Weak::upgrade)
    }

    fn live_vms(&self) -> Vec<Rc<Vm>> {
        self.vms.borrow().iter().filter_map(Weak::upgrade).collect()
    }

    /// Delivers queued `on_queue_ready` notifications once no callback is running, as Envoy
    /// posts them to the owning worker's event loop.
    pub(crate) fn pump(&self) {
        if self.pumping.replace(true) {
            return;
        }
        loop {
            let next = self.state.borrow_mut().queue_ready.pop_front();
            let Some((key, context, token)) = next else {
                break;
            };
            if let Some(vm) = self.vm(key) {
                if vm.store.try_borrow_mut().is_err() {
                    // That VM is inside a hostcall (an after-hook is running): it hears of
                    // the queue once it returns, as Envoy posts to the worker's event loop.
                    self.state
                        .borrow_mut()
                        .queue_ready
                        .push_front((key, context, token));
                    break;
                }
                // A trap here fails that VM; the test sees it on its next call.
                let _ = vm.call::<(i32, i32), ()>(
                    "proxy_on_queue_ready",
                    context,
                    (context as i32, token as i32),
                );
            }
        }
        self.pumping.set(false);
    }
}

/// Where to find the module and how to configure it; see [`Host::load_with`].
///
/// Build it with [`LoadOptions::new`] and the builder methods, or as a struct literal with
/// `..Default::default()`.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The filter crate, e.g. `"banking_headers"` or `"banking-headers"`: the harness loads
    /// `<target>/wasm32-wasip1/release/<crate_with_underscores>.wasm`.
    pub filter: String,
    /// An explicit `.wasm` path instead of the one derived from `filter`.
    pub wasm_path: Option<PathBuf>,
    /// The module's bytes (binary wasm) instead of a file; wins over `wasm_path`.
    pub wasm_bytes: Option<Vec<u8>>,
    /// The plugin configuration (`pluginConfig`, as the compact JSON Istio passes).
    pub plugin_config: Vec<u8>,
    /// The VM configuration (`vmConfig.configuration`).
    pub vm_config: Vec<u8>,
    /// The VM id. Shared data and queue names are scoped by it, as in Envoy; default `""`.
    pub vm_id: String,
    /// The root id (`plugin_root_id` property); default `""`.
    pub root_id: String,
    /// The plugin name (`plugin_name` property); default: the filter name.
    pub plugin_name: Option<String>,
}

impl LoadOptions {
    /// Options for the built filter crate `filter`.
    pub fn new(filter: &str) -> LoadOptions {
        LoadOptions {
            filter: filter.to_string(),
            ..LoadOptions::default()
        }
    }

    /// Options for a module given as bytes (binary wasm).
    pub fn from_wasm_bytes(bytes: impl Into<Vec<u8>>) -> LoadOptions {
        LoadOptions {
            filter: "inline".to_string(),
            wasm_bytes: Some(bytes.into()),
            ..LoadOptions::default()
        }
    }

    /// Sets the plugin configuration.
    pub fn plugin_config(mut self, config: impl Into<Vec<u8>>) -> LoadOptions {
        self.plugin_config = config.into();
        self
    }

    /// Sets the VM configuration.
    pub fn vm_config(mut self, config: impl Into<Vec<u8>>) -> LoadOptions {
        self.vm_config = config.into();
        self
    }

    /// Sets the VM id.
    pub fn vm_id(mut self, vm_id: &str) -> LoadOptions {
        self.vm_id = vm_id.to_string();
        self
    }

    /// Sets the root id.
    pub fn root_id(mut self, root_id: &str) -> LoadOptions {
        self.root_id = root_id.to_string();
        self
    }

    /// Sets the plugin name.
    pub fn plugin_name(mut self, name: &str) -> LoadOptions {
        self.plugin_name = Some(name.to_string());
        self
    }

    fn module_path(&self) -> PathBuf {
        match &self.wasm_path {
            Some(path) => path.clone(),
            None => wasm_path(&self.filter),
        }
    }
}

// Defined once for the workspace (the Envoy runner finds the modules there too):
// `$CARGO_TARGET_DIR` relative to the repository root, else `<root>/target`.
pub use workspace_dirs::target_dir;
/// Where `cargo build --release --target wasm32-wasip1 -p <filter>` puts the module.
pub use workspace_dirs::wasm_file as wasm_path;

/// One fake Envoy proxy: the virtual clock, shared data, shared queues, metrics and property
/// defaults that all its plugins (VMs) share. Cloning gives another handle to the same proxy.
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Rc<HostInner>,
}

impl Default for Host {
    fn default() -> Self {
        Host::new()
    }
}

impl Host {
    /// A proxy whose clock reads 2024-01-01T00:00:00Z, with nothing loaded.
    pub fn new() -> Host {
        Host {
            inner: Rc::new(HostInner {
                state: Rc::new(RefCell::new(HostState::new())),
                vms: RefCell::new(Vec::new()),
                pumping: Cell::new(false),
            }),
        }
    }

    /// Loads the built filter crate `filter` with `plugin_config`, as Envoy starts a VM:
    /// `_initialize`, root context, `proxy_on_vm_start`, `proxy_on_configure`.
    ///
    /// Errors when the `.wasm` is missing (run `make wasm`), imports a hostcall the harness
    /// lacks (named in the error), or the filter refuses its configuration (the error carries
    /// the logs). Loading the same filter twice gives two VMs sharing this host's state, like
    /// two Envoy worker threads.
    pub fn load(
        &self,
        filter: &str,
        plugin_config: impl AsRef<[u8]>,
    ) -> Result<Plugin, HarnessError> {
        self.load_with(LoadOptions::new(filter).plugin_config(plugin_config.as_ref()))
    }

    /// Loads with full control over module source, VM/plugin configuration and ids.
    pub fn load_with(&self, options: LoadOptions) -> Result<Plugin, HarnessError> {
        let module = match &options.wasm_bytes {
            Some(bytes) => vm::compile_bytes(bytes)?,
            None => vm::load_module(&options.module_path())?,
        };
        let key = {
            let mut state = self.inner.state.borrow_mut();
            let key = state.next_vm;
            state.next_vm += 1;
            key
        };
        let root_context = 1;
        let state = VmState {
            host: self.inner.state.clone(),
            vm: key,
            vm_id: options.vm_id.clone(),
            root_id: options.root_id.clone(),
            plugin_name: options
                .plugin_name
                .clone()
                .unwrap_or_else(|| options.filter.clone()),
            vm_config: options.vm_config.clone(),
            plugin_config: options.plugin_config.clone(),
            root_context,
            other_roots: Vec::new(),
            active_context: root_context,
            effective_context: 0,
            streams: HashMap::new(),
            logs: Vec::new(),
            ticks: Default::default(),
            http_calls: Default::default(),
            call_response: None,
            root_properties: HashMap::new(),
            declared_read_only: Default::default(),
            declared: Default::default(),
            done_requested: false,
            shutdown_asked: false,
            shutdown_deferred: false,
            configuring: false,
            next_context: root_context + 1,
        };
        let vm = Rc::new(Vm::instantiate(self.inner.clone(), &module, state)?);
        {
            let mut vms = self.inner.vms.borrow_mut();
            if vms.len() <= key {
                vms.resize(key + 1, Weak::new());
            }
            vms[key] = Rc::downgrade(&vm);
        }
        // A wasip1 reactor runs its constructors in `_initialize`; the SDK's `main!` hooks it.
        if vm.has_export("_initialize") {
            vm.call::<(), ()>("_initialize", 0, ())?;
        }
        vm.call::<(i32, i32), ()>(
            "proxy_on_context_create",
            root_context,
            (root_context as i32, 0),
        )?;
        let vm_config_len = options.vm_config.len() as i32;
        let started = vm.call::<(i32, i32), i32>(
            "proxy_on_vm_start",
            root_context,
            (root_context as i32, vm_config_len),
        )?;
        if started == Some(0) {
            return Err(HarnessError::VmStartFailed {
                logs: vm.with_state(|s| s.logs.iter().map(|l| l.message.clone()).collect()),
            });
        }
        vm.with_state(|s| s.configuring = true);
        let plugin_config_len = options.plugin_config.len() as i32;
        let configured = vm.call::<(i32, i32), i32>(
            "proxy_on_configure",
            root_context,
            (root_context as i32, plugin_config_len),
        );
        vm.with_state(|s| s.configuring = false);
        if configured? == Some(0) {
            return Err(HarnessError::ConfigureFailed {
                logs: vm.with_state(|s| s.logs.iter().map(|l| l.message.clone()).collect()),
            });
        }
        self.inner
            .state
            .borrow_mut()
            .load_options
            .insert(key, options);
        Ok(Plugin { vm })
    }

    /// The virtual wall clock, as `get_current_time` and WASI's realtime clock read it.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.inner.state.borrow().now_nanos)
    }

    /// Moves the wall clock to `time` without firing ticks or timeouts (the monotonic clock
    /// does not move). Use [`Host::advance`] to let time pass.
    pub fn set_now(&self, time: SystemTime) {
        let nanos = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.inner.state.borrow_mut().now_nanos = nanos;
    }

    /// Lets `by` pass on the virtual clock. Every event that falls due on the way runs in time
    /// order: each plugin's `on_tick` at its period (several times for a long advance), and
    /// HTTP callouts whose timeout expires get their failure response (no headers, no body),
    /// as Envoy delivers a timed-out callout.
    ///
    /// Panics if a filter traps meanwhile; see [`Host::try_advance`].
    pub fn advance(&self, by: Duration) {
        if let Err(e) = self.try_advance(by) {
            panic!("{e}");
        }
    }

    /// [`Host::advance`], returning the first trap instead of panicking. Time still reaches
    /// the target; the trapped VM just takes no more calls.
    pub fn try_advance(&self, by: Duration) -> Result<(), HarnessError> {
        let target = self.inner.state.borrow().now_nanos + by.as_nanos() as u64;
        let mut first_error = None;
        loop {
            let mut next: Option<(u64, usize, u8, u32, Rc<Vm>)> = None;
            for vm in self.inner.live_vms() {
                if vm.failed.borrow().is_some() {
                    continue;
                }
                let candidates = vm.with_state(|s| {
                    let mut due: Vec<(u64, u8, u32)> = s
                        .http_calls
                        .iter()
                        .filter_map(|(token, call)| Some((call.deadline?, 0u8, *token)))
                        .collect();
                    for (root, tick) in &s.ticks {
                        due.push((tick.next_due, 1, *root));
                    }
                    due
                });
                for (at, kind, token) in candidates {
                    let better =
                        next.as_ref()
                            .is_none_or(|(best, key, best_kind, best_token, _)| {
                                (at, vm.key, kind, token) < (*best, *key, *best_kind, *best_token)
                            });
                    if at <= target && better {
                        next = Some((at, vm.key, kind, token, vm.clone()));
                    }
                }
            }
            let Some((at, _, kind, token, vm)) = next else {
                break;
            };
            self.move_clock_to(at);
            let plugin = Plugin { vm };
            let outcome = if kind == 0 {
                plugin.deliver_call_response(token, None)
            } else {
                plugin.vm.with_state(|s| {
                    if let Some(tick) = s.ticks.get_mut(&token) {
                        tick.next_due = at + tick.period_nanos;
                    }
                });
                plugin.try_tick_root(token)
            };
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        self.move_clock_to(target);
        first_error.map_or(Ok(()), Err)
    }

    fn move_clock_to(&self, at: u64) {
        let mut state = self.inner.state.borrow_mut();
        if at > state.now_nanos {
            state.monotonic_nanos += at - state.now_nanos;
            state.now_nanos = at;
        }
    }

    /// Sets a property default every stream and root context of this proxy sees, e.g.
    /// `host.set_property(&["node", "id"], b"sidecar~10.0.0.1")`. Integers are 8 bytes
    /// little-endian (`&443i64.to_le_bytes()`), as Envoy serialises them.
    pub fn set_property(&self, path: &[&str], value: impl AsRef<[u8]>) {
        self.inner
            .state
            .borrow_mut()
            .properties
            .insert(property_key(path), value.as_ref().to_vec());
    }

    /// A shared-data entry (value, CAS) under the default VM id `""`.
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.shared_data_in("", key)
    }

    /// A shared-data entry under a VM id.
    pub fn shared_data_in(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.inner
            .state
            .borrow()
            .shared_data
            .get(&(vm_id.to_string(), key.to_string()))
            .cloned()
    }

    /// Sets a shared-data entry (unconditionally) under the default VM id; returns its new CAS.
    pub fn set_shared_data(&self, key: &str, value: impl AsRef<[u8]>) -> u32 {
        self.set_shared_data_in("", key, value)
    }

    /// Sets a shared-data entry (unconditionally) under a VM id; returns its new CAS.
    pub fn set_shared_data_in(&self, vm_id: &str, key: &str, value: impl AsRef<[u8]>) -> u32 {
        let mut state = self.inner.state.borrow_mut();
        let cas = state.take_cas();
        state.shared_data.insert(
            (vm_id.to_string(), key.to_string()),
            (value.as_ref().to_vec(), cas),
        );
        cas
    }

    /// A counter's or gauge's value by the name the filter defined it with, across all VMs of
    /// this proxy (one stat per name, as in Envoy). `None` if undefined or a histogram.
    pub fn metric(&self, name: &str) -> Option<u64> {
        let state = self.inner.state.borrow();
        let metric = state.metric_by_name(name)?;
        (metric.kind != MetricKind::Histogram).then_some(metric.value)
    }

    /// The values recorded into a histogram, oldest first.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        let state = self.inner.state.borrow();
        let metric = state.metric_by_name(name)?;
        (metric.kind == MetricKind::Histogram).then(|| metric.samples.clone())
    }

    /// Every defined metric: name, kind and value (histograms report their sample count).
    pub fn metrics(&self) -> Vec<(String, MetricKind, u64)> {
        let state = self.inner.state.borrow();
        state
            .metrics
            .iter()
            .map(|m| {
                let value = match m.kind {
                    MetricKind::Histogram => m.samples.len() as u64,
                    _ => m.value,
                };
                (m.name.clone(), m.kind, value)
            })
            .collect()
    }

    /// The items waiting in a shared queue registered by a VM with id `vm_id`.
    pub fn queue_items(&self, vm_id: &str, name: &str) -> Option<Vec<Vec<u8>>> {
        let state = self.inner.state.borrow();
        let token = state
            .queue_tokens
            .get(&(vm_id.to_string(), name.to_string()))?;
        state
            .queues
            .get(token)
            .map(|q| q.items.iter().cloned().collect())
    }

    /// Enqueues from outside (another plugin, say), notifying the registering VM with
    /// `on_queue_ready`. False if no VM registered that queue.
    pub fn enqueue(&self, vm_id: &str, name: &str, item: impl AsRef<[u8]>) -> bool {
        {
            let mut state = self.inner.state.borrow_mut();
            let Some(token) = state
                .queue_tokens
                .get(&(vm_id.to_string(), name.to_string()))
                .copied()
            else {
                return false;
            };
            let Some(queue) = state.queues.get_mut(&token) else {
                return false;
            };
            queue.items.push_back(item.as_ref().to_vec());
            let notify = (queue.owner_vm, queue.owner_context, token);
            state.queue_ready.push_back(notify);
        }
        self.inner.pump();
        true
    }

    /// Seeds the deterministic generator behind WASI `random_get`.
    pub fn set_random_seed(&self, seed: u64) {
        self.inner.state.borrow_mut().rng_state = seed;
    }

    /// The level `proxy_get_log_level` reports (default trace: the filter logs everything).
    pub fn set_log_level(&self, level: LogLevel) {
        self.inner.state.borrow_mut().log_level = level;
    }

    /// Adds an environment variable the modules see through WASI (Envoy's `vmConfig.environment_variables`).
    pub fn set_env(&self, name: &str, value: &str) {
        self.inner
            .state
            .borrow_mut()
            .env
            .push((name.to_string(), value.to_string()));
    }

    /// Declares an upstream cluster. Once any is declared, `dispatch_http_call` to an
    /// undeclared one gets BadArgument, as Envoy answers for an unknown cluster.
    pub fn add_cluster(&self, name: &str) {
        self.inner
            .state
            .borrow_mut()
            .clusters
            .get_or_insert_with(Vec::new)
            .push(name.to_string());
    }

    /// Makes hostcall `call` (e.g. `"proxy_set_shared_data"`, `"proxy_http_call"`,
    /// `"clock_time_get"`) answer `status` without doing its work, for the next `times`
    /// calls from any VM of this host. See [`Plugin::fail_hostcall`] for one VM only.
    pub fn fail_hostcall(&self, call: &str, status: HostStatus, times: u32) {
        self.inner.state.borrow_mut().faults.push(Fault {
            call: call.to_string(),
            status: status.code(),
            remaining: times,
            vm: None,
        });
    }

    /// Disarms every fault not used up yet.
    pub fn clear_faults(&self) {
        self.inner.state.borrow_mut().faults.clear();
    }

    /// How many times any VM of this host called `call` (faulted calls included).
    pub fn hostcall_count(&self, call: &str) -> u64 {
        self.inner
            .state
            .borrow()
            .call_counts
            .get(call)
            .copied()
            .unwrap_or(0)
    }

    /// How many value bytes `proxy_get_shared_data` has copied into the VMs of this host:
    /// what reading shared data costs a filter, as a test can bound it.
    pub fn shared_data_bytes_read(&self) -> u64 {
        self.inner.state.borrow().shared_data_bytes_read
    }

    /// Registers a foreign function the filters can call by name through
    /// `proxy_call_foreign_function` (Envoy registers e.g. `verify_signature`). The function
    /// gets the call's argument bytes and answers the result bytes or a status code.
    pub fn register_foreign_function(
        &self,
        name: &str,
        function: impl Fn(&[u8]) -> Result<Vec<u8>, u32> + 'static,
    ) {
        self.inner
            .state
            .borrow_mut()
            .foreign_functions
            .insert(name.to_string(), Rc::new(function));
    }

    /// A proxy without Envoy's `declare_property` foreign function (an Envoy built without
    /// it, or another proxy): calling it answers NotFound, and every filter-state property
    /// stays writable. With it (the default) a filter's root context can declare a property
    /// read-only: the stream's first write creates it, every later write from any filter is
    /// refused with BadArgument, as in Envoy.
    pub fn without_declare_property(self) -> Host {
        self.inner.state.borrow_mut().declare_property = false;
        self
    }

    /// A proxy without Envoy's `verify_signature` foreign function (another proxy, or an
    /// Envoy built without it): calling it answers NotFound.
    pub fn without_verify_signature(self) -> Host {
        self.inner
            .state
            .borrow_mut()
            .foreign_functions
            .remove(crate::signatures::VERIFY_SIGNATURE);
        self
    }

    /// How many times the filters called foreign function `name` (registered or not).
    pub fn foreign_function_calls(&self, name: &str) -> u64 {
        self.inner
            .state
            .borrow()
            .foreign_calls
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}
