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
//! // Counters by the name the filter defined them with, summed over the host's VMs.
//! assert_eq!(host.metric("banking_headers_rejected_missing_header"), Some(1));
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
//! Every driving method has a `try_` twin returning [`HarnessError`] instead of panicking;
//! use it to assert on a trap (say, a filter panic) rather than fail the test.
//!
//! # Writing a harness test
//!
//! 1. Build the modules: `make wasm` (or `cargo build --release --target wasm32-wasip1 -p
//!    <crate>`). [`Host::load`] finds them under the workspace target directory
//!    (`$CARGO_TARGET_DIR` respected, relative to the repository root) and says "run
//!    `make wasm`" when one is missing.
//! 2. Put the test in `test-harness/host/tests/<filter>.rs`; name it for the behaviour it proves
//!    (`rejects_payment_without_transaction_id`), and read it as a scenario: configure,
//!    drive a stream, inspect.
//! 3. Use two [`Host::load`] calls on one [`Host`] for anything Envoy's workers share
//!    (shared data, queues, metrics), and [`Host::advance`] for anything that waits.
//!
//! The harness's own scenarios run the probe filter (`test-harness/probe-filter`, one hostcall
//! per `x-probe` command): `cargo test -p test-harness --test 'harness_*'`.
//!
//! ## A callout and a timeout
//!
//! ```no_run
//! use std::time::Duration;
//! use test_harness::{Action, Host};
//!
//! # fn main() -> Result<(), test_harness::HarnessError> {
//! let host = Host::new();
//! let plugin = host.load("harness_probe", "")?;
//! let mut stream = plugin.stream();
//! let action = stream.request_headers(&[(":path", "/"), ("x-probe", "http-call fraud 250")], true);
//! assert_eq!(action, Action::Pause);
//!
//! let call = plugin.pending_http_calls().remove(0);
//! assert_eq!(call.upstream, "fraud");
//! plugin.respond_http_call(call.token, 200, &[("x-risk", "low")], b"{}");
//! assert!(stream.resumed());
//!
//! // A second callout nobody answers: 250 ms later Envoy reports it failed.
//! let mut late = plugin.stream();
//! late.request_headers(&[(":path", "/"), ("x-probe", "http-call fraud 250")], true);
//! host.advance(Duration::from_millis(250));
//! assert_eq!(late.request_header("x-probe-call-status"), Some(b"failed".to_vec()));
//! # Ok(())
//! # }
//! ```
//!
//! # What the host provides
//!
//! * **Configuration**: plugin and VM configuration ([`LoadOptions`]); a filter that refuses
//!   its configuration (`on_configure` returns false) makes [`Host::load`] fail with
//!   [`HarnessError::ConfigureFailed`] carrying the logs.
//! * **Logs** per level ([`Plugin::logs`], [`Plugin::all_logs`]); WASI stdout and stderr become
//!   info and error lines; the SDK panic hook's message is a critical line.
//! * **Headers, bodies, trailers** of both directions: get, set, add, replace, remove, whole-map
//!   get/set, any bytes as values, names lower-cased like Envoy; a repeated header reads as
//!   its first value. A map that does not exist yet (response headers during the request
//!   path) answers BadArgument, as in Envoy — the SDK panics on that, so a test catches the
//!   bug before Envoy does. Bodies are buffered while the filter pauses; `set_buffer`
//!   supports Envoy's three forms (prepend, replace all, append) and refuses the rest.
//! * **Local responses** ([`Stream::local_response`]): captured with status, headers, body and
//!   gRPC status; the stream stops; and, as in Envoy, the reply then passes through the
//!   filter's own response callbacks before reaching the client.
//! * **Stream control**: [`Stream::resumed`] after `resume_http_request`, [`Stream::was_reset`],
//!   [`Stream::complete`] for `on_done`/`on_log`/`on_delete`.
//! * **Properties**: test defaults on the [`Host`], per-stream overrides
//!   ([`Stream::set_property`]), what the filter sets, request/response attributes derived
//!   from headers (`request.path`, `request.url_path`, `request.host`, `request.method`,
//!   `request.scheme`, `request.id`, `request.headers.<name>`, `response.code`, ...), and
//!   `plugin_name` / `plugin_root_id` / `plugin_vm_id`. Values are raw bytes; integers are
//!   8 bytes little-endian, as Envoy serialises them.
//! * **Shared data** with Envoy's CAS rules (0 is unconditional; a stale CAS gets CasMismatch;
//!   absent keys are NotFound), scoped by VM id, shared by every VM of the host.
//! * **Shared queues**: register, resolve, enqueue, dequeue; `on_queue_ready` goes to the
//!   registering VM after the current callback returns; [`Host::enqueue`] feeds one from the
//!   test.
//! * **Virtual clock**: [`Host::now`], [`Host::advance`]; `get_current_time` and the WASI
//!   clocks read it; ticks fire at each plugin's period, in time order across VMs.
//! * **HTTP callouts**: recorded ([`Plugin::pending_http_calls`]), answered by the test
//!   ([`Plugin::respond_http_call`]) or failed ([`Plugin::fail_http_call`]); a callout whose
//!   timeout passes on the virtual clock gets the empty failure response Envoy delivers.
//!   Envoy's refusals are kept: no `:method`/`:path`/`:authority`, or an undeclared cluster
//!   once [`Host::add_cluster`] was used, get BadArgument.
//! * **Metrics**: counters, gauges and histograms, one stat per name across the host's VMs
//!   ([`Host::metric`], [`Host::histogram`], [`Host::metrics`]).
//! * **Randomness**: WASI `random_get` from a seeded generator ([`Host::set_random_seed`]),
//!   so generated ids repeat run to run.
//! * **Several VMs**: [`Host::load`] twice gives two VMs sharing shared data, queues, metrics
//!   and the clock, like two Envoy worker threads.
//! * **Refusals Envoy would make**: a module importing a function the host lacks fails at load
//!   with [`HarnessError::MissingImport`] naming it; a trap fails the VM
//!   ([`HarnessError::Trap`], then [`HarnessError::VmFailed`]).
//!
//! Compiled modules are cached in `<target>/harness-cache`, so each test binary pays
//! Cranelift's compile time only once per distinct `.wasm`.
//!
//! * **Host faults** ([`Host::fail_hostcall`], [`Plugin::fail_hostcall`]): any hostcall, by
//!   name, answers a chosen [`HostStatus`] for its next N calls instead of working; every
//!   call is counted ([`Host::hostcall_count`]).
//! * **Races** ([`Plugin::after_hostcall`], [`Plugin::after_nth_hostcall`]): a closure runs
//!   right after a VM's named hostcall returns, before the filter sees the result; drive
//!   another VM from it to land its request between, say, a read and a CAS write.
//! * **Filter chains** ([`Host::chain`], [`Chain`], [`ChainStream`]): several plugins on one
//!   stream with Envoy's semantics (pauses hold the chain, a local reply skips the later
//!   filters and passes back through the earlier ones, filter state flows down the chain,
//!   `on_log` for every filter).
//! * **Lifecycle**: [`Plugin::shutdown`] (`proxy_on_done`, waiting for `proxy_done` when the
//!   filter defers, then `proxy_on_delete`), [`Plugin::restart`] (a fresh VM, the proxy's
//!   shared state kept) and a configuration push that keeps the VM: [`Plugin::push_config`]
//!   starts a new root context beside the old one, each with its own timer and callouts,
//!   and [`Plugin::delete_replaced_roots`] deletes the old one as Envoy does once its
//!   streams have ended ([`Plugin::reconfigure`] does both).
//! * **Foreign functions** ([`Host::register_foreign_function`]): what
//!   `proxy_call_foreign_function` answers by name, with calls counted. Envoy's
//!   `verify_signature` (BoringSSL's RSA PKCS#1 v1.5 and ECDSA over a SubjectPublicKeyInfo)
//!   is there natively unless [`Host::without_verify_signature`] takes it away.
//!
//! # Not simulated
//!
//! gRPC callouts and streams (dispatching one returns InternalFailure) and the gRPC encoding
//! of local replies; TCP (network) filters; request trailers added from the last body
//! callback; buffer limits and flow control (Envoy's 413 when a paused body outgrows its
//! buffer); Envoy's stat name prefixes; attributes beyond those listed above unless the test
//! sets them; and worker threads: the harness is single-threaded, so "concurrent" VMs
//! interleave exactly where the test interleaves them (the after-hooks above).

mod abi;
mod chain;
mod error;
mod faults;
mod host;
mod memory;
mod plugin;
mod properties;
mod proxy;
mod signatures;
mod state;
mod types;
mod vm;
mod wasi;

pub use chain::{Chain, ChainStream};
pub use error::HarnessError;
pub use host::{Host, LoadOptions, target_dir, wasm_path};
pub use plugin::{Plugin, Stream};
pub use types::{Action, HostStatus, HttpCall, LocalResponse, LogEntry, LogLevel, MetricKind};
