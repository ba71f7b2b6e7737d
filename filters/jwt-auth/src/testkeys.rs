//! Test-only key material and token minting: keys are generated once per test run and
//! tokens are minted at test time with explicit timestamps, so no test depends on the date.

use std::collections::HashSet;
use std::sync::OnceLock;

use jwt_simple::prelude::*;
use serde_json::{Map, Value};

use crate::jwks::Algorithm;

/// A fixed "now" for tests: 2030-01-01T00:00:00Z, in seconds.
pub const NOW: u64 = 1_893_456_000;

pub struct Keys {
    pub rsa_der: Vec<u8>,
    ec256: Vec<u8>,
    ec384: Vec<u8>,
    ed25519: Ed25519KeyPair,
}

/// One key per family, generated on first use. RSA generation is slow in debug builds, so
/// every RS/PS algorithm shares one 2048-bit key.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa_der: RS256KeyPair::generate(2048).unwrap().to_der().unwrap(),
        ec256: ES256KeyPair::generate().to_bytes(),
        ec384: ES384KeyPair::generate().to_bytes(),
        ed25519: Ed25519KeyPair::generate(),
    })
}

/// A second, independent EC key, for rotation and wrong-key tests.
pub fn other_ec256() -> ES256KeyPair {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    ES256KeyPair::from_bytes(KEY.get_or_init(|| ES256KeyPair::generate().to_bytes())).unwrap()
}

/// A second, independent 2048-bit RSA key, for wrong-key tests.
pub fn other_rsa_der() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| RS256KeyPair::generate(2048).unwrap().to_der().unwrap())
}

/// A deliberately weak 1024-bit RSA key, for refusal tests only. jwt-simple refuses to
/// generate one, so the `rsa` crate it uses underneath makes it.
pub fn weak_rsa_1024() -> RS256KeyPair {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    let der = KEY.get_or_init(|| {
        let mut rng = jwt_simple::reexports::rand::thread_rng();
        rsa::RsaPrivateKey::new(&mut rng, 1024)
            .unwrap()
            .to_pkcs1_der()
            .unwrap()
            .as_bytes()
            .to_vec()
    });
    RS256KeyPair::from_der(der).unwrap()
}

/// The JWK of an RS256 key pair, published under `kid`.
pub fn rsa_jwk_of(key: &RS256KeyPair, kid: &str) -> String {
    let c = key.public_key().to_components();
    format!(
        r#"{{"kty":"RSA","kid":"{kid}","n":"{}","e":"{}"}}"#,
        b64(&c.n),
        b64(&c.e)
    )
}

pub fn b64(bytes: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap()
}

