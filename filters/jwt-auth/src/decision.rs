//! What the filter answers: allow with header and filter-state changes, or deny with a
//! precise reason rendered as RFC 6750 `WWW-Authenticate` and an RFC 9457 problem.
//!
//! Nothing here quotes the token or any part of it: details are fixed sentences plus
//! names taken from the configuration.

use banking_filter_common::metrics::Outcome;
use banking_filter_common::problem::Problem;
use banking_filter_common::route;
use std::rc::Rc;

/// Why a request was refused. Each reason has its own counter,
/// `banking_jwt_auth_denied_<suffix>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No token in any configured source.
    MissingToken,
    /// More than one token in the request.
    MultipleTokens,
    /// A path the route model refuses (common `invalid-path`, the same in every filter).
    InvalidPath,
    /// No rule matches, under a `denyUnmatchedUnder` prefix (common `route-not-allowed`).
    RouteNotAllowed,
    TokenTooLarge,
    MalformedToken,
    /// `alg` is `none`, unsupported, or not allowed for the issuer.
    AlgorithmNotAllowed,
    /// `iss` absent or not a configured provider.
    UnknownIssuer,
    /// No key with the token's `kid` (a JWKS re-fetch is requested).
    UnknownKey,
    /// The key named by `kid` does not serve the token's `alg`.
    KeyAlgorithmMismatch,
    InvalidSignature,
    Expired,
    /// `nbf` or `iat` in the future beyond the clock skew.
    NotYetValid,
    MissingExpiration,
    LifetimeTooLong,
    MissingClaim,
    AudienceMismatch,
    InsufficientScope,
    CustomerMismatch,
    /// The issuer's signing keys have not been fetched yet.
    KeysUnavailable,
    /// The issuer's last fetched JWKS holds no key usable here (all revoked, or rotated to
    /// an algorithm not allowed): every token of that issuer is refused.
    NoUsableKey,
    /// The issuer's keys could not be refreshed for longer than `maxStaleness`: no longer
    /// trusted until a fetch succeeds.
    KeysStale,
}

/// Everything about one reason, written once. `slug` names the reason in filter state and
/// logs; the problem type is `jwt-<slug>` unless `shared_type` (the route model's types,
/// which every filter shares); `description` is a fixed sentence, safe for the quoted
/// `error_description` (RFC 6750 §3 allows printable ASCII except `"` and `\`).
struct ReasonRow {
    status: u16,
    slug: &'static str,
    shared_type: bool,
    title: &'static str,
    description: &'static str,
    /// RFC 6750 §3.1 error code of the challenge; `None` for a bare challenge.
    bearer_error: Option<&'static str>,
    /// Whether the response carries a `WWW-Authenticate` challenge at all.
    challenges: bool,
    /// `Retry-After` seconds, for a refusal that a later try may not get.
    retry_after: Option<&'static str>,
    /// Counter suffixes: `banking_jwt_auth_<denied>`, and in dry-run `..._<would_deny>`.
    denied: &'static str,
    would_deny: &'static str,
}

const INVALID_TOKEN: &str = "Invalid access token";
const NOT_PERMITTED: &str = "Access token does not permit this request";

/// A 401 `invalid_token` row, the most common kind.
const fn invalid_token(
    slug: &'static str,
    description: &'static str,
    counters: (&'static str, &'static str),
) -> ReasonRow {
    ReasonRow {
        status: 401,
        slug,
        shared_type: false,
        title: INVALID_TOKEN,
        description,
        bearer_error: Some("invalid_token"),
        challenges: true,
        retry_after: None,
        denied: counters.0,
        would_deny: counters.1,
    }
}

/// A 403 `insufficient_scope` row.
const fn not_permitted(
    slug: &'static str,
    description: &'static str,
    counters: (&'static str, &'static str),
) -> ReasonRow {
    ReasonRow {
        status: 403,
        title: NOT_PERMITTED,
        bearer_error: Some("insufficient_scope"),
        ..invalid_token(slug, description, counters)
    }
}

