//! JSON Web Key Sets (RFC 7517) turned into [`VerifyingKey`]s, once per set.
//!
//! Neither ring nor the proxy's `verify_signature` reads JWKS, so this module decides which keys of a set are
//! usable: it honours each key's `kid`, `alg`, `use` and `key_ops`, refuses weak or
//! mismatched keys with a reason, and fails only when no key at all is usable.

use std::fmt;

use serde::Deserialize;

pub use crate::signature::VerifyingKey;

/// Most keys a set may hold. Identity providers publish a handful (current, next, previous);
/// a larger set is refused whole (a failed fetch, counted and logged), never truncated,
/// since every key is work a token without `kid` can make the filter do.
pub const MAX_KEYS_PER_SET: usize = 100;
/// Most keys a token without `kid` is tried against; with more candidates it must name one.
/// Without the cap one bad token against 1,700 P-256 keys cost a worker 0.7 s.
pub const MAX_KID_LESS_CANDIDATES: usize = 4;

/// RFC 7518 §3.3: RSA keys shorter than this must not be used.
pub const MIN_RSA_MODULUS_BITS: usize = 2048;
/// The largest modulus accepted. Verify time grows with the square of the size, so an
/// 8192-bit key would make every token of its issuer cost four times a 4096-bit one; no
/// identity provider needs more than 4096 bits.
pub const MAX_RSA_MODULUS_BITS: usize = 4096;

/// A JWS signature algorithm this filter can verify. `none` is deliberately absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

/// The JWK key type (`kty`) an algorithm needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    Ec,
    Okp,
    Oct,
}

impl Algorithm {
    pub const ALL: [Algorithm; 12] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
    ];

    /// Accepted when `allowedAlgorithms` is not configured: every asymmetric algorithm.
    /// HMAC must be asked for explicitly, since a shared secret is a different trust model.
    pub const DEFAULT_ALLOWED: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The algorithm named by a JWS `alg` header or a JWK `alg` member (case-sensitive,
    /// as RFC 7515 says).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
        }
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyFamily::Rsa,
            Algorithm::ES256 | Algorithm::ES384 => KeyFamily::Ec,
            Algorithm::EdDSA => KeyFamily::Okp,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyFamily::Oct,
        }
    }

    pub fn is_symmetric(self) -> bool {
        self.family() == KeyFamily::Oct
    }

    /// RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
    fn min_hmac_key_bytes(self) -> usize {
        match self {
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => 32,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a key set came from. Symmetric keys are trusted only from the plugin config:
/// a shared secret served over the network would be a secret anyone on the path can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    Inline,
    Remote,
}

/// A usable key with the `kid` it was published under.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    pub kid: Option<String>,
    pub key: VerifyingKey,
}

/// A key of the set that was left out, and why. Logged at configure/fetch time so an
/// operator can see why a token signed with it is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKey {
    pub index: usize,
    pub kid: Option<String>,
    pub reason: String,
}

impl fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "key {} (kid {:?}): {}", self.index, kid, self.reason),
            None => write!(f, "key {}: {}", self.index, self.reason),
        }
    }
}

/// Why a whole JWKS document was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksError(pub String);

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The outcome of looking a token's `alg` and `kid` up in a key set.
#[derive(Debug)]
pub enum KeyLookup<'a> {
    /// Keys to try, in set order.
    Candidates(Vec<&'a VerifyingKey>),
    /// The token names a `kid` the set does not have: the set may be stale.
    UnknownKid,
    /// The set has the `kid` (or, without a `kid`, has keys) but none for this algorithm.
    AlgorithmMismatch,
    /// The token names no `kid` and more than [`MAX_KID_LESS_CANDIDATES`] keys fit it.
    KidRequired,
}

/// The usable keys of one JWKS document.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    entries: Vec<KeyEntry>,
    skipped: Vec<SkippedKey>,
    /// See [`KeySet::fingerprint`].
    fingerprint: u64,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    alg: Option<String>,
    /// Read separately for skip reasons; declared so a non-string `kid` is refused.
    #[serde(default, rename = "kid")]
    _kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    k: Option<String>,
}

