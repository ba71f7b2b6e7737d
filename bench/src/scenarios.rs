//! What `make bench` measures, as one table: each row is a chain of filters, the tokens its
//! requests carry, and the row it is compared with. A chain mixes our WasmPlugins (named as
//! in `wasmplugins/`, configured from their shipped `pluginConfig`), the no-op floor filter and
//! Envoy's native filters ([`crate::native`]).
//!
//! The next filter is one entry, its native counterpart another, e.g.
//! `Scenario { name: "rate-limit", chain: &[Step::Plugin("rate-limit")], tokens: REUSED_RS256,
//! rate: Rate::Standard, versus: &["local_ratelimit"] }` beside a row whose chain is
//! `&[Step::Native(&native::LOCAL_RATELIMIT)]`, a [`NativeFilter`] whose `build` returns
//! the `http_filters` entry.

use crate::native::{self, NativeFilter};
use crate::tokens::Alg;

/// Which token each request of a row carries (every row's requests carry one, so all rows
/// parse the same bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// One token on every request: a verified-token cache hits.
    Reused(Alg),
    /// The next of many distinct tokens on every request, more than any cache holds: every
    /// request pays a signature check.
    Distinct(Alg),
    /// A realistic mix ([`crate::mix`]): each request's token drawn from a pool by a seeded
    /// Zipf distribution, the pool sized so a token is used about 20 times over the row's
    /// run; the caches hit most of the time, not always.
    Mix(Alg),
}

impl TokenUse {
    pub fn alg(self) -> Alg {
        match self {
            TokenUse::Reused(alg) | TokenUse::Distinct(alg) | TokenUse::Mix(alg) => alg,
        }
    }

    pub fn label(self) -> String {
        match self {
            TokenUse::Reused(alg) => format!("{} reused", alg.name()),
            TokenUse::Distinct(alg) => format!("{} distinct", alg.name()),
            TokenUse::Mix(alg) => format!("{} Zipf mix", alg.name()),
        }
    }
}

const REUSED_RS256: TokenUse = TokenUse::Reused(Alg::Rs256);
const DISTINCT_RS256: TokenUse = TokenUse::Distinct(Alg::Rs256);
const DISTINCT_PS256: TokenUse = TokenUse::Distinct(Alg::Ps256);
const MIX_RS256: TokenUse = TokenUse::Mix(Alg::Rs256);
const REUSED_ES256: TokenUse = TokenUse::Reused(Alg::Es256);
const DISTINCT_ES256: TokenUse = TokenUse::Distinct(Alg::Es256);

/// What each request of a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// `GET /accounts`, answered by Envoy itself (`direct_response`): no upstream.
    Account,
    /// `POST /payments` with a small JSON body and an `Idempotency-Key`, answered by an
    /// upstream (a second listener of the same Envoy with a direct response, so the hop is
    /// in every payment row alike): the idempotency filter keeps only upstream answers.
    Payment(Keys),
}

/// Which `Idempotency-Key` a payment row's requests carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// The next of a pool that outlasts the bench's retention (see `chain::BENCH_RETENTION`):
    /// every request is a first use (reserve, upstream, store).
    New,
    /// One key on every request: after the first, every request is a replay.
    Same,
}

pub use envoy_runner::redis::WEBDIS_CLUSTER;

/// The fixed request rate a row is measured at. Each is below saturation for every row that
/// uses it; the no-filter row is measured at every rate some row uses, and a row is compared
/// only with rows at its own rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// `--rate` (default 3,000 req/s).
    Standard,
    /// `--light-rate` (default 500 req/s): rows with distinct tokens, where jwt-auth checks a
    /// signature on every request; the slowest (distinct ES256 tokens) costs Envoy about 1 ms
    /// of CPU per request at such rates, so one worker stays near half busy. Also the mixed
    /// rows: their pool is sized from the rate, and at this one it fits the caches, so they
    /// miss on first uses only; at the standard rate it would not, and jwt-auth's signature
    /// checks on the misses would bring it near saturation on one worker.
    Light,
}

