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
//! Every value is UTF-8 text. Envoy keeps each one as filter state `wasm.<name>`; another
//! Wasm filter reads it with `get_property(["<name>"])`, RBAC and CEL as
//! `filter_state["wasm.<name>"]`.
//!
//! | name | set by | value |
//! |------|--------|-------|
//! | [`names::ISSUER`] | jwt-auth, every allowed request | the verified token's `iss`; empty when authentication was bypassed |
//! | [`names::SUBJECT`] | jwt-auth, every allowed request | `sub`; empty when the token has none or authentication was bypassed |
//! | [`names::CUSTOMER`] | jwt-auth, every allowed request | the customer id: the claim `customerBinding.claim` names; empty without a binding or the claim |
//! | [`names::CLIENT`] | jwt-auth, every allowed request | the OAuth client: `client_id` (RFC 9068), else `azp` (OIDC); empty when neither |
//! | [`names::SCOPES`] | jwt-auth, every allowed request | granted scopes, space-separated as in OAuth (RFC 6749 §3.3), from `scope` and `scp` |
//! | [`names::BYPASS`] | jwt-auth, every allowed request | empty when a token was verified; `path` (a bypass path) or `cors-preflight` when none was needed |
//! | `banking.jwt.claim.<claim>` | jwt-auth, verified requests | each of `outputs.filterStateClaims`, as configured |
//! | [`names::DENIED_BY`] | the filter that refuses a request | that filter's name, e.g. `jwt-auth` |
//! | [`names::DENY_REASON`] | the filter that refuses a request | its reason slug, e.g. `missing-token` |
//!
//! jwt-auth writes all six identity names on every request it lets through, empty ones
//! included, so that each exists, created by jwt-auth, before any later filter runs: where the
//! host supports read-only declarations (see `host::filter_state`), a later filter can then
//! neither overwrite one nor add one jwt-auth left out. A reader takes an absent name as an
//! empty one: Envoy hands an empty value back as a null buffer, which the Rust SDK reads as
//! "no such property". It fails closed on anything else that does not follow this table
//! ([`ContractError`]): identity values without an issuer, a bypass that also names an
//! identity, bytes that are not UTF-8, a scope list with empty entries.
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
//! - [`names::WOULD_DENY`]: a filter in a future `mode: dryRun` that would have refused but
//!   let the request through. Several filters can do so in one chain (nothing stops it), so
//!   the value is a list: space-separated `<filter>:<reason>` entries in chain order
//!   ([`append_would_deny`], [`parse_would_deny`]). It never sets [`names::DENIED_BY`].
//! - [`names::RATE_LIMIT_NAME`], [`names::RATE_LIMIT_REMAINING`]: the limit that applied to
//!   the request (its configured name) and what remained of it after the request (decimal).
//! - [`names::IDEMPOTENCY_KEY_STATUS`]: what the idempotency filter found for the request's
//!   key: `new`, `replayed`, `in-flight` or `mismatch`.

use std::fmt;

/// Every name in the contract.
pub mod names {
    pub const ISSUER: &str = "banking.jwt.issuer";
    pub const SUBJECT: &str = "banking.jwt.subject";
    pub const CUSTOMER: &str = "banking.jwt.customer";
    pub const CLIENT: &str = "banking.jwt.client";
    pub const SCOPES: &str = "banking.jwt.scopes";
    pub const BYPASS: &str = "banking.jwt.bypass";
    /// Prefix of `banking.jwt.claim.<claim>`, one per claim of jwt-auth's
    /// `outputs.filterStateClaims`.
    pub const CLAIM_PREFIX: &str = "banking.jwt.claim.";

    /// What jwt-auth writes on every request it lets through, in this order.
    pub const IDENTITY: [&str; 6] = [ISSUER, SUBJECT, CUSTOMER, CLIENT, SCOPES, BYPASS];

    pub const DENIED_BY: &str = "banking.decision.denied_by";
    pub const DENY_REASON: &str = "banking.decision.reason";
    /// What a refusing filter writes.
    pub const REFUSAL: [&str; 2] = [DENIED_BY, DENY_REASON];

    /// Reserved: dry-run refusals, `<filter>:<reason>` entries separated by spaces.
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
    /// Identity values beside a bypass: an authenticated and an unauthenticated request at once.
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
                "filter state {} says authentication was bypassed but an identity is set",
                names::BYPASS
            ),
        }
    }
}

impl std::error::Error for ContractError {}

/// What jwt-auth established about a request's caller from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The token's issuer; never empty.
    pub issuer: String,
    pub subject: Option<String>,
    pub customer: Option<String>,
    pub client: Option<String>,
    /// Granted scopes, each an RFC 6749 scope-token.
    pub scopes: Vec<String>,
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

