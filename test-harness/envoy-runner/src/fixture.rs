//! The end-to-end tests' fixture: the shipped WasmPlugins in a real Envoy in front of the demo
//! upstream, bounded by a request budget, and checks on what the filters generate. The
//! emulated host's tests use the same WasmPlugins and test data, so both kinds of test
//! exercise the filters alike.
//!
//! These helpers fail the calling test (they panic) with a message saying what to do, rather
//! than return errors: they are for tests only.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use demo_services::{DemoUpstream, SeenRequest};
use serde_json::Value;

use crate::client::{self, HttpResponse, Request};
use crate::{BootstrapOptions, EnvoyBinary, RunningEnvoy, StartOptions, WasmPlugin};

/// The longest an Envoy test may run, every request and every wait included.
pub const TEST_BUDGET: Duration = Duration::from_secs(90);
/// The longest one request through Envoy may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Envoy as `make run` finds it; a test without it fails and says how to get it.
pub fn envoy_binary() -> EnvoyBinary {
    crate::find_envoy(&crate::repo_root())
        .unwrap_or_else(|e| panic!("{e}\nThe Envoy end-to-end tests need Envoy: run `make envoy`."))
}

/// Every WasmPlugin in `wasmplugins/`, in istiod's order.
pub fn shipped_wasmplugins() -> Vec<WasmPlugin> {
    crate::load_wasmplugins(&crate::repo_root().join("wasmplugins"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The shipped WasmPlugins named, in istiod's order whatever the order of `names`.
pub fn shipped(names: &[&str]) -> Vec<WasmPlugin> {
    crate::only(&shipped_wasmplugins(), names).unwrap_or_else(|e| panic!("{e}"))
}

/// The demo upstream on a kernel-chosen loopback port.
pub fn demo_upstream() -> DemoUpstream {
    DemoUpstream::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("demo upstream")
}

/// The bootstrap for `plugins` in front of `upstream`, on kernel-chosen ports; `extend` adds
/// to the options (a named cluster, say).
pub fn bootstrap(
    plugins: &[WasmPlugin],
    upstream: &DemoUpstream,
    extend: impl FnOnce(BootstrapOptions) -> BootstrapOptions,
) -> Value {
    let options = extend(BootstrapOptions::ephemeral(
        upstream.addr(),
        crate::wasm_dir(),
    ));
    crate::bootstrap(plugins, &options).unwrap_or_else(|e| panic!("{e}"))
}

/// One test's Envoy, with its plugins, in front of the demo upstream, and the test's budget:
/// at most `max_requests` requests through Envoy, each within [`REQUEST_TIMEOUT`], all
/// within [`TEST_BUDGET`] of the start. Envoy's log stays in
/// `target/envoy-e2e/<label>/envoy.log`; a failing test prints where.
pub struct EnvoyUnderTest {
    pub label: &'static str,
    pub envoy: RunningEnvoy,
    pub upstream: DemoUpstream,
    /// The generated Envoy bootstrap.
    pub bootstrap: Value,
    /// When the test's budget runs out; waits end here too.
    pub deadline: Instant,
    max_requests: u32,
    sent: Cell<u32>,
}

impl EnvoyUnderTest {
    /// Starts the demo upstream, then Envoy with `plugins` in front of it; `extend` adds to
    /// the bootstrap options.
    pub fn start(
        label: &'static str,
        plugins: &[WasmPlugin],
        max_requests: u32,
        extend: impl FnOnce(BootstrapOptions) -> BootstrapOptions,
    ) -> EnvoyUnderTest {
        Self::start_with_workers(label, plugins, max_requests, 1, extend)
    }

    /// [`EnvoyUnderTest::start`] with `workers` worker threads (`--concurrency`), each with
    /// its own VM of every plugin.
    pub fn start_with_workers(
        label: &'static str,
        plugins: &[WasmPlugin],
        max_requests: u32,
        workers: u32,
        extend: impl FnOnce(BootstrapOptions) -> BootstrapOptions,
    ) -> EnvoyUnderTest {
        let deadline = Instant::now() + TEST_BUDGET;
        let binary = envoy_binary();
        let upstream = demo_upstream();
        let bootstrap = bootstrap(plugins, &upstream, extend);
        let options = StartOptions {
            concurrency: workers,
            ..StartOptions::for_test(label)
        };
        let envoy = RunningEnvoy::start(&binary, &bootstrap, &options)
            .unwrap_or_else(|e| panic!("{label}: Envoy did not start: {e}"));
        EnvoyUnderTest {
            label,
            envoy,
            upstream,
            bootstrap,
            deadline,
            max_requests,
            sent: Cell::new(0),
        }
    }

    /// The next request's timeout; fails the test past its request count or its budget.
    fn budgeted_timeout(&self) -> Duration {
        let sent = self.sent.get() + 1;
        assert!(
            sent <= self.max_requests,
            "{}: more than {} requests",
            self.label,
            self.max_requests
        );
        self.sent.set(sent);
        let left = self.deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{}: over its {TEST_BUDGET:?} budget",
            self.label
        );
        left.min(REQUEST_TIMEOUT)
    }

    /// Sends `request` through Envoy, within the budget.
    pub fn send(&self, request: &Request) -> HttpResponse {
        let timeout = self.budgeted_timeout();
        client::send(self.envoy.listener(), request, timeout).unwrap_or_else(|e| {
            panic!(
                "{}: request failed: {e}\n{}",
                self.label,
                self.envoy.error_excerpt()
            )
        })
    }

    /// The requests that reached the upstream since the last call.
    pub fn upstream_saw(&self) -> Vec<SeenRequest> {
        self.upstream.take_requests()
    }

    /// No filter panicked or logged a critical wasm error: its VM survived what came before.
    pub fn assert_no_crash(&self) {
        let log = self.envoy.log();
        assert!(
            !log.contains("panicked") && !log.contains("][critical][wasm]"),
            "{}: the filter crashed; see {:?}",
            self.label,
            self.envoy.log_path()
        );
    }
}

impl Drop for EnvoyUnderTest {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(log) = self.envoy.log_path()
        {
            eprintln!("{}: Envoy's log is {}", self.label, log.display());
        }
    }
}

/// Each banking header with a value that is not UTF-8 (invalid lead bytes, a broken
/// two-byte sequence, Latin-1, bare continuation bytes): the filter must refuse each with a
/// problem naming the header, never trap on it.
pub const NON_UTF8_BANKING_HEADERS: [(&str, &[u8]); 4] = [
    ("x-customer-id", b"CUST-\xff\xfe0001"),
    (
        "x-transaction-id",
        b"0f8fad5b-d9cb-469f-a165-7086772895\xc3\x28",
    ),
    ("x-banking-operation", b"payment.cr\xe9ate"),
    ("x-correlation-id", b"trace-\x80\x81\x82-abcdef"),
];

/// Whether `text` is a UUID version 4 in its canonical lowercase form, as the filters
/// generate correlation ids.
pub fn is_uuid_v4(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
        && bytes[14] == b'4'
        && matches!(bytes[19], b'8' | b'9' | b'a' | b'b')
}

/// Spellings of `/payments` that name the same resource after the route model
/// (`filters/common/src/route.rs`): each must meet exactly the rules `/payments` meets, in
/// every filter, with Envoy's path normalisation on or off.
pub const PAYMENT_PATH_SPELLINGS: &[&str] = &[
    "/p%61yments",
    "/%70ayments",
    "/PAYMENTS",
    "/Payments",
    "/payments/",
    "/payments.json",
    "/payments%2ejson",
];

/// Spellings of the payment route an upstream may read as another resource (a Java server
/// drops `;` parameters, a CGI one decodes `%2F`): each is refused with 400 `invalid-path`
/// in every filter.
pub const REFUSED_PAYMENT_PATHS: &[&str] = &[
    "/payments;x=1",
    "/payments;x",
    "/payments%3Bx",
    "/payments%3bx",
    "/payments%2f..",
    "/payments%2F..",
    "/payments%2F%2e%2e",
    "/public/%252e%252e/payments",
    "/payment%C5%BF",
    "/%c0%ae%c0%ae/payments",
];
