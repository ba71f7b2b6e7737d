//! The audit-log filter's real .wasm under the emulated host: a record for an allowed request
//! and for one the real jwt-auth refused (through the harness chain), masking in the path,
//! the query and the claimed customer, the chain (genesis, records, checkpoints on the
//! virtual clock) checked by the verifier `audit-verify` uses, shipping answered by the test
//! (200, partial success, 503 with Retry-After, timeout), and a full buffer under both
//! policies.

mod idp;

use std::time::Duration;

use audit_log::verify;
use idp::Idp;
use serde_json::{Value, json};
use test_harness::{Action, Host, LogLevel, Plugin, Stream};

const FILTER: &str = "audit_log";
const COLLECTOR: &str = "outbound|4318||otel-collector.observability.svc.cluster.local";

fn shipped() -> Value {
    envoy_runner::fixture::shipped(&["audit-log"])[0]
        .plugin_config
        .clone()
        .expect("a pluginConfig")
}

fn load(host: &Host, config: &Value) -> Plugin {
    host.load(FILTER, config.to_string())
        .unwrap_or_else(|e| panic!("{e} (run `make wasm`)"))
}

/// Without shipping: records only go to the log.
fn log_only() -> Value {
    let mut config = shipped();
    config.as_object_mut().unwrap().remove("otlp");
    // Kept, masked, so the tests see what masking does to it (the shipped config drops it).
    config["queryString"] = json!("mask");
    config["redactedQueryParameters"] = json!(["token"]);
    config
}

/// The records the plugin logged so far, parsed, in order.
fn records(plugin: &Plugin) -> Vec<Value> {
    plugin
        .logs(LogLevel::Info)
        .iter()
        .filter_map(|line| line.strip_prefix("banking-audit "))
        .map(|r| serde_json::from_str(r).expect("a record is JSON"))
        .collect()
}

fn record_lines(plugin: &Plugin) -> Vec<String> {
    plugin
        .logs(LogLevel::Info)
        .iter()
        .filter_map(|line| line.strip_prefix("banking-audit ").map(str::to_string))
        .collect()
}

