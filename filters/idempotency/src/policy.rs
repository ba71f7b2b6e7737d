//! The pure core of the semantics: what a request with a key gets given the key's record,
//! and what becomes of the key once the response is known. Time is passed in; the store is
//! the shell's.
//!
//! | the key's record | same fingerprint | different fingerprint |
//! |---|---|---|
//! | none (or expired) | reserve it (in flight, with a lease) and go upstream | — |
//! | in flight, lease running | 409 `idempotency-request-in-flight`, `Retry-After: 1` | 422 `idempotency-key-reused` |
//! | in flight, lease over | 409 `idempotency-outcome-unknown`: look the payment up | 422 |
//! | completed | replay the stored response, `Idempotent-Replayed: true` | 422 |
//! | completed, body too large to keep | 409 `idempotency-response-not-kept`: look it up | 422 |
//!
//! | the response | the key |
//! |---|---|
//! | not from the upstream (a later filter's local reply, no healthy upstream, a connect failure) | released: nothing was executed |
//! | a retryable status (default 408, 409, 425, 429) | released: the client may try again |
//! | any other 1xx–4xx | stored for the retention |
//! | 5xx, an upstream reset or timeout | stored (`storeServerErrors`, default true, as Stripe: the payment may have executed) or released |

use crate::fingerprint::Fingerprint;
use crate::record::{Record, StoredResponse};

/// What a request with a key gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// No record: write this in-flight record (only if the key is still absent), then go
    /// upstream.
    Reserve(Record),
    /// The same request finished: answer with its response, without the upstream.
    Replay(StoredResponse),
    /// Refused without going upstream.
    Refuse(Conflict),
}

/// Why a repeat is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// The first request is still in flight.
    InFlight,
    /// The first request went upstream and its outcome was never stored.
    OutcomeUnknown,
    /// The first request finished, but its response was too large to keep.
    ResponseNotKept,
    /// The key was used for a different request.
    KeyReused,
}

impl Conflict {
    pub fn slug(self) -> &'static str {
        match self {
            Conflict::InFlight => "idempotency-request-in-flight",
            Conflict::OutcomeUnknown => "idempotency-outcome-unknown",
            Conflict::ResponseNotKept => "idempotency-response-not-kept",
            Conflict::KeyReused => "idempotency-key-reused",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Conflict::KeyReused => 422,
            Conflict::InFlight | Conflict::OutcomeUnknown | Conflict::ResponseNotKept => 409,
        }
    }

    /// `Retry-After` seconds, for the one conflict that ends by itself.
    pub fn retry_after_s(self) -> Option<u64> {
        (self == Conflict::InFlight).then_some(1)
    }

    pub fn detail(self) -> &'static str {
        match self {
            Conflict::InFlight => {
                "a request with this Idempotency-Key is still being processed; retry shortly"
            }
            Conflict::OutcomeUnknown => {
                "a request with this Idempotency-Key reached the payment service but its outcome \
                 was not recorded; look the payment up before trying again with a new key"
            }
            Conflict::ResponseNotKept => {
                "a request with this Idempotency-Key was processed, but its response was too \
                 large to keep; look the payment up"
            }
            Conflict::KeyReused => {
                "this Idempotency-Key was used for a different request; use a new key for a new \
                 payment"
            }
        }
    }
}

/// What a request with `fingerprint` gets at `now_ms` (wall clock) when its key's record is
/// `record` (`None`: absent or past its retention). A reservation's lease ends at
/// `now_ms + lease_ms`.
pub fn admit(
    record: Option<&Record>,
    fingerprint: &Fingerprint,
    now_ms: u64,
    lease_ms: u64,
) -> Admission {
    let Some(record) = record else {
        return Admission::Reserve(Record::InFlight {
            fingerprint: *fingerprint,
            lease_until_ms: now_ms.saturating_add(lease_ms),
        });
    };
    if record.fingerprint() != fingerprint {
        return Admission::Refuse(Conflict::KeyReused);
    }
    match record {
        Record::InFlight { lease_until_ms, .. } if now_ms < *lease_until_ms => {
            Admission::Refuse(Conflict::InFlight)
        }
        Record::InFlight { .. } => Admission::Refuse(Conflict::OutcomeUnknown),
        Record::Completed { response, .. } if response.body.is_none() => {
            Admission::Refuse(Conflict::ResponseNotKept)
        }
        Record::Completed { response, .. } => Admission::Replay(response.clone()),
    }
}

