//! Test-only signing keys, their JWKs and the tokens they sign, written once for jwt-auth's
//! unit tests and the harness tests that drive the compiled filter.
//!
//! Keys are generated once per process, on first use, and tokens are minted with the claims
//! (and so the times) a test gives, so no test depends on the date. The Envoy end-to-end tests
//! mint with Python on purpose (`demo-services/scripts/mint_jwt.py`): an implementation
//! independent of this one.
//!
//! ```text
//! let set = jwks([ec256().jwk("k1"), rsa().jwk("r").alg("RS256").key_use("sig")]);
//! let token = mint("ES256", "k1", claims_at(now, json!({"sub": "user-7"})));
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use jwt_simple::prelude::*;
use serde_json::{Map, Value};

/// The issuer [`claims_at`] names.
pub const ISSUER: &str = "https://idp.bank.example";
/// The audience [`claims_at`] names.
pub const AUDIENCE: &str = "payments-api";
/// The secret of [`hmac`]: long enough for HS512.
pub const HMAC_SECRET: [u8; 64] = [0x5a; 64];

/// A key that signs test tokens. The RSA key signs every RS* and PS* algorithm.
#[derive(Clone)]
pub enum Key {
    /// PKCS#1 DER of the private key.
    Rsa(Vec<u8>),
    /// The P-256 secret scalar.
    Ec256(Vec<u8>),
    /// The P-384 secret scalar.
    Ec384(Vec<u8>),
    /// The Ed25519 key pair's bytes.
    Ed25519(Vec<u8>),
    /// The shared secret of an `oct` key.
    Hmac(Vec<u8>),
}

/// An RSA public key's big-endian modulus and exponent.
pub struct RsaPublic {
    pub n: Vec<u8>,
    pub e: Vec<u8>,
}

fn once(cell: &'static OnceLock<Key>, make: impl FnOnce() -> Key) -> &'static Key {
    cell.get_or_init(make)
}

/// The 2048-bit RSA key. RSA generation is slow in debug builds, so every RS/PS algorithm
/// shares this one key.
pub fn rsa() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    once(&KEY, Key::generate_rsa)
}

/// The P-256 key (ES256).
pub fn ec256() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    once(&KEY, Key::generate_ec256)
}

/// The P-384 key (ES384).
pub fn ec384() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    once(&KEY, || Key::Ec384(ES384KeyPair::generate().to_bytes()))
}

/// The Ed25519 key (EdDSA).
pub fn ed25519() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    once(&KEY, || Key::Ed25519(Ed25519KeyPair::generate().to_bytes()))
}

/// The HMAC key (HS256, HS384, HS512), [`HMAC_SECRET`].
pub fn hmac() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    once(&KEY, || Key::Hmac(HMAC_SECRET.to_vec()))
}

/// A second, independent P-256 key that no test set publishes: forgeries and planted keys.
pub fn other_ec256() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    once(&KEY, Key::generate_ec256)
}

/// A second, independent 2048-bit RSA key, for wrong-key tests.
pub fn other_rsa() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    once(&KEY, Key::generate_rsa)
}

/// A deliberately weak 1024-bit RSA key, for refusal tests only. jwt-simple refuses to
/// generate one, so the `rsa` crate it uses underneath makes it.
pub fn weak_rsa_1024() -> &'static Key {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    static KEY: OnceLock<Key> = OnceLock::new();
    once(&KEY, || {
        let mut rng = jwt_simple::reexports::rand::thread_rng();
        let der = rsa::RsaPrivateKey::new(&mut rng, 1024)
            .unwrap()
            .to_pkcs1_der()
            .unwrap();
        Key::Rsa(der.as_bytes().to_vec())
    })
}

/// The process-wide key that signs `alg` (a JOSE name: `"RS256"`, `"ES384"`, `"EdDSA"`, ...).
pub fn key_for(alg: &str) -> &'static Key {
    match kid_for(alg) {
        "rsa" => rsa(),
        "ec256" => ec256(),
        "ec384" => ec384(),
        "ed25519" => ed25519(),
        _ => hmac(),
    }
}

