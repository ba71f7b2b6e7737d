//! The idempotency filter in a real Envoy with two workers and its embedded store: jwt-auth
//! (its shipped WasmPlugin, keys from a local JWKS server) verifies one customer's token, and
//! a storm of identical payments with one `Idempotency-Key`, sent at once over many
//! connections and spread over both workers, reaches the upstream exactly once; every other
//! answer is a 409 or a byte-identical replay. Then the same key with another body gets 422.
//!
//! The demo upstream answers at once rather than holding the first request, so the storm's
//! requests overlap the first only as far as the machine's scheduling makes them: the
//! harness's race-hook test is what pins the reservation race down.
//!
//! Bounded: at most [`STORM`] + a few requests, each with a timeout.
//!
//! The filter lets the request headers go on and holds the body: a Wasm filter's
//! StopIteration on headers is StopAll in Envoy (proxy-wasm/proxy-wasm-cpp-host#95) unless
//! the plugin sets `allow_on_headers_stop_iteration`, which Istio's WasmPlugin cannot, and
//! then the body is never delivered to it. This test is what found that.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_runner::client::{self, HttpResponse, Request};
use envoy_runner::fixture::{self, BehindJwtAuth};

/// Identical payments sent at once.
const STORM: usize = 50;
const CUSTOMER_ID: &str = "CUST-00012345";
const KEY: &str = "\"storm-8e03978e-40d5-43e8\"";
const BODY: &[u8] = br#"{"amount":"10.00","creditor":"DE89370400440532013000"}"#;

type Setup = BehindJwtAuth;

fn with_jwt_auth(label: &'static str) -> Setup {
    let idempotency = fixture::shipped(&["idempotency"]).remove(0);
    BehindJwtAuth::start(label, vec![idempotency], 20, 2, CUSTOMER_ID)
}

fn payment(setup: &Setup, body: &[u8]) -> Request {
    Request::post("/payments")
        .header("authorization", &format!("Bearer {}", setup.token))
        .header("x-customer-id", CUSTOMER_ID)
        .header("content-type", "application/json")
        .header("idempotency-key", KEY)
        .body(body)
}

#[test]
fn a_storm_of_one_payment_over_two_workers_reaches_the_upstream_once() {
    let setup = with_jwt_auth("idempotency_storm");
    let before = setup.envoy.worker_connections();
    let address = setup.envoy.envoy.listener();
    let request = payment(&setup, BODY);
    let answers: Arc<Mutex<Vec<HttpResponse>>> = Arc::default();
    std::thread::scope(|scope| {
        for _ in 0..STORM {
            let (answers, request) = (answers.clone(), &request);
            scope.spawn(move || {
                let answer = client::send(address, request, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("request failed: {e}"));
                answers.lock().unwrap().push(answer);
            });
        }
    });
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let upstream = setup.envoy.upstream_saw();
    let executed: Vec<_> = upstream.iter().filter(|r| r.path == "/payments").collect();
    assert_eq!(
        executed.len(),
        1,
        "the payment ran {} times",
        executed.len()
    );
    let first = answers
        .iter()
        .find(|a| a.status == 200 && a.header_str("idempotent-replayed").is_none())
        .expect("the one execution's answer");
    let mut replays = 0;
    let mut in_flight = 0;
    for answer in &answers {
        match (answer.status, answer.header_str("idempotent-replayed")) {
            (200, Some("true")) => {
                assert_eq!(answer.body, first.body, "a replay is byte for byte");
                replays += 1;
            }
            (200, None) => {}
            (409, None) => {
                assert_eq!(
                    answer.json().unwrap()["type"],
                    "urn:banking-filters:problem:idempotency-request-in-flight"
                );
                in_flight += 1;
            }
            (status, _) => panic!("unexpected {status}: {}", answer.body_text()),
        }
    }
    assert_eq!(replays + in_flight, STORM - 1);
    let after = setup.envoy.worker_connections();
    eprintln!(
        "storm: 1 execution, {replays} replays, {in_flight} in flight; worker_0 took {} connections, worker_1 {}",
        after.0 - before.0,
        after.1 - before.1
    );
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "both workers took the storm"
    );

    // The same key for another payment.
    let other = setup.envoy.send(&payment(&setup, br#"{"amount":"99.00"}"#));
    assert_eq!(other.status, 422, "{}", other.body_text());
    assert!(setup.envoy.upstream_saw().is_empty());
    setup.envoy.assert_no_crash();
}
