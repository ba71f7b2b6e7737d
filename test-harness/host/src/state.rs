//! The fake proxy's state: what one Envoy shares between its VMs (clock, shared data, queues,
//! metrics, property defaults) and what each VM and stream holds.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;

use crate::abi::HeaderList;
use crate::types::{HttpCall, LocalResponse, LogEntry, LogLevel, MetricKind};

/// 2024-01-01T00:00:00Z: a fixed start so runs are reproducible.
pub(crate) const EPOCH_START_NANOS: u64 = 1_704_067_200_000_000_000;

pub(crate) type SharedHost = Rc<RefCell<HostState>>;

pub(crate) struct Metric {
    pub(crate) name: String,
    pub(crate) kind: MetricKind,
    pub(crate) value: u64,
    pub(crate) samples: Vec<u64>,
}

pub(crate) struct Queue {
    pub(crate) items: VecDeque<Vec<u8>>,
    /// Which VM and context get `proxy_on_queue_ready`: the last one to register the name.
    pub(crate) owner_vm: usize,
    pub(crate) owner_context: u32,
}

/// State shared by every VM of one `Host`, as one Envoy process shares it between workers.
pub(crate) struct HostState {
    pub(crate) now_nanos: u64,
    pub(crate) monotonic_nanos: u64,
    /// Shared data is scoped by VM id, as in Envoy: `(vm_id, key) -> (value, cas)`.
    pub(crate) shared_data: HashMap<(String, String), (Vec<u8>, u32)>,
    pub(crate) next_cas: u32,
    pub(crate) queues: HashMap<u32, Queue>,
    pub(crate) queue_tokens: HashMap<(String, String), u32>,
    pub(crate) next_queue_token: u32,
    pub(crate) metrics: Vec<Metric>,
    pub(crate) metric_ids: HashMap<String, u32>,
    pub(crate) properties: HashMap<Vec<u8>, Vec<u8>>,
    pub(crate) rng_state: u64,
    /// `(vm, context, queue token)` notifications waiting to be delivered.
    pub(crate) queue_ready: VecDeque<(usize, u32, u32)>,
    pub(crate) log_level: LogLevel,
    /// When set, `dispatch_http_call` to any other upstream gets BadArgument, like Envoy
    /// for an unknown cluster.
    pub(crate) clusters: Option<Vec<String>>,
    pub(crate) next_http_token: u32,
    pub(crate) next_vm: usize,
    pub(crate) env: Vec<(String, String)>,
    /// Statuses hostcalls answer instead of working (see `faults`).
    pub(crate) faults: Vec<crate::faults::Fault>,
    pub(crate) after_hooks: Vec<crate::faults::AfterHook>,
    /// Calls per hostcall name, every VM together.
    pub(crate) call_counts: HashMap<String, u64>,
    /// Value bytes `proxy_get_shared_data` copied into any VM.
    pub(crate) shared_data_bytes_read: u64,
    pub(crate) foreign_functions: HashMap<String, ForeignFunction>,
    pub(crate) foreign_calls: HashMap<String, u64>,
    /// Whether Envoy's built-in `declare_property` answers (see `properties::declare`).
    pub(crate) declare_property: bool,
    /// How each VM was loaded, for a restart.
    pub(crate) load_options: HashMap<usize, crate::host::LoadOptions>,
}

/// A foreign function a test registered: arguments in, result or a status code out.
pub(crate) type ForeignFunction = Rc<dyn Fn(&[u8]) -> Result<Vec<u8>, u32>>;

impl HostState {
    pub(crate) fn new() -> HostState {
        HostState {
            now_nanos: EPOCH_START_NANOS,
            monotonic_nanos: 1_000_000_000,
            shared_data: HashMap::new(),
            next_cas: 1,
            queues: HashMap::new(),
            queue_tokens: HashMap::new(),
            next_queue_token: 1,
            metrics: Vec::new(),
            metric_ids: HashMap::new(),
            properties: HashMap::new(),
            rng_state: 0x5eed_0fba_11c0_de00,
            queue_ready: VecDeque::new(),
            log_level: LogLevel::Trace,
            clusters: None,
            next_http_token: 1,
            next_vm: 0,
            env: Vec::new(),
            faults: Vec::new(),
            after_hooks: Vec::new(),
            call_counts: HashMap::new(),
            shared_data_bytes_read: 0,
            // Envoy registers verify_signature in every build with Wasm.
            foreign_functions: HashMap::from([(
                crate::signatures::VERIFY_SIGNATURE.to_string(),
                Rc::new(crate::signatures::verify_signature) as ForeignFunction,
            )]),
            foreign_calls: HashMap::new(),
            declare_property: true,
            load_options: HashMap::new(),
        }
    }

    pub(crate) fn take_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        cas
    }

    /// Shared data set with CAS semantics: 0 is unconditional, a stale CAS is refused.
    pub(crate) fn set_shared(
        &mut self,
        vm_id: &str,
        key: &str,
        value: Vec<u8>,
        cas: u32,
    ) -> Result<(), ()> {
        let slot = (vm_id.to_string(), key.to_string());
        if let Some((_, current)) = self.shared_data.get(&slot)
            && cas != 0
            && cas != *current
        {
            return Err(());
        }
        let next = self.take_cas();
        self.shared_data.insert(slot, (value, next));
        Ok(())
    }

    /// splitmix64: deterministic, seedable, good enough for ids in tests.
    pub(crate) fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn fill_random(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_random().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    pub(crate) fn metric_by_name(&self, name: &str) -> Option<&Metric> {
        let id = self.metric_ids.get(name)?;
        self.metrics.get(metric_index(*id)?)
    }
}