/// The kid [`every_family_jwks`] publishes the key for `alg` under.
pub fn kid_for(alg: &str) -> &'static str {
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => "rsa",
        "ES256" => "ec256",
        "ES384" => "ec384",
        "EdDSA" => "ed25519",
        "HS256" | "HS384" | "HS512" => "hmac",
        other => panic!("no test key for algorithm {other}"),
    }
}

/// Every key family, each under its own kid: "rsa" (with `"use":"sig"`), "ec256", "ec384",
/// "ed25519", "hmac".
pub fn every_family_jwks() -> String {
    jwks([
        rsa().jwk("rsa").key_use("sig"),
        ec256().jwk("ec256"),
        ec384().jwk("ec384"),
        ed25519().jwk("ed25519"),
        hmac().jwk("hmac"),
    ])
}

impl Key {
    /// A fresh 2048-bit RSA key (slow in debug builds: prefer [`rsa`] or [`other_rsa`]).
    pub fn generate_rsa() -> Key {
        Key::Rsa(RS256KeyPair::generate(2048).unwrap().to_der().unwrap())
    }

    /// A fresh P-256 key, for a rotation or an identity provider of its own.
    pub fn generate_ec256() -> Key {
        Key::Ec256(ES256KeyPair::generate().to_bytes())
    }

    /// The public modulus and exponent of an RSA key.
    pub fn rsa_public(&self) -> RsaPublic {
        let Key::Rsa(der) = self else {
            panic!("not an RSA key")
        };
        let c = RS256KeyPair::from_der(der)
            .unwrap()
            .public_key()
            .to_components();
        RsaPublic { n: c.n, e: c.e }
    }

    /// The public JWK of this key under `kid`, without `alg`, `use` or `key_ops` unless added.
    pub fn jwk(&self, kid: &str) -> Jwk {
        let jwk = |kty: &str| Jwk::new(kty, kid);
        match self {
            Key::Rsa(_) => {
                let RsaPublic { n, e } = self.rsa_public();
                jwk("RSA").member("n", b64(&n)).member("e", b64(&e))
            }
            Key::Ec256(secret) => {
                let point = ES256KeyPair::from_bytes(secret)
                    .unwrap()
                    .public_key()
                    .public_key()
                    .to_bytes_uncompressed();
                ec_jwk(jwk("EC"), "P-256", &point)
            }
            Key::Ec384(secret) => {
                let point = ES384KeyPair::from_bytes(secret)
                    .unwrap()
                    .public_key()
                    .public_key()
                    .to_bytes_uncompressed();
                ec_jwk(jwk("EC"), "P-384", &point)
            }
            Key::Ed25519(bytes) => {
                let x = Ed25519KeyPair::from_bytes(bytes)
                    .unwrap()
                    .public_key()
                    .to_bytes();
                jwk("OKP").member("crv", "Ed25519").member("x", b64(&x))
            }
            Key::Hmac(secret) => jwk("oct").member("k", b64(secret)),
        }
    }

