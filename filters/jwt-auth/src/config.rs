//! The jwt-auth pluginConfig: what operators write, checked once into an immutable [`Config`].
//!
//! The serde types below are the config reference (their doc comments are what the README
//! shows). [`Config::parse`] turns them into validated runtime values: inline key sets
//! parsed, header names lowercased, defaults that fail closed filled in. A bad config is
//! refused with a [`ConfigError`] naming the field.

use std::time::Duration;

use banking_filter_common::config::{self as common_config, ConfigError, duration, whole_number};
use banking_filter_common::headers::is_tchar;
use banking_filter_common::mode::Mode;
use banking_filter_common::record;
use banking_filter_common::route::{PathMatch, PathMatching, RouteMatch, RouteTable};
use serde::Deserialize;

use crate::jwks::{Algorithm, KeyOrigin, KeySet};

/// The filter's name in shared-data keys.
/// What a verified-token cache entry costs beside its token, rounded up: the prepared
/// outputs, the map's own bookkeeping.
const CACHE_ENTRY_OVERHEAD: usize = 1024;
/// The most a worker's verified-token cache may hold at worst (every token `maxTokenBytes`).
const MAX_CACHE_BYTES: usize = 64 << 20;
pub const FILTER_NAME: &str = "jwt-auth";

/// Defaults, shown in the config reference.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CACHE_DURATION: Duration = Duration::from_secs(600);
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// `maxStaleness` is this many `cacheDuration`s unless set.
pub const DEFAULT_MAX_STALENESS_FACTOR: u32 = 3;
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_REALM: &str = "banking-api";
pub const DEFAULT_CUSTOMER_HEADER: &str = "x-customer-id";

/// The whole pluginConfig.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    /// This plugin's name among the jwt-auth plugins on a proxy (required): 1 to 63
    /// lower-case letters, digits and `-`, e.g. the WasmPlugin's own name. It namespaces the
    /// JWKS records the proxy's workers share (`jwt-auth/<instance>/...`): Istio gives every
    /// WasmPlugin on a proxy one shared-data space, and two plugins must not read each
    /// other's records.
    pub instance: String,
    /// `enforce` (default) refuses what fails; `dryRun` never refuses: it counts
    /// `banking_jwt_auth_would_deny_<reason>`, logs each reason once a minute, records the
    /// would-be refusal in filter state (`banking.decision.would_deny`), strips the headers
    /// this filter owns and lets the request through without publishing an identity.
    #[serde(default)]
    pub mode: Mode,
    /// Token issuers this filter trusts (at least one). A token is matched to the provider
    /// whose `issuer` equals its `iss` claim.
    pub providers: Vec<ProviderConfig>,
    /// Where a token may be found, in order. Default: `Authorization: Bearer <token>`.
    /// A request that carries more than one token is refused with 400.
    #[serde(default)]
    pub token_sources: Option<Vec<TokenSourceConfig>>,
    /// Tokens longer than this many bytes are refused before any parsing. Default 8192.
    #[serde(default, deserialize_with = "opt_whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub max_token_bytes: Option<usize>,
    /// Routes that need scopes beyond a valid token. The first rule whose `pathPrefix`
    /// and `methods` match applies; a request matching no rule needs only a valid token,
    /// unless `denyUnmatchedUnder` covers it. Paths are normalised and matched as the
    /// README's "Route model" says, the same in every filter.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// How paths are compared: `{"case": "insensitive" | "sensitive", "parameters":
    /// "refuse" | "strip"}`. Default: case-insensitive rules and `;` parameters refused
    /// with 400 `invalid-path`.
    #[serde(default)]
    pub path_matching: PathMatching,
    /// Path prefixes under which a request that matches no rule is refused with 403
    /// `route-not-allowed` (after its token is verified) rather than allowed on any valid
    /// token, e.g. `["/payments"]`. Default: none.
    #[serde(default)]
    pub deny_unmatched_under: Vec<String>,
    /// Paths served without a token, e.g. health checks: `{"exact": "/healthz"}` or
    /// `{"prefix": "/.well-known/"}`, compared byte for byte with the normalised path.
    #[serde(default)]
    pub bypass_paths: Vec<PathMatch>,
    /// Let CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
    /// through without a token: browsers never send credentials on them. Default false.
    #[serde(default)]
    pub bypass_cors_preflight: bool,
    /// Binds the request's customer header to a token claim (403 when they differ).
    #[serde(default)]
    pub customer_binding: Option<CustomerBindingConfig>,
    /// What a verified token hands to the upstream and to later filters.
    #[serde(default)]
    pub outputs: Option<OutputsConfig>,
    /// The verified-token cache (per worker). Default: 1024 entries, 5 minutes.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// The `realm` of `WWW-Authenticate` challenges. Default "banking-api".
    #[serde(default)]
    pub realm: Option<String>,
}

