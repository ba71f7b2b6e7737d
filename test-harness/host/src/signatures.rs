//! Envoy's `verify_signature` foreign function (`source/extensions/common/wasm/foreign.cc`,
//! `source/common/crypto/utility_impl.cc`), natively, so the filters' proxy path runs under
//! the harness as it does in Envoy.
//!
//! Same protobuf in and out: `VerifySignatureArguments` { hash_function = 1, public_key = 2
//! (SubjectPublicKeyInfo DER), signature = 3, text = 4 } and `VerifySignatureResult`
//! { result = 1, error = 2 }. Same semantics as BoringSSL's `EVP_DigestVerify` there: the
//! key's type picks the scheme (RSA PKCS#1 v1.5, or ECDSA with a DER signature), the hash is
//! the one named, whatever the curve. Arguments that do not parse, carry no key, or a key
//! that does not parse (BoringSSL's strict DER: minimal lengths) are BadArgument; an unknown
//! hash or a bad signature is Ok with `result` false and an error text. ring does the arithmetic (it accepts RSA moduli from
//! 2048 to 8192 bits, BoringSSL more: the filters refuse outside 2048..=4096 anyway).

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

use crate::abi::Status;
use crate::properties::varint;

/// The function's name in Envoy.
pub(crate) const VERIFY_SIGNATURE: &str = "verify_signature";

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// The foreign function: serialized arguments in, a serialized result or a status out.
pub(crate) fn verify_signature(arguments: &[u8]) -> Result<Vec<u8>, u32> {
    let args = parse_arguments(arguments).ok_or(Status::BadArgument as u32)?;
    let key = SubjectPublicKey::parse(&args.public_key).ok_or(Status::BadArgument as u32)?;
    let answer = verify(&args, &key);
    let mut out = Vec::new();
    match answer {
        Ok(()) => out.extend_from_slice(&[0x08, 0x01]),
        Err(error) => {
            out.push(0x12);
            put_varint(error.len() as u64, &mut out);
            out.extend_from_slice(error.as_bytes());
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Arguments {
    hash: String,
    public_key: Vec<u8>,
    signature: Vec<u8>,
    text: Vec<u8>,
}

fn verify(args: &Arguments, key: &SubjectPublicKey) -> Result<(), String> {
    let hash = args.hash.to_ascii_lowercase();
    let algorithm: &'static dyn VerificationAlgorithm = match (key, hash.as_str()) {
        (SubjectPublicKey::Rsa(_), "sha256") => &signature::RSA_PKCS1_2048_8192_SHA256,
        (SubjectPublicKey::Rsa(_), "sha384") => &signature::RSA_PKCS1_2048_8192_SHA384,
        (SubjectPublicKey::Rsa(_), "sha512") => &signature::RSA_PKCS1_2048_8192_SHA512,
        (SubjectPublicKey::P256(_), "sha256") => &signature::ECDSA_P256_SHA256_ASN1,
        (SubjectPublicKey::P256(_), "sha384") => &signature::ECDSA_P256_SHA384_ASN1,
        (SubjectPublicKey::P384(_), "sha256") => &signature::ECDSA_P384_SHA256_ASN1,
        (SubjectPublicKey::P384(_), "sha384") => &signature::ECDSA_P384_SHA384_ASN1,
        (_, "sha1" | "sha224" | "sha512") => {
            return Err("the harness does not model this key and hash pair".into());
        }
        _ => return Err(format!("{} is not supported.", args.hash)),
    };
    let bytes = match key {
        SubjectPublicKey::Rsa(b) | SubjectPublicKey::P256(b) | SubjectPublicKey::P384(b) => b,
    };
    UnparsedPublicKey::new(algorithm, bytes)
        .verify(&args.text, &args.signature)
        .map_err(|_| "Failed to verify digest. Error code: 0".to_string())
}

/// The key inside a SubjectPublicKeyInfo: an RSAPublicKey DER, or an EC point.
enum SubjectPublicKey {
    Rsa(Vec<u8>),
    P256(Vec<u8>),
    P384(Vec<u8>),
}

impl SubjectPublicKey {
    fn parse(der: &[u8]) -> Option<SubjectPublicKey> {
        let (spki, rest) = element(der, 0x30)?;
        if !rest.is_empty() {
            return None;
        }
        let (algorithm, rest) = element(spki, 0x30)?;
        let (bits, rest) = element(rest, 0x03)?;
        if !rest.is_empty() {
            return None;
        }
        let (&unused, key) = bits.split_first()?;
        if unused != 0 {
            return None;
        }
        let (oid, parameters) = element(algorithm, 0x06)?;
        match oid {
            OID_RSA_ENCRYPTION if parameters == [0x05, 0x00] => {
                Some(SubjectPublicKey::Rsa(key.to_vec()))
            }
            OID_EC_PUBLIC_KEY => match element(parameters, 0x06)? {
                (OID_P256, []) => Some(SubjectPublicKey::P256(key.to_vec())),
                (OID_P384, []) => Some(SubjectPublicKey::P384(key.to_vec())),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A DER element with tag `tag` at the start of `bytes`: its content and what follows.
fn element(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, mut rest) = rest.split_first()?;
    let len = if len < 0x80 {
        usize::from(len)
    } else {
        let count = usize::from(len & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len_bytes, after) = rest.split_at(count);
        rest = after;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        // DER: the long form only for 128 and more, in as few bytes as it takes.
        if len < 0x80 || len_bytes.first() == Some(&0) {
            return None;
        }
        len
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn parse_arguments(bytes: &[u8]) -> Option<Arguments> {
    let (mut args, mut at) = (Arguments::default(), 0usize);
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        match key & 7 {
            0 => {
                varint(bytes, &mut at)?;
            }
            // Fixed 64- and 32-bit fields: none is ours, skipped as protobuf does.
            1 | 5 => {
                at = at.checked_add(if key & 7 == 1 { 8 } else { 4 })?;
                if at > bytes.len() {
                    return None;
                }
            }
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?).ok()?;
                let value = bytes.get(at..at.checked_add(len)?)?.to_vec();
                at += len;
                match key >> 3 {
                    1 => args.hash = String::from_utf8(value).ok()?,
                    2 => args.public_key = value,
                    3 => args.signature = value,
                    4 => args.text = value,
                    // public_key_pem: the filters never send it.
                    _ => {}
                }
            }
            _ => return None,
        }
    }
    Some(args)
}
