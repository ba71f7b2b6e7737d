//! Remote JWKS: when to fetch, and how the worker VMs share one fetch and its result.
//!
//! Envoy runs one VM per worker; they meet only in shared data. Per remote JWKS there are
//! two keys (both named after the cluster, authority and path, so two plugins reading the
//! same endpoint share them):
//!
//! - `jwt-auth/jwks/<cluster>/<authority><path>`: the last good set, as
//!   `jwks1 <fetched_at_ms>\n<JWKS body>`. Every VM installs it when `fetched_at` changes.
//! - `jwt-auth/jwks-fetch/<cluster>/<authority><path>`: the fetch marker,
//!   `fetch1 <owner> <until_ms> <attempted_at_ms>`. A VM fetches only after taking it with
//!   a CAS write while it is free (`until` passed); it holds it for the call's timeout, and
//!   on completion leaves it free (success) or held for `retryInterval` (failure), so the
//!   whole proxy makes one call at a time and backs off together.
//!
//! A never-written key has no CAS protection in Envoy, so each VM creates the marker as
//! free when it starts; two VMs starting together may both fetch once, which is harmless.

use std::time::Duration;

use banking_filter_common::clock::Timestamp;
use banking_filter_common::shared::{SharedStore, Step, StoreError, UpdateError, update};

use crate::config::RemoteJwks;

/// Largest JWKS body accepted; real sets are a few KiB.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// CAS attempts before giving up on a shared-data write for this tick.
const CAS_ATTEMPTS: u32 = 3;

fn endpoint(remote: &RemoteJwks) -> String {
    format!("{}/{}{}", remote.cluster, remote.authority, remote.path)
}

/// Shared-data key of the last good set.
pub fn record_key(remote: &RemoteJwks) -> String {
    format!("jwt-auth/jwks/{}", endpoint(remote))
}

/// Shared-data key of the fetch marker.
pub fn marker_key(remote: &RemoteJwks) -> String {
    format!("jwt-auth/jwks-fetch/{}", endpoint(remote))
}

/// A fetched JWKS as kept in shared data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksRecord {
    pub fetched_at: Timestamp,
    pub body: Vec<u8>,
}

