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

use demo_services::{DemoUpstream, JwksServer, SeenRequest, jwt_minter};
use serde_json::{Value, json};

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
    bootstrap_and_options(plugins, upstream, extend).0
}

/// [`bootstrap`] and the options it was built from. Plugin configurations discovered from
/// files ([`BootstrapOptions::with_plugin_configs_in`]) are written here.
fn bootstrap_and_options(
    plugins: &[WasmPlugin],
    upstream: &DemoUpstream,
    extend: impl FnOnce(BootstrapOptions) -> BootstrapOptions,
) -> (Value, BootstrapOptions) {
    let options = extend(BootstrapOptions::ephemeral(
        upstream.addr(),
        crate::wasm_dir(),
    ));
    if options.plugin_configs.is_some() {
        for plugin in plugins {
            crate::write_plugin_config(plugin, &options).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let bootstrap = crate::bootstrap(plugins, &options).unwrap_or_else(|e| panic!("{e}"));
    (bootstrap, options)
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
    /// What the bootstrap was built from.
    pub options: BootstrapOptions,
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
        let (bootstrap, options) = bootstrap_and_options(plugins, &upstream, extend);
        let start = StartOptions {
            concurrency: workers,
            ..StartOptions::for_test(label)
        };
        let envoy = RunningEnvoy::start(&binary, &bootstrap, &start)
            .unwrap_or_else(|e| panic!("{label}: Envoy did not start: {e}"));
        EnvoyUnderTest {
            label,
            envoy,
            upstream,
            bootstrap,
            options,
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

    /// Pushes `plugin`'s configuration to the running Envoy, as istiod does when a
    /// WasmPlugin changes; the Envoy must have been started with
    /// [`BootstrapOptions::with_plugin_configs_in`]. Envoy applies it shortly after.
    pub fn push_plugin_config(&self, plugin: &WasmPlugin) {
        crate::write_plugin_config(plugin, &self.options)
            .unwrap_or_else(|e| panic!("{}: cannot push {}: {e}", self.label, plugin.name));
    }

    /// The requests that reached the upstream since the last call.
    pub fn upstream_saw(&self) -> Vec<SeenRequest> {
        self.upstream.take_requests()
    }

    /// Connections the listener's first two workers accepted so far (`worker_0`, `worker_1`),
    /// from the admin `/stats`: a test of state shared between workers checks that both took
    /// its traffic, or it proves nothing about sharing.
    pub fn worker_connections(&self) -> (u64, u64) {
        let stats = self.envoy.stats().expect("admin /stats");
        let accepted = |worker: &str| -> u64 {
            let suffix = format!(".{worker}.downstream_cx_total");
            stats
                .iter()
                .filter(|(name, _)| name.starts_with("listener.") && name.ends_with(&suffix))
                .map(|(_, v)| *v)
                .sum()
        };
        (accepted("worker_0"), accepted("worker_1"))
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

/// An Envoy with the shipped jwt-auth first (keys from a local JWKS server) and `after` behind
/// it, and a token for one customer that jwt-auth accepts.
pub struct BehindJwtAuth {
    pub envoy: EnvoyUnderTest,
    /// A `Bearer` token: ES256, `sub` `user-4711`, the given customer, `client_id`
    /// `mobile-app`, every scope the shipped rules ask for, valid for 10 minutes.
    pub token: String,
    /// Serves the key jwt-auth fetches; drop it with the Envoy.
    pub jwks: JwksServer,
}

impl BehindJwtAuth {
    /// Mints the token and its key (`demo_services::jwt_minter`), starts Envoy with `workers`
    /// workers, and waits until jwt-auth has its keys (a verified `GET /accounts/1` gets 200;
    /// those requests count against `max_requests`). What reached the upstream so far is
    /// cleared.
    pub fn start(
        label: &'static str,
        after: Vec<WasmPlugin>,
        max_requests: u32,
        workers: u32,
        customer_id: &str,
    ) -> BehindJwtAuth {
        Self::start_with(label, after, max_requests, workers, customer_id, |o| o)
    }

    /// [`BehindJwtAuth::start`], with `extend` adding to the bootstrap options (a cluster for
    /// a filter behind jwt-auth, another upstream).
    pub fn start_with(
        label: &'static str,
        after: Vec<WasmPlugin>,
        max_requests: u32,
        workers: u32,
        customer_id: &str,
        extend: impl FnOnce(BootstrapOptions) -> BootstrapOptions,
    ) -> BehindJwtAuth {
        let jwt = shipped(&["jwt-auth"]).remove(0);
        let config = jwt.plugin_config.clone().expect("jwt-auth's pluginConfig");
        let text = |pointer: &str| {
            config
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("jwt-auth's pluginConfig has no {pointer}"))
                .to_string()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_secs();
        let minted = jwt_minter::mint(&json!({
            "keys": [{"id": "ec", "kty": "EC", "kid": format!("{label}-ec")}],
            "tokens": [{"id": "caller", "key": "ec", "alg": "ES256", "claims": {
                "iss": text("/providers/0/issuer"), "aud": text("/providers/0/audiences/0"),
                "sub": "user-4711", "customer_id": customer_id, "client_id": "mobile-app",
                "scope": "payments:read payments:write accounts:read",
                "iat": now, "nbf": now, "exp": now + 600,
            }}],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let jwks = JwksServer::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &text("/providers/0/remoteJwks/path"),
            json!({"keys": [minted["keys"]["ec"].clone()]})
                .to_string()
                .as_bytes(),
        )
        .expect("JWKS server");
        let cluster = text("/providers/0/remoteJwks/cluster");
        let mut plugins = vec![jwt];
        plugins.extend(after);
        let envoy =
            EnvoyUnderTest::start_with_workers(label, &plugins, max_requests, workers, |options| {
                extend(options.with_cluster(&cluster, jwks.addr()))
            });
        let token = minted["tokens"]["caller"]
            .as_str()
            .expect("the minted token")
            .to_string();
        // Keys arrive on the workers' first tick; until then tokens get 503.
        let probe = Request::get("/accounts/1").header("authorization", &format!("Bearer {token}"));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let response = envoy.send(&probe);
            if response.status != 503 || Instant::now() > deadline {
                assert_eq!(response.status, 200, "{}", response.body_text());
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        envoy.upstream_saw();
        BehindJwtAuth { envoy, token, jwks }
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
