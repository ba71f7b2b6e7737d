//! The request decision: bypasses, token lookup, verification (or the cache), route
//! scopes, customer binding, and the outputs handed upstream and to later filters.
//!
//! Plain data in (config, per-provider key sets, the cache, request headers, the host's
//! time), a [`Decision`] out. No proxy-wasm here.

use std::collections::BTreeMap;
use std::rc::Rc;

use banking_filter_common::clock::Timestamp;
use banking_filter_common::headers::{self, HeaderPairs, same_header_name};
use banking_filter_common::identity::Authentication;
use banking_filter_common::route::{self, Route};
use serde_json::{Map, Value};

use crate::cache::TokenCache;
use crate::config::{Config, Rule, TokenSource};
use crate::decision::{self, Allow, AllowKind, Decision, Denial, DenyReason, Outputs, Published};
use crate::jwks::KeySet;
use crate::native::SignatureChecks;
use crate::token::{self, Found, Refusal};
use crate::verify;

/// A provider's keys as this worker currently has them.
#[derive(Debug, Clone, Default)]
pub struct ProviderKeys {
    /// None until the first JWKS arrives (remote providers). May be empty: the issuer
    /// published no usable key, and its tokens are refused.
    pub set: Option<Rc<KeySet>>,
    /// Names the keys in `set` (a remote set's [`KeySet::fingerprint`]): the same keys
    /// fetched again keep it, other keys change it. Cached verifications name the version
    /// they used.
    pub version: u64,
    /// The set is not trusted at or after this time (a remote set's fetch time plus
    /// `maxStaleness`); `None` for an inline set, trusted for good.
    pub expires_at: Option<Timestamp>,
}

impl ProviderKeys {
    /// Whether the set is past `expires_at` at `now`.
    pub fn is_stale(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|expires| now >= expires)
    }
}

/// Where the core finds each provider's current keys: the key manager in the filter, a
/// plain list in tests.
pub trait KeySets {
    /// Provider `index`'s keys; `None` for an index out of range.
    fn provider(&self, index: usize) -> Option<&ProviderKeys>;
}

impl KeySets for [ProviderKeys] {
    fn provider(&self, index: usize) -> Option<&ProviderKeys> {
        self.get(index)
    }
}

impl KeySets for Vec<ProviderKeys> {
    fn provider(&self, index: usize) -> Option<&ProviderKeys> {
        self.get(index)
    }
}

/// The request as the core sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a [u8],
    pub path: &'a [u8],
    pub headers: &'a HeaderPairs,
}

impl<'a> Request<'a> {
    /// Reads `:method` and `:path` from the pseudo-headers.
    pub fn from_headers(headers: &'a HeaderPairs) -> Self {
        Request {
            method: headers::lookup(headers, ":method")
                .single()
                .unwrap_or_default(),
            path: headers::lookup(headers, ":path")
                .single()
                .unwrap_or_default(),
            headers,
        }
    }
}

/// Whether the verified-token cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Miss,
}

/// The decision plus what the shell should do besides applying it.
#[derive(Debug)]
pub struct Evaluation {
    pub decision: Decision,
    /// A token named a `kid` this provider's set lacks: its JWKS may need a re-fetch.
    pub refetch_provider: Option<usize>,
    /// The token's provider had no keys yet, or none with the token's `kid`: a newer set
    /// (one another worker fetched) may answer it, so the shell looks before refusing.
    pub keys_wanted: Option<usize>,
    pub cache: Option<CacheUse>,
}

impl Evaluation {
    fn deny(denial: Denial) -> Self {
        Evaluation {
            decision: Decision::Deny(denial),
            refetch_provider: None,
            keys_wanted: None,
            cache: None,
        }
    }
}

