//! The jwt-auth filter in a real Envoy, configured from `wasmplugins/jwt-auth.yaml` as istiod
//! would, fetching its keys from a local JWKS server through the cluster the plugin names
//! (`outbound|443||idp.bank.svc.cluster.local`, declared locally at the server's loopback
//! address), in front of the demo upstream.
//!
//! Tokens come from `demo_services::jwt_minter`, which runs the demo-services crate's
//! `scripts/mint_jwt.py` with `.venv/bin/python`: Python's `cryptography` generates fresh
//! RSA-2048 and P-256 keys and signs every token at test time, so the filter (Envoy's
//! BoringSSL through `verify_signature`, or ring in Wasm) is checked against another
//! implementation and nothing stored can expire. `make jwt-minter` (part of `make tools` and
//! `make test`) installs it.
//!
//! The pluginConfig is the file's, except where a test says otherwise through
//! [`Setup::overrides`]: JSON pointers into pluginConfig, each replacing a value the file
//! already has. Only the remote-JWKS timers are overridden, for the rotation, outage,
//! revocation and staleness tests, whose events would otherwise take minutes
//! ([`FAST_JWKS_TIMERS`], and `maxStaleness` down to its minimum). The revocation test runs
//! two workers, each with its own VM and verified-token cache.
//!
//! jwt-auth runs alone in most tests; `runs_after_banking_headers_as_istiod_orders_them`
//! chains it behind banking-headers as istiod does (both AUTHN, banking-headers at the higher
//! priority), because that order decides who strips and who writes `x-jwt-claim-*` and which
//! refusal a client sees first.
//!
//! `a_configuration_push_takes_effect_and_every_worker_releases_the_replaced_root` has Envoy
//! discover jwt-auth's configuration over ECDS, from a file, as istiod delivers it over its
//! own ECDS, and pushes a changed one between requests.
//!
//! Each test starts its own Envoy, upstream and JWKS server on kernel-chosen loopback ports
//! and is bounded: at most `MAX_REQUESTS` requests through Envoy, each with a timeout, and
//! every wait (keys fetched, a refetch, an outage noticed) polls within `TEST_BUDGET`. Envoy's
//! log stays in `target/envoy-e2e/<test name>/envoy.log`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use demo_services::{JwksAvailability, JwksServer, SeenRequest, jwt_minter};
use envoy_runner::client::{HttpResponse, Request};
use envoy_runner::fixture::{self, EnvoyUnderTest};
use envoy_runner::{PathNormalization, WasmPlugin};
use serde_json::{Value, json};

const MAX_REQUESTS: u32 = 50;
/// How long the first JWKS fetch may take after Envoy is ready. It starts on the workers'
/// first tick, 1 ms after they are configured, so it is usually done within milliseconds;
/// the rest is slack for a busy machine.
const FIRST_KEYS_WITHIN: Duration = Duration::from_secs(10);

/// The customer the tokens belong to; also a valid `x-customer-id` for banking-headers.
const CUSTOMER_ID: &str = "CUST-00012345";
const OTHER_CUSTOMER_ID: &str = "CUST-00099999";
const SUBJECT: &str = "user-4711";
const ALL_SCOPES: &str = "payments:read payments:write accounts:read";
const TRANSACTION_ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

/// Remote-JWKS timers at the floors the filter accepts, so a rotation or an outage shows
/// within seconds: a set is refreshed 9 s after it was fetched (90% of 10 s), an unknown
/// `kid` may trigger a refetch every second, and a failed fetch is retried after a second.
const FAST_JWKS_TIMERS: [(&str, &str); 3] = [
    ("/providers/0/remoteJwks/cacheDuration", "10s"),
    ("/providers/0/remoteJwks/minRefetchInterval", "1s"),
    ("/providers/0/remoteJwks/retryInterval", "1s"),
];