impl DenyReason {
    pub const ALL: &'static [DenyReason] = &[
        DenyReason::MissingToken,
        DenyReason::MultipleTokens,
        DenyReason::InvalidPath,
        DenyReason::RouteNotAllowed,
        DenyReason::TokenTooLarge,
        DenyReason::MalformedToken,
        DenyReason::AlgorithmNotAllowed,
        DenyReason::UnknownIssuer,
        DenyReason::UnknownKey,
        DenyReason::KeyAlgorithmMismatch,
        DenyReason::InvalidSignature,
        DenyReason::Expired,
        DenyReason::NotYetValid,
        DenyReason::MissingExpiration,
        DenyReason::LifetimeTooLong,
        DenyReason::MissingClaim,
        DenyReason::AudienceMismatch,
        DenyReason::InsufficientScope,
        DenyReason::CustomerMismatch,
        DenyReason::KeysUnavailable,
        DenyReason::NoUsableKey,
        DenyReason::KeysStale,
    ];

    /// The reason table.
    const fn row(self) -> ReasonRow {
        match self {
            DenyReason::MissingToken => ReasonRow {
                title: "Access token required",
                // §3.1: a request without credentials gets a bare challenge.
                bearer_error: None,
                ..invalid_token(
                    "missing-token",
                    "An access token is required",
                    ("denied_missing_token", "would_deny_missing_token"),
                )
            },
            DenyReason::MultipleTokens => ReasonRow {
                status: 400,
                title: "More than one access token",
                bearer_error: Some("invalid_request"),
                ..invalid_token(
                    "multiple-tokens",
                    "The request carries more than one access token",
                    ("denied_multiple_tokens", "would_deny_multiple_tokens"),
                )
            },
            DenyReason::InvalidPath => ReasonRow {
                status: 400,
                shared_type: true,
                title: route::INVALID_PATH_TITLE,
                bearer_error: None,
                challenges: false,
                ..invalid_token(
                    route::INVALID_PATH,
                    "The request path is not normalised",
                    ("denied_invalid_path", "would_deny_invalid_path"),
                )
            },
            DenyReason::RouteNotAllowed => ReasonRow {
                status: 403,
                shared_type: true,
                title: route::ROUTE_NOT_ALLOWED_TITLE,
                bearer_error: None,
                challenges: false,
                ..invalid_token(
                    route::ROUTE_NOT_ALLOWED,
                    "No rule allows this request",
                    ("denied_route_not_allowed", "would_deny_route_not_allowed"),
                )
            },
            DenyReason::TokenTooLarge => invalid_token(
                "token-too-large",
                "The access token is too large",
                ("denied_token_too_large", "would_deny_token_too_large"),
            ),
            DenyReason::MalformedToken => invalid_token(
                "malformed-token",
                "The access token is malformed",
                ("denied_malformed_token", "would_deny_malformed_token"),
            ),
            DenyReason::AlgorithmNotAllowed => invalid_token(
                "algorithm-not-allowed",
                "The access token algorithm is not accepted",
                (
                    "denied_algorithm_not_allowed",
                    "would_deny_algorithm_not_allowed",
                ),
            ),
            DenyReason::UnknownIssuer => invalid_token(
                "unknown-issuer",
                "The access token issuer is not trusted",
                ("denied_unknown_issuer", "would_deny_unknown_issuer"),
            ),
            DenyReason::UnknownKey => invalid_token(
                "unknown-key",
                "The access token signing key is unknown",
                ("denied_unknown_key", "would_deny_unknown_key"),
            ),
            DenyReason::KeyAlgorithmMismatch => invalid_token(
                "key-algorithm-mismatch",
                "The access token algorithm does not match its signing key",
                (
                    "denied_key_algorithm_mismatch",
                    "would_deny_key_algorithm_mismatch",
                ),
            ),
            DenyReason::InvalidSignature => invalid_token(
                "invalid-signature",
                "The access token signature is invalid",
                ("denied_invalid_signature", "would_deny_invalid_signature"),
            ),
            DenyReason::Expired => invalid_token(
                "token-expired",
                "The access token expired",
                ("denied_expired", "would_deny_expired"),
            ),
            DenyReason::NotYetValid => invalid_token(
                "token-not-yet-valid",
                "The access token is not valid yet",
                ("denied_not_yet_valid", "would_deny_not_yet_valid"),
            ),
            DenyReason::MissingExpiration => invalid_token(
                "missing-expiration",
                "The access token has no expiration",
                ("denied_missing_expiration", "would_deny_missing_expiration"),
            ),
            DenyReason::LifetimeTooLong => invalid_token(
                "lifetime-too-long",
                "The access token lifetime is too long",
                ("denied_lifetime_too_long", "would_deny_lifetime_too_long"),
            ),
            DenyReason::MissingClaim => invalid_token(
                "missing-claim",
                "The access token lacks a required claim",
                ("denied_missing_claim", "would_deny_missing_claim"),
            ),
            DenyReason::AudienceMismatch => not_permitted(
                "audience-mismatch",
                "The access token is not intended for this API",
                ("denied_audience_mismatch", "would_deny_audience_mismatch"),
            ),
            DenyReason::InsufficientScope => not_permitted(
                "insufficient-scope",
                "The access token lacks a required scope",
                ("denied_insufficient_scope", "would_deny_insufficient_scope"),
            ),
            DenyReason::CustomerMismatch => not_permitted(
                "customer-mismatch",
                "The access token does not belong to the customer in the request",
                ("denied_customer_mismatch", "would_deny_customer_mismatch"),
            ),
            DenyReason::KeysUnavailable => ReasonRow {
                status: 503,
                title: "Signing keys not yet available",
                bearer_error: None,
                challenges: false,
                // Keys usually arrive within a second or two of start-up.
                retry_after: Some("1"),
                ..invalid_token(
                    "signing-keys-unavailable",
                    "The issuer signing keys are not available yet",
                    ("denied_keys_unavailable", "would_deny_keys_unavailable"),
                )
            },
            DenyReason::NoUsableKey => invalid_token(
                "no-usable-key",
                "The access token issuer publishes no usable signing key",
                ("denied_no_usable_key", "would_deny_no_usable_key"),
            ),
            DenyReason::KeysStale => ReasonRow {
                status: 503,
                title: "Signing keys too old",
                bearer_error: None,
                challenges: false,
                // Refetched every retryInterval; the client's try costs no signature check.
                retry_after: Some("1"),
                ..invalid_token(
                    "signing-keys-stale",
                    "The issuer signing keys could not be refreshed in time",
                    ("denied_keys_stale", "would_deny_keys_stale"),
                )
            },
        }
    }

    pub fn status(self) -> u16 {
        self.row().status
    }

    /// The RFC 6750 §3.1 error code, if the challenge carries one.
    pub fn bearer_error(self) -> Option<&'static str> {
        self.row().bearer_error
    }

    /// Whether the response carries a `WWW-Authenticate` challenge at all.
    pub fn challenges(self) -> bool {
        self.row().challenges
    }

    /// The reason's slug (filter state, logs, and the problem type after `jwt-`).
    pub fn slug(self) -> &'static str {
        self.row().slug
    }

    /// The problem type's slug: `jwt-<slug>`, or the route model's shared type.
    pub fn problem_type(self) -> String {
        let row = self.row();
        if row.shared_type {
            row.slug.to_owned()
        } else {
            format!("jwt-{}", row.slug)
        }
    }

    pub fn title(self) -> &'static str {
        self.row().title
    }

    /// A fixed description; safe for the quoted `error_description`.
    pub fn description(self) -> &'static str {
        self.row().description
    }
}

