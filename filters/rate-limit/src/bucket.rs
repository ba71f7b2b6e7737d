//! One key's bucket: the generic cell rate algorithm (GCRA), a token bucket kept as a single
//! number.
//!
//! # Why GCRA
//! A bucket is shared by every worker of the proxy through one shared-data entry updated by
//! compare-and-swap, so its whole state must be one value that one CAS replaces. GCRA's state
//! is one timestamp, the *theoretical arrival time* (TAT): when the bucket will be full
//! again. A token bucket needs a level and the time it was last refilled, which packed in one
//! value is the same thing with more arithmetic. A TAT also needs no timer: refill is the
//! passing of time. And a bucket whose TAT is in the past is full, so its slot can go to
//! another key: the slot table reclaims it without losing anything.
//!
//! # The arithmetic
//! With `T = window / quota` (the emission interval) and `burst` requests allowed at once, a
//! request at `now` against TAT `tat` moves it to `max(tat, now) + T`; it is allowed if that
//! is at most `now + burst × T`. What remains is how many more fit now; the bucket is full
//! again at the new TAT. Times are nanoseconds of the proxy's monotonic clock, the same clock
//! for every worker of one Envoy process.

use std::time::Duration;

/// A limit's rate: `quota` requests per `window`, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    quota: u32,
    window_s: u64,
    burst: u32,
    /// `window / quota`, nanoseconds.
    interval_ns: u64,
}

/// What charging one request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed: the bucket's new TAT, what remains, and when the bucket is full again.
    Allowed {
        tat_ns: u64,
        remaining: u32,
        full_in_ns: u64,
    },
    /// Over the limit: nothing charged. The next request fits in `retry_in_ns`.
    Limited { retry_in_ns: u64, full_in_ns: u64 },
}

impl Rate {
    /// `quota` and `burst` at least 1, `window` at least a second (the config checks).
    pub fn new(quota: u32, window: Duration, burst: u32) -> Rate {
        let quota = quota.max(1);
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Rate {
            quota,
            window_s: window.as_secs(),
            burst: burst.clamp(1, quota),
            // Rounded up: never more than `quota` a window.
            interval_ns: window_ns.div_ceil(u64::from(quota)).max(1),
        }
    }

