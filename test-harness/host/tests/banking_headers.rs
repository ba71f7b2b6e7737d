//! The banking-header filter's real `.wasm` (`make wasm`) driven through the harness host.
//!
//! Most scenarios load the pluginConfig shipped in `wasmplugins/banking-headers.yaml`, rendered
//! as istiod hands it to Envoy (compact JSON, every number a float), so the file users deploy
//! is the file these tests prove.

use envoy_runner::fixture::{self, is_uuid_v4};
use serde_json::Value;
use test_harness::{Action, HarnessError, Host, LocalResponse, LogLevel, Plugin, Stream};

const FILTER: &str = "banking_headers";

/// Values valid under the shipped pluginConfig.
const CUSTOMER_ID: &str = "CUST-00012345";
const TRANSACTION_ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const CLIENT_CORRELATION_ID: &str = "trace-7d3f-4a1b-9c2e";

/// The pluginConfig of `wasmplugins/banking-headers.yaml`, as the filter receives it.
fn shipped_config() -> String {
    fixture::shipped(&["banking-headers"])[0]
        .configuration_json()
        .expect("banking-headers ships a pluginConfig")
}

fn load_shipped() -> (Host, Plugin) {
    let host = Host::new();
    let plugin = host
        .load(FILTER, shipped_config())
        .unwrap_or_else(|e| panic!("{e}"));
    (host, plugin)
}

/// Request headers as name and raw value bytes.
type Headers = Vec<(String, Vec<u8>)>;

/// `POST /payments` headers with every banking header the shipped rules require, with
/// `overrides` replacing (or, with `None`, removing) headers by name.
fn payment(overrides: &[(&str, Option<&[u8]>)]) -> Vec<(String, Vec<u8>)> {
    let mut headers: Vec<(String, Vec<u8>)> = [
        (":method", "POST"),
        (":path", "/payments"),
        (":authority", "api.bank.example"),
        ("content-type", "application/json"),
        ("x-customer-id", CUSTOMER_ID),
        ("x-transaction-id", TRANSACTION_ID),
        ("x-banking-operation", "payment.create"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
    .collect();
    for (name, value) in overrides {
        headers.retain(|(n, _)| n != name);
        if let Some(v) = value {
            headers.push((name.to_string(), v.to_vec()));
        }
    }
    headers
}

fn send(stream: &mut Stream, headers: &[(String, Vec<u8>)]) -> Action {
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    stream.request_headers_bytes(&pairs, false)
}

/// Sends `headers` on a new stream and returns the local response it must have got.
fn refused(plugin: &Plugin, headers: &[(String, Vec<u8>)]) -> LocalResponse {
    let mut stream = plugin.stream();
    assert_eq!(send(&mut stream, headers), Action::Pause);
    stream
        .local_response()
        .expect("a refused request is answered locally")
}

/// Asserts a problem+json response naming `header` and returns the problem.
fn assert_problem(response: &LocalResponse, status: u32, header: &str) -> Value {
    assert_eq!(response.status, status, "{}", response.body_text());
    assert_eq!(
        response.header("content-type"),
        Some(&b"application/problem+json"[..])
    );
    let problem: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{e}: {}", response.body_text()));
    assert_eq!(problem["status"], status);
    assert_eq!(problem["header"], header, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:banking-filters:problem:")),
        "{problem}"
    );
    assert!(
        problem["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{problem}"
    );
    problem
}

fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8(b).expect("UTF-8 header"))
}

#[test]
fn valid_payment_passes_with_its_banking_headers_upstream() {
    let (_host, plugin) = load_shipped();
    let mut stream = plugin.stream();
    let headers = payment(&[("x-correlation-id", Some(CLIENT_CORRELATION_ID.as_bytes()))]);
    assert_eq!(send(&mut stream, &headers), Action::Continue);
    assert!(stream.local_response().is_none());
    assert_eq!(
        text(stream.request_header("x-customer-id")).as_deref(),
        Some(CUSTOMER_ID)
    );
    assert_eq!(
        text(stream.request_header("x-transaction-id")).as_deref(),
        Some(TRANSACTION_ID)
    );
    assert_eq!(
        text(stream.request_header("x-banking-operation")).as_deref(),
        Some("payment.create")
    );
    assert_eq!(
        text(stream.request_header("x-correlation-id")).as_deref(),
        Some(CLIENT_CORRELATION_ID)
    );
    assert!(
        plugin.logs(LogLevel::Warn).is_empty(),
        "{:?}",
        plugin.logs(LogLevel::Warn)
    );
}

#[test]
fn each_invalid_banking_header_gets_400_problem_json_naming_it() {
    let (_host, plugin) = load_shipped();
    let cases: [(&str, Headers, &str, &str); 7] = [
        (
            "missing customer id",
            payment(&[("x-customer-id", None)]),
            "x-customer-id",
            "missing-header",
        ),
        (
            "customer id off pattern",
            payment(&[("x-customer-id", Some(b"cust 12"))]),
            "x-customer-id",
            "invalid-header-format",
        ),
        (
            "missing transaction id",
            payment(&[("x-transaction-id", None)]),
            "x-transaction-id",
            "missing-header",
        ),
        (
            "transaction id not a UUID",
            payment(&[("x-transaction-id", Some(b"txn-42"))]),
            "x-transaction-id",
            "invalid-header-format",
        ),
        (
            "missing operation",
            payment(&[("x-banking-operation", None)]),
            "x-banking-operation",
            "missing-header",
        ),
        (
            "unknown operation",
            payment(&[("x-banking-operation", Some(b"payment.teleport"))]),
            "x-banking-operation",
            "unknown-operation",
        ),
        (
            "malformed correlation id",
            payment(&[("x-correlation-id", Some(b"bad id!"))]),
            "x-correlation-id",
            "invalid-header-format",
        ),
    ];
    for (case, headers, header, kind) in &cases {
        let response = refused(&plugin, headers);
        let problem = assert_problem(&response, 400, header);
        assert_eq!(
            problem["type"],
            format!("urn:banking-filters:problem:{kind}"),
            "{case}"
        );
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(header),
            "{case}: detail does not name the header: {detail}"
        );
    }
}

