//! The bench's keys and JWTs, minted by `demo_services::jwt_minter` (Python `cryptography`, as
//! in the e2e tests): an RSA-2048 and a P-256 key, and per algorithm one token every request
//! reuses, a tampered copy of it, and many distinct tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use demo_services::jwt_minter;
use serde_json::{Value, json};

use crate::BenchError;

/// The customer every token is bound to and every request names in `x-customer-id`, in the
/// format wasmplugins/banking-headers.yaml requires.
pub const CUSTOMER_ID: &str = "CUST-00012345";
/// Scopes of every token: `GET /accounts` needs `accounts:read` under jwt-auth's rules.
const SCOPE: &str = "accounts:read payments:read";

/// The signing algorithms compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    pub const ALL: [Alg; 2] = [Alg::Rs256, Alg::Es256];

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    fn key_id(self) -> &'static str {
        match self {
            Alg::Rs256 => "rsa",
            Alg::Es256 => "ec",
        }
    }
}

/// Tokens of one algorithm.
pub struct Tokens {
    pub alg: Alg,
    pub reused: String,
    /// The reused token with one bit of its signature flipped.
    pub tampered: String,
    pub distinct: Vec<String>,
}

/// Mints `distinct` tokens per algorithm plus the reused and tampered ones; returns the public
/// JWKS and the tokens.
pub fn mint(
    issuer: &str,
    audience: &str,
    distinct: usize,
) -> Result<(Value, Vec<Tokens>), BenchError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    // Within jwt-auth's maxLifetime (1h) and long enough for a long soak.
    let claims = |jti: &str| {
        json!({
            "iss": issuer, "aud": audience, "sub": format!("customer-{jti}"),
            "customer_id": CUSTOMER_ID, "scope": SCOPE, "jti": jti,
            "iat": now.saturating_sub(5), "exp": now + 3500,
        })
    };
    let mut specs = Vec::new();
    for alg in Alg::ALL {
        let key = alg.key_id();
        specs.push(json!({"id": format!("{key}-reused"), "key": key, "alg": alg.name(), "claims": claims("reused")}));
        specs.push(json!({"id": format!("{key}-tampered"), "key": key, "alg": alg.name(), "claims": claims("reused"), "tamper": true}));
        for i in 0..distinct {
            specs.push(json!({"id": format!("{key}-{i}"), "key": key, "alg": alg.name(), "claims": claims(&i.to_string())}));
        }
    }
    let request = json!({
        "keys": [
            {"id": "rsa", "kty": "RSA", "kid": "bench-rsa-1", "alg": "RS256"},
            {"id": "ec", "kty": "EC", "kid": "bench-ec-1", "alg": "ES256"}
        ],
        "tokens": specs,
    });
    let answer = jwt_minter::mint(&request)?;
    let minted = |id: &str| -> Result<String, BenchError> {
        Ok(answer["tokens"][id]
            .as_str()
            .ok_or_else(|| format!("the minter returned no token {id}"))?
            .to_string())
    };
    let mut tokens = Vec::new();
    for alg in Alg::ALL {
        let key = alg.key_id();
        tokens.push(Tokens {
            alg,
            reused: minted(&format!("{key}-reused"))?,
            tampered: minted(&format!("{key}-tampered"))?,
            distinct: (0..distinct)
                .map(|i| minted(&format!("{key}-{i}")))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok((answer["jwks"].clone(), tokens))
}
