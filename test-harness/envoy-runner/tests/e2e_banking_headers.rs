//! The banking-header filter in a real Envoy, configured from `wasmplugins/banking-headers.yaml`
//! exactly as istiod would, in front of the demo upstream: what a client sees and what reaches
//! the upstream.
//!
//! Each test starts its own Envoy (about 0.2 s) and upstream on kernel-chosen loopback ports,
//! and is bounded: at most `MAX_REQUESTS` requests, each with a timeout, within `fixture::TEST_BUDGET`.
//! Envoy's log stays in `target/envoy-e2e/<test name>/envoy.log`. The requests are written for
//! the pluginConfig shipped in the WasmPlugin file. Envoy is found as `make run` finds it; if
//! none is found the tests fail and say to run `make envoy`.

use std::ops::Deref;

use demo_services::SeenRequest;
use envoy_runner::client::{HttpResponse, Request};
use envoy_runner::fixture::{self, EnvoyUnderTest, is_uuid_v4};
use envoy_runner::{PathNormalization, RunningEnvoy, StartOptions};
use serde_json::Value;

const MAX_REQUESTS: u32 = 40;

/// Values valid under the shipped pluginConfig.
const CUSTOMER_ID: &str = "CUST-00012345";
const TRANSACTION_ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const CLIENT_CORRELATION_ID: &str = "trace-7d3f-4a1b-9c2e";

/// Envoy with only the banking-header filter, the demo upstream behind it, and a request budget.
struct Deployment(EnvoyUnderTest);

impl Deref for Deployment {
    type Target = EnvoyUnderTest;

    fn deref(&self) -> &EnvoyUnderTest {
        &self.0
    }
}

impl Deployment {
    fn start(label: &'static str) -> Deployment {
        let plugins = fixture::shipped(&["banking-headers"]);
        Deployment(EnvoyUnderTest::start(label, &plugins, MAX_REQUESTS, |o| o))
    }

    /// The filter's counter `banking_headers_<what>` as Envoy reports it.
    fn counter(&self, what: &str) -> u64 {
        let name = format!("banking_headers_{what}");
        self.envoy
            .stat(&name)
            .unwrap_or_else(|| panic!("{}: Envoy reports no counter {name}", self.label))
    }

    /// The sum of the filter's `rejected_*` counters.
    fn rejections(&self) -> u64 {
        let stats = self
            .envoy
            .stats()
            .unwrap_or_else(|e| panic!("{}: {e}", self.label));
        stats
            .iter()
            .filter(|(n, _)| n.starts_with("wasmcustom.banking_headers_rejected_"))
            .map(|(_, v)| v)
            .sum()
    }

    /// A valid payment still goes through: the filter's VM and Envoy survived what came before.
    fn assert_still_serving(&self) {
        let response = self.send(&payment());
        assert_eq!(
            response.status,
            200,
            "Envoy stopped serving valid requests: {}",
            response.body_text()
        );
        self.assert_no_crash();
        self.upstream_saw();
    }
}

