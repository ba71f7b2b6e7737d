//! Token verification for one provider: the cheap claim checks first (algorithm, times,
//! lifetime, key lookup), then the signature and standard claims through jwt-simple with
//! the host's clock and this filter's clock skew, then the required claims.

use std::collections::HashSet;

use banking_filter_common::clock::Timestamp;
use jwt_simple::JWTError;
use jwt_simple::prelude::{Duration as JwtDuration, UnixTimeStamp, VerificationOptions};
use serde_json::{Map, Value};

use crate::config::Provider;
use crate::decision::{Denial, DenyReason};
use crate::jwks::{KeyLookup, KeySet};
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

/// Verifies `token` for `provider` against `keys` at `now`.
pub fn verify(
    provider: &Provider,
    keys: &KeySet,
    token: Unverified<'_>,
    now: Timestamp,
    max_token_bytes: usize,
) -> Result<Verified, Denial> {
    if !provider.allowed_algorithms.contains(&token.alg) {
        return Err(deny(
            DenyReason::AlgorithmNotAllowed,
            "The token's alg is not allowed for its issuer.",
        ));
    }
    let exp = check_times(provider, &token.claims, now)?;

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
    };

    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([provider.issuer.clone()])),
        allowed_audiences: Some(provider.audiences.iter().cloned().collect()),
        // jwt-simple's default tolerance is 15 minutes: always pass ours.
        time_tolerance: Some(JwtDuration::from_millis(
            u64::try_from(provider.clock_skew.as_millis()).unwrap_or(u64::MAX),
        )),
        max_token_length: Some(max_token_bytes),
        // The host's clock (Envoy's, or the harness's virtual one), not the system's.
        artificial_time: Some(UnixTimeStamp::from_millis(now.unix_millis())),
        ..VerificationOptions::default()
    };
    let mut last_failure = None;
    for key in candidates {
        match key.verify(token.text, options.clone()) {
            Ok(_) => {
                last_failure = None;
                break;
            }
            Err(e) => {
                let denial = map_jwt_error(&e);
                // Without a kid several keys may fit; only a bad signature means "try the next".
                if denial.reason != DenyReason::InvalidSignature {
                    return Err(denial);
                }
                last_failure = Some(denial);
            }
        }
    }
    if let Some(denial) = last_failure {
        return Err(denial);
    }

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

