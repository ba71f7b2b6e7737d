//! The filter's pluginConfig: what the JSON may say, its safe defaults, and the validated
//! form every stream shares.
//!
//! The doc comments on [`PluginConfig`] and the types it uses are the configuration
//! reference. Parsing goes through [`Config::from_json`], which refuses unknown fields and
//! names the offending field in its one-line error.

use std::time::Duration;

use banking_filter_common::config::{self, ConfigError, duration, whole_number};
use banking_filter_common::mode::Mode;
use banking_filter_common::record;
use banking_filter_common::route::{PathMatch, PathMatching, RouteMatch, RouteTable};
use banking_filter_common::slots::{MAX_PROBE, SlotTable};
use serde::Deserialize;

use crate::bucket::Rate;

/// How this filter names itself in logs, problems and shared-data keys.
pub const FILTER: &str = "rate-limit";

/// The pluginConfig document.
///
/// ```json
/// {
///   "instance": "rate-limit",
///   "limits": [
///     {"name": "payment_create", "pathPrefix": "/payments", "methods": ["POST"],
///      "operations": ["payment.create"], "key": "customer",
///      "quota": 10, "window": "1m", "burst": 3},
///     {"name": "payments_proxy", "pathPrefix": "/payments", "key": "proxy",
///      "quota": 1000, "window": "1s"}
///   ],
///   "bypassPaths": [{"exact": "/healthz"}]
/// }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    /// This plugin's name among the rate-limit plugins on a proxy (required): 1 to 63
    /// lower-case letters, digits and `-`, e.g. the WasmPlugin's own name. It namespaces the
    /// buckets the proxy's workers share (`rate-limit/<instance>/...`): Istio gives every
    /// WasmPlugin on a proxy one shared-data space.
    pub instance: String,

    /// `enforce` (default) refuses a request over a limit with 429; `dryRun` never refuses:
    /// it counts `banking_rate_limit_would_limit_<limit>`, logs once per limit per window,
    /// records the would-be refusal in filter state (`banking.decision.would_deny`) and lets
    /// the request through without charging it.
    #[serde(default)]
    pub mode: Mode,

    /// The limits. A request is checked against every limit whose route it matches, in this
    /// order, and charged only if all allow it: list the limit most likely to refuse (the
    /// narrowest key) first, so that a refusal rarely has charges to give back.
    pub limits: Vec<LimitConfig>,

    /// How paths are compared: `{"case": "insensitive" | "sensitive", "parameters":
    /// "refuse" | "strip"}`, as in every filter. Default: case-insensitive, `;` refused.
    #[serde(default)]
    pub path_matching: PathMatching,

    /// Paths no limit applies to, e.g. health checks: `{"exact": "/healthz"}` or
    /// `{"prefix": "/health/"}`, compared byte for byte with the normalised path.
    #[serde(default)]
    pub bypass_paths: Vec<PathMatch>,

    /// Verified callers no limit applies to, e.g. a bank's own batch client:
    /// `{"issuer": "https://idp.bank.example", "subject": "batch-client"}`, both compared
    /// with the token jwt-auth verified (`iss` and `sub`; a `sub` is unique only within its
    /// issuer). Never matched against anything a client sends.
    #[serde(default)]
    pub exempt_subjects: Vec<ExemptSubject>,

    /// What a `subject`, `customer` or `client` limit does with a request that has no
    /// verified identity (jwt-auth absent from the chain, a bypass path of jwt-auth's, a
    /// failed token let through by jwt-auth in dry-run): `deny` (default) refuses it with 403
    /// `identity-required`; `clientAddress` limits it by client address instead, in a bucket
    /// of its own. Deny is the default because a gap in authentication must not turn a
    /// per-customer limit into no limit.
    #[serde(default)]
    pub without_identity: WithoutIdentity,

    /// Where `clientAddress` keys come from. Default (`{}`): the downstream address Envoy
    /// computed (`source.address`), which already honours the listener's
    /// `xff_num_trusted_hops` (Istio's `numTrustedProxies`): the right choice wherever Envoy
    /// is configured for the proxies in front of it. `{"trustedHops": n}` reads
    /// `x-forwarded-for` instead, the address `n` entries from its right (0: the last); only
    /// correct if exactly `n` trusted proxies append to the header after the client, or a
    /// client picks its own key. A request whose header has too few entries is keyed by
    /// `source.address`.
    #[serde(default)]
    pub client_address: ClientAddressConfig,

    /// Which rate-limit fields responses carry.
    #[serde(default)]
    pub response_fields: ResponseFieldsConfig,
}