impl Outcome for DenyReason {
    const ALL: &'static [Self] = DenyReason::ALL;

    fn suffix(self) -> &'static str {
        self.row().denied
    }
}

/// A dry-run's would-be refusal, counted as `banking_jwt_auth_would_deny_<reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WouldDeny(pub DenyReason);

impl WouldDeny {
    const ALL_REASONS: [WouldDeny; 22] = [
        WouldDeny(DenyReason::MissingToken),
        WouldDeny(DenyReason::MultipleTokens),
        WouldDeny(DenyReason::InvalidPath),
        WouldDeny(DenyReason::RouteNotAllowed),
        WouldDeny(DenyReason::TokenTooLarge),
        WouldDeny(DenyReason::MalformedToken),
        WouldDeny(DenyReason::AlgorithmNotAllowed),
        WouldDeny(DenyReason::UnknownIssuer),
        WouldDeny(DenyReason::UnknownKey),
        WouldDeny(DenyReason::KeyAlgorithmMismatch),
        WouldDeny(DenyReason::InvalidSignature),
        WouldDeny(DenyReason::Expired),
        WouldDeny(DenyReason::NotYetValid),
        WouldDeny(DenyReason::MissingExpiration),
        WouldDeny(DenyReason::LifetimeTooLong),
        WouldDeny(DenyReason::MissingClaim),
        WouldDeny(DenyReason::AudienceMismatch),
        WouldDeny(DenyReason::InsufficientScope),
        WouldDeny(DenyReason::CustomerMismatch),
        WouldDeny(DenyReason::KeysUnavailable),
        WouldDeny(DenyReason::NoUsableKey),
        WouldDeny(DenyReason::KeysStale),
    ];
}