/// A request through the plugin alone, as Envoy leaves it at `on_log`.
fn request(plugin: &Plugin, path: &str, status: u16, identity: Option<&str>) -> Stream {
    let mut stream = plugin.stream();
    if let Some(identity) = identity {
        stream.set_property(&["banking.jwt.identity"], identity);
    }
    let action = stream.request_headers(
        &[
            (":method", "POST"),
            (":path", path),
            (":authority", "api.bank.example"),
            ("x-customer-id", "CUST-00012345"),
            ("x-banking-operation", "payment.create"),
            ("x-transaction-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
            ("x-request-id", "7c1a0d3e-0000-4000-8000-000000000001"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("authorization", "Bearer secret.token.value"),
        ],
        true,
    );
    assert_eq!(action, Action::Continue);
    stream.set_property(&["response", "code"], u64::from(status).to_le_bytes());
    stream.set_property(&["response", "code_details"], "via_upstream");
    stream.set_property(&["request", "duration"], 12_000_000u64.to_le_bytes());
    stream.set_property(&["source", "address"], "10.1.2.3:51234");
    stream.response_headers(
        &[
            (":status", &status.to_string()),
            ("x-correlation-id", "a3c1b2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d"),
        ],
        true,
    );
    stream.complete();
    stream
}

const IDENTITY: &str = r#"{"issuer":"https://idp.bank.example","subject":"user-4711","customer":"CUST-00012345","client":"mobile-app","scopes":["payments:write"]}"#;

#[test]
fn an_allowed_request_gives_one_record_with_the_verified_caller_and_masked_client_text() {
    let host = Host::new();
    let plugin = load(&host, &log_only());
    request(
        &plugin,
        "/payments/4111111111111111?token=abc&iban=DE89370400440532013000",
        201,
        Some(IDENTITY),
    );
    let all = records(&plugin);
    assert_eq!(all.len(), 2, "the genesis, then the request");
    assert_eq!(all[0]["kind"], "genesis");
    let r = &all[1];
    assert_eq!(r["kind"], "request");
    assert_eq!(r["verified"]["subject"], "user-4711");
    assert_eq!(r["verified"]["customer"], "CUST-00012345");
    assert_eq!(r["verified"]["client"], "mobile-app");
    assert_eq!(r["claimedCustomer"], "CUST-00012345");
    assert_eq!(r["operation"], "payment.create");
    assert_eq!(r["method"], "POST");
    assert_eq!(
        r["path"],
        "/payments/411111******1111?token=***&iban=DE****************3000"
    );
    assert_eq!(r["status"], 201);
    assert_eq!(r["outcome"], "success");
    assert_eq!(r["durationMs"], 12);
    assert_eq!(r["sourceAddress"], "10.1.2.3:51234");
    assert_eq!(r["correlationId"], "a3c1b2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d");
    assert_eq!(r["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(r["spanId"], "00f067aa0ba902b7");
    let line = record_lines(&plugin).join("\n");
    assert!(!line.contains("secret.token.value"), "no token is recorded");
    assert!(!line.contains("4111111111111111"), "no full card number");
    assert_eq!(host.metric("banking_audit_log_records_written"), Some(2));
}

#[test]
fn a_request_the_real_jwt_auth_refused_is_recorded_as_denied_by_it() {
    let host = Host::new();
    let idp = Idp::new();
    let jwt = envoy_runner::fixture::shipped(&["jwt-auth"])[0]
        .configuration_json()
        .unwrap();
    let chain = host
        .chain(&[("jwt_auth", &jwt), (FILTER, &log_only().to_string())])
        .unwrap_or_else(|e| panic!("{e}"));
    idp.serve_first_fetch(&host, chain.plugin(0));
    let mut stream = chain.stream();
    stream.request_headers(
        &[
            (":method", "POST"),
            (":path", "/payments"),
            (":authority", "api.bank.example"),
            ("x-customer-id", "CUST-00012345"),
        ],
        true,
    );
    assert_eq!(stream.local_response().map(|r| r.status), Some(401));
    stream.complete();
    let all = records(chain.plugin(1));
    let r = all.last().expect("a record for the refused request");
    assert_eq!(r["kind"], "request");
    assert_eq!(r["status"], 401);
    assert_eq!(r["outcome"], "denied");
    assert_eq!(r["deniedBy"], "jwt-auth");
    assert_eq!(r["verified"], json!({}), "no one was verified");
    assert_eq!(r["claimedCustomer"], "CUST-00012345");
}

#[test]
fn the_chain_verifies_and_checkpoints_come_on_the_virtual_clock() {
    let host = Host::new();
    let plugin = load(&host, &log_only());
    for status in [200, 403, 500] {
        request(&plugin, "/accounts", status, Some(IDENTITY));
    }
    host.advance(Duration::from_secs(61));
    let lines = record_lines(&plugin);
    let kinds: Vec<Value> = records(&plugin).iter().map(|r| r["kind"].clone()).collect();
    assert_eq!(
        kinds,
        ["genesis", "request", "request", "request", "checkpoint"]
    );
    let report = verify::verify(lines.iter().map(String::as_str));
    assert_eq!(report.findings, []);
    // A second worker keeps its own chain.
    let other = load(&host, &log_only());
    request(&other, "/accounts", 200, None);
    let mut both = lines.clone();
    both.extend(record_lines(&other));
    let report = verify::verify(both.iter().map(String::as_str));
    assert_eq!(report.chains.len(), 2);
    assert_eq!(report.findings, []);
    // The VM shuts down: its chain ends with an `end` record, and still verifies.
    assert!(plugin.shutdown().unwrap());
    let closed = record_lines(&plugin);
    let last: Value = serde_json::from_str(closed.last().unwrap()).unwrap();
    assert_eq!(last["kind"], "end");
    assert_eq!(last["count"], 5);
    assert_eq!(
        verify::verify(closed.iter().map(String::as_str)).findings,
        []
    );
    // An edited record is named.
    let mut edited = lines;
    edited[2] = edited[2].replace("\"status\":403", "\"status\":200");
    let report = verify::verify(edited.iter().map(String::as_str));
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].kind, "tampered");
}

fn shipping(batch: u32, buffer: u32, on_full: &str) -> Value {
    let mut config = shipped();
    config["otlp"] = json!({"cluster": COLLECTOR, "batchRecords": batch,
        "bufferRecords": buffer, "flushInterval": "1s", "onBufferFull": on_full});
    config
}

/// The bodies of the batches the plugin sent, answered with `status` (and `headers`).
fn answer_batches(
    plugin: &Plugin,
    status: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<Value> {
    let mut sent = Vec::new();
    for call in plugin.pending_http_calls() {
        assert_eq!(call.upstream, COLLECTOR);
        assert_eq!(call.header(":path"), Some(b"/v1/logs".as_slice()));
        assert_eq!(
            call.header(":authority"),
            Some(b"otel-collector.observability.svc.cluster.local".as_slice())
        );
        sent.push(serde_json::from_slice(&call.body).expect("OTLP JSON"));
        plugin.respond_http_call(call.token, status, headers, body);
    }
    sent
}

fn bodies(batch: &Value) -> Vec<String> {
    batch["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["body"]["stringValue"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn batches_go_to_the_collector_and_wait_for_it_when_it_asks() {
    let host = Host::new();
    let plugin = load(&host, &shipping(3, 100, "dropOldest"));
    request(&plugin, "/accounts", 200, Some(IDENTITY));
    request(&plugin, "/accounts", 200, Some(IDENTITY));
    // Three records (genesis and two requests) fill a batch: sent at once.
    let sent = answer_batches(&plugin, 200, &[], b"{}");
    assert_eq!(sent.len(), 1);
    assert_eq!(bodies(&sent[0]), record_lines(&plugin));
    assert_eq!(host.metric("banking_audit_log_records_shipped"), Some(3));

    // The collector is overloaded: 503 with Retry-After 5. Nothing is resent before then.
    request(&plugin, "/accounts", 200, Some(IDENTITY));
    host.advance(Duration::from_secs(1));
    assert_eq!(
        answer_batches(&plugin, 503, &[("retry-after", "5")], b"").len(),
        1
    );
    host.advance(Duration::from_secs(3));
    assert!(plugin.pending_http_calls().is_empty(), "waits as asked");
    host.advance(Duration::from_secs(3));
    // Then it takes the batch, all but one record (partial success).
    let sent = answer_batches(
        &plugin,
        200,
        &[],
        br#"{"partialSuccess":{"rejectedLogRecords":"1"}}"#,
    );
    assert_eq!(sent.len(), 1);
    assert_eq!(host.metric("banking_audit_log_records_rejected"), Some(1));
    assert_eq!(host.metric("banking_audit_log_batches_retried"), Some(1));

    // No answer at all (the call fails): retried after a backoff, then taken.
    request(&plugin, "/accounts", 200, Some(IDENTITY));
    host.advance(Duration::from_secs(1));
    for call in plugin.pending_http_calls() {
        plugin.fail_http_call(call.token);
    }
    host.advance(Duration::from_secs(2));
    assert_eq!(answer_batches(&plugin, 200, &[], b"{}").len(), 1);
    assert_eq!(host.metric("banking_audit_log_records_buffered"), Some(0));
    // A 400 is never resent.
    request(&plugin, "/accounts", 200, Some(IDENTITY));
    host.advance(Duration::from_secs(1));
    assert_eq!(answer_batches(&plugin, 400, &[], b"").len(), 1);
    host.advance(Duration::from_secs(5));
    assert!(plugin.pending_http_calls().is_empty());
    assert!(plugin.failure().is_none());
}

#[test]
fn a_full_buffer_drops_its_oldest_with_a_gap_record_or_refuses_requests() {
    let host = Host::new();
    let plugin = load(&host, &shipping(5, 5, "dropOldest"));
    // The first batch (genesis and 4 requests) goes out and is never answered: the collector
    // hangs. Five more records arrive while it hangs.
    for _ in 0..9 {
        request(&plugin, "/accounts", 200, Some(IDENTITY));
    }
    let dropped = host.metric("banking_audit_log_records_dropped").unwrap();
    assert!(dropped > 0);
    let gaps: Vec<Value> = records(&plugin)
        .into_iter()
        .filter(|r| r["kind"] == "gap")
        .collect();
    assert!(!gaps.is_empty());
    let told: u64 = gaps.iter().map(|g| g["dropped"].as_u64().unwrap()).sum();
    assert!(told <= dropped && told > 0, "told {told} of {dropped}");
    // The log lines still hold every record: the verifier over them finds the gaps named.
    let report = verify::verify(record_lines(&plugin).iter().map(String::as_str));
    assert!(
        report.findings.iter().all(|f| f.kind == "gap"),
        "{:?}",
        report.findings
    );
    // The collector comes back: every record is either shipped once or counted as dropped,
    // never both, never neither (an answer acknowledges exactly what its batch sent).
    let mut shipped: Vec<String> = Vec::new();
    for _ in 0..10 {
        for batch in answer_batches(&plugin, 200, &[], b"{}") {
            shipped.extend(bodies(&batch));
        }
        host.advance(Duration::from_secs(1));
    }
    let dropped = host.metric("banking_audit_log_records_dropped").unwrap();
    let logged = record_lines(&plugin);
    let mut unique = shipped.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), shipped.len(), "nothing shipped twice");
    assert_eq!(shipped.len() as u64 + dropped, logged.len() as u64);
    assert!(shipped.iter().all(|r| logged.contains(r)));

    let host = Host::new();
    let plugin = load(&host, &shipping(5, 5, "reject"));
    for _ in 0..4 {
        request(&plugin, "/accounts", 200, Some(IDENTITY));
    }
    // Genesis and 4 records: full, and the batch in flight is not answered.
    let mut refused = plugin.stream();
    let action = refused.request_headers(&[(":method", "GET"), (":path", "/accounts")], true);
    assert_eq!(action, Action::Pause);
    let reply = refused.local_response().unwrap();
    assert_eq!(reply.status, 503);
    assert!(reply.body_text().contains("audit-unavailable"));
    assert_eq!(host.metric("banking_audit_log_requests_refused"), Some(1));
    // Its own record waits with the others: refusing never pushes a waiting record out.
    refused.complete();
    assert_eq!(host.metric("banking_audit_log_records_dropped"), Some(0));
    assert_eq!(
        records(&plugin).last().unwrap()["status"],
        503,
        "the refusal is recorded too"
    );
}

/// [`log_only`] reading payment bodies.
fn with_body_fields() -> Value {
    let mut config = log_only();
    config["body"] = json!({
        "routes": [{"pathPrefix": "/payments", "methods": ["POST"]}],
        "fields": [
            {"name": "amount", "pointer": "/instructedAmount/amount"},
            {"name": "currency", "pointer": "/instructedAmount/currency"},
            {"name": "creditorIban", "pointer": "/creditorAccount/iban"},
            {"name": "debtorAccount", "pointer": "/debtorAccount/number", "mask": "last4"},
            {"name": "card", "pointer": "/card"}
        ],
        "dropFields": ["otp"],
        "maxBodyBytes": 2048
    });
    config
}

/// A request with a body, sent in `chunks`; every chunk must pass at once.
fn request_with_body(plugin: &Plugin, path: &str, chunks: &[&str]) -> Stream {
    let mut stream = plugin.stream();
    let headers = [
        (":method", "POST"),
        (":path", path),
        (":authority", "api.bank.example"),
        ("content-type", "application/json"),
    ];
    assert_eq!(stream.request_headers(&headers, false), Action::Continue);
    for (i, chunk) in chunks.iter().enumerate() {
        let action = stream.request_body(chunk.as_bytes(), i + 1 == chunks.len());
        assert_eq!(action, Action::Continue, "the body is never held back");
    }
    stream.set_property(&["response", "code"], 201u64.to_le_bytes());
    stream.set_property(&["route_name"], "payments-v1");
    stream.response_headers(&[(":status", "201")], true);
    stream.complete();
    stream
}

const PAYMENT_BODY: &str = r#"{"instructedAmount": {"amount": 1250.50, "currency": "EUR"},
  "creditorAccount": {"iban": "DE89 3704 0044 0532 0130 00", "name": "Jane Doe"},
  "debtorAccount": {"number": "000123456789"},
  "card": {"number": "4111111111111111", "expiry": "12/28", "cvv": "987",
           "pinBlock": "0412AC89FFFF0000", "OTP": "552211"},
  "remittance": "card 5500 0000 0000 0004"}"#;

#[test]
fn payment_bodies_give_masked_banking_context_and_never_a_security_code() {
    let host = Host::new();
    let plugin = load(&host, &with_body_fields());
    // In three chunks, as a client may send it.
    let (a, rest) = PAYMENT_BODY.split_at(40);
    let (b, c) = rest.split_at(120);
    request_with_body(&plugin, "/payments", &[a, b, c]);
    let all = records(&plugin);
    let r = all.last().unwrap();
    assert_eq!(r["route"], "payments-v1");
    assert_eq!(
        r["body"],
        json!({
            "amount": "1250.50",
            "currency": "EUR",
            "creditorIban": "DE****************3000",
            "debtorAccount": "****6789",
            "card": {"number": "411111******1111", "expiry": "12/28"},
        }),
        "{r}"
    );
    let logged = record_lines(&plugin).join("\n");
    for secret in [
        "4111111111111111",
        "\"987\"",
        "0412AC89",
        "552211",
        "0532 0130",
    ] {
        assert!(!logged.contains(secret), "{secret} in {logged}");
    }
    // Another route's body is not read; a body past maxBodyBytes or not JSON says so.
    request_with_body(&plugin, "/accounts/search", &[PAYMENT_BODY]);
    assert!(records(&plugin).last().unwrap().get("body").is_none());
    let large = format!(r#"{{"pad": "{}"}}"#, "x".repeat(3000));
    request_with_body(&plugin, "/payments", &[&large[..1500], &large[1500..]]);
    assert_eq!(records(&plugin).last().unwrap()["bodyUnread"], "too-large");
    request_with_body(
        &plugin,
        "/payments",
        &["amount=12.50&iban=DE89370400440532013000"],
    );
    assert_eq!(records(&plugin).last().unwrap()["bodyUnread"], "not-json");
    // Two amounts: which one the service took is unknown, so neither is recorded.
    request_with_body(
        &plugin,
        "/payments",
        &[r#"{"instructedAmount": {"amount": "1.00", "amount": "9000.00"}}"#],
    );
    assert_eq!(
        records(&plugin).last().unwrap()["bodyUnread"],
        "duplicate-member"
    );
    assert!(plugin.failure().is_none());

    // A pointer at a security code is refused at configure, naming the field.
    let mut bad = with_body_fields();
    bad["body"]["fields"][0]["pointer"] = json!("/card/CVV2");
    let err = host.load(FILTER, bad.to_string()).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("body.fields[0].pointer"), "{err}");
}

const CHECKPOINT_KEY: &str = "k3y-for-the-audit-checkpoints-0123456789";

#[test]
fn with_a_checkpoint_key_from_the_environment_every_checkpoint_carries_a_mac() {
    let mut config = log_only();
    config["checkpointKeyEnv"] = json!("BANKING_AUDIT_CHECKPOINT_KEY");
    // Named but not set: refused, naming the field.
    let host = Host::new();
    let err = host
        .load(FILTER, config.to_string())
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("checkpointKeyEnv"), "{err}");

    let host = Host::new();
    host.set_env("BANKING_AUDIT_CHECKPOINT_KEY", CHECKPOINT_KEY);
    let plugin = load(&host, &config);
    request(&plugin, "/accounts", 200, Some(IDENTITY));
    host.advance(Duration::from_secs(61));
    request(&plugin, "/accounts", 403, Some(IDENTITY));
    assert!(plugin.shutdown().unwrap());
    let lines = record_lines(&plugin);
    assert!(
        !lines.join("\n").contains(CHECKPOINT_KEY),
        "the key is never logged"
    );
    let report = verify::verify_with_key(
        lines.iter().map(String::as_str),
        Some(CHECKPOINT_KEY.as_bytes()),
    );
    assert_eq!(report.findings, []);
    assert_eq!(report.macs_checked, 2, "the checkpoint and the end record");
    // The same chain checked under another key: every MAC is named.
    let wrong = verify::verify_with_key(
        lines.iter().map(String::as_str),
        Some(b"not-the-key-not-the-key-not-the-key!"),
    );
    let kinds: Vec<&str> = wrong.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, ["checkpoint-mac", "checkpoint-mac"]);
}