/// How the request ended, as the shell learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The upstream answered with this status.
    Upstream(u16),
    /// The upstream was reached, then reset the stream or timed out: it may have executed.
    UpstreamFailed,
    /// The answer did not come from the upstream (a later filter's local reply, the router's
    /// no-healthy-upstream 503, a connect failure): nothing was executed.
    NotUpstream,
}

/// How the request ended, from Envoy's `response.code_details` for the response the filter
/// saw (`None`: the stream ended with no response at all, e.g. the client reset it after the
/// request went upstream).
///
/// - `via_upstream`: the upstream answered.
/// - `upstream_response_timeout`, or a reset before the response started that is not a
///   connection failure: the upstream had the request and may have executed it.
/// - anything else (`no_healthy_upstream`, a connection failure, a later filter's local
///   reply): nothing reached the upstream.
pub fn ending_of(code_details: Option<&str>, status: u16, sent_upstream: bool) -> Ending {
    match code_details {
        None if sent_upstream => Ending::UpstreamFailed,
        None => Ending::NotUpstream,
        Some("via_upstream") => Ending::Upstream(status),
        Some("upstream_response_timeout") => Ending::UpstreamFailed,
        Some(details)
            if details.starts_with("upstream_reset_before_response_started")
                && !details.contains("connection_failure")
                && !details.contains("connect_") =>
        {
            Ending::UpstreamFailed
        }
        Some(_) => Ending::NotUpstream,
    }
}

/// What becomes of a reserved key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Keep the response for the retention.
    Store,
    /// Remove the reservation: the request may be made again.
    Release,
}

/// The configuration's side of [`settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlePolicy {
    /// Statuses after which the client may retry with the same key (default 408, 409, 425,
    /// 429).
    pub retryable: Vec<u16>,
    /// Keep 5xx answers and upstream failures (default true).
    pub store_server_errors: bool,
}

impl Default for SettlePolicy {
    fn default() -> Self {
        SettlePolicy {
            retryable: vec![408, 409, 425, 429],
            store_server_errors: true,
        }
    }
}