/// One trusted issuer and its keys.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderConfig {
    /// The exact `iss` of this issuer's tokens.
    pub issuer: String,
    /// Accepted `aud` values (at least one); a token for none of them gets 403.
    pub audiences: Vec<String>,
    /// Inline JWKS, as a JSON object or a string holding one. Exactly one of `jwks` and
    /// `remoteJwks` is required. Only inline sets may hold HMAC (`oct`) keys.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// A JWKS fetched over HTTP through an Envoy cluster.
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwksConfig>,
    /// Accepted `alg` values. Default: RS256/384/512, PS256/384/512, ES256, ES384, EdDSA.
    /// HS256/384/512 must be listed explicitly and need an inline `jwks`. `none` is refused.
    #[serde(default)]
    pub allowed_algorithms: Option<Vec<String>>,
    /// Tolerance for `exp`, `nbf` and `iat` against the proxy clock. Default "60s", at most "5m".
    #[serde(default, deserialize_with = "opt_duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub clock_skew: Option<Duration>,
    /// Refuse tokens without `exp`. Default true.
    #[serde(default)]
    pub require_expiration: Option<bool>,
    /// Longest accepted lifetime, `exp` minus `iat` (or `nbf` without `iat`); a token with
    /// neither is refused when this is set. Unset: no limit.
    #[serde(default, deserialize_with = "opt_duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub max_lifetime: Option<Duration>,
    /// Claims every token of this issuer must carry (any non-null value).
    #[serde(default)]
    pub required_claims: Vec<String>,
}

/// A JWKS endpoint reached through an Envoy cluster.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteJwksConfig {
    /// Envoy cluster to call, named the Istio way so one config works in the mesh and in a
    /// local Envoy: `outbound|443||idp.bank.svc.cluster.local`.
    pub cluster: String,
    /// `:authority` of the request, e.g. `idp.bank.svc.cluster.local`.
    pub authority: String,
    /// `:path` of the JWKS document, e.g. `/.well-known/jwks.json`.
    pub path: String,
    /// Fetch timeout. Default "5s".
    #[serde(default, deserialize_with = "opt_duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub timeout: Option<Duration>,
    /// How long a fetched set is fresh; it is refreshed from `on_tick` once 90% of this
    /// has passed, and kept (stale) while refreshes fail, up to `maxStaleness`. A fetch
    /// that succeeds is installed whatever it holds: a set without a usable key (every key
    /// revoked, or rotated to an algorithm not allowed) refuses every token of the issuer
    /// with 401 `no-usable-key`. Default "10m"; at least "10s".
    #[serde(default, deserialize_with = "opt_duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub cache_duration: Option<Duration>,
    /// A token with an unknown `kid` (or any token while the set holds no usable key)
    /// triggers a re-fetch at most once per this interval. Default "30s"; at least "1s".
    #[serde(default, deserialize_with = "opt_duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub min_refetch_interval: Option<Duration>,
    /// Wait after a failed fetch before trying again. Default "5s".
    #[serde(default, deserialize_with = "opt_duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub retry_interval: Option<Duration>,
    /// How long after its last successful fetch a set is trusted while refreshes fail.
    /// Past it the set is dropped from use: the issuer's tokens get 503
    /// `signing-keys-stale` with `Retry-After: 1` (a revoked key does not stay trusted
    /// through an outage of the identity provider) until a fetch succeeds. Default three
    /// times `cacheDuration` ("30m" with the default); at least `cacheDuration`.
    #[serde(default, deserialize_with = "opt_duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub max_staleness: Option<Duration>,
}

/// Where to look for a token: exactly one of `header`, `queryParam`, `cookie`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenSourceConfig {
    /// A request header, e.g. `authorization` or `x-api-token`.
    #[serde(default)]
    pub header: Option<String>,
    /// Text before the token in that header, compared ignoring case, e.g. `"Bearer "`.
    /// Default: none (the whole value is the token).
    #[serde(default)]
    pub prefix: Option<String>,
    /// A query parameter, e.g. `access_token`. The token stays in the URL the upstream
    /// sees (and logs): prefer headers.
    #[serde(default)]
    pub query_param: Option<String>,
    /// A cookie name.
    #[serde(default)]
    pub cookie: Option<String>,
}

/// Scopes a route needs.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConfig {
    /// Path prefix, matched on segment boundaries: `/payments` matches `/payments` and
    /// `/payments/42`, not `/paymentsX`. Must be normalised already.
    pub path_prefix: String,
    /// Methods the rule covers, written in upper case (`["POST"]`); a request's method is
    /// compared ignoring case. Empty or absent means every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Scopes the token must all have, from its `scope` (space-delimited) or `scp` claim.
    #[serde(default)]
    pub required_scopes: Vec<String>,
}

/// Customer binding: stops one customer's token acting on another customer's accounts.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomerBindingConfig {
    /// The claim holding the customer id, e.g. `sub` or `customer_id`.
    pub claim: String,
    /// The request header compared with it when present. Default `x-customer-id`.
    #[serde(default)]
    pub header: Option<String>,
}

