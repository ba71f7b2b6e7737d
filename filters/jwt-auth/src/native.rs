//! Signatures checked by the proxy: Envoy's `verify_signature` foreign function runs
//! BoringSSL's `EVP_DigestVerify` (`source/extensions/common/wasm/foreign.cc`), about as fast
//! as Envoy's own `jwt_authn` and several times faster than any verifier compiled to Wasm.
//!
//! It takes a serialized `VerifySignatureArguments` protobuf (`hash_function` = 1, the
//! SubjectPublicKeyInfo DER `public_key` = 2, `signature` = 3, `text` = 4) and answers a
//! `VerifySignatureResult` (`result` = 1, `error` = 2). BoringSSL picks the scheme from the
//! key: RSA PKCS#1 v1.5 for an RSA key, DER-encoded ECDSA for an EC key. So the proxy serves
//! RS256/384/512 and ES256/384; PS* (no PSS there), EdDSA and HS* stay in Wasm.
//!
//! What stays ours: the key-algorithm binding (BoringSSL would verify an ES384 hash on a
//! P-256 key; our keys are built for one algorithm and carry its hash), the JWS `r || s`
//! format (converted to DER here, with `r` and `s` checked to lie in `[1, n-1]` first), and
//! the choice of path. [`probe`] asks the host once, at configure time, to verify a
//! signature it must accept and one it must refuse; a host without the function, or one
//! that answers anything else, leaves every check in Wasm. A call that fails later falls
//! back to Wasm for that check, so a host fault never turns into an acceptance.
//!
//! Plain data in and out: the shell implements [`SignatureHost`] with the foreign-function
//! hostcall, tests with a fake.

use std::cell::Cell;

use banking_filter_common::protobuf::{push_bytes, skip_value, take_varint};

use crate::base64url;

/// The foreign function's name in Envoy.
pub const VERIFY_SIGNATURE: &str = "verify_signature";

/// Why a call of the host's `verify_signature` gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCallFailed {
    /// The host has no function by that name (NotFound).
    Absent,
    /// Any other status.
    Failed,
}

/// The host's `verify_signature`, as the core sees it.
pub trait SignatureHost {
    /// Calls it with serialized `VerifySignatureArguments`; the serialized result.
    fn verify_signature(&self, arguments: &[u8]) -> Result<Vec<u8>, HostCallFailed>;
}

/// Which path checks the signatures of one evaluation, and how many each path checked.
pub struct SignatureChecks<'h> {
    host: Option<&'h dyn SignatureHost>,
    by_proxy: Cell<u32>,
    in_wasm: Cell<u32>,
}

impl<'h> SignatureChecks<'h> {
    /// Every signature in Wasm.
    pub fn in_wasm() -> SignatureChecks<'static> {
        SignatureChecks {
            host: None,
            by_proxy: Cell::new(0),
            in_wasm: Cell::new(0),
        }
    }

    /// RS* and ES* by the proxy's `verify_signature`, the rest in Wasm.
    pub fn by_proxy(host: &'h dyn SignatureHost) -> SignatureChecks<'h> {
        SignatureChecks {
            host: Some(host),
            by_proxy: Cell::new(0),
            in_wasm: Cell::new(0),
        }
    }

    /// Signatures the proxy checked so far.
    pub fn proxy_count(&self) -> u32 {
        self.by_proxy.get()
    }

    /// Signatures checked in Wasm so far.
    pub fn wasm_count(&self) -> u32 {
        self.in_wasm.get()
    }

    pub(crate) fn counted_in_wasm(&self, verified: bool) -> bool {
        self.in_wasm.set(self.in_wasm.get().saturating_add(1));
        verified
    }

    /// Asks the proxy: `Some(verdict)`, or `None` when there is no proxy path or the call
    /// gave no usable answer (the caller then checks in Wasm).
    pub(crate) fn ask_proxy(
        &self,
        hash: &str,
        spki: &[u8],
        signature: &[u8],
        text: &[u8],
    ) -> Option<bool> {
        let host = self.host?;
        let answer = host
            .verify_signature(&arguments(hash, spki, signature, text))
            .ok()
            .and_then(|result| verdict(&result))?;
        self.by_proxy.set(self.by_proxy.get().saturating_add(1));
        Some(answer)
    }
}

// ---- protobuf: VerifySignatureArguments and VerifySignatureResult ------------------------

