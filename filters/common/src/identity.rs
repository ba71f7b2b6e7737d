//! The filter-state contract: the names under which the banking filters hand facts to the
//! filters after them, and how each value is encoded. A later filter reads the verified
//! identity from here (Envoy filter state, set by jwt-auth), never from a request header a
//! client could have sent.
//!
//! Everything here is pure: names, typed values, and their encoding to and from bytes. The
//! host side (setting and reading the properties, declaring them read-only) is in
//! `host::filter_state`.
//!
//! # Encoding
//!
//! Envoy keeps each value as filter state `wasm.<name>`; another Wasm filter reads it with
//! `get_property(["<name>"])`, RBAC and CEL as `filter_state["wasm.<name>"]`, the access log
//! as `%FILTER_STATE(wasm.<name>:PLAIN)%`.
//!
//! | name | set by | value |
//! |------|--------|-------|
//! | [`names::IDENTITY`] | jwt-auth, every request it lets through | one compact JSON object (below); empty when a token failed in dry-run |
//! | [`names::DENIED_BY`] | the filter that refuses a request | that filter's name, e.g. `jwt-auth` |
//! | [`names::DENY_REASON`] | the filter that refuses a request | its reason slug, e.g. `missing-token` |
//!
//! The identity is one value, not a name per fact, so that handing it on costs jwt-auth one
//! host call and reading it costs a later filter one: each proxy-wasm call costs a few
//! microseconds in Envoy's V8, more than the whole cache hit it follows. Its members, each
//! left out when it has no value:
//!
//! | member | value |
//! |--------|-------|
//! | `issuer` | the verified token's `iss`; always there for a verified token |
//! | `subject` | `sub` |
//! | `customer` | the customer id: the claim `customerBinding.claim` names |
//! | `client` | the OAuth client: `client_id` (RFC 9068), else `azp` (OIDC) |
//! | `scopes` | the granted scopes (from `scope` and `scp`), an array of RFC 6749 scope-tokens |
//! | `claims` | an object: each of jwt-auth's `outputs.filterStateClaims` the token carries, as text |
//! | `bypass` | instead of all the above, when no token was needed: `path` (a bypass path) or `cors-preflight` |
//!
//! For example `{"issuer":"https://idp.bank.example","subject":"user-7","customer":"CUST-42",`
//! `"client":"mobile-app","scopes":["payments:read"],"claims":{"acr":"sca"}}`, or
//! `{"bypass":"path"}`.
//!
//! jwt-auth writes the name on every request it lets through, empty when a failed token goes
//! on in dry-run, so that it exists, created by jwt-auth, before any later filter runs: where
//! the host supports read-only declarations (see `host::filter_state`), a later filter can
//! then neither overwrite it nor add an identity jwt-auth did not establish. A reader takes
//! an absent name as an empty one (Envoy hands an empty value back as a null buffer, which
//! the Rust SDK reads as "no such property"), and fails closed on anything else the contract
//! does not allow ([`ContractError`]): bytes that are not such an object, an unknown or
//! repeated member, an identity without an issuer, a bypass beside an identity, an empty
//! member, a scope that is no scope-token.
//!
//! # Refusals
//!
//! A filter that refuses a request publishes who refused and why, for the audit-log filter
//! ([`Refusal`]). In a chain only one refusal happens: a local reply stops the request phase,
//! so no later filter sees the request. The first record stands anyway: publishing does not
//! overwrite one already there.
//!
//! # Reserved
//!
//! Names other filters will publish, fixed here so that no two filters pick the same one:
//! - [`names::WOULD_DENY`]: a filter in `mode: dryRun` that would have refused but let the
//!   request through. Several filters can do so in one chain (nothing stops it), so the value
//!   is a list: space-separated `<filter>:<reason>` entries in chain order
//!   ([`append_would_deny`], [`parse_would_deny`]). It never sets [`names::DENIED_BY`].
//! - [`names::RATE_LIMIT_NAME`], [`names::RATE_LIMIT_REMAINING`]: the limit that applied to
//!   the request (its configured name) and what remained of it after the request (decimal).
//! - [`names::IDEMPOTENCY_KEY_STATUS`]: what the idempotency filter found for the request's
//!   key: `new`, `replayed`, `in-flight` or `mismatch`.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// Every name in the contract.
pub mod names {
    /// jwt-auth's account of the caller: one JSON object (see the module notes).
    pub const IDENTITY: &str = "banking.jwt.identity";

