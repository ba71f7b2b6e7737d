//! The banking-header policy: from a request's headers to a [`Decision`], with no host in
//! sight, so it unit-tests natively and under wasm-bindgen-test.
//!
//! Order of checks, and why:
//! 1. spoofable internal headers are marked for removal on every request;
//! 2. `:path` must be normalised, because prefix rules and bypasses on a path such as
//!    `/healthz/../payments` would judge a different resource than the upstream serves;
//! 3. bypass paths skip the rest;
//! 4. `x-correlation-id` is settled first (kept, generated, or refused) so that every later
//!    problem can quote it;
//! 5. the other banking headers: sent once, within the length bound, UTF-8, well-formed;
//! 6. the operation must be one the matched route expects.
//!
//! The first failed check decides the response: one problem, naming one header.

use crate::config::{BankingHeader, Config, Rule};
use banking_filter_common::headers::{HeaderPairs, Lookup, lookup};
use banking_filter_common::ids;
use banking_filter_common::metrics;
use banking_filter_common::problem::{Problem, excerpt};
use banking_filter_common::route::{self, Route};

/// What the filter does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it through after applying the header changes.
    Allow {
        /// Headers to set on the request (a generated correlation id).
        set_headers: Vec<(String, String)>,
        /// Spoofable internal headers to remove.
        remove_headers: Vec<String>,
        /// Echoed on the response.
        correlation_id: String,
        correlation_generated: bool,
    },
    /// A bypass path: no checks, but internal headers are still removed.
    Bypass { remove_headers: Vec<String> },
    /// Answer locally with the problem (its `correlationId`, when known, is also echoed as a
    /// header).
    Deny {
        reason: Reason,
        problem: Problem,
        correlation_generated: bool,
        /// Spoofable internal headers the request carries: removed if the request goes on
        /// anyway (dry-run).
        remove_headers: Vec<String>,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    InvalidPath,
    RouteNotAllowed,
    MissingHeader,
    DuplicateHeader,
    HeaderTooLong,
    InvalidEncoding,
    InvalidFormat,
    UnknownOperation,
    OperationMismatch,
    CorrelationUnavailable,
}

/// Everything about one reason, written once: the problem type's slug, the status, the
/// problem's title, and the counters (`banking_headers_<counter>`) of a refusal and of a
/// dry-run's would-be refusal.
struct ReasonRow {
    slug: &'static str,
    status: u16,
    title: &'static str,
    counter: &'static str,
    would_deny: &'static str,
}

const fn row(
    slug: &'static str,
    status: u16,
    title: &'static str,
    counters: (&'static str, &'static str),
) -> ReasonRow {
    ReasonRow {
        slug,
        status,
        title,
        counter: counters.0,
        would_deny: counters.1,
    }
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::InvalidPath,
        Reason::RouteNotAllowed,
        Reason::MissingHeader,
        Reason::DuplicateHeader,
        Reason::HeaderTooLong,
        Reason::InvalidEncoding,
        Reason::InvalidFormat,
        Reason::UnknownOperation,
        Reason::OperationMismatch,
        Reason::CorrelationUnavailable,
    ];

    /// The reason table.
    const fn row(self) -> ReasonRow {
        match self {
            Reason::InvalidPath => row(
                route::INVALID_PATH,
                400,
                route::INVALID_PATH_TITLE,
                ("rejected_invalid_path", "would_deny_invalid_path"),
            ),
            Reason::RouteNotAllowed => row(
                route::ROUTE_NOT_ALLOWED,
                403,
                route::ROUTE_NOT_ALLOWED_TITLE,
                ("rejected_route_not_allowed", "would_deny_route_not_allowed"),
            ),
            Reason::MissingHeader => row(
                "missing-header",
                400,
                "Missing banking header",
                ("rejected_missing_header", "would_deny_missing_header"),
            ),
            Reason::DuplicateHeader => row(
                "duplicate-header",
                400,
                "Banking header sent more than once",
                ("rejected_duplicate_header", "would_deny_duplicate_header"),
            ),
            Reason::HeaderTooLong => row(
                "header-too-long",
                400,
                "Banking header too long",
                ("rejected_header_too_long", "would_deny_header_too_long"),
            ),
            Reason::InvalidEncoding => row(
                "invalid-header-encoding",
                400,
                "Banking header is not valid UTF-8",
                (
                    "rejected_invalid_header_encoding",
                    "would_deny_invalid_header_encoding",
                ),
            ),
            Reason::InvalidFormat => row(
                "invalid-header-format",
                400,
                "Malformed banking header",
                (
                    "rejected_invalid_header_format",
                    "would_deny_invalid_header_format",
                ),
            ),
            Reason::UnknownOperation => row(
                "unknown-operation",
                400,
                "Unknown banking operation",
                ("rejected_unknown_operation", "would_deny_unknown_operation"),
            ),
            Reason::OperationMismatch => row(
                "operation-mismatch",
                400,
                "Banking operation does not match the route",
                (
                    "rejected_operation_mismatch",
                    "would_deny_operation_mismatch",
                ),
            ),
            Reason::CorrelationUnavailable => row(
                "correlation-id-unavailable",
                500,
                "Correlation id could not be generated",
                (
                    "rejected_correlation_id_unavailable",
                    "would_deny_correlation_id_unavailable",
                ),
            ),
        }
    }

    /// The problem type's slug (`urn:banking-filters:problem:<slug>`).
    pub fn slug(self) -> &'static str {
        self.row().slug
    }

    fn problem(self, header: &str, detail: String) -> Problem {
        let row = self.row();
        Problem::new(row.status, row.slug, row.title, detail).with_header(header)
    }
}

