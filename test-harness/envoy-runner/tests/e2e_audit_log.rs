//! The audit-log filter in a real Envoy (two workers), behind the shipped jwt-auth, shipping
//! to a collector process over OTLP/HTTP JSON: requests of mixed outcomes (allowed, refused
//! by jwt-auth with 401 and 403: a local reply from an AUTHN filter still reaches audit-log's
//! `on_log`) give exactly one record each across the workers' chains, the chains verify, a
//! record changed afterwards is named; with the collector switched off the records wait in
//! the buffer and all arrive once it is back.
//!
//! Bounded: at most [`REQUESTS`] x 2 + a few requests, each with a timeout; waits poll
//! counters and the collector, never sleep blindly.

use std::time::{Duration, Instant};

use audit_log::verify;
use demo_services::OtlpCollector;
use envoy_runner::client::Request;
use envoy_runner::fixture::{self, BehindJwtAuth};
use envoy_runner::wasmplugin::{VmEnv, WasmPlugin};
use serde_json::{Value, json};

const REQUESTS: usize = 24;
const CUSTOMER_ID: &str = "CUST-00012345";
const COLLECTOR: &str = "outbound|4318||otel-collector.observability.svc.cluster.local";

/// Shipping to `collector` in small batches; `tweak` changes the rest of the shipped plugin.
fn with_audit_log(
    label: &'static str,
    collector: &OtlpCollector,
    tweak: impl FnOnce(&mut WasmPlugin),
) -> BehindJwtAuth {
    let mut audit = fixture::shipped(&["audit-log"]).remove(0);
    if let Some(config) = audit.plugin_config.as_mut() {
        config["otlp"] = json!({"cluster": COLLECTOR, "batchRecords": 5,
            "bufferRecords": 1000, "flushInterval": "100ms", "timeout": "1s"});
    }
    tweak(&mut audit);
    let address = collector.addr();
    BehindJwtAuth::start_with(
        label,
        vec![audit],
        (REQUESTS * 2 + 20) as u32,
        2,
        CUSTOMER_ID,
        |options| options.with_cluster(COLLECTOR, address),
    )
}

/// The checkpoint key the test hands the filter. In a cluster it comes from a Secret through
/// the proxy's environment (`valueFrom: HOST`); inline here, the filter reads it the same way.
const CHECKPOINT_KEY: &str = "e2e-checkpoint-key-0123456789abcdef";

fn with_checkpoint_key(audit: &mut WasmPlugin) {
    audit.env = vec![VmEnv::Inline(
        "BANKING_AUDIT_CHECKPOINT_KEY".into(),
        CHECKPOINT_KEY.into(),
    )];
    if let Some(config) = audit.plugin_config.as_mut() {
        config["checkpointKeyEnv"] = json!("BANKING_AUDIT_CHECKPOINT_KEY");
        config["checkpointInterval"] = json!("1s");
    }
}

/// The trace every test request carries, for the i-th request a span of its own.
fn traceparent(i: usize) -> String {
    format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", span_id(i))
}

/// The i-th request's span id: hex with letters between short digit groups, which masking
/// leaves alone (a span id of mostly digits could pass for a card number and is not recorded).
fn span_id(i: usize) -> String {
    format!("f{i:02x}cafe{i:02x}badbeef")
}

const PAYMENT: &str = r#"{"instructedAmount": {"amount": "1250.50", "currency": "EUR"},
  "creditorAccount": {"iban": "DE89370400440532013000"},
  "debtorAccount": {"number": "000123456789"},
  "card": {"number": "4111 1111 1111 1111", "expiry": "12/28", "cvv": "987"}}"#;

/// The i-th test request: allowed, no token (401), another customer's id (403), or (every
/// fourth of the allowed) a payment with a body, in turn.
fn request(setup: &BehindJwtAuth, i: usize) -> (Request, u16) {
    let bearer = format!("Bearer {}", setup.token);
    if i % 6 == 3 {
        let payment = Request::post(&format!("/payments/e2e-{i}"))
            .header("authorization", &bearer)
            .header("x-customer-id", CUSTOMER_ID)
            .header("x-banking-operation", "payment.create")
            .header("traceparent", &traceparent(i))
            .header("content-type", "application/json")
            .body(PAYMENT.as_bytes());
        return (payment, 0);
    }
    let base = Request::get(&format!("/accounts/e2e-{i}"))
        .header("x-transaction-id", "0f8fad5b-d9cb-469f-a165-70867728950e")
        .header("x-banking-operation", "account.read")
        .header("traceparent", &traceparent(i));
    match i % 3 {
        0 => (
            base.header("authorization", &bearer)
                .header("x-customer-id", CUSTOMER_ID),
            200,
        ),
        1 => (base.header("x-customer-id", CUSTOMER_ID), 401),
        _ => (
            base.header("authorization", &bearer)
                .header("x-customer-id", "CUST-00099999"),
            403,
        ),
    }
}