    pub const DENIED_BY: &str = "banking.decision.denied_by";
    pub const DENY_REASON: &str = "banking.decision.reason";
    /// What a refusing filter writes.
    pub const REFUSAL: [&str; 2] = [DENIED_BY, DENY_REASON];

    /// Dry-run refusals, `<filter>:<reason>` entries separated by spaces.
    pub const WOULD_DENY: &str = "banking.decision.would_deny";
    /// Reserved: the rate limit that applied (its configured name).
    pub const RATE_LIMIT_NAME: &str = "banking.ratelimit.limit";
    /// Reserved: what remained of that limit after this request (decimal).
    pub const RATE_LIMIT_REMAINING: &str = "banking.ratelimit.remaining";
    /// Reserved: the idempotency key's status (`new`, `replayed`, `in-flight`, `mismatch`).
    pub const IDEMPOTENCY_KEY_STATUS: &str = "banking.idempotency.key_status";
}

/// Filter state that does not follow the contract. Readers must fail closed on it: it means
/// a filter wrote what jwt-auth did not, or a publish stopped half-way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractError {
    /// The value is not UTF-8.
    NotUtf8(&'static str),
    /// The value is not one the contract allows for this name.
    Malformed(&'static str),
    /// Some names of a set are there, this one, which the others need, is not (or is empty).
    Missing(&'static str),
    /// An identity beside a bypass: an authenticated and an unauthenticated request at once.
    BypassWithIdentity,
}

impl fmt::Display for ContractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContractError::NotUtf8(name) => write!(f, "filter state {name} is not UTF-8"),
            ContractError::Malformed(name) => write!(f, "filter state {name} is malformed"),
            ContractError::Missing(name) => {
                write!(f, "filter state {name} is missing from a partial set")
            }
            ContractError::BypassWithIdentity => write!(
                f,
                "filter state {} says authentication was bypassed but names an identity",
                names::IDENTITY
            ),
        }
    }
}

impl std::error::Error for ContractError {}

/// What jwt-auth established about a request's caller from a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifiedIdentity {
    /// The token's issuer; never empty.
    pub issuer: String,
    pub subject: Option<String>,
    pub customer: Option<String>,
    pub client: Option<String>,
    /// Granted scopes, each an RFC 6749 scope-token.
    pub scopes: Vec<String>,
    /// The claims jwt-auth's `outputs.filterStateClaims` names that the token carries, as
    /// text (a string as it is, anything else as its JSON).
    pub claims: BTreeMap<String, String>,
}

/// Why jwt-auth let a request through without a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// A configured bypass path (health checks).
    Path,
    /// A CORS preflight.
    CorsPreflight,
}

impl Bypass {
    pub fn as_str(self) -> &'static str {
        match self {
            Bypass::Path => "path",
            Bypass::CorsPreflight => "cors-preflight",
        }
    }

    fn parse(value: &str) -> Option<Bypass> {
        match value {
            "path" => Some(Bypass::Path),
            "cors-preflight" => Some(Bypass::CorsPreflight),
            _ => None,
        }
    }
}

/// How jwt-auth let a request through: what it publishes for every request it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Verified(VerifiedIdentity),
    Bypassed(Bypass),
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// [`names::IDENTITY`]'s value as JSON: the members of the module notes' table. Written
/// borrowed from an [`Authentication`] (nothing copied per verified token), read owned.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Document<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuer: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    customer: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scopes: Vec<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    claims: Cow<'a, BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bypass: Option<Cow<'a, str>>,
}

/// An optional member as written: left out when empty.
fn filled(value: &Option<String>) -> Option<Cow<'_, str>> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(Cow::Borrowed)
}

/// An optional member as read: never present and empty.
fn member(value: Option<Cow<'_, str>>) -> Result<Option<String>, ContractError> {
    match value {
        Some(text) if text.is_empty() => Err(ContractError::Malformed(names::IDENTITY)),
        other => Ok(other.map(Cow::into_owned)),
    }
}

