//! What the filter answers: allow with header and filter-state changes, or deny with a
//! precise reason rendered as RFC 6750 `WWW-Authenticate` and an RFC 9457 problem.
//!
//! Nothing here quotes the token or any part of it: details are fixed sentences plus
//! names taken from the configuration.

use banking_filter_common::metrics::Outcome;
use banking_filter_common::problem::Problem;
use banking_filter_common::route;

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
    ];

    pub fn status(self) -> u16 {
        match self {
            DenyReason::MultipleTokens | DenyReason::InvalidPath => 400,
            DenyReason::RouteNotAllowed
            | DenyReason::AudienceMismatch
            | DenyReason::InsufficientScope
            | DenyReason::CustomerMismatch => 403,
            DenyReason::KeysUnavailable => 503,
            _ => 401,
        }
    }

    /// The RFC 6750 §3.1 error code, if the challenge carries one.
    pub fn bearer_error(self) -> Option<&'static str> {
        match self {
            // §3.1: a request without credentials gets a bare challenge.
            DenyReason::MissingToken => None,
            DenyReason::MultipleTokens => Some("invalid_request"),
            DenyReason::InvalidPath | DenyReason::RouteNotAllowed | DenyReason::KeysUnavailable => {
                None
            }
            DenyReason::AudienceMismatch
            | DenyReason::InsufficientScope
            | DenyReason::CustomerMismatch => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }

    /// Whether the response carries a `WWW-Authenticate` challenge at all.
    pub fn challenges(self) -> bool {
        !matches!(
            self,
            DenyReason::InvalidPath | DenyReason::RouteNotAllowed | DenyReason::KeysUnavailable
        )
    }

    /// Slug of the problem type: `jwt-<slug>`, except the route model's defects, whose
    /// types every filter shares.
    pub fn slug(self) -> &'static str {
        match self {
            DenyReason::InvalidPath => route::INVALID_PATH,
            DenyReason::RouteNotAllowed => route::ROUTE_NOT_ALLOWED,
            DenyReason::MissingToken => "missing-token",
            DenyReason::MultipleTokens => "multiple-tokens",
            DenyReason::TokenTooLarge => "token-too-large",
            DenyReason::MalformedToken => "malformed-token",
            DenyReason::AlgorithmNotAllowed => "algorithm-not-allowed",
            DenyReason::UnknownIssuer => "unknown-issuer",
            DenyReason::UnknownKey => "unknown-key",
            DenyReason::KeyAlgorithmMismatch => "key-algorithm-mismatch",
            DenyReason::InvalidSignature => "invalid-signature",
            DenyReason::Expired => "token-expired",
            DenyReason::NotYetValid => "token-not-yet-valid",
            DenyReason::MissingExpiration => "missing-expiration",
            DenyReason::LifetimeTooLong => "lifetime-too-long",
            DenyReason::MissingClaim => "missing-claim",
            DenyReason::AudienceMismatch => "audience-mismatch",
            DenyReason::InsufficientScope => "insufficient-scope",
            DenyReason::CustomerMismatch => "customer-mismatch",
            DenyReason::KeysUnavailable => "signing-keys-unavailable",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            DenyReason::MissingToken => "Access token required",
            DenyReason::MultipleTokens => "More than one access token",
            DenyReason::InvalidPath => route::INVALID_PATH_TITLE,
            DenyReason::RouteNotAllowed => route::ROUTE_NOT_ALLOWED_TITLE,
            DenyReason::KeysUnavailable => "Signing keys not yet available",
            DenyReason::AudienceMismatch
            | DenyReason::InsufficientScope
            | DenyReason::CustomerMismatch => "Access token does not permit this request",
            _ => "Invalid access token",
        }
    }

    /// A fixed description; safe for the quoted `error_description` (RFC 6750 §3 allows
    /// printable ASCII except `"` and `\`).
    pub fn description(self) -> &'static str {
        match self {
            DenyReason::MissingToken => "An access token is required",
            DenyReason::MultipleTokens => "The request carries more than one access token",
            DenyReason::InvalidPath => "The request path is not normalised",
            DenyReason::RouteNotAllowed => "No rule allows this request",
            DenyReason::TokenTooLarge => "The access token is too large",
            DenyReason::MalformedToken => "The access token is malformed",
            DenyReason::AlgorithmNotAllowed => "The access token algorithm is not accepted",
            DenyReason::UnknownIssuer => "The access token issuer is not trusted",
            DenyReason::UnknownKey => "The access token signing key is unknown",
            DenyReason::KeyAlgorithmMismatch => {
                "The access token algorithm does not match its signing key"
            }
            DenyReason::InvalidSignature => "The access token signature is invalid",
            DenyReason::Expired => "The access token expired",
            DenyReason::NotYetValid => "The access token is not valid yet",
            DenyReason::MissingExpiration => "The access token has no expiration",
            DenyReason::LifetimeTooLong => "The access token lifetime is too long",
            DenyReason::MissingClaim => "The access token lacks a required claim",
            DenyReason::AudienceMismatch => "The access token is not intended for this API",
            DenyReason::InsufficientScope => "The access token lacks a required scope",
            DenyReason::CustomerMismatch => {
                "The access token does not belong to the customer in the request"
            }
            DenyReason::KeysUnavailable => "The issuer signing keys are not available yet",
        }
    }
}

