//! Token verification for one provider: the cheap checks first (algorithm, times, `typ`,
//! key lookup), then the signature over the token's first two segments as received, then
//! the standard claims (`iss`, `aud`, claim types) and the required claims. One claims path
//! for every algorithm, whichever library checks the signature ([`crate::signature`]).

use banking_filter_common::clock::Timestamp;
use serde_json::{Map, Value};

use crate::config::Provider;
use crate::decision::{Denial, DenyReason};
use crate::jwks::{KeyLookup, KeySet};
use crate::native::SignatureChecks;
use crate::token::{Unverified, numeric_date};

/// What a successful verification established.
#[derive(Debug)]
pub struct Verified {
    pub claims: Map<String, Value>,
    /// `exp`, when the token has one.
    pub expires_at: Option<Timestamp>,
}

fn deny(reason: DenyReason, detail: &str) -> Denial {
    Denial::new(reason, detail)
}

/// Verifies `token` for `provider` against `keys` at `now`, its signature on the path
/// `checks` allows.
pub fn verify(
    provider: &Provider,
    keys: &KeySet,
    token: Unverified<'_>,
    now: Timestamp,
    max_token_bytes: usize,
    checks: &SignatureChecks,
) -> Result<Verified, Denial> {
    if token.text.len() > max_token_bytes {
        return Err(deny(DenyReason::TokenTooLarge, "The token is too large."));
    }
    if !provider.allowed_algorithms.contains(&token.alg) {
        return Err(deny(
            DenyReason::AlgorithmNotAllowed,
            "The token's alg is not allowed for its issuer.",
        ));
    }
    let exp = check_times(provider, &token.claims, now)?;
    // RFC 8725 §3.11: a typ, when present, must say this is a JWT, so that another kind
    // of signed object from the same issuer (a DPoP proof, a logout token) is not taken
    // for an access token.
    if let Some(typ) = &token.typ {
        let typ = typ.to_ascii_uppercase();
        if typ != "JWT" && !typ.ends_with("+JWT") {
            return Err(deny(
                DenyReason::MalformedToken,
                "The token's typ is not a JWT type.",
            ));
        }
    }

    let candidates = match keys.lookup(token.alg, token.kid.as_deref()) {
        KeyLookup::Candidates(c) => c,
        KeyLookup::UnknownKid => {
            return Err(deny(
                DenyReason::UnknownKey,
                "No signing key of the issuer has the token's kid.",
            ));
        }
        KeyLookup::AlgorithmMismatch => {
            return Err(deny(
                DenyReason::KeyAlgorithmMismatch,
                "The issuer's key for this token does not use the token's alg.",
            ));
        }
        // Malformed rather than an unknown key: a re-fetch would not help.
        KeyLookup::KidRequired => {
            return Err(deny(
                DenyReason::MalformedToken,
                "The issuer has several keys for the token's alg: the token must name its kid.",
            ));
        }
    };

    // RFC 7515 §5.2: the signature covers `header.payload` exactly as sent, not a
    // re-encoding of what was decoded.
    let Some((signing_input, signature)) = token.text.rsplit_once('.') else {
        return Err(deny(
            DenyReason::MalformedToken,
            "A JWS has three dot-separated segments.",
        ));
    };
    let signature = decode_signature(signature)?;
    // Without a kid several keys may fit: the token is good if one of them signed it.
    if !candidates
        .iter()
        .any(|key| key.verify(signing_input.as_bytes(), &signature, checks))
    {
        return Err(deny(
            DenyReason::InvalidSignature,
            "The token's signature does not verify.",
        ));
    }

    // Only now, with the signature verified, may an audience mismatch say 403 (the token
    // is genuine, but not for this API).
    check_standard_claims(provider, &token.claims)?;
    for claim in &provider.required_claims {
        if token.claims.get(claim).is_none_or(Value::is_null) {
            return Err(deny(
                DenyReason::MissingClaim,
                &format!("The token lacks the required claim \"{claim}\"."),
            ));
        }
    }

    let expires_at = exp
        .and_then(|e| u64::try_from(e).ok())
        .map(Timestamp::from_unix_seconds);
    Ok(Verified {
        claims: token.claims,
        expires_at,
    })
}