/// `POST /payments` with every header the shipped rules require for it.
fn payment() -> Request {
    Request::post("/payments")
        .header("content-type", "application/json")
        .header("x-customer-id", CUSTOMER_ID)
        .header("x-transaction-id", TRANSACTION_ID)
        .header("x-banking-operation", "payment.create")
        .body(br#"{"amount":"25.00","currency":"EUR"}"#)
}

/// `payment()` with `name` replaced by `value`, or removed when `value` is `None`.
fn payment_with(name: &str, value: Option<&[u8]>) -> Request {
    let mut request = payment();
    request.headers.retain(|(n, _)| n != name);
    if let Some(value) = value {
        request = request.header_bytes(name, value);
    }
    request
}

/// Asserts an RFC 9457 problem response naming `header`, and returns its body.
fn assert_problem(response: &HttpResponse, status: u16, header: &str) -> Value {
    assert_eq!(response.status, status, "body: {}", response.body_text());
    assert_eq!(
        response.header_str("content-type"),
        Some("application/problem+json")
    );
    let problem = response
        .json()
        .unwrap_or_else(|e| panic!("problem body is not JSON ({e}): {}", response.body_text()));
    assert_eq!(problem["status"], status);
    assert_eq!(problem["header"], header, "problem: {problem}");
    assert!(
        problem["type"].as_str().is_some_and(|t| !t.is_empty()),
        "problem without type: {problem}"
    );
    assert!(
        problem["title"].as_str().is_some_and(|t| !t.is_empty()),
        "problem without title: {problem}"
    );
    problem
}

#[test]
fn valid_payment_reaches_upstream_with_its_banking_headers() {
    let deployment = Deployment::start("valid_payment_reaches_upstream_with_its_banking_headers");
    let response = deployment.send(&payment().header("x-correlation-id", CLIENT_CORRELATION_ID));
    assert_eq!(response.status, 200, "body: {}", response.body_text());

    let seen = deployment.upstream_saw();
    assert_eq!(seen.len(), 1);
    let upstream = &seen[0];
    assert_eq!(
        (upstream.method.as_str(), upstream.path.as_str()),
        ("POST", "/payments")
    );
    assert_eq!(upstream.header_str("x-customer-id"), Some(CUSTOMER_ID));
    assert_eq!(
        upstream.header_str("x-transaction-id"),
        Some(TRANSACTION_ID)
    );
    assert_eq!(
        upstream.header_str("x-banking-operation"),
        Some("payment.create")
    );
    assert_eq!(
        upstream.header_str("x-correlation-id"),
        Some(CLIENT_CORRELATION_ID)
    );
    // The client sees the upstream's echo: what went through is what it sent.
    let echoed =
        SeenRequest::from_json(&response.json().expect("upstream echo")).expect("echo shape");
    assert_eq!(echoed.header_str("x-customer-id"), Some(CUSTOMER_ID));
    assert_eq!(
        response.header_str("x-correlation-id"),
        Some(CLIENT_CORRELATION_ID)
    );
    assert_eq!(deployment.counter("allowed"), 1);
    assert_eq!(
        deployment.counter("correlation_generated"),
        0,
        "a well-formed client id is kept"
    );
}

#[test]
fn missing_correlation_id_is_generated_echoed_and_sent_upstream() {
    let deployment =
        Deployment::start("missing_correlation_id_is_generated_echoed_and_sent_upstream");
    let first = deployment.send(&payment());
    assert_eq!(first.status, 200, "body: {}", first.body_text());
    let generated = first
        .header_str("x-correlation-id")
        .expect("generated x-correlation-id on the response")
        .to_string();
    assert!(
        is_uuid_v4(&generated),
        "generated id {generated:?} is not a lowercase UUID v4"
    );
    let seen = deployment.upstream_saw();
    assert_eq!(
        seen[0].header_str("x-correlation-id"),
        Some(generated.as_str())
    );

    let second = deployment.send(&payment());
    let other = second
        .header_str("x-correlation-id")
        .expect("generated x-correlation-id");
    assert_ne!(other, generated, "each request gets its own correlation id");
    assert_eq!(deployment.counter("correlation_generated"), 2);
}

#[test]
fn each_invalid_banking_header_gets_a_problem_naming_it() {
    let deployment = Deployment::start("each_invalid_banking_header_gets_a_problem_naming_it");
    let cases: [(&str, Request, &str); 9] = [
        (
            "missing customer id",
            payment_with("x-customer-id", None),
            "x-customer-id",
        ),
        (
            "customer id sent twice",
            payment().header("x-customer-id", "CUST-99999999"),
            "x-customer-id",
        ),
        (
            "customer id off pattern",
            payment_with("x-customer-id", Some(b"cust 12")),
            "x-customer-id",
        ),
        (
            "missing transaction id",
            payment_with("x-transaction-id", None),
            "x-transaction-id",
        ),
        (
            "transaction id not a UUID",
            payment_with("x-transaction-id", Some(b"txn-42")),
            "x-transaction-id",
        ),
        (
            "missing operation",
            payment_with("x-banking-operation", None),
            "x-banking-operation",
        ),
        (
            "unknown operation",
            payment_with("x-banking-operation", Some(b"payment.teleport")),
            "x-banking-operation",
        ),
        (
            "operation inconsistent with POST /payments",
            payment_with("x-banking-operation", Some(b"account.read")),
            "x-banking-operation",
        ),
        (
            "malformed correlation id",
            payment().header("x-correlation-id", "bad id!"),
            "x-correlation-id",
        ),
    ];
    for (case, request, header) in &cases {
        let response = deployment.send(request);
        let problem = assert_problem(&response, 400, header);
        assert!(
            deployment.upstream_saw().is_empty(),
            "{case}: the upstream received a rejected request"
        );
        if *header != "x-correlation-id" {
            // The rejection still carries a correlation id a support ticket can quote.
            let echoed = response
                .header_str("x-correlation-id")
                .expect("x-correlation-id on a rejection");
            assert_eq!(problem["correlationId"], echoed, "{case}: {problem}");
        }
    }
    assert_eq!(
        deployment.rejections(),
        cases.len() as u64,
        "every rejection is counted once"
    );
    assert_eq!(deployment.counter("rejected_duplicate_header"), 1);
    assert_eq!(deployment.counter("rejected_operation_mismatch"), 1);
    deployment.assert_still_serving();
}

#[test]
fn oversized_values_are_refused_and_never_echoed_back() {
    let deployment = Deployment::start("oversized_values_are_refused_and_never_echoed_back");
    let long_customer = format!("CUST-{}", "7".repeat(300));
    let response = deployment.send(&payment_with(
        "x-customer-id",
        Some(long_customer.as_bytes()),
    ));
    let problem = assert_problem(&response, 400, "x-customer-id");
    assert!(
        !response.body_text().contains(&"7".repeat(20)),
        "the problem echoes the oversized value: {problem}"
    );

    let long_transaction = "a".repeat(10_000);
    let response = deployment.send(&payment_with(
        "x-transaction-id",
        Some(long_transaction.as_bytes()),
    ));
    assert_problem(&response, 400, "x-transaction-id");

    // Past Envoy's own limits the codec answers before any filter runs: still a 4xx.
    let huge = "b".repeat(70 * 1024);
    let response = deployment.send(&payment().header("x-filler", &huge));
    assert!(
        (400..500).contains(&response.status),
        "70 KiB header got {}",
        response.status
    );
    let mut many = payment();
    for i in 0..150 {
        many = many.header(&format!("x-filler-{i}"), "1");
    }
    let response = deployment.send(&many);
    assert!(
        (400..500).contains(&response.status),
        "150 headers got {}",
        response.status
    );

    assert!(
        deployment.upstream_saw().is_empty(),
        "an oversized request reached the upstream"
    );
    assert_eq!(
        deployment.counter("rejected_header_too_long"),
        2,
        "Envoy's own 431s never reach the filter"
    );
    deployment.assert_still_serving();
}

#[test]
fn non_utf8_header_bytes_get_a_4xx_never_a_5xx() {
    let deployment = Deployment::start("non_utf8_header_bytes_get_a_4xx_never_a_5xx");
    let banking = fixture::NON_UTF8_BANKING_HEADERS;
    for (header, value) in banking {
        let response = deployment.send(&payment_with(header, Some(value)));
        let problem = assert_problem(&response, 400, header);
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.is_ascii(),
            "{header}: the detail must not carry the raw bytes: {detail:?}"
        );
    }
    assert!(
        deployment.upstream_saw().is_empty(),
        "a request with a non-UTF-8 banking header reached the upstream"
    );

    assert_eq!(deployment.rejections(), banking.len() as u64);

    // Bytes in a header the filter has no opinion on pass through untouched (HTTP allows
    // obs-text in values, and so does Envoy).
    let response = deployment.send(&payment().header_bytes("x-note", b"caf\xe9 \xff"));
    assert_eq!(
        response.status,
        200,
        "non-UTF-8 in an unrelated header: {}",
        response.body_text()
    );
    let seen = deployment.upstream_saw();
    assert_eq!(seen[0].header("x-note"), Some(&b"caf\xe9 \xff"[..]));

    // A NUL byte is refused by Envoy's codec itself.
    let response = deployment.send(&payment_with("x-customer-id", Some(b"CUST-\x00001")));
    assert!(
        (400..500).contains(&response.status),
        "NUL in a header got {}",
        response.status
    );
    deployment.assert_still_serving();
}