fn with_alg(alg: Option<&str>) -> String {
    alg.map(|a| format!(r#","alg":"{a}""#)).unwrap_or_default()
}

pub fn rsa_jwk(kid: &str, alg: Option<&str>) -> String {
    let pk = RS256KeyPair::from_der(&keys().rsa_der)
        .unwrap()
        .public_key();
    let c = pk.to_components();
    format!(
        r#"{{"kty":"RSA","kid":"{kid}","use":"sig","n":"{}","e":"{}"{}}}"#,
        b64(&c.n),
        b64(&c.e),
        with_alg(alg)
    )
}

fn ec_jwk(kid: &str, crv: &str, point: &[u8], alg: Option<&str>) -> String {
    let half = (point.len() - 1) / 2;
    format!(
        r#"{{"kty":"EC","kid":"{kid}","crv":"{crv}","x":"{}","y":"{}"{}}}"#,
        b64(&point[1..=half]),
        b64(&point[half + 1..]),
        with_alg(alg)
    )
}

pub fn ec256_jwk(kid: &str, alg: Option<&str>) -> String {
    ec256_jwk_of(&ES256KeyPair::from_bytes(&keys().ec256).unwrap(), kid, alg)
}

pub fn ec256_jwk_of(key: &ES256KeyPair, kid: &str, alg: Option<&str>) -> String {
    let point = key.public_key().public_key().to_bytes_uncompressed();
    ec_jwk(kid, "P-256", &point, alg)
}

pub fn ec384_jwk(kid: &str, alg: Option<&str>) -> String {
    let point = ES384KeyPair::from_bytes(&keys().ec384)
        .unwrap()
        .public_key()
        .public_key()
        .to_bytes_uncompressed();
    ec_jwk(kid, "P-384", &point, alg)
}

pub fn ed25519_jwk(kid: &str, alg: Option<&str>) -> String {
    let x = keys().ed25519.public_key().to_bytes();
    format!(
        r#"{{"kty":"OKP","kid":"{kid}","crv":"Ed25519","x":"{}"{}}}"#,
        b64(&x),
        with_alg(alg)
    )
}

pub fn oct_jwk(kid: &str, secret: &[u8], alg: Option<&str>) -> String {
    format!(
        r#"{{"kty":"oct","kid":"{kid}","k":"{}"{}}}"#,
        b64(secret),
        with_alg(alg)
    )
}

pub fn jwks(keys: &[String]) -> String {
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

/// The HMAC secret tests use for HS* tokens.
pub const HMAC_SECRET: [u8; 64] = [0x5a; 64];

/// Every key family, one kid each: "rsa", "ec256", "ec384", "ed25519", "hmac".
pub fn all_families_jwks() -> String {
    jwks(&[
        rsa_jwk("rsa", None),
        ec256_jwk("ec256", None),
        ec384_jwk("ec384", None),
        ed25519_jwk("ed25519", None),
        oct_jwk("hmac", &HMAC_SECRET, None),
    ])
}

/// The kid [`all_families_jwks`] publishes the key for `alg` under.
pub fn kid_for(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ec256",
        Algorithm::ES384 => "ec384",
        Algorithm::EdDSA => "ed25519",
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "hmac",
        _ => "rsa",
    }
}

fn ts(v: Option<Value>) -> Option<UnixTimeStamp> {
    v.and_then(|v| v.as_u64()).map(UnixTimeStamp::from_secs)
}

fn to_claims(claims: Value) -> JWTClaims<Map<String, Value>> {
    let Value::Object(mut map) = claims else {
        panic!("claims must be an object")
    };
    let text = |map: &mut Map<String, Value>, k: &str| {
        map.remove(k).and_then(|v| v.as_str().map(str::to_owned))
    };
    let audiences = map.remove("aud").map(|aud| match aud {
        Value::String(s) => Audiences::AsString(s),
        Value::Array(items) => Audiences::AsSet(
            items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect::<HashSet<_>>(),
        ),
        other => panic!("aud {other}"),
    });
    JWTClaims {
        issued_at: ts(map.remove("iat")),
        expires_at: ts(map.remove("exp")),
        invalid_before: ts(map.remove("nbf")),
        issuer: text(&mut map, "iss"),
        subject: text(&mut map, "sub"),
        audiences,
        jwt_id: text(&mut map, "jti"),
        nonce: text(&mut map, "nonce"),
        custom: map,
    }
}

/// Mints a token signed by the test key for `alg`, with the given `kid` and claims.
pub fn mint(alg: Algorithm, kid: Option<&str>, claims: Value) -> String {
    let c = to_claims(claims);
    let k = keys();
    let kid_of = |kid: Option<&str>| kid.unwrap_or("").to_owned();
    macro_rules! signed {
        ($pair:expr, $method:ident) => {{
            let pair = $pair;
            let pair = match kid {
                Some(_) => pair.with_key_id(&kid_of(kid)),
                None => pair,
            };
            pair.$method(c).unwrap()
        }};
    }
    match alg {
        Algorithm::RS256 => signed!(RS256KeyPair::from_der(&k.rsa_der).unwrap(), sign),
        Algorithm::RS384 => signed!(RS384KeyPair::from_der(&k.rsa_der).unwrap(), sign),
        Algorithm::RS512 => signed!(RS512KeyPair::from_der(&k.rsa_der).unwrap(), sign),
        Algorithm::PS256 => signed!(PS256KeyPair::from_der(&k.rsa_der).unwrap(), sign),
        Algorithm::PS384 => signed!(PS384KeyPair::from_der(&k.rsa_der).unwrap(), sign),
        Algorithm::PS512 => signed!(PS512KeyPair::from_der(&k.rsa_der).unwrap(), sign),
        Algorithm::ES256 => signed!(ES256KeyPair::from_bytes(&k.ec256).unwrap(), sign),
        Algorithm::ES384 => signed!(ES384KeyPair::from_bytes(&k.ec384).unwrap(), sign),
        Algorithm::EdDSA => signed!(k.ed25519.clone(), sign),
        Algorithm::HS256 => signed!(HS256Key::from_bytes(&HMAC_SECRET), authenticate),
        Algorithm::HS384 => signed!(HS384Key::from_bytes(&HMAC_SECRET), authenticate),
        Algorithm::HS512 => signed!(HS512Key::from_bytes(&HMAC_SECRET), authenticate),
    }
}

/// Mints an ES256 token with a key other than the published one.
pub fn mint_with_other_ec256(kid: &str, claims: Value) -> String {
    other_ec256()
        .with_key_id(kid)
        .sign(to_claims(claims))
        .unwrap()
}

/// Mints an RS256 token with the given key pair.
pub fn mint_rs256_with(key: &RS256KeyPair, kid: &str, claims: Value) -> String {
    key.clone()
        .with_key_id(kid)
        .sign(to_claims(claims))
        .unwrap()
}

/// Mints an HS256 token from raw header and payload JSON, for shapes jwt-simple would not
/// produce (odd claim types, duplicate members, `alg: none` look-alikes).
pub fn mint_raw_hs256(header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let mac = hmac_sha256::HMAC::mac(input.as_bytes(), HMAC_SECRET);
    format!("{input}.{}", b64(&mac))
}

/// Standard valid claims at [`NOW`]: issuer "https://idp.bank.example", audience
/// "payments-api", subject "cust-42", valid for 5 minutes.
pub fn good_claims() -> Value {
    serde_json::json!({
        "iss": "https://idp.bank.example",
        "aud": "payments-api",
        "sub": "cust-42",
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 300,
    })
}

/// [`good_claims`] with members added or replaced (a `null` removes the member).
pub fn claims_with(changes: Value) -> Value {
    let mut claims = good_claims();
    if let (Value::Object(base), Value::Object(changes)) = (&mut claims, changes) {
        for (k, v) in changes {
            if v.is_null() {
                base.remove(&k);
            } else {
                base.insert(k, v);
            }
        }
    }
    claims
}
