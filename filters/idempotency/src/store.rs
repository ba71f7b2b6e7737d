//! Where records live. [`RecordStore`] is what the shell needs of a store; [`SlotStore`] is
//! the embedded default, Foundation 2's slot table in the proxy's shared data, shared by every
//! worker VM of one proxy. Each operation is one slot-table update (compare-and-swap), so
//! reserving a key is race-free between workers: of two requests reserving one new key at
//! once, one writes the reservation and the other finds it.

use banking_filter_common::shared::SharedStore;
use banking_filter_common::slots::{SlotError, SlotEvent, SlotStep, SlotTable};
use sha2::{Digest, Sha256};

use crate::fingerprint::Fingerprint;
use crate::record::Record;

/// A record's key: SHA-256 over the scope and the client's key, length-prefixed.
pub type RecordKey = [u8; 32];

/// Who a key belongs to and where it was used: the scope of [`record_key`].
pub struct KeyScope<'a> {
    /// `subject` or `customer`.
    pub kind: &'static str,
    /// The issuer, for a subject (unique only within it); empty for a customer.
    pub issuer: &'a str,
    pub owner: &'a str,
    pub method: &'a [u8],
    /// The route's configured name, e.g. `POST /payments`.
    pub route: &'a str,
}

/// The store key of a client's key in `scope`: two callers, two routes or two methods never
/// share a record, and no caller can probe another's keys.
pub fn record_key(scope: &KeyScope<'_>, client_key: &str) -> RecordKey {
    let mut hash = Sha256::new();
    for part in [
        b"banking-idempotency-key-v1".as_slice(),
        scope.kind.as_bytes(),
        scope.issuer.as_bytes(),
        scope.owner.as_bytes(),
        &scope.method.to_ascii_uppercase(),
        scope.route.as_bytes(),
        client_key.as_bytes(),
    ] {
        hash.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

/// What reserving found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The key was free: the reservation is written.
    Reserved,
    /// The key has this live record.
    Existing(Record),
}

/// Why a store operation failed. Every case fails the request closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreFailure {
    /// No room for a new key: every slot it may use holds a live record.
    Full,
    /// The record is not one this filter wrote, or changed under the operation.
    Unexpected(String),
    /// The store could not be reached or refused the call.
    Unavailable(String),
}

/// What the shell needs of a store.
pub trait RecordStore {
    /// Writes `record` (an in-flight reservation) under `key` if the key has no live record;
    /// else returns that record.
    fn reserve(
        &self,
        key: &RecordKey,
        record: &Record,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Reservation, StoreFailure>;
    /// Replaces this request's reservation (same fingerprint) with its outcome.
    fn complete(
        &self,
        key: &RecordKey,
        record: &Record,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreFailure>;
    /// Removes this request's reservation (same fingerprint), so the key can be used again.
    fn release(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        now_ms: u64,
    ) -> Result<(), StoreFailure>;
}

/// Attempts per update before giving up: a CAS is lost only to another worker writing the
/// same key in between.
pub const MAX_ATTEMPTS: u32 = 8;

/// The embedded store: one slot table over the proxy's shared data.
pub struct SlotStore<'a, S: SharedStore + ?Sized> {
    pub table: &'a SlotTable,
    pub store: &'a S,
    /// Told of every slot event, for counters.
    pub on_event: &'a dyn Fn(SlotEvent),
}

fn failure(e: SlotError) -> StoreFailure {
    match e {
        SlotError::Full { .. } | SlotError::Settling { .. } => StoreFailure::Full,
        SlotError::Corrupt { slot } => {
            StoreFailure::Unexpected(format!("slot {slot} is not a record of this filter"))
        }
        other => StoreFailure::Unavailable(format!("{other:?}")),
    }
}

impl<S: SharedStore + ?Sized> SlotStore<'_, S> {
    /// Replaces `key`'s record, if it is this request's reservation, with `value` until
    /// `expires_at_ms`.
    fn replace_own(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        value: Vec<u8>,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), StoreFailure> {
        self.table
            .update(
                self.store,
                key,
                now_ms,
                MAX_ATTEMPTS,
                self.on_event,
                |current| match current.and_then(Record::decode) {
                    Some(Record::InFlight {
                        fingerprint: held, ..
                    }) if held == *fingerprint => SlotStep::Write {
                        value: value.clone(),
                        expires_at_ms,
                        result: Ok(()),
                    },
                    _ => SlotStep::Keep(Err(StoreFailure::Unexpected(
                        "the reservation is gone or not this request's".to_string(),
                    ))),
                },
            )
            .map_err(failure)?
    }
}