/// One filter of a chain.
pub enum Step {
    /// A WasmPlugin of `wasmplugins/`, by name, with its shipped `pluginConfig` (a remote JWKS
    /// is replaced by the bench's keys inline). Several are chained in istiod's order.
    Plugin(&'static str),
    /// `bench/noop-filter`: a proxy-wasm filter that does nothing, the floor of any of ours.
    Noop,
    /// One of Envoy's own filters.
    Native(&'static NativeFilter),
    /// Envoy's own file access log (no filter: the connection manager's `access_log`), one
    /// JSON line per request with the fields of an audit record Envoy knows: the audit-log
    /// filter's native counterpart.
    FileAccessLog,
}

impl Step {
    pub fn label(&self) -> &'static str {
        match self {
            Step::Plugin(name) => name,
            Step::Noop => "no-op wasm",
            Step::Native(filter) => filter.label,
            Step::FileAccessLog => "file access log (JSON)",
        }
    }

    /// The probes this filter refuses and with which status, for the sanity check.
    pub fn refuses(&self) -> &'static [(Probe, u16)] {
        match self {
            Step::Plugin("banking-headers") => &[(Probe::MissingCustomerId, 400)],
            Step::Plugin("jwt-auth") => &[(Probe::TamperedToken, 401), (Probe::OtherCustomer, 403)],
            Step::Plugin(_) | Step::Noop | Step::FileAccessLog => &[],
            Step::Native(filter) => filter.refuses,
        }
    }

    /// Counters and gauges of this filter the notes show at the end of the row: (label,
    /// Envoy's stat name).
    pub fn shown_stats(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Step::Plugin("rate-limit") => &[
                (
                    "rate-limit buckets in use",
                    "wasmcustom.banking_rate_limit_slots_in_use_bench_per_subject",
                ),
                ("claimed", "wasmcustom.banking_rate_limit_slot_claimed"),
                ("reclaimed", "wasmcustom.banking_rate_limit_slot_reclaimed"),
                ("lost CAS", "wasmcustom.banking_rate_limit_slot_retried"),
                (
                    "refused",
                    "wasmcustom.banking_rate_limit_contention_denied_bench_per_subject",
                ),
            ],
            Step::Plugin("idempotency") => &[
                ("reserved", "wasmcustom.banking_idempotency_reserved"),
                ("stored", "wasmcustom.banking_idempotency_stored"),
                ("replayed", "wasmcustom.banking_idempotency_replayed"),
                ("store full", "wasmcustom.banking_idempotency_store_full"),
            ],
            Step::Plugin("idempotency@redis") => &[
                ("reserved", "wasmcustom.banking_idempotency_reserved"),
                ("stored", "wasmcustom.banking_idempotency_stored"),
                ("replayed", "wasmcustom.banking_idempotency_replayed"),
                (
                    "store unavailable",
                    "wasmcustom.banking_idempotency_store_unavailable",
                ),
                (
                    "Webdis calls",
                    "cluster.outbound|7379||webdis.payments.svc.cluster.local.upstream_rq_total",
                ),
            ],
            Step::Plugin("audit-log") => &[
                (
                    "records written",
                    "wasmcustom.banking_audit_log_records_written",
                ),
                ("shipped", "wasmcustom.banking_audit_log_records_shipped"),
                ("dropped", "wasmcustom.banking_audit_log_records_dropped"),
                (
                    "batches retried",
                    "wasmcustom.banking_audit_log_batches_retried",
                ),
            ],
            _ => &[],
        }
    }

    /// Whether this step ships to the OTLP collector.
    pub fn needs_collector(&self) -> bool {
        matches!(self, Step::Plugin("audit-log"))
    }

    /// Whether this step needs Redis behind Webdis.
    pub fn needs_redis(&self) -> bool {
        matches!(self, Step::Plugin(name) if name.ends_with("@redis"))
    }

    /// The verified-token cache this filter keeps, if any.
    pub fn cache_stats(&self) -> Option<&'static CacheStats> {
        match self {
            Step::Plugin("jwt-auth") => Some(&JWT_AUTH_CACHE),
            Step::Plugin(_) | Step::Noop | Step::FileAccessLog => None,
            Step::Native(filter) => filter.cache,
        }
    }
}