/// The signature segment as bytes. [`crate::base64url`] accepts unpadded base64url in its one
/// canonical spelling only (no padding, no set bits after the last byte), so no two token
/// texts carry the same signature: the verified-token cache is keyed by the text.
fn decode_signature(segment: &str) -> Result<Vec<u8>, Denial> {
    crate::base64url::decode(segment).ok_or_else(|| {
        deny(
            DenyReason::MalformedToken,
            "The token's signature is not base64url.",
        )
    })
}

/// RFC 7519 §4.1: `iss` is this provider's issuer, `aud` (a string or an array of strings)
/// names one of its audiences, and `sub`, `jti` and `nonce` are strings when present.
fn check_standard_claims(provider: &Provider, claims: &Map<String, Value>) -> Result<(), Denial> {
    let odd_types = || {
        deny(
            DenyReason::MalformedToken,
            "The token's claims do not have the standard JWT types.",
        )
    };
    for name in ["iss", "sub", "jti", "nonce"] {
        if !matches!(
            claims.get(name),
            None | Some(Value::Null | Value::String(_))
        ) {
            return Err(odd_types());
        }
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<_>>()
            .ok_or_else(odd_types)?,
        Some(_) => return Err(odd_types()),
    };
    if claims.get("iss").and_then(Value::as_str) != Some(provider.issuer.as_str()) {
        return Err(deny(
            DenyReason::UnknownIssuer,
            "The token's iss is not a trusted issuer.",
        ));
    }
    if !audiences
        .iter()
        .any(|aud| provider.audiences.iter().any(|accepted| accepted == aud))
    {
        return Err(deny(
            DenyReason::AudienceMismatch,
            "The token's aud names none of the audiences this API accepts.",
        ));
    }
    Ok(())
}

