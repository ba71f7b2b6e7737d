//! The pure core: which limits apply to a request, whose buckets they charge, and what the
//! request gets. No proxy-wasm here: buckets are a trait ([`Buckets`]), time is passed in.
//!
//! # Check every limit, charge only if all allow
//! A request is charged to each limit that applies, in the configured order, one
//! compare-and-swap per limit. When a later limit refuses it (over its quota, or its bucket
//! cannot be updated and `onContention` is `deny`), the charges already made are given back
//! ([`Buckets::refund`]), so a request refused by one limit burns no quota in another. A
//! refund that cannot be made (its own CAS lost every time) leaves that bucket charged one
//! request too many: the error is on the side of refusing, and it is counted.

use std::net::IpAddr;

use banking_filter_common::headers::{self, HeaderPairs, Lookup};
use banking_filter_common::identity::VerifiedIdentity;
use banking_filter_common::metrics::Outcome;
use banking_filter_common::problem::Problem;
use banking_filter_common::route::{self, PathDefect, Route};
use banking_filter_common::slots::SlotError;

use crate::bucket::{Verdict, ceil_seconds};
use crate::config::{Config, Limit, OnContention, WithoutIdentity};
use crate::key::{self, BucketKey, KeySecret};

/// Where buckets live. The shell's are in shared data ([`crate::store::SlotBuckets`]).
pub trait Buckets {
    /// Charges one request at `now_ns` to `key`'s bucket of `limit`.
    fn charge(&self, limit: &Limit, key: &[u8; 32], now_ns: u64) -> Result<Verdict, SlotError>;
    /// What charging would answer, without charging.
    fn peek(&self, limit: &Limit, key: &[u8; 32], now_ns: u64) -> Result<Verdict, SlotError>;
    /// Gives back one request charged earlier.
    fn refund(&self, limit: &Limit, key: &[u8; 32], now_ns: u64) -> Result<(), SlotError>;
}

/// The header naming a request's banking operation (banking-headers checks its form and its
/// route).
pub const OPERATION_HEADER: &str = "x-banking-operation";

/// Why a request is refused: each reason once, with its status, problem type and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Over a limit.
    RateLimited,
    /// A limit's bucket could not be updated and its `onContention` is `deny`.
    Contended,
    /// A limit keyed by the identity, no verified identity, and `withoutIdentity: deny`.
    IdentityRequired,
    /// A bucket could not be read (the proxy refused a call, or the slot is not ours).
    Unavailable,
}

impl Reason {
    pub fn slug(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate-limited",
            Reason::Contended => "rate-limit-contended",
            Reason::IdentityRequired => "identity-required",
            Reason::Unavailable => "rate-limit-unavailable",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Reason::RateLimited | Reason::Contended => 429,
            Reason::IdentityRequired => 403,
            Reason::Unavailable => 503,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Reason::RateLimited => "Too many requests",
            Reason::Contended => "Too many concurrent requests",
            Reason::IdentityRequired => "A verified identity is required",
            Reason::Unavailable => "Rate limit could not be checked",
        }
    }
}

/// Per-limit outcomes, one counter each (`banking_rate_limit_<outcome>_<limit>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitOutcome {
    Allowed,
    Limited,
    /// Limited, in dry-run: let through.
    WouldLimit,
    ContentionAllowed,
    ContentionDenied,
}

impl Outcome for LimitOutcome {
    const ALL: &'static [LimitOutcome] = &[
        LimitOutcome::Allowed,
        LimitOutcome::Limited,
        LimitOutcome::WouldLimit,
        LimitOutcome::ContentionAllowed,
        LimitOutcome::ContentionDenied,
    ];

    fn suffix(self) -> &'static str {
        match self {
            LimitOutcome::Allowed => "allowed",
            LimitOutcome::Limited => "limited",
            LimitOutcome::WouldLimit => "would_limit",
            LimitOutcome::ContentionAllowed => "contention_allowed",
            LimitOutcome::ContentionDenied => "contention_denied",
        }
    }
}

/// Where a request stands with one limit after it was charged (or refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Index into `Config::limits`.
    pub limit: usize,
    pub remaining: u32,
    /// Seconds until the key's bucket is full again.
    pub reset_s: u64,
}

