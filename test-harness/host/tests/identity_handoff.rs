//! The identity handoff: jwt-auth publishes who the caller is as filter state under the
//! common contract (`banking_filter_common::identity`), the filter after it (the probe)
//! reads it, and, where the proxy has Envoy's `declare_property`, cannot overwrite it. The
//! name and the JSON are spelled out: they are the contract other teams' filters and access
//! logs read.

mod idp;

use idp::Idp;
use test_harness::{Action, Chain, Host, HostStatus, LogLevel};

fn shipped_config(name: &str) -> String {
    envoy_runner::fixture::shipped(&[name])[0]
        .configuration_json()
        .expect("a pluginConfig")
}

/// The probe's command that writes an identity of the attacker's choosing.
const FORGE: &str = r#"set-filter-state banking.jwt.identity {"issuer":"https://attacker.example","subject":"attacker"}"#;

/// jwt-auth (shipped config, keys fetched) then the probe filter.
fn jwt_then_probe(host: &Host, idp: &Idp) -> Chain {
    let chain = host
        .chain(&[
            ("jwt_auth", &shipped_config("jwt-auth")),
            ("harness_probe", ""),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    idp.serve_first_fetch(host, chain.plugin(0));
    chain
}

fn token(host: &Host, idp: &Idp) -> String {
    let claims = serde_json::json!({
        "client_id": "mobile-app", "azp": "ignored-when-client_id-is-there",
        "scope": "payments:read accounts:read",
    });
    format!("Bearer {}", idp.token_with(host, claims))
}

/// One request through the chain with `probe` as the probe's command; the probe's result.
fn probe(chain: &Chain, authorization: Option<&str>, path: &str, probe: &str) -> Option<String> {
    let mut headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", "api.bank.example"),
        ("x-customer-id", "CUST-00000042"),
        ("x-probe", probe),
    ];
    if let Some(authorization) = authorization {
        headers.push(("authorization", authorization));
    }
    let mut stream = chain.stream();
    let action = stream.request_headers(&headers, true);
    assert_eq!(action, Action::Continue, "{:?}", stream.local_response());
    assert_eq!(stream.reached(), 2);
    stream
        .upstream_request_header("x-probe-result")
        .map(|v| String::from_utf8(v).unwrap())
}

/// The identity value the probe read, as JSON.
fn document(read: Option<String>) -> serde_json::Value {
    let text = read.expect("the probe read banking.jwt.identity");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_filter_after_jwt_auth_reads_the_identity_in_one_property() {
    let host = Host::new();
    let idp = Idp::new();
    let chain = jwt_then_probe(&host, &idp);
    let bearer = token(&host, &idp);
    let read = probe(
        &chain,
        Some(&bearer),
        "/payments/42",
        "filter-state banking.jwt.identity",
    );
    assert_eq!(
        document(read),
        serde_json::json!({
            "issuer": "https://idp.bank.example",
            "subject": "user-7",
            "customer": "CUST-00000042",
            "client": "mobile-app",
            "scopes": ["payments:read", "accounts:read"],
            "claims": {"customer_id": "CUST-00000042"},
        })
    );
}

#[test]
fn jwt_auth_declares_what_it_publishes_read_only_at_configure_time() {
    let host = Host::new();
    let idp = Idp::new();
    let chain = jwt_then_probe(&host, &idp);
    // The identity and the two refusal names.
    assert_eq!(host.foreign_function_calls("declare_property"), 3);
    let logs = chain.plugin(0).logs(LogLevel::Info).join("\n");
    assert!(
        logs.contains(
            "banking.jwt.identity, banking.decision.denied_by, banking.decision.reason declared read-only"
        ),
        "{logs}"
    );
}

#[test]
fn a_later_filter_cannot_overwrite_the_verified_identity() {
    let host = Host::new();
    let idp = Idp::new();
    let chain = jwt_then_probe(&host, &idp);
    let mut stream = chain.stream();
    let bearer = token(&host, &idp);
    let action = stream.request_headers(
        &[
            (":method", "GET"),
            (":path", "/payments/42"),
            (":authority", "api.bank.example"),
            ("authorization", &bearer),
            ("x-customer-id", "CUST-00000042"),
            ("x-probe", FORGE),
        ],
        true,
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(
        stream.upstream_request_header("x-probe-result"),
        Some(b"BadArgument".to_vec())
    );
    let published = stream.at(1).property(&["banking.jwt.identity"]);
    let published: serde_json::Value = serde_json::from_slice(&published.unwrap()).unwrap();
    assert_eq!(published["subject"], "user-7");
    assert_eq!(published["issuer"], "https://idp.bank.example");
}

#[test]
fn a_later_filter_cannot_add_an_identity_to_a_bypassed_request() {
    let host = Host::new();
    let idp = Idp::new();
    let chain = jwt_then_probe(&host, &idp);
    assert_eq!(
        document(probe(
            &chain,
            None,
            "/healthz",
            "filter-state banking.jwt.identity"
        )),
        serde_json::json!({"bypass": "path"})
    );
    assert_eq!(
        probe(&chain, None, "/healthz", FORGE).as_deref(),
        Some("BadArgument")
    );
}

#[test]
fn jwt_auth_itself_writes_the_identity_once_per_stream() {
    // A read-only value takes one write: publishing twice would fail the request closed.
    let host = Host::new();
    let idp = Idp::new();
    let chain = jwt_then_probe(&host, &idp);
    let bearer = token(&host, &idp);
    for _ in 0..2 {
        // The second request is a cache hit: same publish path, fresh stream.
        let read = probe(
            &chain,
            Some(&bearer),
            "/payments/42",
            "filter-state banking.jwt.identity",
        );
        assert_eq!(document(read)["issuer"], "https://idp.bank.example");
    }
    assert!(chain.plugin(0).logs(LogLevel::Critical).is_empty());
}

#[test]
fn without_declare_property_jwt_auth_still_hands_on_the_identity() {
    let host = Host::new().without_declare_property();
    let idp = Idp::new();
    let chain = jwt_then_probe(&host, &idp);
    let warnings = chain.plugin(0).logs(LogLevel::Warn).join("\n");
    assert!(
        warnings.contains("no declare_property"),
        "the mode is logged: {warnings}"
    );
    let bearer = token(&host, &idp);
    let read = probe(
        &chain,
        Some(&bearer),
        "/payments/42",
        "filter-state banking.jwt.identity",
    );
    assert_eq!(document(read)["subject"], "user-7");
    // Unprotected: the later filter's write goes through, which is what the declaration
    // prevents where the proxy has it.
    assert_eq!(
        probe(&chain, Some(&bearer), "/payments/42", FORGE).as_deref(),
        Some("ok")
    );
}

#[test]
fn a_refusal_records_the_filter_and_reason_for_the_audit_log() {
    let host = Host::new();
    let idp = Idp::new();
    let chain = jwt_then_probe(&host, &idp);
    let mut stream = chain.stream();
    stream.request_headers(
        &[
            (":method", "GET"),
            (":path", "/payments/42"),
            (":authority", "api.bank.example"),
        ],
        true,
    );
    assert_eq!(stream.local_response().map(|r| r.status), Some(401));
    assert_eq!(stream.reached(), 1);
    assert_eq!(
        stream.at(0).property(&["banking.decision.denied_by"]),
        Some(b"jwt-auth".to_vec())
    );
    assert_eq!(
        stream.at(0).property(&["banking.decision.reason"]),
        Some(b"missing-token".to_vec())
    );
    // A refused request hands on no identity.
    assert_eq!(stream.at(0).property(&["banking.jwt.identity"]), None);
}

#[test]
fn the_first_refusal_in_a_chain_is_the_one_recorded() {
    let host = Host::new();
    let chain = host
        .chain(&[
            ("banking_headers", &shipped_config("banking-headers")),
            ("jwt_auth", &shipped_config("jwt-auth")),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stream = chain.stream();
    // No banking headers and no token: banking-headers refuses first, jwt-auth never runs.
    stream.request_headers(
        &[
            (":method", "GET"),
            (":path", "/payments/42"),
            (":authority", "api.bank.example"),
        ],
        true,
    );
    assert_eq!(stream.replied_by(), Some(0));
    assert_eq!(
        stream.at(0).property(&["banking.decision.denied_by"]),
        Some(b"banking-headers".to_vec())
    );
    assert!(
        stream
            .at(0)
            .property(&["banking.decision.reason"])
            .is_some()
    );
}

#[test]
fn a_refusal_that_cannot_be_recorded_is_still_the_answer() {
    let host = Host::new();
    let idp = Idp::new();
    let chain = jwt_then_probe(&host, &idp);
    host.fail_hostcall("proxy_set_property", HostStatus::InternalFailure, 10);
    let mut stream = chain.stream();
    stream.request_headers(
        &[
            (":method", "GET"),
            (":path", "/payments/42"),
            (":authority", "api.bank.example"),
        ],
        true,
    );
    assert_eq!(stream.local_response().map(|r| r.status), Some(401));
    let warnings = chain.plugin(0).logs(LogLevel::Warn).join("\n");
    assert!(
        warnings.contains("could not record the refusal"),
        "{warnings}"
    );
}

#[test]
fn an_identity_that_cannot_be_published_fails_closed() {
    let host = Host::new();
    let idp = Idp::new();
    let chain = jwt_then_probe(&host, &idp);
    let bearer = token(&host, &idp);
    host.fail_hostcall("proxy_set_property", HostStatus::InternalFailure, 1);
    let mut stream = chain.stream();
    stream.request_headers(
        &[
            (":method", "GET"),
            (":path", "/payments/42"),
            (":authority", "api.bank.example"),
            ("authorization", &bearer),
            ("x-customer-id", "CUST-00000042"),
        ],
        true,
    );
    assert_eq!(stream.local_response().map(|r| r.status), Some(500));
    assert_eq!(stream.reached(), 1);
}

/// jwt-auth in dry-run lets a request with a failed token through; it writes the identity
/// empty, so the filter after it can no more add an identity to that request than to
/// a verified one.
#[test]
fn in_dry_run_a_later_filter_cannot_add_an_identity_to_a_failed_token() {
    let host = Host::new();
    let idp = Idp::new();
    let mut config: serde_json::Value = serde_json::from_str(&shipped_config("jwt-auth")).unwrap();
    config["mode"] = serde_json::Value::from("dryRun");
    let chain = host
        .chain(&[("jwt_auth", &config.to_string()), ("harness_probe", "")])
        .unwrap_or_else(|e| panic!("{e}"));
    idp.serve_first_fetch(&host, chain.plugin(0));
    let mut stream = chain.stream();
    let action = stream.request_headers(
        &[
            (":method", "GET"),
            (":path", "/accounts"),
            ("authorization", "Bearer not-a-token"),
            ("x-probe", FORGE),
        ],
        true,
    );
    assert_eq!(action, Action::Continue, "{:?}", stream.local_response());
    assert_ne!(
        stream.upstream_request_header("x-probe-result"),
        Some(b"ok".to_vec())
    );
    assert_eq!(
        stream.at(1).property(&["banking.jwt.identity"]),
        Some(Vec::new())
    );
}