#[test]
fn internal_headers_are_stripped_and_health_checks_bypass_the_checks() {
    let deployment =
        Deployment::start("internal_headers_are_stripped_and_health_checks_bypass_the_checks");
    let response = deployment.send(
        &payment()
            .header("x-internal-user-role", "admin")
            .header("x-jwt-claim-sub", "mallory")
            // Envoy lets underscores through; CGI-style upstreams read them as dashes.
            .header("x-internal_user", "admin")
            .header("x-jwt-claim_customer_id", "CUST-99999999"),
    );
    assert_eq!(response.status, 200, "body: {}", response.body_text());
    let seen = deployment.upstream_saw();
    for spoofed in ["x-internal_user", "x-jwt-claim_customer_id"] {
        assert_eq!(
            seen[0].header(spoofed),
            None,
            "{spoofed} reached the upstream"
        );
    }
    assert_eq!(
        seen[0].header("x-internal-user-role"),
        None,
        "a spoofed internal header reached the upstream"
    );
    assert_eq!(
        seen[0].header("x-jwt-claim-sub"),
        None,
        "a spoofed claim header reached the upstream"
    );
    assert_eq!(deployment.counter("internal_headers_stripped"), 1);

    let response = deployment.send(&Request::get("/healthz"));
    assert_eq!(
        response.status,
        200,
        "the health check was not bypassed: {}",
        response.body_text()
    );
    assert_eq!(deployment.upstream_saw().len(), 1);
    assert_eq!(deployment.counter("bypassed"), 1);
}

