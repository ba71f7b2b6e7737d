//! JWS signature checks (RFC 7515 §5.2) over the token's `header.payload` bytes.
//!
//! Two paths, chosen per key ([`crate::native`] says which the proxy offers):
//! - RS256/384/512 and ES256/384: the proxy's `verify_signature` (BoringSSL) when it has a
//!   sound one, with the key's SubjectPublicKeyInfo built once, here, at JWKS time.
//! - PS256/384/512, EdDSA and HS256/384/512, and RS*/ES* on a proxy without
//!   `verify_signature`: ring, in Wasm (ring's C and assembly-free Rust compiled to Wasm
//!   costs about half the CPU of a pure-Rust RSA or ECDSA verifier in Envoy's V8).
//!
//! Keys are built once, when a JWKS is parsed ([`crate::jwks`]), and only from components
//! already checked there, so a request pays for the signature check and nothing else.

use std::fmt;

use ring::agreement::{self, ECDH_P256, ECDH_P384, EphemeralPrivateKey};
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, EcdsaVerificationAlgorithm,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_2048_8192_SHA384, RSA_PKCS1_2048_8192_SHA512,
    RSA_PSS_2048_8192_SHA256, RSA_PSS_2048_8192_SHA384, RSA_PSS_2048_8192_SHA512, RsaParameters,
    RsaPublicKeyComponents, UnparsedPublicKey,
};

use crate::jwks::Algorithm;
use crate::native::{self, Curve, SignatureChecks};

/// The largest RSA public exponent ring verifies with (2^33 - 1): it bounds the cost of a
/// verify, so a published key cannot make every request expensive.
pub const MAX_RSA_PUBLIC_EXPONENT: u64 = (1 << 33) - 1;

/// Which implementation checks a key's signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The proxy's `verify_signature` when it has a sound one, else ring in Wasm.
    ProxyOrWasm,
    /// Always ring in Wasm.
    Wasm,
}

