//! The idempotency filter's real .wasm under the emulated host, with the embedded store: every
//! row of the semantics (reserve, replay byte for byte, 409 in flight, 409 outcome unknown,
//! 422 on another body, release on retryable or non-upstream answers, expiry), body chunking,
//! two worker VMs reserving one new key at once, a full store, and host faults.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};
use test_harness::{Action, HarnessError, Host, HostStatus, Plugin, Stream};

const FILTER: &str = "idempotency";
const KEY: &str = "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"";
const BODY: &[u8] = br#"{"amount":"10.00","creditor":"DE89370400440532013000"}"#;

fn shipped_config() -> String {
    envoy_runner::fixture::shipped(&["idempotency"])[0]
        .configuration_json()
        .expect("a pluginConfig")
}

fn load(host: &Host, config: &str) -> Plugin {
    match host.load(FILTER, config) {
        Ok(p) => p,
        Err(e @ HarnessError::WasmNotBuilt { .. }) => panic!("{e} (run `make wasm`)"),
        Err(e) => panic!("{e}"),
    }
}

fn identity(customer: &str) -> String {
    json!({"issuer": "https://idp.bank.example", "subject": format!("user-{customer}"),
           "customer": customer})
    .to_string()
}

/// A payment's request phase: headers (with `key` when given), then `chunks` of body.
fn pay(plugin: &Plugin, customer: &str, key: Option<&str>, chunks: &[&[u8]]) -> (Action, Stream) {
    let mut stream = plugin.stream();
    stream.set_property(&["banking.jwt.identity"], identity(customer));
    let mut headers = vec![
        (":method", "POST"),
        (":path", "/payments"),
        (":authority", "api.bank.example"),
        ("content-type", "application/json"),
        ("x-customer-id", customer),
    ];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    let mut action = stream.request_headers(&headers, chunks.is_empty());
    // Headers are answered or let go, never held: Envoy would never deliver the body to a
    // Wasm filter that stopped on them.
    assert!(
        action == Action::Continue || stream.local_response().is_some(),
        "the headers were held without an answer"
    );
    for (i, chunk) in chunks.iter().enumerate() {
        action = stream.request_body(chunk, i + 1 == chunks.len());
    }
    (action, stream)
}

/// The upstream's answer to a request that went through, then the end of the stream.
fn upstream_answers(stream: &mut Stream, status: &str, body: &[u8]) {
    stream.set_property(&["response", "code_details"], "via_upstream");
    stream.response_headers(
        &[
            (":status", status),
            ("content-type", "application/json"),
            ("location", "/payments/42"),
            ("x-not-kept", "1"),
        ],
        body.is_empty(),
    );
    if !body.is_empty() {
        stream.response_body(body, true);
    }
    stream.complete();
}

fn problem(stream: &Stream) -> (u32, Value) {
    let reply = stream.local_response().expect("a local reply");
    let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, body)
}

fn metric(host: &Host, name: &str) -> u64 {
    host.metric(&format!("banking_idempotency_{name}"))
        .unwrap_or_else(|| panic!("no {name}"))
}

const RESPONSE: &[u8] = br#"{"id":"42","status":"accepted"}"#;

#[test]
fn the_first_payment_goes_upstream_and_a_repeat_gets_its_response_byte_for_byte() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    let (action, mut first) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    assert_eq!(action, Action::Continue);
    assert!(first.local_response().is_none());
    upstream_answers(&mut first, "201", RESPONSE);
    assert_eq!(metric(&host, "stored"), 1);

    let (action, repeat) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    assert_eq!(action, Action::Pause, "answered here, never upstream");
    let reply = repeat.local_response().unwrap();
    assert_eq!(reply.status, 201);
    assert_eq!(reply.body, RESPONSE);
    let header = |name: &str| {
        reply
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("content-type"), Some(b"application/json".to_vec()));
    assert_eq!(header("location"), Some(b"/payments/42".to_vec()));
    assert_eq!(header("idempotent-replayed"), Some(b"true".to_vec()));
    assert_eq!(header("x-not-kept"), None);
    assert_eq!(metric(&host, "replayed"), 1);
}

