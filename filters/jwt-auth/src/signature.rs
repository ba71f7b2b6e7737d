//! JWS signature checks (RFC 7515 §5.2) over the token's `header.payload` bytes: ring for
//! RSA and ECDSA, where it costs about half the CPU of jwt-simple's pure-Rust path in
//! Envoy's V8, and jwt-simple for EdDSA and HMAC, which are cheap already.
//!
//! Keys are built once, when a JWKS is parsed ([`crate::jwks`]), and only from components
//! already checked there, so a request pays for the signature check and nothing else.

use std::fmt;

use jwt_simple::prelude::{
    ES256PublicKey, ES384PublicKey, Ed25519PublicKey, EdDSAPublicKeyLike, HS256Key, HS384Key,
    HS512Key, MACLike,
};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, EcdsaVerificationAlgorithm,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_2048_8192_SHA384, RSA_PKCS1_2048_8192_SHA512,
    RSA_PSS_2048_8192_SHA256, RSA_PSS_2048_8192_SHA384, RSA_PSS_2048_8192_SHA512, RsaParameters,
    RsaPublicKeyComponents, UnparsedPublicKey,
};

use crate::jwks::Algorithm;

/// The largest RSA public exponent ring verifies with (2^33 - 1): it bounds the cost of a
/// verify, so a published key cannot make every request expensive.
pub const MAX_RSA_PUBLIC_EXPONENT: u64 = (1 << 33) - 1;

/// Which implementation checks a key's signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Ring,
    JwtSimple,
}

/// One usable (algorithm, key) pair.
#[derive(Clone)]
pub enum VerifyingKey {
    /// RS*/PS*. ring 0.17 has no pre-parsed RSA public key to verify with, so the
    /// components are kept, minimal big-endian, in the form ring accepts.
    Rsa {
        alg: Algorithm,
        params: &'static RsaParameters,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// ES256/ES384 with the JWS signature format (raw `r || s`, RFC 7518 §3.4).
    Ec {
        alg: Algorithm,
        verifier: &'static EcdsaVerificationAlgorithm,
        /// SEC1 uncompressed point `04 || x || y`, checked to be on the curve.
        point: Vec<u8>,
    },
    EdDSA(Ed25519PublicKey),
    HS256(HS256Key),
    HS384(HS384Key),
    HS512(HS512Key),
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material, not even a public key: logs are not the place.
        write!(f, "VerifyingKey({})", self.algorithm())
    }
}