/// What a verified token hands on.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputsConfig {
    /// Claims copied to request headers. Client-sent headers of these names are always
    /// removed first, on every request, so the upstream can trust them.
    #[serde(default)]
    pub claim_headers: Vec<ClaimHeaderConfig>,
    /// A header that receives the verified payload (base64url JSON, as in the token).
    #[serde(default)]
    pub payload_header: Option<String>,
    /// Remove the header the token came in before the request goes upstream. Default false.
    #[serde(default)]
    pub remove_token_header: bool,
    /// Claims handed to later filters in the identity's `claims` (filter state
    /// `banking.jwt.identity`, the common filter-state contract), each as text.
    #[serde(default)]
    pub filter_state_claims: Vec<String>,
}

/// One claim-to-header copy.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimHeaderConfig {
    /// Claim name; strings, numbers, booleans and arrays of strings (joined with `,`) are copied.
    pub claim: String,
    /// Header name, e.g. `x-jwt-sub`.
    pub header: String,
}

/// The verified-token cache.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheConfig {
    /// Most tokens kept per worker; 0 turns the cache off. Default 1024. Each entry keeps the
    /// token and what its verification prepared, so `maxEntries` × (`maxTokenBytes` + 1 KiB)
    /// may be at most 64 MiB.
    #[serde(default, deserialize_with = "opt_whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub max_entries: Option<usize>,
    /// Longest a verified token is reused without re-verifying (never past its `exp`).
    /// Default "5m".
    #[serde(default, deserialize_with = "opt_duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub ttl: Option<Duration>,
}

fn opt_duration<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    duration(de).map(Some)
}

fn opt_whole_number<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<usize>, D::Error> {
    whole_number(de).map(Some)
}

// ---------------------------------------------------------------------------------------
// Validated runtime configuration.

/// The validated configuration every stream shares.
#[derive(Debug)]
pub struct Config {
    pub mode: Mode,
    pub providers: Vec<Provider>,
    pub token_sources: Vec<TokenSource>,
    pub max_token_bytes: usize,
    /// The rules, bypass paths and protected prefixes.
    pub routes: RouteTable<Rule>,
    pub bypass_cors_preflight: bool,
    pub customer_binding: Option<CustomerBinding>,
    pub outputs: Outputs,
    pub cache_entries: usize,
    pub cache_ttl: Duration,
    pub realm: String,
}

#[derive(Debug)]
pub struct Provider {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub allowed_algorithms: Vec<Algorithm>,
    pub clock_skew: Duration,
    pub require_expiration: bool,
    pub max_lifetime: Option<Duration>,
    pub required_claims: Vec<String>,
}

#[derive(Debug)]
pub enum KeySource {
    Inline(KeySet),
    Remote(RemoteJwks),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// `jwt-auth/<instance>/`: where this plugin's shared records live.
    pub key_prefix: String,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout: Duration,
    pub cache_duration: Duration,
    pub min_refetch_interval: Duration,
    pub retry_interval: Duration,
    /// A set not refreshed for this long is no longer trusted.
    pub max_staleness: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Lowercase header name and the (possibly empty) prefix before the token.
    Header {
        name: String,
        prefix: String,
    },
    QueryParam(String),
    Cookie(String),
}

/// What a matched rule requires of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub required_scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerBinding {
    pub claim: String,
    pub header: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    /// (claim, lowercase header).
    pub claim_headers: Vec<(String, String)>,
    pub payload_header: Option<String>,
    pub remove_token_header: bool,
    pub filter_state_claims: Vec<String>,
}

/// Headers this filter may add, which the upstream must only ever see from us.
impl Outputs {
    pub fn owned_headers(&self) -> Vec<String> {
        let mut owned: Vec<String> = self.claim_headers.iter().map(|(_, h)| h.clone()).collect();
        owned.extend(self.payload_header.iter().cloned());
        owned.sort();
        owned.dedup();
        owned
    }
}

/// A config that parsed, plus notes worth a warning (keys skipped in inline sets).
#[derive(Debug)]
pub struct Parsed {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// Parses and validates pluginConfig bytes.
    pub fn parse(bytes: &[u8]) -> Result<Parsed, ConfigError> {
        let raw: PluginConfig = common_config::parse(bytes)?;
        validate(raw)
    }
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::at(path, message)
}

