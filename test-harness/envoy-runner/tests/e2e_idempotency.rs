//! The idempotency filter in real Envoys, behind the shipped jwt-auth (keys from a local JWKS
//! server), in front of a counting upstream that holds the first payment until the test has
//! sent the whole storm, so every other request really overlaps it:
//!
//! - one replica (two workers) with the embedded store;
//! - two replicas (two workers each) sharing one real Redis through one real Webdis, started
//!   from the files in `deploy/idempotency-redis/`.
//!
//! A storm of identical payments with one `Idempotency-Key`, spread over every worker, reaches
//! the upstream exactly once; every other answer is a 409 while the first is held, and a
//! repeat after it is a byte-identical replay. The same key with another body gets 422. With
//! Redis stopped, a payment gets 503 and never reaches the upstream. A later filter's refusal
//! does not use up the key: the retry executes, once.
//!
//! Bounded: each Envoy takes at most [`STORM`] + a few requests, each with a timeout.
//!
//! The filter lets the request headers go on and holds the body: a Wasm filter's
//! StopIteration on headers is StopAll in Envoy (proxy-wasm/proxy-wasm-cpp-host#95) unless
//! the plugin sets `allow_on_headers_stop_iteration`, which Istio's WasmPlugin cannot, and
//! then the body is never delivered to it. This test is what found that.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demo_services::DemoUpstream;
use envoy_runner::client::{self, HttpResponse, Request};
use envoy_runner::fixture::{self, BehindJwtAuth};
use envoy_runner::redis::{RedisThroughWebdis, WEBDIS_CLUSTER as WEBDIS, with_redis_store};
use envoy_runner::{FailStrategy, Phase, WasmPlugin};

/// Identical payments sent at once.
const STORM: usize = 50;
const CUSTOMER_ID: &str = "CUST-00012345";
const KEY: &str = "\"storm-8e03978e-40d5-43e8\"";
const BODY: &[u8] = br#"{"amount":"10.00","creditor":"DE89370400440532013000"}"#;

/// One replica: its Envoy (jwt-auth, then idempotency) and its caller's token.
type Replica = BehindJwtAuth;

/// The shipped idempotency plugin, with its Redis store when `redis`.
fn idempotency(redis: bool) -> WasmPlugin {
    let plugin = fixture::shipped(&["idempotency"]).remove(0);
    if redis {
        with_redis_store(plugin, "500ms")
    } else {
        plugin
    }
}

/// A replica in front of `upstream` (shared by every replica, so it counts executions over
/// all of them), with `after` behind jwt-auth.
fn replica(
    label: &'static str,
    after: Vec<WasmPlugin>,
    upstream: &DemoUpstream,
    webdis: Option<&RedisThroughWebdis>,
) -> Replica {
    let upstream = upstream.addr();
    BehindJwtAuth::start_with(
        label,
        after,
        STORM as u32 + 20,
        2,
        CUSTOMER_ID,
        |mut options| {
            options.upstream = upstream;
            match webdis {
                Some(webdis) => options.with_cluster(WEBDIS, webdis.webdis_addr),
                None => options,
            }
        },
    )
}

fn payment(replica: &Replica, key: &str, body: &[u8]) -> Request {
    Request::post("/payments")
        .header("authorization", &format!("Bearer {}", replica.token))
        .header("x-customer-id", CUSTOMER_ID)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body)
}

/// One payment of its own through each replica until the store answers it. Webdis 0.1.9
/// sometimes loses one of its pooled Redis connections at start (libevent logs `Epoll ADD
/// ... Bad file descriptor`), and the first call that lands on it times out: the filter then
/// answers 503, failing closed as it should, but the storm needs a store that answers. At
/// most five tries per replica, within the replica's request budget.
fn warm_up(replicas: &[&Replica], upstream: &DemoUpstream) {
    for (r, replica) in replicas.iter().enumerate() {
        let answered = (0..5).any(|try_| {
            let key = format!("\"warm-up-{r}-{try_}\"");
            let status = replica.envoy.send(&payment(replica, &key, BODY)).status;
            if status == 503 {
                std::thread::sleep(Duration::from_millis(200));
            }
            status != 503
        });
        assert!(answered, "replica {r}: the store never answered");
    }
    upstream.take_requests();
}

fn executions(upstream: &DemoUpstream) -> usize {
    upstream
        .take_requests()
        .iter()
        .filter(|r| r.path == "/payments")
        .count()
}