/// One limit.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitConfig {
    /// The limit's name: 1 to 48 lower-case letters, digits and `_`, starting with a letter.
    /// Clients see it (the problem's `limit`, the `RateLimit` fields), counters carry it,
    /// and it names the limit's buckets: a config push that keeps a limit's `name`, `key` and
    /// `slots` keeps its buckets.
    pub name: String,

    /// Path prefix the limit covers, on segment boundaries, as in every filter's rules.
    /// Default `/`: every path.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,

    /// HTTP methods the limit covers, in upper case. Empty or absent: all.
    #[serde(default)]
    pub methods: Vec<String>,

    /// `x-banking-operation` values the limit covers (e.g. `payment.create`). Empty or
    /// absent: any request on the route. A request on the route without the header, or with
    /// more than one, is covered too: leaving the header out must not escape a limit. The
    /// header is the client's; banking-headers' rules tie each route to its operations, so
    /// list the route as well.
    #[serde(default)]
    pub operations: Vec<String>,

    /// Whose bucket a request is charged to: `subject`, `customer` or `client` (from the
    /// identity jwt-auth verified: `sub`, the customer-binding claim, `client_id` or `azp`),
    /// `clientAddress` (see `clientAddress`), or `proxy` (one bucket for the whole proxy).
    pub key: KeyKind,

    /// Requests allowed per `window`, on average (1 to 1,000,000).
    #[serde(deserialize_with = "whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub quota: u32,

    /// The window, whole seconds from `1s` to `24h`: `"1s"`, `"1m"`, `"1h"`.
    #[serde(deserialize_with = "duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub window: Duration,

    /// Requests a key may make at once after being idle (1 to `quota`). Default: `quota`,
    /// so a whole window's quota may come in one burst.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<banking_filter_common::config::schema::WholeNumber>")
    )]
    pub burst: Option<u32>,

    /// Buckets the limit keeps (1 to 1,048,576; default 4,096): the most keys it tracks at
    /// once. A key's bucket is free again once it has refilled.
    #[serde(default = "default_slots", deserialize_with = "whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub slots: u32,

    /// What happens when the limit's bucket cannot be updated (every compare-and-swap lost
    /// to other workers, or no free bucket for a new key): `deny` (default) refuses with 429,
    /// `allow` lets the request through uncharged. Both are counted.
    #[serde(default)]
    pub on_contention: OnContention,
}

/// Whose bucket a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum KeyKind {
    Subject,
    Customer,
    Client,
    ClientAddress,
    Proxy,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Subject => "subject",
            KeyKind::Customer => "customer",
            KeyKind::Client => "client",
            KeyKind::ClientAddress => "clientAddress",
            KeyKind::Proxy => "proxy",
        }
    }

    /// Whether the key comes from the verified identity.
    pub fn needs_identity(self) -> bool {
        matches!(self, KeyKind::Subject | KeyKind::Customer | KeyKind::Client)
    }
}

/// `withoutIdentity`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum WithoutIdentity {
    #[default]
    Deny,
    ClientAddress,
}

/// `onContention`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum OnContention {
    #[default]
    Deny,
    Allow,
}

/// `clientAddress`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientAddressConfig {
    /// Read `x-forwarded-for`, skipping this many trusted proxies' entries from its right
    /// (0 to 16). Absent: `source.address`.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<banking_filter_common::config::schema::WholeNumber>")
    )]
    pub trusted_hops: Option<u32>,
}

/// One of `exemptSubjects`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExemptSubject {
    pub issuer: String,
    pub subject: String,
}

/// `responseFields`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseFieldsConfig {
    /// Add `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-11) to
    /// allowed responses too, for the most restrictive limit that applied. 429s always carry
    /// them. Default true.
    #[serde(default = "yes")]
    pub on_allowed: bool,
    /// Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`
    /// (seconds), for clients written against that older convention. Default false.
    #[serde(default)]
    pub x_rate_limit: bool,
}