fn validate(raw: PluginConfig) -> Result<Parsed, ConfigError> {
    let mut warnings = Vec::new();
    record::check_instance(&raw.instance).map_err(|m| err("instance", m))?;
    let key_prefix = record::key_prefix(FILTER_NAME, &raw.instance);
    if raw.providers.is_empty() {
        return Err(err("providers", "at least one provider is required"));
    }
    let mut providers = Vec::with_capacity(raw.providers.len());
    for (i, p) in raw.providers.into_iter().enumerate() {
        let at = format!("providers[{i}]");
        let mut provider = validate_provider(p, &at, &mut warnings)?;
        if let KeySource::Remote(remote) = &mut provider.keys {
            remote.key_prefix.clone_from(&key_prefix);
        }
        if providers
            .iter()
            .any(|existing: &Provider| existing.issuer == provider.issuer)
        {
            return Err(err(
                format!("{at}.issuer"),
                "issuer is configured twice; each issuer needs exactly one provider",
            ));
        }
        providers.push(provider);
    }

    let token_sources = match raw.token_sources {
        None => vec![TokenSource::Header {
            name: "authorization".to_owned(),
            prefix: "Bearer ".to_owned(),
        }],
        Some(list) if list.is_empty() => {
            return Err(err(
                "tokenSources",
                "list at least one source, or leave it out",
            ));
        }
        Some(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, s)| validate_source(s, &format!("tokenSources[{i}]")))
            .collect::<Result<_, _>>()?,
    };

    let max_token_bytes = raw.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    if !(256..=65_536).contains(&max_token_bytes) {
        return Err(err("maxTokenBytes", "must be between 256 and 65536"));
    }

    let mut routes = RouteTable::new(
        raw.path_matching,
        &raw.bypass_paths,
        &raw.deny_unmatched_under,
    )?;
    for (i, r) in raw.rules.into_iter().enumerate() {
        let at = format!("rules[{i}]");
        let route = RouteMatch::new(&r.path_prefix, &r.methods, raw.path_matching, &at)?;
        routes.push(route, validate_rule(r, &at)?);
    }

    let customer_binding = raw
        .customer_binding
        .map(|c| {
            if c.claim.is_empty() {
                return Err(err("customerBinding.claim", "must name a claim"));
            }
            let header = match c.header {
                None => DEFAULT_CUSTOMER_HEADER.to_owned(),
                Some(h) => header_name(&h, "customerBinding.header")?,
            };
            Ok(CustomerBinding {
                claim: c.claim,
                header,
            })
        })
        .transpose()?;

    let outputs = validate_outputs(raw.outputs.unwrap_or_default(), &token_sources)?;

    let (cache_entries, cache_ttl) = match raw.cache {
        None => (DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_TTL),
        Some(c) => {
            let entries = c.max_entries.unwrap_or(DEFAULT_CACHE_ENTRIES);
            if entries > 100_000 {
                return Err(err("cache.maxEntries", "must be at most 100000"));
            }
            // Each entry keeps its token (up to maxTokenBytes) and what was prepared from it:
            // bound the whole, so a worker's cache cannot outgrow its VM's memory.
            let worst =
                entries.saturating_mul(max_token_bytes.saturating_add(CACHE_ENTRY_OVERHEAD));
            if worst > MAX_CACHE_BYTES {
                return Err(err(
                    "cache.maxEntries",
                    format!(
                        "times maxTokenBytes (plus {CACHE_ENTRY_OVERHEAD} bytes per entry) must stay \
                         within {} MiB per worker; lower one of them",
                        MAX_CACHE_BYTES >> 20
                    ),
                ));
            }
            let ttl = c.ttl.unwrap_or(DEFAULT_CACHE_TTL);
            if ttl.is_zero() {
                return Err(err(
                    "cache.ttl",
                    "must be positive; set maxEntries to 0 to disable",
                ));
            }
            (entries, ttl)
        }
    };

    let realm = raw.realm.unwrap_or_else(|| DEFAULT_REALM.to_owned());
    // The realm goes inside a quoted-string of WWW-Authenticate.
    if realm.is_empty()
        || !realm
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err(err("realm", "must be printable ASCII without '\"' or '\\'"));
    }

    Ok(Parsed {
        config: Config {
            mode: raw.mode,
            providers,
            token_sources,
            max_token_bytes,
            routes,
            bypass_cors_preflight: raw.bypass_cors_preflight,
            customer_binding,
            outputs,
            cache_entries,
            cache_ttl,
            realm,
        },
        warnings,
    })
}

