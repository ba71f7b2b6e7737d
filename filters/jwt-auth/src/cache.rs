//! The verified-token cache: a bounded per-worker map from a token's SHA-256 to the claims
//! it was verified with, so a token reused across requests costs one signature check.
//!
//! The token itself is never stored, only its hash. An entry lives until the earlier of
//! the token's `exp` and the configured TTL, and only while the key set it was verified
//! against is still the one in use (a rotation drops every entry verified before it).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use banking_filter_common::clock::Timestamp;
use serde_json::{Map, Value};

pub type TokenHash = [u8; 32];

/// SHA-256 of the token bytes.
pub fn hash(token: &[u8]) -> TokenHash {
    hmac_sha256::Hash::hash(token)
}

/// What a verified token established.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// Index of the provider that issued it.
    pub provider: usize,
    /// Version of that provider's key set it was verified against.
    pub keys_version: u64,
    pub claims: Rc<Map<String, Value>>,
    /// The entry is not used at or after this time.
    pub valid_until: Timestamp,
}

#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    ttl: Duration,
    entries: HashMap<TokenHash, VerifiedToken>,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0 disables it), each kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        TokenCache {
            capacity,
            ttl,
            entries: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `key` if it is still valid at `now` for key set `keys_version` of
    /// its provider; stale entries are dropped on the way.
    pub fn get(
        &mut self,
        key: &TokenHash,
        now: Timestamp,
        keys_version: impl Fn(usize) -> Option<u64>,
    ) -> Option<VerifiedToken> {
        let entry = self.entries.get(key)?;
        if now < entry.valid_until && keys_version(entry.provider) == Some(entry.keys_version) {
            return Some(entry.clone());
        }
        self.entries.remove(key);
        None
    }

    /// Remembers a verified token whose `exp` is `expires_at` (None: no `exp`).
    pub fn insert(
        &mut self,
        key: TokenHash,
        provider: usize,
        keys_version: u64,
        claims: Rc<Map<String, Value>>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) {
        if self.capacity == 0 {
            return;
        }
        let by_ttl = now.plus(self.ttl);
        let valid_until = expires_at.map_or(by_ttl, |exp| exp.min(by_ttl));
        if valid_until <= now {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.evict(now);
        }
        self.entries.insert(
            key,
            VerifiedToken {
                provider,
                keys_version,
                claims,
                valid_until,
            },
        );
    }

    /// Makes room for one entry: drops everything already stale, else the entry that
    /// would go stale first. A linear scan, but bounded by the capacity and far cheaper
    /// than the signature check a cache miss costs.
    fn evict(&mut self, now: Timestamp) {
        self.entries.retain(|_, e| e.valid_until > now);
        if self.entries.len() < self.capacity {
            return;
        }
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.valid_until)
            .map(|(k, _)| *k)
        {
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_unix_seconds(secs)
    }

    fn claims() -> Rc<Map<String, Value>> {
        Rc::new(Map::new())
    }

    fn version_1(_: usize) -> Option<u64> {
        Some(1)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn entry_lives_until_the_earlier_of_exp_and_ttl() {
        let mut c = TokenCache::new(10, Duration::from_secs(60));
        c.insert(hash(b"a"), 0, 1, claims(), Some(t(1030)), t(1000));
        c.insert(hash(b"b"), 0, 1, claims(), Some(t(5000)), t(1000));
        assert!(c.get(&hash(b"a"), t(1029), version_1).is_some());
        assert!(c.get(&hash(b"a"), t(1030), version_1).is_none());
        assert!(c.get(&hash(b"b"), t(1059), version_1).is_some());
        assert!(c.get(&hash(b"b"), t(1060), version_1).is_none());
        assert!(c.is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn entry_is_dropped_when_its_key_set_changed() {
        let mut c = TokenCache::new(10, Duration::from_secs(60));
        c.insert(hash(b"a"), 0, 1, claims(), None, t(1000));
        assert!(c.get(&hash(b"a"), t(1001), |_| Some(2)).is_none());
        assert!(c.get(&hash(b"a"), t(1001), version_1).is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stays_within_capacity_evicting_what_expires_first() {
        let mut c = TokenCache::new(2, Duration::from_secs(600));
        c.insert(hash(b"a"), 0, 1, claims(), Some(t(1100)), t(1000));
        c.insert(hash(b"b"), 0, 1, claims(), Some(t(1050)), t(1000));
        c.insert(hash(b"c"), 0, 1, claims(), Some(t(1200)), t(1000));
        assert_eq!(c.len(), 2);
        assert!(c.get(&hash(b"b"), t(1001), version_1).is_none());
        assert!(c.get(&hash(b"a"), t(1001), version_1).is_some());
        assert!(c.get(&hash(b"c"), t(1001), version_1).is_some());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn zero_capacity_disables_caching() {
        let mut c = TokenCache::new(0, Duration::from_secs(600));
        c.insert(hash(b"a"), 0, 1, claims(), None, t(1000));
        assert!(c.get(&hash(b"a"), t(1001), version_1).is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn already_expired_token_is_not_cached() {
        let mut c = TokenCache::new(4, Duration::from_secs(600));
        c.insert(hash(b"a"), 0, 1, claims(), Some(t(999)), t(1000));
        assert!(c.is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn key_is_the_sha256_of_the_token() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(hash(b"abc")[..4], [0xba, 0x78, 0x16, 0xbf],);
    }
}
