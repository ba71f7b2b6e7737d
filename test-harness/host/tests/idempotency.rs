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

// ---- the Redis store, through Webdis ------------------------------------------------------

use envoy_runner::redis::WEBDIS_CLUSTER as WEBDIS;

fn redis_config() -> String {
    let shipped = envoy_runner::fixture::shipped(&["idempotency"]).remove(0);
    envoy_runner::redis::with_redis_store(shipped, "200ms")
        .configuration_json()
        .expect("a pluginConfig")
}

/// Redis behind Webdis 0.1.9, as the filter's calls see it with `?type=application/octet-stream`:
/// a value raw, a status `+OK`, an integer in digits, a nil 404, a command outside the ACL 403,
/// Redis down 503. Expiry is not modelled (the tests stay within the retention).
#[derive(Default)]
struct Webdis {
    values: RefCell<std::collections::HashMap<String, Vec<u8>>>,
    /// Commands answered, in order (`SET`, `GET`, ...).
    commands: RefCell<Vec<String>>,
    redis_down: std::cell::Cell<bool>,
}

impl Webdis {
    /// Answers every call the filter has waiting; returns how many.
    fn answer(&self, plugin: &Plugin) -> usize {
        let calls = plugin.pending_http_calls();
        for call in &calls {
            assert_eq!(call.upstream, WEBDIS);
            assert_eq!(
                call.header(":authority"),
                Some(b"webdis.payments.svc.cluster.local".as_slice())
            );
            assert_eq!(call.timeout, Some(Duration::from_millis(200)));
            let (status, body) = self.run(call);
            plugin.respond_http_call(call.token, status, &[], &body);
        }
        calls.len()
    }

    fn run(&self, call: &test_harness::HttpCall) -> (u32, Vec<u8>) {
        let path = String::from_utf8(call.header(":path").unwrap().to_vec()).unwrap();
        let path = path
            .strip_suffix("?type=application/octet-stream")
            .expect("every call asks for the raw value");
        let mut args: Vec<Vec<u8>> = path
            .trim_start_matches('/')
            .split('/')
            .map(|a| a.as_bytes().to_vec())
            .collect();
        if call.header(":method") == Some(b"PUT".as_slice()) {
            args.push(call.body.clone());
        }
        let command = String::from_utf8(args.remove(0)).unwrap();
        self.commands.borrow_mut().push(command.clone());
        if self.redis_down.get() {
            return (503, Vec::new());
        }
        let key = String::from_utf8(args[0].clone()).unwrap();
        let mut values = self.values.borrow_mut();
        match (command.as_str(), args.len()) {
            ("SET", 5) if args[2] == b"NX" && args[3] == b"PX" => match values.entry(key) {
                std::collections::hash_map::Entry::Occupied(_) => (404, Vec::new()),
                std::collections::hash_map::Entry::Vacant(free) => {
                    free.insert(args[1].clone());
                    (200, b"+OK".to_vec())
                }
            },
            ("GET", 1) => match values.get(&key) {
                Some(v) => (200, v.clone()),
                None => (404, Vec::new()),
            },
            ("PSETEX", 3) => {
                values.insert(key, args[2].clone());
                (200, b"+OK".to_vec())
            }
            ("DEL", 1) => (
                200,
                u8::from(values.remove(&key).is_some())
                    .to_string()
                    .into_bytes(),
            ),
            ("SET" | "GET" | "PSETEX" | "DEL", _) => (200, b"-ERR syntax error".to_vec()),
            _ => (403, Vec::new()),
        }
    }

    fn commands(&self) -> Vec<String> {
        self.commands.borrow_mut().drain(..).collect()
    }
}