/// Metric ids carry the kind in their low bits, as Envoy's do, and are never 0.
pub(crate) fn metric_id(index: usize, kind: MetricKind) -> u32 {
    let kind_bits = match kind {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
    };
    (((index + 1) as u32) << 2) | kind_bits
}

pub(crate) fn metric_index(id: u32) -> Option<usize> {
    ((id >> 2) as usize).checked_sub(1)
}

/// One HTTP stream (an `HttpContext` in the SDK).
#[derive(Default)]
pub(crate) struct StreamState {
    /// The root context the stream was opened under: its hostcalls act for that root.
    pub(crate) root: u32,
    pub(crate) request_headers: Option<HeaderList>,
    pub(crate) request_body: Option<Vec<u8>>,
    pub(crate) request_trailers: Option<HeaderList>,
    pub(crate) response_headers: Option<HeaderList>,
    pub(crate) response_body: Option<Vec<u8>>,
    pub(crate) response_trailers: Option<HeaderList>,
    /// Whether the last body callback paused, so the next chunk is appended (Envoy buffers).
    pub(crate) request_body_buffering: bool,
    /// The filter stopped on request headers that had a body to come: Envoy makes that a
    /// stop of everything (StopAllIterationAndBuffer) for a Wasm filter, so the body is held
    /// from it until it resumes. `Some(resumes so far)` while held.
    pub(crate) request_stopped_all: Option<usize>,
    pub(crate) response_body_buffering: bool,
    pub(crate) local_response: Option<LocalResponse>,
    pub(crate) local_reply_delivered: bool,
    pub(crate) properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Keys of `properties` a filter set (rather than the test), in the order set.
    pub(crate) filter_state: Vec<Vec<u8>>,
    /// Filter state created from a read-only declaration: a further write is refused.
    pub(crate) read_only: HashSet<Vec<u8>>,
    pub(crate) request_resumed: usize,
    pub(crate) response_resumed: usize,
    pub(crate) request_closed: bool,
    pub(crate) response_closed: bool,
    pub(crate) route_cache_cleared: usize,
    pub(crate) finished: bool,
    /// `proxy_on_log` ran.
    pub(crate) logged: bool,
    /// `proxy_on_log` is running: both header maps readable again.
    pub(crate) logging: bool,
    /// The filter continued past the request (response) headers: Envoy no longer lends them.
    pub(crate) request_headers_released: bool,
    pub(crate) response_headers_released: bool,
}

pub(crate) struct PendingCall {
    pub(crate) call: HttpCall,
    /// The root context whose call it is: Envoy answers it there.
    pub(crate) root: u32,
    pub(crate) deadline: Option<u64>,
}

pub(crate) struct CallResponse {
    pub(crate) headers: HeaderList,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: HeaderList,
}

pub(crate) struct Tick {
    pub(crate) period_nanos: u64,
    pub(crate) next_due: u64,
}

/// Everything one VM's hostcalls see; lives in the wasmtime `Store`.
pub(crate) struct VmState {
    pub(crate) host: SharedHost,
    pub(crate) vm: usize,
    pub(crate) vm_id: String,
    pub(crate) root_id: String,
    pub(crate) plugin_name: String,
    pub(crate) vm_config: Vec<u8>,
    pub(crate) plugin_config: Vec<u8>,
    pub(crate) root_context: u32,
    /// Roots the proxy still has besides `root_context`: those a
    /// [`crate::Plugin::push_config`] replaced, until they are deleted.
    pub(crate) other_roots: Vec<u32>,
    /// The context the host called into.
    pub(crate) active_context: u32,
    /// Set by `proxy_set_effective_context`; 0 means "the active one".
    pub(crate) effective_context: u32,
    pub(crate) streams: HashMap<u32, StreamState>,
    pub(crate) logs: Vec<LogEntry>,
    /// Each root context's tick timer, as Envoy keeps one per root.
    pub(crate) ticks: BTreeMap<u32, Tick>,
    pub(crate) http_calls: BTreeMap<u32, PendingCall>,
    pub(crate) call_response: Option<CallResponse>,
    pub(crate) root_properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Properties the root context declared read-only (`declare_property`), as Envoy keeps
    /// them per root context.
    pub(crate) declared_read_only: HashSet<Vec<u8>>,
    /// Every property the root context declared, read-only or not.
    pub(crate) declared: HashSet<Vec<u8>>,
    pub(crate) done_requested: bool,
    /// `proxy_on_done` was called on the root context.
    pub(crate) shutdown_asked: bool,
    /// `proxy_on_done` answered false: `proxy_done` is now accepted.
    pub(crate) shutdown_deferred: bool,
    /// The plugin configuration buffer exists only while `proxy_on_configure` runs, as in Envoy.
    pub(crate) configuring: bool,
    pub(crate) next_context: u32,
}

impl VmState {
    pub(crate) fn current_context(&self) -> u32 {
        if self.effective_context != 0 && self.has_context(self.effective_context) {
            self.effective_context
        } else {
            self.active_context
        }
    }

    /// Whether the proxy has this context: a root it still holds, or an open stream.
    pub(crate) fn has_context(&self, context: u32) -> bool {
        context == self.root_context
            || self.other_roots.contains(&context)
            || self.streams.contains_key(&context)
    }

    /// The root context a hostcall acts for: the current context if it is a root, else the
    /// root the current stream was opened under.
    pub(crate) fn current_root(&self) -> u32 {
        let context = self.current_context();
        self.streams
            .get(&context)
            .map_or(context, |stream| stream.root)
    }

    pub(crate) fn current_stream(&mut self) -> Option<&mut StreamState> {
        let ctx = self.current_context();
        self.streams.get_mut(&ctx)
    }

    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        self.logs.push(LogEntry { level, message });
    }
}