#[test]
fn the_same_body_in_other_chunks_is_the_same_payment_and_another_body_is_422() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    let (_, mut first) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    upstream_answers(&mut first, "201", RESPONSE);
    let (head, tail) = BODY.split_at(10);
    let (_, chunked) = pay(&plugin, "CUST-1", Some(KEY), &[head, tail, b""]);
    assert_eq!(chunked.local_response().map(|r| r.status), Some(201));
    let (_, other) = pay(&plugin, "CUST-1", Some(KEY), &[br#"{"amount":"99.00"}"#]);
    let (status, body) = problem(&other);
    assert_eq!(status, 422);
    assert_eq!(
        body["type"],
        "urn:banking-filters:problem:idempotency-key-reused"
    );
}

#[test]
fn a_repeat_while_the_first_is_in_flight_gets_409_then_outcome_unknown_after_the_lease() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    let (action, _in_flight) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    assert_eq!(action, Action::Continue);
    let (_, repeat) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    let (status, body) = problem(&repeat);
    assert_eq!(status, 409);
    assert_eq!(
        body["type"],
        "urn:banking-filters:problem:idempotency-request-in-flight"
    );
    let retry = repeat.local_response().unwrap();
    assert!(
        retry
            .headers
            .iter()
            .any(|(n, v)| n == "retry-after" && v == b"1")
    );
    // The first never finishes (the proxy restarted, say): past the lease the outcome is
    // unknown, and still nothing runs twice.
    host.advance(Duration::from_secs(61));
    let (_, later) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    let (status, body) = problem(&later);
    assert_eq!(status, 409);
    assert_eq!(
        body["type"],
        "urn:banking-filters:problem:idempotency-outcome-unknown"
    );
}

#[test]
fn retryable_and_non_upstream_answers_release_the_key() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    // The upstream answers 429: the client may retry with the same key.
    let (_, mut first) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    upstream_answers(&mut first, "429", b"");
    let (action, mut second) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    assert_eq!(action, Action::Continue, "executed again");
    // A later filter (Istio's RBAC) answers 403 itself: nothing ran upstream.
    second.set_property(
        &["response", "code_details"],
        "rbac_access_denied_matched_policy[none]",
    );
    second.response_headers(&[(":status", "403")], true);
    second.complete();
    let (action, mut third) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    assert_eq!(
        action,
        Action::Continue,
        "executed again: {:?} {:?}",
        third.local_response().map(|r| r.body_text()),
        plugin.logs(test_harness::LogLevel::Warn)
    );
    upstream_answers(&mut third, "201", RESPONSE);
    assert_eq!(metric(&host, "released"), 2);
    let (_, replayed) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    assert_eq!(replayed.local_response().map(|r| r.status), Some(201));
}

#[test]
fn an_upstream_5xx_is_kept_so_the_payment_never_runs_twice() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    let (_, mut first) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    upstream_answers(&mut first, "502", b"bad gateway");
    let (_, repeat) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    assert_eq!(repeat.local_response().map(|r| r.status), Some(502));
}

#[test]
fn keys_are_per_customer_and_expire_with_the_retention() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    let (_, mut first) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    upstream_answers(&mut first, "201", RESPONSE);
    // Another customer's identical key is another key.
    let (action, _) = pay(&plugin, "CUST-2", Some(KEY), &[BODY]);
    assert_eq!(action, Action::Continue);
    host.advance(Duration::from_secs(24 * 3600 + 2));
    let (action, _) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    assert_eq!(
        action,
        Action::Continue,
        "the key is free after the retention"
    );
}