/// A payment through the Redis store: the request phase, then Webdis answers until the filter
/// has decided.
fn pay_redis(plugin: &Plugin, webdis: &Webdis, customer: &str, body: &[u8]) -> (bool, Stream) {
    let (action, stream) = pay(plugin, customer, Some(KEY), &[body]);
    assert_eq!(action, Action::Pause, "the body waits for Redis");
    while webdis.answer(plugin) > 0 {}
    let upstream = stream.resumed() && stream.local_response().is_none();
    (upstream, stream)
}

#[test]
fn with_redis_a_payment_runs_once_and_its_repeat_is_replayed_in_two_round_trips_each() {
    let host = Host::new();
    let plugin = load(&host, &redis_config());
    let webdis = Webdis::default();
    let (upstream, mut first) = pay_redis(&plugin, &webdis, "CUST-1", BODY);
    assert!(upstream, "{:?}", plugin.logs(test_harness::LogLevel::Warn));
    assert_eq!(webdis.commands(), ["SET"]);
    upstream_answers(&mut first, "201", RESPONSE);
    // The stream is over; its outcome is written by a call the root owns.
    drop(first);
    assert_eq!(webdis.answer(&plugin), 1);
    assert_eq!(webdis.commands(), ["PSETEX"]);
    assert_eq!(metric(&host, "stored"), 1);

    let (upstream, repeat) = pay_redis(&plugin, &webdis, "CUST-1", BODY);
    assert!(!upstream);
    assert_eq!(webdis.commands(), ["SET", "GET"]);
    let reply = repeat.local_response().unwrap();
    assert_eq!((reply.status, reply.body.as_slice()), (201, RESPONSE));
    assert!(
        reply
            .headers
            .iter()
            .any(|(n, v)| n == "idempotent-replayed" && v == b"true")
    );
    // Redis holds the record under the configured prefix, never the client's key itself.
    let keys: Vec<String> = webdis.values.borrow().keys().cloned().collect();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].starts_with("banking:idempotency:idempotency:"));
    assert!(!keys[0].contains("8e03978e"));

    let (upstream, other) = pay_redis(&plugin, &webdis, "CUST-1", br#"{"amount":"1.00"}"#);
    assert!(!upstream);
    assert_eq!(problem(&other).0, 422);
}

#[test]
fn with_redis_a_repeat_in_flight_gets_409_and_a_later_filters_refusal_frees_the_key() {
    let host = Host::new();
    let plugin = load(&host, &redis_config());
    let webdis = Webdis::default();
    let (upstream, mut first) = pay_redis(&plugin, &webdis, "CUST-1", BODY);
    assert!(upstream);
    let (upstream, repeat) = pay_redis(&plugin, &webdis, "CUST-1", BODY);
    assert!(!upstream);
    let (status, body) = problem(&repeat);
    assert_eq!(status, 409);
    assert_eq!(
        body["type"],
        "urn:banking-filters:problem:idempotency-request-in-flight"
    );
    // Istio's RBAC, after this filter, refuses the first: nothing was executed.
    first.set_property(
        &["response", "code_details"],
        "rbac_access_denied_matched_policy[none]",
    );
    first.response_headers(&[(":status", "403")], true);
    first.complete();
    webdis.commands();
    assert_eq!(webdis.answer(&plugin), 1);
    assert_eq!(webdis.commands(), ["DEL"]);
    assert_eq!(metric(&host, "released"), 1);
    let (upstream, _retry) = pay_redis(&plugin, &webdis, "CUST-1", BODY);
    assert!(upstream, "the retry executes");
}

#[test]
fn with_redis_a_key_freed_between_reserve_and_read_is_reserved_again() {
    let host = Host::new();
    let plugin = load(&host, &redis_config());
    let webdis = Webdis::default();
    let (_, _first) = pay_redis(&plugin, &webdis, "CUST-1", BODY);
    let (action, stream) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    assert_eq!(action, Action::Pause);
    webdis.commands();
    // SET finds the key taken; before the GET, the first is released.
    assert_eq!(webdis.answer(&plugin), 1);
    webdis.values.borrow_mut().clear();
    while webdis.answer(&plugin) > 0 {}
    assert_eq!(webdis.commands(), ["SET", "GET", "SET"]);
    assert!(stream.resumed() && stream.local_response().is_none());
}

