//! The rate-limit filter in a real Envoy with two workers: jwt-auth (its shipped WasmPlugin,
//! keys from a local JWKS server) verifies one customer's token, rate-limit (its shipped
//! WasmPlugin with the limits a test sets) charges that customer's bucket, and many
//! connections at once spread the requests over both workers.
//!
//! What this proves that the harness cannot: the workers' VMs really share each bucket
//! through Envoy's shared data (the allowed count is the quota, not twice it), Envoy's
//! monotonic clock is one clock for both workers (a refilling limit stays within its rate),
//! and both workers took traffic (their listener counters), or the test would prove nothing
//! about sharing.
//!
//! Bounded for a 2-core machine: at most [`MAX_SENT`] requests per test, within
//! [`LOAD_WINDOW`] of sending, each with a timeout.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demo_services::JwksServer;
use envoy_runner::WasmPlugin;
use envoy_runner::client::{self, HttpResponse, Request};
use envoy_runner::fixture::{self, BehindJwtAuth, EnvoyUnderTest};
use serde_json::{Value, json};

/// Connections sending at once.
const CONNECTIONS: usize = 8;
/// The most requests one test sends under load.
const MAX_SENT: u32 = 1_200;
/// How long a refilling test keeps sending.
const LOAD_WINDOW: Duration = Duration::from_secs(3);
const CUSTOMER_ID: &str = "CUST-00012345";

struct Setup {
    envoy: EnvoyUnderTest,
    token: Option<String>,
    _jwks: Option<JwksServer>,
}

/// The shipped rate-limit WasmPlugin with `limits` instead of its own.
fn rate_limit(limits: Value) -> WasmPlugin {
    let mut plugin = fixture::shipped(&["rate-limit"]).remove(0);
    let mut config = plugin.plugin_config.clone().expect("a pluginConfig");
    config["limits"] = limits;
    plugin.plugin_config = Some(config);
    plugin
}

/// Envoy with two workers: jwt-auth and rate-limit (`limits`), one customer's token.
fn with_jwt_auth(label: &'static str, limits: Value) -> Setup {
    let BehindJwtAuth { envoy, token, jwks } =
        BehindJwtAuth::start(label, vec![rate_limit(limits)], 20, 2, CUSTOMER_ID);
    Setup {
        envoy,
        token: Some(token),
        _jwks: Some(jwks),
    }
}

/// What one request under load got, and when (from the start of the load).
#[derive(Debug, Clone)]
struct Outcome {
    status: u16,
    sent: Duration,
    answered: Duration,
}

/// Sends `request` from [`CONNECTIONS`] threads at once, a new connection per request, until
/// `total` have been sent or `window` has passed since the start.
fn load(
    setup: &Setup,
    request: &Request,
    total: u32,
    window: Duration,
) -> (Vec<Outcome>, Vec<HttpResponse>) {
    assert!(total <= MAX_SENT);
    let address = setup.envoy.envoy.listener();
    let start = Instant::now();
    let sent = Arc::new(AtomicU32::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let refusals = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..CONNECTIONS {
            let (sent, outcomes, refusals) = (sent.clone(), outcomes.clone(), refusals.clone());
            scope.spawn(move || {
                while sent.fetch_add(1, Ordering::SeqCst) < total && start.elapsed() < window {
                    let at = start.elapsed();
                    let response = client::send(address, request, Duration::from_secs(10))
                        .unwrap_or_else(|e| panic!("request failed: {e}"));
                    let outcome = Outcome {
                        status: response.status,
                        sent: at,
                        answered: start.elapsed(),
                    };
                    outcomes.lock().unwrap().push(outcome);
                    let mut kept = refusals.lock().unwrap();
                    if response.status == 429 && kept.len() < 3 {
                        kept.push(response);
                    }
                }
            });
        }
    });
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let refusals = std::mem::take(&mut *refusals.lock().unwrap());
    (outcomes, refusals)
}

fn workers(setup: &Setup) -> String {
    let (zero, one) = setup.envoy.worker_connections();
    format!("worker_0 accepted {zero} connections, worker_1 {one}")
}

/// Both workers accepted connections of the load (counts `before` it subtracted), or the
/// test proved nothing about sharing.
fn assert_both_workers_took_traffic(setup: &Setup, before: (u64, u64)) {
    let (zero, one) = setup.envoy.worker_connections();
    assert!(
        zero > before.0 && one > before.1,
        "worker_0 accepted {} of the load's connections, worker_1 {}",
        zero - before.0,
        one - before.1
    );
}