/// What the request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No limit applies: a bypass path, no limit's route, or an exempt subject.
    Unlimited,
    /// Every limit allowed it (or let it through on contention); `most_restrictive` is the
    /// charged limit with the least remaining, for the response fields.
    Allowed { most_restrictive: Option<Standing> },
    /// Refused by `standing.limit`, nothing charged: 429 with `Retry-After`.
    Limited {
        reason: Reason,
        standing: Standing,
        retry_after_s: u64,
    },
    /// Refused for another reason, by limit `limit`.
    Refused { reason: Reason, limit: usize },
}

/// A decision and what to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub decision: Decision,
    /// (limit index, outcome), in the order limits were checked.
    pub outcomes: Vec<(usize, LimitOutcome)>,
    /// Charges that could not be given back.
    pub refunds_failed: u32,
}

/// The limits a request falls under, before any identity is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applicable {
    /// None: a bypass path or no limit's route.
    None,
    /// Indices into `Config::limits`, in order.
    Limits(Vec<usize>),
    InvalidPath(PathDefect),
}

/// The limits that apply to a request: every limit whose route covers its method and
/// normalised path and, if it lists operations, whose operations include the request's
/// `x-banking-operation`.
pub fn applicable(config: &Config, headers: &HeaderPairs) -> Applicable {
    let raw = match headers::lookup(headers, ":path") {
        Lookup::One(p) => p,
        _ => return Applicable::InvalidPath(PathDefect::Missing),
    };
    let path = match route::normalize(raw, config.routes.matching()) {
        Ok(path) => path,
        Err(defect) => return Applicable::InvalidPath(defect),
    };
    let method = headers::lookup(headers, ":method")
        .single()
        .unwrap_or_default();
    if config.routes.route(method, &path) == Route::Bypass {
        return Applicable::None;
    }
    // Absent or repeated: no operation to tell the limits apart by, so every limit of the
    // route covers it (leaving the header out must not escape a limit).
    let operation = headers::lookup(headers, OPERATION_HEADER).single();
    let case = config.routes.matching().case;
    let limits: Vec<usize> = config
        .limits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.route.covers(method, &path, case))
        .filter(|(_, l)| match operation {
            _ if l.operations.is_empty() => true,
            None => true,
            Some(op) => l.operations.iter().any(|o| o.as_bytes() == op),
        })
        .map(|(i, _)| i)
        .collect();
    if limits.is_empty() {
        Applicable::None
    } else {
        Applicable::Limits(limits)
    }
}

/// Whether deciding on these limits reads the verified identity.
pub fn needs_identity(config: &Config, limits: &[usize]) -> bool {
    !config.exempt_subjects.is_empty()
        || limits
            .iter()
            .filter_map(|i| config.limits.get(*i))
            .any(|l| l.key.needs_identity())
}

/// What the shell reads from the host for [`decide`].
pub struct Request<'a> {
    pub headers: &'a HeaderPairs,
    /// The identity jwt-auth verified, if any (read only when [`needs_identity`]).
    pub identity: Option<&'a VerifiedIdentity>,
    /// The proxy's monotonic clock, nanoseconds.
    pub now_ns: u64,
    /// The proxy's secret slot keys are hashed with.
    pub secret: &'a KeySecret,
}