fn validate_provider(
    p: ProviderConfig,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<Provider, ConfigError> {
    if p.issuer.is_empty() {
        return Err(err(format!("{at}.issuer"), "must not be empty"));
    }
    if p.audiences.is_empty() {
        return Err(err(
            format!("{at}.audiences"),
            "list at least one audience: a token minted for another API must not be accepted here",
        ));
    }
    if let Some(i) = p.audiences.iter().position(String::is_empty) {
        return Err(err(format!("{at}.audiences[{i}]"), "must not be empty"));
    }

    let allowed_algorithms = match p.allowed_algorithms {
        None => Algorithm::DEFAULT_ALLOWED.to_vec(),
        Some(names) if names.is_empty() => {
            return Err(err(
                format!("{at}.allowedAlgorithms"),
                "list at least one algorithm, or leave it out",
            ));
        }
        Some(names) => names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let field = format!("{at}.allowedAlgorithms[{i}]");
                if name.eq_ignore_ascii_case("none") {
                    return Err(err(field, "\"none\" (unsigned tokens) is never accepted"));
                }
                Algorithm::from_name(name).ok_or_else(|| {
                    err(
                        field,
                        format!(
                            "unsupported algorithm {name:?}; supported: {}",
                            Algorithm::ALL.map(Algorithm::name).join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };

    let keys = match (p.jwks, p.remote_jwks) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(err(
                at.to_owned(),
                "exactly one of `jwks` and `remoteJwks` is required",
            ));
        }
        (Some(inline), None) => {
            let field = format!("{at}.jwks");
            let bytes = match inline {
                serde_json::Value::String(text) => text.into_bytes(),
                value @ serde_json::Value::Object(_) => value.to_string().into_bytes(),
                _ => return Err(err(field, "must be a JWKS object or a string holding one")),
            };
            let set = KeySet::parse(&bytes, &allowed_algorithms, KeyOrigin::Inline)
                .map_err(|e| err(field.clone(), e.to_string()))?;
            warnings.extend(
                set.skipped()
                    .iter()
                    .map(|s| format!("{field}: skipped {s}")),
            );
            KeySource::Inline(set)
        }
        (None, Some(remote)) => {
            if let Some(alg) = allowed_algorithms.iter().find(|a| a.is_symmetric()) {
                return Err(err(
                    format!("{at}.allowedAlgorithms"),
                    format!(
                        "{alg} needs a shared secret, which is accepted only in an inline `jwks`"
                    ),
                ));
            }
            KeySource::Remote(validate_remote(remote, &format!("{at}.remoteJwks"))?)
        }
    };

    let clock_skew = p.clock_skew.unwrap_or(DEFAULT_CLOCK_SKEW);
    if clock_skew > MAX_CLOCK_SKEW {
        return Err(err(
            format!("{at}.clockSkew"),
            "must be at most \"5m\": a larger skew keeps expired tokens alive",
        ));
    }
    if p.max_lifetime.is_some_and(|d| d.is_zero()) {
        return Err(err(format!("{at}.maxLifetime"), "must be positive"));
    }
    if let Some(i) = p.required_claims.iter().position(String::is_empty) {
        return Err(err(
            format!("{at}.requiredClaims[{i}]"),
            "must not be empty",
        ));
    }

    Ok(Provider {
        issuer: p.issuer,
        audiences: p.audiences,
        keys,
        allowed_algorithms,
        clock_skew,
        require_expiration: p.require_expiration.unwrap_or(true),
        max_lifetime: p.max_lifetime,
        required_claims: p.required_claims,
    })
}

fn validate_remote(r: RemoteJwksConfig, at: &str) -> Result<RemoteJwks, ConfigError> {
    if r.cluster.is_empty() {
        return Err(err(format!("{at}.cluster"), "must name an Envoy cluster"));
    }
    if r.authority.is_empty() || r.authority.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(err(
            format!("{at}.authority"),
            "must be a host name, e.g. idp.bank.svc.cluster.local",
        ));
    }
    if !r.path.starts_with('/') || r.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(err(
            format!("{at}.path"),
            "must start with '/' and hold no spaces",
        ));
    }
    let timeout = r.timeout.unwrap_or(DEFAULT_FETCH_TIMEOUT);
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        return Err(err(
            format!("{at}.timeout"),
            "must be between \"1ms\" and \"60s\"",
        ));
    }
    let cache_duration = r.cache_duration.unwrap_or(DEFAULT_CACHE_DURATION);
    if cache_duration < Duration::from_secs(10) {
        return Err(err(
            format!("{at}.cacheDuration"),
            "must be at least \"10s\"",
        ));
    }
    let min_refetch_interval = r
        .min_refetch_interval
        .unwrap_or(DEFAULT_MIN_REFETCH_INTERVAL);
    if min_refetch_interval < Duration::from_secs(1) {
        return Err(err(
            format!("{at}.minRefetchInterval"),
            "must be at least \"1s\": every unknown kid would otherwise hit the issuer",
        ));
    }
    let retry_interval = r.retry_interval.unwrap_or(DEFAULT_RETRY_INTERVAL);
    if retry_interval < Duration::from_secs(1) {
        return Err(err(
            format!("{at}.retryInterval"),
            "must be at least \"1s\"",
        ));
    }
    let max_staleness = match r.max_staleness {
        Some(max) if max < cache_duration => {
            return Err(err(
                format!("{at}.maxStaleness"),
                format!(
                    "must be at least cacheDuration ({cache_duration:?}): a set is refreshed \
                     within cacheDuration"
                ),
            ));
        }
        Some(max) => max,
        None => cache_duration.saturating_mul(DEFAULT_MAX_STALENESS_FACTOR),
    };
    Ok(RemoteJwks {
        key_prefix: String::new(),
        cluster: r.cluster,
        authority: r.authority,
        path: r.path,
        timeout,
        cache_duration,
        min_refetch_interval,
        retry_interval,
        max_staleness,
    })
}

fn header_name(name: &str, field: &str) -> Result<String, ConfigError> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(err(field, format!("{name:?} is not a header name")));
    }
    Ok(name.to_ascii_lowercase())
}

