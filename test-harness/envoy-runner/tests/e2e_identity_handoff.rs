//! The identity handoff through a real Envoy: jwt-auth (its shipped WasmPlugin, keys from a
//! local JWKS server) then the harness's probe filter, which reads the identity jwt-auth
//! published (`banking.jwt.identity`) and tries to overwrite it.
//!
//! What this proves about Envoy itself (1.40 as `make envoy` installs it): it has the
//! `declare_property` foreign function (jwt-auth logs that it declared its names read-only),
//! a value jwt-auth created from a read-only declaration refuses a later filter's
//! `set_property` with BadArgument (the probe reports the status), and the value stays what
//! jwt-auth wrote. Tokens come from `demo_services::jwt_minter` (`make jwt-minter`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use demo_services::{JwksServer, jwt_minter};
use envoy_runner::client::Request;
use envoy_runner::fixture::{self, EnvoyUnderTest};
use envoy_runner::{FailStrategy, Phase, WasmPlugin};
use serde_json::{Value, json};

const MAX_REQUESTS: u32 = 20;
const CUSTOMER_ID: &str = "CUST-00012345";

/// The probe filter as a plugin chained after jwt-auth (istiod would put an
/// UNSPECIFIED_PHASE plugin after every AUTHN one).
fn probe_plugin() -> WasmPlugin {
    WasmPlugin {
        name: "harness-probe".to_string(),
        namespace: "default".to_string(),
        plugin_name: String::new(),
        phase: Phase::Unspecified,
        priority: 0,
        fail_strategy: FailStrategy::FailClose,
        plugin_config: None,
        url: String::new(),
        source: PathBuf::from("test-harness/probe-filter"),
        env: Vec::new(),
    }
}

struct Minted {
    jwks: Value,
    token: String,
}

/// One ES256 key and one token for it, with the claims the handoff hands on.
fn mint(config: &Value) -> Minted {
    let text = |pointer: &str| config.pointer(pointer).and_then(Value::as_str).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let request = json!({
        "keys": [{"id": "ec", "kty": "EC", "kid": "handoff-ec"}],
        "tokens": [{"id": "caller", "key": "ec", "alg": "ES256", "claims": {
            "iss": text("/providers/0/issuer"), "aud": text("/providers/0/audiences/0"),
            "sub": "user-4711", "customer_id": CUSTOMER_ID, "client_id": "mobile-app",
            "scope": "payments:read accounts:read", "iat": now, "nbf": now, "exp": now + 300,
        }}],
    });
    let answer = jwt_minter::mint(&request).unwrap_or_else(|e| panic!("{e}"));
    Minted {
        jwks: json!({"keys": [answer["keys"]["ec"].clone()]}),
        token: answer["tokens"]["caller"].as_str().unwrap().to_string(),
    }
}

fn read(token: &str, probe: &str) -> Request {
    Request::get("/payments/42")
        .header("authorization", &format!("Bearer {token}"))
        .header("x-customer-id", CUSTOMER_ID)
        .header("x-probe", probe)
}

#[test]
fn the_probe_after_jwt_auth_reads_the_identity_and_cannot_overwrite_it() {
    let jwt = fixture::shipped(&["jwt-auth"]).remove(0);
    let config = jwt.plugin_config.clone().unwrap();
    let text = |pointer: &str| config.pointer(pointer).and_then(Value::as_str).unwrap();
    let minted = mint(&config);
    let jwks = JwksServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        text("/providers/0/remoteJwks/path"),
        minted.jwks.to_string().as_bytes(),
    )
    .expect("JWKS server");
    let cluster = text("/providers/0/remoteJwks/cluster").to_string();
    let envoy = EnvoyUnderTest::start(
        "identity_handoff",
        &[jwt, probe_plugin()],
        MAX_REQUESTS,
        |options| options.with_cluster(&cluster, jwks.addr()),
    );

    // Keys arrive on the workers' first tick; until then tokens get 503.
    let identity = read(&minted.token, "filter-state banking.jwt.identity");
    let deadline = Instant::now() + Duration::from_secs(15);
    let response = loop {
        let response = envoy.send(&identity);
        if response.status != 503 || Instant::now() > deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen = envoy.upstream_saw();
    let published = seen
        .last()
        .and_then(|r| r.header_str("x-probe-result"))
        .expect("the probe read banking.jwt.identity");
    let published: Value = serde_json::from_str(published).unwrap();
    assert_eq!(
        published,
        json!({
            "issuer": text("/providers/0/issuer"),
            "subject": "user-4711",
            "customer": CUSTOMER_ID,
            "client": "mobile-app",
            "scopes": ["payments:read", "accounts:read"],
            "claims": {"customer_id": CUSTOMER_ID},
        })
    );

    // The later filter's overwrite is refused.
    let response = envoy.send(&read(
        &minted.token,
        r#"set-filter-state banking.jwt.identity {"issuer":"https://attacker.example"}"#,
    ));
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen = envoy.upstream_saw();
    assert_eq!(
        seen.last().and_then(|r| r.header_str("x-probe-result")),
        Some("BadArgument")
    );
    // A name jwt-auth did not declare stays writable by the probe.
    let response = envoy.send(&read(&minted.token, "set-filter-state probe.own value"));
    assert_eq!(response.status, 200);
    let seen = envoy.upstream_saw();
    assert_eq!(
        seen.last().and_then(|r| r.header_str("x-probe-result")),
        Some("ok")
    );

    // A refusal: jwt-auth answers 401 itself; the probe never runs.
    let response = envoy.send(&Request::get("/payments/42").header("x-customer-id", CUSTOMER_ID));
    assert_eq!(response.status, 401);

    // jwt-auth logged, once per VM at configure time, that its names are read-only. Envoy
    // flushes its log file every few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !envoy.envoy.log().contains("declared read-only") {
        assert!(
            Instant::now() < deadline,
            "jwt-auth did not log its read-only declaration: {:?}",
            envoy.envoy.log_path()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!envoy.envoy.log().contains("no declare_property"));
    envoy.assert_no_crash();
}