/// `exp`, `nbf`, `iat` and lifetime against `now` with the provider's skew. Done before
/// any signature work: an expired token is refused at the cost of a JSON parse.
fn check_times(
    provider: &Provider,
    claims: &Map<String, Value>,
    now: Timestamp,
) -> Result<Option<i64>, Denial> {
    let malformed = |why: &str| deny(DenyReason::MalformedToken, why);
    let exp = numeric_date(claims, "exp").map_err(malformed)?;
    let nbf = numeric_date(claims, "nbf").map_err(malformed)?;
    let iat = numeric_date(claims, "iat").map_err(malformed)?;
    let now = i64::try_from(now.unix_seconds()).unwrap_or(i64::MAX);
    let skew = i64::try_from(provider.clock_skew.as_secs()).unwrap_or(0);

    match exp {
        None if provider.require_expiration => {
            return Err(deny(
                DenyReason::MissingExpiration,
                "The token has no exp claim.",
            ));
        }
        Some(exp) if now.saturating_sub(skew) > exp => {
            return Err(deny(DenyReason::Expired, "The token's exp has passed."));
        }
        _ => {}
    }
    if nbf.is_some_and(|nbf| now.saturating_add(skew) < nbf) {
        return Err(deny(
            DenyReason::NotYetValid,
            "The token's nbf is in the future.",
        ));
    }
    if iat.is_some_and(|iat| now.saturating_add(skew) < iat) {
        return Err(deny(
            DenyReason::NotYetValid,
            "The token's iat is in the future.",
        ));
    }
    if let Some(max) = provider.max_lifetime {
        let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        let lifetime = match (exp, iat.or(nbf)) {
            (Some(exp), Some(start)) => exp.saturating_sub(start),
            _ => {
                return Err(deny(
                    DenyReason::LifetimeTooLong,
                    "A maximum lifetime is configured and the token lacks exp, or both iat and nbf.",
                ));
            }
        };
        if lifetime > max {
            return Err(deny(
                DenyReason::LifetimeTooLong,
                "The token's lifetime exceeds the maximum accepted.",
            ));
        }
    }
    Ok(exp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySource;
    use crate::jwks::{Algorithm, KeyOrigin, VerifyingKey};
    use crate::native::{self, HostCallFailed, SignatureChecks, SignatureHost};
    use crate::signature::Path;
    use crate::testkeys::{self, NOW, claims_with, good_claims, mint};
    use crate::token;
    use ct_codecs::{Base64UrlSafeNoPadding, Decoder};
    use serde_json::json;
    use std::cell::RefCell;
    use std::time::Duration;
    use test_tokens::{forged, jwks, mint_raw_hs256, other_rsa, resigned, weak_rsa_1024};
    use wasm_bindgen_test::wasm_bindgen_test;

    fn provider() -> Provider {
        Provider {
            issuer: "https://idp.bank.example".into(),
            audiences: vec!["payments-api".into(), "accounts-api".into()],
            keys: KeySource::Inline(KeySet::default()),
            allowed_algorithms: Algorithm::ALL.to_vec(),
            clock_skew: Duration::from_secs(60),
            require_expiration: true,
            max_lifetime: None,
            required_claims: vec![],
        }
    }

    fn keys() -> KeySet {
        KeySet::parse(
            test_tokens::every_family_jwks().as_bytes(),
            &Algorithm::ALL,
            KeyOrigin::Inline,
        )
        .unwrap()
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_seconds(secs)
    }

    fn check(p: &Provider, token: &str, now: u64) -> Result<Verified, Denial> {
        let u = token::parse(token.as_bytes(), 8192).unwrap();
        verify(p, &keys(), u, at(now), 8192, &SignatureChecks::in_wasm())
    }

    fn reason(p: &Provider, token: &str, now: u64) -> DenyReason {
        check(p, token, now).unwrap_err().reason
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn verifies_every_algorithm_of_every_key_family() {
        let p = provider();
        for alg in Algorithm::ALL {
            let t = mint(alg, Some(testkeys::kid_for(alg)), good_claims());
            let v = check(&p, &t, NOW).unwrap_or_else(|d| panic!("{alg}: {d:?}"));
            assert_eq!(v.claims["sub"], "cust-42");
            assert_eq!(v.expires_at, Some(at(NOW + 300)));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn token_without_kid_is_tried_against_keys_of_its_algorithm() {
        let t = mint(Algorithm::ES256, None, good_claims());
        assert!(check(&provider(), &t, NOW).is_ok());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn uses_the_given_clock_with_the_configured_skew() {
        let p = provider();
        let t = mint(Algorithm::ES256, Some("ec256"), good_claims());
        // exp is NOW+300; the 60 s skew keeps it valid until NOW+360.
        assert!(check(&p, &t, NOW + 360).is_ok());
        assert_eq!(reason(&p, &t, NOW + 361), DenyReason::Expired);
        // No leeway beyond the configured skew: 10 minutes after exp is expired.
        assert_eq!(reason(&p, &t, NOW + 900), DenyReason::Expired);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_tokens_from_the_future() {
        let p = provider();
        let t = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"nbf": NOW + 120})),
        );
        assert_eq!(reason(&p, &t, NOW), DenyReason::NotYetValid);
        assert!(check(&p, &t, NOW + 60).is_ok());
        let t = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"iat": NOW + 120, "nbf": null})),
        );
        assert_eq!(reason(&p, &t, NOW), DenyReason::NotYetValid);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn requires_exp_unless_configured_otherwise() {
        let mut p = provider();
        let t = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"exp": null})),
        );
        assert_eq!(reason(&p, &t, NOW), DenyReason::MissingExpiration);
        p.require_expiration = false;
        let v = check(&p, &t, NOW).unwrap();
        assert_eq!(v.expires_at, None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_a_negative_exp_that_jwt_simple_would_read_as_far_future() {
        let t = mint_raw_hs256(
            r#"{"alg":"HS256","kid":"hmac"}"#,
            r#"{"iss":"https://idp.bank.example","aud":"payments-api","exp":-1}"#,
        );
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::Expired);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn enforces_max_lifetime() {
        let mut p = provider();
        p.max_lifetime = Some(Duration::from_secs(600));
        let ok = mint(Algorithm::ES256, Some("ec256"), good_claims());
        assert!(check(&p, &ok, NOW).is_ok());
        let long = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"exp": NOW + 3600})),
        );
        assert_eq!(reason(&p, &long, NOW), DenyReason::LifetimeTooLong);
        let unbounded = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"iat": null, "nbf": null})),
        );
        assert_eq!(reason(&p, &unbounded, NOW), DenyReason::LifetimeTooLong);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_algorithm_not_allowed_for_the_issuer() {
        let mut p = provider();
        p.allowed_algorithms = vec![Algorithm::RS256];
        let t = mint(Algorithm::ES256, Some("ec256"), good_claims());
        assert_eq!(reason(&p, &t, NOW), DenyReason::AlgorithmNotAllowed);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_kid_and_key_algorithm_mismatch() {
        let p = provider();
        let t = mint(Algorithm::ES256, Some("nope"), good_claims());
        assert_eq!(reason(&p, &t, NOW), DenyReason::UnknownKey);
        // kid "rsa" is an RSA key; an ES256 token naming it does not fit.
        let t = mint(Algorithm::ES256, Some("rsa"), good_claims());
        assert_eq!(reason(&p, &t, NOW), DenyReason::KeyAlgorithmMismatch);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_a_bad_signature() {
        let t = forged("ec256", good_claims());
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::InvalidSignature);
        // A tampered payload under a valid signature.
        let good = mint(Algorithm::RS256, Some("rsa"), good_claims());
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = test_tokens::b64(
            claims_with(json!({"sub": "cust-99"}))
                .to_string()
                .as_bytes(),
        );
        parts[1] = &evil;
        assert_eq!(
            reason(&provider(), &parts.join("."), NOW),
            DenyReason::InvalidSignature
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn hmac_key_confusion_with_a_public_key_is_refused() {
        // The classic attack: sign HS256 with the RSA public key's bytes. Our HMAC keys come
        // only from `oct` JWKs, so the kid "rsa" has no HS256 key.
        let t = mint_raw_hs256(r#"{"alg":"HS256","kid":"rsa"}"#, &good_claims().to_string());
        assert_eq!(
            reason(&provider(), &t, NOW),
            DenyReason::KeyAlgorithmMismatch
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn audience_mismatch_is_found_after_the_signature() {
        let t = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"aud": "other-api"})),
        );
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::AudienceMismatch);
        let t = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"aud": null})),
        );
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::AudienceMismatch);
        let t = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"aud": ["x", "accounts-api"]})),
        );
        assert!(check(&provider(), &t, NOW).is_ok());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn required_claims_must_be_present_and_not_null() {
        let mut p = provider();
        p.required_claims = vec!["customer_id".into()];
        let t = mint(Algorithm::ES256, Some("ec256"), good_claims());
        let d = check(&p, &t, NOW).unwrap_err();
        assert_eq!(d.reason, DenyReason::MissingClaim);
        assert!(d.detail.contains("customer_id"));
        let t = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"customer_id": "C-1"})),
        );
        assert!(check(&p, &t, NOW).is_ok());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn odd_claim_types_are_malformed() {
        let t = mint_raw_hs256(
            r#"{"alg":"HS256","kid":"hmac"}"#,
            &format!(
                r#"{{"iss":"https://idp.bank.example","aud":"payments-api","exp":"{}"}}"#,
                NOW + 60
            ),
        );
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::MalformedToken);
        let t = mint_raw_hs256(
            r#"{"alg":"HS256","kid":"hmac"}"#,
            &format!(
                r#"{{"iss":"https://idp.bank.example","aud":"payments-api","exp":{},"sub":42}}"#,
                NOW + 60
            ),
        );
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::MalformedToken);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn typ_other_than_jwt_is_malformed() {
        let t = mint_raw_hs256(
            r#"{"alg":"HS256","kid":"hmac","typ":"dpop"}"#,
            &good_claims().to_string(),
        );
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::MalformedToken);
        let t = mint_raw_hs256(
            r#"{"alg":"HS256","kid":"hmac","typ":"at+jwt"}"#,
            &good_claims().to_string(),
        );
        assert!(check(&provider(), &t, NOW).is_ok());
    }

    fn rsa_modulus() -> Vec<u8> {
        test_tokens::rsa().rsa_public().n
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_a_signature_with_one_bit_flipped_in_every_algorithm() {
        for alg in Algorithm::ALL {
            let good = mint(alg, Some(testkeys::kid_for(alg)), good_claims());
            for byte in [0, 17] {
                let t = resigned(&good, |s| s[byte] ^= 0x01);
                assert_eq!(
                    reason(&provider(), &t, NOW),
                    DenyReason::InvalidSignature,
                    "{alg} byte {byte}"
                );
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_a_valid_signature_by_another_rsa_key() {
        let other = other_rsa();
        let t = other.mint("RS256", "rsa", good_claims());
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::InvalidSignature);
        // The same token verifies once the other key is the one published.
        let set = KeySet::parse(
            jwks([other.jwk("rsa")]).as_bytes(),
            &Algorithm::ALL,
            KeyOrigin::Inline,
        )
        .unwrap();
        let u = token::parse(t.as_bytes(), 8192).unwrap();
        assert!(
            verify(
                &provider(),
                &set,
                u,
                at(NOW),
                8192,
                &SignatureChecks::in_wasm()
            )
            .is_ok()
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_rsa_signature_values_out_of_range() {
        let good = mint(Algorithm::RS256, Some("rsa"), good_claims());
        let n = rsa_modulus();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("s = n", n.clone()),
            ("s > n", vec![0xff; n.len()]),
            ("s = 0", vec![0; n.len()]),
            ("s = 1", {
                let mut one = vec![0; n.len()];
                *one.last_mut().unwrap() = 1;
                one
            }),
        ];
        for (name, value) in cases {
            let t = resigned(&good, |s| *s = value);
            assert_eq!(
                reason(&provider(), &t, NOW),
                DenyReason::InvalidSignature,
                "{name}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_truncated_or_extended_signatures() {
        for alg in [
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
            Algorithm::HS256,
        ] {
            let good = mint(alg, Some(testkeys::kid_for(alg)), good_claims());
            let truncated = resigned(&good, |s| {
                s.pop();
            });
            let extended = resigned(&good, |s| s.insert(0, 0));
            for t in [truncated, extended] {
                assert_eq!(
                    reason(&provider(), &t, NOW),
                    DenyReason::InvalidSignature,
                    "{alg}"
                );
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_a_signature_segment_that_is_not_canonical_base64url() {
        // The last character of a signature whose length is not a multiple of 3 carries
        // unused low bits: setting one keeps the bytes but changes the token text.
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::HS256] {
            let good = mint(alg, Some(testkeys::kid_for(alg)), good_claims());
            let (input, signature) = good.rsplit_once('.').unwrap();
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let last = signature.bytes().last().unwrap();
            let value = alphabet.iter().position(|c| *c == last).unwrap();
            let sloppy = char::from(alphabet[value | 1]);
            assert_ne!(char::from(last), sloppy, "{alg}");
            let t = format!("{input}.{}{sloppy}", &signature[..signature.len() - 1]);
            let d = check(&provider(), &t, NOW).unwrap_err();
            assert_eq!(d.reason, DenyReason::MalformedToken, "{alg}");
            assert!(d.detail.contains("signature is not base64url"), "{alg}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_1024_bit_rsa_key_is_refused_and_its_tokens_never_verify() {
        let weak = weak_rsa_1024();
        let err = KeySet::parse(
            jwks([weak.jwk("weak")]).as_bytes(),
            &Algorithm::ALL,
            KeyOrigin::Remote,
        )
        .unwrap_err();
        assert!(err.0.contains("1024 bits is below the 2048"), "{err}");
        // Even past the JWKS check, ring's own floor refuses the key's valid signatures.
        let t = weak.mint("RS256", "weak", good_claims());
        let (input, signature) = t.rsplit_once('.').unwrap();
        let signature = Base64UrlSafeNoPadding::decode_to_vec(signature, None).unwrap();
        let c = weak.rsa_public();
        let key = VerifyingKey::rsa(Algorithm::RS256, &c.n, &c.e).unwrap();
        assert!(!key.verify(input.as_bytes(), &signature, &SignatureChecks::in_wasm()));
    }

    /// A proxy whose `verify_signature` answers `verdict` (or fails) and keeps what it was
    /// asked.
    struct FakeProxy {
        verdict: Result<bool, HostCallFailed>,
        asked: RefCell<Vec<Vec<u8>>>,
    }

    impl SignatureHost for FakeProxy {
        fn verify_signature(&self, arguments: &[u8]) -> Result<Vec<u8>, HostCallFailed> {
            self.asked.borrow_mut().push(arguments.to_vec());
            self.verdict.map(|yes| {
                if yes {
                    vec![0x08, 0x01]
                } else {
                    b"\x12\x03bad".to_vec()
                }
            })
        }
    }

    fn proxy(verdict: Result<bool, HostCallFailed>) -> FakeProxy {
        FakeProxy {
            verdict,
            asked: RefCell::new(Vec::new()),
        }
    }

    fn parts(alg: Algorithm) -> (String, Vec<u8>) {
        let t = mint(alg, Some(testkeys::kid_for(alg)), good_claims());
        let (input, signature) = t.rsplit_once('.').unwrap();
        let signature = Base64UrlSafeNoPadding::decode_to_vec(signature, None).unwrap();
        (input.to_owned(), signature)
    }

    fn key_for(set: &KeySet, alg: Algorithm) -> VerifyingKey {
        let KeyLookup::Candidates(keys) = set.lookup(alg, Some(testkeys::kid_for(alg))) else {
            panic!("{alg}")
        };
        keys[0].clone()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_algorithm_verifies_in_wasm_and_refuses_another_text() {
        let set = keys();
        for alg in Algorithm::ALL {
            let key = key_for(&set, alg);
            let (input, signature) = parts(alg);
            let checks = SignatureChecks::in_wasm();
            assert!(key.verify(input.as_bytes(), &signature, &checks), "{alg}");
            assert!(!key.verify(b"x.y", &signature, &checks), "{alg}");
            assert_eq!((checks.wasm_count(), checks.proxy_count()), (2, 0), "{alg}");
        }
        // PS256 and ES384 end to end, through the claims path too.
        for alg in [Algorithm::PS256, Algorithm::ES384, Algorithm::EdDSA] {
            let t = mint(alg, Some(testkeys::kid_for(alg)), good_claims());
            assert!(check(&provider(), &t, NOW).is_ok(), "{alg}");
            let t = mint(
                alg,
                Some(testkeys::kid_for(alg)),
                claims_with(json!({"aud": "other-api"})),
            );
            assert_eq!(reason(&provider(), &t, NOW), DenyReason::AudienceMismatch);
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rs_and_es_go_to_the_proxy_with_their_hash_spki_and_der_signature() {
        let set = keys();
        for (alg, hash) in [
            (Algorithm::RS256, "sha256"),
            (Algorithm::RS384, "sha384"),
            (Algorithm::RS512, "sha512"),
            (Algorithm::ES256, "sha256"),
            (Algorithm::ES384, "sha384"),
        ] {
            let key = key_for(&set, alg);
            assert_eq!(key.path(), Path::ProxyOrWasm, "{alg}");
            let (input, signature) = parts(alg);
            // The proxy's verdict is the answer, both ways, and nothing runs in Wasm.
            for verdict in [true, false] {
                let host = proxy(Ok(verdict));
                let checks = SignatureChecks::by_proxy(&host);
                assert_eq!(key.verify(input.as_bytes(), &signature, &checks), verdict);
                assert_eq!((checks.proxy_count(), checks.wasm_count()), (1, 0), "{alg}");
                let asked = host.asked.borrow();
                let (spki, sent) = match &key {
                    VerifyingKey::Rsa { n, e, .. } => (native::rsa_spki(n, e), signature.clone()),
                    VerifyingKey::Ec { point, curve, .. } => (
                        native::ec_spki(*curve, point),
                        native::ecdsa_der(*curve, &signature).unwrap(),
                    ),
                    other => panic!("{other:?}"),
                };
                assert_eq!(
                    asked[0],
                    native::arguments(hash, &spki, &sent, input.as_bytes()),
                    "{alg}"
                );
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn pss_eddsa_and_hmac_never_go_to_the_proxy() {
        let set = keys();
        for alg in [
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::EdDSA,
            Algorithm::HS256,
            Algorithm::HS384,
            Algorithm::HS512,
        ] {
            let key = key_for(&set, alg);
            assert_eq!(key.path(), Path::Wasm, "{alg}");
            // A proxy that would accept anything is never asked.
            let host = proxy(Ok(true));
            let checks = SignatureChecks::by_proxy(&host);
            let (input, signature) = parts(alg);
            assert!(key.verify(input.as_bytes(), &signature, &checks), "{alg}");
            assert!(!key.verify(b"x.y", &signature, &checks), "{alg}");
            assert!(host.asked.borrow().is_empty(), "{alg}");
            assert_eq!(checks.wasm_count(), 2, "{alg}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_failed_proxy_call_is_checked_in_wasm_never_taken_as_a_pass() {
        let set = keys();
        for alg in [Algorithm::RS256, Algorithm::ES256] {
            let key = key_for(&set, alg);
            let (input, signature) = parts(alg);
            for failure in [HostCallFailed::Failed, HostCallFailed::Absent] {
                let host = proxy(Err(failure));
                let checks = SignatureChecks::by_proxy(&host);
                assert!(key.verify(input.as_bytes(), &signature, &checks), "{alg}");
                assert!(!key.verify(b"x.y", &signature, &checks), "{alg}");
                assert_eq!((checks.proxy_count(), checks.wasm_count()), (0, 2));
            }
        }
        // An ECDSA signature with s = 0 is refused before any call.
        let key = key_for(&set, Algorithm::ES256);
        let (input, mut signature) = parts(Algorithm::ES256);
        signature[32..].fill(0);
        let host = proxy(Ok(true));
        let checks = SignatureChecks::by_proxy(&host);
        assert!(!key.verify(input.as_bytes(), &signature, &checks));
        assert!(host.asked.borrow().is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn issuer_is_checked_after_the_signature_whatever_the_algorithm() {
        let mut p = provider();
        p.issuer = "https://other-idp.bank.example".into();
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            let t = mint(alg, Some(testkeys::kid_for(alg)), good_claims());
            assert_eq!(reason(&p, &t, NOW), DenyReason::UnknownIssuer, "{alg}");
        }
        let t = mint_raw_hs256(
            r#"{"alg":"HS256","kid":"hmac"}"#,
            &claims_with(json!({"aud": ["payments-api", 7]})).to_string(),
        );
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::MalformedToken);
        let t = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"aud": []})),
        );
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::AudienceMismatch);
    }
}
