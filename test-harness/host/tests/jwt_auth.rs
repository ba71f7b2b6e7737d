//! Scenarios for the jwt-auth filter, driving the real `jwt_auth.wasm` through the harness:
//! every rejection reason, each key family, remote JWKS fetches answered by the test,
//! rotation, the verified-token cache, two worker VMs sharing one fetch, and expiry on the
//! virtual clock.
//!
//! Keys are generated and tokens minted at test time (`test_tokens`, natively), with times
//! taken from the harness's virtual clock, so nothing here depends on today's date.

mod idp;

use idp::answer_jwks_fetch;
use std::time::{Duration, UNIX_EPOCH};

use envoy_runner::fixture;
use serde_json::{Value, json};
use test_harness::{Action, HarnessError, Host, LocalResponse, LogLevel, Plugin, Stream};
use test_tokens::{
    AUDIENCE, ISSUER, Key, b64, claims_at, ec256, every_family_jwks, forged, jwks, mint,
    mint_raw_hs256, other_ec256, raw, resigned, rsa,
};

const FILTER: &str = "jwt_auth";
const CLUSTER: &str = "outbound|443||idp.bank.svc.cluster.local";

// ---------------------------------------------------------------------------------------
// Tokens.

fn now_secs(host: &Host) -> u64 {
    host.now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Valid claims at the host's current time: 5 minutes left.
fn claims(host: &Host) -> Value {
    claims_at(
        now_secs(host),
        json!({
            "sub": "user-7",
            "customer_id": "CUST-00000042",
            "scope": "payments:read accounts:read",
        }),
    )
}

/// [`claims`] with members replaced (a `null` removes the member).
fn claims_with(host: &Host, changes: Value) -> Value {
    test_tokens::claims_with(claims(host), changes)
}

// ---------------------------------------------------------------------------------------
// Configurations.

fn inline_config(jwks_json: &str, extra: &str) -> String {
    format!(
        r#"{{"instance":"test","providers":[{{"issuer":"{ISSUER}","audiences":["{AUDIENCE}"],
            "allowedAlgorithms":["RS256","RS384","RS512","PS256","PS384","PS512","ES256","ES384","EdDSA","HS256"],
            "maxLifetime":"1h","requiredClaims":["sub"],"jwks":{jwks_json}}}]{extra}}}"#
    )
}

const POLICY: &str = r#","rules":[{"pathPrefix":"/payments","methods":["POST"],"requiredScopes":["payments:write"]}],
    "bypassPaths":[{"exact":"/healthz"}],"bypassCorsPreflight":true,
    "customerBinding":{"claim":"customer_id"},
    "outputs":{"claimHeaders":[{"claim":"sub","header":"x-jwt-claim-sub"}],"filterStateClaims":["customer_id"]}"#;

fn remote_config(extra_provider: &str) -> String {
    format!(
        r#"{{"instance":"test","providers":[{{"issuer":"{ISSUER}","audiences":["{AUDIENCE}"],
            "remoteJwks":{{"cluster":"{CLUSTER}","authority":"idp.bank.svc.cluster.local","path":"/.well-known/jwks.json"{extra_provider}}}}}]}}"#
    )
}