#[test]
fn refused_plugin_config_keeps_envoy_from_serving_and_names_the_field() {
    let mut plugins = fixture::shipped(&["banking-headers"]);
    let config = plugins[0]
        .plugin_config
        .as_mut()
        .expect("the WasmPlugin has a pluginConfig");
    config["maxHeaderValueLength"] = serde_json::json!(0);
    let upstream = fixture::demo_upstream();
    let bootstrap = fixture::bootstrap(&plugins, &upstream, |o| o);

    // failStrategy FAIL_CLOSE -> failure_policy FAIL_CLOSED: a plugin that refuses its
    // configuration is not skipped; Envoy will not serve without it.
    let label = "refused_plugin_config_keeps_envoy_from_serving_and_names_the_field";
    let Err(error) = RunningEnvoy::start(
        &fixture::envoy_binary(),
        &bootstrap,
        &StartOptions::for_test(label),
    ) else {
        panic!("Envoy started and served with a plugin that refused its configuration");
    };
    assert!(
        error.0.contains("maxHeaderValueLength"),
        "the refusal does not name the field: {error}"
    );
    assert!(upstream.requests().is_empty());
}

/// No spelling of the payment route escapes its rule, with Envoy's path normalisation on
/// (Istio's default `pathNormalization` BASE: Envoy decodes `%61` before the filter) or off
/// (`NONE`: the filter sees the bytes as sent and decodes them itself): a read operation on
/// `POST /payments` is refused as `operation-mismatch` on every spelling of the same resource,
/// and every spelling an upstream may read as another resource (`;` parameters, `%2F`) is
/// refused as `invalid-path`. Nothing reaches the upstream but the one valid payment.
#[test]
fn no_spelling_of_the_payment_route_escapes_its_rule_with_normalization_on_or_off() {
    let plugins = fixture::shipped(&["banking-headers"]);
    let at = |path: &str, operation: &[u8]| {
        let mut request = payment_with("x-banking-operation", Some(operation));
        request.path = path.to_string();
        request
    };
    for (label, normalization) in [
        (
            "route_spellings_with_istio_default_normalization",
            PathNormalization::Base,
        ),
        (
            "route_spellings_without_normalization",
            PathNormalization::None,
        ),
    ] {
        let envoy = EnvoyUnderTest::start(label, &plugins, 20, |o| {
            o.with_path_normalization(normalization)
        });
        let read = b"account.read";
        let refusal = |path: &str| {
            let response = envoy.send(&at(path, read));
            let header = if response.status == 400 && response.body_text().contains(":invalid-path")
            {
                ":path"
            } else {
                "x-banking-operation"
            };
            let problem = assert_problem(&response, 400, header);
            problem["type"].as_str().unwrap_or_default().to_string()
        };
        let mismatch = "urn:banking-filters:problem:operation-mismatch";
        assert_eq!(refusal("/payments"), mismatch, "{label}");
        for path in fixture::PAYMENT_PATH_SPELLINGS {
            assert_eq!(refusal(path), mismatch, "{label}: {path}");
        }
        for path in fixture::REFUSED_PAYMENT_PATHS {
            assert_eq!(
                refusal(path),
                "urn:banking-filters:problem:invalid-path",
                "{label}: {path}"
            );
        }
        assert!(envoy.upstream_saw().is_empty(), "{label}");
        // The operation the route expects passes on a decoded spelling.
        let valid = envoy.send(&at("/p%61yments", b"payment.create"));
        assert_eq!(valid.status, 200, "{label}: {}", valid.body_text());
        assert_eq!(envoy.upstream_saw().len(), 1, "{label}");
        envoy.assert_no_crash();
    }
}