impl KeySet {
    /// Parses a JWKS document, keeping keys for `allowed` algorithms only.
    ///
    /// Keys that cannot be used are skipped with a reason ([`KeySet::skipped`]); a document
    /// that is not a JWKS, or has no usable key, is an error (an inline set in the config).
    pub fn parse(
        json: &[u8],
        allowed: &[Algorithm],
        origin: KeyOrigin,
    ) -> Result<KeySet, JwksError> {
        let set = KeySet::parse_published(json, allowed, origin)?;
        if set.entries.is_empty() {
            return Err(JwksError(format!("no usable key: {}", set.why_empty())));
        }
        Ok(set)
    }

    /// Parses a JWKS document as an issuer publishes it: like [`KeySet::parse`], except that
    /// a JWKS without a usable key is a set, an empty one. A fetch that returns one is the
    /// issuer's word (every key revoked, or rotated to an algorithm not allowed here), so it
    /// replaces the last good set and refuses every token; only a document that is not a
    /// JWKS (or holds too many keys) is an error.
    pub fn parse_published(
        json: &[u8],
        allowed: &[Algorithm],
        origin: KeyOrigin,
    ) -> Result<KeySet, JwksError> {
        let raw: RawSet = serde_json::from_slice(json)
            .map_err(|e| JwksError(format!("not a JWKS document ({e})")))?;
        if raw.keys.len() > MAX_KEYS_PER_SET {
            return Err(JwksError(format!(
                "the set has {} keys; at most {MAX_KEYS_PER_SET} are accepted",
                raw.keys.len()
            )));
        }
        let mut set = KeySet::default();
        let mut digests = Vec::new();
        for (index, value) in raw.keys.into_iter().enumerate() {
            let kid = value
                .get("kid")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            let parsed = serde_json::from_value::<RawJwk>(value)
                .map_err(|e| format!("not a JWK ({e})"))
                .and_then(|jwk| {
                    let keys = keys_of(&jwk, allowed, origin)?;
                    Ok((key_digest(&jwk, kid.as_deref(), &keys), keys))
                });
            match parsed {
                Ok((digest, keys)) => {
                    digests.push(digest);
                    set.entries.extend(keys.into_iter().map(|key| KeyEntry {
                        kid: kid.clone(),
                        key,
                    }));
                }
                Err(reason) => set.skipped.push(SkippedKey { index, kid, reason }),
            }
        }
        // In no particular order: the same keys listed otherwise are the same set.
        digests.sort_unstable();
        let mut h = hmac_sha256::Hash::new();
        for digest in &digests {
            h.update(digest);
        }
        let [b0, b1, b2, b3, b4, b5, b6, b7, ..] = h.finalize();
        set.fingerprint = u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
        Ok(set)
    }

    /// Why a set has no usable key: it has none at all, or each was skipped (with reasons).
    pub fn why_empty(&self) -> String {
        if self.skipped.is_empty() {
            "the set has no keys".to_owned()
        } else {
            self.skipped
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        }
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A digest of the usable keys (each one's `kid`, key members and the algorithms it
    /// serves), independent of their order, of the document's formatting and of the keys
    /// skipped: the same keys fetched again give the same value, any key added, removed or
    /// changed another. It versions the verified-token cache, so an identical refetch keeps
    /// it.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Keys left out of the set, with reasons.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// Usable (algorithm, key) pairs; an RSA key without `alg` counts once per algorithm.
    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.entries.iter().any(|e| e.kid.as_deref() == Some(kid))
    }

    /// The keys a token with this `alg` and `kid` may be verified with.
    ///
    /// With a `kid`, only keys published under it; without one, every key for the
    /// algorithm (as Envoy's jwt_authn does).
    pub fn lookup(&self, alg: Algorithm, kid: Option<&str>) -> KeyLookup<'_> {
        if let Some(kid) = kid
            && !self.has_kid(kid)
        {
            return KeyLookup::UnknownKid;
        }
        let candidates: Vec<&VerifyingKey> = self
            .entries
            .iter()
            .filter(|e| kid.is_none() || e.kid.as_deref() == kid)
            .filter(|e| e.key.algorithm() == alg)
            .map(|e| &e.key)
            .collect();
        if candidates.is_empty() {
            KeyLookup::AlgorithmMismatch
        } else if kid.is_none() && candidates.len() > MAX_KID_LESS_CANDIDATES {
            KeyLookup::KidRequired
        } else {
            KeyLookup::Candidates(candidates)
        }
    }
}