#[test]
fn operation_inconsistent_with_the_route_is_refused() {
    let (_host, plugin) = load_shipped();
    let response = refused(
        &plugin,
        &payment(&[("x-banking-operation", Some(b"account.read"))]),
    );
    let problem = assert_problem(&response, 400, "x-banking-operation");
    assert_eq!(
        problem["type"],
        "urn:banking-filters:problem:operation-mismatch"
    );
    assert_eq!(
        problem["detail"],
        "x-banking-operation \"account.read\" does not match POST /payments, which expects payment.create"
    );
    // The same operation is right on its own route.
    let mut stream = plugin.stream();
    let read = payment(&[
        (":method", Some(b"GET")),
        (":path", Some(b"/accounts/42")),
        ("x-banking-operation", Some(b"account.read")),
    ]);
    assert_eq!(send(&mut stream, &read), Action::Continue);
}

#[test]
fn rejection_carries_a_correlation_id_in_body_and_header() {
    let (_host, plugin) = load_shipped();
    let response = refused(&plugin, &payment(&[("x-customer-id", None)]));
    let problem = assert_problem(&response, 400, "x-customer-id");
    let echoed = String::from_utf8(
        response
            .header("x-correlation-id")
            .expect("x-correlation-id")
            .to_vec(),
    )
    .unwrap();
    assert!(is_uuid_v4(&echoed), "{echoed}");
    assert_eq!(problem["correlationId"], echoed.as_str());
    assert_eq!(response.header("cache-control"), Some(&b"no-store"[..]));

    let response = refused(
        &plugin,
        &payment(&[
            ("x-customer-id", None),
            ("x-correlation-id", Some(CLIENT_CORRELATION_ID.as_bytes())),
        ]),
    );
    assert_eq!(
        response.header("x-correlation-id"),
        Some(CLIENT_CORRELATION_ID.as_bytes())
    );
}