impl Default for ResponseFieldsConfig {
    fn default() -> Self {
        ResponseFieldsConfig {
            on_allowed: true,
            x_rate_limit: false,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_path_prefix() -> String {
    "/".to_string()
}

fn default_slots() -> u32 {
    4096
}

fn optional_whole_number<'de, D>(de: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    whole_number(de).map(Some)
}

/// Largest `quota`.
pub const MAX_QUOTA: u32 = 1_000_000;
/// Largest `slots`.
pub const MAX_SLOTS: u32 = 1 << 20;
/// Largest `clientAddress.trustedHops`.
pub const MAX_TRUSTED_HOPS: u32 = 16;
/// Longest window.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Slots probed per key: a new key finds a free bucket within this many.
pub const PROBE: u32 = 8;
/// A slot's key: a SHA-256 digest of what the limit is keyed by.
pub const SLOT_KEY_LEN: u16 = 32;
/// A slot's value: the bucket's theoretical arrival time, 8 bytes.
pub const SLOT_VALUE_LEN: u32 = 8;

/// The validated configuration every stream shares.
#[derive(Debug, Clone)]
pub struct Config {
    pub instance: String,
    pub mode: Mode,
    pub limits: Vec<Limit>,
    /// Bypass paths only: limits are matched by [`Limit::route`], every one that applies.
    pub routes: RouteTable<()>,
    pub exempt_subjects: Vec<ExemptSubject>,
    pub without_identity: WithoutIdentity,
    /// `None`: client addresses are `source.address`.
    pub trusted_hops: Option<u32>,
    pub response_fields: ResponseFieldsConfig,
}

/// One validated limit.
#[derive(Debug, Clone)]
pub struct Limit {
    pub name: String,
    pub route: RouteMatch,
    pub operations: Vec<String>,
    pub key: KeyKind,
    pub rate: Rate,
    /// Its `RateLimit-Policy` field value, `"<name>";q=<quota>;w=<window s>`, written once.
    pub policy_field: String,
    pub on_contention: OnContention,
    /// Its buckets in shared data: `rate-limit/<instance>/<name>/<key>/<slots>`, so a push
    /// that keeps name, key and size keeps the buckets, and any other change starts afresh.
    pub table: SlotTable,
}

impl Config {
    /// Parses and validates pluginConfig bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        Config::validate(config::parse(bytes)?)
    }

    /// Checks everything serde cannot.
    pub fn validate(raw: PluginConfig) -> Result<Config, ConfigError> {
        record::check_instance(&raw.instance).map_err(|m| ConfigError::at("instance", m))?;
        if raw.limits.is_empty() {
            return Err(ConfigError::at("limits", "at least one limit is required"));
        }
        let mut limits: Vec<Limit> = Vec::with_capacity(raw.limits.len());
        for (i, l) in raw.limits.iter().enumerate() {
            let at = format!("limits[{i}]");
            check_limit_name(&l.name).map_err(|m| ConfigError::at(format!("{at}.name"), m))?;
            if limits.iter().any(|seen| seen.name == l.name) {
                return Err(ConfigError::at(
                    format!("{at}.name"),
                    format!("{:?} names two limits", l.name),
                ));
            }
            let route = RouteMatch::new(&l.path_prefix, &l.methods, raw.path_matching, &at)?;
            for (j, op) in l.operations.iter().enumerate() {
                check_operation(op)
                    .map_err(|m| ConfigError::at(format!("{at}.operations[{j}]"), m))?;
            }
            if !(1..=MAX_QUOTA).contains(&l.quota) {
                return Err(ConfigError::at(
                    format!("{at}.quota"),
                    format!("must be 1 to {MAX_QUOTA}"),
                ));
            }
            let window = l.window;
            if window < Duration::from_secs(1) || window > MAX_WINDOW || window.subsec_nanos() != 0
            {
                return Err(ConfigError::at(
                    format!("{at}.window"),
                    "must be whole seconds from 1s to 24h",
                ));
            }
            let burst = l.burst.unwrap_or(l.quota);
            if !(1..=l.quota).contains(&burst) {
                return Err(ConfigError::at(
                    format!("{at}.burst"),
                    format!("must be 1 to the quota ({})", l.quota),
                ));
            }
            if !(1..=MAX_SLOTS).contains(&l.slots) {
                return Err(ConfigError::at(
                    format!("{at}.slots"),
                    format!("must be 1 to {MAX_SLOTS}"),
                ));
            }
            let namespace = format!(
                "{}{}/{}/{}",
                record::key_prefix(FILTER, &raw.instance),
                l.name,
                l.key.as_str(),
                l.slots
            );
            let table = SlotTable::new(
                &namespace,
                l.slots,
                PROBE.min(l.slots).min(MAX_PROBE),
                SLOT_KEY_LEN,
                SLOT_VALUE_LEN,
            )
            .map_err(|e| ConfigError::at(format!("{at}.slots"), e.0))?
            // A full bucket loses nothing when its slot goes to another key, so the slot is
            // free the moment the bucket is full: no grace holding idle keys' slots, and no new
            // key refused for meeting one. The price, a bucket placed twice by two workers at
            // that instant, is at most one fresh burst.
            .reclaiming_at_expiry();
            let rate = Rate::new(l.quota, window, burst);
            // Names are lower-case letters, digits and `_`: an sf-string as they are.
            let policy_field = format!(
                "\"{}\";q={};w={}",
                l.name,
                rate.quota(),
                rate.window_seconds()
            );
            limits.push(Limit {
                name: l.name.clone(),
                route,
                operations: l.operations.clone(),
                key: l.key,
                rate,
                policy_field,
                on_contention: l.on_contention,
                table,
            });
        }
        let routes = RouteTable::new(raw.path_matching, &raw.bypass_paths, &[])?;
        for (i, s) in raw.exempt_subjects.iter().enumerate() {
            for (field, value) in [("issuer", &s.issuer), ("subject", &s.subject)] {
                if value.is_empty() {
                    return Err(ConfigError::at(
                        format!("exemptSubjects[{i}].{field}"),
                        "must not be empty",
                    ));
                }
            }
        }
        if raw
            .client_address
            .trusted_hops
            .is_some_and(|hops| hops > MAX_TRUSTED_HOPS)
        {
            return Err(ConfigError::at(
                "clientAddress.trustedHops",
                format!("must be 0 to {MAX_TRUSTED_HOPS}"),
            ));
        }
        Ok(Config {
            instance: raw.instance,
            mode: raw.mode,
            limits,
            routes,
            exempt_subjects: raw.exempt_subjects,
            without_identity: raw.without_identity,
            trusted_hops: raw.client_address.trusted_hops,
            response_fields: raw.response_fields,
        })
    }

    /// Bytes of shared data all limits' buckets may take (without Envoy's own per-entry
    /// overhead): the README's memory figure.
    pub fn memory_bound_bytes(&self) -> u64 {
        self.limits
            .iter()
            .map(|l| l.table.memory_bound_bytes())
            .fold(0, u64::saturating_add)
    }
}

/// A limit's name: it appears in counters, response fields and shared-data keys.
fn check_limit_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let ok = (1..=48).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not 1 to 48 lower-case letters, digits and '_' starting with a letter"
        ))
    }
}

