//! Remote JWKS: when to fetch, and how the worker VMs share one fetch and its result.
//!
//! Envoy runs one VM per worker; they meet only in shared data. Per remote JWKS there are
//! three keys, under this plugin's namespace (`jwt-auth/<instance>/`, see
//! `banking_filter_common::record`) and named after the cluster, authority and path:
//!
//! - `jwt-auth/<instance>/jwks/<cluster>/<authority><path>`: the last good set, a record
//!   (version [`JWKS_RECORD_VERSION`]) stamped with when it was fetched (`fetched_at`),
//!   holding the JWKS body. Every VM installs it when its `fetched_at` is newer than that of
//!   the set it has.
//! - `jwt-auth/<instance>/jwks-fetch/<cluster>/<authority><path>`: the fetch marker, a record
//!   (version [`MARKER_RECORD_VERSION`]) holding `owner`, `until` and `attempted_at`. A VM
//!   fetches only after taking it with a CAS write while it is free (`until` passed); it
//!   holds it for the call's timeout, and on completion leaves it free (success) or held for
//!   `retryInterval` (failure), so the whole proxy makes one call at a time and backs off
//!   together.
//! - `jwt-auth/<instance>/jwks-stamp/<cluster>/<authority><path>`: the last good set's
//!   `fetched_at` alone (a record of version [`STAMP_RECORD_VERSION`] with no payload, 14
//!   bytes), written after the set. A request that needs keys its VM lacks (an unknown
//!   `kid`, which any client can send unsigned; a stale or empty set) reads this first, and
//!   the set only when the stamp is newer than what the VM has, or unreadable, and then once
//!   per stamp per tick, so a client cannot make every request copy the whole set out of
//!   shared data. The stamp is a hint for requests only: the tick reads the set itself, so a
//!   stamp that lags (a lost write, two VMs creating it at once) or was planted delays
//!   adoption by at most a tick.
//!
//! Every plugin on a proxy shares the key space, so a record that is not this build's
//! (malformed, another version, stamped in the future) is treated as absent: the set is
//! fetched again and the record overwritten. A marker held further ahead than any VM ever
//! holds it counts as free, so no stored stamp can stop a refresh.
//!
//! A never-written key has no CAS protection in Envoy, so each VM creates the marker (free)
//! and the stamp (time 0) when it starts; two VMs starting together may both fetch once,
//! which is harmless.

use std::time::Duration;

use banking_filter_common::clock::Timestamp;
use banking_filter_common::record::{self, RecordError};
use banking_filter_common::shared::{SharedStore, Step, StoreError, UpdateError, update};

use crate::config::RemoteJwks;

/// Schema version of the JWKS record.
pub const JWKS_RECORD_VERSION: u16 = 1;
/// Schema version of the fetch marker.
pub const MARKER_RECORD_VERSION: u16 = 1;
/// Schema version of the set's stamp.
pub const STAMP_RECORD_VERSION: u16 = 1;

/// Largest JWKS body accepted; real sets are a few KiB.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// CAS attempts before giving up on a shared-data write for this tick.
const CAS_ATTEMPTS: u32 = 3;

fn endpoint(remote: &RemoteJwks) -> String {
    format!("{}/{}{}", remote.cluster, remote.authority, remote.path)
}

/// Shared-data key of the last good set.
pub fn record_key(remote: &RemoteJwks) -> String {
    format!("{}jwks/{}", remote.key_prefix, endpoint(remote))
}

/// Shared-data key of the fetch marker.
pub fn marker_key(remote: &RemoteJwks) -> String {
    format!("{}jwks-fetch/{}", remote.key_prefix, endpoint(remote))
}

/// Shared-data key of the last good set's stamp.
pub fn stamp_key(remote: &RemoteJwks) -> String {
    format!("{}jwks-stamp/{}", remote.key_prefix, endpoint(remote))
}

