//! Whose bucket a request is charged to: the key of each limit, from the verified identity
//! or the client's address, never from a header the client writes itself.

use std::net::IpAddr;

use banking_filter_common::headers::{self, HeaderPairs};
use banking_filter_common::identity::VerifiedIdentity;
use sha2::{Digest, Sha256};

use crate::config::KeyKind;

/// What a bucket is keyed by, before hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketKey {
    Subject(String),
    Customer(String),
    Client(String),
    /// A client address, or `unknown` when the proxy could not tell one.
    ClientAddress(String),
    Proxy,
}

impl BucketKey {
    /// The slot key: SHA-256 over the kind and the value, so that shared data never holds a
    /// raw customer id, every key has the slot table's fixed length, and a subject can never
    /// share a bucket with an equal customer id or address.
    pub fn slot_key(&self) -> [u8; 32] {
        let (tag, value): (u8, &str) = match self {
            BucketKey::Subject(v) => (b's', v),
            BucketKey::Customer(v) => (b'c', v),
            BucketKey::Client(v) => (b'a', v),
            BucketKey::ClientAddress(v) => (b'i', v),
            BucketKey::Proxy => (b'p', ""),
        };
        let mut hash = Sha256::new();
        hash.update([tag, 0]);
        hash.update(value.as_bytes());
        hash.finalize().into()
    }
}

/// The key of a limit keyed by the identity: `None` when the identity lacks it (or there is
/// none), for the caller to apply `withoutIdentity`.
pub fn identity_key(kind: KeyKind, identity: Option<&VerifiedIdentity>) -> Option<BucketKey> {
    let identity = identity?;
    match kind {
        KeyKind::Subject => identity.subject.clone().map(BucketKey::Subject),
        KeyKind::Customer => identity.customer.clone().map(BucketKey::Customer),
        KeyKind::Client => identity.client.clone().map(BucketKey::Client),
        KeyKind::ClientAddress | KeyKind::Proxy => None,
    }
}

/// The client's address: the entry `trusted_hops` from the right of `x-forwarded-for`
/// (every copy of the header, in order, as one list), when there is one and it is an IP
/// address; else `None`, and the caller falls back to the connection's peer.
pub fn forwarded_client(headers: &HeaderPairs, trusted_hops: u32) -> Option<IpAddr> {
    let copies = headers::all(headers, "x-forwarded-for");
    let entries: Vec<&[u8]> = copies
        .iter()
        .flat_map(|value| value.split(|b| *b == b','))
        .collect();
    let index = entries
        .len()
        .checked_sub(1)?
        .checked_sub(usize::try_from(trusted_hops).ok()?)?;
    parse_address(entries.get(index)?)
}

/// An address as Envoy writes it: `10.0.0.1`, `2001:db8::1`, optionally with surrounding
/// spaces; or a peer address with a port (`10.0.0.1:5678`, `[2001:db8::1]:5678`).
pub fn parse_address(text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    text.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())
}

/// The bucket key for a client address (`None`: the proxy could not tell one).
pub fn address_key(address: Option<IpAddr>) -> BucketKey {
    BucketKey::ClientAddress(address.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn xff(values: &[&str]) -> Vec<(String, Vec<u8>)> {
        values
            .iter()
            .map(|v| ("x-forwarded-for".to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_client_is_counted_from_the_right_past_the_trusted_hops() {
        let headers = xff(&["198.51.100.7, 203.0.113.9", "10.0.0.2"]);
        let at = |hops| forwarded_client(&headers, hops).map(|ip| ip.to_string());
        assert_eq!(at(0).as_deref(), Some("10.0.0.2"));
        assert_eq!(at(1).as_deref(), Some("203.0.113.9"));
        assert_eq!(at(2).as_deref(), Some("198.51.100.7"));
        assert_eq!(at(3), None, "fewer entries than hops: the peer decides");
        assert_eq!(forwarded_client(&[], 0), None);
        // What a client wrote where a trusted proxy should have: not an address.
        assert_eq!(forwarded_client(&xff(&["evil, 10.0.0.2"]), 1), None);
        assert_eq!(
            forwarded_client(&xff(&[" 2001:db8::1 "]), 0).map(|ip| ip.to_string()),
            Some("2001:db8::1".to_string())
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_peer_address_loses_its_port() {
        assert_eq!(
            parse_address(b"10.1.2.3:5678").map(|ip| ip.to_string()),
            Some("10.1.2.3".into())
        );
        assert_eq!(
            parse_address(b"[2001:db8::1]:443").map(|ip| ip.to_string()),
            Some("2001:db8::1".into())
        );
        assert_eq!(parse_address(b"\xff"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn equal_values_of_different_kinds_are_different_buckets() {
        let same = "42";
        let keys = [
            BucketKey::Subject(same.into()).slot_key(),
            BucketKey::Customer(same.into()).slot_key(),
            BucketKey::Client(same.into()).slot_key(),
            BucketKey::ClientAddress(same.into()).slot_key(),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in keys.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            BucketKey::Customer(same.into()).slot_key(),
            BucketKey::Customer(same.into()).slot_key()
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn identity_keys_come_from_the_verified_identity_only() {
        let identity = VerifiedIdentity {
            issuer: "i".into(),
            subject: Some("user-7".into()),
            customer: None,
            client: Some("app".into()),
            ..VerifiedIdentity::default()
        };
        assert_eq!(
            identity_key(KeyKind::Subject, Some(&identity)),
            Some(BucketKey::Subject("user-7".into()))
        );
        assert_eq!(identity_key(KeyKind::Customer, Some(&identity)), None);
        assert_eq!(
            identity_key(KeyKind::Client, Some(&identity)),
            Some(BucketKey::Client("app".into()))
        );
        assert_eq!(identity_key(KeyKind::Subject, None), None);
    }
}