#[test]
fn with_redis_unreachable_slow_or_refusing_the_payment_is_refused_503_and_never_forwarded() {
    let host = Host::new();
    let plugin = load(&host, &redis_config());
    let webdis = Webdis::default();
    let check = |stream: &Stream, what: &str| {
        let (status, body) = problem(stream);
        assert_eq!(status, 503, "{what}");
        assert_eq!(
            body["type"], "urn:banking-filters:problem:idempotency-store-unavailable",
            "{what}"
        );
        let reply = stream.local_response().unwrap();
        assert!(
            reply.headers.iter().any(|(n, _)| n == "retry-after"),
            "{what}"
        );
        assert!(!stream.resumed(), "{what}: never forwarded");
    };
    // Webdis answers, Redis behind it is down.
    webdis.redis_down.set(true);
    let (_, down) = pay_redis(&plugin, &webdis, "CUST-1", BODY);
    check(&down, "Redis down");
    // No answer in time (Envoy reports a timeout or a reset as a response with no headers).
    let (_, slow) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    for call in plugin.pending_http_calls() {
        plugin.fail_http_call(call.token);
    }
    check(&slow, "timeout");
    // The ACL refuses the command, or a Redis error comes back.
    let (_, acl) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    for call in plugin.pending_http_calls() {
        plugin.respond_http_call(call.token, 403, &[], b"");
    }
    check(&acl, "ACL");
    let (_, error) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    for call in plugin.pending_http_calls() {
        plugin.respond_http_call(call.token, 200, &[], b"-ERR unknown command");
    }
    check(&error, "Redis error");
    // The callout cannot even be dispatched.
    host.fail_hostcall("proxy_http_call", HostStatus::BadArgument, 1);
    let (action, refused) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    assert_eq!(action, Action::Pause);
    check(&refused, "dispatch refused");
    assert_eq!(metric(&host, "store_unavailable"), 5);
    assert_eq!(metric(&host, "reserved"), 0);
    assert!(plugin.failure().is_none());
}

#[test]
fn with_redis_a_failed_write_leaves_the_key_reserved_and_counted() {
    let host = Host::new();
    let plugin = load(&host, &redis_config());
    let webdis = Webdis::default();
    let (_, mut first) = pay_redis(&plugin, &webdis, "CUST-1", BODY);
    upstream_answers(&mut first, "201", RESPONSE);
    for call in plugin.pending_http_calls() {
        plugin.fail_http_call(call.token);
    }
    assert_eq!(metric(&host, "settle_failed"), 1);
    // The reservation stays: in its lease a repeat is in flight, after it the outcome is
    // unknown; never a second execution.
    let (upstream, repeat) = pay_redis(&plugin, &webdis, "CUST-1", BODY);
    assert!(!upstream);
    assert_eq!(problem(&repeat).0, 409);
    host.advance(Duration::from_secs(61));
    let (_, later) = pay_redis(&plugin, &webdis, "CUST-1", BODY);
    assert_eq!(
        problem(&later).1["type"],
        "urn:banking-filters:problem:idempotency-outcome-unknown"
    );
}

#[test]
fn a_payment_without_a_body_waits_on_its_headers_for_redis() {
    let host = Host::new();
    let plugin = load(&host, &redis_config());
    let webdis = Webdis::default();
    let mut stream = plugin.stream();
    stream.set_property(&["banking.jwt.identity"], identity("CUST-1"));
    let action = stream.request_headers(
        &[
            (":method", "POST"),
            (":path", "/payments"),
            (":authority", "api.bank.example"),
            ("idempotency-key", KEY),
        ],
        true,
    );
    assert_eq!(
        action,
        Action::Pause,
        "nothing goes on before Redis answers"
    );
    assert!(!stream.resumed());
    while webdis.answer(&plugin) > 0 {}
    assert!(stream.resumed() && stream.local_response().is_none());
    assert_eq!(webdis.commands(), ["SET"]);
}