fn problem_type(answer: &HttpResponse) -> String {
    answer
        .json()
        .ok()
        .and_then(|j| j["type"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The storm over `replicas`: the first payment goes to the first replica and is held at the
/// upstream; then the other [`STORM`] - 1, at once, round-robin over the replicas. Returns the
/// first's answer after the upstream lets it go.
fn storm(replicas: &[&Replica], upstream: &DemoUpstream) -> HttpResponse {
    let before: Vec<(u64, u64)> = replicas
        .iter()
        .map(|r| r.envoy.worker_connections())
        .collect();
    upstream.take_requests();
    upstream.hold();
    let first_request = payment(replicas[0], KEY, BODY);
    let answers: Arc<Mutex<Vec<HttpResponse>>> = Arc::default();
    let first_address = replicas[0].envoy.envoy.listener();
    let first = std::thread::scope(|scope| {
        let first_request = &first_request;
        let first = scope
            .spawn(move || client::send(first_address, first_request, Duration::from_secs(30)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while upstream.requests().iter().all(|r| r.path != "/payments") {
            assert!(Instant::now() < deadline, "the first payment never arrived");
            std::thread::sleep(Duration::from_millis(20));
        }
        let requests: Vec<(std::net::SocketAddr, Request)> = (1..STORM)
            .map(|i| {
                let replica = replicas[i % replicas.len()];
                (replica.envoy.envoy.listener(), payment(replica, KEY, BODY))
            })
            .collect();
        std::thread::scope(|storm| {
            for (address, request) in &requests {
                let answers = answers.clone();
                storm.spawn(move || {
                    let answer = client::send(*address, request, Duration::from_secs(10))
                        .unwrap_or_else(|e| panic!("request failed: {e}"));
                    answers.lock().unwrap().push(answer);
                });
            }
        });
        upstream.release();
        first
            .join()
            .expect("the first payment's thread")
            .expect("the first payment's answer")
    });
    assert_eq!(first.status, 200, "{}", first.body_text());
    assert_eq!(first.header_str("idempotent-replayed"), None);
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    assert_eq!(answers.len(), STORM - 1);
    for answer in &answers {
        assert_eq!(
            (answer.status, problem_type(answer).as_str()),
            (
                409,
                "urn:banking-filters:problem:idempotency-request-in-flight"
            ),
            "{}",
            answer.body_text()
        );
    }
    assert_eq!(executions(upstream), 1, "the payment ran once");
    for (replica, before) in replicas.iter().zip(before) {
        let after = replica.envoy.worker_connections();
        eprintln!(
            "{}: worker_0 took {} connections, worker_1 {}",
            replica.envoy.label,
            after.0 - before.0,
            after.1 - before.1
        );
        assert!(
            after.0 > before.0 && after.1 > before.1,
            "{}: both workers took the storm",
            replica.envoy.label
        );
    }
    first
}

/// A repeat of the payment on `replica`, once its outcome is stored (a write after the
/// response, so a repeat sent at once may still find it in flight), is its replay.
fn assert_replayed(replica: &Replica, first: &HttpResponse) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let replay = loop {
        let answer = replica.envoy.send(&payment(replica, KEY, BODY));
        if answer.status != 409 || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(replay.status, 200, "{}", replay.body_text());
    assert_eq!(replay.header_str("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body, "a replay is byte for byte");
    let other = replica
        .envoy
        .send(&payment(replica, KEY, br#"{"amount":"99.00"}"#));
    assert_eq!(other.status, 422, "{}", other.body_text());
}

#[test]
fn one_replica_with_the_embedded_store_executes_a_storm_of_one_payment_once() {
    let upstream = fixture::demo_upstream();
    let one = replica(
        "idempotency_storm",
        vec![idempotency(false)],
        &upstream,
        None,
    );
    let first = storm(&[&one], &upstream);
    assert_replayed(&one, &first);
    assert_eq!(executions(&upstream), 0);
    one.envoy.assert_no_crash();
}

#[test]
fn two_replicas_sharing_redis_execute_a_storm_of_one_payment_once_and_fail_closed_without_it() {
    let mut redis =
        RedisThroughWebdis::start("idempotency_storm_redis").unwrap_or_else(|e| panic!("{e}"));
    let upstream = fixture::demo_upstream();
    let a = replica(
        "idempotency_redis_a",
        vec![idempotency(true)],
        &upstream,
        Some(&redis),
    );
    let b = replica(
        "idempotency_redis_b",
        vec![idempotency(true)],
        &upstream,
        Some(&redis),
    );
    warm_up(&[&a, &b], &upstream);
    let first = storm(&[&a, &b], &upstream);
    // The other replica replays what the first executed.
    assert_replayed(&b, &first);
    assert_eq!(executions(&upstream), 0);
    let webdis_calls = |replica: &Replica| {
        replica
            .envoy
            .envoy
            .stat(&format!("cluster.{WEBDIS}.upstream_rq_total"))
            .unwrap_or(0)
    };
    eprintln!(
        "Webdis calls: replica a {}, replica b {}",
        webdis_calls(&a),
        webdis_calls(&b)
    );

    // Redis stops: a new payment is refused, and never reaches the upstream.
    redis.stop_redis();
    let refused = a
        .envoy
        .send(&payment(&a, "\"after-redis-stopped-1\"", BODY));
    assert_eq!(refused.status, 503, "{}", refused.body_text());
    assert_eq!(
        problem_type(&refused),
        "urn:banking-filters:problem:idempotency-store-unavailable"
    );
    assert!(refused.header_str("retry-after").is_some());
    assert_eq!(executions(&upstream), 0);
    a.envoy.assert_no_crash();
    b.envoy.assert_no_crash();
}

#[test]
fn a_later_filters_refusal_leaves_the_key_free_and_the_retry_executes_once() {
    // The harness's probe filter after idempotency (phase STATS: after AUTHZ, as Istio's RBAC
    // is) answers 403 on command, as a later authorization filter would.
    let probe = WasmPlugin {
        name: "harness-probe".into(),
        namespace: "istio-system".into(),
        plugin_name: String::new(),
        phase: Phase::Stats,
        priority: 0,
        fail_strategy: FailStrategy::FailClose,
        plugin_config: None,
        url: String::new(),
        source: PathBuf::from("test"),
        env: Vec::new(),
    };
    let upstream = fixture::demo_upstream();
    let one = replica(
        "idempotency_later_refusal",
        vec![idempotency(false), probe],
        &upstream,
        None,
    );
    let key = "\"later-refusal-0001\"";
    let refused = one
        .envoy
        .send(&payment(&one, key, BODY).header("x-probe", "local-reply 403 denied"));
    assert_eq!(refused.status, 403, "{}", refused.body_text());
    assert_eq!(executions(&upstream), 0);
    let retry = one.envoy.send(&payment(&one, key, BODY));
    assert_eq!(retry.status, 200, "{}", retry.body_text());
    assert_eq!(executions(&upstream), 1);
    one.envoy.assert_no_crash();
}