/// What [`KeySet::fingerprint`] knows of one usable JWK: its `kid`, its key members as
/// published (base64url padding aside) and the algorithms it serves here.
fn key_digest(jwk: &RawJwk, kid: Option<&str>, keys: &[VerifyingKey]) -> [u8; 32] {
    let mut h = hmac_sha256::Hash::new();
    // Tagged and length-prefixed: no two JWKs run together into the same bytes.
    let mut field = |value: Option<&str>| {
        let bytes = value.map_or(&b""[..], |v| v.trim_end_matches('=').as_bytes());
        h.update([u8::from(value.is_some())]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(kid);
    field(Some(&jwk.kty));
    for member in [&jwk.crv, &jwk.n, &jwk.e, &jwk.x, &jwk.y, &jwk.k] {
        field(member.as_deref());
    }
    for key in keys {
        field(Some(key.algorithm().name()));
    }
    h.finalize()
}

fn keys_of(
    jwk: &RawJwk,
    allowed: &[Algorithm],
    origin: KeyOrigin,
) -> Result<Vec<VerifyingKey>, String> {
    match jwk.usage.as_deref() {
        None | Some("sig") => {}
        Some(other) => return Err(format!("\"use\" is {other:?}, not \"sig\"")),
    }
    if let Some(ops) = &jwk.key_ops
        && !ops.iter().any(|op| op == "verify")
    {
        return Err("\"key_ops\" does not include \"verify\"".to_owned());
    }
    let family = match jwk.kty.as_str() {
        "RSA" => KeyFamily::Rsa,
        "EC" => KeyFamily::Ec,
        "OKP" => KeyFamily::Okp,
        "oct" => KeyFamily::Oct,
        other => return Err(format!("unsupported kty {other:?}")),
    };
    let algorithms = candidate_algorithms(jwk, family, allowed)?;
    match family {
        KeyFamily::Rsa => rsa_keys(jwk, &algorithms),
        KeyFamily::Ec => ec_key(jwk, &algorithms),
        KeyFamily::Okp => okp_key(jwk, &algorithms),
        KeyFamily::Oct => {
            if origin == KeyOrigin::Remote {
                return Err("symmetric (oct) keys are accepted only inline".to_owned());
            }
            oct_keys(jwk, &algorithms)
        }
    }
}

/// The algorithms this key will verify: its own `alg` when present (which must fit the
/// key type and be allowed), else every allowed algorithm of its family.
fn candidate_algorithms(
    jwk: &RawJwk,
    family: KeyFamily,
    allowed: &[Algorithm],
) -> Result<Vec<Algorithm>, String> {
    if let Some(name) = &jwk.alg {
        if name == "none" {
            return Err("alg \"none\" is never accepted".to_owned());
        }
        let alg = Algorithm::from_name(name).ok_or_else(|| format!("unsupported alg {name:?}"))?;
        if alg.family() != family {
            return Err(format!("alg {alg} does not fit kty {:?}", jwk.kty));
        }
        if !allowed.contains(&alg) {
            return Err(format!("alg {alg} is not in allowedAlgorithms"));
        }
        return Ok(vec![alg]);
    }
    let algorithms: Vec<Algorithm> = allowed
        .iter()
        .copied()
        .filter(|a| a.family() == family)
        .collect();
    if algorithms.is_empty() {
        return Err(format!(
            "no algorithm in allowedAlgorithms fits kty {:?}",
            jwk.kty
        ));
    }
    Ok(algorithms)
}

fn b64(member: &str, value: Option<&String>) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("missing {member:?}"))?;
    // RFC 7517 uses unpadded base64url; tolerate padding some issuers add anyway.
    let trimmed = value.trim_end_matches('=');
    let bytes =
        crate::base64url::decode(trimmed).ok_or_else(|| format!("{member:?} is not base64url"))?;
    if bytes.is_empty() {
        return Err(format!("{member:?} is empty"));
    }
    Ok(bytes)
}

