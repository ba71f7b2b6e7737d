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
use serde_json::{Value, json};

const REQUESTS: usize = 24;
const CUSTOMER_ID: &str = "CUST-00012345";
const COLLECTOR: &str = "outbound|4318||otel-collector.observability.svc.cluster.local";

fn with_audit_log(label: &'static str, collector: &OtlpCollector) -> BehindJwtAuth {
    let mut audit = fixture::shipped(&["audit-log"]).remove(0);
    if let Some(config) = audit.plugin_config.as_mut() {
        config["otlp"] = json!({"cluster": COLLECTOR, "batchRecords": 5,
            "bufferRecords": 1000, "flushInterval": "100ms", "timeout": "1s"});
    }
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

/// The i-th test request: allowed, no token (401) or another customer's id (403) in turn.
fn request(setup: &BehindJwtAuth, i: usize) -> (Request, u16) {
    let base = Request::get(&format!("/accounts/e2e-{i}"))
        .header("x-transaction-id", "0f8fad5b-d9cb-469f-a165-70867728950e")
        .header("x-banking-operation", "account.read");
    let bearer = format!("Bearer {}", setup.token);
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
            r["kind"] == "request"
                && r["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/accounts/e2e-"))
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

#[test]
fn every_request_gives_one_shipped_record_and_the_chains_verify() {
    let collector = OtlpCollector::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let setup = with_audit_log("audit_log_records", &collector);
    for i in 0..REQUESTS {
        let (request, status) = request(&setup, i);
        assert_eq!(setup.envoy.send(&request).status, status, "request {i}");
    }
    wait_for("every record at the collector", || {
        test_records(&collector).len() >= REQUESTS
    });
    let records = test_records(&collector);
    assert_eq!(records.len(), REQUESTS, "one record per request, no more");
    for (status, outcome) in [(200, "success"), (401, "denied"), (403, "denied")] {
        let n = records.iter().filter(|r| r["status"] == status).count();
        assert_eq!(n, REQUESTS / 3, "{status}");
        assert!(
            records
                .iter()
                .filter(|r| r["status"] == status)
                .all(|r| r["outcome"] == outcome)
        );
    }
    let refused = records.iter().find(|r| r["status"] == 401).unwrap();
    assert_eq!(refused["deniedBy"], "jwt-auth");
    assert_eq!(refused["verified"], json!({}));
    let allowed = records.iter().find(|r| r["status"] == 200).unwrap();
    assert_eq!(allowed["verified"]["subject"], "user-4711");

    let all = collector.records();
    let report = verify::verify(all.iter().map(String::as_str));
    assert!(
        report.chains.len() >= 2,
        "a chain per worker: {:?}",
        report.chains
    );
    assert_eq!(report.findings, []);
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
    let setup = with_audit_log("audit_log_collector_away", &collector);
    collector.set_available(false);
    for i in 0..REQUESTS {
        let (request, status) = request(&setup, i);
        assert_eq!(setup.envoy.send(&request).status, status, "request {i}");
    }
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