/// The test's request records the collector has (the readiness probes' are left out).
fn test_records(collector: &OtlpCollector) -> Vec<Value> {
    collector
        .records()
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(r).ok())
        .filter(|r| {
            r["kind"] == "request" && r["path"].as_str().is_some_and(|p| p.contains("/e2e-"))
        })
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends the [`REQUESTS`] test requests, checking the statuses that are known in advance.
fn send_all(setup: &BehindJwtAuth) {
    for i in 0..REQUESTS {
        let (request, status) = request(setup, i);
        let got = setup.envoy.send(&request).status;
        assert!(
            status == 0 || got == status,
            "request {i}: {got}, not {status}"
        );
    }
}

#[test]
fn every_request_gives_one_shipped_record_and_the_chains_verify() {
    let collector = OtlpCollector::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let setup = with_audit_log("audit_log_records", &collector, with_checkpoint_key);
    let mut statuses = Vec::new();
    for i in 0..REQUESTS {
        let (request, status) = request(&setup, i);
        let got = setup.envoy.send(&request).status;
        if status != 0 {
            assert_eq!(got, status, "request {i}");
        }
        statuses.push(got);
    }
    wait_for("every record at the collector", || {
        test_records(&collector).len() >= REQUESTS
    });
    let records = test_records(&collector);
    assert_eq!(records.len(), REQUESTS, "one record per request, no more");
    for (i, status) in statuses.iter().enumerate() {
        let path = if i % 6 == 3 { "payments" } else { "accounts" };
        let path = format!("/{path}/e2e-{i}");
        let r = records.iter().find(|r| r["path"] == path.as_str()).unwrap();
        assert_eq!(r["status"], *status, "{path}");
        let outcome = match status {
            401 | 403 => "denied",
            s if *s < 400 => "success",
            _ => "failure",
        };
        assert_eq!(r["outcome"], outcome, "{path}");
    }
    let refused = records.iter().find(|r| r["status"] == 401).unwrap();
    assert_eq!(refused["deniedBy"], "jwt-auth");
    assert_eq!(refused["verified"], json!({}));
    let allowed = records.iter().find(|r| r["status"] == 200).unwrap();
    assert_eq!(allowed["verified"]["subject"], "user-4711");
    // A payment's banking context, masked; its security code never recorded.
    let payment = records
        .iter()
        .find(|r| r["path"] == "/payments/e2e-3")
        .unwrap();
    assert_eq!(
        payment["body"],
        json!({"amount": "1250.50", "currency": "EUR",
               "creditorIban": "DE****************3000", "debtorAccount": "****6789",
               "card": {"number": "411111******1111", "expiry": "12/28"}}),
        "{payment}"
    );
    let everything = collector.records().join("\n");
    assert!(!everything.contains("4111 1111 1111 1111") && !everything.contains("\"987\""));

    // Every payload fits OpenTelemetry's schema, and each record's OTLP trace and span ids
    // are those of its request's traceparent, so a trace links to its audit record.
    let report = collector.check_schema().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("OTLP schema check: {}", report.trim());
    let mut linked = 0;
    for payload in collector.payloads() {
        for log in payload["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
            .as_array()
            .unwrap()
        {
            let record: Value =
                serde_json::from_str(log["body"]["stringValue"].as_str().unwrap()).unwrap();
            let Some(path) = record["path"].as_str().filter(|p| p.contains("/e2e-")) else {
                continue;
            };
            let i: usize = path.rsplit('-').next().unwrap().parse().unwrap();
            assert_eq!(log["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736", "{path}");
            assert_eq!(log["spanId"], span_id(i), "{path}");
            linked += 1;
        }
    }
    assert_eq!(linked, REQUESTS);

    // Each worker's chain, checkpoints MAC'd under the key from the environment.
    wait_for("a checkpoint on every chain", || {
        let all = collector.records();
        let report = verify::verify_with_key(
            all.iter().map(String::as_str),
            Some(CHECKPOINT_KEY.as_bytes()),
        );
        report.chains.len() >= 2 && report.findings.is_empty()
    });
    let all = collector.records();
    let report = verify::verify_with_key(
        all.iter().map(String::as_str),
        Some(CHECKPOINT_KEY.as_bytes()),
    );
    assert!(report.macs_checked >= 2, "{report:?}");
    assert!(
        !setup.envoy.envoy.log().contains(CHECKPOINT_KEY),
        "the key is never logged"
    );
    // A record changed at rest is named.
    let mut changed = all.clone();
    let at = changed
        .iter()
        .position(|r| r.contains("\"status\":403"))
        .unwrap();
    changed[at] = changed[at].replace("\"status\":403", "\"status\":200");
    let report = verify::verify(changed.iter().map(String::as_str));
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].kind, "tampered");
    setup.envoy.assert_no_crash();
}