impl Outcome for WouldDeny {
    const ALL: &'static [Self] = &WouldDeny::ALL_REASONS;

    fn suffix(self) -> &'static str {
        self.0.row().would_deny
    }
}

/// A refusal with its detail (a fixed sentence, or one naming configured claims/scopes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenyReason,
    pub detail: String,
    /// Scopes the route needs, for the `scope` attribute of an insufficient_scope challenge.
    pub scope: Option<String>,
}

impl Denial {
    pub fn new(reason: DenyReason, detail: impl Into<String>) -> Self {
        Denial {
            reason,
            detail: detail.into(),
            scope: None,
        }
    }

    pub fn plain(reason: DenyReason) -> Self {
        Denial::new(reason, reason.description())
    }

    pub fn status(&self) -> u16 {
        self.reason.status()
    }

    /// The `WWW-Authenticate` value (RFC 6750 §3), or None when the response is not a
    /// challenge (400 for a path, 503 while keys are missing).
    pub fn www_authenticate(&self, realm: &str) -> Option<String> {
        if !self.reason.challenges() {
            return None;
        }
        let mut value = format!("Bearer realm=\"{realm}\"");
        if let Some(error) = self.reason.bearer_error() {
            value.push_str(&format!(
                ", error=\"{error}\", error_description=\"{}\"",
                self.reason.description()
            ));
        }
        if let Some(scope) = &self.scope {
            value.push_str(&format!(", scope=\"{scope}\""));
        }
        Some(value)
    }

    /// Extra response headers besides content type and challenge.
    pub fn extra_headers(&self) -> Vec<(&'static str, &'static str)> {
        self.reason
            .row()
            .retry_after
            .map(|seconds| ("retry-after", seconds))
            .into_iter()
            .collect()
    }

    pub fn problem(&self) -> Problem {
        Problem::new(
            self.status(),
            &self.reason.problem_type(),
            self.reason.title(),
            self.detail.clone(),
        )
    }
}

/// How a request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowKind {
    /// A verified token (fresh or from the cache).
    Verified,
    /// A bypass path.
    Bypassed,
    /// A CORS preflight.
    Preflight,
}

/// Changes to make to a request that goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub kind: AllowKind,
    /// Removed first (every copy), except a name [`Outputs::set_headers`] replaces anyway.
    pub remove_headers: Vec<String>,
    /// What the token establishes for every request that carries it: prepared once, when
    /// the token is verified, and shared by each later use of the cached verification.
    pub outputs: Rc<Outputs>,
}

/// The headers and filter state a verified token (or a bypass) hands on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outputs {
    /// Set, replacing every copy a client sent.
    pub set_headers: Vec<(String, Vec<u8>)>,
    /// What later filters learn about the caller ([`handoff`] of the verified claims, or
    /// the bypass), encoded once as the common contract's `banking.jwt.identity` value.
    /// `None` only for a verified token without an `iss`, which verification rules out: the
    /// shell fails closed on it.
    pub identity: Option<Published>,
}

/// An identity for filter state, with the bytes the shell writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub authentication: banking_filter_common::identity::Authentication,
    /// `authentication.encode()`.
    pub value: Vec<u8>,
}