/// A verified-token cache whose hits and misses the results show: the filter, and how its
/// hit and miss counters' names end in Envoy's stats.
#[derive(Debug)]
pub struct CacheStats {
    pub filter: &'static str,
    pub hit: &'static str,
    pub miss: &'static str,
}

/// jwt-auth's cache (its counters, as Envoy names a Wasm filter's own).
pub static JWT_AUTH_CACHE: CacheStats = CacheStats {
    filter: "jwt-auth",
    hit: "wasmcustom.banking_jwt_auth_cache_hit",
    miss: "wasmcustom.banking_jwt_auth_cache_miss",
};

/// Requests sent to every row before it is measured: a chain must answer each as its first
/// refusing filter would (200 when none refuses), or the row is not measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The request the load sends.
    Valid,
    /// Without `x-customer-id`.
    MissingCustomerId,
    /// With the reused token's signature tampered.
    TamperedToken,
    /// With a well-formed `x-customer-id` that is not the token's customer.
    OtherCustomer,
}

impl Probe {
    pub const ALL: [Probe; 4] = [
        Probe::Valid,
        Probe::MissingCustomerId,
        Probe::TamperedToken,
        Probe::OtherCustomer,
    ];
}

/// A row of the results.
pub struct Scenario {
    /// Unique; what `--only` matches and the results show.
    pub name: &'static str,
    /// The HTTP filters before the router, in order.
    pub chain: &'static [Step],
    pub tokens: TokenUse,
    pub rate: Rate,
    pub load: Load,
    /// The rows this one's CPU is divided by in the "× versus" column, first the one it is
    /// judged against: the native equivalent, or for the floor, no filter.
    pub versus: &'static [&'static str],
}

impl Scenario {
    /// The chain as the results show it: `banking-headers → jwt-auth`.
    pub fn chain_label(&self) -> String {
        if self.chain.is_empty() {
            return "(none)".to_string();
        }
        let labels: Vec<&str> = self.chain.iter().map(Step::label).collect();
        labels.join(" → ")
    }

    /// The verified-token caches of the chain, in its order.
    pub fn cache_stats(&self) -> Vec<&'static CacheStats> {
        self.chain.iter().filter_map(Step::cache_stats).collect()
    }

    /// What the chain answers `probe` with: the first refusing filter's status, else 200.
    pub fn expected(&self, probe: Probe) -> u16 {
        self.chain
            .iter()
            .find_map(|step| {
                step.refuses()
                    .iter()
                    .find(|(p, _)| *p == probe)
                    .map(|(_, s)| *s)
            })
            .unwrap_or(200)
    }
}

/// The baseline every row's added latency is measured from.
pub const NO_FILTER: &str = "none";