/// What the proxy path needs of a key: the hash its algorithm names and the key's
/// SubjectPublicKeyInfo DER.
#[derive(Clone)]
pub struct ProxyKey {
    hash: &'static str,
    spki: Vec<u8>,
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
        /// RS* only: PSS is not what the proxy's `verify_signature` does.
        proxy: Option<ProxyKey>,
    },
    /// ES256/ES384 with the JWS signature format (raw `r || s`, RFC 7518 §3.4).
    Ec {
        alg: Algorithm,
        verifier: &'static EcdsaVerificationAlgorithm,
        /// SEC1 uncompressed point `04 || x || y`, checked to be on the curve.
        point: Vec<u8>,
        curve: Curve,
        proxy: ProxyKey,
    },
    /// Ed25519's 32 public bytes.
    EdDSA(Vec<u8>),
    Hmac {
        alg: Algorithm,
        key: hmac::Key,
    },
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
        let (params, hash): (&'static RsaParameters, Option<&'static str>) = match alg {
            Algorithm::RS256 => (&RSA_PKCS1_2048_8192_SHA256, Some("sha256")),
            Algorithm::RS384 => (&RSA_PKCS1_2048_8192_SHA384, Some("sha384")),
            Algorithm::RS512 => (&RSA_PKCS1_2048_8192_SHA512, Some("sha512")),
            Algorithm::PS256 => (&RSA_PSS_2048_8192_SHA256, None),
            Algorithm::PS384 => (&RSA_PSS_2048_8192_SHA384, None),
            Algorithm::PS512 => (&RSA_PSS_2048_8192_SHA512, None),
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
            proxy: hash.map(|hash| ProxyKey {
                hash,
                spki: native::rsa_spki(n, e),
            }),
        })
    }

    /// An EC key for ES256 (P-256) or ES384 (P-384) from a SEC1 uncompressed point.
    pub fn ec(alg: Algorithm, point: &[u8]) -> Result<VerifyingKey, String> {
        let (verifier, curve, agreement, hash): (&'static EcdsaVerificationAlgorithm, _, _, _) =
            match alg {
                Algorithm::ES256 => (&ECDSA_P256_SHA256_FIXED, Curve::P256, &ECDH_P256, "sha256"),
                Algorithm::ES384 => (&ECDSA_P384_SHA384_FIXED, Curve::P384, &ECDH_P384, "sha384"),
                other => return Err(format!("alg {other} does not fit kty \"EC\"")),
            };
        // Every verify checks the point, but cannot say why a key fails; checking it here
        // turns a bad JWK into a skipped key with a reason instead of every token failing
        // as "bad signature". ring validates a peer's point fully (on the curve, not the
        // point at infinity) when it agrees a key with it: that is the check used.
        let on_curve = EphemeralPrivateKey::generate(agreement, &SystemRandom::new())
            .map_err(|_| "no randomness to check the EC point with".to_owned())
            .and_then(|ours| {
                agreement::agree_ephemeral(
                    ours,
                    &agreement::UnparsedPublicKey::new(agreement, point),
                    |_| (),
                )
                .map_err(|_| "EC point is not on the curve".to_owned())
            });
        on_curve?;
        Ok(VerifyingKey::Ec {
            alg,
            verifier,
            point: point.to_vec(),
            curve,
            proxy: ProxyKey {
                hash,
                spki: native::ec_spki(curve, point),
            },
        })
    }

    /// An Ed25519 key from its 32 public bytes.
    pub fn ed25519(x: &[u8]) -> Result<VerifyingKey, String> {
        if x.len() != 32 {
            return Err("invalid Ed25519 public key: it is 32 bytes".to_owned());
        }
        Ok(VerifyingKey::EdDSA(x.to_vec()))
    }

    /// An HMAC key for `alg`; the caller checks the secret is long enough (RFC 7518 §3.2).
    pub fn hmac(alg: Algorithm, secret: &[u8]) -> Option<VerifyingKey> {
        let algorithm = match alg {
            Algorithm::HS256 => hmac::HMAC_SHA256,
            Algorithm::HS384 => hmac::HMAC_SHA384,
            Algorithm::HS512 => hmac::HMAC_SHA512,
            _ => return None,
        };
        Some(VerifyingKey::Hmac {
            alg,
            key: hmac::Key::new(algorithm, secret),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            VerifyingKey::Rsa { alg, .. }
            | VerifyingKey::Ec { alg, .. }
            | VerifyingKey::Hmac { alg, .. } => *alg,
            VerifyingKey::EdDSA(_) => Algorithm::EdDSA,
        }
    }

    /// Which path checks this key's signatures.
    pub fn path(&self) -> Path {
        match self {
            VerifyingKey::Rsa { proxy: Some(_), .. } | VerifyingKey::Ec { .. } => Path::ProxyOrWasm,
            _ => Path::Wasm,
        }
    }

    /// Whether `signature` (decoded from the token's third segment) signs `signing_input`
    /// (the token's first two segments, exactly as received) under this key, checked by
    /// the proxy where `checks` allows and the key's algorithm is one it serves.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8], checks: &SignatureChecks) -> bool {
        match self {
            VerifyingKey::Rsa {
                params,
                n,
                e,
                proxy,
                ..
            } => {
                if let Some(key) = proxy
                    && let Some(verdict) =
                        checks.ask_proxy(key.hash, &key.spki, signature, signing_input)
                {
                    return verdict;
                }
                checks.counted_in_wasm(
                    RsaPublicKeyComponents { n, e }
                        .verify(params, signing_input, signature)
                        .is_ok(),
                )
            }
            VerifyingKey::Ec {
                verifier,
                point,
                curve,
                proxy: key,
                ..
            } => {
                // r and s out of range, or a wrong length: no valid signature, on any path.
                let Some(der) = native::ecdsa_der(*curve, signature) else {
                    return false;
                };
                if let Some(verdict) = checks.ask_proxy(key.hash, &key.spki, &der, signing_input) {
                    return verdict;
                }
                checks.counted_in_wasm(
                    UnparsedPublicKey::new(*verifier, point)
                        .verify(signing_input, signature)
                        .is_ok(),
                )
            }
            VerifyingKey::EdDSA(x) => checks.counted_in_wasm(
                UnparsedPublicKey::new(&ED25519, x)
                    .verify(signing_input, signature)
                    .is_ok(),
            ),
            // Constant time, and false on any length difference (a truncated tag is not a
            // match).
            VerifyingKey::Hmac { key, .. } => {
                checks.counted_in_wasm(hmac::verify(key, signing_input, signature).is_ok())
            }
        }
    }
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