impl Published {
    pub fn new(authentication: banking_filter_common::identity::Authentication) -> Published {
        let value = authentication.encode();
        Published {
            authentication,
            value,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allow),
    Deny(Denial),
}

/// The scopes a token grants: `scope` (RFC 8693) and `scp` (an array or a string). A string
/// separates scopes with the space character only (RFC 6749 §3.3): a no-break space or a tab
/// is part of a scope, so `"accounts:read\u{a0}payments:write"` grants no `payments:write`.
pub fn granted_scopes(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    use serde_json::Value;
    let mut scopes: Vec<String> = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => {
                scopes.extend(s.split(' ').filter(|w| !w.is_empty()).map(str::to_owned));
            }
            Some(Value::Array(items)) => {
                scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            _ => {}
        }
    }
    scopes
}

/// What jwt-auth hands to later filters for a request it allows, as the common filter-state
/// contract has it: the verified token's issuer, subject, customer (the claim
/// `customer_claim` names, the customer binding's), client (`client_id` as RFC 9068 has it,
/// else OIDC's `azp`) and scopes (`scope` and `scp`, as rules read them), or why no token
/// was needed. `None` for a verified token without `claims` or an `iss`, which verification
/// rules out: the shell fails closed on it.
pub fn handoff(
    kind: AllowKind,
    claims: Option<&serde_json::Map<String, serde_json::Value>>,
    customer_claim: Option<&str>,
) -> Option<banking_filter_common::identity::Authentication> {
    use banking_filter_common::identity::{Authentication, Bypass, VerifiedIdentity};
    use serde_json::Value;
    let claims = match kind {
        AllowKind::Bypassed => return Some(Authentication::Bypassed(Bypass::Path)),
        AllowKind::Preflight => return Some(Authentication::Bypassed(Bypass::CorsPreflight)),
        AllowKind::Verified => claims?,
    };
    let text = |name: &str| match claims.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        // A numeric customer id reads as its digits, as in claim headers.
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let scopes = granted_scopes(claims);
    Some(Authentication::Verified(VerifiedIdentity {
        issuer: claims
            .get("iss")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())?
            .to_owned(),
        subject: claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        customer: customer_claim.and_then(text),
        client: text("client_id").or_else(|| text("azp")),
        scopes,
        // Filled by the policy from `outputs.filterStateClaims`.
        claims: Default::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn scopes_are_separated_by_the_space_character_only() {
        let claims = serde_json::json!({
            "scope": "accounts:read\u{a0}payments:write  payments:read\tx",
            "scp": ["a b"],
        });
        assert_eq!(
            granted_scopes(claims.as_object().unwrap()),
            vec![
                "accounts:read\u{a0}payments:write",
                "payments:read\tx",
                "a b"
            ]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn missing_token_gets_a_bare_challenge() {
        let d = Denial::plain(DenyReason::MissingToken);
        assert_eq!(d.status(), 401);
        assert_eq!(
            d.www_authenticate("bank").as_deref(),
            Some("Bearer realm=\"bank\"")
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn invalid_token_challenge_follows_rfc6750() {
        let d = Denial::plain(DenyReason::Expired);
        assert_eq!(
            d.www_authenticate("bank").unwrap(),
            "Bearer realm=\"bank\", error=\"invalid_token\", error_description=\"The access token expired\""
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn scope_failures_are_403_insufficient_scope_with_scope() {
        let mut d = Denial::plain(DenyReason::InsufficientScope);
        d.scope = Some("payments:write".into());
        assert_eq!(d.status(), 403);
        let h = d.www_authenticate("bank").unwrap();
        assert!(h.contains("error=\"insufficient_scope\""));
        assert!(h.ends_with("scope=\"payments:write\""));
        for r in [DenyReason::AudienceMismatch, DenyReason::CustomerMismatch] {
            assert_eq!(r.status(), 403);
            assert_eq!(r.bearer_error(), Some("insufficient_scope"));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn descriptions_fit_a_quoted_string() {
        for r in DenyReason::ALL {
            assert!(
                r.description()
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'),
                "{r:?}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keys_unavailable_is_503_without_challenge_and_asks_to_retry() {
        let d = Denial::plain(DenyReason::KeysUnavailable);
        assert_eq!(d.status(), 503);
        assert_eq!(d.www_authenticate("bank"), None);
        assert_eq!(d.extra_headers(), vec![("retry-after", "1")]);
        let p = d.problem();
        assert_eq!(
            p.type_uri,
            "urn:banking-filters:problem:jwt-signing-keys-unavailable"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stale_keys_are_503_asking_to_retry_and_no_usable_key_is_an_invalid_token() {
        let d = Denial::plain(DenyReason::KeysStale);
        assert_eq!((d.status(), d.www_authenticate("bank")), (503, None));
        assert_eq!(d.extra_headers(), vec![("retry-after", "1")]);
        assert_eq!(
            d.problem().type_uri,
            "urn:banking-filters:problem:jwt-signing-keys-stale"
        );
        let d = Denial::plain(DenyReason::NoUsableKey);
        assert_eq!(d.status(), 401);
        assert!(d.extra_headers().is_empty());
        assert!(
            d.www_authenticate("bank")
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
        assert_eq!(
            d.problem().type_uri,
            "urn:banking-filters:problem:jwt-no-usable-key"
        );
        // Only the two 503s ask the client to come back.
        let retrying: Vec<DenyReason> = DenyReason::ALL
            .iter()
            .copied()
            .filter(|r| !Denial::plain(*r).extra_headers().is_empty())
            .collect();
        assert_eq!(
            retrying,
            vec![DenyReason::KeysUnavailable, DenyReason::KeysStale]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_reason_has_a_distinct_counter() {
        let mut names: Vec<&str> = DenyReason::ALL.iter().map(|r| r.suffix()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DenyReason::ALL.len());
        // The dry-run counter of each reason is its refusal counter's twin.
        assert_eq!(<WouldDeny as Outcome>::ALL.len(), DenyReason::ALL.len());
        for r in DenyReason::ALL {
            let denied = r.suffix();
            let would = WouldDeny(*r).suffix();
            assert_eq!(
                would.strip_prefix("would_deny_"),
                denied.strip_prefix("denied_"),
                "{r:?}"
            );
            assert!(<WouldDeny as Outcome>::ALL.contains(&WouldDeny(*r)));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn handoff_reads_the_identity_from_the_verified_claims() {
        use banking_filter_common::identity::{Authentication, Bypass, VerifiedIdentity};
        let claims = serde_json::json!({
            "iss": "https://idp.bank.example", "sub": "user-7", "customer_id": "CUST-1",
            "azp": "web", "client_id": "mobile-app", "scope": "payments:read accounts:read",
            "scp": ["extra"],
        });
        let claims = claims.as_object().unwrap();
        assert_eq!(
            handoff(AllowKind::Verified, Some(claims), Some("customer_id")),
            Some(Authentication::Verified(VerifiedIdentity {
                issuer: "https://idp.bank.example".into(),
                subject: Some("user-7".into()),
                customer: Some("CUST-1".into()),
                client: Some("mobile-app".into()),
                scopes: vec![
                    "payments:read".into(),
                    "accounts:read".into(),
                    "extra".into()
                ],
                claims: Default::default(),
            }))
        );
        let bare = serde_json::json!({"iss": "i", "azp": "web", "customer_id": 42});
        let Some(Authentication::Verified(id)) =
            handoff(AllowKind::Verified, bare.as_object(), Some("customer_id"))
        else {
            panic!("verified");
        };
        assert_eq!((id.subject, id.client), (None, Some("web".into())));
        assert_eq!(id.customer.as_deref(), Some("42"));
        assert_eq!(
            handoff(AllowKind::Verified, bare.as_object(), None).map(|a| match a {
                Authentication::Verified(id) => id.customer,
                Authentication::Bypassed(_) => Some("bypassed".into()),
            }),
            Some(None)
        );
        assert_eq!(handoff(AllowKind::Verified, None, None), None);
        let no_issuer = serde_json::json!({"sub": "x"});
        assert_eq!(
            handoff(AllowKind::Verified, no_issuer.as_object(), None),
            None
        );
        assert_eq!(
            handoff(AllowKind::Preflight, None, None),
            Some(Authentication::Bypassed(Bypass::CorsPreflight))
        );
        assert_eq!(
            handoff(AllowKind::Bypassed, None, None),
            Some(Authentication::Bypassed(Bypass::Path))
        );
    }
}