fn encode_scopes(scopes: &[String]) -> Vec<u8> {
    // A scope that is no scope-token could not be told apart once joined; no rule can
    // require one either (jwt-auth's config takes scope-tokens), so it is not handed on.
    let valid: Vec<&str> = scopes
        .iter()
        .map(String::as_str)
        .filter(|s| is_scope_token(s))
        .collect();
    valid.join(" ").into_bytes()
}

fn decode_scopes(text: &str) -> Result<Vec<String>, ContractError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(' ')
        .map(|s| {
            is_scope_token(s)
                .then(|| s.to_owned())
                .ok_or(ContractError::Malformed(names::SCOPES))
        })
        .collect()
}

fn optional(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

impl Authentication {
    /// Every identity property with its value, in [`names::IDENTITY`] order: all six, always.
    pub fn to_properties(&self) -> Vec<(&'static str, Vec<u8>)> {
        let text = |value: &Option<String>| value.clone().unwrap_or_default().into_bytes();
        match self {
            Authentication::Verified(id) => vec![
                (names::ISSUER, id.issuer.clone().into_bytes()),
                (names::SUBJECT, text(&id.subject)),
                (names::CUSTOMER, text(&id.customer)),
                (names::CLIENT, text(&id.client)),
                (names::SCOPES, encode_scopes(&id.scopes)),
                (names::BYPASS, Vec::new()),
            ],
            Authentication::Bypassed(why) => {
                let mut properties: Vec<(&'static str, Vec<u8>)> = names::IDENTITY
                    .iter()
                    .map(|name| (*name, Vec::new()))
                    .collect();
                if let Some(slot) = properties.last_mut() {
                    slot.1 = why.as_str().as_bytes().to_vec();
                }
                properties
            }
        }
    }

    /// Reads what jwt-auth published through `lookup` (a property's bytes, `None` when the
    /// host has no such property, read as empty). `Ok(None)` when none of the identity names
    /// is set (jwt-auth did not run on this request); an error for anything the contract does
    /// not allow.
    pub fn from_lookup(
        mut lookup: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Option<Authentication>, ContractError> {
        let mut values: Vec<Option<String>> = Vec::with_capacity(names::IDENTITY.len());
        for name in names::IDENTITY {
            let value = lookup(name)
                .map(|bytes| String::from_utf8(bytes).map_err(|_| ContractError::NotUtf8(name)))
                .transpose()?;
            values.push(value);
        }
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        let values: Vec<String> = values.into_iter().map(Option::unwrap_or_default).collect();
        let [issuer, subject, customer, client, scopes, bypass]: [String; 6] = values
            .try_into()
            .map_err(|_| ContractError::Missing(names::ISSUER))?;
        if !bypass.is_empty() {
            let why = Bypass::parse(&bypass).ok_or(ContractError::Malformed(names::BYPASS))?;
            let identity = [&issuer, &subject, &customer, &client, &scopes];
            if identity.iter().any(|v| !v.is_empty()) {
                return Err(ContractError::BypassWithIdentity);
            }
            return Ok(Some(Authentication::Bypassed(why)));
        }
        if issuer.is_empty() {
            return Err(ContractError::Missing(names::ISSUER));
        }
        Ok(Some(Authentication::Verified(VerifiedIdentity {
            issuer,
            subject: optional(subject),
            customer: optional(customer),
            client: optional(client),
            scopes: decode_scopes(&scopes)?,
        })))
    }
}

impl VerifiedIdentity {
    /// What jwt-auth publishes for this identity: every name of [`names::IDENTITY`].
    pub fn to_properties(&self) -> Vec<(&'static str, Vec<u8>)> {
        Authentication::Verified(self.clone()).to_properties()
    }

    /// The verified identity, if jwt-auth verified a token for this request: `Ok(None)` when
    /// it did not run or the request bypassed authentication. An error must fail the request
    /// closed.
    pub fn from_lookup(
        lookup: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Option<VerifiedIdentity>, ContractError> {
        Ok(match Authentication::from_lookup(lookup)? {
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
        }
    }

    fn store(properties: Vec<(&'static str, Vec<u8>)>) -> HashMap<String, Vec<u8>> {
        properties
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    fn read(state: &HashMap<String, Vec<u8>>) -> Result<Option<Authentication>, ContractError> {
        Authentication::from_lookup(|name| state.get(name).cloned())
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_verified_identity_round_trips_through_every_name() {
        let properties = identity().to_properties();
        let names: Vec<&str> = properties.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, names::IDENTITY);
        let state = store(properties);
        assert_eq!(state[names::SCOPES], b"payments:read accounts:read");
        assert_eq!(state[names::BYPASS], b"");
        assert_eq!(
            VerifiedIdentity::from_lookup(|n| state.get(n).cloned()),
            Ok(Some(identity()))
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn absent_optional_values_are_written_empty_and_read_as_none() {
        let bare = VerifiedIdentity {
            subject: None,
            customer: None,
            client: None,
            scopes: Vec::new(),
            ..identity()
        };
        let state = store(bare.to_properties());
        assert_eq!(state.len(), 6);
        assert_eq!(read(&state), Ok(Some(Authentication::Verified(bare))));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_bypass_writes_every_name_and_is_no_identity() {
        let state = store(Authentication::Bypassed(Bypass::CorsPreflight).to_properties());
        assert_eq!(state.len(), 6);
        assert_eq!(state[names::BYPASS], b"cors-preflight");
        assert_eq!(
            read(&state),
            Ok(Some(Authentication::Bypassed(Bypass::CorsPreflight)))
        );
        assert_eq!(
            VerifiedIdentity::from_lookup(|n| state.get(n).cloned()),
            Ok(None)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn nothing_published_is_absent_not_an_error() {
        assert_eq!(read(&HashMap::new()), Ok(None));
        assert_eq!(VerifiedIdentity::from_lookup(|_| None), Ok(None));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_subject_without_an_issuer_fails_closed() {
        let mut state = HashMap::new();
        state.insert(names::SUBJECT.to_string(), b"forged".to_vec());
        assert_eq!(read(&state), Err(ContractError::Missing(names::ISSUER)));
        let blank = store(
            names::IDENTITY
                .iter()
                .map(|name| (*name, Vec::new()))
                .collect(),
        );
        assert_eq!(read(&blank), Err(ContractError::Missing(names::ISSUER)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_absent_name_reads_as_an_empty_one() {
        // What an SDK-based reader sees for the empty values jwt-auth writes.
        let mut state = store(identity().to_properties());
        state.remove(names::SCOPES);
        state.remove(names::BYPASS);
        let read = VerifiedIdentity::from_lookup(|n| state.get(n).cloned());
        assert_eq!(read.unwrap().unwrap().scopes, Vec::<String>::new());
        let mut state = HashMap::new();
        state.insert(names::BYPASS.to_string(), b"path".to_vec());
        assert_eq!(
            Authentication::from_lookup(|n| state.get(n).cloned()),
            Ok(Some(Authentication::Bypassed(Bypass::Path)))
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_identity_beside_a_bypass_fails_closed() {
        let mut state = store(Authentication::Bypassed(Bypass::Path).to_properties());
        state.insert(names::SUBJECT.to_string(), b"forged".to_vec());
        assert_eq!(read(&state), Err(ContractError::BypassWithIdentity));
        let mut state = store(identity().to_properties());
        state.insert(names::BYPASS.to_string(), b"path".to_vec());
        assert_eq!(read(&state), Err(ContractError::BypassWithIdentity));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn malformed_values_fail_closed() {
        let cases: [(&'static str, &[u8], ContractError); 5] = [
            (
                names::SUBJECT,
                b"user-\xff",
                ContractError::NotUtf8(names::SUBJECT),
            ),
            (
                names::SCOPES,
                b"a  b",
                ContractError::Malformed(names::SCOPES),
            ),
            (
                names::SCOPES,
                b"a\"b",
                ContractError::Malformed(names::SCOPES),
            ),
            (
                names::BYPASS,
                b"yes",
                ContractError::Malformed(names::BYPASS),
            ),
            (names::ISSUER, b"", ContractError::Missing(names::ISSUER)),
        ];
        for (name, value, error) in cases {
            let mut state = store(identity().to_properties());
            state.insert(name.to_string(), value.to_vec());
            assert_eq!(read(&state), Err(error), "{name} = {value:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn scopes_that_are_no_scope_tokens_are_not_handed_on() {
        let odd = VerifiedIdentity {
            scopes: vec!["payments:read".into(), "two words".into(), String::new()],
            ..identity()
        };
        let state = store(odd.to_properties());
        assert_eq!(state[names::SCOPES], b"payments:read");
        let read = VerifiedIdentity::from_lookup(|n| state.get(n).cloned()).unwrap();
        assert!(read.unwrap().has_scope("payments:read"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_refusal_round_trips_and_half_of_one_fails_closed() {
        let refusal = Refusal::new("jwt-auth", "missing-token").unwrap();
        let state = store(refusal.to_properties());
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
        let mut all: Vec<&str> = names::IDENTITY
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
        assert!(all.iter().all(|n| !n.starts_with(names::CLAIM_PREFIX)));
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count);
    }
}