fn map_jwt_error(e: &jwt_simple::Error) -> Denial {
    let (reason, detail) = match e.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidSignature | JWTError::InvalidAuthenticationTag) => (
            DenyReason::InvalidSignature,
            "The token's signature does not verify.",
        ),
        Some(JWTError::TokenHasExpired) => (DenyReason::Expired, "The token's exp has passed."),
        Some(JWTError::TokenNotValidYet | JWTError::ClockDrift) => {
            (DenyReason::NotYetValid, "The token is not valid yet.")
        }
        Some(JWTError::RequiredAudienceMismatch | JWTError::RequiredAudienceMissing) => (
            DenyReason::AudienceMismatch,
            "The token's aud names none of the audiences this API accepts.",
        ),
        Some(JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing) => (
            DenyReason::UnknownIssuer,
            "The token's iss is not a trusted issuer.",
        ),
        Some(JWTError::TokenTooLong) => (DenyReason::TokenTooLarge, "The token is too large."),
        Some(JWTError::AlgorithmMismatch) => (
            DenyReason::KeyAlgorithmMismatch,
            "The issuer's key for this token does not use the token's alg.",
        ),
        Some(JWTError::NotJWT) => (
            DenyReason::MalformedToken,
            "The token's typ is not a JWT type.",
        ),
        _ => (
            DenyReason::MalformedToken,
            "The token's claims do not have the standard JWT types.",
        ),
    };
    deny(reason, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySource;
    use crate::jwks::{Algorithm, KeyOrigin};
    use crate::testkeys::{self, NOW, claims_with, good_claims, mint};
    use crate::token;
    use serde_json::json;
    use std::time::Duration;

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
            testkeys::all_families_jwks().as_bytes(),
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
        verify(p, &keys(), u, at(now), 8192)
    }

    fn reason(p: &Provider, token: &str, now: u64) -> DenyReason {
        check(p, token, now).unwrap_err().reason
    }

    #[test]
    fn verifies_every_algorithm_of_every_key_family() {
        let p = provider();
        for alg in Algorithm::ALL {
            let t = mint(alg, Some(testkeys::kid_for(alg)), good_claims());
            let v = check(&p, &t, NOW).unwrap_or_else(|d| panic!("{alg}: {d:?}"));
            assert_eq!(v.claims["sub"], "cust-42");
            assert_eq!(v.expires_at, Some(at(NOW + 300)));
        }
    }

    #[test]
    fn token_without_kid_is_tried_against_keys_of_its_algorithm() {
        let t = mint(Algorithm::ES256, None, good_claims());
        assert!(check(&provider(), &t, NOW).is_ok());
    }

    #[test]
    fn uses_the_given_clock_with_the_configured_skew() {
        let p = provider();
        let t = mint(Algorithm::ES256, Some("ec256"), good_claims());
        // exp is NOW+300; the 60 s skew keeps it valid until NOW+360.
        assert!(check(&p, &t, NOW + 360).is_ok());
        assert_eq!(reason(&p, &t, NOW + 361), DenyReason::Expired);
        // Not jwt-simple's 15-minute default: 10 minutes after exp is expired.
        assert_eq!(reason(&p, &t, NOW + 900), DenyReason::Expired);
    }

    #[test]
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

    #[test]
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

    #[test]
    fn refuses_a_negative_exp_that_jwt_simple_would_read_as_far_future() {
        let t = testkeys::mint_raw_hs256(
            r#"{"alg":"HS256","kid":"hmac"}"#,
            r#"{"iss":"https://idp.bank.example","aud":"payments-api","exp":-1}"#,
        );
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::Expired);
    }

    #[test]
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

    #[test]
    fn refuses_algorithm_not_allowed_for_the_issuer() {
        let mut p = provider();
        p.allowed_algorithms = vec![Algorithm::RS256];
        let t = mint(Algorithm::ES256, Some("ec256"), good_claims());
        assert_eq!(reason(&p, &t, NOW), DenyReason::AlgorithmNotAllowed);
    }

    #[test]
    fn unknown_kid_and_key_algorithm_mismatch() {
        let p = provider();
        let t = mint(Algorithm::ES256, Some("nope"), good_claims());
        assert_eq!(reason(&p, &t, NOW), DenyReason::UnknownKey);
        // kid "rsa" is an RSA key; an ES256 token naming it does not fit.
        let t = mint(Algorithm::ES256, Some("rsa"), good_claims());
        assert_eq!(reason(&p, &t, NOW), DenyReason::KeyAlgorithmMismatch);
    }

    #[test]
    fn refuses_a_bad_signature() {
        let t = testkeys::mint_with_other_ec256("ec256", good_claims());
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::InvalidSignature);
        // A tampered payload under a valid signature.
        let good = mint(Algorithm::RS256, Some("rsa"), good_claims());
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = testkeys::b64(
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

    #[test]
    fn hmac_key_confusion_with_a_public_key_is_refused() {
        // The classic attack: sign HS256 with the RSA public key's bytes. Our HMAC keys come
        // only from `oct` JWKs, so the kid "rsa" has no HS256 key.
        let t =
            testkeys::mint_raw_hs256(r#"{"alg":"HS256","kid":"rsa"}"#, &good_claims().to_string());
        assert_eq!(
            reason(&provider(), &t, NOW),
            DenyReason::KeyAlgorithmMismatch
        );
    }

    #[test]
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

    #[test]
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

    #[test]
    fn odd_claim_types_are_malformed() {
        let t = testkeys::mint_raw_hs256(
            r#"{"alg":"HS256","kid":"hmac"}"#,
            &format!(
                r#"{{"iss":"https://idp.bank.example","aud":"payments-api","exp":"{}"}}"#,
                NOW + 60
            ),
        );
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::MalformedToken);
        let t = testkeys::mint_raw_hs256(
            r#"{"alg":"HS256","kid":"hmac"}"#,
            &format!(
                r#"{{"iss":"https://idp.bank.example","aud":"payments-api","exp":{},"sub":42}}"#,
                NOW + 60
            ),
        );
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::MalformedToken);
    }

    #[test]
    fn typ_other_than_jwt_is_malformed() {
        let t = testkeys::mint_raw_hs256(
            r#"{"alg":"HS256","kid":"hmac","typ":"dpop"}"#,
            &good_claims().to_string(),
        );
        assert_eq!(reason(&provider(), &t, NOW), DenyReason::MalformedToken);
        let t = testkeys::mint_raw_hs256(
            r#"{"alg":"HS256","kid":"hmac","typ":"at+jwt"}"#,
            &good_claims().to_string(),
        );
        assert!(check(&provider(), &t, NOW).is_ok());
    }
}