impl Authentication {
    /// [`names::IDENTITY`]'s value for this authentication.
    pub fn encode(&self) -> Vec<u8> {
        let document = match self {
            Authentication::Verified(id) => Document {
                issuer: Some(Cow::Borrowed(&id.issuer)),
                subject: filled(&id.subject),
                customer: filled(&id.customer),
                client: filled(&id.client),
                // A scope that is no scope-token could not be required by a rule (jwt-auth's
                // config takes scope-tokens only), so it is not handed on.
                scopes: id
                    .scopes
                    .iter()
                    .filter(|s| is_scope_token(s))
                    .map(|s| Cow::Borrowed(s.as_str()))
                    .collect(),
                claims: Cow::Borrowed(&id.claims),
                bypass: None,
            },
            Authentication::Bypassed(why) => Document {
                bypass: Some(Cow::Borrowed(why.as_str())),
                ..Document::default()
            },
        };
        // A struct of strings always serializes.
        serde_json::to_vec(&document).unwrap_or_default()
    }

    /// Reads [`names::IDENTITY`]'s value (`None` when the host has no such property, read
    /// as empty). `Ok(None)` when it is empty: jwt-auth did not run on this request, or let
    /// a failed token through in dry-run. An error for anything the contract does not allow.
    pub fn decode(value: Option<&[u8]>) -> Result<Option<Authentication>, ContractError> {
        let value = value.unwrap_or_default();
        if value.is_empty() {
            return Ok(None);
        }
        // An object only: serde would also read a struct from an array, by position.
        if value.first() != Some(&b'{') {
            return Err(ContractError::Malformed(names::IDENTITY));
        }
        let document: Document =
            serde_json::from_slice(value).map_err(|_| ContractError::Malformed(names::IDENTITY))?;
        if let Some(bypass) = &document.bypass {
            let why = Bypass::parse(bypass).ok_or(ContractError::Malformed(names::IDENTITY))?;
            let names_someone = document.issuer.is_some()
                || document.subject.is_some()
                || document.customer.is_some()
                || document.client.is_some()
                || !document.scopes.is_empty()
                || !document.claims.is_empty();
            if names_someone {
                return Err(ContractError::BypassWithIdentity);
            }
            return Ok(Some(Authentication::Bypassed(why)));
        }
        let issuer = member(document.issuer)?.ok_or(ContractError::Missing(names::IDENTITY))?;
        if !document.scopes.iter().all(|s| is_scope_token(s)) {
            return Err(ContractError::Malformed(names::IDENTITY));
        }
        Ok(Some(Authentication::Verified(VerifiedIdentity {
            issuer,
            subject: member(document.subject)?,
            customer: member(document.customer)?,
            client: member(document.client)?,
            scopes: document.scopes.into_iter().map(Cow::into_owned).collect(),
            claims: document.claims.into_owned(),
        })))
    }
}

impl VerifiedIdentity {
    /// The verified identity in [`names::IDENTITY`]'s value: `Ok(None)` when jwt-auth did
    /// not run, let a failed token through in dry-run, or the request bypassed
    /// authentication. An error must fail the request closed.
    pub fn decode(value: Option<&[u8]>) -> Result<Option<VerifiedIdentity>, ContractError> {
        Ok(match Authentication::decode(value)? {
            Some(Authentication::Verified(identity)) => Some(identity),
            Some(Authentication::Bypassed(_)) | None => None,
        })
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}
/// A filter's name or reason slug: lower-case ASCII letters, digits, `-`, `_` and `.`, as
/// every filter and reason in this repository is named. Nothing else reaches filter state.
fn is_slug(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// Which filter refused a request, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The refusing filter's name, e.g. `jwt-auth`.
    pub filter: String,
    /// Its reason slug, e.g. `missing-token`.
    pub reason: String,
}

impl Refusal {
    /// `None` when either is not a slug (see the module notes).
    pub fn new(filter: &str, reason: &str) -> Option<Refusal> {
        (is_slug(filter) && is_slug(reason)).then(|| Refusal {
            filter: filter.to_owned(),
            reason: reason.to_owned(),
        })
    }

    pub fn to_properties(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (names::DENIED_BY, self.filter.clone().into_bytes()),
            (names::DENY_REASON, self.reason.clone().into_bytes()),
        ]
    }