fn validate_source(s: TokenSourceConfig, at: &str) -> Result<TokenSource, ConfigError> {
    let source = match (s.header, s.query_param, s.cookie) {
        (Some(h), None, None) => TokenSource::Header {
            name: header_name(&h, &format!("{at}.header"))?,
            prefix: s.prefix.clone().unwrap_or_default(),
        },
        (None, Some(q), None) => {
            if q.is_empty() || q.contains(['&', '=', '#']) {
                return Err(err(format!("{at}.queryParam"), "must be a parameter name"));
            }
            TokenSource::QueryParam(q)
        }
        (None, None, Some(c)) => {
            if c.is_empty() || !c.bytes().all(is_tchar) {
                return Err(err(format!("{at}.cookie"), "must be a cookie name"));
            }
            TokenSource::Cookie(c)
        }
        _ => {
            return Err(err(
                at.to_owned(),
                "exactly one of `header`, `queryParam` and `cookie` is required",
            ));
        }
    };
    if s.prefix.is_some() && !matches!(source, TokenSource::Header { .. }) {
        return Err(err(
            format!("{at}.prefix"),
            "only a `header` source has a prefix",
        ));
    }
    Ok(source)
}

/// The rule's scopes; its path and methods are the route model's.
fn validate_rule(r: RuleConfig, at: &str) -> Result<Rule, ConfigError> {
    // RFC 6749 §3.3 scope-token characters; they also go into a quoted challenge attribute.
    if let Some(i) = r.required_scopes.iter().position(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\')
    }) {
        return Err(err(
            format!("{at}.requiredScopes[{i}]"),
            "a scope is one non-empty word of printable ASCII without '\"' or '\\'",
        ));
    }
    Ok(Rule {
        required_scopes: r.required_scopes,
    })
}