impl<S: SharedStore + ?Sized> RecordStore for SlotStore<'_, S> {
    fn reserve(
        &self,
        key: &RecordKey,
        record: &Record,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Reservation, StoreFailure> {
        let value = record.encode();
        self.table
            .update(
                self.store,
                key,
                now_ms,
                MAX_ATTEMPTS,
                self.on_event,
                |current| match current {
                    None => SlotStep::Write {
                        value: value.clone(),
                        expires_at_ms: now_ms.saturating_add(ttl_ms),
                        result: Ok(Reservation::Reserved),
                    },
                    Some(bytes) => {
                        SlotStep::Keep(Record::decode(bytes).map(Reservation::Existing).ok_or_else(
                            || {
                                StoreFailure::Unexpected(
                                    "the key's record is not one this filter wrote".to_string(),
                                )
                            },
                        ))
                    }
                },
            )
            .map_err(failure)?
    }

    fn complete(
        &self,
        key: &RecordKey,
        record: &Record,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreFailure> {
        self.replace_own(
            key,
            record.fingerprint(),
            record.encode(),
            now_ms,
            now_ms.saturating_add(ttl_ms),
        )
    }

    fn release(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        now_ms: u64,
    ) -> Result<(), StoreFailure> {
        // Expired at once: absent for its key from now on, reclaimable after the grace.
        let released = Record::InFlight {
            fingerprint: *fingerprint,
            lease_until_ms: now_ms,
        };
        self.replace_own(key, fingerprint, released.encode(), now_ms, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::StoredResponse;
    use banking_filter_common::shared::MemoryStore;
    use wasm_bindgen_test::wasm_bindgen_test;

    const FP: Fingerprint = [1; 32];
    const DAY: u64 = 86_400_000;

    fn table() -> SlotTable {
        SlotTable::new("idempotency/test", 16, 4, 32, 4096).unwrap()
    }

    fn scope<'a>(owner: &'a str, route: &'a str) -> KeyScope<'a> {
        KeyScope {
            kind: "customer",
            issuer: "",
            owner,
            method: b"POST",
            route,
        }
    }

    fn in_flight(now: u64) -> Record {
        Record::InFlight {
            fingerprint: FP,
            lease_until_ms: now + 60_000,
        }
    }

    fn done() -> Record {
        Record::Completed {
            fingerprint: FP,
            response: StoredResponse {
                status: 201,
                headers: Vec::new(),
                body: Some(b"{}".to_vec()),
            },
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keys_are_scoped_by_owner_route_and_method() {
        let a = record_key(&scope("CUST-1", "POST /payments"), "k-123456");
        assert_eq!(
            a,
            record_key(&scope("CUST-1", "POST /payments"), "k-123456")
        );
        assert_ne!(
            a,
            record_key(&scope("CUST-2", "POST /payments"), "k-123456")
        );
        assert_ne!(
            a,
            record_key(&scope("CUST-1", "POST /transfers"), "k-123456")
        );
        let put = KeyScope {
            method: b"PUT",
            ..scope("CUST-1", "POST /payments")
        };
        assert_ne!(a, record_key(&put, "k-123456"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn reserve_complete_and_release_follow_the_record() {
        let (t, shared) = (table(), MemoryStore::new());
        let events = |_| {};
        let store = SlotStore {
            table: &t,
            store: &shared,
            on_event: &events,
        };
        let key = record_key(&scope("CUST-1", "POST /payments"), "k-123456");
        let now = 1_000_000;
        assert_eq!(
            store.reserve(&key, &in_flight(now), now, DAY),
            Ok(Reservation::Reserved)
        );
        // A second reservation finds the first.
        assert_eq!(
            store.reserve(&key, &in_flight(now + 5), now + 5, DAY),
            Ok(Reservation::Existing(in_flight(now)))
        );
        assert_eq!(store.complete(&key, &done(), now + 10, DAY), Ok(()));
        assert_eq!(
            store.reserve(&key, &in_flight(now + 20), now + 20, DAY),
            Ok(Reservation::Existing(done()))
        );
        // Completing or releasing what is no longer a reservation changes nothing.
        assert!(store.release(&key, &FP, now + 30).is_err());
        assert!(store.complete(&key, &done(), now + 30, DAY).is_err());
        // Past the retention the key is free again.
        assert_eq!(
            store.reserve(&key, &in_flight(now + 10 + DAY), now + 10 + DAY, DAY),
            Ok(Reservation::Reserved)
        );
        // A released reservation frees the key at once for the same key.
        assert_eq!(store.release(&key, &FP, now + 11 + DAY), Ok(()));
        assert_eq!(
            store.reserve(&key, &in_flight(now + 12 + DAY), now + 12 + DAY, DAY),
            Ok(Reservation::Reserved)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_full_table_and_a_foreign_value_fail_closed() {
        let (t, shared) = (
            SlotTable::new("idempotency/tiny", 2, 2, 32, 4096).unwrap(),
            MemoryStore::new(),
        );
        let events = |_| {};
        let store = SlotStore {
            table: &t,
            store: &shared,
            on_event: &events,
        };
        let now = 5_000;
        for owner in ["A", "B"] {
            let key = record_key(&scope(owner, "POST /payments"), "k-123456");
            assert_eq!(
                store.reserve(&key, &in_flight(now), now, DAY),
                Ok(Reservation::Reserved)
            );
        }
        let third = record_key(&scope("C", "POST /payments"), "k-123456");
        assert_eq!(
            store.reserve(&third, &in_flight(now), now, DAY),
            Err(StoreFailure::Full)
        );
    }
}