/// Every counter the filter keeps (`banking_headers_<suffix>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Bypassed,
    CorrelationGenerated,
    /// A request arrived carrying internal headers that were stripped (a spoofing attempt
    /// or a misconfigured client: worth watching).
    InternalHeadersStripped,
    Rejected(Reason),
    /// Dry-run: the request would have been refused for this reason and went on.
    WouldDeny(Reason),
}

impl metrics::Outcome for Outcome {
    const ALL: &'static [Outcome] = &[
        Outcome::Allowed,
        Outcome::Bypassed,
        Outcome::CorrelationGenerated,
        Outcome::InternalHeadersStripped,
        Outcome::Rejected(Reason::InvalidPath),
        Outcome::Rejected(Reason::RouteNotAllowed),
        Outcome::Rejected(Reason::MissingHeader),
        Outcome::Rejected(Reason::DuplicateHeader),
        Outcome::Rejected(Reason::HeaderTooLong),
        Outcome::Rejected(Reason::InvalidEncoding),
        Outcome::Rejected(Reason::InvalidFormat),
        Outcome::Rejected(Reason::UnknownOperation),
        Outcome::Rejected(Reason::OperationMismatch),
        Outcome::Rejected(Reason::CorrelationUnavailable),
        Outcome::WouldDeny(Reason::InvalidPath),
        Outcome::WouldDeny(Reason::RouteNotAllowed),
        Outcome::WouldDeny(Reason::MissingHeader),
        Outcome::WouldDeny(Reason::DuplicateHeader),
        Outcome::WouldDeny(Reason::HeaderTooLong),
        Outcome::WouldDeny(Reason::InvalidEncoding),
        Outcome::WouldDeny(Reason::InvalidFormat),
        Outcome::WouldDeny(Reason::UnknownOperation),
        Outcome::WouldDeny(Reason::OperationMismatch),
        Outcome::WouldDeny(Reason::CorrelationUnavailable),
    ];

    fn suffix(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Bypassed => "bypassed",
            Outcome::CorrelationGenerated => "correlation_generated",
            Outcome::InternalHeadersStripped => "internal_headers_stripped",
            Outcome::Rejected(r) => r.row().counter,
            Outcome::WouldDeny(r) => r.row().would_deny,
        }
    }
}

/// The counters a decision accounts for.
pub fn outcomes(decision: &Decision) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(3);
    match decision {
        Decision::Allow {
            remove_headers,
            correlation_generated,
            ..
        } => {
            out.push(Outcome::Allowed);
            if *correlation_generated {
                out.push(Outcome::CorrelationGenerated);
            }
            if !remove_headers.is_empty() {
                out.push(Outcome::InternalHeadersStripped);
            }
        }
        Decision::Bypass { remove_headers } => {
            out.push(Outcome::Bypassed);
            if !remove_headers.is_empty() {
                out.push(Outcome::InternalHeadersStripped);
            }
        }
        Decision::Deny {
            reason,
            correlation_generated,
            ..
        } => {
            out.push(Outcome::Rejected(*reason));
            if *correlation_generated {
                out.push(Outcome::CorrelationGenerated);
            }
        }
    }
    out
}