impl Outcome for DenyReason {
    const ALL: &'static [Self] = DenyReason::ALL;

    fn suffix(self) -> &'static str {
        match self {
            DenyReason::MissingToken => "denied_missing_token",
            DenyReason::MultipleTokens => "denied_multiple_tokens",
            DenyReason::InvalidPath => "denied_invalid_path",
            DenyReason::RouteNotAllowed => "denied_route_not_allowed",
            DenyReason::TokenTooLarge => "denied_token_too_large",
            DenyReason::MalformedToken => "denied_malformed_token",
            DenyReason::AlgorithmNotAllowed => "denied_algorithm_not_allowed",
            DenyReason::UnknownIssuer => "denied_unknown_issuer",
            DenyReason::UnknownKey => "denied_unknown_key",
            DenyReason::KeyAlgorithmMismatch => "denied_key_algorithm_mismatch",
            DenyReason::InvalidSignature => "denied_invalid_signature",
            DenyReason::Expired => "denied_expired",
            DenyReason::NotYetValid => "denied_not_yet_valid",
            DenyReason::MissingExpiration => "denied_missing_expiration",
            DenyReason::LifetimeTooLong => "denied_lifetime_too_long",
            DenyReason::MissingClaim => "denied_missing_claim",
            DenyReason::AudienceMismatch => "denied_audience_mismatch",
            DenyReason::InsufficientScope => "denied_insufficient_scope",
            DenyReason::CustomerMismatch => "denied_customer_mismatch",
            DenyReason::KeysUnavailable => "denied_keys_unavailable",
        }
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
        match self.reason {
            // Keys usually arrive within a second or two of start-up.
            DenyReason::KeysUnavailable => vec![("retry-after", "1")],
            _ => Vec::new(),
        }
    }

    pub fn problem(&self) -> Problem {
        let slug = match self.reason {
            DenyReason::InvalidPath | DenyReason::RouteNotAllowed => self.reason.slug().to_owned(),
            _ => format!("jwt-{}", self.reason.slug()),
        };
        Problem::new(
            self.status(),
            &slug,
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

/// Filter-state names later filters read the verified identity under: the common
/// filter-state contract's (`banking_filter_common::identity`), which also says how each
/// value is encoded. The shell publishes the identity itself ([`handoff`]); `filter_state`
/// of an [`Allow`] adds `banking.jwt.claim.<claim>` for each of `outputs.filterStateClaims`.
pub use banking_filter_common::identity::names::{
    CLAIM_PREFIX as FILTER_STATE_CLAIM_PREFIX, ISSUER as FILTER_STATE_ISSUER,
    SUBJECT as FILTER_STATE_SUBJECT,
};

/// Changes to make to a request that goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub kind: AllowKind,
    /// Removed first (every copy).
    pub remove_headers: Vec<String>,
    /// Then set (replacing).
    pub set_headers: Vec<(String, Vec<u8>)>,
    /// (filter-state name, value).
    pub filter_state: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allow),
    Deny(Denial),
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
    let mut scopes: Vec<String> = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => {
                scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            _ => {}
        }
    }
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
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_gets_a_bare_challenge() {
        let d = Denial::plain(DenyReason::MissingToken);
        assert_eq!(d.status(), 401);
        assert_eq!(
            d.www_authenticate("bank").as_deref(),
            Some("Bearer realm=\"bank\"")
        );
    }

    #[test]
    fn invalid_token_challenge_follows_rfc6750() {
        let d = Denial::plain(DenyReason::Expired);
        assert_eq!(
            d.www_authenticate("bank").unwrap(),
            "Bearer realm=\"bank\", error=\"invalid_token\", error_description=\"The access token expired\""
        );
    }

    #[test]
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

    #[test]
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

    #[test]
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

    #[test]
    fn every_reason_has_a_distinct_counter() {
        let mut names: Vec<&str> = DenyReason::ALL.iter().map(|r| r.suffix()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DenyReason::ALL.len());
    }

    #[test]
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