/// The longest a VM ever holds the marker: a fetch's timeout plus a second, or the
/// back-off after a failure. A marker held beyond `now` plus this was not written by a VM of
/// this plugin and counts as free.
fn longest_hold(remote: &RemoteJwks) -> Duration {
    (remote.timeout + Duration::from_secs(1)).max(remote.retry_interval)
}

/// A fetched JWKS as kept in shared data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksRecord {
    pub fetched_at: Timestamp,
    pub body: Vec<u8>,
}

impl JwksRecord {
    pub fn encode(&self) -> Vec<u8> {
        record::encode(
            JWKS_RECORD_VERSION,
            self.fetched_at.unix_millis(),
            &self.body,
        )
    }

    /// The record in `bytes`, refused unless it is this build's and not from the future.
    pub fn decode(bytes: &[u8], now: Timestamp) -> Result<JwksRecord, RecordError> {
        let (fetched_at, body) = Self::split(bytes, now)?;
        Ok(JwksRecord {
            fetched_at,
            body: body.to_vec(),
        })
    }

    /// The stamp and the body, without copying the body.
    fn split(bytes: &[u8], now: Timestamp) -> Result<(Timestamp, &[u8]), RecordError> {
        let (millis, body) = record::decode(bytes, JWKS_RECORD_VERSION, now.unix_millis())?;
        Ok((Timestamp(millis.saturating_mul(1_000_000)), body))
    }
}

/// The fetch marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchMarker {
    /// Random id of the VM that last took it (0: nobody yet).
    pub owner: u64,
    /// Held until then; free afterwards.
    pub until: Timestamp,
    /// When the last fetch was started, by any VM.
    pub attempted_at: Timestamp,
}

impl FetchMarker {
    pub const FREE: FetchMarker = FetchMarker {
        owner: 0,
        until: Timestamp(0),
        attempted_at: Timestamp(0),
    };

    /// Stamped with `attempted_at`; the payload is `owner`, `until` (ms) as big-endian u64s.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(16);
        payload.extend_from_slice(&self.owner.to_be_bytes());
        payload.extend_from_slice(&self.until.unix_millis().to_be_bytes());
        record::encode(
            MARKER_RECORD_VERSION,
            self.attempted_at.unix_millis(),
            &payload,
        )
    }

    /// The marker in `bytes`, refused unless it is this build's and not from the future.
    pub fn decode(bytes: &[u8], now: Timestamp) -> Result<FetchMarker, RecordError> {
        let (attempted, payload) = record::decode(bytes, MARKER_RECORD_VERSION, now.unix_millis())?;
        let (owner, until) = payload.split_at_checked(8).ok_or(RecordError::Malformed)?;
        let owner = u64::from_be_bytes(owner.try_into().map_err(|_| RecordError::Malformed)?);
        let until = u64::from_be_bytes(until.try_into().map_err(|_| RecordError::Malformed)?);
        let ms = |m: u64| Timestamp(m.saturating_mul(1_000_000));
        Ok(FetchMarker {
            owner,
            until: ms(until),
            attempted_at: ms(attempted),
        })
    }
}

/// Whether a fetch is due: no set yet; 90% of `cacheDuration` passed since the last good
/// fetch; or a token named an unknown `kid` and `minRefetchInterval` has passed since both
/// the last good fetch and the last attempt.
pub fn fetch_due(
    remote: &RemoteJwks,
    fetched_at: Option<Timestamp>,
    last_attempt: Option<Timestamp>,
    unknown_kid_seen: bool,
    now: Timestamp,
) -> bool {
    // A stamp ahead of now beyond the skew means the wall clock stepped back: it says
    // nothing about when to fetch, and waiting for it would stall refreshes and rotations.
    let skew = Duration::from_millis(record::MAX_FUTURE_SKEW_MS);
    let believable = |t: &Timestamp| *t <= now.plus(skew);
    let Some(fetched_at) = fetched_at.filter(believable) else {
        return true;
    };
    let last_attempt = last_attempt.filter(believable);
    let refresh_at = fetched_at.plus(remote.cache_duration.mul_f64(0.9));
    if now >= refresh_at {
        return true;
    }
    unknown_kid_seen
        && now >= fetched_at.plus(remote.min_refetch_interval)
        && last_attempt.is_none_or(|a| now >= a.plus(remote.min_refetch_interval))
}