impl VerifyingKey {
    /// An RSA key for `alg` from the modulus and exponent of a JWK, big-endian.
    ///
    /// Leading zero bytes are dropped (some issuers add one; the value is the same). The
    /// caller checks the modulus size; this refuses what ring would refuse on every
    /// request, so the operator gets the reason once, at JWKS time.
    pub fn rsa(alg: Algorithm, n: &[u8], e: &[u8]) -> Result<VerifyingKey, String> {
        let params: &'static RsaParameters = match alg {
            Algorithm::RS256 => &RSA_PKCS1_2048_8192_SHA256,
            Algorithm::RS384 => &RSA_PKCS1_2048_8192_SHA384,
            Algorithm::RS512 => &RSA_PKCS1_2048_8192_SHA512,
            Algorithm::PS256 => &RSA_PSS_2048_8192_SHA256,
            Algorithm::PS384 => &RSA_PSS_2048_8192_SHA384,
            Algorithm::PS512 => &RSA_PSS_2048_8192_SHA512,
            other => return Err(format!("alg {other} does not fit kty \"RSA\"")),
        };
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        if n.last().is_none_or(|low| low & 1 == 0) {
            return Err("invalid RSA public key: the modulus is even".to_owned());
        }
        let exponent = match e.len() {
            1..=8 => e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
            _ => u64::MAX,
        };
        if !(3..=MAX_RSA_PUBLIC_EXPONENT).contains(&exponent) || exponent & 1 == 0 {
            return Err(
                "invalid RSA public key: the exponent must be odd, at least 3 and below 2^33"
                    .to_owned(),
            );
        }
        Ok(VerifyingKey::Rsa {
            alg,
            params,
            n: n.to_vec(),
            e: e.to_vec(),
        })
    }

    /// An EC key for ES256 (P-256) or ES384 (P-384) from a SEC1 uncompressed point.
    pub fn ec(alg: Algorithm, point: &[u8]) -> Result<VerifyingKey, String> {
        // ring checks the point on every verify but cannot say why a key fails; checking
        // it here turns a bad JWK into a skipped key with a reason instead of every token
        // failing as "bad signature".
        let not_on_curve = |_| "EC point is not on the curve".to_owned();
        let verifier: &'static EcdsaVerificationAlgorithm = match alg {
            Algorithm::ES256 => {
                ES256PublicKey::from_bytes(point).map_err(not_on_curve)?;
                &ECDSA_P256_SHA256_FIXED
            }
            Algorithm::ES384 => {
                ES384PublicKey::from_bytes(point).map_err(not_on_curve)?;
                &ECDSA_P384_SHA384_FIXED
            }
            other => return Err(format!("alg {other} does not fit kty \"EC\"")),
        };
        Ok(VerifyingKey::Ec {
            alg,
            verifier,
            point: point.to_vec(),
        })
    }

    /// An Ed25519 key from its 32 public bytes.
    pub fn ed25519(x: &[u8]) -> Result<VerifyingKey, String> {
        Ed25519PublicKey::from_bytes(x)
            .map(VerifyingKey::EdDSA)
            .map_err(|_| "invalid Ed25519 public key".to_owned())
    }

    /// An HMAC key for `alg`; the caller checks the secret is long enough (RFC 7518 §3.2).
    pub fn hmac(alg: Algorithm, secret: &[u8]) -> Option<VerifyingKey> {
        match alg {
            Algorithm::HS256 => Some(VerifyingKey::HS256(HS256Key::from_bytes(secret))),
            Algorithm::HS384 => Some(VerifyingKey::HS384(HS384Key::from_bytes(secret))),
            Algorithm::HS512 => Some(VerifyingKey::HS512(HS512Key::from_bytes(secret))),
            _ => None,
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            VerifyingKey::Rsa { alg, .. } | VerifyingKey::Ec { alg, .. } => *alg,
            VerifyingKey::EdDSA(_) => Algorithm::EdDSA,
            VerifyingKey::HS256(_) => Algorithm::HS256,
            VerifyingKey::HS384(_) => Algorithm::HS384,
            VerifyingKey::HS512(_) => Algorithm::HS512,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            VerifyingKey::Rsa { .. } | VerifyingKey::Ec { .. } => Backend::Ring,
            _ => Backend::JwtSimple,
        }
    }

    /// Whether `signature` (decoded from the token's third segment) signs `signing_input`
    /// (the token's first two segments, exactly as received) under this key.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match self {
            VerifyingKey::Rsa { params, n, e, .. } => RsaPublicKeyComponents { n, e }
                .verify(params, signing_input, signature)
                .is_ok(),
            VerifyingKey::Ec {
                verifier, point, ..
            } => UnparsedPublicKey::new(*verifier, point)
                .verify(signing_input, signature)
                .is_ok(),
            VerifyingKey::EdDSA(key) => ed25519_compact::Signature::from_slice(signature)
                .is_ok_and(|s| key.public_key().as_ref().verify(signing_input, &s).is_ok()),
            VerifyingKey::HS256(key) => mac_matches(key, signing_input, signature),
            VerifyingKey::HS384(key) => mac_matches(key, signing_input, signature),
            VerifyingKey::HS512(key) => mac_matches(key, signing_input, signature),
        }
    }
}

fn mac_matches(key: &impl MACLike, signing_input: &[u8], tag: &[u8]) -> bool {
    // Constant time, and false on any length difference (a truncated tag is not a match).
    ct_codecs::verify(&key.authentication_tag(signing_input), tag)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn rsa_key_refuses_what_ring_would_refuse_on_every_request() {
        let c = test_tokens::rsa().rsa_public();
        assert!(VerifyingKey::rsa(Algorithm::RS256, &c.n, &c.e).is_ok());
        let mut padded = vec![0u8];
        padded.extend_from_slice(&c.n);
        assert!(VerifyingKey::rsa(Algorithm::PS512, &padded, &[0, 1, 0, 1]).is_ok());
        let mut even = c.n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        assert!(
            VerifyingKey::rsa(Algorithm::RS256, &even, &c.e)
                .unwrap_err()
                .contains("modulus is even")
        );
        for e in [&[1u8][..], &[2], &[1, 0, 0], &[2, 0, 0, 0, 1], &[9; 9]] {
            assert!(
                VerifyingKey::rsa(Algorithm::RS256, &c.n, e)
                    .unwrap_err()
                    .contains("exponent"),
                "{e:?}"
            );
        }
        assert!(VerifyingKey::rsa(Algorithm::ES256, &c.n, &c.e).is_err());
    }
}