/// Decides one request; a signature it must check goes the way `checks` allows.
pub fn authorize<K: KeySets + ?Sized>(
    config: &Config,
    keys: &K,
    cache: &mut TokenCache,
    request: &Request<'_>,
    now: Timestamp,
    checks: &SignatureChecks,
) -> Evaluation {
    let route = match config.routes.resolve(request.headers) {
        Ok(route) => route,
        Err(defect) => {
            return Evaluation::deny(Denial::new(DenyReason::InvalidPath, defect.detail()));
        }
    };
    let owned = owned_headers(config, request.headers);

    if route == Route::Bypass {
        return allowed(AllowKind::Bypassed, owned);
    }
    if config.bypass_cors_preflight && is_cors_preflight(request) {
        return allowed(AllowKind::Preflight, owned);
    }

    let (token, source) = match token::find(&config.token_sources, request.headers, request.path) {
        Found::Nothing => return Evaluation::deny(Denial::plain(DenyReason::MissingToken)),
        Found::Several => {
            return Evaluation::deny(Denial::new(
                DenyReason::MultipleTokens,
                "Send the access token once, in one place.",
            ));
        }
        Found::One { token, source } => (token, source),
    };

    // A verification made with keys that are gone or stale is not reused.
    let version_of = |p: usize| {
        keys.provider(p)
            .filter(|k| k.set.is_some() && !k.is_stale(now))
            .map(|k| k.version)
    };
    let (prepared, cache_use) = match cache.get(token, now, version_of) {
        Some(hit) => (hit, CacheUse::Hit),
        None => match verify_fresh(config, keys, token, now, checks) {
            Ok((provider, verified)) => {
                let prepared = Rc::new(Prepared::new(config, verified.claims, token));
                let version = keys.provider(provider).map_or(0, |k| k.version);
                cache.insert(
                    token,
                    provider,
                    version,
                    Rc::clone(&prepared),
                    verified.expires_at,
                    now,
                );
                (prepared, CacheUse::Miss)
            }
            Err((denial, keys_wanted)) => {
                // A kid the set lacks (or a set without a usable key) may mean the set is
                // out of date: refetch, at most once per minRefetchInterval.
                let refetch_provider = keys_wanted.filter(|_| {
                    matches!(
                        denial.reason,
                        DenyReason::UnknownKey | DenyReason::NoUsableKey
                    )
                });
                return Evaluation {
                    decision: Decision::Deny(denial),
                    refetch_provider,
                    keys_wanted,
                    cache: (config.cache_entries > 0).then_some(CacheUse::Miss),
                };
            }
        },
    };
    let cache_use = (config.cache_entries > 0).then_some(cache_use);

    let decision = match check_request(config, &prepared, request, &route) {
        Err(denial) => Decision::Deny(denial),
        Ok(()) => Decision::Allow(allow_verified(config, &prepared, source, owned)),
    };
    Evaluation {
        decision,
        refetch_provider: None,
        keys_wanted: None,
        cache: cache_use,
    }
}

fn allowed(kind: AllowKind, remove_headers: Vec<String>) -> Evaluation {
    Evaluation {
        decision: Decision::Allow(Allow {
            kind,
            remove_headers,
            outputs: Rc::new(Outputs {
                identity: decision::handoff(kind, None, None).map(Published::new),
                ..Outputs::default()
            }),
        }),
        refetch_provider: None,
        keys_wanted: None,
        cache: None,
    }
}

/// A refusal, and the provider whose keys fell short (none yet, or no key with the `kid`).
type Failure = (Denial, Option<usize>);