/// Reads the last good set; an unreadable record counts as none.
pub fn read_record<S: SharedStore + ?Sized>(
    store: &S,
    remote: &RemoteJwks,
    now: Timestamp,
) -> Option<JwksRecord> {
    match store.get(&record_key(remote)) {
        Ok((Some(bytes), _)) => JwksRecord::decode(&bytes, now).ok(),
        _ => None,
    }
}

/// What the shared set is to a VM that has the set stamped `installed`.
#[derive(Debug, PartialEq, Eq)]
pub enum SharedSet {
    /// Nothing newer than the installed set (or nothing at all).
    NothingNewer,
    /// A newer set to install.
    Newer(JwksRecord),
    /// A value that is not this plugin's record: ignored, as if absent.
    Ignored(RecordError),
}

/// Reads the last good set if it was fetched after `installed` (any set when nothing is
/// installed). Compares the record's `fetched_at` before parsing anything, so finding the
/// set this VM already has costs no JWKS parse; the read itself copies the whole record.
pub fn read_newer_record<S: SharedStore + ?Sized>(
    store: &S,
    remote: &RemoteJwks,
    installed: Option<Timestamp>,
    now: Timestamp,
) -> SharedSet {
    let Ok((Some(bytes), _)) = store.get(&record_key(remote)) else {
        return SharedSet::NothingNewer;
    };
    match JwksRecord::split(&bytes, now) {
        Err(e) => SharedSet::Ignored(e),
        Ok((fetched_at, _)) if installed.is_some_and(|mine| fetched_at <= mine) => {
            SharedSet::NothingNewer
        }
        Ok((fetched_at, body)) => SharedSet::Newer(JwksRecord {
            fetched_at,
            body: body.to_vec(),
        }),
    }
}

/// What the stamp beside the shared set says to a VM that has seen the set stamped `seen`
/// (installed it, or found it unusable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    /// The stamp is this plugin's and no newer than `seen`.
    NothingNewer,
    /// The stamp is this plugin's and newer than `seen` (or nothing was seen yet).
    Newer(Timestamp),
    /// No stamp, or one that is not this plugin's: only the set itself can tell.
    Unknown,
}

/// Reads the stamp beside the shared set (a 14-byte record) and compares it with `seen`.
pub fn announcement<S: SharedStore + ?Sized>(
    store: &S,
    remote: &RemoteJwks,
    seen: Option<Timestamp>,
    now: Timestamp,
) -> Announcement {
    let stamp = match store.get(&stamp_key(remote)) {
        Ok((Some(bytes), _)) => decode_stamp(&bytes, now),
        _ => None,
    };
    match stamp {
        None => Announcement::Unknown,
        Some(stamp) if seen.is_some_and(|seen| stamp <= seen) => Announcement::NothingNewer,
        Some(stamp) => Announcement::Newer(stamp),
    }
}

fn decode_stamp(bytes: &[u8], now: Timestamp) -> Option<Timestamp> {
    let (millis, _) = record::decode(bytes, STAMP_RECORD_VERSION, now.unix_millis()).ok()?;
    Some(Timestamp(millis.saturating_mul(1_000_000)))
}

/// Moves the stamp forward to `fetched_at`, the set just published (never back: a VM that
/// published an older set after another published a newer one leaves the newer stamp).
/// Call it after [`publish`] wrote the set, so a stamp never announces a set not there yet.
pub fn announce<S: SharedStore + ?Sized>(
    store: &S,
    remote: &RemoteJwks,
    fetched_at: Timestamp,
    now: Timestamp,
) -> Result<(), UpdateError> {
    update(
        store,
        &stamp_key(remote),
        CAS_ATTEMPTS,
        |current| match current.and_then(|bytes| decode_stamp(bytes, now)) {
            Some(announced) if announced >= fetched_at => Step::Keep(()),
            _ => Step::Write(
                record::encode(STAMP_RECORD_VERSION, fetched_at.unix_millis(), &[]),
                (),
            ),
        },
    )
}