fn modulus_bits(n: &[u8]) -> usize {
    let mut significant = n.iter().skip_while(|b| **b == 0);
    match significant.next() {
        None => 0,
        Some(first) => (significant.count() * 8) + (8 - first.leading_zeros() as usize),
    }
}

fn rsa_keys(jwk: &RawJwk, algorithms: &[Algorithm]) -> Result<Vec<VerifyingKey>, String> {
    let n = b64("n", jwk.n.as_ref())?;
    let e = b64("e", jwk.e.as_ref())?;
    let bits = modulus_bits(&n);
    if bits < MIN_RSA_MODULUS_BITS {
        return Err(format!(
            "RSA modulus of {bits} bits is below the {MIN_RSA_MODULUS_BITS} bits required"
        ));
    }
    if bits > MAX_RSA_MODULUS_BITS {
        return Err(format!(
            "RSA modulus of {bits} bits is above the {MAX_RSA_MODULUS_BITS} bits supported"
        ));
    }
    algorithms
        .iter()
        .map(|alg| VerifyingKey::rsa(*alg, &n, &e))
        .collect()
}

fn ec_key(jwk: &RawJwk, algorithms: &[Algorithm]) -> Result<Vec<VerifyingKey>, String> {
    let (alg, coordinate_bytes) = match jwk.crv.as_deref() {
        Some("P-256") => (Algorithm::ES256, 32),
        Some("P-384") => (Algorithm::ES384, 48),
        Some(other) => return Err(format!("unsupported EC curve {other:?}")),
        None => return Err("missing \"crv\"".to_owned()),
    };
    if !algorithms.contains(&alg) {
        return Err(if jwk.alg.is_some() {
            format!(
                "alg does not fit curve {:?}",
                jwk.crv.as_deref().unwrap_or("")
            )
        } else {
            format!("alg {alg} is not in allowedAlgorithms")
        });
    }
    let x = b64("x", jwk.x.as_ref())?;
    let y = b64("y", jwk.y.as_ref())?;
    if x.len() != coordinate_bytes || y.len() != coordinate_bytes {
        return Err(format!(
            "EC coordinates must be {coordinate_bytes} bytes each"
        ));
    }
    // SEC1 uncompressed point: 0x04 || x || y.
    let mut point = Vec::with_capacity(1 + 2 * coordinate_bytes);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(vec![VerifyingKey::ec(alg, &point)?])
}

fn okp_key(jwk: &RawJwk, algorithms: &[Algorithm]) -> Result<Vec<VerifyingKey>, String> {
    match jwk.crv.as_deref() {
        Some("Ed25519") => {}
        Some(other) => return Err(format!("unsupported OKP curve {other:?}")),
        None => return Err("missing \"crv\"".to_owned()),
    }
    if !algorithms.contains(&Algorithm::EdDSA) {
        return Err("alg EdDSA is not in allowedAlgorithms".to_owned());
    }
    let x = b64("x", jwk.x.as_ref())?;
    if x.len() != 32 {
        return Err("Ed25519 public key must be 32 bytes".to_owned());
    }
    Ok(vec![VerifyingKey::ed25519(&x)?])
}