/// Checks and charges `limits` (from [`applicable`]). `peer` is the connection's peer
/// address, asked for only when a client-address key needs it.
pub fn decide(
    config: &Config,
    limits: &[usize],
    request: &Request<'_>,
    peer: impl FnOnce() -> Option<IpAddr>,
    buckets: &impl Buckets,
) -> Evaluation {
    let mut evaluation = Evaluation {
        decision: Decision::Unlimited,
        outcomes: Vec::with_capacity(limits.len()),
        refunds_failed: 0,
    };
    if let Some(identity) = request.identity
        && let Some(subject) = identity.subject.as_deref()
        && config
            .exempt_subjects
            .iter()
            .any(|e| e.subject == subject && e.issuer == identity.issuer)
    {
        return evaluation;
    }

    // Keys first: a refusal for a missing identity charges nothing.
    let mut peer = Some(peer);
    let mut client_address = None;
    let mut address = |hops: Option<u32>| -> BucketKey {
        if client_address.is_none() {
            let found = hops
                .and_then(|hops| key::forwarded_client(request.headers, hops))
                .or_else(|| peer.take().and_then(|ask| ask()));
            client_address = Some(key::address_key(found));
        }
        client_address.clone().unwrap_or(BucketKey::Proxy)
    };
    let mut keyed: Vec<(usize, [u8; 32])> = Vec::with_capacity(limits.len());
    for &i in limits {
        let Some(limit) = config.limits.get(i) else {
            continue;
        };
        let key = match limit.key {
            crate::config::KeyKind::Proxy => BucketKey::Proxy,
            crate::config::KeyKind::ClientAddress => address(config.trusted_hops),
            kind => match key::identity_key(kind, request.identity) {
                Some(key) => key,
                None => match config.without_identity {
                    WithoutIdentity::ClientAddress => address(config.trusted_hops),
                    WithoutIdentity::Deny => {
                        evaluation.decision = Decision::Refused {
                            reason: Reason::IdentityRequired,
                            limit: i,
                        };
                        return evaluation;
                    }
                },
            },
        };
        keyed.push((i, key.slot_key(request.secret)));
    }

    let mut charged: Vec<(usize, [u8; 32])> = Vec::with_capacity(keyed.len());
    let mut most_restrictive: Option<Standing> = None;
    for (position, &(i, slot_key)) in keyed.iter().enumerate() {
        let Some(limit) = config.limits.get(i) else {
            continue;
        };
        let refusal = match buckets.charge(limit, &slot_key, request.now_ns) {
            Ok(Verdict::Allowed {
                remaining,
                full_in_ns,
                ..
            }) => {
                evaluation.outcomes.push((i, LimitOutcome::Allowed));
                charged.push((i, slot_key));
                let standing = Standing {
                    limit: i,
                    remaining,
                    reset_s: ceil_seconds(full_in_ns),
                };
                if most_restrictive.is_none_or(|m| {
                    (standing.remaining, std::cmp::Reverse(standing.reset_s))
                        < (m.remaining, std::cmp::Reverse(m.reset_s))
                }) {
                    most_restrictive = Some(standing);
                }
                continue;
            }
            Ok(Verdict::Limited {
                retry_in_ns,
                full_in_ns,
            }) => {
                evaluation.outcomes.push((i, LimitOutcome::Limited));
                Decision::Limited {
                    reason: Reason::RateLimited,
                    standing: Standing {
                        limit: i,
                        remaining: 0,
                        reset_s: ceil_seconds(full_in_ns),
                    },
                    retry_after_s: ceil_seconds(retry_in_ns).max(1),
                }
            }
            Err(
                SlotError::Contended { .. } | SlotError::Full { .. } | SlotError::Settling { .. },
            ) => match limit.on_contention {
                OnContention::Allow => {
                    evaluation
                        .outcomes
                        .push((i, LimitOutcome::ContentionAllowed));
                    continue;
                }
                OnContention::Deny => {
                    evaluation
                        .outcomes
                        .push((i, LimitOutcome::ContentionDenied));
                    Decision::Limited {
                        reason: Reason::Contended,
                        standing: Standing {
                            limit: i,
                            remaining: 0,
                            reset_s: 1,
                        },
                        retry_after_s: 1,
                    }
                }
            },
            Err(_) => Decision::Refused {
                reason: Reason::Unavailable,
                limit: i,
            },
        };
        for (j, charged_key) in charged.iter().rev() {
            let refunded = config
                .limits
                .get(*j)
                .is_some_and(|l| buckets.refund(l, charged_key, request.now_ns).is_ok());
            if !refunded {
                evaluation.refunds_failed += 1;
            }
        }
        evaluation.decision = match refusal {
            // A later limit may be out for longer: the client must not be told to come back
            // before every limit would let it through.
            Decision::Limited {
                reason,
                standing,
                retry_after_s,
            } => Decision::Limited {
                reason,
                standing,
                retry_after_s: keyed
                    .get(position + 1..)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|(j, later_key)| {
                        let limit = config.limits.get(*j)?;
                        match buckets.peek(limit, later_key, request.now_ns) {
                            Ok(Verdict::Limited { retry_in_ns, .. }) => {
                                Some(ceil_seconds(retry_in_ns))
                            }
                            _ => None,
                        }
                    })
                    .fold(retry_after_s, u64::max),
            },
            other => other,
        };
        return evaluation;
    }
    evaluation.decision = Decision::Allowed { most_restrictive };
    evaluation
}