#[test]
fn a_missing_repeated_or_malformed_key_and_a_missing_identity_are_refused() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    let (_, missing) = pay(&plugin, "CUST-1", None, &[BODY]);
    let (status, body) = problem(&missing);
    assert_eq!(status, 400);
    assert_eq!(
        body["type"],
        "urn:banking-filters:problem:idempotency-key-missing"
    );
    assert_eq!(body["header"], "idempotency-key");
    let (_, list) = pay(
        &plugin,
        "CUST-1",
        Some("\"abcdefgh\", \"ijklmnop\""),
        &[BODY],
    );
    assert_eq!(problem(&list).0, 400);
    let mut stream = plugin.stream();
    let action = stream.request_headers(
        &[
            (":method", "POST"),
            (":path", "/payments"),
            ("idempotency-key", KEY),
        ],
        true,
    );
    assert_eq!(action, Action::Pause);
    let (status, body) = problem(&stream);
    assert_eq!(
        (status, body["type"].as_str()),
        (403, Some("urn:banking-filters:problem:identity-required"))
    );
    // Other routes pass untouched.
    let mut read = plugin.stream();
    let action = read.request_headers(&[(":method", "GET"), (":path", "/payments/42")], true);
    assert_eq!(action, Action::Continue);
}

#[test]
fn two_workers_reserving_one_new_key_at_once_send_one_request_upstream() {
    let host = Host::new();
    let a = load(&host, &shipped_config());
    let b = load(&host, &shipped_config());
    let inner = Rc::new(RefCell::new(None));
    let (b_inside, seen) = (b.clone(), inner.clone());
    // Worker B's whole request runs between worker A's read of the slot and its write.
    a.after_hostcall("proxy_get_shared_data", move || {
        let (action, stream) = pay(&b_inside, "CUST-1", Some(KEY), &[BODY]);
        *seen.borrow_mut() = Some((action, stream.local_response().map(|r| r.status)));
    });
    let (outer, outer_stream) = pay(&a, "CUST-1", Some(KEY), &[BODY]);
    let inner = (*inner.borrow()).expect("B ran inside A's window");
    let upstream = [inner.0, outer]
        .iter()
        .filter(|a| **a == Action::Continue)
        .count();
    assert_eq!(
        upstream,
        1,
        "inner {inner:?}, outer {outer:?} {:?}",
        outer_stream.local_response()
    );
    // The other got 409 in flight.
    let refused = inner.1.or(outer_stream.local_response().map(|r| r.status));
    assert_eq!(refused, Some(409));
    assert_eq!(metric(&host, "reserved"), 1);
}

#[test]
fn a_full_store_and_a_failing_host_answer_503_never_a_second_execution() {
    let host = Host::new();
    let mut config: Value = serde_json::from_str(&shipped_config()).unwrap();
    config["store"] = json!({"sharedData": {"slots": 2}});
    let plugin = load(&host, &config.to_string());
    for customer in ["CUST-1", "CUST-2"] {
        assert_eq!(
            pay(&plugin, customer, Some(KEY), &[BODY]).0,
            Action::Continue
        );
    }
    let (_, third) = pay(&plugin, "CUST-3", Some(KEY), &[BODY]);
    let (status, body) = problem(&third);
    assert_eq!(status, 503);
    assert_eq!(
        body["type"],
        "urn:banking-filters:problem:idempotency-store-full"
    );
    assert_eq!(metric(&host, "store_full"), 1);

    host.fail_hostcall("proxy_get_shared_data", HostStatus::InternalFailure, 1);
    let (_, failed) = pay(&plugin, "CUST-4", Some(KEY), &[BODY]);
    assert_eq!(problem(&failed).0, 503);
    assert!(plugin.failure().is_none());
}

#[test]
fn a_response_too_large_to_keep_makes_a_repeat_look_it_up() {
    let host = Host::new();
    let mut config: Value = serde_json::from_str(&shipped_config()).unwrap();
    config["maxStoredBodyBytes"] = json!(8);
    let plugin = load(&host, &config.to_string());
    let (_, mut first) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    upstream_answers(&mut first, "201", RESPONSE);
    let (_, repeat) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    let (status, body) = problem(&repeat);
    assert_eq!(status, 409);
    assert_eq!(
        body["type"],
        "urn:banking-filters:problem:idempotency-response-not-kept"
    );
}