fn load(host: &Host, config: &str) -> Plugin {
    match host.load(FILTER, config) {
        Ok(p) => p,
        Err(e @ HarnessError::WasmNotBuilt { .. }) => panic!("{e} (run `make wasm`)"),
        Err(e) => panic!("{e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Requests.

fn get(stream: &mut Stream, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Action {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", "api.bank.example"),
    ];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    headers.extend_from_slice(extra);
    stream.request_headers(&headers, true)
}

fn request(
    plugin: &Plugin,
    method: &str,
    path: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> (Action, Stream) {
    let mut s = plugin.stream();
    let auth = format!("Bearer {token}");
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", method),
        (":path", path),
        ("authorization", &auth),
    ];
    headers.extend_from_slice(extra);
    let action = s.request_headers(&headers, true);
    (action, s)
}

fn passes(plugin: &Plugin, token: &str) -> bool {
    let (action, s) = request(plugin, "GET", "/accounts", token, &[]);
    action == Action::Continue && s.local_response().is_none()
}

fn refusal(plugin: &Plugin, token: &str) -> LocalResponse {
    let (action, s) = request(plugin, "GET", "/accounts", token, &[]);
    assert_eq!(action, Action::Pause);
    s.local_response()
        .expect("a refused request is answered locally")
}

fn problem(reply: &LocalResponse) -> Value {
    assert_eq!(
        reply.header("content-type"),
        Some(&b"application/problem+json"[..])
    );
    serde_json::from_slice(&reply.body).expect("problem body is JSON")
}

fn challenge(reply: &LocalResponse) -> String {
    String::from_utf8(
        reply
            .header("www-authenticate")
            .expect("a challenge")
            .to_vec(),
    )
    .unwrap()
}

/// The identity jwt-auth published on this stream (`banking.jwt.identity`), as JSON.
fn identity_of(stream: &Stream) -> Value {
    let value = stream
        .property(&["banking.jwt.identity"])
        .expect("an identity was published");
    serde_json::from_slice(&value).unwrap_or_else(|e| panic!("{e}: {value:?}"))
}

fn metric(host: &Host, what: &str) -> u64 {
    host.metric(&format!("banking_jwt_auth_{what}"))
        .unwrap_or(0)
}

/// Lets the first tick come: it starts the first JWKS fetch. `on_configure` makes no call
/// (Envoy configures a throwaway VM too) and asks for a first tick much sooner than the
/// steady 1 s one.
fn first_tick(host: &Host, plugin: &Plugin) {
    let first = plugin.tick_period().expect("a remote JWKS sets a tick");
    assert!(
        first <= Duration::from_millis(100),
        "first tick in {first:?}"
    );
    host.advance(first);
}

/// Loads a config with a remote JWKS and lets its first fetch start.
fn load_and_tick(host: &Host, config: &str) -> Plugin {
    let plugin = load(host, config);
    first_tick(host, &plugin);
    plugin
}

/// Of two workers, the one with the proxy's single JWKS fetch pending, then the other.
fn fetcher_and_other<'a>(first: &'a Plugin, second: &'a Plugin) -> (&'a Plugin, &'a Plugin) {
    if first.pending_http_calls().is_empty() {
        (second, first)
    } else {
        (first, second)
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios.

#[test]
fn valid_token_reaches_the_upstream_with_verified_identity() {
    let host = Host::new();
    let plugin = load(&host, &inline_config(&every_family_jwks(), POLICY));
    let token = mint("ES256", "ec256", claims(&host));
    let mut s = plugin.stream();
    let action = get(
        &mut s,
        "/accounts/1",
        Some(&token),
        &[
            ("x-jwt-claim-sub", "forged"),
            ("x-customer-id", "CUST-00000042"),
        ],
    );
    assert_eq!(action, Action::Continue);
    assert!(s.local_response().is_none());
    assert_eq!(
        s.request_header("x-jwt-claim-sub"),
        Some(b"user-7".to_vec())
    );
    let identity = identity_of(&s);
    assert_eq!(identity["subject"], "user-7");
    assert_eq!(identity["issuer"], ISSUER);
    assert_eq!(identity["claims"]["customer_id"], "CUST-00000042");
    assert_eq!(metric(&host, "allowed"), 1);
}

#[test]
fn each_key_family_and_algorithm_verifies() {
    // RS* and ES* by the proxy's verify_signature (BoringSSL in Envoy), the rest in Wasm.
    let host = Host::new();
    every_algorithm_verifies(&host);
    assert_eq!(metric(&host, "signature_by_proxy"), 5);
    assert_eq!(metric(&host, "signature_in_wasm"), 5);
    // The configure-time probe (RS256, RS512, ES256, ES384, each valid and altered), then
    // one call per RS*/ES* token.
    assert_eq!(host.foreign_function_calls("verify_signature"), 8 + 5);
}

#[test]
fn each_key_family_and_algorithm_verifies_in_wasm_on_a_proxy_without_verify_signature() {
    let host = Host::new().without_verify_signature();
    every_algorithm_verifies(&host);
    assert_eq!(metric(&host, "signature_by_proxy"), 0);
    assert_eq!(metric(&host, "signature_in_wasm"), 10);
}

#[test]
fn a_proxy_whose_verify_signature_accepts_a_forgery_is_not_used() {
    // A host whose function says yes to everything fails the configure-time probe.
    let host = Host::new();
    host.register_foreign_function("verify_signature", |_| Ok(vec![0x08, 0x01]));
    let plugin = load(&host, &inline_config(&every_family_jwks(), ""));
    assert!(
        plugin
            .logs(LogLevel::Warn)
            .iter()
            .any(|l| l.contains("failed its check (it accepted a forged RS256 signature)")),
        "{:?}",
        plugin.logs(LogLevel::Warn)
    );
    let good = mint("RS256", "rsa", claims(&host));
    assert!(passes(&plugin, &good));
    let forged = resigned(&good, |s| s[5] ^= 0x10);
    assert_eq!(refusal(&plugin, &forged).status, 401);
    assert_eq!(metric(&host, "signature_by_proxy"), 0);
    assert_eq!(metric(&host, "signature_in_wasm"), 2);
}

fn every_algorithm_verifies(host: &Host) {
    let plugin = load(host, &inline_config(&every_family_jwks(), ""));
    for (alg, kid) in [
        ("RS256", "rsa"),
        ("RS384", "rsa"),
        ("RS512", "rsa"),
        ("PS256", "rsa"),
        ("PS384", "rsa"),
        ("PS512", "rsa"),
        ("ES256", "ec256"),
        ("ES384", "ec384"),
        ("EdDSA", "ed25519"),
        ("HS256", "hmac"),
    ] {
        let token = mint(alg, kid, claims(host));
        assert!(passes(&plugin, &token), "{alg}");
    }
    assert_eq!(metric(host, "allowed"), 10);
}

/// (what is sent, expected status, problem slug, RFC 6750 error or None for a bare/no challenge, counter)
struct Case {
    name: &'static str,
    token: Option<String>,
    method: &'static str,
    path: &'static str,
    extra: Vec<(&'static str, String)>,
    status: u16,
    slug: &'static str,
    bearer_error: Option<&'static str>,
}

#[test]
fn every_rejection_reason_gets_its_status_challenge_problem_and_counter() {
    every_rejection_reason(Host::new());
}

#[test]
fn every_rejection_reason_holds_in_wasm_on_a_proxy_without_verify_signature() {
    every_rejection_reason(Host::new().without_verify_signature());
}

fn every_rejection_reason(host: Host) {
    let plugin = load(&host, &inline_config(&every_family_jwks(), POLICY));
    let now = now_secs(&host);
    let good = |c: Value| mint("ES256", "ec256", c);
    let case = |name, token: Option<String>, status, slug, bearer_error| Case {
        name,
        token,
        method: "GET",
        path: "/accounts",
        extra: vec![],
        status,
        slug,
        bearer_error,
    };
    let alg_none = raw(
        br#"{"alg":"none"}"#,
        claims(&host).to_string().as_bytes(),
        b"sig",
    );
    let mut cases = vec![
        case("missing token", None, 401, "missing-token", None),
        case(
            "too large",
            Some("a".repeat(9000)),
            401,
            "token-too-large",
            Some("invalid_token"),
        ),
        case(
            "malformed",
            Some("not.a-jwt".into()),
            401,
            "malformed-token",
            Some("invalid_token"),
        ),
        case(
            "alg none",
            Some(alg_none),
            401,
            "algorithm-not-allowed",
            Some("invalid_token"),
        ),
        case(
            "unknown issuer",
            Some(good(claims_with(
                &host,
                json!({"iss": "https://evil.example"}),
            ))),
            401,
            "unknown-issuer",
            Some("invalid_token"),
        ),
        case(
            "unknown kid",
            Some(mint("ES256", "who", claims(&host))),
            401,
            "unknown-key",
            Some("invalid_token"),
        ),
        case(
            "alg does not fit key",
            Some(mint("ES256", "rsa", claims(&host))),
            401,
            "key-algorithm-mismatch",
            Some("invalid_token"),
        ),
        case(
            "bad signature",
            Some(forged("ec256", claims(&host))),
            401,
            "invalid-signature",
            Some("invalid_token"),
        ),
        case(
            "expired",
            Some(good(claims_with(&host, json!({"exp": now - 61})))),
            401,
            "token-expired",
            Some("invalid_token"),
        ),
        case(
            "not yet valid",
            Some(good(claims_with(&host, json!({"nbf": now + 61})))),
            401,
            "token-not-yet-valid",
            Some("invalid_token"),
        ),
        case(
            "no exp",
            Some(good(claims_with(&host, json!({"exp": null})))),
            401,
            "missing-expiration",
            Some("invalid_token"),
        ),
        case(
            "lifetime",
            Some(good(claims_with(&host, json!({"exp": now + 7200})))),
            401,
            "lifetime-too-long",
            Some("invalid_token"),
        ),
        case(
            "required claim",
            Some(good(claims_with(&host, json!({"sub": null})))),
            401,
            "missing-claim",
            Some("invalid_token"),
        ),
        case(
            "audience",
            Some(good(claims_with(&host, json!({"aud": "other-api"})))),
            403,
            "audience-mismatch",
            Some("insufficient_scope"),
        ),
    ];
    cases.push(Case {
        method: "POST",
        path: "/payments",
        ..case(
            "scope",
            Some(good(claims(&host))),
            403,
            "insufficient-scope",
            Some("insufficient_scope"),
        )
    });
    cases.push(Case {
        extra: vec![("x-customer-id", "CUST-00000099".into())],
        ..case(
            "customer",
            Some(good(claims(&host))),
            403,
            "customer-mismatch",
            Some("insufficient_scope"),
        )
    });
    cases.push(Case {
        extra: vec![("authorization", format!("Bearer {}", good(claims(&host))))],
        ..case(
            "two tokens",
            Some(good(claims(&host))),
            400,
            "multiple-tokens",
            Some("invalid_request"),
        )
    });
    cases.push(Case {
        path: "/healthz/../payments",
        ..case(
            "path with a dot segment",
            Some(good(claims(&host))),
            400,
            "invalid-path",
            None,
        )
    });

    for c in &cases {
        let mut s = plugin.stream();
        let auth = c.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = vec![(":method", c.method), (":path", c.path)];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        for (n, v) in &c.extra {
            headers.push((n, v));
        }
        assert_eq!(
            s.request_headers(&headers, true),
            Action::Pause,
            "{}",
            c.name
        );
        let reply = s
            .local_response()
            .unwrap_or_else(|| panic!("{}: no local response", c.name));
        assert_eq!(reply.status as u16, c.status, "{}", c.name);
        let p = problem(&reply);
        // The route model's problem types are shared by every filter: no `jwt-`.
        let kind = match c.slug {
            "invalid-path" => c.slug.to_string(),
            _ => format!("jwt-{}", c.slug),
        };
        assert_eq!(
            p["type"],
            format!("urn:banking-filters:problem:{kind}"),
            "{}",
            c.name
        );
        assert_eq!(p["status"], c.status, "{}", c.name);
        let www = reply
            .header("www-authenticate")
            .map(|v| String::from_utf8(v.to_vec()).unwrap());
        match (c.bearer_error, c.slug) {
            (_, "invalid-path") => assert_eq!(www, None, "{}", c.name),
            (None, _) => assert_eq!(
                www.as_deref(),
                Some("Bearer realm=\"banking-api\""),
                "{}",
                c.name
            ),
            (Some(e), _) => {
                let www = www.unwrap_or_default();
                assert!(
                    www.starts_with("Bearer realm=\"banking-api\""),
                    "{}: {www}",
                    c.name
                );
                assert!(www.contains(&format!("error=\"{e}\"")), "{}: {www}", c.name);
            }
        }
        // Never echo the token, not even part of it.
        if let Some(t) = &c.token
            && t.len() > 20
        {
            let signature = t.rsplit('.').next().unwrap_or(t);
            assert!(!reply.body_text().contains(signature), "{}", c.name);
        }
        let counter = format!("denied_{}", c.slug.replace('-', "_"));
        let counter = match counter.as_str() {
            "denied_token_expired" => "denied_expired".to_string(),
            "denied_token_not_yet_valid" => "denied_not_yet_valid".to_string(),
            _ => counter,
        };
        assert_eq!(metric(&host, &counter), 1, "{}: counter {counter}", c.name);
    }
    assert_eq!(metric(&host, "allowed"), 0);
    for entry in plugin.all_logs() {
        for c in &cases {
            if let Some(t) = &c.token {
                assert!(
                    !entry.message.contains(t.as_str()),
                    "a log line holds a token"
                );
            }
        }
    }
}

#[test]
fn non_utf8_header_bytes_are_refused_without_trapping() {
    let host = Host::new();
    let plugin = load(&host, &inline_config(&every_family_jwks(), POLICY));
    let mut s = plugin.stream();
    let action = s.request_headers_bytes(
        &[
            (":method", b"GET".as_slice()),
            (":path", b"/accounts"),
            ("authorization", b"Bearer \xff\xfe.\xfd.\xfc"),
            ("x-customer-id", b"\xc3\x28"),
        ],
        true,
    );
    assert_eq!(action, Action::Pause);
    assert_eq!(s.local_response().unwrap().status, 401);
    assert!(plugin.logs(LogLevel::Critical).is_empty());
    assert!(plugin.failure().is_none());
}

#[test]
fn bypass_paths_and_cors_preflight_pass_without_a_token() {
    let host = Host::new();
    let plugin = load(&host, &inline_config(&every_family_jwks(), POLICY));
    let mut s = plugin.stream();
    assert_eq!(
        get(&mut s, "/healthz", None, &[("x-jwt-claim-sub", "forged")]),
        Action::Continue
    );
    assert_eq!(
        s.request_header("x-jwt-claim-sub"),
        None,
        "client copy stripped even on bypass"
    );
    let mut s = plugin.stream();
    let action = s.request_headers(
        &[
            (":method", "OPTIONS"),
            (":path", "/payments"),
            ("origin", "https://app.bank.example"),
            ("access-control-request-method", "POST"),
        ],
        true,
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(metric(&host, "bypassed"), 2);
}

#[test]
fn reused_token_is_served_from_the_cache() {
    let host = Host::new();
    let plugin = load(&host, &inline_config(&every_family_jwks(), ""));
    let token = mint("RS256", "rsa", claims(&host));
    assert!(passes(&plugin, &token));
    assert!(passes(&plugin, &token));
    assert!(passes(&plugin, &token));
    assert_eq!(metric(&host, "cache_miss"), 1);
    assert_eq!(metric(&host, "cache_hit"), 2);
}

#[test]
fn a_cache_hit_checks_no_signature_and_makes_six_hostcalls() {
    const CALLS: [&str; 8] = [
        "proxy_get_header_map_pairs",
        "proxy_get_current_time_nanoseconds",
        "proxy_call_foreign_function",
        "proxy_remove_header_map_value",
        "proxy_replace_header_map_value",
        "proxy_set_property",
        "proxy_increment_metric",
        "proxy_log",
    ];
    let host = Host::new();
    let plugin = load(&host, &inline_config(&every_family_jwks(), POLICY));
    let token = mint("RS256", "rsa", claims(&host));
    let counts = || CALLS.map(|call| host.hostcall_count(call));
    let send = |spoofed: &[(&str, &str)]| {
        let mut stream = plugin.stream();
        let action = get(&mut stream, "/accounts/1", Some(&token), spoofed);
        assert_eq!(action, Action::Continue);
        assert_eq!(
            stream.request_header("x-jwt-claim-sub"),
            Some(b"user-7".to_vec())
        );
    };
    let made = |spoofed: &[(&str, &str)]| {
        let before = counts();
        send(spoofed);
        counts()
            .iter()
            .zip(before)
            .map(|(after, before)| after - before)
            .collect::<Vec<u64>>()
    };
    send(&[]);
    // Read the headers and the time; set the claim header; publish the identity (claims
    // included) in one property; count the hit and the allow. No signature check, no log
    // line.
    assert_eq!(made(&[]), [1, 1, 0, 0, 1, 1, 2, 0]);
    // A client's copy of the claim header is removed first, whatever the host's replace
    // does with copies: one hostcall more.
    assert_eq!(
        made(&[("x-jwt-claim-sub", "forged"), ("x-jwt-claim-sub", "again")]),
        [1, 1, 0, 1, 1, 1, 2, 0]
    );
    assert_eq!(metric(&host, "cache_hit"), 2);
}

#[test]
fn token_expires_on_the_virtual_clock_even_when_cached() {
    let host = Host::new();
    let plugin = load(&host, &inline_config(&every_family_jwks(), ""));
    let now = now_secs(&host);
    let token = mint(
        "ES256",
        "ec256",
        claims_with(&host, json!({"exp": now + 120})),
    );
    assert!(passes(&plugin, &token));
    host.advance(Duration::from_secs(150));
    assert!(passes(&plugin, &token), "within the 60 s clock skew");
    host.advance(Duration::from_secs(31));
    let reply = refusal(&plugin, &token);
    assert_eq!(reply.status, 401);
    assert_eq!(
        problem(&reply)["type"],
        "urn:banking-filters:problem:jwt-token-expired"
    );
    assert!(challenge(&reply).contains("error=\"invalid_token\""));
}

#[test]
fn bad_config_is_refused_naming_the_field() {
    let host = Host::new();
    let bad = inline_config(&every_family_jwks(), "")
        .replace(r#""maxLifetime":"1h""#, r#""clockSkew":"1h""#);
    match host.load(FILTER, bad) {
        Err(HarnessError::ConfigureFailed { logs }) => {
            assert!(
                logs.iter().any(|l| l.contains("providers[0].clockSkew")),
                "{logs:?}"
            );
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a 1h clock skew must be refused"),
    }
}

// ---------------------------------------------------------------------------------------
// Remote JWKS.

#[test]
fn remote_jwks_is_fetched_at_start_and_tokens_wait_for_it_with_503() {
    let host = Host::new();
    let plugin = load(&host, &remote_config(""));
    assert!(
        plugin.pending_http_calls().is_empty(),
        "no call from on_configure"
    );
    first_tick(&host, &plugin);
    let calls = plugin.pending_http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.upstream, CLUSTER);
    assert_eq!(call.header(":method"), Some(&b"GET"[..]));
    assert_eq!(call.header(":path"), Some(&b"/.well-known/jwks.json"[..]));
    assert_eq!(
        call.header(":authority"),
        Some(&b"idp.bank.svc.cluster.local"[..])
    );
    assert_eq!(call.timeout, Some(Duration::from_secs(5)));

    let token = mint("ES256", "k1", claims(&host));
    let reply = refusal(&plugin, &token);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some(&b"1"[..]));
    assert_eq!(
        problem(&reply)["type"],
        "urn:banking-filters:problem:jwt-signing-keys-unavailable"
    );

    answer_jwks_fetch(&plugin, 200, &jwks([ec256().jwk("k1")]));
    assert!(passes(&plugin, &token));
    assert_eq!(metric(&host, "jwks_fetch_ok"), 1);
    assert!(
        plugin.logs(LogLevel::Warn).is_empty(),
        "{:?}",
        plugin.logs(LogLevel::Warn)
    );
}

#[test]
fn failed_fetch_is_retried_after_the_retry_interval() {
    let host = Host::new();
    let plugin = load_and_tick(&host, &remote_config(""));
    answer_jwks_fetch(&plugin, 500, "oops");
    assert_eq!(metric(&host, "jwks_fetch_failed"), 1);
    assert!(
        plugin
            .logs(LogLevel::Warn)
            .iter()
            .any(|l| l.contains("HTTP status 500"))
    );
    let token = mint("ES256", "k1", claims(&host));
    assert_eq!(refusal(&plugin, &token).status, 503);

    host.advance(Duration::from_secs(4));
    assert!(plugin.pending_http_calls().is_empty(), "backing off");
    host.advance(Duration::from_secs(1));
    answer_jwks_fetch(&plugin, 200, &jwks([ec256().jwk("k1")]));
    assert!(passes(&plugin, &token));
}

#[test]
fn timed_out_fetch_counts_as_a_failure() {
    let host = Host::new();
    let plugin = load_and_tick(&host, &remote_config(r#","timeout":"2s""#));
    assert_eq!(
        plugin.pending_http_calls()[0].timeout,
        Some(Duration::from_secs(2))
    );
    host.advance(Duration::from_secs(2));
    assert_eq!(metric(&host, "jwks_fetch_failed"), 1);
    assert!(
        plugin
            .logs(LogLevel::Warn)
            .iter()
            .any(|l| l.contains("timeout"))
    );
}

#[test]
fn malformed_or_oversized_sets_are_refused_and_the_last_good_set_stays() {
    let host = Host::new();
    let plugin = load_and_tick(&host, &remote_config(r#","cacheDuration":"100s""#));
    answer_jwks_fetch(&plugin, 200, &jwks([ec256().jwk("k1")]));
    let token = mint("ES256", "k1", claims(&host));
    assert!(passes(&plugin, &token));

    // Refreshed at 90% of cacheDuration.
    host.advance(Duration::from_secs(89));
    assert!(plugin.pending_http_calls().is_empty());
    host.advance(Duration::from_secs(1));
    answer_jwks_fetch(&plugin, 200, "{not json");
    assert!(
        passes(&plugin, &token),
        "last good set kept after malformed JSON"
    );

    // (A JWKS without a usable key is not a failure but the issuer's word:
    // jwt_auth_keys.rs.)
    host.advance(Duration::from_secs(5));
    let oversized: Vec<_> = (0..101).map(|i| ec256().jwk(&format!("k{i}"))).collect();
    answer_jwks_fetch(&plugin, 200, &jwks(oversized));
    assert!(
        passes(&plugin, &token),
        "last good set kept after a set of too many keys"
    );
    assert_eq!(metric(&host, "jwks_fetch_failed"), 2);
    let warnings = plugin.logs(LogLevel::Warn);
    assert!(
        warnings.iter().any(|l| l.contains("not a JWKS document")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("at most 100 are accepted")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .all(|l| l.contains("keeping the last good set")),
        "{warnings:?}"
    );
}

#[test]
fn rotation_to_a_new_kid_is_picked_up_by_a_refetch() {
    let host = Host::new();
    let plugin = load_and_tick(&host, &remote_config(""));
    answer_jwks_fetch(&plugin, 200, &jwks([ec256().jwk("k1")]));
    // The issuer rotates: new tokens name k2 (a new key).
    let new_key = Key::generate_ec256();
    let rotated = new_key.mint("ES256", "k2", claims(&host));
    let reply = refusal(&plugin, &rotated);
    assert_eq!(reply.status, 401);
    assert_eq!(
        problem(&reply)["type"],
        "urn:banking-filters:problem:jwt-unknown-key"
    );

    // At most once per minRefetchInterval (30 s) after the last fetch.
    host.advance(Duration::from_secs(29));
    assert!(plugin.pending_http_calls().is_empty());
    host.advance(Duration::from_secs(1));
    answer_jwks_fetch(&plugin, 200, &jwks([ec256().jwk("k1"), new_key.jwk("k2")]));
    assert!(passes(&plugin, &rotated));
    assert_eq!(metric(&host, "jwks_fetch_ok"), 2);
}

#[test]
fn unknown_kid_flood_refetches_at_most_once_per_interval() {
    let host = Host::new();
    let plugin = load_and_tick(&host, &remote_config(""));
    answer_jwks_fetch(&plugin, 200, &jwks([ec256().jwk("k1")]));
    let mut fetches = 0;
    for second in 0..95 {
        let kid = format!("junk-{second}");
        let junk = mint("ES256", kid.as_str(), claims(&host));
        assert_eq!(refusal(&plugin, &junk).status, 401);
        host.advance(Duration::from_secs(1));
        if !plugin.pending_http_calls().is_empty() {
            fetches += 1;
            answer_jwks_fetch(&plugin, 200, &jwks([ec256().jwk("k1")]));
        }
    }
    // Fetches at 30, 60 and 90 s.
    assert_eq!(fetches, 3);
}

#[test]
fn two_vms_share_one_fetch_and_one_key_set() {
    let host = Host::new();
    let first = load(&host, &remote_config(""));
    let second = load(&host, &remote_config(""));
    first_tick(&host, &first);
    assert_eq!(
        first.pending_http_calls().len() + second.pending_http_calls().len(),
        1,
        "one fetch for the proxy"
    );
    let (fetcher, _) = fetcher_and_other(&first, &second);
    answer_jwks_fetch(fetcher, 200, &jwks([ec256().jwk("k1")]));
    let token = mint("ES256", "k1", claims(&host));
    // The other VM takes the shared set as soon as a request needs it: no fetch of its own.
    assert!(passes(&first, &token));
    assert!(passes(&second, &token));
    host.advance(Duration::from_secs(1));
    assert!(first.pending_http_calls().is_empty() && second.pending_http_calls().is_empty());
    assert_eq!(metric(&host, "jwks_fetch_ok"), 1);
    assert!(
        host.shared_data("jwt-auth/test/jwks/outbound|443||idp.bank.svc.cluster.local/idp.bank.svc.cluster.local/.well-known/jwks.json")
            .is_some()
    );
}

#[test]
fn envoys_config_validation_vm_does_not_hold_up_the_workers_first_fetch() {
    let host = Host::new();
    // Envoy configures a VM on the main thread only to validate the config, then destroys
    // it: it must not start a fetch (the call would be lost) nor take the fetch marker.
    let validation = load(&host, &remote_config(""));
    assert!(validation.pending_http_calls().is_empty());
    drop(validation);
    let worker = load(&host, &remote_config(""));
    first_tick(&host, &worker);
    answer_jwks_fetch(&worker, 200, &jwks([ec256().jwk("k1")]));
    assert!(passes(&worker, &mint("ES256", "k1", claims(&host))));
}

#[test]
fn a_worker_uses_keys_another_worker_fetched_without_waiting_for_its_tick() {
    let host = Host::new();
    let first = load(&host, &remote_config(""));
    let second = load(&host, &remote_config(""));
    first_tick(&host, &first);
    let (fetcher, other) = fetcher_and_other(&first, &second);
    let token = mint("ES256", "k1", claims(&host));
    assert_eq!(refusal(other, &token).status, 503, "no keys anywhere yet");
    answer_jwks_fetch(fetcher, 200, &jwks([ec256().jwk("k1")]));
    assert!(passes(other, &token), "first set, before the other's tick");

    // Rotation: both refuse the new kid, both ask for a refetch; one VM makes it.
    let new_key = Key::generate_ec256();
    let rotated = new_key.mint("ES256", "k2", claims(&host));
    assert_eq!(refusal(&first, &rotated).status, 401);
    assert_eq!(refusal(&second, &rotated).status, 401);
    host.advance(Duration::from_secs(30));
    let (fetcher, other) = fetcher_and_other(&first, &second);
    assert!(other.pending_http_calls().is_empty(), "one fetch at a time");
    answer_jwks_fetch(fetcher, 200, &jwks([ec256().jwk("k1"), new_key.jwk("k2")]));
    assert!(
        passes(other, &rotated),
        "rotated set, before the other's tick"
    );
    assert_eq!(metric(&host, "jwks_fetch_ok"), 2);
}

/// Any client can send a token naming a `kid` the set lacks; it needs no signature. Before
/// refusing, the worker looks for a set another worker fetched since its last tick, but by
/// the 14-byte stamp beside the shared set, not by copying the set: with 100 keys published
/// (about 14 KB), 50 such tokens on each worker, the one that fetched the set and the one
/// that took it from shared data, read the stamp and nothing else.
#[test]
fn tokens_naming_unknown_kids_read_a_small_stamp_not_the_shared_set() {
    const STAMP_BYTES: u64 = 14;
    let host = Host::new();
    let first = load(&host, &remote_config(""));
    let second = load(&host, &remote_config(""));
    first_tick(&host, &first);
    let (fetcher, other) = fetcher_and_other(&first, &second);
    let hundred = jwks((0..100).map(|i| ec256().jwk(&format!("k{i}"))));
    // The fetch completes at a time finer than the stamp's milliseconds.
    host.advance(Duration::from_nanos(1_234_567));
    answer_jwks_fetch(fetcher, 200, &hundred);
    assert!(passes(other, &mint("ES256", "k7", claims(&host))));

    for worker in [fetcher, other] {
        let before = host.shared_data_bytes_read();
        for i in 0..50 {
            let kid = format!("junk-{i}");
            let junk = mint("ES256", kid.as_str(), claims(&host));
            let reply = refusal(worker, &junk);
            assert_eq!(
                problem(&reply)["type"],
                "urn:banking-filters:problem:jwt-unknown-key"
            );
        }
        let read = host.shared_data_bytes_read() - before;
        assert_eq!(
            read,
            50 * STAMP_BYTES,
            "bytes read for 50 tokens; the set is {} bytes",
            hundred.len()
        );
    }
}

#[test]
fn unsecured_alg_none_token_is_refused_and_counted_as_algorithm_not_allowed() {
    let host = Host::new();
    let plugin = load(&host, &inline_config(&every_family_jwks(), ""));
    // RFC 7519 §6: an unsecured JWT is `header.payload.`, its signature segment empty.
    let unsecured = raw(
        br#"{"alg":"none","typ":"JWT"}"#,
        claims(&host).to_string().as_bytes(),
        b"",
    );
    let reply = refusal(&plugin, &unsecured);
    assert_eq!(reply.status, 401);
    assert!(challenge(&reply).contains("error=\"invalid_token\""));
    assert_eq!(
        problem(&reply)["type"],
        "urn:banking-filters:problem:jwt-algorithm-not-allowed"
    );
    assert_eq!(metric(&host, "denied_algorithm_not_allowed"), 1);
    assert_eq!(metric(&host, "denied_malformed_token"), 0);

    // A real algorithm with its signature stripped is still malformed.
    let valid = mint("ES256", "ec256", claims(&host));
    let stripped = format!("{}.", valid.rsplit_once('.').unwrap().0);
    assert_eq!(
        problem(&refusal(&plugin, &stripped))["type"],
        "urn:banking-filters:problem:jwt-malformed-token"
    );
    assert_eq!(metric(&host, "denied_malformed_token"), 1);
}

#[test]
fn the_wasmplugin_config_loads_fetches_its_jwks_and_enforces_scopes() {
    let path = envoy_runner::repo_root().join("wasmplugins/jwt-auth.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let config = serde_json::to_string(&doc["spec"]["pluginConfig"]).unwrap();
    let host = Host::new();
    let plugin = load_and_tick(&host, &config);
    answer_jwks_fetch(
        &plugin,
        200,
        &jwks([
            rsa().jwk("bank-2030").key_use("sig"),
            ec256().jwk("bank-ec"),
        ]),
    );

    let token = mint("RS256", "bank-2030", claims(&host));
    let (action, s) = request(
        &plugin,
        "GET",
        "/payments/42",
        &token,
        &[("x-customer-id", "CUST-00000042")],
    );
    assert_eq!(
        action,
        Action::Continue,
        "{:?}",
        s.local_response().map(|r| r.body_text())
    );
    assert_eq!(
        s.request_header("x-jwt-claim-customer-id"),
        Some(b"CUST-00000042".to_vec())
    );

    let (action, s) = request(&plugin, "POST", "/payments", &token, &[]);
    assert_eq!(action, Action::Pause);
    let reply = s.local_response().unwrap();
    assert_eq!(reply.status, 403);
    assert!(challenge(&reply).contains("scope=\"payments:write\""));

    let writer = mint(
        "ES256",
        "bank-ec",
        claims_with(&host, json!({"scope": "payments:write"})),
    );
    let (action, _) = request(
        &plugin,
        "POST",
        "/payments",
        &writer,
        &[("x-customer-id", "CUST-00000042")],
    );
    assert_eq!(action, Action::Continue);
    let (action, _) = request(
        &plugin,
        "POST",
        "/payments",
        &writer,
        &[("x-customer-id", "CUST-00000043")],
    );
    assert_eq!(action, Action::Pause);
}

// RSA and ECDSA go through ring, whose wasm32 build uses its portable C bignum code rather
// than the x86-64 assembly the native unit tests run, so the refusals are checked here too.
#[test]
fn tampered_signatures_are_refused_in_every_key_family() {
    let host = Host::new();
    tampered_signatures_are_refused(&host);
    assert!(metric(&host, "signature_by_proxy") > 0);
}

#[test]
fn tampered_signatures_are_refused_in_wasm_on_a_proxy_without_verify_signature() {
    let host = Host::new().without_verify_signature();
    tampered_signatures_are_refused(&host);
    assert_eq!(metric(&host, "signature_by_proxy"), 0);
}

fn tampered_signatures_are_refused(host: &Host) {
    let plugin = load(host, &inline_config(&every_family_jwks(), ""));
    let n = rsa().rsa_public().n;
    let mut tampered: Vec<(String, String)> = Vec::new();
    for (alg, kid) in [
        ("RS256", "rsa"),
        ("PS256", "rsa"),
        ("ES256", "ec256"),
        ("ES384", "ec384"),
        ("EdDSA", "ed25519"),
        ("HS256", "hmac"),
    ] {
        let good = mint(alg, kid, claims(host));
        assert!(passes(&plugin, &good), "{alg}");
        tampered.push((
            format!("{alg} bit flipped"),
            resigned(&good, |s| s[5] ^= 0x10),
        ));
        tampered.push((
            format!("{alg} truncated"),
            resigned(&good, |s| {
                s.pop();
            }),
        ));
    }
    let good = mint("RS256", "rsa", claims(host));
    let n_len = n.len();
    tampered.push(("RS256 s = n".into(), resigned(&good, |s| *s = n)));
    tampered.push((
        "RS256 s > n".into(),
        resigned(&good, |s| *s = vec![0xff; n_len]),
    ));
    tampered.push((
        "RS256 leading zero".into(),
        resigned(&good, |s| s.insert(0, 0)),
    ));
    let good = mint("ES256", "ec256", claims(host));
    tampered.push(("ES256 s = 0".into(), resigned(&good, |s| s[32..].fill(0))));
    tampered.push(("ES256 r = 0".into(), resigned(&good, |s| s[..32].fill(0))));
    tampered.push((
        "ES256 s > n".into(),
        resigned(&good, |s| s[32..].fill(0xff)),
    ));
    tampered.push((
        "ES256 DER instead of r || s".into(),
        resigned(&good, |s| {
            let (r, t) = s.split_at(32);
            let mut der = vec![0x30, 0x44, 0x02, 0x20];
            der.extend_from_slice(r);
            der.extend_from_slice(&[0x02, 0x20]);
            der.extend_from_slice(t);
            *s = der;
        }),
    ));
    for (name, token) in &tampered {
        let reply = refusal(&plugin, token);
        assert_eq!(reply.status, 401, "{name}");
        assert_eq!(
            problem(&reply)["type"],
            "urn:banking-filters:problem:jwt-invalid-signature",
            "{name}"
        );
    }
    assert_eq!(
        metric(host, "denied_invalid_signature"),
        tampered.len() as u64
    );
    assert!(plugin.logs(LogLevel::Critical).is_empty());
}

#[test]
fn rsa_signature_by_another_key_under_the_published_kid_is_refused() {
    let host = Host::new();
    let token = mint("RS256", "rsa", claims(&host));
    // The published key differs from the signer's in one modulus bit: a different key.
    let mut other_n = rsa().rsa_public().n;
    other_n[100] ^= 0x04;
    let other = rsa().jwk("rsa").member("n", b64(&other_n));
    let plugin = load(&host, &inline_config(&jwks([other]), ""));
    let reply = refusal(&plugin, &token);
    assert_eq!(reply.status, 401);
    assert_eq!(metric(&host, "denied_invalid_signature"), 1);
}

// ---------------------------------------------------------------------------------------
// The host refusing what the filter needs, and workers racing: no trap, fail closed.

mod fail_closed;
use fail_closed::assert_failed_closed;
use std::cell::Cell;
use std::rc::Rc;
use test_harness::HostStatus;

#[test]
fn host_refusing_a_call_on_the_request_path_fails_closed_and_the_vm_serves_on() {
    for call in [
        "proxy_get_header_map_pairs",
        "proxy_get_current_time_nanoseconds",
        "proxy_remove_header_map_value",
        "proxy_replace_header_map_value",
        "proxy_set_property",
    ] {
        let host = Host::new();
        let plugin = load(&host, &inline_config(&every_family_jwks(), POLICY));
        let token = mint("ES256", "ec256", claims(&host));
        host.fail_hostcall(call, HostStatus::InternalFailure, 1);
        let mut stream = plugin.stream();
        // Forged claim headers to replace and (the `_` spelling) remove, claims to copy
        // into headers and filter state.
        let action = get(
            &mut stream,
            "/accounts/1",
            Some(&token),
            &[("x-jwt-claim-sub", "forged"), ("x-jwt-claim_sub", "forged")],
        );
        assert_failed_closed(&plugin, &stream, action, call);
        assert_eq!(metric(&host, "allowed"), 0, "{call}");
        assert!(
            passes(&plugin, &token),
            "the next request after a refused {call}"
        );
    }
}

#[test]
fn refused_local_reply_for_a_bad_token_resets_the_stream() {
    let host = Host::new();
    let plugin = load(&host, &inline_config(&every_family_jwks(), POLICY));
    host.fail_hostcall("proxy_send_local_response", HostStatus::BadArgument, 2);
    let mut stream = plugin.stream();
    let action = get(&mut stream, "/accounts/1", Some("not-a-jwt"), &[]);
    assert_failed_closed(&plugin, &stream, action, "proxy_send_local_response");
    assert!(stream.was_reset());
    assert_eq!(refusal(&plugin, "not-a-jwt").status, 401);
}

#[test]
fn refused_callout_is_a_failed_fetch_retried_later_and_tokens_wait_with_503() {
    let host = Host::new();
    host.fail_hostcall("proxy_http_call", HostStatus::BadArgument, 1);
    let plugin = load_and_tick(&host, &remote_config(r#","retryInterval":"2s""#));
    assert!(plugin.pending_http_calls().is_empty());
    assert_eq!(metric(&host, "jwks_fetch_failed"), 1);
    let token = mint("ES256", "k1", claims(&host));
    assert_eq!(refusal(&plugin, &token).status, 503);
    host.advance(Duration::from_secs(3));
    answer_jwks_fetch(&plugin, 200, &jwks([ec256().jwk("k1")]));
    assert!(passes(&plugin, &token));
    assert_eq!(plugin.failure(), None);
}

#[test]
fn refused_shared_data_writes_leave_the_worker_with_its_own_keys() {
    let host = Host::new();
    let plugin = load_and_tick(&host, &remote_config(""));
    // Publishing the fetched set and releasing the marker are both refused.
    host.fail_hostcall("proxy_set_shared_data", HostStatus::InternalFailure, 10);
    answer_jwks_fetch(&plugin, 200, &jwks([ec256().jwk("k1")]));
    assert_eq!(plugin.failure(), None);
    assert!(passes(&plugin, &mint("ES256", "k1", claims(&host))));
}

#[test]
fn two_workers_racing_for_the_fetch_marker_start_one_fetch() {
    let host = Host::new();
    let a = load(&host, &remote_config(""));
    let b = load(&host, &remote_config(""));
    // A's first tick reads the shared key set, the fetch marker, then the marker again to
    // take it with a CAS write. B's whole first tick runs in that last window: B takes the
    // marker and starts the fetch; A's CAS write must then lose.
    let b_fetches_in_window = Rc::new(Cell::new(None));
    let writes_after_b = Rc::new(Cell::new(0));
    let (seen, writes, b_inside, host_inside) = (
        b_fetches_in_window.clone(),
        writes_after_b.clone(),
        b.clone(),
        host.clone(),
    );
    a.after_nth_hostcall("proxy_get_shared_data", 3, move || {
        b_inside.tick();
        seen.set(Some(b_inside.pending_http_calls().len()));
        writes.set(host_inside.hostcall_count("proxy_set_shared_data"));
    });
    a.tick();
    assert_eq!(
        b_fetches_in_window.get(),
        Some(1),
        "B fetched inside A's window"
    );
    // The window really was between A's read and A's write: A wrote once after B's tick.
    assert_eq!(
        host.hostcall_count("proxy_set_shared_data"),
        writes_after_b.get() + 1,
        "A's CAS write came after B's tick"
    );
    assert_eq!(
        a.pending_http_calls().len(),
        0,
        "A wrote the marker over B's: two fetches for one proxy"
    );
    answer_jwks_fetch(&b, 200, &jwks([ec256().jwk("k1")]));
    let token = mint("ES256", "k1", claims(&host));
    assert!(passes(&a, &token) && passes(&b, &token));
}

#[test]
fn no_spelling_of_the_payment_route_escapes_its_scope_under_the_shipped_config() {
    let path = envoy_runner::repo_root().join("wasmplugins/jwt-auth.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let config = serde_json::to_string(&doc["spec"]["pluginConfig"]).unwrap();
    let host = Host::new();
    let plugin = load_and_tick(&host, &config);
    answer_jwks_fetch(&plugin, 200, &jwks([rsa().jwk("bank-2030").key_use("sig")]));
    // A reader: the shipped rules give POST /payments to payments:write only.
    let reader = mint(
        "RS256",
        "bank-2030",
        claims_with(&host, json!({"scope": "accounts:read"})),
    );
    let refusal_of = |path: &str| {
        let (action, s) = request(&plugin, "POST", path, &reader, &[]);
        assert_eq!(action, Action::Pause, "{path}");
        let reply = s.local_response().unwrap();
        (
            reply.status,
            problem(&reply)["type"].as_str().unwrap().to_string(),
        )
    };
    let insufficient = (
        403,
        "urn:banking-filters:problem:jwt-insufficient-scope".to_string(),
    );
    assert_eq!(refusal_of("/payments"), insufficient);
    for path in fixture::PAYMENT_PATH_SPELLINGS {
        assert_eq!(refusal_of(path), insufficient, "{path}");
    }
    for path in fixture::REFUSED_PAYMENT_PATHS {
        assert_eq!(
            refusal_of(path),
            (400, "urn:banking-filters:problem:invalid-path".to_string()),
            "{path}"
        );
    }
    // A method no rule names under /payments is refused, not allowed on any valid token.
    let (_, s) = request(&plugin, "PUT", "/payments/42", &reader, &[]);
    let reply = s.local_response().expect("PUT /payments is refused");
    assert_eq!(reply.status, 403);
    assert_eq!(
        problem(&reply)["type"],
        "urn:banking-filters:problem:route-not-allowed"
    );
    assert_eq!(
        metric(&host, "denied_invalid_path"),
        fixture::REFUSED_PAYMENT_PATHS.len() as u64
    );
    assert_eq!(metric(&host, "denied_route_not_allowed"), 1);
}

/// Every WasmPlugin on a proxy shares one shared-data key space (Istio sets no `vm_id`), so
/// another plugin's module can write under jwt-auth's keys. Here the harness probe, a second
/// plugin on the same host, plants a key set of its own under jwt-auth's JWKS record (in the
/// old text format stamped far in the future, in an envelope of an unknown version, and in a
/// current envelope stamped in the future) and a fetch marker held for a day. jwt-auth
/// ignores each, fetches the real keys, overwrites the record, and a token signed with the
/// planted key is refused.
#[test]
fn records_another_plugin_plants_under_jwt_auths_keys_are_ignored_and_the_real_keys_fetched() {
    const ENDPOINT: &str =
        "outbound|443||idp.bank.svc.cluster.local/idp.bank.svc.cluster.local/.well-known/jwks.json";
    let record_key = format!("jwt-auth/test/jwks/{ENDPOINT}");
    let marker_key = format!("jwt-auth/test/jwks-fetch/{ENDPOINT}");
    // The planted set publishes the attacker's P-256 key under the real kid.
    let planted_jwks = jwks([other_ec256().jwk("k1")]);
    let envelope = |version: u16, stamp_ms: u64, payload: &[u8]| {
        let mut out = b"bwf\x01".to_vec();
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&stamp_ms.to_be_bytes());
        out.extend_from_slice(payload);
        out
    };
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let far_future_ms = 4_102_444_800_000u64; // 2100-01-01
    let planted: [(&str, Vec<u8>); 3] = [
        (
            "malformed",
            format!("jwks1 {far_future_ms}\n{planted_jwks}").into_bytes(),
        ),
        ("unknown version", envelope(9, 0, planted_jwks.as_bytes())),
        (
            "future stamp",
            envelope(1, far_future_ms, planted_jwks.as_bytes()),
        ),
    ];
    for (what, value) in planted {
        let host = Host::new();
        let plugin = load(&host, &remote_config(""));
        let neighbour = host
            .load("harness_probe", "")
            .expect("run `make wasm` to build harness_probe.wasm");
        let plant = |key: &str, bytes: &[u8]| {
            let mut stream = neighbour.stream();
            let command = format!("shared-set-hex {key} {}", hex(bytes));
            stream.request_headers(&[(":path", "/"), ("x-probe", &command)], true);
            assert_eq!(
                stream.request_header("x-probe-result"),
                Some(b"ok".to_vec()),
                "{what}"
            );
        };
        plant(&record_key, &value);
        // A marker stamped now, held for a day: longer than any jwt-auth VM holds it.
        let now_ms = host.now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let mut marker = 7u64.to_be_bytes().to_vec();
        marker.extend_from_slice(&(now_ms + 86_400_000).to_be_bytes());
        plant(&marker_key, &envelope(1, now_ms, &marker));

        first_tick(&host, &plugin);
        let real_jwks = jwks([ec256().jwk("k1")]);
        answer_jwks_fetch(&plugin, 200, &real_jwks);
        let real = mint("ES256", "k1", claims(&host));
        assert!(passes(&plugin, &real), "{what}: the real key verifies");
        let reply = refusal(&plugin, &forged("k1", claims(&host)));
        assert_eq!(reply.status, 401, "{what}: the planted key is not trusted");
        assert_eq!(
            problem(&reply)["type"],
            "urn:banking-filters:problem:jwt-invalid-signature",
            "{what}"
        );
        // Overwritten by the real set: this version, stamped now, the fetched body.
        let (stored, _) = host.shared_data(&record_key).expect("the record");
        assert!(
            stored.starts_with(b"bwf\x01\x00\x01"),
            "{what}: overwritten"
        );
        let stamp = u64::from_be_bytes(stored[6..14].try_into().unwrap());
        assert!(
            stamp <= now_ms + 1_000,
            "{what}: stamped {stamp}, now {now_ms}"
        );
        assert_eq!(
            &stored[14..],
            real_jwks.as_bytes(),
            "{what}: the fetched body"
        );
        assert!(metric(&host, "shared_record_ignored") >= 1, "{what}");
        assert!(
            plugin
                .logs(LogLevel::Warn)
                .iter()
                .any(|l| l.contains("is not this plugin's")),
            "{what}: the warning names the record"
        );
    }
}

/// `mode: dryRun` never refuses: a forged token and a missing one go on, counted as
/// `would_deny_<reason>`, recorded for the audit log and logged once per reason per minute;
/// no identity is published for them and the headers jwt-auth owns are still stripped, so
/// the upstream cannot mistake a client's `x-jwt-claim-sub` for a verified one.
#[test]
fn dry_run_lets_failing_tokens_through_counted_recorded_and_stripped() {
    let host = Host::new();
    let config = inline_config(
        &jwks([ec256().jwk("k1")]),
        r#","mode":"dryRun","outputs":{"claimHeaders":[{"claim":"sub","header":"x-jwt-claim-sub"}]}"#,
    );
    let plugin = load(&host, &config);
    let forged_token = forged("k1", claims(&host));
    for _ in 0..2 {
        let (action, s) = request(
            &plugin,
            "GET",
            "/accounts",
            &forged_token,
            &[("x-jwt-claim-sub", "victim")],
        );
        assert_eq!(action, Action::Continue);
        assert!(s.local_response().is_none());
        assert_eq!(s.request_header("x-jwt-claim-sub"), None);
        // Written empty: no identity, and none a later filter can add.
        assert_eq!(s.property(&["banking.jwt.identity"]), Some(Vec::new()));
        assert_eq!(
            s.property(&["banking.decision.would_deny"]),
            Some(b"jwt-auth:invalid-signature".to_vec())
        );
    }
    let mut s = plugin.stream();
    assert_eq!(get(&mut s, "/accounts", None, &[]), Action::Continue);
    // A good token is allowed as in enforce mode, identity and all.
    let good = mint("ES256", "k1", claims(&host));
    let (action, s) = request(&plugin, "GET", "/accounts", &good, &[]);
    assert_eq!(action, Action::Continue);
    assert_eq!(identity_of(&s)["subject"], "user-7");
    assert_eq!(metric(&host, "would_deny_invalid_signature"), 2);
    assert_eq!(metric(&host, "would_deny_missing_token"), 1);
    assert_eq!(metric(&host, "denied_invalid_signature"), 0);
    assert_eq!(metric(&host, "allowed"), 1);
    let logged = plugin.logs(LogLevel::Info);
    let lines = |reason: &str| logged.iter().filter(|l| l.contains(reason)).count();
    assert_eq!(
        lines("would refuse with 401 invalid-signature"),
        1,
        "{logged:?}"
    );
    assert_eq!(
        lines("would refuse with 401 missing-token"),
        1,
        "{logged:?}"
    );
}

/// Two token faults a security review reproduced in Envoy, fixed: RFC 6749 §3.3 separates
/// scopes with the space character only, so a no-break space does not grant a second scope;
/// and a NumericDate no signed 64-bit count of seconds holds (`exp: 1e20`) is malformed, as
/// Envoy's jwt_authn has it, not a far-future expiry. Both tokens are validly signed.
#[test]
fn a_no_break_space_grants_no_scope_and_an_exp_beyond_i64_is_malformed() {
    let host = Host::new();
    let plugin = load(&host, &inline_config(&every_family_jwks(), POLICY));
    let sneaky = mint(
        "ES256",
        "ec256",
        claims_with(&host, json!({"scope": "accounts:read\u{a0}payments:write"})),
    );
    let (action, s) = request(
        &plugin,
        "POST",
        "/payments",
        &sneaky,
        &[("x-customer-id", "CUST-00000042")],
    );
    assert_eq!(action, Action::Pause);
    let reply = s.local_response().unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(
        problem(&reply)["type"],
        "urn:banking-filters:problem:jwt-insufficient-scope"
    );
    let now = now_secs(&host);
    let payload = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"user-7","iat":{},"exp":1e20}}"#,
        now - 10
    );
    let far = mint_raw_hs256(r#"{"alg":"HS256","kid":"hmac","typ":"JWT"}"#, &payload);
    let reply = refusal(&plugin, &far);
    assert_eq!(reply.status, 401);
    assert_eq!(
        problem(&reply)["type"],
        "urn:banking-filters:problem:jwt-malformed-token"
    );
}

/// The CPU-amplification fault, fixed: a token without `kid` is tried against at most four
/// keys of its algorithm (with a fifth it must name its kid), and a set of more than 100
/// keys is refused whole, here as inline keys at configure time, naming the field.
#[test]
fn a_kid_less_token_meets_at_most_four_keys_and_a_huge_set_is_refused() {
    let host = Host::new();
    let keys: Vec<Key> = (0..5).map(|_| Key::generate_ec256()).collect();
    let four = jwks(
        keys.iter()
            .take(4)
            .enumerate()
            .map(|(i, k)| k.jwk(&format!("k{i}"))),
    );
    let plugin = load(&host, &inline_config(&four, ""));
    assert!(passes(&plugin, &keys[3].mint("ES256", None, claims(&host))));
    let five = jwks(
        keys.iter()
            .enumerate()
            .map(|(i, k)| k.jwk(&format!("k{i}"))),
    );
    let plugin = load(&host, &inline_config(&five, ""));
    let reply = refusal(&plugin, &keys[0].mint("ES256", None, claims(&host)));
    assert_eq!(reply.status, 401);
    assert_eq!(
        problem(&reply)["type"],
        "urn:banking-filters:problem:jwt-malformed-token"
    );
    // Naming its kid, the same token's key is found at once.
    assert!(passes(&plugin, &keys[0].mint("ES256", "k0", claims(&host))));
    let huge = jwks((0..101).map(|i| keys[0].jwk(&format!("k{i}"))));
    let refused = host.load(FILTER, inline_config(&huge, ""));
    assert!(refused.is_err(), "a 101-key set must refuse the config");
}

// ---------------------------------------------------------------------------------------
// Lifecycle: jwt-auth acts on request headers only, so it does not export `proxy_on_delete`
// and Envoy enters its VM twice per stream, not three times.

/// `count` tokens of distinct subjects, each a cache miss the first time.
fn distinct_tokens(host: &Host, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            mint(
                "ES256",
                "ec256",
                claims_with(host, json!({"sub": format!("user-{i}")})),
            )
        })
        .collect()
}

/// [`remote_config`] with another realm: a changed configuration, as a push brings.
fn pushed_remote_config() -> String {
    remote_config("").replace(
        r#""instance":"test""#,
        r#""instance":"test","realm":"pushed""#,
    )
}

fn released_roots(plugin: &Plugin) -> Vec<String> {
    plugin
        .logs(LogLevel::Info)
        .into_iter()
        .filter(|line| line.contains("is gone from the proxy; its state is released"))
        .collect()
}

/// Without `proxy_on_delete` the module never hears that a configuration push replaced a
/// root. It asks the proxy instead (`proxy_set_effective_context` refuses a context id the
/// proxy no longer has) whenever a root is created or ticks: each push's old root, its
/// verified-token cache included, is released by the next one at the latest, so pushes do
/// not grow the VM's memory.
#[test]
fn a_configuration_push_releases_the_old_root_and_its_cache() {
    let host = Host::new();
    let config =
        |realm: &str| inline_config(&every_family_jwks(), &format!(r#","realm":"{realm}""#));
    let plugin = load(&host, &config("loaded"));
    assert!(!plugin.exports("proxy_on_delete"));
    assert!(!plugin.exports("proxy_on_done") && !plugin.exports("proxy_on_log"));
    let tokens = distinct_tokens(&host, 400);
    let mut memory = Vec::new();
    for push in 0..8 {
        plugin.reconfigure(config(&format!("push-{push}"))).unwrap();
        for token in &tokens {
            assert!(passes(&plugin, token), "push {push}");
        }
        memory.push(plugin.memory_bytes());
    }
    assert_eq!(
        metric(&host, "cache_miss"),
        8 * 400,
        "each root has its own cache"
    );
    assert!(
        memory[7] <= memory[2],
        "memory grew with pushes: {memory:?}"
    );
    // The root replaced by push n is released when push n + 1 creates its root.
    assert_eq!(released_roots(&plugin).len(), 7);
}

/// With a remote JWKS every root ticks each second. A root replaced by a push lives on, on
/// its own timer, until the proxy deletes it (Envoy waits for the streams of the old
/// configuration to end); the next tick after that releases it. The new root probes the old
/// one on each tick and then acts for itself: its own timer, its own fetches. An answer
/// other than "no such context" keeps the root, with a warning.
#[test]
fn a_replaced_root_lives_until_deleted_and_the_next_tick_releases_it() {
    let host = Host::new();
    let plugin = load_and_tick(&host, &remote_config(""));
    answer_jwks_fetch(&plugin, 200, &jwks([ec256().jwk("k1")]));
    let token = mint("ES256", "k1", claims(&host));
    assert!(passes(&plugin, &token));
    plugin.push_config(pushed_remote_config()).unwrap();
    assert!(passes(&plugin, &token), "the new root takes the shared set");
    first_tick(&host, &plugin);
    assert_eq!(
        plugin.tick_period(),
        Some(Duration::from_secs(1)),
        "the new root slowed its own timer, not the old root's"
    );
    host.advance(Duration::from_secs(3));
    assert!(
        released_roots(&plugin).is_empty(),
        "the old root is still in use"
    );
    assert!(passes(&plugin, &token));

    plugin.delete_replaced_roots().unwrap();
    plugin.fail_hostcall(
        "proxy_set_effective_context",
        HostStatus::InternalFailure,
        1,
    );
    host.advance(Duration::from_secs(1));
    assert!(
        released_roots(&plugin).is_empty(),
        "an unclear answer keeps the root"
    );
    assert!(
        plugin
            .logs(LogLevel::Warn)
            .iter()
            .any(|line| line.contains("is still in use") && line.contains("kept"))
    );
    host.advance(Duration::from_secs(1));
    assert_eq!(released_roots(&plugin).len(), 1);
    assert!(passes(&plugin, &token));
}

/// A tick probes the other roots by switching the effective context to each, then switches
/// back. If the proxy will not switch back, what the tick does next (its timer, its JWKS
/// fetches) would act for the probed root: the tick is skipped, loudly, and the next one
/// runs as usual.
#[test]
fn a_tick_that_cannot_return_to_its_own_root_is_skipped() {
    let host = Host::new();
    let plugin = load_and_tick(&host, &remote_config(""));
    answer_jwks_fetch(&plugin, 200, &jwks([ec256().jwk("k1")]));
    plugin.push_config(pushed_remote_config()).unwrap();
    let first = plugin.tick_period().expect("the new root's first tick");
    // The probe of the old root succeeds; the switch back is refused.
    let faults = host.clone();
    plugin.after_hostcall("proxy_set_effective_context", move || {
        faults.fail_hostcall(
            "proxy_set_effective_context",
            HostStatus::InternalFailure,
            1,
        );
    });
    host.advance(first);
    assert!(
        plugin
            .logs(LogLevel::Critical)
            .iter()
            .any(|line| line.contains("cannot return to context"))
    );
    assert_eq!(
        plugin.tick_period(),
        Some(first),
        "the skipped tick set no timer"
    );
    host.advance(first);
    assert_eq!(plugin.tick_period(), Some(Duration::from_secs(1)));
    assert!(plugin.failure().is_none());
}

/// Envoy creates a stream's context just before its request headers, so the module keeps
/// it only for that one callback. Streams opened together and answered in any order are
/// each decided on their own token; streams opened and never given headers (Envoy opens
/// one to log a request an earlier filter answered) are forgotten oldest first, 1,024 kept,
/// and one pushed out fails closed rather than pass unchecked.
#[test]
fn streams_are_decided_in_any_order_and_abandoned_ones_are_bounded() {
    let host = Host::new();
    let plugin = load(&host, &inline_config(&every_family_jwks(), ""));
    let good = mint("ES256", "ec256", claims(&host));
    let expired = mint(
        "ES256",
        "ec256",
        claims_with(&host, json!({"exp": now_secs(&host) - 120})),
    );
    let mut streams: Vec<Stream> = (0..3).map(|_| plugin.stream()).collect();
    assert_eq!(
        get(&mut streams[2], "/accounts", Some(&expired), &[]),
        Action::Pause
    );
    assert_eq!(
        get(&mut streams[0], "/accounts", Some(&good), &[]),
        Action::Continue
    );
    assert_eq!(get(&mut streams[1], "/accounts", None, &[]), Action::Pause);
    assert_eq!(streams[2].local_response().unwrap().status, 401);
    assert_eq!(streams[1].local_response().unwrap().status, 401);

    let mut oldest = plugin.stream();
    let mut kept = plugin.stream();
    let abandoned: Vec<Stream> = (0..1023).map(|_| plugin.stream()).collect();
    assert_eq!(
        get(&mut kept, "/accounts", Some(&good), &[]),
        Action::Continue
    );
    let memory = plugin.memory_bytes();
    let more: Vec<Stream> = (0..20_000).map(|_| plugin.stream()).collect();
    assert_eq!(
        plugin.memory_bytes(),
        memory,
        "abandoned streams are not kept"
    );
    drop((abandoned, more));
    assert!(passes(&plugin, &good));
    assert_eq!(
        get(&mut oldest, "/accounts", Some(&good), &[]),
        Action::Pause
    );
    assert_eq!(oldest.local_response().unwrap().status, 500);
    assert!(
        plugin
            .logs(LogLevel::Critical)
            .iter()
            .any(|line| line.contains("a stream context it never created"))
    );
}