fn verify_fresh<K: KeySets + ?Sized>(
    config: &Config,
    keys: &K,
    token: &[u8],
    now: Timestamp,
    checks: &SignatureChecks,
) -> Result<(usize, verify::Verified), Failure> {
    let unverified = token::parse(token, config.max_token_bytes).map_err(|r| {
        let reason = match r {
            Refusal::TooLarge => DenyReason::TokenTooLarge,
            Refusal::Malformed(_) => DenyReason::MalformedToken,
            Refusal::AlgorithmNotAllowed(_) => DenyReason::AlgorithmNotAllowed,
        };
        (
            Denial::new(reason, format!("{}.", capitalize(&r.to_string()))),
            None,
        )
    })?;
    // The issuer picks the provider; nothing about it is trusted until the signature is.
    let issuer = unverified.claims.get("iss").and_then(Value::as_str);
    let Some((index, provider)) = config
        .providers
        .iter()
        .enumerate()
        .find(|(_, p)| Some(p.issuer.as_str()) == issuer)
    else {
        return Err((
            Denial::new(
                DenyReason::UnknownIssuer,
                "The token's iss is not a trusted issuer.",
            ),
            None,
        ));
    };
    let provider_keys = keys.provider(index);
    let Some(set) = provider_keys.and_then(|k| k.set.as_deref()) else {
        return Err((
            Denial::new(
                DenyReason::KeysUnavailable,
                "The issuer's signing keys have not been fetched yet; retry shortly.",
            ),
            Some(index),
        ));
    };
    // Each of these may be answered by a newer set another worker fetched: `Some(index)`.
    if provider_keys.is_some_and(|k| k.is_stale(now)) {
        return Err((
            Denial::new(
                DenyReason::KeysStale,
                "The issuer's signing keys could not be refreshed for longer than allowed; \
                 retry shortly.",
            ),
            Some(index),
        ));
    }
    if set.is_empty() {
        return Err((
            Denial::new(
                DenyReason::NoUsableKey,
                "The issuer publishes no key usable for this token.",
            ),
            Some(index),
        ));
    }
    verify::verify(
        provider,
        set,
        unverified,
        now,
        config.max_token_bytes,
        checks,
    )
    .map(|v| (index, v))
    .map_err(|d| {
        let short = (d.reason == DenyReason::UnknownKey).then_some(index);
        (d, short)
    })
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The request headers this filter owns (its outputs, which a client must not set) that
/// this request carries: each as the request spelled it (lower-cased), including the `_`
/// spellings an upstream reads as the same header. Removed from every request that goes on,
/// allowed or (dry-run) not, before the outputs are set; a name the request does not carry
/// costs no hostcall.
pub fn owned_headers(config: &Config, headers: &HeaderPairs) -> Vec<String> {
    let outputs = &config.outputs;
    let configured = outputs
        .claim_headers
        .iter()
        .map(|(_, header)| header)
        .chain(outputs.payload_header.iter());
    let mut owned: Vec<String> = Vec::new();
    // Most requests carry none: only a header that matches is lower-cased and kept.
    for (name, _) in headers.iter() {
        if configured.clone().any(|o| same_header_name(name, o)) {
            let name = name.to_ascii_lowercase();
            if !owned.contains(&name) {
                owned.push(name);
            }
        }
    }
    owned
}

/// Route scopes and customer binding: what the token may do with this request.
fn check_request(
    config: &Config,
    prepared: &Prepared,
    request: &Request<'_>,
    route: &Route<'_, Rule>,
) -> Result<(), Denial> {
    if *route == Route::NotAllowed {
        return Err(Denial::new(
            DenyReason::RouteNotAllowed,
            route::route_not_allowed().detail,
        ));
    }
    if let Route::Rule(rule) = route {
        let granted = &prepared.scopes;
        if !rule
            .required_scopes
            .iter()
            .all(|s| granted.iter().any(|g| g == s))
        {
            let mut denial = Denial::new(
                DenyReason::InsufficientScope,
                format!(
                    "This request needs the scope(s): {}.",
                    rule.required_scopes.join(" ")
                ),
            );
            denial.scope = Some(rule.required_scopes.join(" "));
            return Err(denial);
        }
    }
    if let Some(binding) = &config.customer_binding {
        let sent = headers::all(request.headers, &binding.header);
        if !sent.is_empty() {
            let matches = prepared
                .bound_customer
                .as_deref()
                .is_some_and(|id| sent.iter().all(|v| *v == id.as_bytes()));
            if !matches {
                return Err(Denial::new(
                    DenyReason::CustomerMismatch,
                    format!(
                        "The {} header does not match the token's {} claim.",
                        binding.header, binding.claim
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A claim as header/filter-state text: strings as they are, numbers and booleans
/// printed, arrays of strings joined with `,`. Objects and mixed arrays have no text.
fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        _ => None,
    }
}

/// Header values may not carry control characters (a claim with CR/LF must not become
/// a second header).
fn header_safe(text: &str) -> bool {
    text.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// What a verified token establishes, worked out once, when it is verified, for this
/// request and every later one that reuses the cached verification: a cache hit only
/// compares scopes and the bound customer and hands on these outputs as they are.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The scopes the token grants (see [`decision::granted_scopes`]).
    scopes: Vec<String>,
    /// The customer-binding claim as text, when configured and present.
    bound_customer: Option<String>,
    outputs: Rc<Outputs>,
}

impl Prepared {
    fn new(config: &Config, claims: Map<String, Value>, token: &[u8]) -> Prepared {
        let mut set_headers = Vec::new();
        for (claim, header) in &config.outputs.claim_headers {
            if let Some(text) = claims.get(claim).and_then(claim_text)
                && header_safe(&text)
            {
                set_headers.push((header.clone(), text.into_bytes()));
            }
        }
        if let Some(header) = &config.outputs.payload_header
            && let Some(payload) = std::str::from_utf8(token)
                .ok()
                .and_then(token::payload_segment)
        {
            set_headers.push((header.clone(), payload.as_bytes().to_vec()));
        }
        let customer_claim = config.customer_binding.as_ref().map(|b| b.claim.as_str());
        let identity = decision::handoff(AllowKind::Verified, Some(&claims), customer_claim).map(
            |mut authentication| {
                if let Authentication::Verified(identity) = &mut authentication {
                    identity.claims = published_claims(config, &claims);
                }
                Published::new(authentication)
            },
        );
        Prepared {
            scopes: decision::granted_scopes(&claims),
            bound_customer: customer_claim
                .and_then(|claim| claims.get(claim))
                .and_then(claim_text),
            outputs: Rc::new(Outputs {
                set_headers,
                identity,
            }),
        }
    }
}

/// The claims of `outputs.filterStateClaims` the token carries, as text, for the identity's
/// `claims`.
fn published_claims(config: &Config, claims: &Map<String, Value>) -> BTreeMap<String, String> {
    let mut published = BTreeMap::new();
    for claim in &config.outputs.filter_state_claims {
        let text = match claims.get(claim) {
            None | Some(Value::Null) => continue,
            Some(v) => claim_text(v).unwrap_or_else(|| v.to_string()),
        };
        published.insert(claim.clone(), text);
    }
    published
}

/// The allowed request's changes: the token's prepared outputs, and the headers this
/// request must lose (this filter's own, in any spelling it used, and the token's header
/// when `removeTokenHeader` says so).
fn allow_verified(
    config: &Config,
    prepared: &Prepared,
    source: usize,
    mut remove_headers: Vec<String>,
) -> Allow {
    if config.outputs.remove_token_header
        && let Some(TokenSource::Header { name, .. }) = config.token_sources.get(source)
    {
        remove_headers.push(name.clone());
    }
    Allow {
        kind: AllowKind::Verified,
        remove_headers,
        outputs: Rc::clone(&prepared.outputs),
    }
}

fn is_cors_preflight(request: &Request<'_>) -> bool {
    request.method == b"OPTIONS"
        && !headers::all(request.headers, "origin").is_empty()
        && !headers::all(request.headers, "access-control-request-method").is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::jwks::{Algorithm, KeyOrigin};
    use crate::testkeys::{NOW, claims_with, good_claims, mint};
    use banking_filter_common::identity::Authentication;
    use serde_json::json;
    use test_tokens::{ec256, ed25519, forged, jwks, raw, rsa};
    use wasm_bindgen_test::wasm_bindgen_test;

    struct World {
        config: Config,
        keys: Vec<ProviderKeys>,
        cache: TokenCache,
    }

    fn world(extra: &str) -> World {
        let text = format!(
            r#"{{"instance":"test","providers":[{{"issuer":"https://idp.bank.example","audiences":["payments-api"],"jwks":{}}}]{extra}}}"#,
            jwks([
                ec256().jwk("ec256"),
                rsa().jwk("rsa").key_use("sig").alg("RS256")
            ]),
        );
        let config = Config::parse(text.as_bytes()).unwrap().config;
        let set = match &config.providers[0].keys {
            crate::config::KeySource::Inline(set) => set.clone(),
            crate::config::KeySource::Remote(_) => unreachable!(),
        };
        let cache = TokenCache::new(config.cache_entries, config.cache_ttl);
        World {
            config,
            keys: vec![ProviderKeys {
                set: Some(Rc::new(set)),
                version: 1,
                expires_at: None,
            }],
            cache,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_unix_seconds(NOW)
    }

    fn headers(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    impl World {
        fn run(&mut self, list: &[(&str, &str)]) -> Evaluation {
            let h = headers(list);
            let req = Request::from_headers(&h);
            authorize(
                &self.config,
                &self.keys,
                &mut self.cache,
                &req,
                now(),
                &SignatureChecks::in_wasm(),
            )
        }
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn good_token() -> String {
        mint(Algorithm::ES256, Some("ec256"), good_claims())
    }

    fn denied(e: &Evaluation) -> &Denial {
        match &e.decision {
            Decision::Deny(d) => d,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    fn allowed(e: &Evaluation) -> &Allow {
        match &e.decision {
            Decision::Allow(a) => a,
            other => panic!("expected allow, got {other:?}"),
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn valid_token_is_allowed_and_identity_goes_to_filter_state() {
        let mut w = world("");
        let t = good_token();
        let e = w.run(&[
            (":method", "GET"),
            (":path", "/accounts"),
            ("authorization", &bearer(&t)),
        ]);
        let a = allowed(&e);
        assert_eq!(a.kind, AllowKind::Verified);
        let Some(published) = &a.outputs.identity else {
            panic!("a verified token carries its identity");
        };
        let Authentication::Verified(identity) = &published.authentication else {
            panic!("not a verified identity: {published:?}");
        };
        assert_eq!(identity.issuer, "https://idp.bank.example");
        assert_eq!(identity.subject.as_deref(), Some("cust-42"));
        // No `outputs.filterStateClaims` configured: no claims beside the identity.
        assert!(identity.claims.is_empty(), "{:?}", identity.claims);
        // The bytes the shell writes are those of this identity, encoded once.
        assert_eq!(published.value, published.authentication.encode());
        assert_eq!(e.cache, Some(CacheUse::Miss));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn second_use_of_a_token_is_a_cache_hit_until_exp() {
        let mut w = world("");
        let t = good_token();
        let req = [
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &bearer(&t)),
        ];
        assert_eq!(w.run(&req).cache, Some(CacheUse::Miss));
        let e = w.run(&req);
        assert_eq!(e.cache, Some(CacheUse::Hit));
        allowed(&e);
        // Past exp the cache no longer answers and the token is refused as expired.
        let h = headers(&req);
        let later = Timestamp::from_unix_seconds(NOW + 301 + 60);
        let e = authorize(
            &w.config,
            &w.keys,
            &mut w.cache,
            &Request::from_headers(&h),
            later,
            &SignatureChecks::in_wasm(),
        );
        assert_eq!(denied(&e).reason, DenyReason::Expired);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn key_rotation_invalidates_cached_verifications() {
        let mut w = world("");
        let t = good_token();
        let req = [
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &bearer(&t)),
        ];
        w.run(&req);
        // New set without the old key.
        let set = KeySet::parse(
            jwks([ed25519().jwk("new")]).as_bytes(),
            &Algorithm::ALL,
            KeyOrigin::Remote,
        )
        .unwrap();
        w.keys[0] = ProviderKeys {
            set: Some(Rc::new(set)),
            version: 2,
            expires_at: None,
        };
        let e = w.run(&req);
        assert_eq!(denied(&e).reason, DenyReason::UnknownKey);
        assert_eq!(e.refetch_provider, Some(0));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_set_without_a_usable_key_refuses_every_token_and_its_cached_verifications() {
        let mut w = world("");
        let t = good_token();
        let req = [
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &bearer(&t)),
        ];
        allowed(&w.run(&req));
        // The issuer now publishes no key this provider may use.
        let set = KeySet::parse_published(
            jwks([ed25519().jwk("ec256")]).as_bytes(),
            &[Algorithm::ES256],
            KeyOrigin::Remote,
        )
        .unwrap();
        w.keys[0] = ProviderKeys {
            version: set.fingerprint(),
            set: Some(Rc::new(set)),
            expires_at: None,
        };
        let kid_less = mint(Algorithm::ES256, None, good_claims());
        for token in [&t, &kid_less] {
            let e = w.run(&[
                (":method", "GET"),
                (":path", "/a"),
                ("authorization", &bearer(token)),
            ]);
            let d = denied(&e);
            assert_eq!((d.reason, d.status()), (DenyReason::NoUsableKey, 401));
            assert_eq!(
                d.detail,
                "The issuer publishes no key usable for this token."
            );
            assert_eq!(e.cache, Some(CacheUse::Miss), "not the cached verification");
            // A newer set may have keys again: look for one, and refetch in due course.
            assert_eq!((e.keys_wanted, e.refetch_provider), (Some(0), Some(0)));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_stale_set_is_503_and_its_cached_verifications_are_not_used() {
        let mut w = world("");
        let t = good_token();
        let req = [
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &bearer(&t)),
        ];
        w.keys[0].expires_at = Some(now().plus(std::time::Duration::from_secs(1)));
        allowed(&w.run(&req));
        assert_eq!(w.run(&req).cache, Some(CacheUse::Hit));
        w.keys[0].expires_at = Some(now());
        let e = w.run(&req);
        let d = denied(&e);
        assert_eq!((d.reason, d.status()), (DenyReason::KeysStale, 503));
        assert_eq!(d.extra_headers(), vec![("retry-after", "1")]);
        assert_eq!(e.cache, Some(CacheUse::Miss));
        // Another worker may have refreshed it; no refetch asked: one is due anyway.
        assert_eq!((e.keys_wanted, e.refetch_provider), (Some(0), None));
        // Refreshed: served again.
        w.keys[0].expires_at = Some(now().plus(std::time::Duration::from_secs(60)));
        allowed(&w.run(&req));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn missing_token_is_401_with_bare_challenge() {
        let mut w = world("");
        let e = w.run(&[(":method", "GET"), (":path", "/a")]);
        let d = denied(&e);
        assert_eq!((d.reason, d.status()), (DenyReason::MissingToken, 401));
        assert_eq!(
            d.www_authenticate("banking-api").unwrap(),
            "Bearer realm=\"banking-api\""
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn two_tokens_are_refused_with_400() {
        let mut w = world(
            r#","tokenSources":[{"header":"authorization","prefix":"Bearer "},{"queryParam":"access_token"}]"#,
        );
        let t = good_token();
        let path = format!("/a?access_token={t}");
        let e = w.run(&[
            (":method", "GET"),
            (":path", &path),
            ("authorization", &bearer(&t)),
        ]);
        let d = denied(&e);
        assert_eq!((d.reason, d.status()), (DenyReason::MultipleTokens, 400));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_token_rejection_reason_reaches_the_decision() {
        let mut w = world(r#""#);
        let cases: Vec<(String, DenyReason)> = vec![
            ("x".repeat(9000), DenyReason::TokenTooLarge),
            ("not-a-jwt".into(), DenyReason::MalformedToken),
            (
                raw(
                    br#"{"alg":"none"}"#,
                    good_claims().to_string().as_bytes(),
                    b"sig",
                ),
                DenyReason::AlgorithmNotAllowed,
            ),
            (
                mint(
                    Algorithm::ES256,
                    Some("ec256"),
                    claims_with(json!({"iss": "https://evil.example"})),
                ),
                DenyReason::UnknownIssuer,
            ),
            (
                mint(
                    Algorithm::ES256,
                    Some("ec256"),
                    claims_with(json!({"iss": null})),
                ),
                DenyReason::UnknownIssuer,
            ),
            (
                mint(Algorithm::ES256, Some("nope"), good_claims()),
                DenyReason::UnknownKey,
            ),
            (
                mint(Algorithm::ES256, Some("rsa"), good_claims()),
                DenyReason::KeyAlgorithmMismatch,
            ),
            (forged("ec256", good_claims()), DenyReason::InvalidSignature),
            (
                mint(
                    Algorithm::ES256,
                    Some("ec256"),
                    claims_with(json!({"exp": NOW - 61})),
                ),
                DenyReason::Expired,
            ),
            (
                mint(
                    Algorithm::ES256,
                    Some("ec256"),
                    claims_with(json!({"nbf": NOW + 61})),
                ),
                DenyReason::NotYetValid,
            ),
            (
                mint(
                    Algorithm::ES256,
                    Some("ec256"),
                    claims_with(json!({"exp": null})),
                ),
                DenyReason::MissingExpiration,
            ),
            (
                mint(
                    Algorithm::ES256,
                    Some("ec256"),
                    claims_with(json!({"aud": "other"})),
                ),
                DenyReason::AudienceMismatch,
            ),
        ];
        for (token, reason) in cases {
            let e = w.run(&[
                (":method", "GET"),
                (":path", "/a"),
                ("authorization", &bearer(&token)),
            ]);
            let d = denied(&e);
            assert_eq!(d.reason, reason, "{}", d.detail);
            assert!(!d.detail.contains(&token), "detail must not echo the token");
            let challenge = d.www_authenticate("r").unwrap();
            assert!(!challenge.contains(&token));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_kid_asks_for_a_refetch() {
        let mut w = world("");
        let t = mint(Algorithm::ES256, Some("rotated"), good_claims());
        let e = w.run(&[
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &bearer(&t)),
        ]);
        assert_eq!(denied(&e).reason, DenyReason::UnknownKey);
        assert_eq!(e.refetch_provider, Some(0));
        assert_eq!(e.keys_wanted, Some(0));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keys_not_yet_fetched_is_503() {
        let mut w = world("");
        w.keys[0] = ProviderKeys::default();
        let t = good_token();
        let e = w.run(&[
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &bearer(&t)),
        ]);
        let d = denied(&e);
        assert_eq!((d.reason, d.status()), (DenyReason::KeysUnavailable, 503));
        // Another worker may have the set already; a re-fetch is the tick's business.
        assert_eq!((e.keys_wanted, e.refetch_provider), (Some(0), None));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn route_scopes_from_scope_or_scp() {
        let mut w = world(
            r#","rules":[{"pathPrefix":"/payments","methods":["POST"],"requiredScopes":["payments:write"]}]"#,
        );
        let without = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"scope": "accounts:read"})),
        );
        let e = w.run(&[
            (":method", "POST"),
            (":path", "/payments/42"),
            ("authorization", &bearer(&without)),
        ]);
        let d = denied(&e);
        assert_eq!((d.reason, d.status()), (DenyReason::InsufficientScope, 403));
        assert!(
            d.www_authenticate("r")
                .unwrap()
                .contains("scope=\"payments:write\"")
        );
        // Lower-case method still needs the scope.
        let e = w.run(&[
            (":method", "post"),
            (":path", "/payments"),
            ("authorization", &bearer(&without)),
        ]);
        assert_eq!(denied(&e).reason, DenyReason::InsufficientScope);
        // Another method or a sibling path is not covered by the rule.
        allowed(&w.run(&[
            (":method", "GET"),
            (":path", "/payments"),
            ("authorization", &bearer(&without)),
        ]));
        allowed(&w.run(&[
            (":method", "POST"),
            (":path", "/paymentsX"),
            ("authorization", &bearer(&without)),
        ]));

        let with_scope = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"scope": "accounts:read payments:write"})),
        );
        allowed(&w.run(&[
            (":method", "POST"),
            (":path", "/payments?x=1"),
            ("authorization", &bearer(&with_scope)),
        ]));
        let with_scp = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"scp": ["payments:write"]})),
        );
        allowed(&w.run(&[
            (":method", "POST"),
            (":path", "/payments"),
            ("authorization", &bearer(&with_scp)),
        ]));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn customer_binding_refuses_another_customers_id() {
        let mut w = world(r#","customerBinding":{"claim":"customer_id"}"#);
        let t = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"customer_id": "C-1"})),
        );
        let auth = bearer(&t);
        allowed(&w.run(&[
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &auth),
        ]));
        allowed(&w.run(&[
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &auth),
            ("x-customer-id", "C-1"),
        ]));
        let e = w.run(&[
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &auth),
            ("x-customer-id", "C-2"),
        ]);
        let d = denied(&e);
        assert_eq!((d.reason, d.status()), (DenyReason::CustomerMismatch, 403));
        // A second copy of the header cannot smuggle another id.
        let e = w.run(&[
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &auth),
            ("x-customer-id", "C-1"),
            ("x-customer-id", "C-2"),
        ]);
        assert_eq!(denied(&e).reason, DenyReason::CustomerMismatch);
        // Nor can the underscore spelling an upstream reads as the same header, alone or
        // beside the right one.
        for extra in [
            vec![("x-customer_id", "C-2")],
            vec![("x-customer-id", "C-1"), ("X_Customer_Id", "C-2")],
        ] {
            let mut request = vec![
                (":method", "GET"),
                (":path", "/a"),
                ("authorization", auth.as_str()),
            ];
            request.extend(extra);
            assert_eq!(
                denied(&w.run(&request)).reason,
                DenyReason::CustomerMismatch
            );
        }
        // A token without the claim cannot act for any customer.
        let no_claim = good_token();
        let e = w.run(&[
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &bearer(&no_claim)),
            ("x-customer-id", "C-1"),
        ]);
        assert_eq!(denied(&e).reason, DenyReason::CustomerMismatch);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bypass_paths_and_preflight_skip_the_token_but_still_strip_owned_headers() {
        let mut w = world(
            r#","bypassPaths":[{"exact":"/healthz"}],"bypassCorsPreflight":true,"outputs":{"claimHeaders":[{"claim":"sub","header":"x-jwt-sub"}]}"#,
        );
        let e = w.run(&[
            (":method", "GET"),
            (":path", "/healthz?verbose=1"),
            ("x-jwt-sub", "victim"),
        ]);
        let a = allowed(&e);
        assert_eq!(a.kind, AllowKind::Bypassed);
        assert_eq!(a.remove_headers, vec!["x-jwt-sub"]);
        // The underscore spelling a CGI-style upstream reads as the same header goes too.
        let e = w.run(&[
            (":method", "GET"),
            (":path", "/healthz"),
            ("X_JWT_SUB", "victim"),
        ]);
        assert_eq!(allowed(&e).remove_headers, vec!["x_jwt_sub"]);
        // Only the exact path: a sub-path or a traversal is not bypassed.
        assert_eq!(
            denied(&w.run(&[(":method", "GET"), (":path", "/healthz/x")])).reason,
            DenyReason::MissingToken
        );
        assert_eq!(
            denied(&w.run(&[(":method", "GET"), (":path", "/healthz/../payments")])).reason,
            DenyReason::InvalidPath
        );
        let e = w.run(&[
            (":method", "OPTIONS"),
            (":path", "/payments"),
            ("origin", "https://app.bank.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert_eq!(allowed(&e).kind, AllowKind::Preflight);
        // A plain OPTIONS is not a preflight.
        assert_eq!(
            denied(&w.run(&[(":method", "OPTIONS"), (":path", "/payments")])).reason,
            DenyReason::MissingToken
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn preflight_needs_a_token_unless_enabled() {
        let mut w = world("");
        let e = w.run(&[
            (":method", "OPTIONS"),
            (":path", "/payments"),
            ("origin", "https://app.bank.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert_eq!(denied(&e).reason, DenyReason::MissingToken);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn outputs_replace_client_headers_and_publish_claims() {
        let mut w = world(
            r#","outputs":{"claimHeaders":[{"claim":"sub","header":"x-jwt-sub"},{"claim":"scp","header":"x-jwt-scopes"},{"claim":"evil","header":"x-jwt-evil"}],
                "payloadHeader":"x-jwt-payload","removeTokenHeader":true,"filterStateClaims":["customer_id","acct"]}"#,
        );
        let t = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(
                json!({"scp": ["a", "b"], "customer_id": "C-1", "acct": {"n": 1}, "evil": "x\r\nx-admin: 1"}),
            ),
        );
        let e = w.run(&[
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &bearer(&t)),
            ("x-jwt-sub", "forged"),
        ]);
        let a = allowed(&e);
        assert_eq!(a.remove_headers, vec!["x-jwt-sub", "authorization"]);
        assert!(
            a.outputs
                .set_headers
                .contains(&("x-jwt-sub".into(), b"cust-42".to_vec()))
        );
        assert!(
            a.outputs
                .set_headers
                .contains(&("x-jwt-scopes".into(), b"a,b".to_vec()))
        );
        assert!(
            !a.outputs.set_headers.iter().any(|(h, _)| h == "x-jwt-evil"),
            "CR/LF claim must not become a header"
        );
        let payload = t.split('.').nth(1).unwrap().as_bytes().to_vec();
        assert!(
            a.outputs
                .set_headers
                .contains(&("x-jwt-payload".into(), payload))
        );
        let Some(Authentication::Verified(identity)) =
            a.outputs.identity.as_ref().map(|p| &p.authentication)
        else {
            panic!("a verified token carries its identity");
        };
        assert_eq!(
            identity.claims,
            BTreeMap::from([
                ("acct".to_string(), r#"{"n":1}"#.to_string()),
                ("customer_id".to_string(), "C-1".to_string()),
            ])
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn no_spelling_of_a_scoped_route_escapes_its_scopes() {
        let mut w = world(
            r#","rules":[{"pathPrefix":"/payments","methods":["POST"],"requiredScopes":["payments:write"]}]"#,
        );
        let read_only = mint(
            Algorithm::ES256,
            Some("ec256"),
            claims_with(json!({"scope": "accounts:read"})),
        );
        let auth = bearer(&read_only);
        for path in [
            "/payments",
            "/Payments",
            "/PAYMENTS",
            "/p%61yments",
            "/%70ayments/42",
        ] {
            let e = w.run(&[
                (":method", "POST"),
                (":path", path),
                ("authorization", &auth),
            ]);
            let d = denied(&e);
            assert_eq!(
                (d.reason, d.status()),
                (DenyReason::InsufficientScope, 403),
                "{path}"
            );
        }
        for path in [
            "/payments;x",
            "/payments;x=1",
            "/payments%3Bx",
            "/payments%2f..",
            "/payments%2F..",
            "/a/../payments",
        ] {
            let e = w.run(&[
                (":method", "POST"),
                (":path", path),
                ("authorization", &auth),
            ]);
            let d = denied(&e);
            assert_eq!(
                (d.reason, d.status()),
                (DenyReason::InvalidPath, 400),
                "{path}"
            );
            assert_eq!(
                d.problem().type_uri,
                "urn:banking-filters:problem:invalid-path"
            );
        }
        // Paths are checked with or without rules: the route model is not optional.
        let mut plain = world("");
        let t = good_token();
        let e = plain.run(&[
            (":method", "GET"),
            (":path", "/a/../b"),
            ("authorization", &bearer(&t)),
        ]);
        assert_eq!(denied(&e).reason, DenyReason::InvalidPath);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unmatched_route_under_a_protected_prefix_is_not_allowed() {
        let mut w = world(
            r#","rules":[{"pathPrefix":"/payments","methods":["GET"]}],"denyUnmatchedUnder":["/payments"]"#,
        );
        let t = good_token();
        let auth = bearer(&t);
        allowed(&w.run(&[
            (":method", "GET"),
            (":path", "/payments"),
            ("authorization", &auth),
        ]));
        let e = w.run(&[
            (":method", "DELETE"),
            (":path", "/Payments/1"),
            ("authorization", &auth),
        ]);
        let d = denied(&e);
        assert_eq!((d.reason, d.status()), (DenyReason::RouteNotAllowed, 403));
        assert_eq!(
            d.problem().type_uri,
            "urn:banking-filters:problem:route-not-allowed"
        );
        // A request without a token is still asked for one first.
        let e = w.run(&[(":method", "DELETE"), (":path", "/payments/1")]);
        assert_eq!(denied(&e).reason, DenyReason::MissingToken);
        allowed(&w.run(&[
            (":method", "DELETE"),
            (":path", "/other"),
            ("authorization", &auth),
        ]));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn disabled_cache_reports_no_cache_use() {
        let mut w = world(r#","cache":{"maxEntries":0}"#);
        let t = good_token();
        let e = w.run(&[
            (":method", "GET"),
            (":path", "/a"),
            ("authorization", &bearer(&t)),
        ]);
        assert_eq!(e.cache, None);
    }
}
