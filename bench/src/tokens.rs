//! The bench's keys and JWTs, minted by `demo_services::jwt_minter` (Python `cryptography`, as
//! in the e2e tests): one key per algorithm (RSA-2048 for RS256 and for PS256, P-256 for
//! ES256), and per algorithm one token every request reuses, a tampered copy of it, and many
//! distinct tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use demo_services::jwt_minter;
use serde_json::{Value, json};

use crate::BenchError;

/// The customer every token is bound to and every request names in `x-customer-id`, in the
/// format wasmplugins/banking-headers.yaml requires.
pub const CUSTOMER_ID: &str = "CUST-00012345";
/// Scopes of every token: `GET /accounts` needs `accounts:read` under jwt-auth's rules.
const SCOPE: &str = "accounts:read payments:read payments:write";

/// The signing algorithms compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Ps256,
    Es256,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::Rs256, Alg::Ps256, Alg::Es256];

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
            Alg::Es256 => "ES256",
        }
    }

    /// The minter's name for this algorithm's key.
    fn key_id(self) -> &'static str {
        match self {
            Alg::Rs256 => "rsa",
            Alg::Ps256 => "rsa-pss",
            Alg::Es256 => "ec",
        }
    }

    /// The key as the minter is asked for it. Each algorithm has a key of its own whose JWK
    /// names it in `alg`, as identity providers publish them, so both verifiers pick the key
    /// by `kid` and accept only that algorithm with it.
    fn key_spec(self) -> Value {
        let (kty, kid) = match self {
            Alg::Rs256 => ("RSA", "bench-rsa-1"),
            Alg::Ps256 => ("RSA", "bench-rsa-pss-1"),
            Alg::Es256 => ("EC", "bench-ec-1"),
        };
        json!({"id": self.key_id(), "kty": kty, "kid": kid, "alg": self.name()})
    }
}

/// Tokens of one algorithm.
pub struct Tokens {
    pub alg: Alg,
    pub reused: String,
    /// The reused token with one bit of its signature flipped.
    pub tampered: String,
    /// Tokens that differ from each other (their `jti`), drawn on by the distinct and the
    /// mixed rows.
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
    let keys: Vec<Value> = Alg::ALL.iter().map(|alg| alg.key_spec()).collect();
    let request = json!({"keys": keys, "tokens": specs});
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
