//! `mode: enforce | dryRun`, the same in every enforcing filter: like Istio's
//! AuthorizationPolicy `DRY_RUN`, a filter in dry-run never refuses a request. It counts
//! what it would have refused (`banking_<filter>_would_deny_<reason>`), logs each reason at
//! most once per [`WouldDenyLog::INTERVAL`], records the would-be refusal in filter state
//! (`banking.decision.would_deny`) for the audit log, and lets the request through. What a
//! filter does to protect the upstream besides refusing (stripping spoofable headers) it
//! still does.

use serde::Deserialize;
use std::time::Duration;

/// `mode` in a filter's config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Refuse what the policy refuses (the default).
    #[default]
    Enforce,
    /// Never refuse: count, log and record what would have been refused.
    DryRun,
}

impl Mode {
    pub fn is_dry_run(self) -> bool {
        self == Mode::DryRun
    }
}

/// When each would-be refusal reason was last logged, so that a dry run over real traffic
/// logs each reason once per interval instead of once per request.
#[derive(Debug, Default)]
pub struct WouldDenyLog {
    /// (reason, last logged at, monotonic milliseconds).
    last: Vec<(&'static str, u64)>,
}

impl WouldDenyLog {
    /// At most one log line per reason per minute.
    pub const INTERVAL: Duration = Duration::from_secs(60);

    /// Whether `reason` should be logged at `now_ms` (monotonic); if so, remembers it.
    pub fn should_log(&mut self, reason: &'static str, now_ms: u64) -> bool {
        let interval = u64::try_from(Self::INTERVAL.as_millis()).unwrap_or(u64::MAX);
        match self.last.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, at)) if now_ms.saturating_sub(*at) < interval => false,
            Some((_, at)) => {
                *at = now_ms;
                true
            }
            None => {
                self.last.push((reason, now_ms));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn mode_reads_its_two_spellings_and_defaults_to_enforce() {
        assert_eq!(
            crate::config::parse::<Mode>(br#""dryRun""#).unwrap(),
            Mode::DryRun
        );
        assert_eq!(
            crate::config::parse::<Mode>(br#""enforce""#).unwrap(),
            Mode::Enforce
        );
        assert!(crate::config::parse::<Mode>(br#""DRY_RUN""#).is_err());
        assert_eq!(Mode::default(), Mode::Enforce);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn each_reason_is_logged_once_per_interval() {
        let mut log = WouldDenyLog::default();
        assert!(log.should_log("missing-token", 1_000));
        assert!(!log.should_log("missing-token", 1_001));
        assert!(log.should_log("invalid-path", 1_002));
        assert!(!log.should_log("missing-token", 60_999));
        assert!(log.should_log("missing-token", 61_000));
        assert!(!log.should_log("invalid-path", 60_000));
    }
}
