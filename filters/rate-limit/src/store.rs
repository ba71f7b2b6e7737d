//! Buckets in the proxy's shared data: one slot-table entry per key, each update one
//! compare-and-swap, so every worker of the proxy charges the same bucket.

use banking_filter_common::shared::{SharedStore, StoreError};
use banking_filter_common::slots::{CREATE_CAS, SlotError, SlotEvent, SlotStep};

use crate::bucket::{Verdict, decode_tat, encode_tat};
use crate::config::Limit;
use crate::key::KeySecret;
use crate::policy::Buckets;

/// How the key secret is stored: this prefix, then the 32 bytes.
const SECRET_MAGIC: &[u8; 5] = b"BKRS1";

/// The proxy's secret for slot keys (`rate-limit/<instance>/key-secret`): read, or made from
/// `random` and written once with a creation CAS, so that every worker, the VMs of later
/// config pushes included, uses the first one written. `Err` names what went wrong: a value
/// there that is not a secret (another plugin wrote our key) is never overwritten.
pub fn key_secret<S: SharedStore + ?Sized>(
    store: &S,
    name: &str,
    random: impl FnOnce() -> Option<KeySecret>,
) -> Result<KeySecret, String> {
    let parse = |bytes: &[u8]| -> Result<KeySecret, String> {
        bytes
            .strip_prefix(SECRET_MAGIC.as_slice())
            .and_then(|rest| KeySecret::try_from(rest).ok())
            .ok_or_else(|| format!("{name} holds something that is not this filter's key secret"))
    };
    let read = |store: &S| {
        store
            .get(name)
            .map(|(value, _)| value)
            .map_err(|e| format!("{name}: {e:?}"))
    };
    if let Some(bytes) = read(store)? {
        return parse(&bytes);
    }
    let secret = random().ok_or("no randomness for the key secret")?;
    let mut value = SECRET_MAGIC.to_vec();
    value.extend_from_slice(&secret);
    match store.set(name, &value, Some(CREATE_CAS)) {
        Ok(()) => Ok(secret),
        // Another worker wrote first: use its secret.
        Err(StoreError::CasMismatch) => match read(store)? {
            Some(bytes) => parse(&bytes),
            None => Err(format!("{name}: absent after a lost creation")),
        },
        Err(StoreError::Host(e)) => Err(format!("{name}: {e}")),
    }
}

/// Attempts per update before `onContention` decides. A CAS is lost only when another worker
/// wrote the same key between this one's read and write, a window of two shared-data calls
/// (a few microseconds); with the two to four workers of a sidecar or gateway, losing eight
/// in a row means the key is being hammered from every worker at once, which is what the
/// limit is there to stop.
pub const MAX_ATTEMPTS: u32 = 8;

/// The slot tables of every limit over one store.
pub struct SlotBuckets<'a, S: SharedStore + ?Sized> {
    pub store: &'a S,
    /// Told of every slot event (claims, reclaims, collisions, retries), for counters.
    pub on_event: &'a dyn Fn(SlotEvent),
}

fn deadline_ms(tat_ns: u64) -> u64 {
    tat_ns.div_ceil(1_000_000)
}

impl<S: SharedStore + ?Sized> Buckets for SlotBuckets<'_, S> {
    fn charge(&self, limit: &Limit, key: &[u8; 32], now_ns: u64) -> Result<Verdict, SlotError> {
        let rate = limit.rate;
        let corrupt = SlotError::Host(format!("{}: a bucket is not a TAT", limit.name));
        limit
            .table
            .update(
                self.store,
                key,
                now_ns / 1_000_000,
                MAX_ATTEMPTS,
                self.on_event,
                |current| {
                    let stored = match current.map(decode_tat) {
                        None => None,
                        Some(Some(tat)) => Some(tat),
                        Some(None) => return SlotStep::Keep(None),
                    };
                    let settled = stored.map(|tat| rate.settle(tat, now_ns));
                    match rate.charge(settled, now_ns) {
                        verdict @ Verdict::Allowed { tat_ns, .. } => SlotStep::Write {
                            value: encode_tat(tat_ns),
                            expires_at_ms: deadline_ms(tat_ns),
                            result: Some(verdict),
                        },
                        // A bucket from a slower rate, refused: keep it settled, so that it
                        // refills at this rate from now on.
                        verdict @ Verdict::Limited { .. } => match settled {
                            Some(tat) if settled != stored => SlotStep::Write {
                                value: encode_tat(tat),
                                expires_at_ms: deadline_ms(tat),
                                result: Some(verdict),
                            },
                            _ => SlotStep::Keep(Some(verdict)),
                        },
                    }
                },
            )?
            .ok_or(corrupt)
    }

    fn peek(&self, limit: &Limit, key: &[u8; 32], now_ns: u64) -> Result<Verdict, SlotError> {
        let rate = limit.rate;
        limit.table.update(
            self.store,
            key,
            now_ns / 1_000_000,
            MAX_ATTEMPTS,
            self.on_event,
            |current| SlotStep::Keep(rate.charge(current.and_then(decode_tat), now_ns)),
        )
    }

    fn refund(&self, limit: &Limit, key: &[u8; 32], now_ns: u64) -> Result<(), SlotError> {
        let rate = limit.rate;
        limit.table.update(
            self.store,
            key,
            now_ns / 1_000_000,
            MAX_ATTEMPTS,
            self.on_event,
            |current| match current.and_then(decode_tat) {
                Some(tat) => {
                    let refunded = rate.refund(tat, now_ns);
                    SlotStep::Write {
                        value: encode_tat(refunded),
                        expires_at_ms: deadline_ms(refunded),
                        result: (),
                    }
                }
                // Full already (or not ours to read): nothing to give back.
                None => SlotStep::Keep(()),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banking_filter_common::shared::MemoryStore;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn the_first_secret_written_is_everyones_and_a_foreign_value_is_refused() {
        let store = MemoryStore::new();
        let first = key_secret(&store, "rl/key-secret", || Some([1; 32])).unwrap();
        let second = key_secret(&store, "rl/key-secret", || Some([2; 32])).unwrap();
        assert_eq!((first, second), ([1; 32], [1; 32]));
        store.set("other/key-secret", b"planted", None).unwrap();
        assert!(key_secret(&store, "other/key-secret", || Some([3; 32])).is_err());
        assert_eq!(
            store.get("other/key-secret").unwrap().0.unwrap(),
            b"planted"
        );
        assert!(key_secret(&MemoryStore::new(), "x", || None).is_err());
    }
}