#[test]
fn non_utf8_header_bytes_get_400_not_a_trap() {
    let (_host, plugin) = load_shipped();
    let banking = fixture::NON_UTF8_BANKING_HEADERS;
    for (header, value) in banking {
        let response = refused(&plugin, &payment(&[(header, Some(value))]));
        let problem = assert_problem(&response, 400, header);
        assert_eq!(
            problem["type"],
            "urn:banking-filters:problem:invalid-header-encoding"
        );
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.is_ascii(), "{header}: {detail:?}");
    }
    // Bytes in headers the filter has no opinion on pass through untouched.
    let mut stream = plugin.stream();
    assert_eq!(
        send(&mut stream, &payment(&[("x-note", Some(b"caf\xe9 \xff"))])),
        Action::Continue
    );
    assert_eq!(
        stream.request_header("x-note").as_deref(),
        Some(&b"caf\xe9 \xff"[..])
    );
    assert!(
        plugin.logs(LogLevel::Critical).is_empty(),
        "{:?}",
        plugin.logs(LogLevel::Critical)
    );
}

#[test]
fn oversized_value_is_refused_without_being_echoed() {
    let (_host, plugin) = load_shipped();
    let long_customer = format!("CUST-{}", "7".repeat(300));
    let response = refused(
        &plugin,
        &payment(&[("x-customer-id", Some(long_customer.as_bytes()))]),
    );
    let problem = assert_problem(&response, 400, "x-customer-id");
    assert_eq!(
        problem["type"],
        "urn:banking-filters:problem:header-too-long"
    );
    assert!(!response.body_text().contains(&"7".repeat(13)), "{problem}");

    let long_transaction = "a".repeat(10_000);
    let response = refused(
        &plugin,
        &payment(&[("x-transaction-id", Some(long_transaction.as_bytes()))]),
    );
    assert_problem(&response, 400, "x-transaction-id");
    assert!(
        response.body.len() < 1024,
        "the problem body grew with the value: {} bytes",
        response.body.len()
    );
}

#[test]
fn value_at_the_length_bound_passes_and_one_byte_more_is_refused() {
    let host = Host::new();
    // Istio renders every number as a float: 40.0 must mean 40.
    let config = r#"{"customerIdPattern":"[A-Z0-9-]{1,64}","maxHeaderValueLength":40.0}"#;
    let plugin = host.load(FILTER, config).unwrap_or_else(|e| panic!("{e}"));
    let at_bound = "C".repeat(40);
    let mut stream = plugin.stream();
    let headers = payment(&[
        ("x-customer-id", Some(at_bound.as_bytes())),
        ("x-banking-operation", None),
    ]);
    assert_eq!(send(&mut stream, &headers), Action::Continue);
    let over = "C".repeat(41);
    let response = refused(
        &plugin,
        &payment(&[
            ("x-customer-id", Some(over.as_bytes())),
            ("x-banking-operation", None),
        ]),
    );
    let problem = assert_problem(&response, 400, "x-customer-id");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 40"),
        "{problem}"
    );
}

#[test]
fn repeated_banking_header_is_refused() {
    let (_host, plugin) = load_shipped();
    let mut headers = payment(&[]);
    headers.push(("x-customer-id".into(), b"CUST-99999999".to_vec()));
    let response = refused(&plugin, &headers);
    let problem = assert_problem(&response, 400, "x-customer-id");
    assert_eq!(
        problem["type"],
        "urn:banking-filters:problem:duplicate-header"
    );
}

#[test]
fn missing_correlation_id_is_generated_sent_upstream_and_echoed() {
    let (_host, plugin) = load_shipped();
    let mut stream = plugin.stream();
    assert_eq!(send(&mut stream, &payment(&[])), Action::Continue);
    let generated = text(stream.request_header("x-correlation-id"))
        .expect("generated x-correlation-id upstream");
    assert!(
        is_uuid_v4(&generated),
        "{generated:?} is not a lowercase UUID v4"
    );
    assert_eq!(
        stream.response_headers(&[(":status", "200")], false),
        Action::Continue
    );
    assert_eq!(
        text(stream.response_header("x-correlation-id")),
        Some(generated.clone())
    );

    let mut second = plugin.stream();
    assert_eq!(send(&mut second, &payment(&[])), Action::Continue);
    assert_ne!(
        text(second.request_header("x-correlation-id")),
        Some(generated),
        "each request gets its own id"
    );
}

