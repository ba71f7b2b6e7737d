//! A stand-in for the bank's identity provider in harness tests: one ES256 key of its own, its
//! JWKS, and tokens the shipped jwt-auth configuration (`wasmplugins/jwt-auth.yaml`) accepts.
#![allow(dead_code)]

use std::time::UNIX_EPOCH;
use test_harness::{Host, Plugin};
use test_tokens::{Key, claims_at, claims_with, jwks};

pub const KID: &str = "bank-ec";

pub struct Idp {
    key: Key,
}

impl Idp {
    pub fn new() -> Idp {
        Idp {
            key: Key::generate_ec256(),
        }
    }

    pub fn jwks(&self) -> String {
        jwks([self.key.jwk(KID)])
    }

    /// A token the shipped jwt-auth config accepts for reads, at the host's time.
    pub fn token(&self, host: &Host) -> String {
        self.token_with(host, serde_json::json!({}))
    }

    /// [`Idp::token`] with the claims in `extra` added or replaced.
    pub fn token_with(&self, host: &Host, extra: serde_json::Value) -> String {
        let now = host.now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = claims_at(
            now,
            serde_json::json!({
                "sub": "user-7", "customer_id": "CUST-00000042", "scope": "payments:read",
                "iat": now - 5, "nbf": now - 5,
            }),
        );
        self.key.mint("ES256", KID, claims_with(claims, extra))
    }

    /// Lets a freshly loaded jwt-auth (shipped config) start its first fetch, and answers it.
    pub fn serve_first_fetch(&self, host: &Host, plugin: &Plugin) {
        host.advance(std::time::Duration::from_millis(100));
        let call = plugin.pending_http_calls().remove(0);
        plugin.respond_http_call(call.token, 200, &[], self.jwks().as_bytes());
    }
}

/// Answers the one JWKS fetch `plugin` has pending with `status` and `body`.
pub fn answer_jwks_fetch(plugin: &Plugin, status: u32, body: &str) {
    let calls = plugin.pending_http_calls();
    assert_eq!(calls.len(), 1, "one pending JWKS fetch: {calls:?}");
    plugin.respond_http_call(
        calls[0].token,
        status,
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
}
