//! A stand-in for the bank's identity provider in harness tests: one ES256 key, its JWKS, and
//! tokens the shipped jwt-auth configuration (`wasmplugins/jwt-auth.yaml`) accepts.
#![allow(dead_code)]

use jwt_simple::prelude::*;
use std::time::UNIX_EPOCH;
use test_harness::{Host, Plugin};

pub const KID: &str = "bank-ec";

pub struct Idp {
    key: ES256KeyPair,
}

impl Idp {
    pub fn new() -> Idp {
        Idp {
            key: ES256KeyPair::generate().with_key_id(KID),
        }
    }

    pub fn jwks(&self) -> String {
        let point = self.key.public_key().public_key().to_bytes_uncompressed();
        let b64 = |b: &[u8]| Base64UrlSafeNoPadding::encode_to_string(b).unwrap();
        format!(
            r#"{{"keys":[{{"kty":"EC","kid":"{KID}","crv":"P-256","x":"{}","y":"{}"}}]}}"#,
            b64(&point[1..33]),
            b64(&point[33..])
        )
    }

    /// A token the shipped jwt-auth config accepts for reads, at the host's time.
    pub fn token(&self, host: &Host) -> String {
        self.token_with(host, serde_json::json!({}))
    }

    /// [`Idp::token`] with the claims in `extra` added or replaced.
    pub fn token_with(&self, host: &Host, extra: serde_json::Value) -> String {
        let now = host.now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut claims = serde_json::json!({
            "iss": "https://idp.bank.example", "aud": "payments-api", "sub": "user-7",
            "customer_id": "CUST-00000042", "scope": "payments:read",
            "iat": now - 5, "nbf": now - 5, "exp": now + 300,
        });
        for (name, value) in extra.as_object().unwrap() {
            claims[name] = value.clone();
        }
        let claims: JWTClaims<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_value(claims).unwrap();
        self.key.sign(claims).unwrap()
    }

    /// Lets a freshly loaded jwt-auth (shipped config) start its first fetch, and answers it.
    pub fn serve_first_fetch(&self, host: &Host, plugin: &Plugin) {
        host.advance(std::time::Duration::from_millis(100));
        let call = plugin.pending_http_calls().remove(0);
        plugin.respond_http_call(call.token, 200, &[], self.jwks().as_bytes());
    }
}