fn validate_outputs(o: OutputsConfig, sources: &[TokenSource]) -> Result<Outputs, ConfigError> {
    let reserved = |h: &str| {
        h.starts_with(':')
            || matches!(
                h,
                "host" | "content-length" | "transfer-encoding" | "connection" | "te"
            )
            || sources
                .iter()
                .any(|s| matches!(s, TokenSource::Header { name, .. } if name == h))
    };
    let mut claim_headers = Vec::with_capacity(o.claim_headers.len());
    for (i, ch) in o.claim_headers.into_iter().enumerate() {
        let at = format!("outputs.claimHeaders[{i}]");
        if ch.claim.is_empty() {
            return Err(err(format!("{at}.claim"), "must name a claim"));
        }
        let header = header_name(&ch.header, &format!("{at}.header"))?;
        if reserved(&header) {
            return Err(err(
                format!("{at}.header"),
                format!("{header:?} cannot carry a claim"),
            ));
        }
        claim_headers.push((ch.claim, header));
    }
    let payload_header = o
        .payload_header
        .map(|h| {
            let h = header_name(&h, "outputs.payloadHeader")?;
            if reserved(&h) {
                return Err(err(
                    "outputs.payloadHeader",
                    format!("{h:?} cannot carry the payload"),
                ));
            }
            Ok(h)
        })
        .transpose()?;
    for (i, c) in o.filter_state_claims.iter().enumerate() {
        if c.is_empty()
            || !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-:.".contains(&b))
        {
            return Err(err(
                format!("outputs.filterStateClaims[{i}]"),
                "a claim name of letters, digits, '_', '-', ':' or '.'",
            ));
        }
    }
    Ok(Outputs {
        claim_headers,
        payload_header,
        remove_token_header: o.remove_token_header,
        filter_state_claims: o.filter_state_claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_tokens::{ec256, jwks};
    use wasm_bindgen_test::wasm_bindgen_test;

    fn remote() -> &'static str {
        r#""remoteJwks":{"cluster":"outbound|443||idp.bank.svc.cluster.local","authority":"idp.bank.svc.cluster.local","path":"/jwks.json"}"#
    }

    fn with_provider(provider_extra: &str, top_extra: &str) -> String {
        format!(
            r#"{{"instance":"test","providers":[{{"issuer":"https://idp.bank.example","audiences":["payments-api"],{}{}}}]{}}}"#,
            remote(),
            provider_extra,
            top_extra
        )
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text.as_bytes()).map(|p| p.config)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn minimal_remote_provider_gets_fail_closed_defaults() {
        let c = parse(&with_provider("", "")).unwrap();
        let p = &c.providers[0];
        assert_eq!(p.clock_skew, Duration::from_secs(60));
        assert!(p.require_expiration);
        assert_eq!(p.allowed_algorithms, Algorithm::DEFAULT_ALLOWED.to_vec());
        let KeySource::Remote(r) = &p.keys else {
            panic!()
        };
        assert_eq!(r.timeout, Duration::from_secs(5));
        assert_eq!(r.cache_duration, Duration::from_secs(600));
        assert_eq!(r.min_refetch_interval, Duration::from_secs(30));
        assert_eq!(r.max_staleness, Duration::from_secs(1800));
        assert_eq!(
            c.token_sources,
            vec![TokenSource::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into()
            }]
        );
        assert_eq!(c.max_token_bytes, 8192);
        assert_eq!(c.cache_entries, 1024);
        assert!(!c.bypass_cors_preflight);
        assert_eq!(c.realm, "banking-api");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn accepts_istio_float_numbers_and_duration_strings() {
        let c = parse(&with_provider(
            r#","clockSkew":"30s","maxLifetime":"1h""#,
            r#","maxTokenBytes":4096.0,"cache":{"maxEntries":100.0,"ttl":"500ms"}"#,
        ))
        .unwrap();
        assert_eq!(c.max_token_bytes, 4096);
        assert_eq!(c.cache_entries, 100);
        assert_eq!(c.cache_ttl, Duration::from_millis(500));
        assert_eq!(c.providers[0].clock_skew, Duration::from_secs(30));
        assert_eq!(c.providers[0].max_lifetime, Some(Duration::from_secs(3600)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn inline_jwks_as_object_or_string() {
        let jwks = jwks([ec256().jwk("k1")]);
        for inline in [jwks.clone(), serde_json::to_string(&jwks).unwrap()] {
            let text = format!(
                r#"{{"instance":"test","providers":[{{"issuer":"i","audiences":["a"],"jwks":{inline}}}]}}"#
            );
            let c = parse(&text).unwrap();
            let KeySource::Inline(set) = &c.providers[0].keys else {
                panic!()
            };
            assert!(set.has_kid("k1"));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn skipped_inline_keys_become_warnings() {
        let jwks = jwks([
            ec256().jwk("k1").to_string(),
            r#"{"kty":"EC","kid":"k2","crv":"P-521","x":"AA","y":"AA"}"#.to_owned(),
        ]);
        let text = format!(
            r#"{{"instance":"test","providers":[{{"issuer":"i","audiences":["a"],"jwks":{jwks}}}]}}"#
        );
        let parsed = Config::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.warnings.len(), 1);
        assert!(parsed.warnings[0].contains("providers[0].jwks: skipped key 1 (kid \"k2\")"));
    }

    fn refused(text: &str) -> ConfigError {
        parse(text).unwrap_err()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_bad_configs_naming_the_field() {
        let cases: Vec<(String, &str, &str)> = vec![
            (r#"{"instance":"test","providers":[]}"#.into(), "providers", "at least one"),
            (
                with_provider(r#","clockSkew":"1h""#, ""),
                "providers[0].clockSkew",
                "at most",
            ),
            (
                with_provider(r#","clockSkew":"sixty""#, ""),
                "providers[0].clockSkew",
                "duration",
            ),
            (
                // 20,000 tokens of up to 8 KiB: about 180 MiB per worker at worst.
                with_provider("", r#","cache":{"maxEntries":20000}"#),
                "cache.maxEntries",
                "within 64 MiB per worker",
            ),
            (
                with_provider(r#","allowedAlgorithms":["none"]"#, ""),
                "providers[0].allowedAlgorithms[0]",
                "never accepted",
            ),
            (
                with_provider(r#","allowedAlgorithms":["RS1"]"#, ""),
                "providers[0].allowedAlgorithms[0]",
                "unsupported",
            ),
            (
                with_provider(r#","allowedAlgorithms":["HS256"]"#, ""),
                "providers[0].allowedAlgorithms",
                "only in an inline",
            ),
            (
                with_provider(r#","issuerr":"x""#, ""),
                "providers[0].issuerr",
                "unknown field",
            ),
            (
                with_provider("", r#","maxTokenBytes":10.5"#),
                "maxTokenBytes",
                "whole number",
            ),
            (
                with_provider("", r#","maxTokenBytes":10"#),
                "maxTokenBytes",
                "between",
            ),
            (
                with_provider("", r#","tokenSources":[{"header":"x","cookie":"y"}]"#),
                "tokenSources[0]",
                "exactly one",
            ),
            (
                with_provider("", r#","tokenSources":[{"cookie":"y","prefix":"B "}]"#),
                "tokenSources[0].prefix",
                "only a `header`",
            ),
            (
                with_provider("", r#","tokenSources":[{"header":"bad header"}]"#),
                "tokenSources[0].header",
                "not a header name",
            ),
            (
                with_provider("", r#","rules":[{"pathPrefix":"payments"}]"#),
                "rules[0].pathPrefix",
                "must start with '/'",
            ),
            (
                with_provider(
                    "",
                    r#","rules":[{"pathPrefix":"/p","requiredScopes":["a b"]}]"#,
                ),
                "rules[0].requiredScopes[0]",
                "one non-empty word",
            ),
            (
                with_provider("", r#","bypassPaths":[{"exact":"healthz"}]"#),
                "bypassPaths[0].exact",
                "must start with '/'",
            ),
            (
                with_provider("", r#","customerBinding":{"claim":""}"#),
                "customerBinding.claim",
                "must name",
            ),
            (
                with_provider(
                    "",
                    r#","outputs":{"claimHeaders":[{"claim":"sub","header":"authorization"}]}"#,
                ),
                "outputs.claimHeaders[0].header",
                "cannot carry",
            ),
            (
                with_provider(
                    "",
                    r#","outputs":{"claimHeaders":[{"claim":"sub","header":":path"}]}"#,
                ),
                "outputs.claimHeaders[0].header",
                "not a header name",
            ),
            (
                with_provider("", r#","realm":"a\"b""#),
                "realm",
                "printable",
            ),
            (
                with_provider("", r#","cache":{"ttl":"0s"}"#),
                "cache.ttl",
                "positive",
            ),
            (
                r#"{"instance":"test","providers":[{"issuer":"i","audiences":["a"]}]}"#.into(),
                "providers[0]",
                "exactly one of `jwks` and `remoteJwks`",
            ),
            (
                r#"{"instance":"test","providers":[{"issuer":"i","audiences":[],"jwks":{"keys":[]}}]}"#.into(),
                "providers[0].audiences",
                "at least one audience",
            ),
            (
                r#"{"instance":"test","providers":[{"issuer":"i","audiences":["a"],"jwks":{"keys":[]}}]}"#.into(),
                "providers[0].jwks",
                "no usable key",
            ),
        ];
        for (text, path, message) in cases {
            let e = refused(&text);
            assert_eq!(e.path, path, "{text} -> {e}");
            assert!(e.message.contains(message), "{text} -> {e}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_the_same_issuer_twice() {
        let jwks = jwks([ec256().jwk("k1")]);
        let text = format!(
            r#"{{"instance":"test","providers":[{{"issuer":"i","audiences":["a"],"jwks":{jwks}}},{{"issuer":"i","audiences":["a"],"jwks":{jwks}}}]}}"#
        );
        assert_eq!(refused(&text).path, "providers[1].issuer");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn remote_timers_have_floors() {
        let bad = r#"{"instance":"test","providers":[{"issuer":"i","audiences":["a"],"remoteJwks":{"cluster":"c","authority":"a","path":"/j","minRefetchInterval":"10ms"}}]}"#;
        assert_eq!(
            refused(bad).path,
            "providers[0].remoteJwks.minRefetchInterval"
        );
        let bad = r#"{"instance":"test","providers":[{"issuer":"i","audiences":["a"],"remoteJwks":{"cluster":"c","authority":"a","path":"j"}}]}"#;
        assert_eq!(refused(bad).path, "providers[0].remoteJwks.path");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn max_staleness_defaults_to_three_cache_durations_and_is_at_least_one() {
        let remote = |fields: &str| {
            format!(
                r#"{{"instance":"test","providers":[{{"issuer":"i","audiences":["a"],"remoteJwks":{{"cluster":"c","authority":"a","path":"/j"{fields}}}}}]}}"#
            )
        };
        let staleness = |fields: &str| match parse(&remote(fields)).unwrap().providers[0].keys {
            KeySource::Remote(ref r) => r.max_staleness,
            KeySource::Inline(_) => unreachable!(),
        };
        assert_eq!(
            staleness(r#","cacheDuration":"100s""#),
            Duration::from_secs(300)
        );
        assert_eq!(
            staleness(r#","cacheDuration":"100s","maxStaleness":"100s""#),
            Duration::from_secs(100)
        );
        assert_eq!(
            staleness(r#","maxStaleness":"2h""#),
            Duration::from_secs(7200)
        );
        let e = refused(&remote(r#","cacheDuration":"100s","maxStaleness":"99s""#));
        assert_eq!(e.path, "providers[0].remoteJwks.maxStaleness");
        assert!(e.to_string().contains("at least cacheDuration"), "{e}");
        // Default cacheDuration (10m).
        assert_eq!(
            refused(&remote(r#","maxStaleness":"5m""#)).path,
            "providers[0].remoteJwks.maxStaleness"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn readme_example_is_a_valid_config() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## JWT filter: configuration reference")
            .nth(1)
            .expect("README has the jwt-auth configuration reference");
        let example = section
            .split("```json\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the reference has a JSON example");
        let c = parse(example).unwrap();
        assert_eq!(c.providers[0].issuer, "https://idp.bank.example");
        assert!(matches!(c.providers[0].keys, KeySource::Remote(_)));
        assert_eq!(c.routes.rules().count(), 2);
        assert_eq!(c.outputs.filter_state_claims, vec!["customer_id"]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn normalises_names_and_rule_prefixes() {
        let c = parse(&with_provider(
            "",
            r#","tokenSources":[{"header":"X-Api-Token"},{"queryParam":"access_token"},{"cookie":"sess"}],
               "rules":[{"pathPrefix":"/payments/","methods":["POST"],"requiredScopes":["payments:write"]}],
               "customerBinding":{"claim":"customer_id","header":"X-Customer-Id"},
               "outputs":{"claimHeaders":[{"claim":"sub","header":"X-Jwt-Sub"}],"payloadHeader":"x-jwt-payload"}"#,
        ))
        .unwrap();
        assert_eq!(
            c.token_sources,
            vec![
                TokenSource::Header {
                    name: "x-api-token".into(),
                    prefix: String::new()
                },
                TokenSource::QueryParam("access_token".into()),
                TokenSource::Cookie("sess".into()),
            ]
        );
        let (route, _) = c.routes.rules().next().unwrap();
        assert_eq!(route.path_prefix(), "/payments");
        assert_eq!(route.methods(), ["POST"]);
        assert_eq!(c.customer_binding.unwrap().header, "x-customer-id");
        assert_eq!(
            c.outputs.owned_headers(),
            vec!["x-jwt-payload", "x-jwt-sub"]
        );
    }
}