fn payment(setup: &Setup) -> Request {
    let mut request = Request::post("/payments")
        .header("x-customer-id", CUSTOMER_ID)
        .header("x-banking-operation", "payment.create");
    if let Some(token) = &setup.token {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    request
}

fn statuses(outcomes: &[Outcome]) -> (usize, usize) {
    let allowed = outcomes.iter().filter(|o| o.status == 200).count();
    let limited = outcomes.iter().filter(|o| o.status == 429).count();
    assert_eq!(
        allowed + limited,
        outcomes.len(),
        "only 200 and 429: {:?}",
        outcomes.iter().find(|o| o.status != 200 && o.status != 429)
    );
    (allowed, limited)
}

#[test]
fn one_customer_over_two_workers_gets_exactly_the_quota() {
    // 100 an hour, all at once: under a second of load refills nothing.
    let setup = with_jwt_auth(
        "rate_limit_exact_quota",
        json!([{"name": "payment_create", "pathPrefix": "/payments", "methods": ["POST"],
                "operations": ["payment.create"], "key": "customer",
                "quota": 100, "window": "1h"}]),
    );
    let before = setup.envoy.worker_connections();
    let (outcomes, refusals) = load(&setup, &payment(&setup), 300, Duration::from_secs(30));
    let (allowed, limited) = statuses(&outcomes);
    eprintln!(
        "exact quota: {allowed} allowed, {limited} refused; {}",
        workers(&setup)
    );
    assert_eq!(allowed, 100, "{limited} refused");
    assert_eq!(limited, 200);
    assert_both_workers_took_traffic(&setup, before);

    let refusal = refusals.first().expect("a 429");
    assert_eq!(
        refusal.header_str("content-type"),
        Some("application/problem+json")
    );
    let body = refusal.json().unwrap();
    assert_eq!(body["type"], "urn:banking-filters:problem:rate-limited");
    assert_eq!(body["limit"], "payment_create");
    assert!(!refusal.body_text().contains(CUSTOMER_ID));
    assert_eq!(
        refusal.header_str("ratelimit-policy"),
        Some("\"payment_create\";q=100;w=3600")
    );
    // One request every 36 s comes back: the client is told to wait that long, never less.
    let retry: u64 = refusal.header_str("retry-after").unwrap().parse().unwrap();
    assert!((35..=36).contains(&retry), "Retry-After {retry}");
    let ratelimit = refusal.header_str("ratelimit").unwrap();
    assert!(
        ratelimit.starts_with("\"payment_create\";r=0;t="),
        "{ratelimit}"
    );

    assert_eq!(
        setup
            .envoy
            .envoy
            .stat("banking_rate_limit_allowed_payment_create"),
        Some(100)
    );
    // Envoy keeps serving, and no VM crashed.
    let response = setup.envoy.send(&Request::get("/healthz"));
    assert_eq!(response.status, 200);
    setup.envoy.assert_no_crash();
}

#[test]
fn a_refilling_limit_stays_within_its_rate_over_two_workers() {
    // 40 a second, 10 at once.
    let rate = 40.0;
    let burst = 10.0;
    let setup = with_jwt_auth(
        "rate_limit_refilling",
        json!([{"name": "payment_create", "pathPrefix": "/payments", "methods": ["POST"],
                "operations": ["payment.create"], "key": "customer",
                "quota": 40, "window": "1s", "burst": 10}]),
    );
    let before = setup.envoy.worker_connections();
    let started = Instant::now();
    let (outcomes, _) = load(&setup, &payment(&setup), MAX_SENT, LOAD_WINDOW);
    let whole = started.elapsed().as_secs_f64();
    let (allowed, limited) = statuses(&outcomes);
    assert!(
        limited > 0,
        "the load must exceed the rate: {allowed} allowed"
    );
    let allowed_times: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == 200).collect();
    // The span the filter surely saw the allowed requests in: from the first one's answer
    // to the last one's sending.
    let first = allowed_times.iter().map(|o| o.answered).min().unwrap();
    let last = allowed_times.iter().map(|o| o.sent).max().unwrap();
    let inner = last.saturating_sub(first).as_secs_f64();
    let (low, high) = ((rate * inner).floor(), rate * whole + burst);
    eprintln!(
        "refilling: {allowed} allowed, {limited} refused in {whole:.2} s; bounds {low} to {high}; {}",
        workers(&setup)
    );
    let allowed = allowed as f64;
    assert!(
        low <= allowed && allowed <= high,
        "{allowed} allowed; expected {low} to {high} ({inner:.2} s to {whole:.2} s)"
    );
    assert_both_workers_took_traffic(&setup, before);
    setup.envoy.assert_no_crash();
}

#[test]
fn a_proxy_limit_is_one_bucket_for_both_workers() {
    let config = rate_limit(
        json!([{"name": "payments_per_proxy", "pathPrefix": "/payments",
        "key": "proxy", "quota": 50, "window": "1h"}]),
    );
    let envoy =
        EnvoyUnderTest::start_with_workers("rate_limit_proxy", &[config], 20, 2, |options| options);
    let setup = Setup {
        envoy,
        token: None,
        _jwks: None,
    };
    let before = setup.envoy.worker_connections();
    let (outcomes, _) = load(&setup, &payment(&setup), 150, Duration::from_secs(30));
    let (allowed, limited) = statuses(&outcomes);
    eprintln!(
        "proxy limit: {allowed} allowed, {limited} refused; {}",
        workers(&setup)
    );
    assert_eq!((allowed, limited), (50, 100));
    assert_both_workers_took_traffic(&setup, before);
    setup.envoy.assert_no_crash();
}