/// Reads the fetch marker; one that is not this plugin's counts as none.
pub fn read_marker<S: SharedStore + ?Sized>(
    store: &S,
    remote: &RemoteJwks,
    now: Timestamp,
) -> Option<FetchMarker> {
    match store.get(&marker_key(remote)) {
        Ok((Some(bytes), _)) => FetchMarker::decode(&bytes, now).ok(),
        _ => None,
    }
}

/// Creates the marker (free) and the stamp (time 0: nothing announced) where they do not
/// exist yet, so that later writes to them are compare-and-swaps (see the module notes).
pub fn ensure_marker<S: SharedStore + ?Sized>(
    store: &S,
    remote: &RemoteJwks,
) -> Result<(), StoreError> {
    let key = marker_key(remote);
    if store.get(&key)?.0.is_none() {
        store.set(&key, &FetchMarker::FREE.encode(), None)?;
    }
    let key = stamp_key(remote);
    if store.get(&key)?.0.is_none() {
        store.set(&key, &record::encode(STAMP_RECORD_VERSION, 0, &[]), None)?;
    }
    Ok(())
}

/// Takes the marker for `owner` until `now + hold` if it is free. False when another VM
/// holds it, it is backing off after a failure, or another VM won the CAS race.
pub fn try_take<S: SharedStore + ?Sized>(
    store: &S,
    remote: &RemoteJwks,
    owner: u64,
    now: Timestamp,
    hold: Duration,
) -> bool {
    let taken = update(store, &marker_key(remote), 1, |current| {
        let marker = current
            .and_then(|bytes| FetchMarker::decode(bytes, now).ok())
            .unwrap_or(FetchMarker::FREE);
        // Held, unless held beyond what any VM of this plugin ever holds it for.
        if now < marker.until && marker.until <= now.plus(longest_hold(remote)) {
            return Step::Keep(false);
        }
        let mine = FetchMarker {
            owner,
            until: now.plus(hold),
            attempted_at: now,
        };
        Step::Write(mine.encode(), true)
    });
    matches!(taken, Ok(true))
}

/// Hands the marker back after a fetch: free from `free_at` on (now after a success,
/// `now + retryInterval` after a failure). Leaves it alone if another VM has taken it
/// since (ours had expired).
pub fn release<S: SharedStore + ?Sized>(
    store: &S,
    remote: &RemoteJwks,
    owner: u64,
    free_at: Timestamp,
) -> Result<(), UpdateError> {
    update(
        store,
        &marker_key(remote),
        CAS_ATTEMPTS,
        |current| match current.and_then(|bytes| FetchMarker::decode(bytes, free_at).ok()) {
            Some(marker) if marker.owner == owner => {
                let released = FetchMarker {
                    until: free_at,
                    ..marker
                };
                Step::Write(released.encode(), ())
            }
            _ => Step::Keep(()),
        },
    )
}

/// Publishes a freshly fetched set unless a newer one is already there; a value that is
/// not this plugin's record is overwritten. True when written ([`announce`] it then).
pub fn publish<S: SharedStore + ?Sized>(
    store: &S,
    remote: &RemoteJwks,
    record: &JwksRecord,
    now: Timestamp,
) -> Result<bool, UpdateError> {
    update(
        store,
        &record_key(remote),
        CAS_ATTEMPTS,
        |current| match current.and_then(|bytes| JwksRecord::split(bytes, now).ok()) {
            Some((fetched_at, _)) if fetched_at >= record.fetched_at => Step::Keep(false),
            _ => Step::Write(record.encode(), true),
        },
    )
}