    /// The refusal recorded on this request: `Ok(None)` when there is none; an error when
    /// only half of it is there or a value is not a slug.
    pub fn from_lookup(
        mut lookup: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Option<Refusal>, ContractError> {
        let mut read = |name: &'static str| -> Result<Option<String>, ContractError> {
            lookup(name)
                .map(|bytes| String::from_utf8(bytes).map_err(|_| ContractError::NotUtf8(name)))
                .transpose()
        };
        match (read(names::DENIED_BY)?, read(names::DENY_REASON)?) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(ContractError::Missing(names::DENY_REASON)),
            (None, Some(_)) => Err(ContractError::Missing(names::DENIED_BY)),
            (Some(filter), Some(reason)) => Refusal::new(&filter, &reason)
                .map(Some)
                .ok_or(ContractError::Malformed(names::DENIED_BY)),
        }
    }
}

/// [`names::WOULD_DENY`] with `refusal` appended to what earlier filters left (`existing`).
pub fn append_would_deny(existing: Option<&[u8]>, refusal: &Refusal) -> Vec<u8> {
    let mut out = existing.unwrap_or_default().to_vec();
    if !out.is_empty() {
        out.push(b' ');
    }
    out.extend_from_slice(refusal.filter.as_bytes());
    out.push(b':');
    out.extend_from_slice(refusal.reason.as_bytes());
    out
}