#[test]
fn requests_are_counted_by_configured_operation_and_outcome() {
    let host = Host::new();
    let mut config = shipping(2, 100, "dropOldest");
    config["metricOperations"] = json!(["payment.create"]);
    let plugin = load(&host, &config);
    for status in [201, 403, 502, 201] {
        request(&plugin, "/payments", status, Some(IDENTITY));
    }
    let mut other = plugin.stream();
    other.request_headers(
        &[
            (":method", "GET"),
            (":path", "/accounts"),
            ("x-banking-operation", "made.up.by.a.client"),
        ],
        true,
    );
    other.set_property(&["response", "code"], 200u64.to_le_bytes());
    other.complete();
    let m = |name: &str| host.metric(&format!("banking_audit_log_requests_{name}"));
    assert_eq!(m("payment_create_success"), Some(2));
    assert_eq!(m("payment_create_denied"), Some(1));
    assert_eq!(m("payment_create_failure"), Some(1));
    assert_eq!(m("other_success"), Some(1));
    assert!(
        host.metrics()
            .iter()
            .all(|(name, _, _)| !name.contains("made")),
        "a client's header never names a metric"
    );
    // The collector answers 250 ms after each batch: the latency is recorded per batch.
    host.advance(Duration::from_millis(250));
    let answered = answer_batches(&plugin, 200, &[], b"{}");
    assert!(!answered.is_empty());
    let latencies = host.histogram("banking_audit_log_ship_latency_ms").unwrap();
    assert_eq!(latencies.len(), answered.len());
    assert!(latencies.iter().all(|ms| *ms >= 250), "{latencies:?}");
}

#[test]
fn records_waiting_at_shutdown_are_shipped_before_the_vm_goes() {
    let host = Host::new();
    let plugin = load(&host, &shipping(2, 100, "dropOldest"));
    // Genesis and a request fill a batch, which the collector does not answer yet; two more
    // requests wait behind it.
    for _ in 0..3 {
        request(&plugin, "/accounts", 200, Some(IDENTITY));
    }
    assert_eq!(plugin.pending_http_calls().len(), 1);
    // Shutting down: the VM defers (the end record joins the wait) and keeps shipping.
    assert!(
        !plugin.shutdown().unwrap(),
        "the VM waits for its records to go"
    );
    let mut shipped = Vec::new();
    let mut done = false;
    for _ in 0..5 {
        for batch in answer_batches(&plugin, 200, &[], b"{}") {
            shipped.extend(bodies(&batch));
        }
        done = plugin.shutdown().unwrap();
        if done {
            break;
        }
        host.advance(Duration::from_millis(100));
    }
    assert!(done, "done once everything is shipped");
    assert_eq!(
        shipped,
        record_lines(&plugin),
        "every record, the end record last"
    );
    let last: Value = serde_json::from_str(shipped.last().unwrap()).unwrap();
    assert_eq!(last["kind"], "end");
}
