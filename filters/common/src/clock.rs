//! Time as the cores see it: a plain timestamp passed in, never read from a global clock,
//! so decisions are testable and the harness's virtual clock drives them. Wall-clock time
//! ([`Timestamp`]) is for timestamps; [`Monotonic`] is for intervals and rate arithmetic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_unix_seconds(seconds: u64) -> Timestamp {
        Timestamp(seconds.saturating_mul(1_000_000_000))
    }

    pub fn from_system_time(t: SystemTime) -> Timestamp {
        let nanos = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Timestamp(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    pub fn unix_seconds(self) -> u64 {
        self.0 / 1_000_000_000
    }

    pub fn unix_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Time on a monotonic clock, in nanoseconds from an arbitrary origin: for intervals and
/// rates (a wall clock can step backwards; this one cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Monotonic(pub u64);

impl Monotonic {
    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Monotonic) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// The host's wall clock (Envoy's, or the harness's virtual clock): for timestamps and
/// token lifetimes. An error rather than a made-up time: a filter that cannot tell the time
/// cannot check an expiry, and must fail closed.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub fn now() -> Result<Timestamp, crate::host::HostError> {
    crate::host::wall_clock_nanos().map(Timestamp)
}

/// The host's monotonic clock (WASI `clock_time_get`, monotonic id).
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub fn monotonic() -> Result<Monotonic, crate::host::HostError> {
    crate::host::monotonic_nanos().map(Monotonic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn arithmetic_saturates_instead_of_overflowing() {
        let t = Timestamp::from_unix_seconds(10);
        assert_eq!(t.plus(Duration::from_secs(5)).unix_seconds(), 15);
        assert_eq!(
            Timestamp(u64::MAX).plus(Duration::from_secs(1)),
            Timestamp(u64::MAX)
        );
        assert_eq!(t.since(Timestamp::from_unix_seconds(20)), Duration::ZERO);
        assert_eq!(
            Timestamp::from_unix_seconds(20).since(t),
            Duration::from_secs(10)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn converts_from_system_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(Timestamp::from_system_time(t).unix_millis(), 1500);
        // wasm32 cannot represent times before the epoch at all.
        if let Some(before) = UNIX_EPOCH.checked_sub(Duration::from_secs(1)) {
            assert_eq!(Timestamp::from_system_time(before), Timestamp(0));
        }
    }
}