/// The dry-run refusals in [`names::WOULD_DENY`], in chain order.
pub fn parse_would_deny(value: &[u8]) -> Result<Vec<Refusal>, ContractError> {
    let text = std::str::from_utf8(value).map_err(|_| ContractError::NotUtf8(names::WOULD_DENY))?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(' ')
        .map(|entry| {
            entry
                .split_once(':')
                .and_then(|(filter, reason)| Refusal::new(filter, reason))
                .ok_or(ContractError::Malformed(names::WOULD_DENY))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn identity() -> VerifiedIdentity {
        VerifiedIdentity {
            issuer: "https://idp.bank.example".into(),
            subject: Some("user-7".into()),
            customer: Some("CUST-00000042".into()),
            client: Some("mobile-app".into()),
            scopes: vec!["payments:read".into(), "accounts:read".into()],
            claims: BTreeMap::from([("acr".to_string(), "sca".to_string())]),
        }
    }

    fn verified(identity: VerifiedIdentity) -> Authentication {
        Authentication::Verified(identity)
    }

    fn read(value: &[u8]) -> Result<Option<Authentication>, ContractError> {
        Authentication::decode(Some(value))
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_verified_identity_is_one_json_object_that_round_trips() {
        let value = verified(identity()).encode();
        assert_eq!(
            String::from_utf8(value.clone()).unwrap(),
            r#"{"issuer":"https://idp.bank.example","subject":"user-7","customer":"CUST-00000042","client":"mobile-app","scopes":["payments:read","accounts:read"],"claims":{"acr":"sca"}}"#
        );
        assert_eq!(VerifiedIdentity::decode(Some(&value)), Ok(Some(identity())));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn absent_optional_values_are_left_out_and_read_as_none() {
        let bare = VerifiedIdentity {
            issuer: "https://idp.bank.example".into(),
            subject: Some(String::new()),
            ..VerifiedIdentity::default()
        };
        let value = verified(bare.clone()).encode();
        assert_eq!(value, br#"{"issuer":"https://idp.bank.example"}"#);
        let read_back = VerifiedIdentity::decode(Some(&value)).unwrap().unwrap();
        assert_eq!(read_back.subject, None);
        assert_eq!(
            read_back,
            VerifiedIdentity {
                subject: None,
                ..bare
            }
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_bypass_names_no_one() {
        let value = Authentication::Bypassed(Bypass::CorsPreflight).encode();
        assert_eq!(value, br#"{"bypass":"cors-preflight"}"#);
        assert_eq!(
            read(&value),
            Ok(Some(Authentication::Bypassed(Bypass::CorsPreflight)))
        );
        assert_eq!(VerifiedIdentity::decode(Some(&value)), Ok(None));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn nothing_published_is_absent_not_an_error() {
        assert_eq!(Authentication::decode(None), Ok(None));
        assert_eq!(read(b""), Ok(None));
        assert_eq!(VerifiedIdentity::decode(None), Ok(None));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_identity_without_an_issuer_fails_closed() {
        assert_eq!(
            read(br#"{"subject":"forged"}"#),
            Err(ContractError::Missing(names::IDENTITY))
        );
        assert_eq!(
            read(br#"{"issuer":"","subject":"forged"}"#),
            Err(ContractError::Malformed(names::IDENTITY))
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_identity_beside_a_bypass_fails_closed() {
        for value in [
            &br#"{"bypass":"path","subject":"forged"}"#[..],
            br#"{"issuer":"https://idp.bank.example","bypass":"path"}"#,
            br#"{"bypass":"path","claims":{"acr":"sca"}}"#,
        ] {
            assert_eq!(read(value), Err(ContractError::BypassWithIdentity));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn malformed_values_fail_closed() {
        let issuer = r#""issuer":"https://idp.bank.example""#;
        let cases = [
            "user-7".to_string(),
            "[]".to_string(),
            r#"["https://idp.bank.example","user-7"]"#.to_string(),
            format!(" {{{issuer}}}"),
            format!("{{{issuer},\"role\":\"admin\"}}"),
            format!("{{{issuer},\"subject\":\"a\",\"subject\":\"b\"}}"),
            format!("{{{issuer},\"scopes\":[\"two words\"]}}"),
            format!("{{{issuer},\"scopes\":\"payments:read\"}}"),
            format!("{{{issuer},\"customer\":\"\"}}"),
            format!("{{{issuer},\"claims\":{{\"acr\":1}}}}"),
            r#"{"bypass":"yes"}"#.to_string(),
            format!("{{{issuer}}} trailing"),
        ];
        for value in cases {
            assert_eq!(
                read(value.as_bytes()),
                Err(ContractError::Malformed(names::IDENTITY)),
                "{value}"
            );
        }
        assert_eq!(
            read(b"{\"issuer\":\"user-\xff\"}"),
            Err(ContractError::Malformed(names::IDENTITY))
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn scopes_that_are_no_scope_tokens_are_not_handed_on() {
        let odd = VerifiedIdentity {
            scopes: vec!["payments:read".into(), "two words".into(), String::new()],
            ..identity()
        };
        let value = verified(odd).encode();
        let read = VerifiedIdentity::decode(Some(&value)).unwrap().unwrap();
        assert_eq!(read.scopes, ["payments:read"]);
        assert!(read.has_scope("payments:read"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_refusal_round_trips_and_half_of_one_fails_closed() {
        let refusal = Refusal::new("jwt-auth", "missing-token").unwrap();
        let state: HashMap<String, Vec<u8>> = refusal
            .to_properties()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(
            Refusal::from_lookup(|n| state.get(n).cloned()),
            Ok(Some(refusal))
        );
        assert_eq!(Refusal::from_lookup(|_| None), Ok(None));
        let half = |n: &str| (n == names::DENIED_BY).then(|| b"jwt-auth".to_vec());
        assert_eq!(
            Refusal::from_lookup(half),
            Err(ContractError::Missing(names::DENY_REASON))
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refusals_name_slugs_only() {
        assert!(Refusal::new("jwt-auth", "Missing token").is_none());
        assert!(Refusal::new("", "x").is_none());
        assert!(Refusal::new("banking-headers", "invalid-header.x-customer-id").is_some());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn dry_run_refusals_accumulate_in_chain_order() {
        let first = Refusal::new("rate-limit", "over-limit").unwrap();
        let second = Refusal::new("idempotency", "key-reused").unwrap();
        let value = append_would_deny(None, &first);
        let value = append_would_deny(Some(&value), &second);
        assert_eq!(value, b"rate-limit:over-limit idempotency:key-reused");
        assert_eq!(parse_would_deny(&value), Ok(vec![first, second]));
        assert_eq!(parse_would_deny(b""), Ok(Vec::new()));
        assert_eq!(
            parse_would_deny(b"no-colon"),
            Err(ContractError::Malformed(names::WOULD_DENY))
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_name_is_distinct_and_in_the_banking_namespace() {
        let mut all: Vec<&str> = [names::IDENTITY]
            .iter()
            .chain(names::REFUSAL.iter())
            .copied()
            .chain([
                names::WOULD_DENY,
                names::RATE_LIMIT_NAME,
                names::RATE_LIMIT_REMAINING,
                names::IDEMPOTENCY_KEY_STATUS,
            ])
            .collect();
        assert!(all.iter().all(|n| n.starts_with("banking.")));
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count);
    }
}