#[test]
fn well_formed_correlation_id_is_kept_and_echoed() {
    let (_host, plugin) = load_shipped();
    for id in [
        CLIENT_CORRELATION_ID,
        "123e4567-e89b-12d3-a456-426614174000",
    ] {
        let mut stream = plugin.stream();
        assert_eq!(
            send(
                &mut stream,
                &payment(&[("x-correlation-id", Some(id.as_bytes()))])
            ),
            Action::Continue
        );
        assert_eq!(
            text(stream.request_header("x-correlation-id")).as_deref(),
            Some(id)
        );
        let correlation_headers = stream
            .request_headers_now()
            .iter()
            .filter(|(n, _)| n == "x-correlation-id")
            .count();
        assert_eq!(correlation_headers, 1);
        // The upstream's own value is replaced by the request's.
        stream.response_headers(
            &[
                (":status", "201"),
                ("x-correlation-id", "upstream-made-this"),
            ],
            false,
        );
        assert_eq!(
            text(stream.response_header("x-correlation-id")).as_deref(),
            Some(id)
        );
    }
}

#[test]
fn bypass_paths_skip_the_checks() {
    let (_host, plugin) = load_shipped();
    for path in ["/healthz", "/ready", "/.well-known/openid-configuration"] {
        let mut stream = plugin.stream();
        let action = stream.request_headers(&[(":method", "GET"), (":path", path)], true);
        assert_eq!(action, Action::Continue, "{path}");
        assert!(stream.local_response().is_none(), "{path}");
        assert_eq!(
            stream.request_header("x-correlation-id"),
            None,
            "{path}: bypassed requests get no id"
        );
    }
    // A bypass prefix cannot be used to smuggle a request past the rules.
    let response = refused(
        &plugin,
        &payment(&[(":path", Some(b"/healthz/../payments"))]),
    );
    let problem = assert_problem(&response, 400, ":path");
    assert_eq!(problem["type"], "urn:banking-filters:problem:invalid-path");
    let response = refused(
        &plugin,
        &[
            (":method".to_string(), b"GET".to_vec()),
            (":path".to_string(), b"/healthzz".to_vec()),
        ],
    );
    assert_problem(&response, 400, "x-customer-id");
}