fn oct_keys(jwk: &RawJwk, algorithms: &[Algorithm]) -> Result<Vec<VerifyingKey>, String> {
    let k = b64("k", jwk.k.as_ref())?;
    let fitting: Vec<VerifyingKey> = algorithms
        .iter()
        .filter(|alg| k.len() >= alg.min_hmac_key_bytes())
        .filter_map(|alg| VerifyingKey::hmac(*alg, &k))
        .collect();
    if fitting.is_empty() {
        let needed = algorithms
            .iter()
            .map(|a| a.min_hmac_key_bytes())
            .min()
            .unwrap_or(32);
        return Err(format!(
            "HMAC key of {} bytes is shorter than the {needed} bytes the algorithm needs",
            k.len()
        ));
    }
    Ok(fitting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_tokens::{Key, b64, ec256, ec384, ed25519, jwks, rsa};
    use wasm_bindgen_test::wasm_bindgen_test;

    fn parse(json: &str) -> Result<KeySet, JwksError> {
        KeySet::parse(json.as_bytes(), &Algorithm::ALL, KeyOrigin::Inline)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn parses_every_key_family_with_its_algorithms() {
        let jwks = jwks([
            rsa().jwk("rsa").key_use("sig"),
            ec256().jwk("p256").alg("ES256"),
            ec384().jwk("p384"),
            ed25519().jwk("ed").alg("EdDSA"),
            Key::Hmac(vec![7; 64]).jwk("hmac"),
        ]);
        let set = parse(&jwks).unwrap();
        assert!(set.skipped().is_empty(), "{:?}", set.skipped());
        let algs: Vec<(Option<&str>, Algorithm)> = set
            .entries()
            .iter()
            .map(|e| (e.kid.as_deref(), e.key.algorithm()))
            .collect();
        for alg in [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ] {
            assert!(algs.contains(&(Some("rsa"), alg)));
        }
        assert!(algs.contains(&(Some("p256"), Algorithm::ES256)));
        assert!(algs.contains(&(Some("p384"), Algorithm::ES384)));
        assert!(algs.contains(&(Some("ed"), Algorithm::EdDSA)));
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            assert!(algs.contains(&(Some("hmac"), alg)));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rsa_key_with_alg_serves_only_that_algorithm() {
        let set = parse(&jwks([rsa().jwk("r").key_use("sig").alg("PS384")])).unwrap();
        let algs: Vec<Algorithm> = set.entries().iter().map(|e| e.key.algorithm()).collect();
        assert_eq!(algs, vec![Algorithm::PS384]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keeps_only_allowed_algorithms() {
        let set = KeySet::parse(
            jwks([rsa().jwk("r").key_use("sig")]).as_bytes(),
            &[Algorithm::RS256, Algorithm::ES256],
            KeyOrigin::Remote,
        )
        .unwrap();
        let algs: Vec<Algorithm> = set.entries().iter().map(|e| e.key.algorithm()).collect();
        assert_eq!(algs, vec![Algorithm::RS256]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn skips_key_whose_alg_is_not_allowed() {
        let err = KeySet::parse(
            jwks([rsa().jwk("r").key_use("sig").alg("RS512")]).as_bytes(),
            &[Algorithm::RS256],
            KeyOrigin::Remote,
        )
        .unwrap_err();
        assert!(err.0.contains("RS512 is not in allowedAlgorithms"), "{err}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn skips_bad_keys_with_reasons_and_keeps_good_ones() {
        let jwks = jwks([
            r#"{"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"}"#.to_owned(),
            ec256().jwk("good").to_string(),
            r#"{"kty":"EC","kid":"p521","crv":"P-521","x":"AA","y":"AA"}"#.to_owned(),
            r#""not an object""#.to_owned(),
        ]);
        let set = parse(&jwks).unwrap();
        assert_eq!(set.entries().len(), 1);
        let reasons: Vec<String> = set.skipped().iter().map(ToString::to_string).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("\"use\" is \"enc\""), "{reasons:?}");
        assert!(reasons[1].contains("unsupported EC curve \"P-521\""));
        assert!(reasons[2].starts_with("key 3: not a JWK"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_alg_none_on_a_key() {
        let err = parse(&jwks([Key::Hmac(vec![1; 32]).jwk("h").alg("none")])).unwrap_err();
        assert!(err.0.contains("alg \"none\" is never accepted"), "{err}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_alg_that_does_not_fit_the_key_type() {
        let err = parse(&jwks([rsa().jwk("r").key_use("sig").alg("ES256")])).unwrap_err();
        assert!(
            err.0.contains("alg ES256 does not fit kty \"RSA\""),
            "{err}"
        );
        let err = parse(&jwks([ec384().jwk("e").alg("ES256")])).unwrap_err();
        assert!(err.0.contains("does not fit curve \"P-384\""), "{err}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_hmac_key_shorter_than_the_hash() {
        // 31 bytes: ring's HMAC alone would accept it (it takes a key of any length).
        let err = parse(&jwks([Key::Hmac(vec![1; 31]).jwk("h").alg("HS256")])).unwrap_err();
        assert!(err.0.contains("shorter than the 32 bytes"), "{err}");
        // 32 bytes is enough for HS256 but not for HS384/HS512.
        let set = parse(&jwks([Key::Hmac(vec![1; 32]).jwk("h")])).unwrap();
        let algs: Vec<Algorithm> = set.entries().iter().map(|e| e.key.algorithm()).collect();
        assert_eq!(algs, vec![Algorithm::HS256]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_symmetric_keys_from_a_remote_set() {
        let err = KeySet::parse(
            jwks([Key::Hmac(vec![1; 64]).jwk("h")]).as_bytes(),
            &Algorithm::ALL,
            KeyOrigin::Remote,
        )
        .unwrap_err();
        assert!(err.0.contains("accepted only inline"), "{err}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_rsa_modulus_below_2048_bits() {
        // A 1024-bit modulus: top byte 0xc3, 128 bytes.
        let mut n = vec![0xc3u8; 128];
        n[127] = 0x01;
        let jwk = format!(
            r#"{{"kty":"RSA","kid":"small","n":"{}","e":"AQAB"}}"#,
            b64(&n)
        );
        let err = parse(&jwks([jwk])).unwrap_err();
        assert!(err.0.contains("1024 bits is below the 2048"), "{err}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_rsa_modulus_above_4096_bits() {
        // A 4104-bit modulus: 513 bytes, top byte 0xc3.
        let mut n = vec![0xc3u8; 513];
        n[512] = 0x01;
        let jwk = format!(
            r#"{{"kty":"RSA","kid":"huge","n":"{}","e":"AQAB"}}"#,
            b64(&n)
        );
        let err = parse(&jwks([jwk])).unwrap_err();
        assert!(err.0.contains("4104 bits is above the 4096"), "{err}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_ec_point_off_the_curve() {
        let jwk = format!(
            r#"{{"kty":"EC","kid":"bad","crv":"P-256","x":"{}","y":"{}"}}"#,
            b64(&[1; 32]),
            b64(&[2; 32])
        );
        let err = parse(&jwks([jwk])).unwrap_err();
        assert!(err.0.contains("not on the curve"), "{err}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn honours_key_ops() {
        let jwk = r#"{"kty":"oct","kid":"h","key_ops":["sign"],"k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#;
        let err = parse(&jwks([jwk])).unwrap_err();
        assert!(err.0.contains("key_ops"), "{err}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn empty_set_and_non_jwks_are_errors() {
        assert!(
            parse(r#"{"keys":[]}"#)
                .unwrap_err()
                .0
                .contains("has no keys")
        );
        assert!(parse("[]").unwrap_err().0.contains("not a JWKS document"));
        assert!(parse("{").unwrap_err().0.contains("not a JWKS document"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_published_set_without_a_usable_key_is_an_empty_set() {
        let published = |json: &str| {
            KeySet::parse_published(json.as_bytes(), &[Algorithm::ES256], KeyOrigin::Remote)
        };
        let none = published(r#"{"keys":[]}"#).unwrap();
        assert!(none.is_empty() && none.skipped().is_empty());
        assert_eq!(none.why_empty(), "the set has no keys");
        // Rotated to an algorithm not allowed here: every key skipped, with its reason.
        let rotated = published(&jwks([rsa().jwk("r2").alg("RS256")])).unwrap();
        assert!(rotated.is_empty());
        assert!(
            rotated.why_empty().contains("not in allowedAlgorithms"),
            "{}",
            rotated.why_empty()
        );
        assert!(matches!(
            rotated.lookup(Algorithm::ES256, Some("r2")),
            KeyLookup::UnknownKid
        ));
        // Not a JWKS, or too many keys, is still no set at all.
        assert!(published("{").is_err());
        let many: Vec<_> = (0..=MAX_KEYS_PER_SET)
            .map(|i| ec256().jwk(&format!("k{i}")))
            .collect();
        assert!(published(&jwks(many)).is_err());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_fingerprint_names_the_usable_keys_not_the_document() {
        let fp = |json: &str| parse(json).unwrap().fingerprint();
        let both = fp(&jwks([ec256().jwk("a"), ed25519().jwk("b")]));
        // Same keys, another order, other formatting, an extra unusable key: same set.
        let reordered = jwks([ed25519().jwk("b"), ec256().jwk("a")]);
        assert_eq!(fp(&reordered), both);
        assert_eq!(fp(&format!("  {}\n", reordered.replace(',', " , "))), both);
        let with_junk = jwks([
            ec256().jwk("a"),
            ed25519().jwk("b"),
            rsa().jwk("c").key_use("enc"),
        ]);
        assert_eq!(fp(&with_junk), both);
        // A key removed, added, renamed or replaced: another set.
        let one = fp(&jwks([ec256().jwk("a")]));
        assert_ne!(one, both);
        assert_ne!(
            fp(&jwks([
                ec256().jwk("a"),
                ed25519().jwk("b"),
                ec384().jwk("c")
            ])),
            both
        );
        assert_ne!(fp(&jwks([ec256().jwk("z")])), one);
        assert_ne!(fp(&jwks([Key::generate_ec256().jwk("a")])), one);
        assert_ne!(fp(&jwks([ec256().jwk("a").alg("ES256")])), 0);
        // The empty set has a fingerprint of its own.
        let empty = KeySet::parse_published(br#"{"keys":[]}"#, &Algorithm::ALL, KeyOrigin::Remote)
            .unwrap()
            .fingerprint();
        assert_ne!(empty, one);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn lookup_distinguishes_unknown_kid_from_algorithm_mismatch() {
        let set = parse(&jwks([ec256().jwk("a"), ed25519().jwk("b")])).unwrap();
        assert!(matches!(
            set.lookup(Algorithm::ES256, Some("zzz")),
            KeyLookup::UnknownKid
        ));
        assert!(matches!(
            set.lookup(Algorithm::EdDSA, Some("a")),
            KeyLookup::AlgorithmMismatch
        ));
        match set.lookup(Algorithm::ES256, Some("a")) {
            KeyLookup::Candidates(keys) => assert_eq!(keys.len(), 1),
            other => panic!("{other:?}"),
        }
        match set.lookup(Algorithm::EdDSA, None) {
            KeyLookup::Candidates(keys) => assert_eq!(keys.len(), 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            set.lookup(Algorithm::RS256, None),
            KeyLookup::AlgorithmMismatch
        ));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_set_of_more_than_100_keys_is_refused_whole() {
        let key = ec256();
        let at_cap = jwks((0..MAX_KEYS_PER_SET).map(|i| key.jwk(&format!("k{i}"))));
        assert_eq!(parse(&at_cap).unwrap().entries().len(), MAX_KEYS_PER_SET);
        let over = jwks((0..=MAX_KEYS_PER_SET).map(|i| key.jwk(&format!("k{i}"))));
        let err = parse(&over).unwrap_err();
        assert!(err.0.contains("101 keys; at most 100"), "{err}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_token_without_kid_is_tried_against_four_keys_at_most() {
        let keys: Vec<Key> = (0..=MAX_KID_LESS_CANDIDATES)
            .map(|_| Key::generate_ec256())
            .collect();
        let four = jwks(
            keys.iter()
                .take(4)
                .enumerate()
                .map(|(i, k)| k.jwk(&format!("k{i}"))),
        );
        match parse(&four).unwrap().lookup(Algorithm::ES256, None) {
            KeyLookup::Candidates(c) => assert_eq!(c.len(), 4),
            other => panic!("{other:?}"),
        }
        let five = jwks(
            keys.iter()
                .enumerate()
                .map(|(i, k)| k.jwk(&format!("k{i}"))),
        );
        let set = parse(&five).unwrap();
        assert!(matches!(
            set.lookup(Algorithm::ES256, None),
            KeyLookup::KidRequired
        ));
        // Naming a kid still finds its one key.
        assert!(matches!(
            set.lookup(Algorithm::ES256, Some("k4")),
            KeyLookup::Candidates(c) if c.len() == 1
        ));
    }
}