    /// A token for `claims` signed with this key by `alg`, naming `kid` in its header if one
    /// is given (`"k1"` or `None`). Panics if the key cannot sign `alg`.
    pub fn mint<'a>(&self, alg: &str, kid: impl Into<Option<&'a str>>, claims: Value) -> String {
        let kid = kid.into();
        let claims = to_claims(claims);
        macro_rules! signed {
            ($pair:expr, $method:ident) => {{
                let pair = $pair;
                let pair = match kid {
                    Some(kid) => pair.with_key_id(kid),
                    None => pair,
                };
                pair.$method(claims).unwrap()
            }};
        }
        match (self, alg) {
            (Key::Rsa(der), "RS256") => signed!(RS256KeyPair::from_der(der).unwrap(), sign),
            (Key::Rsa(der), "RS384") => signed!(RS384KeyPair::from_der(der).unwrap(), sign),
            (Key::Rsa(der), "RS512") => signed!(RS512KeyPair::from_der(der).unwrap(), sign),
            (Key::Rsa(der), "PS256") => signed!(PS256KeyPair::from_der(der).unwrap(), sign),
            (Key::Rsa(der), "PS384") => signed!(PS384KeyPair::from_der(der).unwrap(), sign),
            (Key::Rsa(der), "PS512") => signed!(PS512KeyPair::from_der(der).unwrap(), sign),
            (Key::Ec256(s), "ES256") => signed!(ES256KeyPair::from_bytes(s).unwrap(), sign),
            (Key::Ec384(s), "ES384") => signed!(ES384KeyPair::from_bytes(s).unwrap(), sign),
            (Key::Ed25519(b), "EdDSA") => signed!(Ed25519KeyPair::from_bytes(b).unwrap(), sign),
            (Key::Hmac(s), "HS256") => signed!(HS256Key::from_bytes(s), authenticate),
            (Key::Hmac(s), "HS384") => signed!(HS384Key::from_bytes(s), authenticate),
            (Key::Hmac(s), "HS512") => signed!(HS512Key::from_bytes(s), authenticate),
            (_, other) => panic!("this test key cannot sign {other}"),
        }
    }
}

fn ec_jwk(jwk: Jwk, crv: &str, uncompressed: &[u8]) -> Jwk {
    let coordinates = &uncompressed[1..];
    let (x, y) = coordinates.split_at(coordinates.len() / 2);
    jwk.member("crv", crv)
        .member("x", b64(x))
        .member("y", b64(y))
}

/// One JWK, rendered as JSON by `Display`; its members in the order they were given.
#[derive(Clone, Debug)]
pub struct Jwk {
    members: Vec<(String, Value)>,
}

impl Jwk {
    fn new(kty: &str, kid: &str) -> Jwk {
        Jwk {
            members: vec![("kty".into(), kty.into()), ("kid".into(), kid.into())],
        }
    }

    /// Adds (or replaces) a member, for shapes the named helpers do not cover.
    pub fn member(mut self, name: &str, value: impl Into<Value>) -> Jwk {
        let value = value.into();
        match self.members.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.members.push((name.to_owned(), value)),
        }
        self
    }

    /// The `alg` the key is restricted to.
    pub fn alg(self, alg: &str) -> Jwk {
        self.member("alg", alg)
    }

    /// The `use` member (`"sig"`, `"enc"`).
    pub fn key_use(self, key_use: &str) -> Jwk {
        self.member("use", key_use)
    }

    /// The `key_ops` member.
    pub fn key_ops(self, ops: &[&str]) -> Jwk {
        self.member("key_ops", ops.to_vec())
    }
}

impl fmt::Display for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, value)) in self.members.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            write!(f, "{comma}{}:{value}", Value::from(name.as_str()))?;
        }
        f.write_str("}")
    }
}

/// A JWKS document of `entries`: [`Jwk`]s, or hand-written JWK text for malformed shapes.
pub fn jwks<T: fmt::Display>(entries: impl IntoIterator<Item = T>) -> String {
    let entries: Vec<String> = entries.into_iter().map(|e| e.to_string()).collect();
    format!(r#"{{"keys":[{}]}}"#, entries.join(","))
}

/// Base64url without padding, as JOSE encodes every binary member.
pub fn b64(bytes: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap()
}

/// A token signed by `alg`'s process-wide key ([`key_for`]), naming `kid` if one is given.
pub fn mint<'a>(alg: &str, kid: impl Into<Option<&'a str>>, claims: Value) -> String {
    key_for(alg).mint(alg, kid, claims)
}

/// An ES256 token signed by [`other_ec256`], a key nobody published, naming `kid`.
pub fn forged(kid: &str, claims: Value) -> String {
    other_ec256().mint("ES256", kid, claims)
}

