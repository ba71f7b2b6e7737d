//! Buckets in the proxy's shared data: one slot-table entry per key, each update one
//! compare-and-swap, so every worker of the proxy charges the same bucket.

use banking_filter_common::shared::SharedStore;
use banking_filter_common::slots::{SlotError, SlotEvent, SlotStep};

use crate::bucket::{Verdict, decode_tat, encode_tat};
use crate::config::Limit;
use crate::policy::Buckets;

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
                    let tat = match current.map(decode_tat) {
                        None => None,
                        Some(Some(tat)) => Some(tat),
                        Some(None) => return SlotStep::Keep(None),
                    };
                    match rate.charge(tat, now_ns) {
                        verdict @ Verdict::Allowed { tat_ns, .. } => SlotStep::Write {
                            value: encode_tat(tat_ns),
                            expires_at_ms: deadline_ms(tat_ns),
                            result: Some(verdict),
                        },
                        verdict @ Verdict::Limited { .. } => SlotStep::Keep(Some(verdict)),
                    }
                },
            )?
            .ok_or(corrupt)
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
                    let refunded = rate.refund(tat);
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