/// The second table of the module notes.
pub fn settle(ending: Ending, policy: &SettlePolicy) -> Settlement {
    match ending {
        Ending::NotUpstream => Settlement::Release,
        Ending::Upstream(status) if policy.retryable.contains(&status) => Settlement::Release,
        Ending::Upstream(status) if status >= 500 && !policy.store_server_errors => {
            Settlement::Release
        }
        Ending::UpstreamFailed if !policy.store_server_errors => Settlement::Release,
        Ending::Upstream(_) | Ending::UpstreamFailed => Settlement::Store,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    const FP: Fingerprint = [1; 32];
    const OTHER: Fingerprint = [2; 32];
    const LEASE: u64 = 60_000;

    fn completed(body: Option<&[u8]>) -> Record {
        Record::Completed {
            fingerprint: FP,
            response: StoredResponse {
                status: 201,
                headers: vec![("content-type".into(), b"application/json".to_vec())],
                body: body.map(<[u8]>::to_vec),
            },
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_row_of_the_request_table() {
        let now = 1_000_000;
        assert_eq!(
            admit(None, &FP, now, LEASE),
            Admission::Reserve(Record::InFlight {
                fingerprint: FP,
                lease_until_ms: now + LEASE
            })
        );
        let in_flight = Record::InFlight {
            fingerprint: FP,
            lease_until_ms: now + 1,
        };
        assert_eq!(
            admit(Some(&in_flight), &FP, now, LEASE),
            Admission::Refuse(Conflict::InFlight)
        );
        assert_eq!(
            admit(Some(&in_flight), &FP, now + 1, LEASE),
            Admission::Refuse(Conflict::OutcomeUnknown)
        );
        assert_eq!(
            admit(Some(&in_flight), &OTHER, now, LEASE),
            Admission::Refuse(Conflict::KeyReused)
        );
        let done = completed(Some(b"{\"id\":42}"));
        let Record::Completed { response, .. } = &done else {
            unreachable!()
        };
        assert_eq!(
            admit(Some(&done), &FP, now, LEASE),
            Admission::Replay(response.clone())
        );
        assert_eq!(
            admit(Some(&done), &OTHER, now, LEASE),
            Admission::Refuse(Conflict::KeyReused)
        );
        assert_eq!(
            admit(Some(&completed(None)), &FP, now, LEASE),
            Admission::Refuse(Conflict::ResponseNotKept)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn conflicts_answer_409_or_422_and_only_in_flight_says_when_to_retry() {
        assert_eq!(Conflict::KeyReused.status(), 422);
        for c in [
            Conflict::InFlight,
            Conflict::OutcomeUnknown,
            Conflict::ResponseNotKept,
        ] {
            assert_eq!(c.status(), 409);
            assert!(c.slug().starts_with("idempotency-"));
        }
        assert_eq!(Conflict::InFlight.retry_after_s(), Some(1));
        assert_eq!(Conflict::OutcomeUnknown.retry_after_s(), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn how_a_request_ended_is_read_from_envoys_code_details() {
        let cases = [
            (Some("via_upstream"), Ending::Upstream(201)),
            (Some("upstream_response_timeout"), Ending::UpstreamFailed),
            (
                Some("upstream_reset_before_response_started{remote_reset}"),
                Ending::UpstreamFailed,
            ),
            (
                Some("upstream_reset_before_response_started{connection_failure}"),
                Ending::NotUpstream,
            ),
            (Some("no_healthy_upstream"), Ending::NotUpstream),
            (
                Some("rbac_access_denied_matched_policy[none]"),
                Ending::NotUpstream,
            ),
            (None, Ending::UpstreamFailed),
        ];
        for (details, ending) in cases {
            assert_eq!(ending_of(details, 201, true), ending, "{details:?}");
        }
        assert_eq!(ending_of(None, 0, false), Ending::NotUpstream);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_row_of_the_response_table() {
        let policy = SettlePolicy::default();
        let cases = [
            (Ending::Upstream(201), Settlement::Store),
            (Ending::Upstream(400), Settlement::Store),
            (Ending::Upstream(402), Settlement::Store),
            (Ending::Upstream(408), Settlement::Release),
            (Ending::Upstream(409), Settlement::Release),
            (Ending::Upstream(425), Settlement::Release),
            (Ending::Upstream(429), Settlement::Release),
            (Ending::Upstream(500), Settlement::Store),
            (Ending::Upstream(503), Settlement::Store),
            (Ending::UpstreamFailed, Settlement::Store),
            (Ending::NotUpstream, Settlement::Release),
        ];
        for (ending, settlement) in cases {
            assert_eq!(settle(ending, &policy), settlement, "{ending:?}");
        }
        let no_5xx = SettlePolicy {
            store_server_errors: false,
            ..SettlePolicy::default()
        };
        assert_eq!(settle(Ending::Upstream(502), &no_5xx), Settlement::Release);
        assert_eq!(settle(Ending::UpstreamFailed, &no_5xx), Settlement::Release);
        assert_eq!(settle(Ending::Upstream(400), &no_5xx), Settlement::Store);
    }
}
