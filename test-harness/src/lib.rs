//! Native proxy-wasm host on wasmtime that runs the real compiled filters.
//!
//! The harness is a *stateful fake Envoy*, in the spirit of the Go SDK's `proxytest`: a test
//! loads the filter's real `.wasm` (built by `make wasm`), drives HTTP streams through it
//! phase by phase, and then inspects what the filter did — headers it left for the upstream,
//! its local response, logs, metrics, shared data, pending HTTP callouts — while steering
//! time with a virtual clock. It speaks proxy-wasm ABI 0.2.1 as the Rust SDK 0.2.5 uses it,
//! plus the WASI preview1 calls Envoy provides, with Envoy's statuses and quirks.
//!
//! # A scenario
//!
//! ```no_run
//! use std::time::Duration;
//! use test_harness::{Action, Host, LogLevel};
//!
//! # fn main() -> Result<(), test_harness::HarnessError> {
//! let host = Host::new();
//! // Loads target/wasm32-wasip1/release/banking_headers.wasm and runs on_vm_start/on_configure.
//! let plugin = host.load("banking_headers", r#"{"rules":[]}"#)?;
//!
//! let mut stream = plugin.stream();
//! stream.set_property(&["source", "address"], b"10.0.0.1:52000");
//! let action = stream.request_headers(&[(":method", "POST"), (":path", "/payments")], true);
//! if action == Action::Pause {
//!     let reply = stream.local_response().expect("a paused request was answered locally");
//!     assert_eq!(reply.status, 400);
//!     assert_eq!(reply.header("content-type"), Some(&b"application/problem+json"[..]));
//! } else {
//!     // What goes upstream:
//!     assert!(stream.request_header("x-correlation-id").is_some());
//! }
//! assert!(plugin.logs(LogLevel::Error).is_empty());
//! assert_eq!(host.metric("banking_headers_rejected_total"), Some(1));
//!
//! // Time only moves when the test says so; ticks and callout timeouts fire on the way.
//! host.advance(Duration::from_secs(5));
//! # Ok(())
//! # }
//! ```
//!
//! Client bytes need not be UTF-8: use [`Stream::request_headers_bytes`]
//! (`&[(":path", b"/a".as_slice()), ("x-id", &[0xff, 0xfe])]`).
//!
//! # What the host provides
//!
//! * **Configuration**: plugin and VM configuration ([`LoadOptions`]); a filter that refuses
//!   its configuration (`on_configure` returns false) makes [`Host::load`] fail with
//!   [`HarnessError::ConfigureFailed`] carrying the logs.
//! * **Logs** per level ([`Plugin::logs`], [`Plugin::all_logs`]); WASI stdout and stderr become
//!   info and error lines; the SDK panic hook's message is a critical line.
//! * **Headers, bodies, trailers** of both directions: get, set, add, replace, remove, whole-map
//!   get/set, any bytes as values, names lower-cased like Envoy. A map that does not exist yet
//!   (response headers during the request path) answers BadArgument, as in Envoy — the SDK
//!   panics on that, so a test catches the bug before Envoy does. Bodies are buffered while the
//!   filter pauses; `set_buffer` supports Envoy's three forms (prepend, replace all, append).
//! * **Local responses** ([`Stream::local_response`]): captured with status, headers, body and
//!   gRPC status; the stream stops; and, as in Envoy, the reply then passes through the
//!   filter's own response callbacks before reaching the client.
//! * **Stream control**: [`Stream::resumed`] after `resume_http_request`, [`Stream::was_reset`].
//! * **Properties**: test defaults on the [`Host`], per-stream overrides
//!   ([`Stream::set_property`]), what the filter sets, request/response attributes derived
//!   from headers (`request.path`, `request.method`, `response.code`, ...), and
//!   `plugin_name` / `plugin_root_id` / `plugin_vm_id`.
//! * **Shared data** with Envoy's CAS rules (0 is unconditional; a stale CAS gets CasMismatch;
//!   absent keys are NotFound), scoped by VM id, shared by every VM of the host.
//! * **Shared queues**: register, resolve, enqueue, dequeue; `on_queue_ready` goes to the
//!   registering VM after the current callback returns.
//! * **Virtual clock**: [`Host::now`], [`Host::advance`]; `get_current_time` and WASI clocks
//!   read it; ticks fire at each plugin's period, in time order across VMs.
//! * **HTTP callouts**: recorded ([`Plugin::pending_http_calls`]), answered by the test
//!   ([`Plugin::respond_http_call`]) or failed ([`Plugin::fail_http_call`]); a callout whose
//!   timeout passes on the virtual clock gets the empty failure response Envoy delivers.
//! * **Metrics**: counters, gauges and histograms, one stat per name across the host's VMs
//!   ([`Host::metric`], [`Host::histogram`]).
//! * **Several VMs**: [`Host::load`] twice gives two VMs sharing shared data, queues, metrics
//!   and the clock, like two Envoy worker threads.
//! * **Refusals Envoy would make**: a module importing a function the host lacks fails at load
//!   with [`HarnessError::MissingImport`] naming it; a trap fails the VM
//!   ([`HarnessError::Trap`], then [`HarnessError::VmFailed`]).
//!
//! # Not simulated
//!
//! gRPC callouts and streams (dispatching one returns InternalFailure), TCP (network) filters,
//! foreign functions, and Envoy's per-worker scheduling: the harness is single-threaded, so
//! "concurrent" VMs interleave only where the test interleaves them.

mod abi;
pub mod envoy;
mod error;
mod host;
mod memory;
mod plugin;
mod properties;
mod proxy;
mod state;
mod types;
mod vm;
mod wasi;

pub use error::HarnessError;
pub use host::{Host, LoadOptions, target_dir, wasm_path};
pub use plugin::{Plugin, Stream};
pub use types::{Action, HttpCall, LocalResponse, LogEntry, LogLevel, MetricKind};