/// The problem a refusal answers with: its type, the limit's name (never the key), and
/// what the client can do.
pub fn problem(config: &Config, reason: Reason, limit: usize, retry_after_s: u64) -> Problem {
    let Some(limit) = config.limits.get(limit) else {
        return Problem::new(reason.status(), reason.slug(), reason.title(), "");
    };
    let detail = match reason {
        Reason::RateLimited => format!(
            "limit {} allows {} requests per {} s; retry after {retry_after_s} s",
            limit.name,
            limit.rate.quota(),
            limit.rate.window_seconds()
        ),
        Reason::Contended => format!(
            "limit {} could not be checked under concurrent requests; retry after {retry_after_s} s",
            limit.name
        ),
        Reason::IdentityRequired => format!(
            "limit {} counts requests per {} and no verified identity of the request names one",
            limit.name,
            limit.key.as_str()
        ),
        Reason::Unavailable => format!("the state of limit {} could not be read", limit.name),
    };
    Problem::new(reason.status(), reason.slug(), reason.title(), detail).with_limit(&limit.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SlotBuckets;
    use banking_filter_common::shared::MemoryStore;
    use std::cell::Cell;
    use wasm_bindgen_test::wasm_bindgen_test;

    const S: u64 = 1_000_000_000;
    const SECRET: KeySecret = [9; 32];

    fn config(extra: &str) -> Config {
        Config::from_json(
            format!(
                r#"{{"instance":"rl","limits":[
                {{"name":"payment_create","pathPrefix":"/payments","methods":["POST"],"operations":["payment.create"],"key":"customer","quota":10,"window":"1m","burst":3}},
                {{"name":"payments_proxy","pathPrefix":"/payments","key":"proxy","quota":5,"window":"1h"}}
            ],"bypassPaths":[{{"exact":"/payments/health"}}]{extra}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn headers(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        [(":method", method), (":path", path)]
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn customer(id: &str) -> VerifiedIdentity {
        VerifiedIdentity {
            issuer: "https://idp.bank.example".into(),
            subject: Some(format!("user-{id}")),
            customer: Some(id.into()),
            ..VerifiedIdentity::default()
        }
    }

    struct World {
        config: Config,
        store: MemoryStore,
    }

    impl World {
        fn new(extra: &str) -> World {
            World {
                config: config(extra),
                store: MemoryStore::new(),
            }
        }

        fn send(
            &self,
            headers: &HeaderPairs,
            identity: Option<&VerifiedIdentity>,
            now_ns: u64,
        ) -> Evaluation {
            let limits = match applicable(&self.config, headers) {
                Applicable::Limits(l) => l,
                other => panic!("{other:?}"),
            };
            let on_event = |_| {};
            let buckets = SlotBuckets {
                store: &self.store,
                on_event: &on_event,
            };
            let request = Request {
                headers,
                identity,
                now_ns,
                secret: &SECRET,
            };
            decide(&self.config, &limits, &request, || None, &buckets)
        }
    }

    fn payment() -> Vec<(String, Vec<u8>)> {
        headers("POST", "/payments", &[(OPERATION_HEADER, "payment.create")])
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_limit_whose_route_and_operation_match_applies() {
        let config = config("");
        assert_eq!(
            applicable(&config, &payment()),
            Applicable::Limits(vec![0, 1])
        );
        // Same route, another operation: only the proxy-wide limit.
        let read = headers("POST", "/payments", &[(OPERATION_HEADER, "payment.read")]);
        assert_eq!(applicable(&config, &read), Applicable::Limits(vec![1]));
        // No operation, or two: no escaping the payment limit.
        let none = headers("POST", "/payments", &[]);
        assert_eq!(applicable(&config, &none), Applicable::Limits(vec![0, 1]));
        let two = headers(
            "POST",
            "/payments",
            &[
                (OPERATION_HEADER, "payment.read"),
                (OPERATION_HEADER, "payment.read"),
            ],
        );
        assert_eq!(applicable(&config, &two), Applicable::Limits(vec![0, 1]));
        // Any spelling of the route is the route.
        let spelled = headers(
            "post",
            "/P%61YMENTS/",
            &[(OPERATION_HEADER, "payment.create")],
        );
        assert_eq!(
            applicable(&config, &spelled),
            Applicable::Limits(vec![0, 1])
        );
        assert_eq!(
            applicable(&config, &headers("GET", "/accounts", &[])),
            Applicable::None
        );
        assert_eq!(
            applicable(&config, &headers("GET", "/payments/health", &[])),
            Applicable::None
        );
        assert_eq!(
            applicable(&config, &headers("GET", "/payments/%2e%2e/x", &[])),
            Applicable::InvalidPath(PathDefect::DotOrEmptySegment)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_customer_gets_its_burst_then_429_with_when_to_retry() {
        let world = World::new("");
        let alice = customer("CUST-1");
        let t0 = 1_000 * S;
        for remaining in [2, 1, 0] {
            let e = world.send(&payment(), Some(&alice), t0);
            let Decision::Allowed {
                most_restrictive: Some(standing),
            } = e.decision
            else {
                panic!("{e:?}");
            };
            assert_eq!((standing.limit, standing.remaining), (0, remaining));
        }
        let e = world.send(&payment(), Some(&alice), t0);
        assert_eq!(
            e.decision,
            Decision::Limited {
                reason: Reason::RateLimited,
                standing: Standing {
                    limit: 0,
                    remaining: 0,
                    reset_s: 18
                },
                retry_after_s: 6
            }
        );
        // Another customer has a bucket of its own.
        let bob = customer("CUST-2");
        assert!(matches!(
            world.send(&payment(), Some(&bob), t0).decision,
            Decision::Allowed { .. }
        ));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_refusal_by_one_limit_burns_no_quota_in_another() {
        // The proxy-wide limit allows 5 an hour; customer limits allow 3 at once each.
        let world = World::new("");
        let t0 = 1_000 * S;
        let alice = customer("CUST-1");
        for _ in 0..3 {
            world.send(&payment(), Some(&alice), t0);
        }
        // Alice's fourth and fifth are refused by her limit: the proxy limit keeps its 2.
        for _ in 0..2 {
            let e = world.send(&payment(), Some(&alice), t0);
            assert!(matches!(e.decision, Decision::Limited { .. }), "{e:?}");
        }
        let bob = customer("CUST-2");
        for _ in 0..2 {
            let e = world.send(&payment(), Some(&bob), t0);
            assert!(matches!(e.decision, Decision::Allowed { .. }), "{e:?}");
        }
        // Now the proxy limit refuses Bob's third: his own charge is given back.
        let e = world.send(&payment(), Some(&bob), t0);
        assert!(
            matches!(e.decision, Decision::Limited { standing, .. } if standing.limit == 1),
            "{e:?}"
        );
        assert_eq!(e.refunds_failed, 0);
        let later = t0 + 720 * S;
        let e = world.send(&payment(), Some(&bob), later);
        let Decision::Allowed {
            most_restrictive: Some(standing),
        } = e.decision
        else {
            panic!("{e:?}");
        };
        // The proxy bucket has refilled one request, which Bob just took: it is the tighter.
        assert_eq!((standing.limit, standing.remaining), (1, 0));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn without_an_identity_a_customer_limit_denies_or_falls_back_to_the_address() {
        let world = World::new("");
        let e = world.send(&payment(), None, S);
        assert_eq!(
            e.decision,
            Decision::Refused {
                reason: Reason::IdentityRequired,
                limit: 0
            }
        );
        assert!(e.outcomes.is_empty(), "nothing charged");

        let world =
            World::new(r#","withoutIdentity":"clientAddress","clientAddress":{"trustedHops":0}"#);
        let from = |ip: &str| {
            let mut h = payment();
            h.push(("x-forwarded-for".into(), ip.as_bytes().to_vec()));
            h
        };
        for _ in 0..3 {
            assert!(matches!(
                world.send(&from("203.0.113.5"), None, S).decision,
                Decision::Allowed { .. }
            ));
        }
        assert!(matches!(
            world.send(&from("203.0.113.5"), None, S).decision,
            Decision::Limited { .. }
        ));
        assert!(matches!(
            world.send(&from("203.0.113.6"), None, S).decision,
            Decision::Allowed { .. }
        ));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_exempt_subject_is_not_limited_or_charged() {
        let world = World::new(
            r#","exemptSubjects":[{"issuer":"https://idp.bank.example","subject":"user-BATCH"}]"#,
        );
        let batch = customer("BATCH");
        for _ in 0..20 {
            let e = world.send(&payment(), Some(&batch), S);
            assert_eq!(e.decision, Decision::Unlimited);
        }
        // The proxy limit was not charged by any of it.
        let alice = customer("CUST-1");
        assert!(matches!(
            world.send(&payment(), Some(&alice), S).decision,
            Decision::Allowed { most_restrictive: Some(s) } if s.limit == 0
        ));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn retry_after_waits_for_every_limit_the_request_falls_under() {
        // Alice spends her 3 payments; the proxy limit (5 an hour, 12 min apart) is then
        // emptied by others. Her refusal by her own limit (6 s) must not send her back
        // before the proxy limit has room (12 min).
        let world = World::new("");
        let t0 = 1_000 * S;
        let alice = customer("CUST-1");
        for _ in 0..3 {
            world.send(&payment(), Some(&alice), t0);
        }
        for id in ["CUST-2", "CUST-3"] {
            world.send(&payment(), Some(&customer(id)), t0);
        }
        let e = world.send(&payment(), Some(&alice), t0);
        let Decision::Limited {
            standing,
            retry_after_s,
            ..
        } = e.decision
        else {
            panic!("{e:?}");
        };
        assert_eq!(standing.limit, 0, "refused by her own limit first");
        assert_eq!(retry_after_s, 720);
    }

    /// Buckets whose every update loses its CAS.
    struct Contended;

    impl Buckets for Contended {
        fn charge(&self, _: &Limit, _: &[u8; 32], _: u64) -> Result<Verdict, SlotError> {
            Err(SlotError::Contended { attempts: 8 })
        }
        fn peek(&self, _: &Limit, _: &[u8; 32], _: u64) -> Result<Verdict, SlotError> {
            Err(SlotError::Contended { attempts: 8 })
        }
        fn refund(&self, _: &Limit, _: &[u8; 32], _: u64) -> Result<(), SlotError> {
            Err(SlotError::Contended { attempts: 8 })
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn on_contention_decides_and_is_counted() {
        let config = config("");
        let alice = customer("CUST-1");
        let h = payment();
        let request = Request {
            headers: &h,
            identity: Some(&alice),
            now_ns: S,
            secret: &SECRET,
        };
        let e = decide(&config, &[0, 1], &request, || None, &Contended);
        assert!(matches!(
            e.decision,
            Decision::Limited {
                reason: Reason::Contended,
                retry_after_s: 1,
                ..
            }
        ));
        assert_eq!(e.outcomes, [(0, LimitOutcome::ContentionDenied)]);

        let config = Config::from_json(
            br#"{"instance":"rl","limits":[{"name":"a","key":"proxy","quota":1,"window":"1s","onContention":"allow"}]}"#,
        )
        .unwrap();
        let e = decide(&config, &[0], &request, || None, &Contended);
        assert_eq!(
            e.decision,
            Decision::Allowed {
                most_restrictive: None
            }
        );
        assert_eq!(e.outcomes, [(0, LimitOutcome::ContentionAllowed)]);
    }

    /// Charges the first limit, loses every CAS on the second and on refunds.
    struct SecondContended {
        charges: Cell<u32>,
    }

    impl Buckets for SecondContended {
        fn charge(&self, _: &Limit, _: &[u8; 32], _: u64) -> Result<Verdict, SlotError> {
            self.charges.set(self.charges.get() + 1);
            if self.charges.get() == 1 {
                Ok(Verdict::Allowed {
                    tat_ns: 2 * S,
                    remaining: 2,
                    full_in_ns: S,
                })
            } else {
                Err(SlotError::Contended { attempts: 8 })
            }
        }
        fn peek(&self, _: &Limit, _: &[u8; 32], _: u64) -> Result<Verdict, SlotError> {
            Err(SlotError::Contended { attempts: 8 })
        }
        fn refund(&self, _: &Limit, _: &[u8; 32], _: u64) -> Result<(), SlotError> {
            Err(SlotError::Contended { attempts: 8 })
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_refund_that_cannot_be_made_is_counted() {
        let config = config("");
        let alice = customer("CUST-1");
        let h = payment();
        let request = Request {
            headers: &h,
            identity: Some(&alice),
            now_ns: S,
            secret: &SECRET,
        };
        let buckets = SecondContended {
            charges: Cell::new(0),
        };
        let e = decide(&config, &[0, 1], &request, || None, &buckets);
        assert_eq!(e.refunds_failed, 1);
        assert_eq!(
            e.outcomes,
            [
                (0, LimitOutcome::Allowed),
                (1, LimitOutcome::ContentionDenied)
            ]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_problem_names_the_limit_never_the_key() {
        let config = config("");
        let p = problem(&config, Reason::RateLimited, 0, 6);
        let body = String::from_utf8(p.to_json()).unwrap();
        assert_eq!(p.status, 429);
        assert!(body.contains(r#""limit":"payment_create""#), "{body}");
        assert!(
            body.contains("urn:banking-filters:problem:rate-limited"),
            "{body}"
        );
        assert!(!body.contains("CUST"), "{body}");
    }
}