fn fast_jwks_timers() -> Vec<(&'static str, Value)> {
    FAST_JWKS_TIMERS
        .iter()
        .map(|(pointer, value)| (*pointer, json!(value)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The shipped WasmPlugin.

/// What the shipped jwt-auth pluginConfig says about its one provider.
struct Provider {
    issuer: String,
    audience: String,
    cluster: String,
    authority: String,
    path: String,
}

fn provider() -> Provider {
    let config = fixture::shipped(&["jwt-auth"])[0]
        .plugin_config
        .clone()
        .expect("jwt-auth has a pluginConfig");
    let text = |pointer: &str| {
        config
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("jwt-auth pluginConfig has no string at {pointer}"))
            .to_string()
    };
    Provider {
        issuer: text("/providers/0/issuer"),
        audience: text("/providers/0/audiences/0"),
        cluster: text("/providers/0/remoteJwks/cluster"),
        authority: text("/providers/0/remoteJwks/authority"),
        path: text("/providers/0/remoteJwks/path"),
    }
}

// ---------------------------------------------------------------------------------------
// Tokens, minted by Python's `cryptography`.

/// Keys and tokens from one run of `mint_jwt.py`.
struct Minted {
    /// Public JWKs by the key's id in the request.
    keys: HashMap<String, Value>,
    tokens: HashMap<String, String>,
}

impl Minted {
    fn token(&self, id: &str) -> &str {
        self.tokens
            .get(id)
            .unwrap_or_else(|| panic!("no token {id:?} was minted"))
    }

    /// A JWKS document holding the named public keys, in that order.
    fn jwks(&self, key_ids: &[&str]) -> Value {
        let keys: Vec<Value> = key_ids
            .iter()
            .map(|id| {
                self.keys
                    .get(*id)
                    .cloned()
                    .unwrap_or_else(|| panic!("no key {id:?} was generated"))
            })
            .collect();
        json!({ "keys": keys })
    }
}

/// Runs the minter: `keys` and `tokens` as `mint_jwt.py` documents them.
fn mint(keys: Value, tokens: Value) -> Minted {
    let request = json!({ "keys": keys, "tokens": tokens });
    let answer = jwt_minter::mint(&request).unwrap_or_else(|e| panic!("{e}"));
    let map = |field: &str| -> HashMap<String, Value> {
        answer[field]
            .as_object()
            .unwrap_or_else(|| panic!("mint_jwt.py answer lacks {field}"))
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    Minted {
        keys: map("keys"),
        tokens: map("tokens")
            .into_iter()
            .map(|(k, v)| (k, v.as_str().expect("a token is a string").to_string()))
            .collect(),
    }
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

/// Claims of a token the shipped config accepts on every route, for the configured customer,
/// valid for five minutes from now, with `changes` applied (a null removes a claim). Each
/// token gets its own `jti`, so none is ever a cache hit for another.
fn claims(provider: &Provider, changes: Value) -> Value {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let now = unix_now();
    let mut claims = json!({
        "iss": provider.issuer,
        "aud": provider.audience,
        "sub": SUBJECT,
        "customer_id": CUSTOMER_ID,
        "scope": ALL_SCOPES,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": format!("e2e-{}-{}", std::process::id(), SERIAL.fetch_add(1, Ordering::SeqCst)),
    });
    for (name, value) in changes.as_object().expect("changes are an object") {
        if value.is_null() {
            claims.as_object_mut().expect("claims object").remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

fn rsa_key(id: &str, kid: &str) -> Value {
    json!({"id": id, "kty": "RSA", "kid": kid})
}

fn ec_key(id: &str, kid: &str) -> Value {
    json!({"id": id, "kty": "EC", "kid": kid})
}

/// A token the shipped config accepts, signed with `key` (see [`claims`]).
fn valid(provider: &Provider, id: &str, key: &str, alg: &str) -> Value {
    signed(id, key, alg, claims(provider, json!({})))
}

/// A valid token, id `probe`, for [`Deployment::wait_for_keys`].
fn probe(provider: &Provider, key: &str, alg: &str) -> Value {
    valid(provider, "probe", key, alg)
}

fn signed(id: &str, key: &str, alg: &str, claims: Value) -> Value {
    json!({"id": id, "key": key, "alg": alg, "claims": claims})
}

// ---------------------------------------------------------------------------------------
// Envoy, the upstream and the identity provider.

struct Setup {
    label: &'static str,
    /// WasmPlugins to chain, by name (istiod's order whatever the order here).
    plugins: &'static [&'static str],
    /// jwt-auth pluginConfig overrides: (JSON pointer, value), each replacing a value the
    /// WasmPlugin file already has (`WasmPlugin::with_config_override`).
    overrides: Vec<(&'static str, Value)>,
    /// What the JWKS server serves at first.
    jwks: Value,
    /// Whether the JWKS server is reachable when Envoy starts.
    availability: JwksAvailability,
    /// Envoy's path normalisation; Istio's default (BASE) unless a test says otherwise.
    path_normalization: PathNormalization,
    /// Envoy's worker threads, each with its own VM and verified-token cache.
    workers: u32,
    /// Deliver jwt-auth's configuration over ECDS from a file, as istiod delivers it, so
    /// the test can push a changed one ([`EnvoyUnderTest::push_plugin_config`]).
    discovered_config: bool,
}

impl Setup {
    fn new(label: &'static str, jwks: Value) -> Setup {
        Setup {
            label,
            plugins: &["jwt-auth"],
            overrides: Vec::new(),
            jwks,
            availability: JwksAvailability::Serving,
            path_normalization: PathNormalization::Base,
            workers: 1,
            discovered_config: false,
        }
    }
}

/// Envoy with the setup's plugins, the demo upstream behind it, the JWKS server it fetches
/// from, and a request budget.
struct Deployment {
    base: EnvoyUnderTest,
    jwks: JwksServer,
    /// jwt-auth as started, overrides applied.
    jwt_auth: WasmPlugin,
}

impl Deref for Deployment {
    type Target = EnvoyUnderTest;

    fn deref(&self) -> &EnvoyUnderTest {
        &self.base
    }
}

impl Deployment {
    fn start(setup: Setup) -> Deployment {
        let provider = provider();
        let plugins: Vec<WasmPlugin> = fixture::shipped(setup.plugins)
            .into_iter()
            .map(|plugin| {
                if plugin.name != "jwt-auth" {
                    return plugin;
                }
                setup
                    .overrides
                    .iter()
                    .try_fold(plugin, |plugin, (pointer, value)| {
                        plugin.with_config_override(pointer, value.clone())
                    })
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();

        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let jwks = JwksServer::start(loopback, &provider.path, setup.jwks.to_string().as_bytes())
            .expect("JWKS server");
        jwks.set_availability(setup.availability)
            .expect("JWKS server availability");
        let base = EnvoyUnderTest::start_with_workers(
            setup.label,
            &plugins,
            MAX_REQUESTS,
            setup.workers,
            |options| {
                let options = options
                    .with_cluster(&provider.cluster, jwks.addr())
                    .with_path_normalization(setup.path_normalization);
                if setup.discovered_config {
                    let dir = envoy_runner::target_dir()
                        .join("envoy-e2e")
                        .join(setup.label)
                        .join("plugin-configs");
                    return options.with_plugin_configs_in(dir);
                }
                options
            },
        );
        let jwt_auth = plugins
            .iter()
            .find(|plugin| plugin.name == "jwt-auth")
            .expect("every setup runs jwt-auth")
            .clone();
        Deployment {
            base,
            jwks,
            jwt_auth,
        }
    }

    /// The filter's counter `banking_jwt_auth_<what>` as Envoy reports it (0 before Envoy
    /// has reported it).
    fn counter(&self, what: &str) -> u64 {
        self.envoy
            .stat(&format!("banking_jwt_auth_{what}"))
            .unwrap_or(0)
    }

    /// Polls the filter's counter until it reaches `at_least`, within `within` and the test's
    /// budget. Reads Envoy's admin interface only: no request goes through the filter.
    fn wait_for_counter(&self, what: &str, at_least: u64, within: Duration) {
        let deadline = (Instant::now() + within).min(self.deadline);
        loop {
            let value = self.counter(what);
            if value >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: banking_jwt_auth_{what} is {value}, not {at_least}, after {within:?}\n{}",
                self.label,
                self.envoy.error_excerpt()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the filter has keys: the first fetch is counted, then `probe` (a valid
    /// token's request) gets through at once, whichever worker takes it: a worker without
    /// keys reads the set the fetching worker shared before refusing. The probe's request
    /// is taken off the upstream's list.
    fn wait_for_keys(&self, probe: &Request) {
        self.wait_for_counter("jwks_fetch_ok", 1, FIRST_KEYS_WITHIN);
        let response = self.send(probe);
        assert_eq!(
            response.status,
            200,
            "{}: the probe token was refused: {}",
            self.label,
            response.body_text()
        );
        self.upstream_saw();
    }

    /// Sends `request` until `done` accepts the response, pausing `pause` between tries, at
    /// most `tries` times; returns the accepted response.
    fn send_until(
        &self,
        request: &Request,
        tries: u32,
        pause: Duration,
        done: impl Fn(&HttpResponse) -> bool,
    ) -> HttpResponse {
        let mut last = None;
        for attempt in 0..tries {
            if attempt > 0 {
                std::thread::sleep(pause);
            }
            let response = self.send(request);
            if done(&response) {
                return response;
            }
            last = Some(response);
        }
        let last = last.expect("at least one try");
        panic!(
            "{}: still {} after {tries} tries {pause:?} apart: {}",
            self.label,
            last.status,
            last.body_text()
        );
    }

    /// Names of the HTTP filters in the generated bootstrap, in chain order.
    fn http_filter_names(&self) -> Vec<String> {
        self.bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"]
            .as_array()
            .expect("http_filters")
            .iter()
            .map(|f| f["name"].as_str().expect("filter name").to_string())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Requests and what they get.

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `POST /payments` (needs `payments:write`) for the tokens' customer.
fn payment(token: &str) -> Request {
    Request::post("/payments")
        .header("authorization", &bearer(token))
        .header("content-type", "application/json")
        .header("x-customer-id", CUSTOMER_ID)
        .body(br#"{"amount":"25.00","currency":"EUR"}"#)
}

/// `payment` with every header banking-headers requires on it.
fn banking_payment(token: &str) -> Request {
    payment(token)
        .header("x-transaction-id", TRANSACTION_ID)
        .header("x-banking-operation", "payment.create")
}

/// Asserts a refusal: status, RFC 6750 challenge with `bearer_error` (None: a bare
/// challenge), RFC 9457 problem of type `jwt-<slug>`; and that nothing echoes the token.
fn assert_refused(
    response: &HttpResponse,
    status: u16,
    bearer_error: Option<&str>,
    slug: &str,
    token: Option<&str>,
) -> Value {
    let case = format!("expected {status} jwt-{slug}");
    assert_eq!(response.status, status, "{case}: {}", response.body_text());
    let challenge = response
        .header_str("www-authenticate")
        .unwrap_or_else(|| panic!("{case}: no WWW-Authenticate"));
    assert!(
        challenge.starts_with("Bearer realm=\"banking-api\""),
        "{case}: {challenge}"
    );
    match bearer_error {
        Some(error) => assert!(
            challenge.contains(&format!("error=\"{error}\"")),
            "{case}: {challenge}"
        ),
        None => assert!(!challenge.contains("error="), "{case}: {challenge}"),
    }
    assert_eq!(
        response.header_str("content-type"),
        Some("application/problem+json"),
        "{case}"
    );
    let problem = response.json().unwrap_or_else(|e| {
        panic!(
            "{case}: problem is not JSON ({e}): {}",
            response.body_text()
        )
    });
    assert_eq!(problem["status"], status, "{case}: {problem}");
    assert_eq!(
        problem["type"],
        format!("urn:banking-filters:problem:jwt-{slug}"),
        "{case}: {problem}"
    );
    if let Some(token) = token {
        let signature = token.rsplit('.').next().unwrap_or_default();
        let payload = token.split('.').nth(1).unwrap_or_default();
        for part in [signature, payload] {
            if part.len() >= 16 {
                let echoed = response.body_text().contains(part)
                    || response
                        .headers
                        .iter()
                        .any(|(_, v)| String::from_utf8_lossy(v).contains(part));
                assert!(!echoed, "{case}: the response echoes the token");
            }
        }
    }
    problem
}

/// The one value of `name` the upstream received.
fn only_value<'a>(seen: &'a SeenRequest, name: &str) -> &'a str {
    let values: Vec<&[u8]> = seen
        .headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .collect();
    assert_eq!(
        values.len(),
        1,
        "{name}: the upstream received {} values: {:?}",
        values.len(),
        values
            .iter()
            .map(|v| String::from_utf8_lossy(v))
            .collect::<Vec<_>>()
    );
    std::str::from_utf8(values[0]).expect("UTF-8 header")
}

// ---------------------------------------------------------------------------------------
// Tests.

#[test]
fn admits_every_rsa_and_ecdsa_algorithm_with_keys_fetched_through_the_istio_named_cluster() {
    let provider = provider();
    let minted = mint(
        json!([
            rsa_key("rsa", "bank-rsa-1"),
            ec_key("ec", "bank-ec-1"),
            {"id": "ec384", "kty": "EC", "crv": "P-384", "kid": "bank-ec-2"},
        ]),
        json!([
            valid(&provider, "rs256", "rsa", "RS256"),
            valid(&provider, "rs384", "rsa", "RS384"),
            valid(&provider, "rs512", "rsa", "RS512"),
            valid(&provider, "es256", "ec", "ES256"),
            valid(&provider, "es384", "ec384", "ES384"),
            valid(&provider, "ps256", "rsa", "PS256"),
            probe(&provider, "ec", "ES256"),
        ]),
    );
    let mut setup = Setup::new(
        "admits_every_rsa_and_ecdsa_algorithm_with_keys_fetched_through_the_istio_named_cluster",
        minted.jwks(&["rsa", "ec", "ec384"]),
    );
    setup.overrides.push((
        "/providers/0/allowedAlgorithms",
        json!(["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]),
    ));
    let deployment = Deployment::start(setup);
    deployment.wait_for_keys(&payment(minted.token("probe")));
    // Envoy's config-validation VM may have started a fetch it then abandoned: count from here.
    let served_before = deployment.jwks.served();
    let fetch = &deployment.jwks.fetches()[0];
    assert_eq!(
        (
            fetch.method.as_str(),
            fetch.path.as_str(),
            fetch.host.as_deref()
        ),
        (
            "GET",
            provider.path.as_str(),
            Some(provider.authority.as_str())
        ),
        "the JWKS request the filter made through {}",
        provider.cluster
    );

    let algorithms = ["rs256", "rs384", "rs512", "es256", "es384", "ps256"];
    for alg in algorithms {
        let token = minted.token(alg);
        // Spoofed copies of the claim headers: the upstream must only see the filter's.
        let request = payment(token)
            .header("x-jwt-claim-sub", "mallory")
            .header("x-jwt-claim-customer-id", OTHER_CUSTOMER_ID);
        let response = deployment.send(&request);
        assert_eq!(response.status, 200, "{alg}: {}", response.body_text());
        let seen = deployment.upstream_saw();
        assert_eq!(seen.len(), 1, "{alg}");
        assert_eq!(only_value(&seen[0], "x-jwt-claim-sub"), SUBJECT, "{alg}");
        assert_eq!(
            only_value(&seen[0], "x-jwt-claim-customer-id"),
            CUSTOMER_ID,
            "{alg}"
        );
        assert_eq!(
            seen[0].header_str("authorization"),
            Some(bearer(token).as_str()),
            "{alg}: removeTokenHeader is false in the shipped config"
        );
    }
    assert_eq!(
        deployment.counter("allowed"),
        1 + algorithms.len() as u64,
        "the probe and the tokens"
    );
    // RS* and ES* (and the ES256 probe) were checked by Envoy's verify_signature, PS256 in
    // Wasm, and the filter said so when it started.
    assert_eq!(deployment.counter("signature_by_proxy"), 1 + 5);
    assert_eq!(deployment.counter("signature_in_wasm"), 1);
    assert_eq!(
        deployment.jwks.served(),
        served_before,
        "the fetched set serves every request while it is fresh: no fetch per request"
    );
    // Envoy flushes its log file every few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !deployment
        .envoy
        .log()
        .contains("signatures are checked by the proxy's verify_signature (BoringSSL)")
    {
        assert!(
            Instant::now() < deadline,
            "no start-up line naming the signature path in {:?}",
            deployment.envoy.log_path()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    deployment.assert_no_crash();
}

#[test]
fn refuses_expired_forged_unsigned_and_unknown_kid_tokens_with_401_invalid_token() {
    let provider = provider();
    let now = unix_now();
    let expired = claims(
        &provider,
        json!({"iat": now - 3000, "nbf": now - 3000, "exp": now - 600}),
    );
    let minted = mint(
        json!([
            rsa_key("rsa", "bank-rsa-1"),
            ec_key("ec", "bank-ec-1"),
            // Same kid as the bank's key, but not the bank's key.
            rsa_key("intruder", "bank-rsa-1"),
        ]),
        json!([
            signed("expired", "rsa", "RS256", expired),
            {"id": "tampered-rs256", "key": "rsa", "alg": "RS256",
             "claims": claims(&provider, json!({})), "tamper": true},
            {"id": "tampered-es256", "key": "ec", "alg": "ES256",
             "claims": claims(&provider, json!({})), "tamper": true},
            valid(&provider, "foreign-key", "intruder", "RS256"),
            {"id": "unsigned", "alg": "none", "header": {"kid": "bank-rsa-1"},
             "claims": claims(&provider, json!({}))},
            // Says `none` but carries a (valid RS256) signature anyway.
            {"id": "none-with-signature", "key": "rsa", "alg": "RS256",
             "header": {"alg": "none"}, "claims": claims(&provider, json!({}))},
            {"id": "unknown-kid", "key": "rsa", "alg": "RS256", "header": {"kid": "bank-rsa-9"},
             "claims": claims(&provider, json!({}))},
            signed("other-issuer", "rsa", "RS256",
                   claims(&provider, json!({"iss": "https://idp.elsewhere.example"}))),
            probe(&provider, "ec", "ES256"),
        ]),
    );
    let deployment = Deployment::start(Setup::new(
        "refuses_expired_forged_unsigned_and_unknown_kid_tokens_with_401_invalid_token",
        minted.jwks(&["rsa", "ec"]),
    ));
    deployment.wait_for_keys(&payment(minted.token("probe")));

    // (token, the problem slugs that are right for it). An unsecured JWT (RFC 7519 §6,
    // `alg: none` and an empty signature) is refused for its algorithm, before any key is
    // looked at.
    let cases: [(&str, &[&str]); 8] = [
        ("expired", &["token-expired"]),
        ("tampered-rs256", &["invalid-signature"]),
        ("tampered-es256", &["invalid-signature"]),
        ("foreign-key", &["invalid-signature"]),
        ("unsigned", &["algorithm-not-allowed"]),
        ("none-with-signature", &["algorithm-not-allowed"]),
        ("unknown-kid", &["unknown-key"]),
        ("other-issuer", &["unknown-issuer"]),
    ];
    let mut refusals: HashMap<String, u64> = HashMap::new();
    for (id, slugs) in cases {
        let token = minted.token(id);
        let response = deployment.send(&payment(token));
        let slug = response
            .json()
            .ok()
            .and_then(|p| p["type"].as_str().map(str::to_string))
            .and_then(|t| {
                t.strip_prefix("urn:banking-filters:problem:jwt-")
                    .map(str::to_string)
            })
            .filter(|slug| slugs.contains(&slug.as_str()))
            .unwrap_or_else(|| slugs[0].to_string());
        assert_refused(&response, 401, Some("invalid_token"), &slug, Some(token));
        assert!(
            deployment.upstream_saw().is_empty(),
            "{id}: a refused request reached the upstream"
        );
        *refusals.entry(slug).or_default() += 1;
    }
    // No credentials at all: RFC 6750 §3.1, a challenge without an error code.
    let mut anonymous = payment("x");
    anonymous
        .headers
        .retain(|(name, _)| name != "authorization");
    assert_refused(
        &deployment.send(&anonymous),
        401,
        None,
        "missing-token",
        None,
    );
    assert!(deployment.upstream_saw().is_empty());

    // Each refusal is counted under its reason, `banking_jwt_auth_denied_<reason>`.
    for (slug, expected) in &refusals {
        let reason = slug
            .strip_prefix("token-")
            .unwrap_or(slug)
            .replace('-', "_");
        assert_eq!(
            deployment.counter(&format!("denied_{reason}")),
            *expected,
            "{slug}"
        );
    }
    assert_eq!(deployment.counter("allowed"), 1, "only the probe");
    deployment.assert_no_crash();
}

#[test]
fn refuses_wrong_audience_missing_scope_and_another_customers_id_with_403() {
    let provider = provider();
    let minted = mint(
        json!([ec_key("ec", "bank-ec-1")]),
        json!([
            signed(
                "other-audience",
                "ec",
                "ES256",
                claims(&provider, json!({"aud": "cards-api"}))
            ),
            signed(
                "read-only",
                "ec",
                "ES256",
                claims(&provider, json!({"scope": "payments:read"}))
            ),
            valid(&provider, "full", "ec", "ES256"),
            probe(&provider, "ec", "ES256"),
        ]),
    );
    let deployment = Deployment::start(Setup::new(
        "refuses_wrong_audience_missing_scope_and_another_customers_id_with_403",
        minted.jwks(&["ec"]),
    ));
    deployment.wait_for_keys(&payment(minted.token("probe")));

    // As Envoy's jwt_authn does, a token for another API is a 403, not a 401: it is a valid
    // token, just not for this audience.
    let token = minted.token("other-audience");
    let response = deployment.send(&payment(token));
    assert_refused(
        &response,
        403,
        Some("insufficient_scope"),
        "audience-mismatch",
        Some(token),
    );

    let token = minted.token("read-only");
    let response = deployment.send(&payment(token));
    assert_refused(
        &response,
        403,
        Some("insufficient_scope"),
        "insufficient-scope",
        Some(token),
    );
    let challenge = response.header_str("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("scope=\"payments:write\""),
        "the challenge names the scope POST /payments needs: {challenge}"
    );
    // The same token may read payments.
    let read = Request::get("/payments/42")
        .header("authorization", &bearer(token))
        .header("x-customer-id", CUSTOMER_ID);
    assert_eq!(deployment.send(&read).status, 200);
    assert_eq!(deployment.upstream_saw().len(), 1);

    // A customer's valid token acting on another customer's accounts.
    let token = minted.token("full");
    let mut other_customer = payment(token);
    other_customer
        .headers
        .retain(|(name, _)| name != "x-customer-id");
    let other_customer = other_customer.header("x-customer-id", OTHER_CUSTOMER_ID);
    assert_refused(
        &deployment.send(&other_customer),
        403,
        Some("insufficient_scope"),
        "customer-mismatch",
        Some(token),
    );
    assert!(deployment.upstream_saw().is_empty());
    // Its own customer: allowed (the verification was cached, the binding is still checked).
    assert_eq!(deployment.send(&payment(token)).status, 200);

    assert_eq!(deployment.counter("denied_audience_mismatch"), 1);
    assert_eq!(deployment.counter("denied_insufficient_scope"), 1);
    assert_eq!(deployment.counter("denied_customer_mismatch"), 1);
    deployment.assert_no_crash();
}

#[test]
fn picks_up_a_rotated_signing_key_after_an_unknown_kid_refetch() {
    let provider = provider();
    let minted = mint(
        json!([
            ec_key("old", "bank-2026-01"),
            rsa_key("new", "bank-2026-02")
        ]),
        json!([
            valid(&provider, "old", "old", "ES256"),
            valid(&provider, "new", "new", "RS256"),
            valid(&provider, "old-after-rotation", "old", "ES256"),
        ]),
    );
    let mut setup = Setup::new(
        "picks_up_a_rotated_signing_key_after_an_unknown_kid_refetch",
        minted.jwks(&["old"]),
    );
    setup.overrides = fast_jwks_timers();
    let deployment = Deployment::start(setup);
    // The old key's token gets through once the first set is in.
    deployment.wait_for_keys(&payment(minted.token("old")));

    // The identity provider rotates: the new key replaces the old one.
    let served_before = deployment.jwks.served();
    deployment
        .jwks
        .set_document(minted.jwks(&["new"]).to_string().as_bytes());
    let new_token = minted.token("new");
    let first = deployment.send(&payment(new_token));
    assert_refused(
        &first,
        401,
        Some("invalid_token"),
        "unknown-key",
        Some(new_token),
    );
    // The unknown kid asks for a refetch, at most once per minRefetchInterval (1 s here);
    // the filter fetches from its next tick.
    let accepted =
        deployment.send_until(&payment(new_token), 16, Duration::from_millis(500), |r| {
            r.status == 200
        });
    assert_eq!(accepted.status, 200);
    assert!(
        deployment.jwks.served() > served_before,
        "the rotated set was fetched again"
    );
    assert!(deployment.counter("jwks_fetch_ok") >= 2);

    // The old key is gone from the set: a fresh token signed with it is refused.
    let old_token = minted.token("old-after-rotation");
    assert_refused(
        &deployment.send(&payment(old_token)),
        401,
        Some("invalid_token"),
        "unknown-key",
        Some(old_token),
    );
    deployment.assert_no_crash();
}

#[test]
fn keeps_the_last_good_key_set_while_the_jwks_server_fails_or_is_down() {
    let provider = provider();
    let minted = mint(
        json!([rsa_key("rsa", "bank-rsa-1")]),
        json!([
            valid(&provider, "before", "rsa", "RS256"),
            valid(&provider, "while-failing", "rsa", "RS256"),
            valid(&provider, "while-down", "rsa", "RS256"),
            valid(&provider, "after-recovery", "rsa", "RS256"),
        ]),
    );
    let mut setup = Setup::new(
        "keeps_the_last_good_key_set_while_the_jwks_server_fails_or_is_down",
        minted.jwks(&["rsa"]),
    );
    setup.overrides = fast_jwks_timers();
    let deployment = Deployment::start(setup);
    deployment.wait_for_keys(&payment(minted.token("before")));

    // The identity provider breaks. The refresh due 9 s after the fetch fails, and so does
    // its retry a second later: by then the set is past its 10 s cacheDuration.
    deployment
        .jwks
        .set_availability(JwksAvailability::ServerError)
        .expect("JWKS server fails");
    deployment.wait_for_counter("jwks_fetch_failed", 2, Duration::from_secs(30));
    assert!(
        deployment.jwks.fetches().iter().any(|f| f.status == 500),
        "the refresh really reached the failing server"
    );
    // A token never seen before (no verified-token cache hit) still verifies: the stale
    // set is kept.
    let response = deployment.send(&payment(minted.token("while-failing")));
    assert_eq!(response.status, 200, "{}", response.body_text());

    // Now it is down altogether: connections are refused.
    deployment
        .jwks
        .set_availability(JwksAvailability::Refusing)
        .expect("JWKS server down");
    let failed = deployment.counter("jwks_fetch_failed");
    deployment.wait_for_counter("jwks_fetch_failed", failed + 1, Duration::from_secs(15));
    let response = deployment.send(&payment(minted.token("while-down")));
    assert_eq!(response.status, 200, "{}", response.body_text());

    // It comes back: the next refresh succeeds.
    deployment
        .jwks
        .set_availability(JwksAvailability::Serving)
        .expect("JWKS server back");
    deployment.wait_for_counter("jwks_fetch_ok", 2, Duration::from_secs(15));
    let response = deployment.send(&payment(minted.token("after-recovery")));
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert_eq!(deployment.counter("allowed"), 4);
    deployment.assert_no_crash();
}

/// The problem type of a refusal, or "" for an answer that is not a problem.
fn problem_type(response: &HttpResponse) -> String {
    response
        .json()
        .ok()
        .and_then(|problem| problem["type"].as_str().map(str::to_string))
        .unwrap_or_default()
}

const NO_USABLE_KEY: &str = "urn:banking-filters:problem:jwt-no-usable-key";

/// A 503 for keys the filter cannot use yet or any more: retried after a second, a problem
/// body of type `jwt-<slug>`, no bearer challenge (the token is not at fault).
fn assert_keys_unavailable(response: &HttpResponse, slug: &str) {
    assert_eq!(response.status, 503, "{}", response.body_text());
    assert_eq!(response.header_str("retry-after"), Some("1"));
    assert_eq!(
        response.header_str("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        problem_type(response),
        format!("urn:banking-filters:problem:jwt-{slug}"),
        "{}",
        response.body_text()
    );
    assert_eq!(response.header_str("www-authenticate"), None);
}

#[test]
fn a_fetched_set_without_a_usable_key_revokes_cached_tokens_on_every_worker() {
    let provider = provider();
    let minted = mint(
        json!([rsa_key("rsa", "bank-rsa-1"), ec_key("ec", "bank-ec-1")]),
        json!([
            valid(&provider, "cached", "rsa", "RS256"),
            valid(&provider, "other-kid", "ec", "ES256"),
        ]),
    );
    let mut setup = Setup::new(
        "a_fetched_set_without_a_usable_key_revokes_cached_tokens_on_every_worker",
        minted.jwks(&["rsa"]),
    );
    setup.overrides = fast_jwks_timers();
    setup.workers = 2;
    let deployment = Deployment::start(setup);
    let cached = minted.token("cached");
    let (start_0, start_1) = deployment.worker_connections();
    deployment.wait_for_keys(&payment(cached));
    // The token is verified and cached by each worker: sent until both have taken it.
    let mut primed = 0;
    loop {
        let (now_0, now_1) = deployment.worker_connections();
        if now_0 > start_0 && now_1 > start_1 {
            break;
        }
        assert!(primed < 12, "one worker took every connection");
        let response = deployment.send(&payment(cached));
        assert_eq!(response.status, 200, "{}", response.body_text());
        primed += 1;
    }
    assert_eq!(deployment.upstream_saw().len(), primed);

    // The identity provider revokes its only key: the set it now publishes is empty. A
    // token with a kid the set lacks asks for the refetch at once (not at the refresh 9 s
    // on); the empty set is installed, not treated as a failed fetch.
    deployment.jwks.set_document(br#"{"keys":[]}"#);
    let other = payment(minted.token("other-kid"));
    deployment.send_until(&other, 8, Duration::from_millis(500), |r| {
        problem_type(r) == NO_USABLE_KEY
    });
    // The other worker reads the shared set on its next tick (every second).
    std::thread::sleep(Duration::from_secs(3));

    // The cached verification is not reused on any worker.
    let (before_0, before_1) = deployment.worker_connections();
    for _ in 0..12 {
        let response = deployment.send(&payment(cached));
        assert_refused(
            &response,
            401,
            Some("invalid_token"),
            "no-usable-key",
            Some(cached),
        );
    }
    let (after_0, after_1) = deployment.worker_connections();
    assert!(
        after_0 > before_0 && after_1 > before_1,
        "both workers took some of the refused requests: worker_0 {before_0}->{after_0}, \
         worker_1 {before_1}->{after_1}"
    );
    assert!(deployment.upstream_saw().is_empty(), "failed closed");
    // Envoy writes its log file out every few seconds.
    let warning = format!("JWKS of issuer {} holds no usable key", provider.issuer);
    let logged_by = Instant::now() + Duration::from_secs(15);
    while !deployment.envoy.log().contains(&warning) {
        assert!(
            Instant::now() < logged_by,
            "no warning names the issuer whose set holds no usable key"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The key is published again: while the set holds no usable key every token asks for
    // a refetch, so the cached token soon gets through again.
    deployment
        .jwks
        .set_document(minted.jwks(&["rsa"]).to_string().as_bytes());
    deployment.send_until(&payment(cached), 16, Duration::from_millis(500), |r| {
        r.status == 200
    });
    assert!(deployment.counter("denied_no_usable_key") >= 12);
    deployment.assert_no_crash();
}

#[test]
fn a_set_not_refreshed_for_max_staleness_is_no_longer_trusted_until_a_fetch_succeeds() {
    let provider = provider();
    let minted = mint(
        json!([rsa_key("rsa", "bank-rsa-1")]),
        json!([
            valid(&provider, "cached", "rsa", "RS256"),
            valid(&provider, "new", "rsa", "RS256"),
        ]),
    );
    let mut setup = Setup::new(
        "a_set_not_refreshed_for_max_staleness_is_no_longer_trusted_until_a_fetch_succeeds",
        minted.jwks(&["rsa"]),
    );
    // The shortest staleness allowed: one cacheDuration (10 s here).
    setup.overrides = fast_jwks_timers();
    setup
        .overrides
        .push(("/providers/0/remoteJwks/maxStaleness", json!("10s")));
    let deployment = Deployment::start(setup);
    let cached = minted.token("cached");
    deployment.wait_for_keys(&payment(cached));

    // The identity provider goes down. Within 10 s of the last good fetch the set stops
    // being trusted: even the verification this worker cached is not reused.
    deployment
        .jwks
        .set_availability(JwksAvailability::Refusing)
        .expect("JWKS server down");
    let refused = deployment.send_until(&payment(cached), 30, Duration::from_millis(500), |r| {
        r.status != 200
    });
    for response in [refused, deployment.send(&payment(minted.token("new")))] {
        assert_keys_unavailable(&response, "signing-keys-stale");
    }
    // Only the requests sent while the set was still trusted reached the upstream.
    // (The first one, the probe, was taken off the upstream's list by wait_for_keys.)
    let through = u64::try_from(deployment.upstream_saw().len()).unwrap_or(u64::MAX);
    assert_eq!(
        deployment.counter("allowed"),
        through + 1,
        "nothing refused reached the upstream"
    );
    assert!(deployment.counter("jwks_fetch_failed") >= 1);

    // It comes back: the next retry succeeds and the tokens pass again.
    deployment
        .jwks
        .set_availability(JwksAvailability::Serving)
        .expect("JWKS server back");
    deployment.send_until(&payment(cached), 16, Duration::from_millis(500), |r| {
        r.status == 200
    });
    let response = deployment.send(&payment(minted.token("new")));
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert!(deployment.counter("denied_keys_stale") >= 2);
    deployment.assert_no_crash();
}

#[test]
fn answers_503_with_retry_after_until_the_first_key_set_arrives() {
    let provider = provider();
    let minted = mint(
        json!([ec_key("ec", "bank-ec-1")]),
        json!([valid(&provider, "valid", "ec", "ES256")]),
    );
    let mut setup = Setup::new(
        "answers_503_with_retry_after_until_the_first_key_set_arrives",
        minted.jwks(&["ec"]),
    );
    setup.overrides = fast_jwks_timers();
    setup.availability = JwksAvailability::Refusing;
    let deployment = Deployment::start(setup);
    deployment.wait_for_counter("jwks_fetch_failed", 1, FIRST_KEYS_WITHIN);

    let token = minted.token("valid");
    assert_keys_unavailable(
        &deployment.send(&payment(token)),
        "signing-keys-unavailable",
    );
    assert!(deployment.upstream_saw().is_empty(), "failed closed");

    deployment
        .jwks
        .set_availability(JwksAvailability::Serving)
        .expect("JWKS server up");
    deployment.send_until(&payment(token), 16, Duration::from_millis(500), |r| {
        r.status == 200
    });
    assert_eq!(deployment.upstream_saw().len(), 1);
    assert!(deployment.counter("denied_keys_unavailable") >= 1);
    deployment.assert_no_crash();
}

#[test]
fn runs_after_banking_headers_as_istiod_orders_them() {
    let provider = provider();
    let minted = mint(
        json!([ec_key("ec", "bank-ec-1")]),
        json!([
            valid(&provider, "valid", "ec", "ES256"),
            probe(&provider, "ec", "ES256"),
        ]),
    );
    let mut setup = Setup::new(
        "runs_after_banking_headers_as_istiod_orders_them",
        minted.jwks(&["ec"]),
    );
    setup.plugins = &["jwt-auth", "banking-headers"];
    let deployment = Deployment::start(setup);
    assert_eq!(
        deployment.http_filter_names(),
        [
            "istio-system.banking-headers",
            "istio-system.jwt-auth",
            "envoy.filters.http.router"
        ],
        "both AUTHN; banking-headers has the higher priority"
    );
    deployment.wait_for_keys(&banking_payment(minted.token("probe")));

    let token = minted.token("valid");
    let response = deployment
        .send(&banking_payment(token).header("x-jwt-claim-customer-id", OTHER_CUSTOMER_ID));
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen = deployment.upstream_saw();
    assert_eq!(
        only_value(&seen[0], "x-jwt-claim-customer-id"),
        CUSTOMER_ID,
        "banking-headers strips the spoofed claim header, then jwt-auth writes the verified one"
    );
    assert_eq!(only_value(&seen[0], "x-jwt-claim-sub"), SUBJECT);
    assert!(
        seen[0].header("x-correlation-id").is_some(),
        "banking-headers ran"
    );

    // A malformed banking header is refused by banking-headers before any token work.
    let mut malformed = banking_payment("not-a-token");
    malformed
        .headers
        .retain(|(name, _)| name != "x-customer-id");
    let response = deployment.send(&malformed.header("x-customer-id", "cust 12"));
    assert_eq!(response.status, 400, "{}", response.body_text());
    assert_eq!(deployment.counter("denied_malformed_token"), 0);

    // Well-formed banking headers without a token: jwt-auth's 401.
    let mut anonymous = banking_payment(token);
    anonymous
        .headers
        .retain(|(name, _)| name != "authorization");
    assert_refused(
        &deployment.send(&anonymous),
        401,
        None,
        "missing-token",
        None,
    );

    // Health checks pass both filters without a token.
    assert_eq!(deployment.send(&Request::get("/healthz")).status, 200);
    assert_eq!(deployment.upstream_saw().len(), 1);
    deployment.assert_no_crash();
}

/// A token that may read but not pay is refused `POST /payments` on every spelling of that
/// route, with Envoy's path normalisation on (Istio's default) or off: the spellings of the
/// same resource meet the scope rule (403), the ones an upstream may read as another resource
/// are refused outright (400 `invalid-path`), and a method no rule names under `/payments` is
/// refused (403 `route-not-allowed`) rather than allowed on any valid token.
#[test]
fn no_spelling_of_the_payment_route_escapes_its_scope_with_normalization_on_or_off() {
    let provider = provider();
    let minted = mint(
        json!([ec_key("ec", "bank-ec-1")]),
        json!([
            signed(
                "reader",
                "ec",
                "ES256",
                claims(&provider, json!({"scope": "payments:read accounts:read"}))
            ),
            probe(&provider, "ec", "ES256"),
        ]),
    );
    for (label, normalization) in [
        (
            "jwt_route_spellings_with_istio_default_normalization",
            PathNormalization::Base,
        ),
        (
            "jwt_route_spellings_without_normalization",
            PathNormalization::None,
        ),
    ] {
        let mut setup = Setup::new(label, minted.jwks(&["ec"]));
        setup.path_normalization = normalization;
        let deployment = Deployment::start(setup);
        deployment.wait_for_keys(&payment(minted.token("probe")));
        let token = minted.token("reader");
        let at = |method: &str, path: &str| {
            let mut request = payment(token);
            request.method = method.to_string();
            request.path = path.to_string();
            deployment.send(&request)
        };
        assert_refused(
            &at("POST", "/payments"),
            403,
            Some("insufficient_scope"),
            "insufficient-scope",
            Some(token),
        );
        for path in fixture::PAYMENT_PATH_SPELLINGS {
            let response = at("POST", path);
            assert_eq!(
                response.status,
                403,
                "{label}: {path}: {}",
                response.body_text()
            );
            assert!(
                response.body_text().contains(":jwt-insufficient-scope"),
                "{label}: {path}"
            );
        }
        for path in fixture::REFUSED_PAYMENT_PATHS {
            let response = at("POST", path);
            assert_eq!(
                response.status,
                400,
                "{label}: {path}: {}",
                response.body_text()
            );
            let problem = response.json().unwrap_or_default();
            assert_eq!(
                problem["type"], "urn:banking-filters:problem:invalid-path",
                "{label}: {path}"
            );
        }
        let response = at("PUT", "/Payments/42");
        assert_eq!(response.status, 403, "{label}: {}", response.body_text());
        assert_eq!(
            response.json().unwrap_or_default()["type"],
            "urn:banking-filters:problem:route-not-allowed"
        );
        assert!(deployment.upstream_saw().is_empty(), "{label}");
        deployment.assert_no_crash();
    }
}

/// istiod delivers a WasmPlugin's filter over ECDS, and a changed `pluginConfig` with the
/// same module reaches each running VM as a new root context; the old root is then deleted.
/// jwt-auth does not export `proxy_on_delete` (Envoy enters its VM twice per request, not
/// three times), so it is not told: it asks Envoy, which refuses to switch to a context it
/// no longer has, and releases the old root, keys and verified-token cache included, at the
/// new root's next tick. Requests are served throughout, the new ones under the new
/// configuration.
#[test]
fn a_configuration_push_takes_effect_and_every_worker_releases_the_replaced_root() {
    const LABEL: &str =
        "a_configuration_push_takes_effect_and_every_worker_releases_the_replaced_root";
    const RELEASED: &str = "is gone from the proxy; its state is released";
    let provider = provider();
    let minted = mint(
        json!([ec_key("ec", "bank-ec-1")]),
        json!([valid(&provider, "caller", "ec", "ES256")]),
    );
    let mut setup = Setup::new(LABEL, minted.jwks(&["ec"]));
    setup.workers = 2;
    setup.discovered_config = true;
    let deployment = Deployment::start(setup);
    let token = minted.token("caller");
    deployment.wait_for_keys(&payment(token));
    let challenge = |response: &HttpResponse| {
        response
            .header_str("www-authenticate")
            .unwrap_or_default()
            .to_string()
    };
    let tokenless = Request::get("/accounts/1");
    let before = deployment.send(&tokenless);
    assert!(
        challenge(&before).contains(r#"realm="banking-api""#),
        "{}",
        challenge(&before)
    );
    assert!(!deployment.envoy.log().contains(RELEASED));

    let pushed = deployment
        .jwt_auth
        .clone()
        .with_config_override("/realm", json!("pushed-realm"))
        .unwrap_or_else(|e| panic!("{e}"));
    deployment.push_plugin_config(&pushed);
    deployment.send_until(&tokenless, 20, Duration::from_millis(250), |response| {
        challenge(response).contains(r#"realm="pushed-realm""#)
    });
    // The new roots take the keys the old ones fetched from shared data.
    let response = deployment.send(&payment(token));
    assert_eq!(response.status, 200, "{}", response.body_text());

    // Envoy's log lines start `[time][thread id][level][component]`. Its main thread, the
    // one logging as `main`, has a VM of its own besides each worker's.
    let thread_and_component = |line: &str| -> Option<(String, String)> {
        let mut fields = line.split(['[', ']']).filter(|field| !field.is_empty());
        let thread = fields.nth(1)?.to_string();
        let component = fields.nth(1)?.to_string();
        Some((thread, component))
    };
    let main_thread = deployment
        .envoy
        .log()
        .lines()
        .filter_map(thread_and_component)
        .find(|(_, component)| component == "main")
        .map(|(thread, _)| thread)
        .expect("Envoy's main thread logs as `main`");
    let releasing_workers = || -> std::collections::HashSet<String> {
        deployment
            .envoy
            .log()
            .lines()
            .filter(|line| line.contains(RELEASED))
            .filter_map(thread_and_component)
            .map(|(thread, _)| thread)
            .filter(|thread| *thread != main_thread)
            .collect()
    };
    let deadline = (Instant::now() + Duration::from_secs(10)).min(deployment.deadline);
    while releasing_workers().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "{LABEL}: replaced roots released on worker threads {:?}, not on both",
            releasing_workers()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let response = deployment.send(&payment(token));
    assert_eq!(response.status, 200, "{}", response.body_text());
    deployment.assert_no_crash();
    assert!(!deployment.envoy.log().contains("failing closed"));
}