/// Every row, in the order measured and shown.
pub static SCENARIOS: &[Scenario] = &[
    Scenario {
        name: NO_FILTER,
        chain: &[],
        tokens: REUSED_RS256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &[],
    },
    Scenario {
        name: "floor",
        chain: &[Step::Noop],
        tokens: REUSED_RS256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &[NO_FILTER],
    },
    // banking-headers has no native twin; its yardstick is a Lua filter doing the same
    // checks on the same config (bench/native/banking-headers.lua).
    Scenario {
        name: "banking-headers",
        chain: &[Step::Plugin("banking-headers")],
        tokens: REUSED_RS256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &["banking-headers-lua"],
    },
    Scenario {
        name: "banking-headers-lua",
        chain: &[Step::Native(&native::BANKING_HEADERS_LUA)],
        tokens: REUSED_RS256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &[],
    },
    // jwt-auth against jwt_authn as Envoy configures it by default (no cache) and with its
    // verified-token cache: a reused token is compared with the cached one first, which is
    // what jwt-auth's own cache answers.
    Scenario {
        name: "jwt-auth-rs256",
        chain: &[Step::Plugin("jwt-auth")],
        tokens: REUSED_RS256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &["jwt_authn-cache-rs256", "jwt_authn-rs256"],
    },
    Scenario {
        name: "jwt_authn-rs256",
        chain: &[Step::Native(&native::JWT_AUTHN)],
        tokens: REUSED_RS256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &[],
    },
    Scenario {
        name: "jwt_authn-cache-rs256",
        chain: &[Step::Native(&native::JWT_AUTHN_CACHED)],
        tokens: REUSED_RS256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &["jwt_authn-rs256"],
    },
    Scenario {
        name: "jwt-auth-rs256-distinct",
        chain: &[Step::Plugin("jwt-auth")],
        tokens: DISTINCT_RS256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &["jwt_authn-rs256-distinct"],
    },
    Scenario {
        name: "jwt_authn-rs256-distinct",
        chain: &[Step::Native(&native::JWT_AUTHN)],
        tokens: DISTINCT_RS256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &[],
    },
    Scenario {
        name: "jwt-auth-ps256-distinct",
        chain: &[Step::Plugin("jwt-auth")],
        tokens: DISTINCT_PS256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &["jwt_authn-ps256-distinct"],
    },
    Scenario {
        name: "jwt_authn-ps256-distinct",
        chain: &[Step::Native(&native::JWT_AUTHN)],
        tokens: DISTINCT_PS256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &[],
    },
    Scenario {
        name: "jwt-auth-es256",
        chain: &[Step::Plugin("jwt-auth")],
        tokens: REUSED_ES256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &["jwt_authn-cache-es256", "jwt_authn-es256"],
    },
    Scenario {
        name: "jwt_authn-es256",
        chain: &[Step::Native(&native::JWT_AUTHN)],
        tokens: REUSED_ES256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &[],
    },
    Scenario {
        name: "jwt_authn-cache-es256",
        chain: &[Step::Native(&native::JWT_AUTHN_CACHED)],
        tokens: REUSED_ES256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &["jwt_authn-es256"],
    },
    Scenario {
        name: "jwt-auth-es256-distinct",
        chain: &[Step::Plugin("jwt-auth")],
        tokens: DISTINCT_ES256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &["jwt_authn-es256-distinct"],
    },
    Scenario {
        name: "jwt_authn-es256-distinct",
        chain: &[Step::Native(&native::JWT_AUTHN)],
        tokens: DISTINCT_ES256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &[],
    },
    // A realistic mix of tokens, each used about 20 times: jwt-auth against jwt_authn with its
    // cache (both caches hit most of the time) and, second, without.
    Scenario {
        name: "jwt-auth-rs256-mix",
        chain: &[Step::Plugin("jwt-auth")],
        tokens: MIX_RS256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &["jwt_authn-cache-rs256-mix", "jwt_authn-rs256-mix"],
    },
    Scenario {
        name: "jwt_authn-cache-rs256-mix",
        chain: &[Step::Native(&native::JWT_AUTHN_CACHED)],
        tokens: MIX_RS256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &["jwt_authn-rs256-mix"],
    },
    Scenario {
        name: "jwt_authn-rs256-mix",
        chain: &[Step::Native(&native::JWT_AUTHN)],
        tokens: MIX_RS256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &[],
    },
    // The suite as istiod chains it, against the closest native chain: the Lua banking-header
    // checks, jwt_authn with its cache (jwt-auth caches too), and a Lua step for jwt-auth's
    // scopes and customer binding.
    Scenario {
        name: "rate-limit",
        chain: &[Step::Plugin("jwt-auth"), Step::Plugin("rate-limit")],
        tokens: REUSED_RS256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &["rate-limit-native", "jwt-auth-rs256"],
    },
    Scenario {
        name: "rate-limit-native",
        chain: &[
            Step::Plugin("jwt-auth"),
            Step::Native(&native::LOCAL_RATELIMIT),
        ],
        tokens: REUSED_RS256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &["jwt-auth-rs256"],
    },
    Scenario {
        name: "rate-limit-subjects",
        chain: &[Step::Plugin("jwt-auth"), Step::Plugin("rate-limit")],
        tokens: DISTINCT_RS256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &["rate-limit-native-subjects"],
    },
    Scenario {
        name: "rate-limit-native-subjects",
        chain: &[
            Step::Plugin("jwt-auth"),
            Step::Native(&native::LOCAL_RATELIMIT),
        ],
        tokens: DISTINCT_RS256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &[],
    },
    // The idempotency filter behind jwt-auth (it keys records on the verified customer), with
    // each store, for first uses and for replays, against jwt-auth alone and no filter on the
    // same payments.
    Scenario {
        name: "payment-none",
        chain: &[],
        tokens: REUSED_RS256,
        rate: Rate::Light,
        load: Load::Payment(Keys::New),
        versus: &[],
    },
    Scenario {
        name: "payment-jwt-auth",
        chain: &[Step::Plugin("jwt-auth")],
        tokens: REUSED_RS256,
        rate: Rate::Light,
        load: Load::Payment(Keys::New),
        versus: &["payment-none"],
    },
    Scenario {
        name: "idempotency-first-use",
        chain: &[Step::Plugin("jwt-auth"), Step::Plugin("idempotency")],
        tokens: REUSED_RS256,
        rate: Rate::Light,
        load: Load::Payment(Keys::New),
        versus: &["payment-jwt-auth", "payment-none"],
    },
    Scenario {
        name: "idempotency-replay",
        chain: &[Step::Plugin("jwt-auth"), Step::Plugin("idempotency")],
        tokens: REUSED_RS256,
        rate: Rate::Light,
        load: Load::Payment(Keys::Same),
        versus: &["payment-jwt-auth", "payment-none"],
    },
    Scenario {
        name: "idempotency-redis-first-use",
        chain: &[Step::Plugin("jwt-auth"), Step::Plugin("idempotency@redis")],
        tokens: REUSED_RS256,
        rate: Rate::Light,
        load: Load::Payment(Keys::New),
        versus: &["payment-jwt-auth", "payment-none"],
    },
    Scenario {
        name: "idempotency-redis-replay",
        chain: &[Step::Plugin("jwt-auth"), Step::Plugin("idempotency@redis")],
        tokens: REUSED_RS256,
        rate: Rate::Light,
        load: Load::Payment(Keys::Same),
        versus: &["payment-jwt-auth", "payment-none"],
    },
    // The audit-log filter behind jwt-auth (it records the verified caller) on payments, its
    // body fields read and its records shipped to a local OTLP collector, against Envoy's own
    // file access log writing a JSON line of similar fields behind the same jwt-auth.
    Scenario {
        name: "audit-log",
        chain: &[Step::Plugin("jwt-auth"), Step::Plugin("audit-log")],
        tokens: REUSED_RS256,
        rate: Rate::Light,
        load: Load::Payment(Keys::New),
        versus: &["audit-file-log", "payment-jwt-auth"],
    },
    Scenario {
        name: "audit-file-log",
        chain: &[Step::Plugin("jwt-auth"), Step::FileAccessLog],
        tokens: REUSED_RS256,
        rate: Rate::Light,
        load: Load::Payment(Keys::New),
        versus: &["payment-jwt-auth"],
    },
    Scenario {
        name: "suite",
        chain: &[Step::Plugin("banking-headers"), Step::Plugin("jwt-auth")],
        tokens: REUSED_RS256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &["suite-native"],
    },
    Scenario {
        name: "suite-native",
        chain: NATIVE_SUITE,
        tokens: REUSED_RS256,
        rate: Rate::Standard,
        load: Load::Account,
        versus: &[],
    },
    Scenario {
        name: "suite-distinct",
        chain: &[Step::Plugin("banking-headers"), Step::Plugin("jwt-auth")],
        tokens: DISTINCT_RS256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &["suite-native-distinct"],
    },
    Scenario {
        name: "suite-native-distinct",
        chain: NATIVE_SUITE,
        tokens: DISTINCT_RS256,
        rate: Rate::Light,
        load: Load::Account,
        versus: &[],
    },
];

