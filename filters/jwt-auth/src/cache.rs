//! The verified-token cache: a bounded per-worker map from a token to what its
//! verification established, prepared for reuse ([`Prepared`]), so a token reused across
//! requests costs one signature check and, after it, a lookup.
//!
//! The key is the token itself: std's `HashMap` hashes it with SipHash-1-3 under keys drawn
//! at random when the VM starts (a client cannot aim tokens at one bucket), and a hit
//! compares the whole token, so no two tokens ever share an entry. That costs the token's
//! bytes per entry (about 1 KiB for an RS256 access token, `maxTokenBytes` at most) but no
//! cryptographic hash per request. The cache lives in this worker's memory only: never in
//! shared data, where any co-resident plugin could plant an entry. An entry lives until the
//! earlier of the token's `exp` and the configured TTL, and only while the key set it was
//! verified against is still the one in use (a changed set drops every entry verified
//! before it).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use banking_filter_common::clock::Timestamp;

use crate::policy::Prepared;

/// What a verified token established.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// Index of the provider that issued it.
    pub provider: usize,
    /// Version of that provider's key set it was verified against.
    pub keys_version: u64,
    pub prepared: Rc<Prepared>,
    /// The entry is not used at or after this time.
    pub valid_until: Timestamp,
}

#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    ttl: Duration,
    entries: HashMap<Box<[u8]>, VerifiedToken>,
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

    /// What `token`'s verification prepared, if it is still valid at `now` for key set
    /// `keys_version` of its provider; a stale entry is dropped on the way.
    pub fn get(
        &mut self,
        token: &[u8],
        now: Timestamp,
        keys_version: impl Fn(usize) -> Option<u64>,
    ) -> Option<Rc<Prepared>> {
        let entry = self.entries.get(token)?;
        if now < entry.valid_until && keys_version(entry.provider) == Some(entry.keys_version) {
            return Some(Rc::clone(&entry.prepared));
        }
        self.entries.remove(token);
        None
    }

    /// Remembers a verified token whose `exp` is `expires_at` (None: no `exp`).
    pub fn insert(
        &mut self,
        token: &[u8],
        provider: usize,
        keys_version: u64,
        prepared: Rc<Prepared>,
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
        if self.entries.len() >= self.capacity && !self.entries.contains_key(token) {
            self.evict(now);
        }
        self.entries.insert(
            token.into(),
            VerifiedToken {
                provider,
                keys_version,
                prepared,
                valid_until,
            },
        );
    }

    /// Makes room: drops everything already stale, and if the cache is still full of live
    /// entries, the eighth of them that would go stale first. One scan then serves the
    /// next `capacity / 8` inserts, so a stream of distinct tokens (each a miss, each an
    /// insert) costs a constant per request, not a scan of the whole cache.
    fn evict(&mut self, now: Timestamp) {
        self.entries.retain(|_, e| e.valid_until > now);
        if self.entries.len() < self.capacity {
            return;
        }
        let batch = (self.capacity / 8).max(1);
        let mut ends: Vec<Timestamp> = self.entries.values().map(|e| e.valid_until).collect();
        if ends.len() < batch {
            return;
        }
        let (_, cutoff, _) = ends.select_nth_unstable(batch - 1);
        let cutoff = *cutoff;
        let mut budget = batch;
        self.entries.retain(|_, e| {
            let drop = budget > 0 && e.valid_until <= cutoff;
            budget -= usize::from(drop);
            !drop
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_unix_seconds(secs)
    }

    fn claims() -> Rc<Prepared> {
        Rc::new(Prepared::default())
    }

    fn version_1(_: usize) -> Option<u64> {
        Some(1)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn entry_lives_until_the_earlier_of_exp_and_ttl() {
        let mut c = TokenCache::new(10, Duration::from_secs(60));
        c.insert(b"a", 0, 1, claims(), Some(t(1030)), t(1000));
        c.insert(b"b", 0, 1, claims(), Some(t(5000)), t(1000));
        assert!(c.get(b"a", t(1029), version_1).is_some());
        assert!(c.get(b"a", t(1030), version_1).is_none());
        assert!(c.get(b"b", t(1059), version_1).is_some());
        assert!(c.get(b"b", t(1060), version_1).is_none());
        assert!(c.is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn entry_is_dropped_when_its_key_set_changed() {
        let mut c = TokenCache::new(10, Duration::from_secs(60));
        c.insert(b"a", 0, 1, claims(), None, t(1000));
        assert!(c.get(b"a", t(1001), |_| Some(2)).is_none());
        assert!(c.get(b"a", t(1001), version_1).is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stays_within_capacity_evicting_what_expires_first() {
        let mut c = TokenCache::new(2, Duration::from_secs(600));
        c.insert(b"a", 0, 1, claims(), Some(t(1100)), t(1000));
        c.insert(b"b", 0, 1, claims(), Some(t(1050)), t(1000));
        c.insert(b"c", 0, 1, claims(), Some(t(1200)), t(1000));
        assert_eq!(c.len(), 2);
        assert!(c.get(b"b", t(1001), version_1).is_none());
        assert!(c.get(b"a", t(1001), version_1).is_some());
        assert!(c.get(b"c", t(1001), version_1).is_some());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_full_cache_makes_room_for_an_eighth_at_once_soonest_stale_first() {
        let mut c = TokenCache::new(16, Duration::from_secs(6000));
        for i in 0..16u8 {
            c.insert(&[i], 0, 1, claims(), Some(t(2000 + u64::from(i))), t(1000));
        }
        c.insert(b"new", 0, 1, claims(), None, t(1000));
        // Two (16 / 8) went, the two that expire first; the next insert needs no room.
        assert_eq!(c.len(), 15);
        assert!(c.get(&[0], t(1001), version_1).is_none());
        assert!(c.get(&[1], t(1001), version_1).is_none());
        assert!(c.get(&[2], t(1001), version_1).is_some());
        c.insert(b"newer", 0, 1, claims(), None, t(1000));
        assert_eq!(c.len(), 16);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn zero_capacity_disables_caching() {
        let mut c = TokenCache::new(0, Duration::from_secs(600));
        c.insert(b"a", 0, 1, claims(), None, t(1000));
        assert!(c.get(b"a", t(1001), version_1).is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn already_expired_token_is_not_cached() {
        let mut c = TokenCache::new(4, Duration::from_secs(600));
        c.insert(b"a", 0, 1, claims(), Some(t(999)), t(1000));
        assert!(c.is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_hit_needs_the_whole_token() {
        let mut c = TokenCache::new(4, Duration::from_secs(600));
        c.insert(b"header.payload.signature", 0, 1, claims(), None, t(1000));
        assert!(
            c.get(b"header.payload.signature", t(1001), version_1)
                .is_some()
        );
        for other in [
            &b"header.payload.signaturE"[..],
            b"header.payload.signatur",
            b"",
        ] {
            assert!(c.get(other, t(1001), version_1).is_none());
        }
    }
}