/// A payment whose body ends with trailers (chunked, with a trailer section).
fn pay_with_trailers(plugin: &Plugin, customer: &str) -> (Action, Stream) {
    let mut stream = plugin.stream();
    stream.set_property(&["banking.jwt.identity"], identity(customer));
    let headers = [
        (":method", "POST"),
        (":path", "/payments"),
        (":authority", "api.bank.example"),
        ("content-type", "application/json"),
        ("x-customer-id", customer),
        ("idempotency-key", KEY),
    ];
    assert_eq!(stream.request_headers(&headers, false), Action::Continue);
    let (head, tail) = BODY.split_at(12);
    assert_eq!(stream.request_body(head, false), Action::Pause);
    assert_eq!(stream.request_body(tail, false), Action::Pause);
    let action = stream.request_trailers(&[("x-checksum", "abc")]);
    (action, stream)
}

#[test]
fn a_payment_with_trailers_is_decided_at_its_trailers_never_let_through_unreserved() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    let (action, mut first) = pay_with_trailers(&plugin, "CUST-1");
    assert_eq!(action, Action::Continue);
    assert_eq!(metric(&host, "reserved"), 1);
    upstream_answers(&mut first, "201", RESPONSE);
    // The same payment, sent without trailers, is the same fingerprint: replayed.
    let (_, plain) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    assert_eq!(plain.local_response().map(|r| r.status), Some(201));
    let (action, repeat) = pay_with_trailers(&plugin, "CUST-1");
    assert_eq!(action, Action::Pause);
    assert_eq!(repeat.local_response().map(|r| r.status), Some(201));

    // With Redis, the trailers wait for the reservation too.
    let host = Host::new();
    let plugin = load(&host, &redis_config());
    let webdis = Webdis::default();
    let (action, stream) = pay_with_trailers(&plugin, "CUST-1");
    assert_eq!(action, Action::Pause);
    assert!(!stream.resumed());
    while webdis.answer(&plugin) > 0 {}
    assert!(stream.resumed() && stream.local_response().is_none());
}

#[test]
fn with_redis_a_reservation_whose_request_went_away_is_released_by_the_root() {
    let host = Host::new();
    let plugin = load(&host, &redis_config());
    let webdis = Webdis::default();
    let (action, mut gone) = pay(&plugin, "CUST-1", Some(KEY), &[BODY]);
    assert_eq!(action, Action::Pause);
    // The client goes away before Redis answers; Redis applies the SET all the same.
    gone.complete();
    assert_eq!(
        webdis.answer(&plugin),
        1,
        "the SET is answered after the stream"
    );
    assert_eq!(webdis.answer(&plugin), 1, "then the root's DEL");
    assert_eq!(webdis.commands(), ["SET", "DEL"]);
    assert_eq!(metric(&host, "released"), 1);
    let (upstream, _retry) = pay_redis(&plugin, &webdis, "CUST-1", BODY);
    assert!(
        upstream,
        "the retry executes: the first never went upstream"
    );
}

#[test]
fn with_redis_the_root_finishes_its_writes_before_it_shuts_down() {
    let host = Host::new();
    let plugin = load(&host, &redis_config());
    let webdis = Webdis::default();
    let (_, mut first) = pay_redis(&plugin, &webdis, "CUST-1", BODY);
    upstream_answers(&mut first, "201", RESPONSE);
    assert!(!plugin.shutdown().unwrap(), "a write is in flight");
    assert_eq!(webdis.answer(&plugin), 1);
    assert_eq!(metric(&host, "stored"), 1);
    assert!(
        plugin.shutdown().unwrap(),
        "done once the write has answered"
    );
}