/// A serialized `VerifySignatureArguments`.
pub fn arguments(hash: &str, spki: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + hash.len() + spki.len() + signature.len() + text.len());
    push_bytes(&mut out, 1, hash.as_bytes());
    push_bytes(&mut out, 2, spki);
    push_bytes(&mut out, 3, signature);
    push_bytes(&mut out, 4, text);
    out
}

/// The `result` of a serialized `VerifySignatureResult`: proto3 leaves a false `result`
/// out, so an empty message is a refusal. `None` when the bytes are no such message.
pub fn verdict(bytes: &[u8]) -> Option<bool> {
    let (mut result, mut at) = (false, 0usize);
    while at < bytes.len() {
        let key = take_varint(bytes, &mut at)?;
        match (key >> 3, key & 7) {
            (1, 0) => result = take_varint(bytes, &mut at)? != 0,
            (_, wire_type) => skip_value(bytes, &mut at, wire_type)?,
        }
    }
    Some(result)
}

// ---- DER: SubjectPublicKeyInfo and ECDSA signatures --------------------------------------

/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 (P-256), 1.2.840.10045.3.1.7.
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1 (P-384), 1.3.132.0.34.
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// The order n of P-256's base point, big-endian (SEC 2, FIPS 186-4).
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// The order n of P-384's base point, big-endian.
const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

/// An elliptic curve the proxy path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    fn oid(self) -> &'static [u8] {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
        }
    }

    fn order(self) -> &'static [u8] {
        match self {
            Curve::P256 => &P256_ORDER,
            Curve::P384 => &P384_ORDER,
        }
    }
}

fn put_der(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    match content.len() {
        len @ 0..=0x7f => out.push(len as u8),
        len => {
            let be = len.to_be_bytes();
            let first = be.iter().position(|b| *b != 0).unwrap_or(be.len() - 1);
            let significant = be.get(first..).unwrap_or_default();
            out.push(0x80 | significant.len() as u8);
            out.extend_from_slice(significant);
        }
    }
    out.extend_from_slice(content);
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    put_der(tag, content, &mut out);
    out
}

/// A DER INTEGER of an unsigned big-endian value: minimal, with a zero byte in front when
/// the top bit is set (else it would read as negative).
fn put_unsigned(value: &[u8], out: &mut Vec<u8>) {
    let first = value.iter().position(|b| *b != 0).unwrap_or(value.len());
    let magnitude = value.get(first..).unwrap_or_default();
    let mut content = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(magnitude);
    put_der(0x02, &content, out);
}

fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bit_string = Vec::with_capacity(key.len() + 1);
    bit_string.push(0); // no unused bits
    bit_string.extend_from_slice(key);
    let mut body = der(0x30, algorithm);
    put_der(0x03, &bit_string, &mut body);
    der(0x30, &body)
}

/// The SubjectPublicKeyInfo DER of an RSA key (RFC 8017 A.1.1 inside RFC 5280 4.1.2.7).
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut algorithm = der(0x06, OID_RSA_ENCRYPTION);
    algorithm.extend_from_slice(&[0x05, 0x00]); // NULL parameters
    let mut integers = Vec::with_capacity(n.len() + e.len() + 12);
    put_unsigned(n, &mut integers);
    put_unsigned(e, &mut integers);
    spki(&algorithm, &der(0x30, &integers))
}

/// The SubjectPublicKeyInfo DER of an EC key from its SEC1 uncompressed point (RFC 5480).
pub fn ec_spki(curve: Curve, point: &[u8]) -> Vec<u8> {
    let mut algorithm = der(0x06, OID_EC_PUBLIC_KEY);
    put_der(0x06, curve.oid(), &mut algorithm);
    spki(&algorithm, point)
}

/// A JWS ECDSA signature (`r || s`, each the curve's size, RFC 7518 3.4) as the DER
/// `ECDSA-Sig-Value` BoringSSL reads. `None` when it cannot be a valid signature: a wrong
/// length, or `r` or `s` zero or not below the curve's order.
pub fn ecdsa_der(curve: Curve, raw: &[u8]) -> Option<Vec<u8>> {
    let order = curve.order();
    if raw.len() != 2 * order.len() {
        return None;
    }
    let (r, s) = raw.split_at(order.len());
    let in_range = |v: &[u8]| v.iter().any(|b| *b != 0) && v < order;
    if !in_range(r) || !in_range(s) {
        return None;
    }
    let mut integers = Vec::with_capacity(raw.len() + 6);
    put_unsigned(r, &mut integers);
    put_unsigned(s, &mut integers);
    Some(der(0x30, &integers))
}

