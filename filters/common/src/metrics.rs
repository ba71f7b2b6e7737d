//! Counters: defined once by name when the plugin is configured, incremented by handle.
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
pub use host::{Counter, OutcomeCounters};

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
mod host {
    use super::{Outcome, metric_name};
    use proxy_wasm::hostcalls;
    use proxy_wasm::types::{MetricType, Status};
    use std::marker::PhantomData;

    /// A counter defined in the host. Incrementing never fails a request: a host error is
    /// ignored, because losing a count is better than failing the call it counts.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Counter(u32);

    impl Counter {
        pub fn define(name: &str) -> Result<Counter, Status> {
            hostcalls::define_metric(MetricType::Counter, name).map(Counter)
        }

        pub fn increment(self) {
            let _ = hostcalls::increment_metric(self.0, 1);
        }
    }

    /// One counter per outcome of `O`.
    #[derive(Debug, Clone)]
    pub struct OutcomeCounters<O: Outcome> {
        counters: Vec<Counter>,
        _outcome: PhantomData<O>,
    }

    impl<O: Outcome + PartialEq> OutcomeCounters<O> {
        /// Defines `banking_<filter>_<suffix>` for every outcome; the error names the first
        /// counter the host refused.
        pub fn define(filter: &str) -> Result<Self, String> {
            let counters = O::ALL
                .iter()
                .map(|o| {
                    let name = metric_name(filter, o.suffix());
                    Counter::define(&name).map_err(|s| format!("defining metric {name}: {s:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(OutcomeCounters {
                counters,
                _outcome: PhantomData,
            })
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