/// A refusal on its way out of a check; it becomes a [`Problem`] in [`deny`].
struct Refusal {
    reason: Reason,
    header: &'static str,
    detail: String,
}

fn refuse(reason: Reason, header: &'static str, detail: String) -> Refusal {
    Refusal {
        reason,
        header,
        detail,
    }
}

/// Decides what to do with a request. `fresh_id` supplies 16 random bytes for a generated
/// correlation id (the host's randomness) and is called at most once; `None` means the host
/// had none to give.
pub fn decide(
    config: &Config,
    headers: &HeaderPairs,
    fresh_id: impl FnOnce() -> Option<[u8; 16]>,
) -> Decision {
    let remove_headers = internal_headers(config, headers);

    let rule = match config.routes.resolve(headers) {
        Ok(Route::Rule(rule)) => rule,
        Ok(Route::Unmatched) => &config.default_rule,
        Ok(Route::Bypass) => return Decision::Bypass { remove_headers },
        // The path itself is never quoted: it may carry account numbers.
        Err(defect) => {
            let detail = defect.detail().to_string();
            let r = refuse(Reason::InvalidPath, ":path", detail);
            return deny(r, None, false, remove_headers);
        }
        Ok(Route::NotAllowed) => {
            let detail = route::route_not_allowed().detail;
            let r = refuse(Reason::RouteNotAllowed, ":path", detail);
            return deny(r, None, false, remove_headers);
        }
    };

    // The correlation id first, so later problems can quote it.
    let (correlation_id, generated) = match settle_correlation_id(config, rule, headers, fresh_id) {
        Ok(settled) => settled,
        Err(r) => return deny(r, None, false, remove_headers),
    };
    let mut set_headers = Vec::new();
    if generated {
        set_headers.push((
            BankingHeader::CorrelationId.name().to_string(),
            correlation_id.clone(),
        ));
    }

    if let Err(r) = check_identifiers(config, rule, headers) {
        return deny(r, Some(correlation_id), generated, remove_headers);
    }

    Decision::Allow {
        set_headers,
        remove_headers,
        correlation_id,
        correlation_generated: generated,
    }
}

fn deny(
    r: Refusal,
    correlation_id: Option<String>,
    correlation_generated: bool,
    remove_headers: Vec<String>,
) -> Decision {
    let problem = r.reason.problem(r.header, r.detail);
    let problem = match correlation_id {
        Some(id) => problem.with_correlation_id(id),
        None => problem,
    };
    Decision::Deny {
        reason: r.reason,
        problem,
        correlation_generated,
        remove_headers,
    }
}

/// Names (lowercase, once each) of request headers the strip list matches.
fn internal_headers(config: &Config, headers: &HeaderPairs) -> Vec<String> {
    let mut names: Vec<String> = headers
        .iter()
        .filter(|(name, _)| config.strip_request_headers.iter().any(|m| m.matches(name)))
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The header's single value as UTF-8, `None` when absent; refused when repeated, too long
/// or not UTF-8.
fn single_value<'h>(
    config: &Config,
    headers: &'h HeaderPairs,
    header: BankingHeader,
) -> Result<Option<&'h str>, Refusal> {
    let name = header.name();
    let value = match lookup(headers, name) {
        Lookup::Absent => return Ok(None),
        Lookup::Repeated(n) => {
            return Err(refuse(
                Reason::DuplicateHeader,
                name,
                format!("{name} was sent {n} times; send it exactly once"),
            ));
        }
        Lookup::One(v) => v,
    };
    let max = config.max_header_value_length;
    if value.len() > max {
        return Err(refuse(
            Reason::HeaderTooLong,
            name,
            format!(
                "{name} is {} bytes long; at most {max} are allowed (starts \"{}\")",
                value.len(),
                excerpt(value)
            ),
        ));
    }
    match std::str::from_utf8(value) {
        Ok(v) => Ok(Some(v)),
        Err(_) => Err(refuse(
            Reason::InvalidEncoding,
            name,
            format!("{name} is not valid UTF-8: \"{}\"", excerpt(value)),
        )),
    }
}

fn missing(header: BankingHeader, rule: &Rule) -> Refusal {
    let name = header.name();
    refuse(
        Reason::MissingHeader,
        name,
        format!("{name} is required for {}", rule.name),
    )
}