// ---- the configure-time probe ------------------------------------------------------------

/// What the host's `verify_signature` turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It verified what it must and refused what it must: RS* and ES* go to the proxy.
    Sound,
    /// The host has no such function: every signature is checked in Wasm.
    Absent,
    /// It answered something else (the reason): every signature is checked in Wasm.
    Unsound(String),
}

/// The text the probe's keys signed.
const PROBE_TEXT: &[u8] = b"banking-wasm-filters: is this proxy's verify_signature sound?";
/// An RSA-2048 key made for this probe (e = 65537) and its PKCS#1 v1.5 signatures, SHA-256
/// and SHA-512.
const PROBE_RSA_N: &str = "nbKR_0R0GGshJjE8Q-guWopImdC229CuFWxoePe4LBfCXLnofmFEbM8NUWLKSFWfXl4EzGfJERLIObEzeviFmuaEq4STUO4o60Z2OquHsQe3oFoi1p6x5_kQjHaAj4c06Zdu4bTUxvJLgMW1lZCeBwWpU3J4IEA1uOyiFjN0mS-WpUzdgrvGEuJXkOFNDWZT7H8gtHjVE3_1C_-TAD1RctbVxbvSOq9cV1Hdbymy8IIBUm-9wDtVwaCuieuW8M22ZPEQB3tkxn9EUm_OqZkCj3uN6SCO1xBuChFDlShyimFgcJCJDeLXh7ohmp9w6VOQPWdS--ZQLLOhnpMNs7sNrQ";
const PROBE_RSA_SHA256: &str = "Rq1a6ImVVc_QBRAHlSYuT22H0Sn8Q14vxDI1IoO2xG9SoAJz-Hpv8XYUJFQtO4MGx5MTM0JWJN14D8Z5I0or8FxlPt-w2wqxyO3BEKg_Xv_W2e30TjvxA-gx9aq0hwTUUwq1W3Sy5VtVzMSvgjozOy4wT-lzBqeHhlqmu2XCH7-zvYMrqU-7tIxqh5mTKXu-LyOFXb1LIC8vKj7ETC8pYV8d3jV8m2-n-YlAh2uvs182WwG1lrPQid9y-Z16jronLtlTZoiqktkQ_DxY--WWoAoc3ZqJiV7eH7lZcmYFqSFnyQAXZDBRserVeDOoHMtce0CC4vXYV4zeOkO006cBKg";
const PROBE_RSA_SHA512: &str = "McvNhqigQ596dLwVe1AYy8RWEpzl8vWIuvoOWNNhXXIwNAL40tDIpUCo5dDE2pBnYnodVwM9KyoBMMls0c7zezlRre8suNidI_jebvSG5Xfhm8EPQiAuZ0eZCFx2kPJJCQFPdOCD6dUul1PHywYEzj1tngMXfJ9a6lk7u8n-uEQgxQO6PB5Q8vBdSc0Fh4qFkOLwqBuYqs3TJb_o_lBojgBhTO7LGcFVNfXcugRLnefPDXyxiDG6j8QADrRgGosP7u4GOfP--fFodEDlIOAbaR5I63d_BZXJoC_GTw8-yJHjpGscZbX9WYL_BI2U5Uf8qo19qbtCPLHiCjsLUqoUVQ";
/// A P-256 key made for this probe (SEC1 uncompressed point) and its JWS ES256 signature.
const PROBE_P256_POINT: &str =
    "BDO8Y8B_E1R7b2b3iYCgo6YUopEYpJhnFQxfQsfPEY_QPLERLn9U0Ls4odkjXTtBne47uTZuX_La4SkFAtK_AWw";
const PROBE_P256_SIGNATURE: &str =
    "2kiH7FKKhKR1UXN4e6sjAK9vXdQ_Y8UKzRXAu6YJYfabrw7n0LSIgZv9b6WjDKSP1Iwgg2wG6jft8rCHZMxDqw";
/// A P-384 key made for this probe and its JWS ES384 signature.
const PROBE_P384_POINT: &str = "BJoASWcZZ7dqxJZ0ClsmcRpg2G_EaRL2bM6IGrQHQQjfZkM1UDml-mHtWQionqDRow2cFFhuooB2Ui1B31uHF6XEqv7cjblmRUTSatBf7_hxhB4L9fNIHipjgOfAFus7KQ";
const PROBE_P384_SIGNATURE: &str = "2-TEYM7gO-yPwU1i_gPzcw56o0szo4IN_0Qmj411hQ12PbBJAMxO-Etgq03Jerf1YdycXoEOFP9cCdwaooQOtkNU8HWugukpvIhutSWguGaZHQagdBX6QkWB1m82F-nG";