#[test]
fn records_wait_while_the_collector_is_away_and_none_is_lost() {
    let collector = OtlpCollector::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let setup = with_audit_log("audit_log_collector_away", &collector, |_| {});
    collector.set_available(false);
    send_all(&setup);
    wait_for("the filter to retry", || {
        setup
            .envoy
            .envoy
            .stat("wasmcustom.banking_audit_log_batches_retried")
            .unwrap_or(0)
            > 0
    });
    assert!(collector.refused() > 0);
    assert!(
        test_records(&collector).is_empty(),
        "nothing taken while away"
    );
    collector.set_available(true);
    wait_for("the buffered records to arrive", || {
        test_records(&collector).len() >= REQUESTS
    });
    assert_eq!(test_records(&collector).len(), REQUESTS);
    let stat = |name: &str| setup.envoy.envoy.stat(name).unwrap_or(0);
    assert_eq!(stat("wasmcustom.banking_audit_log_records_dropped"), 0);
    let all = collector.records();
    assert_eq!(verify::verify(all.iter().map(String::as_str)).findings, []);
    eprintln!(
        "collector away: {} batches refused, {} retries, {} records shipped, none dropped",
        collector.refused(),
        stat("wasmcustom.banking_audit_log_batches_retried"),
        stat("wasmcustom.banking_audit_log_records_shipped")
    );
    setup.envoy.assert_no_crash();
}

#[test]
fn beyond_the_buffer_bound_drops_are_counted_and_told_on_the_chain() {
    let collector = OtlpCollector::start("127.0.0.1:0".parse().unwrap()).unwrap();
    // Five records in flight and five waiting per worker, at most.
    let setup = with_audit_log("audit_log_buffer_full", &collector, |audit| {
        if let Some(config) = audit.plugin_config.as_mut() {
            config["otlp"]["bufferRecords"] = json!(10);
        }
    });
    collector.set_available(false);
    send_all(&setup);
    let stat = |name: &str| setup.envoy.envoy.stat(name).unwrap_or(0);
    wait_for("drops to be counted", || {
        stat("wasmcustom.banking_audit_log_records_dropped") > 0
    });
    collector.set_available(true);
    // Every record still buffered arrives; each worker's next record (a checkpoint, at the
    // latest after 60 s: here the requests below) tells its gap on the chain.
    for i in 0..2 {
        let (request, _) = request(&setup, i * 3);
        setup.envoy.send(&request);
    }
    let emptied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the buffers to empty", || {
            stat("wasmcustom.banking_audit_log_records_buffered") == 0
        })
    }));
    if emptied.is_err() {
        let stats = setup.envoy.envoy.stats().unwrap();
        panic!(
            "{:?}",
            stats
                .iter()
                .filter(|(n, _)| n.contains("audit"))
                .collect::<Vec<_>>()
        );
    }
    let dropped = stat("wasmcustom.banking_audit_log_records_dropped");
    let shipped = stat("wasmcustom.banking_audit_log_records_shipped");
    let written = stat("wasmcustom.banking_audit_log_records_written");
    assert_eq!(
        shipped + dropped,
        written,
        "each record shipped or counted as dropped"
    );
    let all = collector.records();
    let report = verify::verify(all.iter().map(String::as_str));
    let told: u64 = all
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(r).ok())
        .filter(|r| r["kind"] == "gap")
        .map(|r| r["dropped"].as_u64().unwrap())
        .sum();
    assert!(
        told > 0 && told <= dropped,
        "gap records tell {told} of {dropped}"
    );
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.kind == "gap" || f.kind == "missing"),
        "{:?}",
        report.findings
    );
    // The proxy log has every record, dropped ones included.
    let logged = || {
        let log = setup.envoy.envoy.log();
        log.lines()
            .filter(|l| l.contains("banking-audit {"))
            .count() as u64
    };
    wait_for("every record in the proxy log", || logged() >= written);
    let logged = logged();
    assert_eq!(logged, written);
    eprintln!(
        "buffer full: {written} records written, {shipped} shipped, {dropped} dropped ({told} told by gap records), all {logged} in the proxy log"
    );
    setup.envoy.assert_no_crash();
}