fn settle_correlation_id(
    config: &Config,
    rule: &Rule,
    headers: &HeaderPairs,
    fresh_id: impl FnOnce() -> Option<[u8; 16]>,
) -> Result<(String, bool), Refusal> {
    let header = BankingHeader::CorrelationId;
    let name = header.name();
    match single_value(config, headers, header)? {
        Some(v) if config.correlation_id.matches(v.as_bytes()) => Ok((v.to_string(), false)),
        Some(v) => Err(refuse(
            Reason::InvalidFormat,
            name,
            format!(
                "{name} \"{}\" does not match {}; omit it to have one generated",
                excerpt(v.as_bytes()),
                config.correlation_id.as_str()
            ),
        )),
        None if rule.requires(header) => Err(missing(header, rule)),
        None => match fresh_id() {
            Some(bytes) => Ok((ids::uuid_v4(bytes), true)),
            None => Err(refuse(
                Reason::CorrelationUnavailable,
                name,
                "the proxy could not generate a correlation id; retry, or send one".to_string(),
            )),
        },
    }
}

fn check_identifiers(config: &Config, rule: &Rule, headers: &HeaderPairs) -> Result<(), Refusal> {
    for header in [
        BankingHeader::CustomerId,
        BankingHeader::TransactionId,
        BankingHeader::BankingOperation,
    ] {
        let name = header.name();
        let Some(value) = single_value(config, headers, header)? else {
            if rule.requires(header) {
                return Err(missing(header, rule));
            }
            continue;
        };
        let shown = excerpt(value.as_bytes());
        match header {
            BankingHeader::CustomerId => {
                if !config.customer_id.matches(value.as_bytes()) {
                    return Err(refuse(
                        Reason::InvalidFormat,
                        name,
                        format!(
                            "{name} \"{shown}\" does not match {}",
                            config.customer_id.as_str()
                        ),
                    ));
                }
            }
            BankingHeader::TransactionId => {
                if !ids::is_uuid(value.as_bytes()) {
                    return Err(refuse(
                        Reason::InvalidFormat,
                        name,
                        format!(
                            "{name} \"{shown}\" is not a UUID \
                             (like 123e4567-e89b-42d3-a456-426614174000)"
                        ),
                    ));
                }
            }
            BankingHeader::BankingOperation => {
                if !config.operations.iter().any(|op| op == value) {
                    return Err(refuse(
                        Reason::UnknownOperation,
                        name,
                        format!("{name} \"{shown}\" is not a known operation"),
                    ));
                }
                // Known operations are configuration, so quoting one in full is safe.
                if !rule.operations.is_empty() && !rule.operations.iter().any(|op| op == value) {
                    return Err(refuse(
                        Reason::OperationMismatch,
                        name,
                        format!(
                            "{name} \"{value}\" does not match {}, which expects {}",
                            rule.name,
                            rule.operations.join(" or ")
                        ),
                    ));
                }
            }
            BankingHeader::CorrelationId => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use banking_filter_common::metrics::outcome_names;
    use wasm_bindgen_test::wasm_bindgen_test;

    const CONFIG: &str = r#"{
        "operations": ["payment.create", "payment.read", "account.read"],
        "rules": [
            {"pathPrefix": "/payments", "methods": ["POST"],
             "requiredHeaders": ["x-customer-id", "x-transaction-id"],
             "operations": ["payment.create"]},
            {"pathPrefix": "/payments", "methods": ["GET"], "operations": ["payment.read"]},
            {"pathPrefix": "/public", "requiredHeaders": []},
            {"pathPrefix": "/audit",
             "requiredHeaders": ["x-customer-id", "x-transaction-id", "x-correlation-id"]}
        ],
        "bypassPaths": [{"exact": "/healthz"}, {"prefix": "/health/"}],
        "customerIdPattern": "CUST-[0-9]{6,12}",
        "maxHeaderValueLength": 64.0
    }"#;

    const TXN: &str = "123e4567-e89b-42d3-a456-426614174000";
    const CORR: &str = "req-0001-abcdef";

    fn config() -> Config {
        Config::from_json(CONFIG.as_bytes()).unwrap()
    }

    fn req(method: &str, path: &str, extra: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        let mut h = vec![
            (":method".to_string(), method.as_bytes().to_vec()),
            (":path".to_string(), path.as_bytes().to_vec()),
            (":authority".to_string(), b"bank.example".to_vec()),
        ];
        h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_vec())));
        h
    }

    fn payment(extra: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        let mut base: Vec<(&str, &[u8])> = vec![
            ("x-customer-id", b"CUST-123456"),
            ("x-transaction-id", TXN.as_bytes()),
            ("x-banking-operation", b"payment.create"),
        ];
        base.retain(|(n, _)| !extra.iter().any(|(e, _)| e == n));
        base.extend_from_slice(extra);
        req("POST", "/payments", &base)
    }

    fn random() -> Option<[u8; 16]> {
        Some([0xab; 16])
    }

    fn no_random_expected() -> Option<[u8; 16]> {
        panic!("a correlation id was generated although none was needed")
    }

    fn denied(d: Decision) -> (Reason, Problem) {
        match d {
            Decision::Deny {
                reason, problem, ..
            } => (reason, problem),
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    fn assert_denied(d: Decision, reason: Reason, header: &str) -> Problem {
        let (r, p) = denied(d);
        assert_eq!(r, reason, "{p:?}");
        assert_eq!(p.header.as_deref(), Some(header), "{p:?}");
        assert_eq!(
            p.type_uri,
            format!("urn:banking-filters:problem:{}", reason.slug())
        );
        p
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn valid_payment_is_allowed_with_a_generated_correlation_id() {
        let d = decide(&config(), &payment(&[]), random);
        let expected = ids::uuid_v4([0xab; 16]);
        assert_eq!(
            d,
            Decision::Allow {
                set_headers: vec![("x-correlation-id".into(), expected.clone())],
                remove_headers: vec![],
                correlation_id: expected,
                correlation_generated: true,
            }
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn well_formed_correlation_id_is_kept_and_nothing_generated() {
        let d = decide(
            &config(),
            &payment(&[("x-correlation-id", CORR.as_bytes())]),
            no_random_expected,
        );
        match d {
            Decision::Allow {
                set_headers,
                correlation_id,
                correlation_generated,
                ..
            } => {
                assert!(set_headers.is_empty());
                assert_eq!(correlation_id, CORR);
                assert!(!correlation_generated);
            }
            other => panic!("{other:?}"),
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn uuid_correlation_id_is_kept() {
        let d = decide(
            &config(),
            &payment(&[("x-correlation-id", TXN.as_bytes())]),
            no_random_expected,
        );
        assert!(matches!(d, Decision::Allow { correlation_id, .. } if correlation_id == TXN));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn malformed_correlation_id_is_refused_not_replaced() {
        let d = decide(
            &config(),
            &payment(&[("x-correlation-id", b"has space in it")]),
            no_random_expected,
        );
        let p = assert_denied(d, Reason::InvalidFormat, "x-correlation-id");
        assert_eq!(p.correlation_id, None);
        assert!(p.detail.contains("omit it"), "{}", p.detail);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn missing_customer_id_is_refused_naming_header_and_route() {
        let mut h = payment(&[]);
        h.retain(|(n, _)| n != "x-customer-id");
        let p = assert_denied(
            decide(&config(), &h, random),
            Reason::MissingHeader,
            "x-customer-id",
        );
        assert_eq!(p.status, 400);
        assert_eq!(p.detail, "x-customer-id is required for POST /payments");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn denial_after_generation_quotes_the_generated_correlation_id() {
        let mut h = payment(&[]);
        h.retain(|(n, _)| n != "x-transaction-id");
        let d = decide(&config(), &h, random);
        assert!(matches!(
            d,
            Decision::Deny {
                correlation_generated: true,
                ..
            }
        ));
        let p = assert_denied(d, Reason::MissingHeader, "x-transaction-id");
        assert_eq!(p.correlation_id, Some(ids::uuid_v4([0xab; 16])));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn transaction_id_must_be_a_uuid() {
        let d = decide(
            &config(),
            &payment(&[("x-transaction-id", b"txn-42")]),
            random,
        );
        let p = assert_denied(d, Reason::InvalidFormat, "x-transaction-id");
        assert!(
            p.detail.contains("\"txn-42\" is not a UUID"),
            "{}",
            p.detail
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn customer_id_must_match_the_pattern_and_only_an_excerpt_is_echoed() {
        let d = decide(
            &config(),
            &payment(&[("x-customer-id", b"CUST-1234567ABCDEFGHIJSECRET")]),
            random,
        );
        let p = assert_denied(d, Reason::InvalidFormat, "x-customer-id");
        assert!(p.detail.contains("\"CUST-1234567...\""), "{}", p.detail);
        assert!(!p.detail.contains("SECRET"));
        assert!(p.detail.contains("CUST-[0-9]{6,12}"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn card_number_in_a_header_is_never_echoed() {
        let d = decide(
            &config(),
            &payment(&[("x-customer-id", b"4111111111111111")]),
            random,
        );
        let p = assert_denied(d, Reason::InvalidFormat, "x-customer-id");
        assert!(!p.detail.contains("411111"), "{}", p.detail);
        assert!(p.detail.contains("[redacted]"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn oversized_value_is_refused_before_format_checks() {
        let long = vec![b'A'; 65];
        let d = decide(&config(), &payment(&[("x-customer-id", &long)]), random);
        let p = assert_denied(d, Reason::HeaderTooLong, "x-customer-id");
        assert!(
            p.detail.contains("65 bytes") && p.detail.contains("at most 64"),
            "{}",
            p.detail
        );
        let exactly = [b"CUST-".as_slice(), &[b'1'; 12]].concat();
        assert!(matches!(
            decide(&config(), &payment(&[("x-customer-id", &exactly)]), random),
            Decision::Allow { .. }
        ));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn non_utf8_value_is_refused_as_encoding_problem() {
        let d = decide(
            &config(),
            &payment(&[("x-customer-id", b"CUST-\xff\xfe0001")]),
            random,
        );
        let p = assert_denied(d, Reason::InvalidEncoding, "x-customer-id");
        assert!(p.detail.contains("CUST-??0001"), "{}", p.detail);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn non_ascii_utf8_value_is_a_format_problem() {
        let d = decide(
            &config(),
            &payment(&[("x-customer-id", "CUST-12345é".as_bytes())]),
            random,
        );
        assert_denied(d, Reason::InvalidFormat, "x-customer-id");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn repeated_banking_header_is_refused() {
        let mut h = payment(&[]);
        h.push(("X-Customer-Id".into(), b"CUST-654321".to_vec()));
        let p = assert_denied(
            decide(&config(), &h, random),
            Reason::DuplicateHeader,
            "x-customer-id",
        );
        assert!(p.detail.contains("2 times"));
        let mut h = payment(&[("x-correlation-id", CORR.as_bytes())]);
        h.push(("x-correlation-id".into(), CORR.as_bytes().to_vec()));
        assert_denied(
            decide(&config(), &h, no_random_expected),
            Reason::DuplicateHeader,
            "x-correlation-id",
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_underscore_spelling_is_the_same_banking_header() {
        // Beside the real one it is a second copy, as a CGI-style upstream reads it.
        let twice = payment(&[("x-customer_id", b"CUST-999999")]);
        let d = decide(&config(), &twice, random);
        assert_denied(d, Reason::DuplicateHeader, "x-customer-id");
        // Alone it is checked as the header itself.
        let mut alone = payment(&[]);
        alone.retain(|(n, _)| n != "x-customer-id");
        alone.push(("x_customer_id".into(), b"not-a-customer".to_vec()));
        let d = decide(&config(), &alone, random);
        assert_denied(d, Reason::InvalidFormat, "x-customer-id");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_operation_is_refused() {
        let d = decide(
            &config(),
            &payment(&[("x-banking-operation", b"payment.steal")]),
            random,
        );
        assert_denied(d, Reason::UnknownOperation, "x-banking-operation");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn known_operation_on_the_wrong_route_is_refused() {
        let d = decide(
            &config(),
            &payment(&[("x-banking-operation", b"payment.read")]),
            random,
        );
        let p = assert_denied(d, Reason::OperationMismatch, "x-banking-operation");
        assert_eq!(
            p.detail,
            "x-banking-operation \"payment.read\" does not match POST /payments, which expects payment.create"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn route_listing_operations_requires_the_operation_header() {
        let mut h = payment(&[]);
        h.retain(|(n, _)| n != "x-banking-operation");
        assert_denied(
            decide(&config(), &h, random),
            Reason::MissingHeader,
            "x-banking-operation",
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rules_match_by_method_and_segment_prefix_first_match_wins() {
        let get = req(
            "GET",
            "/payments/42?expand=true",
            &[
                ("x-customer-id", b"CUST-123456"),
                ("x-transaction-id", TXN.as_bytes()),
                ("x-banking-operation", b"payment.read"),
            ],
        );
        assert!(matches!(
            decide(&config(), &get, random),
            Decision::Allow { .. }
        ));
        // The same headers on POST hit the POST rule and its operation.
        let mut post = get.clone();
        post[0].1 = b"POST".to_vec();
        assert_denied(
            decide(&config(), &post, random),
            Reason::OperationMismatch,
            "x-banking-operation",
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unmatched_request_gets_the_default_rule() {
        // `/paymentsx` is not under `/payments`.
        for (method, path) in [("POST", "/paymentsx"), ("GET", "/accounts")] {
            let d = decide(&config(), &req(method, path, &[]), random);
            let p = assert_denied(d, Reason::MissingHeader, "x-customer-id");
            assert_eq!(
                p.detail, "x-customer-id is required for /",
                "{method} {path}"
            );
        }
        let ok = req(
            "GET",
            "/accounts",
            &[
                ("x-customer-id", b"CUST-123456"),
                ("x-transaction-id", TXN.as_bytes()),
            ],
        );
        assert!(matches!(
            decide(&config(), &ok, random),
            Decision::Allow { .. }
        ));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn route_without_requirements_still_checks_headers_that_are_present() {
        let bare = req("GET", "/public/rates", &[]);
        assert!(matches!(
            decide(&config(), &bare, random),
            Decision::Allow { .. }
        ));
        let bad = req("GET", "/public/rates", &[("x-transaction-id", b"nope")]);
        assert_denied(
            decide(&config(), &bad, random),
            Reason::InvalidFormat,
            "x-transaction-id",
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn required_correlation_id_is_not_generated() {
        let h = req(
            "POST",
            "/audit/export",
            &[
                ("x-customer-id", b"CUST-123456"),
                ("x-transaction-id", TXN.as_bytes()),
            ],
        );
        assert_denied(
            decide(&config(), &h, no_random_expected),
            Reason::MissingHeader,
            "x-correlation-id",
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn no_randomness_means_500_not_an_unidentified_request() {
        let p = assert_denied(
            decide(&config(), &payment(&[]), || None),
            Reason::CorrelationUnavailable,
            "x-correlation-id",
        );
        assert_eq!(p.status, 500);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bypass_paths_skip_checks_but_still_strip_internal_headers() {
        for path in ["/healthz", "/healthz?full=1", "/health/live", "/health/"] {
            let d = decide(
                &config(),
                &req("GET", path, &[("x-internal-role", b"admin")]),
                no_random_expected,
            );
            assert_eq!(
                d,
                Decision::Bypass {
                    remove_headers: vec!["x-internal-role".into()]
                },
                "{path}"
            );
        }
        // Exact means exact; prefix means whole segments.
        for path in ["/healthz/x", "/healthzz", "/health"] {
            let d = decide(&config(), &req("GET", path, &[]), random);
            assert_denied(d, Reason::MissingHeader, "x-customer-id");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unnormalised_paths_are_refused_so_they_cannot_dodge_rules() {
        for path in [
            "/health/../payments",
            "/healthz/..",
            "//payments",
            "/public/./x",
            "/public/%2e%2e/payments",
            "/public%2Fx",
            "/public\\x",
            "payments",
            "*",
        ] {
            let d = decide(&config(), &req("POST", path, &[]), no_random_expected);
            let p = assert_denied(d, Reason::InvalidPath, ":path");
            assert!(!p.detail.contains("payments"), "path echoed: {}", p.detail);
        }
        let mut no_path = req("GET", "/x", &[]);
        no_path.retain(|(n, _)| n != ":path");
        assert_denied(
            decide(&config(), &no_path, random),
            Reason::InvalidPath,
            ":path",
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn internal_headers_are_stripped_from_allowed_requests() {
        let h = payment(&[
            ("X-Internal-User", b"root"),
            ("x-internal-user", b"root2"),
            ("x-jwt-claim-sub", b"someone-else"),
            ("x-internals", b"kept"),
            // Upstreams that read `_` as `-` would see these as the headers above.
            ("x-internal_user", b"admin"),
            ("x-jwt-claim_customer_id", b"CUST-99999999"),
        ]);
        match decide(&config(), &h, random) {
            Decision::Allow { remove_headers, .. } => {
                assert_eq!(
                    remove_headers,
                    vec![
                        "x-internal-user",
                        "x-internal_user",
                        "x-jwt-claim-sub",
                        "x-jwt-claim_customer_id"
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn outcomes_count_allowed_generated_stripped_and_rejections() {
        let allow = decide(&config(), &payment(&[("x-internal-a", b"1")]), random);
        assert_eq!(
            outcomes(&allow),
            vec![
                Outcome::Allowed,
                Outcome::CorrelationGenerated,
                Outcome::InternalHeadersStripped
            ]
        );
        let deny = decide(&config(), &req("GET", "//x", &[]), random);
        assert_eq!(
            outcomes(&deny),
            vec![Outcome::Rejected(Reason::InvalidPath)]
        );
        let bypass = decide(&config(), &req("GET", "/healthz", &[]), random);
        assert_eq!(outcomes(&bypass), vec![Outcome::Bypassed]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn counter_names_are_stable() {
        let names = outcome_names::<Outcome>("headers");
        assert_eq!(names.len(), 24);
        for expected in [
            "banking_headers_allowed",
            "banking_headers_bypassed",
            "banking_headers_correlation_generated",
            "banking_headers_internal_headers_stripped",
            "banking_headers_rejected_missing_header",
            "banking_headers_rejected_operation_mismatch",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected}");
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        // Every rejection reason has its own counter, named after its problem type.
        for r in Reason::ALL {
            let o = Outcome::Rejected(r);
            assert!(<Outcome as metrics::Outcome>::ALL.contains(&o), "{r:?}");
            let counter = <Outcome as metrics::Outcome>::suffix(o);
            assert_eq!(counter, format!("rejected_{}", r.slug().replace('-', "_")));
            let dry = Outcome::WouldDeny(r);
            assert!(<Outcome as metrics::Outcome>::ALL.contains(&dry), "{r:?}");
            let would = <Outcome as metrics::Outcome>::suffix(dry);
            assert_eq!(would, format!("would_deny_{}", r.slug().replace('-', "_")));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn no_spelling_of_the_payment_route_escapes_its_rule() {
        let read = [
            ("x-customer-id", &b"CUST-123456"[..]),
            ("x-transaction-id", TXN.as_bytes()),
            ("x-banking-operation", b"account.read"),
        ];
        let base = decide(&config(), &req("POST", "/payments", &read), random);
        assert_denied(base, Reason::OperationMismatch, "x-banking-operation");
        // Spellings that are the same resource meet the same rule.
        for path in [
            "/p%61yments",
            "/%70ayments",
            "/PAYMENTS",
            "/Payments/42",
            "/payments/",
        ] {
            let d = decide(&config(), &req("POST", path, &read), random);
            assert_denied(d, Reason::OperationMismatch, "x-banking-operation");
        }
        let d = decide(&config(), &req("post", "/payments", &read), random);
        assert_denied(d, Reason::OperationMismatch, "x-banking-operation");
        // Spellings an upstream may read as another resource are refused outright.
        for path in [
            "/payments;x=1",
            "/payments%3Bx",
            "/payments%3bx",
            "/payments%2f..",
            "/payments%2F..",
            "/..;/payments",
        ] {
            let d = decide(&config(), &req("POST", path, &read), no_random_expected);
            let p = assert_denied(d, Reason::InvalidPath, ":path");
            assert_eq!(p.type_uri, "urn:banking-filters:problem:invalid-path");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unmatched_method_under_a_protected_prefix_is_not_allowed() {
        let json = CONFIG.replace(
            r#""bypassPaths""#,
            r#""denyUnmatchedUnder": ["/payments"], "bypassPaths""#,
        );
        let c = Config::from_json(json.as_bytes()).unwrap();
        let d = decide(&c, &req("DELETE", "/PAYMENTS/42", &[]), no_random_expected);
        let p = assert_denied(d, Reason::RouteNotAllowed, ":path");
        assert_eq!(p.status, 403);
        // Outside the protected prefix the default rule still applies.
        let d = decide(&c, &req("DELETE", "/other", &[]), random);
        assert_denied(d, Reason::MissingHeader, "x-customer-id");
    }
}