/// Asks `host` to verify the probe's signatures (RS256, RS512, ES256, ES384) over their
/// text (each must pass) and over another text (each must fail), with keys and signatures
/// encoded exactly as requests will encode them.
pub fn probe(host: &dyn SignatureHost) -> Probe {
    let decode = |b64: &str| base64url::decode(b64).unwrap_or_default();
    let rsa = rsa_spki(&decode(PROBE_RSA_N), &[1, 0, 1]);
    let ecdsa = |curve, point, signature| {
        (
            ec_spki(curve, &decode(point)),
            ecdsa_der(curve, &decode(signature)).unwrap_or_default(),
        )
    };
    let p256 = ecdsa(Curve::P256, PROBE_P256_POINT, PROBE_P256_SIGNATURE);
    let p384 = ecdsa(Curve::P384, PROBE_P384_POINT, PROBE_P384_SIGNATURE);
    let cases: [(&str, &str, &[u8], Vec<u8>); 4] = [
        ("RS256", "sha256", &rsa, decode(PROBE_RSA_SHA256)),
        ("RS512", "sha512", &rsa, decode(PROBE_RSA_SHA512)),
        ("ES256", "sha256", &p256.0, p256.1.clone()),
        ("ES384", "sha384", &p384.0, p384.1.clone()),
    ];
    let mut altered = PROBE_TEXT.to_vec();
    altered.push(b'!');
    for (name, hash, key, signature) in &cases {
        for (text, expected) in [(PROBE_TEXT, true), (&altered[..], false)] {
            let answer = host.verify_signature(&arguments(hash, key, signature, text));
            match answer.map(|r| verdict(&r)) {
                Err(HostCallFailed::Absent) => return Probe::Absent,
                Err(HostCallFailed::Failed) => {
                    return Probe::Unsound(format!("it failed on an {name} signature"));
                }
                Ok(None) => {
                    return Probe::Unsound(format!(
                        "its answer on an {name} signature is no VerifySignatureResult"
                    ));
                }
                Ok(Some(verdict)) if verdict != expected => {
                    let what = if expected {
                        "refused a valid"
                    } else {
                        "accepted a forged"
                    };
                    return Probe::Unsound(format!("it {what} {name} signature"));
                }
                Ok(Some(_)) => {}
            }
        }
    }
    Probe::Sound
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn arguments_are_the_protobuf_envoy_parses() {
        let bytes = arguments("sha256", &[1, 2], &[3; 200], b"");
        let mut expected = vec![0x0a, 6];
        expected.extend_from_slice(b"sha256");
        expected.extend_from_slice(&[0x12, 2, 1, 2, 0x1a, 0xc8, 0x01]);
        expected.extend_from_slice(&[3; 200]);
        expected.extend_from_slice(&[0x22, 0]);
        assert_eq!(bytes, expected);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_verdict_is_the_result_field_and_nothing_else() {
        assert_eq!(verdict(&[0x08, 0x01, 0x12, 0x00]), Some(true));
        // Envoy's refusal: result false (left out) and an error text.
        assert_eq!(verdict(b"\x12\x05error"), Some(false));
        assert_eq!(verdict(&[]), Some(false));
        // Unknown fields of every wire type are skipped.
        assert_eq!(
            verdict(&[
                0x18, 0x05, 0x21, 0, 0, 0, 0, 0, 0, 0, 0, 0x2d, 0, 0, 0, 0, 0x08, 1
            ]),
            Some(true)
        );
        // Truncated or malformed bytes are no answer.
        assert_eq!(verdict(&[0x08]), None);
        assert_eq!(verdict(&[0x12, 0x05, b'e']), None);
        assert_eq!(verdict(&[0x0b]), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rsa_spki_is_the_der_openssl_writes() {
        // An RSA key's SubjectPublicKeyInfo as `openssl pkey -pubout -outform DER` writes
        // it, down to the length bytes: 30 82 01 22 30 0d 06 09 <rsaEncryption> 05 00 03 82
        // 01 0f 00 30 82 01 0a 02 82 01 01 00 <n> 02 03 01 00 01.
        let n = base64url::decode(PROBE_RSA_N).unwrap();
        let der = rsa_spki(&n, &[0, 1, 0, 1]);
        assert_eq!(der.len(), 294);
        assert_eq!(
            &der[..33],
            &[
                0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
                0x01, 0x01, 0x01, 0x05, 0x00, 0x03, 0x82, 0x01, 0x0f, 0x00, 0x30, 0x82, 0x01, 0x0a,
                0x02, 0x82, 0x01, 0x01, 0x00
            ]
        );
        assert_eq!(&der[33..289], &n[..]);
        assert_eq!(&der[289..], &[0x02, 0x03, 0x01, 0x00, 0x01]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ec_spki_is_the_der_openssl_writes() {
        let point = base64url::decode(PROBE_P256_POINT).unwrap();
        let der = ec_spki(Curve::P256, &point);
        let mut expected = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        expected.extend_from_slice(&point);
        assert_eq!(der, expected);
        let p384 = ec_spki(Curve::P384, &[4; 97]);
        assert_eq!(
            &p384[..23],
            &[
                0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00
            ]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ecdsa_signatures_become_minimal_der_integers() {
        let mut raw = vec![0u8; 64];
        raw[31] = 1; // r = 1
        raw[32] = 0x80; // s has its top bit set: a zero byte goes in front
        let der = ecdsa_der(Curve::P256, &raw).unwrap();
        let mut expected = vec![0x30, 0x26, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00];
        expected.extend_from_slice(&raw[32..]);
        assert_eq!(der, expected);
        // P-384 signatures stay in DER's short length form.
        let der = ecdsa_der(Curve::P384, &[0x7f; 96]).unwrap();
        assert_eq!(&der[..4], &[0x30, 0x64, 0x02, 0x30]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ecdsa_values_outside_one_to_n_minus_one_never_reach_the_proxy() {
        let good = [0x11u8; 64];
        assert!(ecdsa_der(Curve::P256, &good).is_some());
        for (name, raw) in [
            ("r = 0", [&[0u8; 32][..], &[0x11; 32]].concat()),
            ("s = 0", [&[0x11u8; 32][..], &[0; 32]].concat()),
            ("r = n", [&P256_ORDER[..], &[0x11; 32]].concat()),
            ("s = n", [&[0x11u8; 32][..], &P256_ORDER].concat()),
            ("s > n", [&[0x11u8; 32][..], &[0xff; 32]].concat()),
            ("short", vec![0x11; 63]),
            ("long", vec![0x11; 65]),
            ("P-384 size on P-256", vec![0x11; 96]),
        ] {
            assert_eq!(ecdsa_der(Curve::P256, &raw), None, "{name}");
        }
        let mut n_minus_one = P384_ORDER;
        n_minus_one[47] -= 1;
        assert!(ecdsa_der(Curve::P384, &[&n_minus_one[..], &n_minus_one].concat()).is_some());
        assert_eq!(
            ecdsa_der(Curve::P384, &[&P384_ORDER[..], &n_minus_one].concat()),
            None
        );
    }

    struct Answers(Vec<Result<Vec<u8>, HostCallFailed>>, Cell<usize>);

    impl SignatureHost for Answers {
        fn verify_signature(&self, _: &[u8]) -> Result<Vec<u8>, HostCallFailed> {
            let i = self.1.get();
            self.1.set(i + 1);
            self.0
                .get(i)
                .cloned()
                .unwrap_or(Err(HostCallFailed::Failed))
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_probe_trusts_only_a_host_that_accepts_and_refuses_as_it_must() {
        let yes = Ok(vec![0x08, 0x01]);
        let no = Ok(b"\x12\x06forged".to_vec());
        let pairs = |n| {
            (0..n)
                .flat_map(|_| [yes.clone(), no.clone()])
                .collect::<Vec<_>>()
        };
        let sound = Answers(pairs(4), Cell::new(0));
        assert_eq!(probe(&sound), Probe::Sound);
        let absent = Answers(vec![Err(HostCallFailed::Absent)], Cell::new(0));
        assert_eq!(probe(&absent), Probe::Absent);
        let yes_man = Answers(vec![yes.clone(); 8], Cell::new(0));
        assert_eq!(
            probe(&yes_man),
            Probe::Unsound("it accepted a forged RS256 signature".into())
        );
        let no_es384 = Answers([pairs(3), vec![no.clone()]].concat(), Cell::new(0));
        assert_eq!(
            probe(&no_es384),
            Probe::Unsound("it refused a valid ES384 signature".into())
        );
        let failing = Answers(vec![Err(HostCallFailed::Failed)], Cell::new(0));
        assert!(matches!(probe(&failing), Probe::Unsound(_)));
    }
}