/// The request headers of a JWKS fetch (a GET without a body).
pub fn request_headers(remote: &RemoteJwks) -> [(&'static str, &str); 4] {
    [
        (":method", "GET"),
        (":path", remote.path.as_str()),
        (":authority", remote.authority.as_str()),
        ("accept", "application/json, application/jwk-set+json"),
    ]
}

/// Why a fetch response was not accepted (logged and counted; the last good set stays).
pub fn response_problem(status: Option<u16>, body_len: usize) -> Option<String> {
    match status {
        None => Some("no response (timeout or connection failure)".to_owned()),
        Some(200) if body_len > MAX_JWKS_BYTES => {
            Some(format!("body larger than {MAX_JWKS_BYTES} bytes"))
        }
        Some(200) => None,
        Some(s) => Some(format!("HTTP status {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banking_filter_common::shared::MemoryStore;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn remote() -> RemoteJwks {
        RemoteJwks {
            key_prefix: "jwt-auth/edge/".into(),
            cluster: "outbound|443||idp.bank.svc.cluster.local".into(),
            authority: "idp.bank.svc.cluster.local".into(),
            path: "/jwks.json".into(),
            timeout: Duration::from_secs(5),
            cache_duration: Duration::from_secs(600),
            min_refetch_interval: Duration::from_secs(30),
            retry_interval: Duration::from_secs(5),
            max_staleness: Duration::from_secs(1800),
        }
    }

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_unix_seconds(secs)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keys_name_the_endpoint() {
        assert_eq!(
            record_key(&remote()),
            "jwt-auth/edge/jwks/outbound|443||idp.bank.svc.cluster.local/idp.bank.svc.cluster.local/jwks.json"
        );
        assert!(marker_key(&remote()).starts_with("jwt-auth/edge/jwks-fetch/outbound|443||"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn record_and_marker_round_trip() {
        let r = JwksRecord {
            fetched_at: Timestamp::from_unix_seconds(1234),
            body: b"{\"keys\":[]}\n".to_vec(),
        };
        assert_eq!(JwksRecord::decode(&r.encode(), t(1234)), Ok(r));
        assert_eq!(
            JwksRecord::decode(b"garbage", t(1234)),
            Err(RecordError::Malformed)
        );
        let m = FetchMarker {
            owner: 42,
            until: t(10),
            attempted_at: t(5),
        };
        assert_eq!(FetchMarker::decode(&m.encode(), t(5)), Ok(m));
        assert!(FetchMarker::decode(b"fetch1 x", t(5)).is_err());
        // A JWKS record is not a marker, nor the other way round.
        assert!(FetchMarker::decode(&record::encode(2, 5_000, &[0; 16]), t(5)).is_err());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn fetch_is_due_without_a_set_and_near_expiry() {
        let r = remote();
        assert!(fetch_due(&r, None, None, false, t(1000)));
        assert!(!fetch_due(&r, Some(t(1000)), None, false, t(1539)));
        assert!(fetch_due(&r, Some(t(1000)), None, false, t(1540)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_clock_stepped_back_does_not_stall_the_refresh() {
        let r = remote();
        // The installed set was stamped an hour "ahead" of the clock now.
        assert!(fetch_due(&r, Some(t(4_600)), None, false, t(1_000)));
        // Within the skew, a stamp is believed.
        assert!(!fetch_due(&r, Some(t(1_004)), None, false, t(1_000)));
        // A last attempt from the "future" does not hold an unknown-kid refetch off.
        assert!(fetch_due(&r, Some(t(900)), Some(t(4_600)), true, t(1_000)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_kid_refetch_at_most_once_per_interval() {
        let r = remote();
        let fetched = Some(t(1000));
        assert!(!fetch_due(&r, fetched, Some(t(1000)), true, t(1029)));
        assert!(fetch_due(&r, fetched, Some(t(1000)), true, t(1030)));
        // An attempt at 1030 (which failed) holds the next one off until 1060.
        assert!(!fetch_due(&r, fetched, Some(t(1030)), true, t(1059)));
        assert!(fetch_due(&r, fetched, Some(t(1030)), true, t(1060)));
        assert!(!fetch_due(&r, fetched, Some(t(1030)), false, t(1060)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn one_vm_at_a_time_takes_the_marker() {
        let store = MemoryStore::new();
        let r = remote();
        ensure_marker(&store, &r).unwrap();
        assert!(try_take(&store, &r, 1, t(100), Duration::from_secs(6)));
        assert!(!try_take(&store, &r, 2, t(101), Duration::from_secs(6)));
        // An abandoned marker frees itself when its hold runs out.
        assert!(try_take(&store, &r, 2, t(106), Duration::from_secs(6)));
        let m = read_marker(&store, &r, t(106)).unwrap();
        assert_eq!((m.owner, m.until, m.attempted_at), (2, t(112), t(106)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn release_after_failure_backs_everyone_off() {
        let store = MemoryStore::new();
        let r = remote();
        ensure_marker(&store, &r).unwrap();
        assert!(try_take(&store, &r, 1, t(100), Duration::from_secs(6)));
        release(&store, &r, 1, t(105)).unwrap();
        assert!(!try_take(&store, &r, 2, t(104), Duration::from_secs(6)));
        assert!(try_take(&store, &r, 2, t(105), Duration::from_secs(6)));
        // The former owner's late release does not free the new holder's marker.
        release(&store, &r, 1, t(105)).unwrap();
        assert!(!try_take(&store, &r, 3, t(106), Duration::from_secs(6)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ensure_marker_keeps_an_existing_marker() {
        let store = MemoryStore::new();
        let r = remote();
        ensure_marker(&store, &r).unwrap();
        assert!(try_take(&store, &r, 1, t(100), Duration::from_secs(6)));
        ensure_marker(&store, &r).unwrap();
        assert_eq!(read_marker(&store, &r, t(100)).unwrap().owner, 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn publish_never_replaces_a_newer_set() {
        let store = MemoryStore::new();
        let r = remote();
        let newer = JwksRecord {
            fetched_at: t(200),
            body: b"new".to_vec(),
        };
        let older = JwksRecord {
            fetched_at: t(100),
            body: b"old".to_vec(),
        };
        assert_eq!(publish(&store, &r, &newer, t(200)), Ok(true));
        assert_eq!(publish(&store, &r, &older, t(200)), Ok(false));
        assert_eq!(read_record(&store, &r, t(200)).unwrap().body, b"new");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_stamp_announces_the_newest_published_set_and_never_goes_back() {
        use Announcement::{Newer, NothingNewer, Unknown};
        let store = MemoryStore::new();
        let r = remote();
        let now = t(300);
        assert_eq!(announcement(&store, &r, None, now), Unknown, "no stamp yet");
        ensure_marker(&store, &r).unwrap();
        assert_eq!(announcement(&store, &r, None, now), Newer(Timestamp(0)));
        assert_eq!(announcement(&store, &r, Some(t(100)), now), NothingNewer);
        let set_at = |at: u64| JwksRecord {
            fetched_at: t(at),
            body: b"{}".to_vec(),
        };
        assert_eq!(publish(&store, &r, &set_at(200), now), Ok(true));
        announce(&store, &r, t(200), now).unwrap();
        assert_eq!(announcement(&store, &r, Some(t(100)), now), Newer(t(200)));
        assert_eq!(announcement(&store, &r, Some(t(200)), now), NothingNewer);
        // A VM finishing an older fetch late moves neither the set nor the stamp back.
        assert_eq!(publish(&store, &r, &set_at(150), now), Ok(false));
        announce(&store, &r, t(150), now).unwrap();
        assert_eq!(announcement(&store, &r, Some(t(180)), now), Newer(t(200)));
        // Kept to the millisecond, rounded down: a VM that installed its own fetch at a
        // time finer than that never finds its stamp newer.
        let odd = Timestamp(t(250).0 + 123_456_789);
        announce(&store, &r, odd, now).unwrap();
        assert_eq!(announcement(&store, &r, Some(odd), now), NothingNewer);
        assert_eq!(
            announcement(&store, &r, Some(t(250)), now),
            Newer(Timestamp(t(250).0 + 123_000_000))
        );
        // A stamp from the future, or not a record, is not this plugin's.
        for planted in [
            record::encode(STAMP_RECORD_VERSION, t(900).unix_millis(), &[]),
            b"junk".to_vec(),
        ] {
            store.set(&stamp_key(&r), &planted, None).unwrap();
            assert_eq!(announcement(&store, &r, Some(t(200)), now), Unknown);
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn only_a_newer_shared_set_is_read_back() {
        let store = MemoryStore::new();
        let r = remote();
        let now = t(300);
        assert_eq!(
            read_newer_record(&store, &r, None, now),
            SharedSet::NothingNewer
        );
        let record = JwksRecord {
            fetched_at: t(200),
            body: b"{}".to_vec(),
        };
        publish(&store, &r, &record, now).unwrap();
        assert_eq!(
            read_newer_record(&store, &r, None, now),
            SharedSet::Newer(record.clone())
        );
        assert_eq!(
            read_newer_record(&store, &r, Some(t(100)), now),
            SharedSet::Newer(record)
        );
        assert_eq!(
            read_newer_record(&store, &r, Some(t(200)), now),
            SharedSet::NothingNewer
        );
        assert_eq!(
            read_newer_record(&store, &r, Some(t(300)), now),
            SharedSet::NothingNewer
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_neighbours_record_is_ignored_and_overwritten_by_the_next_fetch() {
        let r = remote();
        let now = t(1_000);
        let future = JwksRecord {
            fetched_at: t(1_000_000),
            body: b"{\"keys\":[]}".to_vec(),
        };
        let neighbours: [(Vec<u8>, RecordError); 3] = [
            (b"jwks1 99999999999999\n{}".to_vec(), RecordError::Malformed),
            (
                record::encode(7, now.unix_millis(), b"{}"),
                RecordError::UnknownVersion(7),
            ),
            (future.encode(), RecordError::FromTheFuture),
        ];
        for (value, why) in neighbours {
            let store = MemoryStore::new();
            store.set(&record_key(&r), &value, None).unwrap();
            assert_eq!(
                read_newer_record(&store, &r, None, now),
                SharedSet::Ignored(why)
            );
            assert!(read_record(&store, &r, now).is_none());
            // The fetch is due as if there were no set, and its result replaces the value.
            assert!(fetch_due(&r, None, None, false, now));
            let fetched = JwksRecord {
                fetched_at: now,
                body: b"real".to_vec(),
            };
            assert_eq!(publish(&store, &r, &fetched, now), Ok(true));
            assert_eq!(read_record(&store, &r, now).unwrap().body, b"real");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn no_stored_marker_can_hold_the_fetch_off_for_longer_than_a_vm_would() {
        let r = remote();
        let now = t(1_000);
        let store = MemoryStore::new();
        // Held for a day, stamped now: no VM of this plugin holds it that long.
        let stuck = FetchMarker {
            owner: 9,
            until: t(1_000 + 86_400),
            attempted_at: now,
        };
        store.set(&marker_key(&r), &stuck.encode(), None).unwrap();
        assert!(try_take(&store, &r, 1, now, Duration::from_secs(6)));
        // Malformed or future-stamped markers count as free too.
        for value in [
            b"fetch1 1 2 3".to_vec(),
            record::encode(1, u64::MAX, &[0; 16]),
        ] {
            store.set(&marker_key(&r), &value, None).unwrap();
            assert!(read_marker(&store, &r, now).is_none());
            assert!(try_take(&store, &r, 2, now, Duration::from_secs(6)));
        }
        // A marker legitimately held for the fetch's timeout still holds.
        assert!(!try_take(&store, &r, 3, t(1_001), Duration::from_secs(6)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn response_problems_are_named() {
        assert_eq!(response_problem(Some(200), 10), None);
        assert_eq!(response_problem(Some(500), 10).unwrap(), "HTTP status 500");
        assert!(response_problem(None, 0).unwrap().contains("timeout"));
        assert!(
            response_problem(Some(200), MAX_JWKS_BYTES + 1)
                .unwrap()
                .contains("larger")
        );
    }
}
