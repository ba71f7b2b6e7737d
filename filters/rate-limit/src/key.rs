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
    /// A token's `sub`, unique only within its issuer.
    Subject {
        issuer: String,
        subject: String,
    },
    /// The bank's customer id, the same whichever identity provider vouched for it.
    Customer(String),
    /// An OAuth client, unique only within its issuer.
    Client {
        issuer: String,
        client: String,
    },
    /// A client address (an IPv6 one as its /64), or `unknown` when the proxy could not tell.
    ClientAddress(String),
    Proxy,
}

/// The per-proxy secret slot keys are hashed with (see [`crate::store::key_secret`]).
pub type KeySecret = [u8; 32];

impl BucketKey {
    /// The slot key: SHA-256 over the proxy's secret, the kind and the values, each
    /// length-prefixed. Shared data never holds a raw customer id, nor a hash anyone without
    /// the secret could compute: so no one can work out offline which slots a victim's key
    /// will probe and fill them first, nor test guesses of customer ids against the table.
    /// Equal values of different kinds are different buckets.
    pub fn slot_key(&self, secret: &KeySecret) -> [u8; 32] {
        let (tag, parts): (u8, [&str; 2]) = match self {
            BucketKey::Subject { issuer, subject } => (b's', [issuer, subject]),
            BucketKey::Customer(v) => (b'c', ["", v]),
            BucketKey::Client { issuer, client } => (b'a', [issuer, client]),
            BucketKey::ClientAddress(v) => (b'i', ["", v]),
            BucketKey::Proxy => (b'p', ["", ""]),
        };
        let mut hash = Sha256::new();
        hash.update(secret);
        hash.update([tag]);
        for part in parts {
            hash.update(u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            hash.update(part.as_bytes());
        }
        hash.finalize().into()
    }
}

/// The key of a limit keyed by the identity: `None` when the identity lacks it (or there is
/// none), for the caller to apply `withoutIdentity`.
pub fn identity_key(kind: KeyKind, identity: Option<&VerifiedIdentity>) -> Option<BucketKey> {
    let identity = identity?;
    let issuer = || identity.issuer.clone();
    match kind {
        KeyKind::Subject => identity.subject.clone().map(|subject| BucketKey::Subject {
            issuer: issuer(),
            subject,
        }),
        KeyKind::Customer => identity.customer.clone().map(BucketKey::Customer),
        KeyKind::Client => identity.client.clone().map(|client| BucketKey::Client {
            issuer: issuer(),
            client,
        }),
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

/// The bucket key for a client address (`None`: the proxy could not tell one). An IPv6
/// client is keyed by its /64, the block one subscriber is given: keyed by whole address, a
/// client could take a fresh bucket for every request from the 2^64 addresses it owns.
pub fn address_key(address: Option<IpAddr>) -> BucketKey {
    let text = match address {
        None => "unknown".to_string(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
            }
        },
    };
    BucketKey::ClientAddress(text)
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

    const SECRET: KeySecret = [7; 32];

    #[wasm_bindgen_test(unsupported = test)]
    fn equal_values_of_different_kinds_issuers_or_secrets_are_different_buckets() {
        let same = "42";
        let keys = [
            BucketKey::Subject {
                issuer: "i".into(),
                subject: same.into(),
            },
            BucketKey::Subject {
                issuer: "j".into(),
                subject: same.into(),
            },
            // The length prefixes keep ("i4", "2") apart from ("i", "42").
            BucketKey::Subject {
                issuer: "i4".into(),
                subject: "2".into(),
            },
            BucketKey::Customer(same.into()),
            BucketKey::Client {
                issuer: "i".into(),
                client: same.into(),
            },
            BucketKey::ClientAddress(same.into()),
        ]
        .map(|k| k.slot_key(&SECRET));
        for (i, a) in keys.iter().enumerate() {
            for b in keys.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
        let customer = BucketKey::Customer(same.into());
        assert_eq!(customer.slot_key(&SECRET), customer.slot_key(&SECRET));
        assert_ne!(customer.slot_key(&SECRET), customer.slot_key(&[8; 32]));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_ipv6_client_is_keyed_by_its_64_and_a_mapped_ipv4_one_as_ipv4() {
        let key = |text: &str| address_key(parse_address(text.as_bytes()));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:203.0.113.5"), key("203.0.113.5"));
        assert_eq!(
            address_key(None),
            BucketKey::ClientAddress("unknown".into())
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
            Some(BucketKey::Subject {
                issuer: "i".into(),
                subject: "user-7".into()
            })
        );
        assert_eq!(identity_key(KeyKind::Customer, Some(&identity)), None);
        assert_eq!(
            identity_key(KeyKind::Client, Some(&identity)),
            Some(BucketKey::Client {
                issuer: "i".into(),
                client: "app".into()
            })
        );
        assert_eq!(identity_key(KeyKind::Subject, None), None);
    }
}