/// An operation as banking-headers accepts one: 1 to 64 letters, digits, `.`, `_`, `-`.
fn check_operation(op: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&op.len())
        && op
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{op:?} is not 1 to 64 letters, digits, '.', '_' and '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn parse(limits: &str, rest: &str) -> Result<Config, ConfigError> {
        Config::from_json(format!(r#"{{"instance":"rl","limits":[{limits}]{rest}}}"#).as_bytes())
    }

    const CUSTOMER: &str = r#"{"name":"payment_create","pathPrefix":"/payments","methods":["POST"],"operations":["payment.create"],"key":"customer","quota":10,"window":"1m","burst":3}"#;

    #[wasm_bindgen_test(unsupported = test)]
    fn a_banking_policy_parses_with_istio_floats() {
        let istio = r#"{"instance":"rl","limits":[{"name":"reads","key":"customer","quota":120.0,"window":"1m","slots":64.0}]}"#;
        let config = Config::from_json(istio.as_bytes()).unwrap();
        let limit = &config.limits[0];
        assert_eq!(limit.rate.quota(), 120);
        assert_eq!(limit.rate.burst(), 120, "burst defaults to the quota");
        assert_eq!(limit.table.slot_count(), 64);
        assert_eq!(
            limit.table.slot_name(0),
            "rate-limit/rl/reads/customer/64/slot/0"
        );
        assert_eq!(limit.on_contention, OnContention::Deny);
        assert_eq!(config.without_identity, WithoutIdentity::Deny);
        let config = parse(CUSTOMER, "").unwrap();
        assert_eq!(config.limits[0].rate.burst(), 3);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn each_bad_field_is_named() {
        let cases = [
            (
                r#"{"name":"Bad","key":"proxy","quota":1,"window":"1s"}"#,
                "limits[0].name",
            ),
            (
                r#"{"name":"a","key":"proxy","quota":0,"window":"1s"}"#,
                "limits[0].quota",
            ),
            (
                r#"{"name":"a","key":"proxy","quota":1.5,"window":"1s"}"#,
                "limits[0].quota",
            ),
            (
                r#"{"name":"a","key":"proxy","quota":1,"window":"500ms"}"#,
                "limits[0].window",
            ),
            (
                r#"{"name":"a","key":"proxy","quota":1,"window":"1500ms"}"#,
                "limits[0].window",
            ),
            (
                r#"{"name":"a","key":"proxy","quota":1,"window":"25h"}"#,
                "limits[0].window",
            ),
            (
                r#"{"name":"a","key":"proxy","quota":2,"window":"1s","burst":3}"#,
                "limits[0].burst",
            ),
            (
                r#"{"name":"a","key":"proxy","quota":2,"window":"1s","slots":0}"#,
                "limits[0].slots",
            ),
            (
                r#"{"name":"a","key":"header","quota":2,"window":"1s"}"#,
                "limits[0].key",
            ),
            (
                r#"{"name":"a","key":"proxy","quota":2,"window":"1s","methods":["post"]}"#,
                "limits[0].methods[0]",
            ),
            (
                r#"{"name":"a","key":"proxy","quota":2,"window":"1s","operations":["a b"]}"#,
                "limits[0].operations[0]",
            ),
            (
                r#"{"name":"a","key":"proxy","quota":2,"window":"1s","pathPrefix":"/p%61y"}"#,
                "limits[0].pathPrefix",
            ),
            (
                r#"{"name":"a","key":"proxy","quota":2,"window":"1s","extra":1}"#,
                "limits[0]",
            ),
        ];
        for (limit, field) in cases {
            let e = parse(limit, "").unwrap_err();
            assert!(e.path.starts_with(field), "{limit}: {e}");
        }
        let twice = format!("{CUSTOMER},{CUSTOMER}");
        assert_eq!(parse(&twice, "").unwrap_err().path, "limits[1].name");
        assert_eq!(
            parse(
                CUSTOMER,
                r#","exemptSubjects":[{"issuer":"i","subject":""}]"#
            )
            .unwrap_err()
            .path,
            "exemptSubjects[0].subject"
        );
        assert!(parse(CUSTOMER, r#","exemptSubjects":["batch"]"#).is_err());
        assert_eq!(
            parse(CUSTOMER, r#","clientAddress":{"trustedHops":17}"#)
                .unwrap_err()
                .path,
            "clientAddress.trustedHops"
        );
        assert_eq!(parse("", "").unwrap_err().path, "limits");
        let no_instance = Config::from_json(br#"{"limits":[]}"#).unwrap_err();
        assert!(no_instance.message.contains("instance"), "{no_instance}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_memory_bound_counts_every_limits_buckets() {
        let config = parse(CUSTOMER, "").unwrap();
        // 4,096 slots of name + 20-byte header + 32-byte key + 8-byte value.
        let name = "rate-limit/rl/payment_create/customer/4096/slot/4095".len() as u64;
        assert_eq!(config.memory_bound_bytes(), 4096 * (name + 20 + 32 + 8));
    }
}