    pub fn quota(&self) -> u32 {
        self.quota
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    pub fn window_seconds(&self) -> u64 {
        self.window_s
    }

    /// Charges one request at `now_ns` to a bucket whose TAT is `tat_ns` (`None`: a bucket
    /// never used, or idle long enough to be full).
    pub fn charge(&self, tat_ns: Option<u64>, now_ns: u64) -> Verdict {
        let capacity = self.capacity_ns();
        let start = self.settle(tat_ns.unwrap_or(now_ns), now_ns).max(now_ns);
        let new_tat = start.saturating_add(self.interval_ns);
        // How far ahead of now the bucket would be; measured from now, never as an absolute
        // time minus the capacity, which a clock younger than a window would underflow.
        let ahead = new_tat - now_ns;
        if ahead > capacity {
            return Verdict::Limited {
                retry_in_ns: ahead - capacity,
                full_in_ns: start - now_ns,
            };
        }
        let room = (capacity - ahead) / self.interval_ns;
        Verdict::Allowed {
            tat_ns: new_tat,
            remaining: u32::try_from(room).unwrap_or(u32::MAX).min(self.burst - 1),
            full_in_ns: ahead,
        }
    }

    /// The TAT after giving back one request charged earlier: a charge moved it forward by
    /// at least one interval, so taking one off never hands out more than was charged.
    pub fn refund(&self, tat_ns: u64, now_ns: u64) -> u64 {
        self.settle(tat_ns, now_ns).saturating_sub(self.interval_ns)
    }

    /// How far ahead of now a bucket of this rate can be: `burst` intervals.
    fn capacity_ns(&self) -> u64 {
        self.interval_ns.saturating_mul(u64::from(self.burst))
    }

    /// A stored TAT no further ahead than this rate allows. Only a TAT written under an older,
    /// slower rate is further ahead (a config push that kept the limit's buckets): it then
    /// counts as an empty bucket of the new rate, not as a day of refusals. The store writes
    /// the settled TAT back even when it refuses, so the bucket refills from there.
    pub fn settle(&self, tat_ns: u64, now_ns: u64) -> u64 {
        tat_ns.min(now_ns.saturating_add(self.capacity_ns()))
    }
}

/// A TAT as stored in a slot: 8 bytes, big-endian.
pub fn encode_tat(tat_ns: u64) -> Vec<u8> {
    tat_ns.to_be_bytes().to_vec()
}

/// `None` for bytes that are not a stored TAT.
pub fn decode_tat(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

/// Whole seconds, rounded up: a client told to wait never comes back early.
pub fn ceil_seconds(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    const S: u64 = 1_000_000_000;

    /// Charges `n` requests at `now`, threading the TAT; how many were allowed.
    fn run(rate: &Rate, tat: &mut Option<u64>, now: u64, n: u32) -> u32 {
        let mut allowed = 0;
        for _ in 0..n {
            if let Verdict::Allowed { tat_ns, .. } = rate.charge(*tat, now) {
                *tat = Some(tat_ns);
                allowed += 1;
            }
        }
        allowed
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_burst_then_one_per_interval() {
        // 10 per minute, 3 at once: one every 6 s after the burst.
        let rate = Rate::new(10, Duration::from_secs(60), 3);
        let mut tat = None;
        let t0 = 1_000 * S;
        assert_eq!(run(&rate, &mut tat, t0, 5), 3);
        assert_eq!(run(&rate, &mut tat, t0 + 5 * S, 1), 0);
        assert_eq!(run(&rate, &mut tat, t0 + 6 * S, 2), 1);
        // Idle for a minute: full again, a whole burst.
        assert_eq!(run(&rate, &mut tat, t0 + 70 * S, 5), 3);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn remaining_and_times_count_down() {
        let rate = Rate::new(10, Duration::from_secs(60), 3);
        let t0 = 1_000 * S;
        let first = rate.charge(None, t0);
        assert_eq!(
            first,
            Verdict::Allowed {
                tat_ns: t0 + 6 * S,
                remaining: 2,
                full_in_ns: 6 * S
            }
        );
        let Verdict::Allowed { tat_ns, .. } = first else {
            unreachable!()
        };
        let second = rate.charge(Some(tat_ns), t0);
        assert!(
            matches!(second, Verdict::Allowed { remaining: 1, full_in_ns, .. } if full_in_ns == 12 * S)
        );
        let full = rate.charge(Some(t0 + 18 * S), t0);
        assert_eq!(
            full,
            Verdict::Limited {
                retry_in_ns: 6 * S,
                full_in_ns: 18 * S
            }
        );
        assert_eq!(ceil_seconds(6 * S), 6);
        assert_eq!(ceil_seconds(6 * S + 1), 7);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn over_any_span_no_more_than_rate_times_span_plus_burst() {
        let rate = Rate::new(7, Duration::from_secs(3), 4);
        let mut tat = None;
        let mut allowed = 0u64;
        let t0 = 50 * S;
        // A request every 10 ms for 30 s.
        for step in 0..3_000u64 {
            allowed += u64::from(run(&rate, &mut tat, t0 + step * 10_000_000, 1));
        }
        // 7 per 3 s over 30 s, plus the burst.
        assert!(allowed <= 70 + 4, "{allowed}");
        assert!(allowed >= 70, "{allowed}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_refund_gives_back_exactly_one_request() {
        let rate = Rate::new(2, Duration::from_secs(10), 2);
        let t0 = 100 * S;
        let mut tat = None;
        assert_eq!(run(&rate, &mut tat, t0, 2), 2);
        tat = tat.map(|t| rate.refund(t, t0));
        assert_eq!(run(&rate, &mut tat, t0, 2), 1);
        // A refund on a bucket idle since: it stays full, never more than full.
        let idle = rate.refund(t0 - 60 * S, t0);
        assert_eq!(run(&rate, &mut Some(idle), t0, 3), 2);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_clock_younger_than_the_window_counts_the_same() {
        // Envoy's monotonic clock may be minutes old when a limit's window is a day.
        let rate = Rate::new(5, Duration::from_secs(3600), 5);
        let mut tat = None;
        assert!(matches!(
            rate.charge(None, S),
            Verdict::Allowed { remaining: 4, .. }
        ));
        assert_eq!(run(&rate, &mut tat, S, 7), 5);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_bucket_from_a_slower_rate_counts_as_empty_under_the_new_one() {
        // One a day, then pushed to ten a minute: the old TAT is a day ahead.
        let old = Rate::new(1, Duration::from_secs(86_400), 1);
        let t0 = 1_000 * S;
        let Verdict::Allowed { tat_ns, .. } = old.charge(None, t0) else {
            unreachable!()
        };
        let new = Rate::new(10, Duration::from_secs(60), 10);
        // Empty under the new rate: the next request fits one interval (6 s) later.
        assert_eq!(
            new.charge(Some(tat_ns), t0),
            Verdict::Limited {
                retry_in_ns: 6 * S,
                full_in_ns: 60 * S
            }
        );
        // Written back settled, it refills at the new rate.
        let settled = new.settle(tat_ns, t0);
        assert_eq!(settled, t0 + 60 * S);
        assert!(matches!(
            new.charge(Some(settled), t0 + 6 * S),
            Verdict::Allowed { .. }
        ));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_stored_tat_round_trips_and_odd_bytes_are_none() {
        assert_eq!(decode_tat(&encode_tat(123_456_789)), Some(123_456_789));
        assert_eq!(decode_tat(b"short"), None);
        assert_eq!(decode_tat(&[0; 9]), None);
    }
}