#[test]
fn internal_headers_are_stripped_before_the_upstream() {
    let (_host, plugin) = load_shipped();
    let mut stream = plugin.stream();
    let headers = payment(&[
        ("x-internal-user-role", Some(b"admin")),
        ("X-Jwt-Claim-Sub", Some(b"mallory")),
        ("x-internalish", Some(b"kept")),
    ]);
    assert_eq!(send(&mut stream, &headers), Action::Continue);
    assert_eq!(stream.request_header("x-internal-user-role"), None);
    assert_eq!(stream.request_header("x-jwt-claim-sub"), None);
    assert_eq!(
        stream.request_header("x-internalish").as_deref(),
        Some(&b"kept"[..])
    );

    // Bypassed requests are stripped too.
    let mut health = plugin.stream();
    let action = health.request_headers(
        &[
            (":method", "GET"),
            (":path", "/healthz"),
            ("x-internal-admin", "1"),
        ],
        true,
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(health.request_header("x-internal-admin"), None);
}

#[test]
fn unmatched_route_falls_back_to_the_default_rule() {
    let (_host, plugin) = load_shipped();
    let bare = [
        (":method".to_string(), b"GET".to_vec()),
        (":path".to_string(), b"/statements/2024".to_vec()),
    ];
    let problem = assert_problem(&refused(&plugin, &bare), 400, "x-customer-id");
    assert_eq!(problem["detail"], "x-customer-id is required for /");
    let mut stream = plugin.stream();
    let ok = payment(&[
        (":method", Some(b"GET")),
        (":path", Some(b"/statements/2024")),
        ("x-banking-operation", None),
    ]);
    assert_eq!(send(&mut stream, &ok), Action::Continue);
}

#[test]
fn bad_config_is_refused_with_one_log_line_naming_the_field() {
    let cases = [
        (r#"{"maxHeaderValueLenght":10}"#, "maxHeaderValueLenght"),
        (
            r#"{"maxHeaderValueLength":100.5}"#,
            "`maxHeaderValueLength`",
        ),
        (r#"{"maxHeaderValueLength":-1}"#, "`maxHeaderValueLength`"),
        (r#"{"customerIdPattern":"[0-9]+"}"#, "`customerIdPattern`"),
        (
            r#"{"rules":[{"pathPrefix":"/p","requiredHeaders":["x-account-id"]}]}"#,
            "`rules[0].requiredHeaders[0]`",
        ),
        (
            r#"{"operations":["a.b"],"rules":[{"pathPrefix":"/p","operations":["a.c"]}]}"#,
            "`rules[0].operations[0]`",
        ),
        (
            r#"{"stripRequestHeaders":["x-customer-*"]}"#,
            "`stripRequestHeaders[0]`",
        ),
        (r#"{"rules":"#, "invalid plugin configuration"),
    ];
    for (config, field) in cases {
        let host = Host::new();
        match host.load(FILTER, config) {
            Err(HarnessError::ConfigureFailed { logs }) => {
                assert_eq!(logs.len(), 1, "{config}: {logs:?}");
                assert!(
                    logs[0].contains(field),
                    "{config}: {:?} does not name {field}",
                    logs[0]
                );
            }
            Err(other) => panic!("{config}: unexpected error {other}"),
            Ok(_) => panic!("{config}: the filter accepted a bad config"),
        }
    }
}

#[test]
fn empty_config_fails_closed_with_safe_defaults() {
    let host = Host::new();
    let plugin = host.load(FILTER, "").unwrap_or_else(|e| panic!("{e}"));
    let bare = [
        (":method".to_string(), b"GET".to_vec()),
        (":path".to_string(), b"/anything".to_vec()),
    ];
    assert_problem(&refused(&plugin, &bare), 400, "x-customer-id");
    // No operations are configured, so none is accepted.
    assert_problem(&refused(&plugin, &payment(&[])), 400, "x-banking-operation");
    let mut stream = plugin.stream();
    assert_eq!(
        send(&mut stream, &payment(&[("x-banking-operation", None)])),
        Action::Continue
    );
}

#[test]
fn counters_count_each_outcome_by_name() {
    let (host, plugin) = load_shipped();
    let mut ok = plugin.stream();
    send(&mut ok, &payment(&[("x-internal-x", Some(b"1"))]));
    let mut kept = plugin.stream();
    send(
        &mut kept,
        &payment(&[("x-correlation-id", Some(CLIENT_CORRELATION_ID.as_bytes()))]),
    );
    refused(&plugin, &payment(&[("x-customer-id", None)]));
    refused(&plugin, &payment(&[("x-transaction-id", Some(b"nope"))]));
    refused(
        &plugin,
        &payment(&[("x-banking-operation", Some(b"account.read"))]),
    );
    let mut health = plugin.stream();
    health.request_headers(&[(":method", "GET"), (":path", "/healthz")], true);

    let expected = [
        ("banking_headers_allowed", 2),
        ("banking_headers_bypassed", 1),
        // Generated for the first payment and for the three refusals.
        ("banking_headers_correlation_generated", 4),
        ("banking_headers_internal_headers_stripped", 1),
        ("banking_headers_rejected_missing_header", 1),
        ("banking_headers_rejected_invalid_header_format", 1),
        ("banking_headers_rejected_operation_mismatch", 1),
        ("banking_headers_rejected_duplicate_header", 0),
        ("banking_headers_rejected_invalid_header_encoding", 0),
    ];
    for (name, count) in expected {
        assert_eq!(host.metric(name), Some(count), "{name}");
    }
}

#[test]
fn two_worker_vms_share_the_counters() {
    let host = Host::new();
    let config = shipped_config();
    let first = host.load(FILTER, &config).unwrap_or_else(|e| panic!("{e}"));
    let second = host.load(FILTER, &config).unwrap_or_else(|e| panic!("{e}"));
    for plugin in [&first, &second] {
        let mut stream = plugin.stream();
        assert_eq!(send(&mut stream, &payment(&[])), Action::Continue);
    }
    assert_eq!(host.metric("banking_headers_allowed"), Some(2));
}

// ---------------------------------------------------------------------------------------
// The host refusing what the filter needs: no trap, fail closed, the next request served.

mod fail_closed;
use fail_closed::assert_failed_closed;
use test_harness::HostStatus;

#[test]
fn host_refusing_every_call_the_filter_needs_fails_closed_and_the_vm_serves_on() {
    for call in [
        "proxy_get_header_map_pairs",
        "proxy_replace_header_map_value",
        "proxy_remove_header_map_value",
    ] {
        let (host, plugin) = load_shipped();
        // A client-sent internal header makes the filter remove one, a valid request makes
        // it set the correlation id: every call above is on this request's path.
        let headers = payment(&[("x-jwt-claim-sub", Some(b"spoofed"))]);
        host.fail_hostcall(call, HostStatus::BadArgument, 1);
        let mut stream = plugin.stream();
        let action = send(&mut stream, &headers);
        assert_failed_closed(&plugin, &stream, action, call);
        assert_eq!(
            host.metric("banking_headers_allowed").unwrap_or(0),
            0,
            "{call}"
        );

        let mut next = plugin.stream();
        assert_eq!(
            send(&mut next, &payment(&[])),
            Action::Continue,
            "after {call}"
        );
    }
}

#[test]
fn refused_local_reply_resets_the_stream_instead_of_passing_it() {
    let (host, plugin) = load_shipped();
    host.fail_hostcall("proxy_send_local_response", HostStatus::InternalFailure, 2);
    let mut stream = plugin.stream();
    let action = send(&mut stream, &payment(&[("x-customer-id", None)]));
    assert_failed_closed(&plugin, &stream, action, "proxy_send_local_response");
    assert!(stream.was_reset());
    // The next refusal is answered again.
    let reply = refused(&plugin, &payment(&[("x-customer-id", None)]));
    assert_problem(&reply, 400, "x-customer-id");
}

#[test]
fn a_refused_correlation_echo_costs_a_warning_not_the_response() {
    let (host, plugin) = load_shipped();
    let mut stream = plugin.stream();
    assert_eq!(send(&mut stream, &payment(&[])), Action::Continue);
    host.fail_hostcall("proxy_replace_header_map_value", HostStatus::BadArgument, 1);
    assert_eq!(
        stream.response_headers(&[(":status", "201")], true),
        Action::Continue
    );
    assert!(stream.response_header("x-correlation-id").is_none());
    assert!(
        plugin
            .logs(LogLevel::Warn)
            .iter()
            .any(|l| l.contains("proxy_replace_header_map_value"))
    );
    assert_eq!(plugin.failure(), None);
}

#[test]
fn refused_metrics_leave_the_filter_working_and_logged_once() {
    let host = Host::new();
    host.fail_hostcall("proxy_define_metric", HostStatus::BadArgument, 1000);
    let plugin = host
        .load(FILTER, shipped_config())
        .unwrap_or_else(|e| panic!("{e}"));
    let refusals: Vec<String> = plugin
        .logs(LogLevel::Warn)
        .into_iter()
        .filter(|l| l.contains("proxy_define_metric"))
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let mut stream = plugin.stream();
    assert_eq!(send(&mut stream, &payment(&[])), Action::Continue);
    assert!(refused(&plugin, &payment(&[("x-customer-id", None)])).status == 400);
}

#[test]
fn no_spelling_of_the_payment_route_escapes_its_operation_rule() {
    let (host, plugin) = load_shipped();
    // A read operation on the payment-creation route is refused on every spelling of it.
    let read_on = |path: &str| {
        payment(&[
            (":path", Some(path.as_bytes())),
            ("x-banking-operation", Some(b"account.read")),
        ])
    };
    let mismatch = |path: &str| {
        let problem = assert_problem(
            &refused(&plugin, &read_on(path)),
            400,
            "x-banking-operation",
        );
        assert_eq!(
            problem["type"], "urn:banking-filters:problem:operation-mismatch",
            "{path}"
        );
    };
    mismatch("/payments");
    for path in fixture::PAYMENT_PATH_SPELLINGS {
        mismatch(path);
    }
    for path in fixture::REFUSED_PAYMENT_PATHS {
        let problem = assert_problem(&refused(&plugin, &read_on(path)), 400, ":path");
        assert_eq!(
            problem["type"], "urn:banking-filters:problem:invalid-path",
            "{path}"
        );
        assert!(
            !problem["detail"].as_str().unwrap().contains("payments"),
            "{problem}"
        );
    }
    // A method no rule names under /payments: 403, not the default rule.
    let put = payment(&[(":method", Some(b"PUT"))]);
    let problem = assert_problem(&refused(&plugin, &put), 403, ":path");
    assert_eq!(
        problem["type"],
        "urn:banking-filters:problem:route-not-allowed"
    );
    let counter = |name: &str| host.metric(&format!("banking_headers_{name}")).unwrap_or(0);
    assert_eq!(
        counter("rejected_invalid_path"),
        fixture::REFUSED_PAYMENT_PATHS.len() as u64
    );
    assert_eq!(counter("rejected_route_not_allowed"), 1);
}

/// `mode: dryRun` never refuses: a request that enforcement would refuse goes on, counted as
/// `would_deny_<reason>` (not `rejected_<reason>`), recorded in filter state for the audit
/// log, logged once per reason per minute; its internal headers are still stripped.
#[test]
fn dry_run_lets_refusable_requests_through_counted_recorded_and_still_stripped() {
    let mut config: Value = serde_json::from_str(&shipped_config()).unwrap();
    config["mode"] = Value::from("dryRun");
    let host = Host::new();
    let plugin = host
        .load(FILTER, config.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    let no_customer = payment(&[("x-customer-id", None), ("x-internal-user", Some(b"admin"))]);
    for _ in 0..3 {
        let mut stream = plugin.stream();
        assert_eq!(send(&mut stream, &no_customer), Action::Continue);
        assert!(stream.local_response().is_none());
        assert_eq!(stream.request_header("x-internal-user"), None);
        assert_eq!(
            stream.property(&["banking.decision.would_deny"]),
            Some(b"banking-headers:missing-header".to_vec())
        );
        assert_eq!(stream.property(&["banking.decision.denied_by"]), None);
    }
    let mut stream = plugin.stream();
    assert_eq!(
        send(&mut stream, &payment(&[(":path", Some(b"/payments;x=1"))])),
        Action::Continue
    );
    let metric = |name: &str| host.metric(&format!("banking_headers_{name}")).unwrap_or(0);
    assert_eq!(metric("would_deny_missing_header"), 3);
    assert_eq!(metric("would_deny_invalid_path"), 1);
    assert_eq!(metric("rejected_missing_header"), 0);
    assert_eq!(metric("allowed"), 0);
    let logged = plugin.logs(LogLevel::Info);
    let lines = |reason: &str| logged.iter().filter(|l| l.contains(reason)).count();
    assert_eq!(lines("would refuse with missing-header"), 1, "{logged:?}");
    assert_eq!(lines("would refuse with invalid-path"), 1, "{logged:?}");
    // The same config enforced refuses it.
    let (_, enforcing) = load_shipped();
    let reply = refused(&enforcing, &no_customer);
    assert_eq!(reply.status, 400);
}