/// `header.payload.signature`, each base64url-encoded as given: for shapes no signer would
/// write (`alg: none`, an empty or junk signature).
pub fn raw(header: &[u8], payload: &[u8], signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), b64(signature))
}

/// A token of raw header and payload JSON, MACed with [`HMAC_SECRET`] by HS256 whatever the
/// header says: odd claim types, duplicate members, a `kid` naming another kind of key.
pub fn mint_raw_hs256(header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let mac = hmac_sha256::HMAC::mac(input.as_bytes(), HMAC_SECRET);
    format!("{input}.{}", b64(&mac))
}

/// `token` with its signature bytes changed by `change` and re-encoded.
pub fn resigned(token: &str, change: impl FnOnce(&mut Vec<u8>)) -> String {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = Base64UrlSafeNoPadding::decode_to_vec(signature, None).unwrap();
    change(&mut bytes);
    format!("{input}.{}", b64(&bytes))
}

/// Claims valid at `now` (Unix seconds) for [`ISSUER`] and [`AUDIENCE`]: issued and valid
/// from 10 s before, expiring 5 minutes after, with `members` added.
pub fn claims_at(now: u64, members: Value) -> Value {
    let base = serde_json::json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 300,
    });
    claims_with(base, members)
}

/// `claims` with the members of `changes` added or replaced; a `null` removes the member.
pub fn claims_with(mut claims: Value, changes: Value) -> Value {
    let (Value::Object(base), Value::Object(changes)) = (&mut claims, changes) else {
        panic!("claims and changes must be objects")
    };
    for (name, value) in changes {
        if value.is_null() {
            base.remove(&name);
        } else {
            base.insert(name, value);
        }
    }
    claims
}

/// jwt-simple's claims from JSON: the registered claims its signer writes itself, the rest
/// custom. Times must be non-negative integers here; other shapes need [`mint_raw_hs256`].
fn to_claims(claims: Value) -> JWTClaims<Map<String, Value>> {
    let Value::Object(mut map) = claims else {
        panic!("claims must be an object")
    };
    let time = |map: &mut Map<String, Value>, k: &str| {
        map.remove(k)
            .and_then(|v| v.as_u64())
            .map(UnixTimeStamp::from_secs)
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
        issued_at: time(&mut map, "iat"),
        expires_at: time(&mut map, "exp"),
        invalid_before: time(&mut map, "nbf"),
        issuer: text(&mut map, "iss"),
        subject: text(&mut map, "sub"),
        audiences,
        jwt_id: text(&mut map, "jti"),
        nonce: text(&mut map, "nonce"),
        custom: map,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_name_the_algorithm_and_kid_asked_for() {
        let claims = claims_at(1_893_456_000, json!({"sub": "s"}));
        for alg in ["RS256", "PS512", "ES256", "ES384", "EdDSA", "HS512"] {
            let token = mint(alg, kid_for(alg), claims.clone());
            let header: Value = serde_json::from_slice(
                &Base64UrlSafeNoPadding::decode_to_vec(token.split('.').next().unwrap(), None)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(header["alg"], alg);
            assert_eq!(header["kid"], kid_for(alg));
        }
        let set: Value = serde_json::from_str(&every_family_jwks()).unwrap();
        assert_eq!(set["keys"].as_array().unwrap().len(), 5);
        assert_eq!(set["keys"][0]["use"], "sig");
    }

    #[test]
    fn jwk_members_can_be_added_and_replaced() {
        let jwk = hmac()
            .jwk("h")
            .alg("HS256")
            .key_ops(&["verify"])
            .alg("HS384");
        let v: Value = serde_json::from_str(&jwk.to_string()).unwrap();
        assert_eq!(v["alg"], "HS384");
        assert_eq!(v["key_ops"], json!(["verify"]));
        assert_eq!(v["kty"], "oct");
    }
}
