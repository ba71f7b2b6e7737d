//! The shipped filters as one Envoy filter chain: banking-headers → jwt-auth (their
//! WasmPlugin pluginConfigs) → the probe filter, which reads what jwt-auth published.

mod idp;

use idp::Idp;

use test_harness::{Action, Chain, Host};

/// The shipped pluginConfig of `name`, as istiod passes it.
fn shipped_config(name: &str) -> String {
    envoy_runner::fixture::shipped(&[name])[0]
        .configuration_json()
        .expect("a pluginConfig")
}

/// The chain with jwt-auth's first JWKS fetch answered.
fn shipped_chain(host: &Host, idp: &Idp) -> Chain {
    chain_of(
        host,
        idp,
        &shipped_config("banking-headers"),
        &shipped_config("jwt-auth"),
    )
}

/// banking-headers and jwt-auth with these configs, then the probe; jwt-auth's first JWKS
/// fetch answered.
fn chain_of(host: &Host, idp: &Idp, headers: &str, jwt: &str) -> Chain {
    let chain = host
        .chain(&[
            ("banking_headers", headers),
            ("jwt_auth", jwt),
            ("harness_probe", ""),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    idp.serve_first_fetch(host, chain.plugin(1));
    chain
}

#[test]
fn the_filter_after_jwt_auth_reads_the_verified_identity_from_filter_state() {
    let host = Host::new();
    let idp = Idp::new();
    let chain = shipped_chain(&host, &idp);
    let token = format!("Bearer {}", idp.token(&host));
    let mut stream = chain.stream();
    let action = stream.request_headers(
        &[
            (":method", "GET"),
            (":path", "/payments/42"),
            (":authority", "api.bank.example"),
            ("authorization", &token),
            ("x-customer-id", "CUST-00000042"),
            ("x-transaction-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
            ("x-banking-operation", "payment.read"),
            ("x-jwt-claim-sub", "spoofed-by-client"),
            ("x-probe", "filter-state banking.jwt.identity"),
        ],
        true,
    );
    assert_eq!(action, Action::Continue, "{:?}", stream.local_response());
    assert_eq!(stream.reached(), 3);
    let identity: serde_json::Value =
        serde_json::from_slice(&stream.upstream_request_header("x-probe-result").unwrap()).unwrap();
    assert_eq!(identity["subject"], "user-7");
    // banking-headers stripped the client's claim header; jwt-auth wrote the verified one.
    assert_eq!(
        stream.upstream_request_header("x-jwt-claim-sub"),
        Some(b"user-7".to_vec())
    );
    // The response passes back through all three: banking-headers echoes its correlation id.
    assert_eq!(
        stream.response_headers(&[(":status", "200")], true),
        Action::Continue
    );
    assert!(stream.response_header("x-correlation-id").is_some());
    assert!(stream.response_header("x-probe-saw-status").is_some());
}

#[test]
fn a_refusal_skips_the_later_filters_and_passes_back_through_the_earlier_ones() {
    let host = Host::new();
    let idp = Idp::new();
    let chain = shipped_chain(&host, &idp);
    let mut stream = chain.stream();
    let action = stream.request_headers(
        &[
            (":method", "GET"),
            (":path", "/payments/42"),
            (":authority", "api.bank.example"),
            ("x-customer-id", "CUST-00000042"),
            ("x-transaction-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
            ("x-banking-operation", "payment.read"),
            ("x-correlation-id", "trace-0001-chain"),
        ],
        true,
    );
    assert_eq!(action, Action::Pause);
    assert_eq!(
        stream.replied_by(),
        Some(1),
        "jwt-auth refuses a request without a token"
    );
    assert_eq!(stream.reached(), 2, "the probe never saw the request");
    let reply = stream.local_response().unwrap();
    assert_eq!(reply.status, 401);
    // banking-headers, earlier in the chain, saw the reply on its response path.
    assert_eq!(
        reply.header("x-correlation-id"),
        Some(&b"trace-0001-chain"[..])
    );
    // on_log runs for every filter, the probe included.
    stream.complete();
    assert_eq!(host.metric("probe_logs"), Some(1));
}

#[test]
fn a_refusal_by_the_first_filter_never_reaches_jwt_auth() {
    let host = Host::new();
    let idp = Idp::new();
    let chain = shipped_chain(&host, &idp);
    let mut stream = chain.stream();
    let action = stream.request_headers(
        &[
            (":method", "POST"),
            (":path", "/payments"),
            (":authority", "a"),
        ],
        true,
    );
    assert_eq!(action, Action::Pause);
    assert_eq!(stream.replied_by(), Some(0));
    assert_eq!(stream.local_response().unwrap().status, 400);
    let jwt_counters: u64 = host
        .metrics()
        .iter()
        // Every request counter of jwt-auth; its one JWKS fetch is not a request.
        .filter(|(name, _, _)| name.starts_with("banking_jwt_auth_") && !name.contains("jwks"))
        .map(|(_, _, value)| value)
        .sum();
    assert_eq!(jwt_counters, 0);
}

#[test]
fn a_paused_filter_holds_the_chain_until_it_resumes() {
    let host = Host::new();
    let chain = host
        .chain(&[("harness_probe", ""), ("harness_probe", "")])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stream = chain.stream();
    let action =
        stream.request_headers(&[(":path", "/"), ("x-probe", "http-call fraud 500")], true);
    assert_eq!(action, Action::Pause);
    assert_eq!(stream.paused_at(), Some(0));
    assert_eq!(stream.reached(), 1);
    assert_eq!(stream.proceed(), Action::Pause, "not resumed yet");
    let call = chain.plugin(0).pending_http_calls().remove(0);
    chain
        .plugin(0)
        .respond_http_call(call.token, 200, &[], b"ok");
    // The second probe runs the same command: it pauses on its own callout in turn.
    assert_eq!(stream.proceed(), Action::Pause);
    assert_eq!(stream.paused_at(), Some(1));
    let call = chain.plugin(1).pending_http_calls().remove(0);
    chain
        .plugin(1)
        .respond_http_call(call.token, 200, &[], b"ok");
    assert_eq!(stream.proceed(), Action::Continue);
    assert_eq!(
        stream.upstream_request_header("x-probe-call-status"),
        Some(b"200".to_vec())
    );
}

/// Both enforcing filters in dry-run: a request each would refuse reaches the upstream, and
/// the filter after them reads both would-be refusals, in chain order, from one filter-state
/// value (what the audit log will record); nothing is recorded as refused.
#[test]
fn in_dry_run_each_filter_appends_its_would_be_refusal_in_chain_order() {
    let dry_run = |name: &str| {
        let mut config: serde_json::Value = serde_json::from_str(&shipped_config(name)).unwrap();
        config["mode"] = serde_json::Value::from("dryRun");
        config.to_string()
    };
    let host = Host::new();
    let idp = Idp::new();
    let chain = chain_of(
        &host,
        &idp,
        &dry_run("banking-headers"),
        &dry_run("jwt-auth"),
    );
    let mut stream = chain.stream();
    // No customer id (banking-headers) and no token (jwt-auth).
    let action = stream.request_headers(
        &[
            (":method", "GET"),
            (":path", "/accounts"),
            (":authority", "api.bank.example"),
            ("x-transaction-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
            ("x-banking-operation", "account.read"),
            ("x-probe", "filter-state banking.decision.would_deny"),
        ],
        true,
    );
    assert_eq!(action, Action::Continue, "{:?}", stream.local_response());
    assert_eq!(stream.reached(), 3);
    assert_eq!(
        stream.upstream_request_header("x-probe-result"),
        Some(b"banking-headers:missing-header jwt-auth:missing-token".to_vec())
    );
    assert_eq!(stream.at(2).property(&["banking.decision.denied_by"]), None);
}
