//! Counters, gauges and histograms: defined once by name when the plugin is configured,
//! updated by handle, and never a reason to fail a request.
//!
//! Every name is `banking_<filter>_<what>` (e.g. `banking_headers_allowed`). Envoy takes the
//! part before the first `_` as the Prometheus namespace of a Wasm-defined metric, so all
//! our filters' counters appear under `banking_` with no `envoy_` prefix on `/stats/prometheus`
//! (in `/stats` they read `wasmcustom.banking_...`). Under Istio, expose them with
//! `proxyStatsMatcher.inclusionPrefixes: ["wasmcustom.banking_"]` if your mesh filters stats.

/// Namespace shared by every filter's counters.
pub const NAMESPACE: &str = "banking";

/// `banking_<filter>_<what>`.
pub fn metric_name(filter: &str, what: &str) -> String {
    format!("{NAMESPACE}_{filter}_{what}")
}

/// A closed set of outcomes with one counter each, e.g. "allowed", "rejected_missing_header".
pub trait Outcome: Copy + 'static {
    /// Every outcome, in a fixed order.
    const ALL: &'static [Self];
    /// The counter's name suffix: lowercase, digits and `_`.
    fn suffix(self) -> &'static str;
}

/// The counter names of an outcome family, in `O::ALL` order.
pub fn outcome_names<O: Outcome>(filter: &str) -> Vec<String> {
    O::ALL
        .iter()
        .map(|o| metric_name(filter, o.suffix()))
        .collect()
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub use host::{Counter, Gauge, Histogram, OutcomeCounters};

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
mod host {
    use super::{Outcome, metric_name};
    use crate::host::{self, MetricType};
    use std::marker::PhantomData;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// One warning per VM when the host refuses metrics, not one per counter.
    static REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

    /// A counter defined in the host. Counters are for watching, not for deciding: one the
    /// host refused to define counts nothing (logged once), and a failed increment is
    /// ignored, because losing a count is better than failing the request it counts.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Counter(Option<u32>);

    impl Counter {
        pub fn define(name: &str) -> Counter {
            Counter(define(MetricType::Counter, name))
        }

        /// Whether the host defined it.
        pub fn is_defined(self) -> bool {
            self.0.is_some()
        }

        pub fn increment(self) {
            self.add(1);
        }

        /// Counts `n` at once (nothing for 0: no hostcall).
        pub fn add(self, n: u64) {
            if let Some(id) = self.0
                && n > 0
            {
                let _ = host::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// A gauge (a level: occupancy, keys held), fail-soft like [`Counter`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Gauge(Option<u32>);

    impl Gauge {
        pub fn define(name: &str) -> Gauge {
            Gauge(define(MetricType::Gauge, name))
        }

        /// Sets the level.
        pub fn set(self, value: u64) {
            if let Some(id) = self.0 {
                let _ = host::record_metric(id, value);
            }
        }

        /// Moves the level by `delta`.
        pub fn add(self, delta: i64) {
            if let Some(id) = self.0 {
                let _ = host::increment_metric(id, delta);
            }
        }
    }

    /// A histogram (a distribution: latencies, sizes), fail-soft like [`Counter`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Histogram(Option<u32>);

    impl Histogram {
        pub fn define(name: &str) -> Histogram {
            Histogram(define(MetricType::Histogram, name))
        }

        pub fn record(self, value: u64) {
            if let Some(id) = self.0 {
                let _ = host::record_metric(id, value);
            }
        }
    }

    /// Defines a metric; a refusal is logged once per VM and leaves the metric counting nothing.
    fn define(kind: MetricType, name: &str) -> Option<u32> {
        match host::define_metric(kind, name) {
            Ok(id) => Some(id),
            Err(e) => {
                if !REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "metric {name} not defined, it and any other refused will count nothing: {e}"
                    );
                }
                None
            }
        }
    }

    /// One counter per outcome of `O`.
    #[derive(Debug, Clone)]
    pub struct OutcomeCounters<O: Outcome> {
        counters: Vec<Counter>,
        _outcome: PhantomData<O>,
    }

    impl<O: Outcome + PartialEq> OutcomeCounters<O> {
        /// Defines `banking_<filter>_<suffix>` for every outcome.
        pub fn define(filter: &str) -> Self {
            OutcomeCounters {
                counters: O::ALL
                    .iter()
                    .map(|o| Counter::define(&metric_name(filter, o.suffix())))
                    .collect(),
                _outcome: PhantomData,
            }
        }

        pub fn increment(&self, outcome: O) {
            if let Some(c) = O::ALL
                .iter()
                .position(|o| *o == outcome)
                .and_then(|i| self.counters.get(i))
            {
                c.increment();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Sample {
        Allowed,
        Rejected,
    }

    impl Outcome for Sample {
        const ALL: &'static [Self] = &[Sample::Allowed, Sample::Rejected];
        fn suffix(self) -> &'static str {
            match self {
                Sample::Allowed => "allowed",
                Sample::Rejected => "rejected",
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn names_share_the_banking_namespace() {
        assert_eq!(metric_name("headers", "allowed"), "banking_headers_allowed");
        assert_eq!(
            outcome_names::<Sample>("jwt"),
            vec!["banking_jwt_allowed", "banking_jwt_rejected"]
        );
    }
}