impl JwksRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("jwks1 {}\n", self.fetched_at.unix_millis()).into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<JwksRecord> {
        let (fetched_at, body) = Self::split(bytes)?;
        Some(JwksRecord {
            fetched_at,
            body: body.to_vec(),
        })
    }

    /// The `fetched_at` line and the body, without copying the body.
    fn split(bytes: &[u8]) -> Option<(Timestamp, &[u8])> {
        let newline = bytes.iter().position(|b| *b == b'\n')?;
        let head = std::str::from_utf8(bytes.get(..newline)?).ok()?;
        let millis: u64 = head.strip_prefix("jwks1 ")?.parse().ok()?;
        Some((
            Timestamp(millis.saturating_mul(1_000_000)),
            bytes.get(newline + 1..)?,
        ))
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

    pub fn encode(&self) -> Vec<u8> {
        format!(
            "fetch1 {} {} {}",
            self.owner,
            self.until.unix_millis(),
            self.attempted_at.unix_millis()
        )
        .into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<FetchMarker> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.strip_prefix("fetch1 ")?.split(' ');
        let mut next = || parts.next().and_then(|p| p.parse::<u64>().ok());
        let (owner, until, attempted) = (next()?, next()?, next()?);
        let ms = |m: u64| Timestamp(m.saturating_mul(1_000_000));
        Some(FetchMarker {
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
    let Some(fetched_at) = fetched_at else {
        return true;
    };
    let refresh_at = fetched_at.plus(remote.cache_duration.mul_f64(0.9));
    if now >= refresh_at {
        return true;
    }
    unknown_kid_seen
        && now >= fetched_at.plus(remote.min_refetch_interval)
        && last_attempt.is_none_or(|a| now >= a.plus(remote.min_refetch_interval))
}

/// Reads the last good set; an unreadable record counts as none.
pub fn read_record<S: SharedStore + ?Sized>(store: &S, remote: &RemoteJwks) -> Option<JwksRecord> {
    match store.get(&record_key(remote)) {
        Ok((Some(bytes), _)) => JwksRecord::decode(&bytes),
        _ => None,
    }
}

/// Reads the last good set if it was fetched after `installed` (any set when nothing is
/// installed). Looks at the `fetched_at` line first, so a request that finds the set it
/// already has costs one shared-data read and no JWKS parse.
pub fn read_newer_record<S: SharedStore + ?Sized>(
    store: &S,
    remote: &RemoteJwks,
    installed: Option<Timestamp>,
) -> Option<JwksRecord> {
    let Ok((Some(bytes), _)) = store.get(&record_key(remote)) else {
        return None;
    };
    let (fetched_at, body) = JwksRecord::split(&bytes)?;
    if installed.is_some_and(|mine| fetched_at <= mine) {
        return None;
    }
    Some(JwksRecord {
        fetched_at,
        body: body.to_vec(),
    })
}

/// Reads the fetch marker.
pub fn read_marker<S: SharedStore + ?Sized>(store: &S, remote: &RemoteJwks) -> Option<FetchMarker> {
    match store.get(&marker_key(remote)) {
        Ok((Some(bytes), _)) => FetchMarker::decode(&bytes),
        _ => None,
    }
}

/// Creates the marker as free if it does not exist yet (see the module notes).
pub fn ensure_marker<S: SharedStore + ?Sized>(
    store: &S,
    remote: &RemoteJwks,
) -> Result<(), StoreError> {
    let key = marker_key(remote);
    if store.get(&key)?.0.is_none() {
        store.set(&key, &FetchMarker::FREE.encode(), None)?;
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
            .and_then(FetchMarker::decode)
            .unwrap_or(FetchMarker::FREE);
        if now < marker.until {
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
        |current| match current.and_then(FetchMarker::decode) {
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

/// Publishes a freshly fetched set unless a newer one is already there.
pub fn publish<S: SharedStore + ?Sized>(
    store: &S,
    remote: &RemoteJwks,
    record: &JwksRecord,
) -> Result<bool, UpdateError> {
    update(
        store,
        &record_key(remote),
        CAS_ATTEMPTS,
        |current| match current.and_then(JwksRecord::decode) {
            Some(existing) if existing.fetched_at >= record.fetched_at => Step::Keep(false),
            _ => Step::Write(record.encode(), true),
        },
    )
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

    fn remote() -> RemoteJwks {
        RemoteJwks {
            cluster: "outbound|443||idp.bank.svc.cluster.local".into(),
            authority: "idp.bank.svc.cluster.local".into(),
            path: "/jwks.json".into(),
            timeout: Duration::from_secs(5),
            cache_duration: Duration::from_secs(600),
            min_refetch_interval: Duration::from_secs(30),
            retry_interval: Duration::from_secs(5),
        }
    }

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_unix_seconds(secs)
    }

    #[test]
    fn keys_name_the_endpoint() {
        assert_eq!(
            record_key(&remote()),
            "jwt-auth/jwks/outbound|443||idp.bank.svc.cluster.local/idp.bank.svc.cluster.local/jwks.json"
        );
        assert!(marker_key(&remote()).starts_with("jwt-auth/jwks-fetch/outbound|443||"));
    }

    #[test]
    fn record_and_marker_round_trip() {
        let r = JwksRecord {
            fetched_at: Timestamp::from_unix_seconds(1234),
            body: b"{\"keys\":[]}\n".to_vec(),
        };
        assert_eq!(JwksRecord::decode(&r.encode()), Some(r));
        assert_eq!(JwksRecord::decode(b"garbage"), None);
        let m = FetchMarker {
            owner: 42,
            until: t(10),
            attempted_at: t(5),
        };
        assert_eq!(FetchMarker::decode(&m.encode()), Some(m));
        assert_eq!(FetchMarker::decode(b"fetch1 x"), None);
    }

    #[test]
    fn fetch_is_due_without_a_set_and_near_expiry() {
        let r = remote();
        assert!(fetch_due(&r, None, None, false, t(1000)));
        assert!(!fetch_due(&r, Some(t(1000)), None, false, t(1539)));
        assert!(fetch_due(&r, Some(t(1000)), None, false, t(1540)));
    }

    #[test]
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

    #[test]
    fn one_vm_at_a_time_takes_the_marker() {
        let store = MemoryStore::new();
        let r = remote();
        ensure_marker(&store, &r).unwrap();
        assert!(try_take(&store, &r, 1, t(100), Duration::from_secs(6)));
        assert!(!try_take(&store, &r, 2, t(101), Duration::from_secs(6)));
        // An abandoned marker frees itself when its hold runs out.
        assert!(try_take(&store, &r, 2, t(106), Duration::from_secs(6)));
        let m = read_marker(&store, &r).unwrap();
        assert_eq!((m.owner, m.until, m.attempted_at), (2, t(112), t(106)));
    }

    #[test]
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

    #[test]
    fn ensure_marker_keeps_an_existing_marker() {
        let store = MemoryStore::new();
        let r = remote();
        ensure_marker(&store, &r).unwrap();
        assert!(try_take(&store, &r, 1, t(100), Duration::from_secs(6)));
        ensure_marker(&store, &r).unwrap();
        assert_eq!(read_marker(&store, &r).unwrap().owner, 1);
    }

    #[test]
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
        assert_eq!(publish(&store, &r, &newer), Ok(true));
        assert_eq!(publish(&store, &r, &older), Ok(false));
        assert_eq!(read_record(&store, &r).unwrap().body, b"new");
    }

    #[test]
    fn only_a_newer_shared_set_is_read_back() {
        let store = MemoryStore::new();
        let r = remote();
        assert_eq!(read_newer_record(&store, &r, None), None);
        let record = JwksRecord {
            fetched_at: t(200),
            body: b"{}".to_vec(),
        };
        publish(&store, &r, &record).unwrap();
        assert_eq!(read_newer_record(&store, &r, None), Some(record.clone()));
        assert_eq!(read_newer_record(&store, &r, Some(t(100))), Some(record));
        assert_eq!(read_newer_record(&store, &r, Some(t(200))), None);
        assert_eq!(read_newer_record(&store, &r, Some(t(300))), None);
    }

    #[test]
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