const NATIVE_SUITE: &[Step] = &[
    Step::Native(&native::BANKING_HEADERS_LUA),
    Step::Native(&native::JWT_AUTHN_FOR_AUTHZ),
    Step::Native(&native::JWT_AUTHZ_LUA),
];

/// The rows whose name contains one of `only` (all when empty), plus the rows they are compared
/// with and the no-filter baseline.
pub fn select(only: &[String]) -> Vec<&'static Scenario> {
    let wanted = |s: &Scenario| only.is_empty() || only.iter().any(|o| s.name.contains(o.as_str()));
    let mut names: Vec<&str> = vec![NO_FILTER];
    for s in SCENARIOS.iter().filter(|s| wanted(s)) {
        names.push(s.name);
        names.extend(s.versus.iter().copied());
    }
    SCENARIOS
        .iter()
        .filter(|s| names.contains(&s.name))
        .collect()
}

/// Refuses a table that cannot be measured: duplicate names, a `versus` naming no row.
pub fn check_table() -> Result<(), String> {
    for (i, s) in SCENARIOS.iter().enumerate() {
        if SCENARIOS[..i].iter().any(|t| t.name == s.name) {
            return Err(format!("scenario {:?} is declared twice", s.name));
        }
        for &v in s.versus {
            match SCENARIOS.iter().find(|t| t.name == v) {
                None => {
                    return Err(format!(
                        "scenario {:?} is compared with {v:?}, which is no row",
                        s.name
                    ));
                }
                Some(t) if matches!(t.load, Load::Account) != matches!(s.load, Load::Account) => {
                    return Err(format!(
                        "scenario {:?} is compared with {v:?}, which sends other requests",
                        s.name
                    ));
                }
                Some(t) if t.rate != s.rate => {
                    return Err(format!(
                        "scenario {:?} is compared with {v:?}, measured at another rate",
                        s.name
                    ));
                }
                Some(_) => {}
            }
        }
    }
    if !SCENARIOS
        .iter()
        .any(|s| s.name == NO_FILTER && s.chain.is_empty())
    {
        return Err(format!("the table needs the no-filter row {NO_FILTER:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        check_table().unwrap();
    }

    #[test]
    fn a_chain_answers_a_probe_as_its_first_refusing_filter() {
        let suite = SCENARIOS.iter().find(|s| s.name == "suite").unwrap();
        assert_eq!(suite.expected(Probe::Valid), 200);
        assert_eq!(suite.expected(Probe::MissingCustomerId), 400);
        assert_eq!(suite.expected(Probe::TamperedToken), 401);
        assert_eq!(suite.expected(Probe::OtherCustomer), 403);
        let native = SCENARIOS.iter().find(|s| s.name == "suite-native").unwrap();
        for probe in Probe::ALL {
            assert_eq!(native.expected(probe), suite.expected(probe), "{probe:?}");
        }
    }

    #[test]
    fn selecting_a_row_brings_its_yardstick_and_the_baseline() {
        let names: Vec<&str> = select(&["suite-distinct".to_string()])
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["none", "suite-distinct", "suite-native-distinct"]);
    }

    #[test]
    fn selecting_the_mix_brings_jwt_authn_with_and_without_its_cache() {
        let names: Vec<&str> = select(&["jwt-auth-rs256-mix".to_string()])
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            [
                "none",
                "jwt-auth-rs256-mix",
                "jwt_authn-cache-rs256-mix",
                "jwt_authn-rs256-mix"
            ]
        );
    }
}
