//! The filter's pluginConfig: what the JSON may say, its safe defaults, and the validated
//! form every stream shares. The doc comments are the configuration reference.

use std::time::Duration;

use banking_filter_common::config::{self, ConfigError, duration, whole_number};
use banking_filter_common::mode::Mode;
use banking_filter_common::record;
use banking_filter_common::route::{PathMatch, PathMatching, RouteMatch, RouteTable};
use banking_filter_common::slots::SlotTable;
use serde::Deserialize;

use crate::key::KeyBounds;
use crate::policy::SettlePolicy;
use crate::webdis::WebdisStore;

/// How this filter names itself in logs, problems and shared-data keys.
pub const FILTER: &str = "idempotency";

/// The pluginConfig document.
///
/// ```json
/// {
///   "instance": "idempotency",
///   "routes": [{"pathPrefix": "/payments", "methods": ["POST"]},
///              {"pathPrefix": "/transfers", "methods": ["POST"]}],
///   "retention": "24h",
///   "lease": "60s",
///   "store": {"sharedData": {"slots": 1024}}
/// }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    /// This plugin's name among the idempotency plugins on a proxy (required): namespaces its
    /// records in shared data and in Redis.
    pub instance: String,

    /// `enforce` (default), or `dryRun`: keys and identities are checked, a would-be refusal
    /// is counted and recorded in `banking.decision.would_deny`, and nothing is refused,
    /// reserved or replayed.
    #[serde(default)]
    pub mode: Mode,

    /// The routes that require a key (at least one), e.g. `POST /payments`. Other requests
    /// pass untouched.
    pub routes: Vec<RouteConfig>,

    /// As in every filter.
    #[serde(default)]
    pub path_matching: PathMatching,

    /// As in every filter.
    #[serde(default)]
    pub bypass_paths: Vec<PathMatch>,

    /// Shortest key accepted (default 8).
    #[serde(default = "default_min_key_length", deserialize_with = "whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub min_key_length: usize,

    /// Longest key accepted (default 255, at most 1,024).
    #[serde(default = "default_max_key_length", deserialize_with = "whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub max_key_length: usize,

    /// Whose keys a key is among: `subject` (default: the verified `sub`, per issuer) or
    /// `customer` (the customer jwt-auth bound the token to). Two callers never share or see
    /// each other's keys.
    #[serde(default)]
    pub scope: Scope,

    /// How long a completed request's response is kept and replayed (default `24h`).
    #[serde(default = "default_retention", deserialize_with = "duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub retention: Duration,

    /// How long a reservation holds while its request is upstream (default `60s`): longer
    /// than the route's timeout. A reservation that outlives it without an outcome makes
    /// repeats get 409 `idempotency-outcome-unknown`.
    #[serde(default = "default_lease", deserialize_with = "duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub lease: Duration,

    /// Request headers that, with the method, path and body, make two requests the same
    /// (default `["content-type"]`).
    #[serde(default = "default_fingerprint_headers")]
    pub fingerprint_headers: Vec<String>,

    /// Response headers kept and replayed with the status and body (default
    /// `["content-type", "location"]`).
    #[serde(default = "default_stored_headers")]
    pub stored_headers: Vec<String>,

    /// Largest response body kept (default 16,384 bytes, at most 1 MiB). A larger one is
    /// not kept: a repeat gets 409 `idempotency-response-not-kept`.
    #[serde(default = "default_max_stored_body", deserialize_with = "whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub max_stored_body_bytes: usize,

    /// Statuses after which the key is released so the client may retry (default
    /// `[408, 409, 425, 429]`).
    #[serde(default = "default_retryable")]
    pub retryable_statuses: Vec<u16>,

    /// Keep 5xx answers and upstream resets and timeouts (default true: the payment may have
    /// executed, so a repeat must not run it again).
    #[serde(default = "yes")]
    pub store_server_errors: bool,

    /// Where records live: `{"sharedData": {"slots": 1024}}` (default), the proxy's shared
    /// data, for one proxy (every worker of it); or `{"redis": {...}}`, one Redis through
    /// Webdis shared by every replica. A record takes at most `maxStoredBodyBytes` + 8 KiB of
    /// headers + 70 bytes: see the README's sizing.
    #[serde(default)]
    pub store: StoreConfig,
}

/// `store`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum StoreConfig {
    /// The embedded store.
    SharedData(SharedDataConfig),
    /// Redis through Webdis.
    Redis(RedisConfig),
}

/// `store.redis`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisConfig {
    /// The Envoy cluster of Webdis (required), as Istio names it:
    /// `outbound|7379||webdis.<namespace>.svc.cluster.local`.
    pub cluster: String,
    /// The calls' `:authority` (default: the host in an Istio cluster name, e.g.
    /// `webdis.<namespace>.svc.cluster.local`; required for any other cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// Prefix of every Redis key (default `banking:idempotency:<instance>:`); letters,
    /// digits and `:_.-`, at most 64 characters.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// How long one call to Webdis may take (default `250ms`, 10ms to 5s). A slower or
    /// failed call answers 503 `idempotency-store-unavailable` and nothing goes upstream.
    #[serde(default = "default_redis_timeout", deserialize_with = "duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub timeout: Duration,
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(250)
}

/// The validated `store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// The embedded store, with this many slots.
    SharedData {
        slots: u32,
    },
    Redis(WebdisStore),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::SharedData(SharedDataConfig::default())
    }
}

/// `store.sharedData`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedDataConfig {
    /// Records kept at once (1 to 65,536; default 1,024): keys in use within the retention.
    #[serde(default = "default_slots", deserialize_with = "whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub slots: u32,
}

impl Default for SharedDataConfig {
    fn default() -> Self {
        SharedDataConfig {
            slots: default_slots(),
        }
    }
}

fn default_slots() -> u32 {
    1024
}

/// One route that requires a key.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    pub path_prefix: String,
    /// Upper case; absent: `["POST"]`.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
}

/// `scope`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    #[default]
    Subject,
    Customer,
}

fn default_min_key_length() -> usize {
    8
}
fn default_max_key_length() -> usize {
    255
}
fn default_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_lease() -> Duration {
    Duration::from_secs(60)
}
fn default_fingerprint_headers() -> Vec<String> {
    vec!["content-type".to_string()]
}
fn default_stored_headers() -> Vec<String> {
    vec!["content-type".to_string(), "location".to_string()]
}
fn default_max_stored_body() -> usize {
    16 * 1024
}
fn default_retryable() -> Vec<u16> {
    SettlePolicy::default().retryable
}
fn default_methods() -> Vec<String> {
    vec!["POST".to_string()]
}
fn yes() -> bool {
    true
}

/// Most bytes of stored response headers a record keeps.
pub const MAX_STORED_HEADER_BYTES: usize = 8 * 1024;
/// A record's own bytes besides headers and body (see `record.rs`), rounded up.
const RECORD_OVERHEAD: usize = 70;
/// Largest `store.sharedData.slots`.
pub const MAX_SLOTS: u32 = 65_536;
/// Slots probed per key.
const PROBE: u32 = 8;

/// Longest key accepted by any configuration.
pub const MAX_KEY_LENGTH: usize = 1024;
/// Largest `maxStoredBodyBytes`.
pub const MAX_STORED_BODY: usize = 1 << 20;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    /// `idempotency/<instance>/`: the prefix of this plugin's records.
    pub key_prefix: String,
    /// The routes that require a key (first match; each named as configured, e.g.
    /// `POST /payments`), bypass paths.
    pub routes: RouteTable<String>,
    pub store: Store,
    pub key_bounds: KeyBounds,
    pub scope: Scope,
    pub retention: Duration,
    pub lease: Duration,
    pub fingerprint_headers: Vec<String>,
    pub stored_headers: Vec<String>,
    pub max_stored_body_bytes: usize,
    pub settle: SettlePolicy,
}

impl Config {
    /// The embedded store's table, `idempotency/<instance>/slot/<n>`; `None` for Redis.
    pub fn slot_table(&self) -> Result<Option<SlotTable>, String> {
        let Store::SharedData { slots } = self.store else {
            return Ok(None);
        };
        let namespace = self.key_prefix.trim_end_matches('/');
        let max_value = RECORD_OVERHEAD + MAX_STORED_HEADER_BYTES + self.max_stored_body_bytes;
        SlotTable::new(
            namespace,
            slots,
            PROBE.min(slots),
            32,
            u32::try_from(max_value).unwrap_or(u32::MAX),
        )
        .map(Some)
        .map_err(|e| format!("store.sharedData.slots: {}", e.0))
    }

    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        Config::validate(config::parse(bytes)?)
    }

    pub fn validate(raw: PluginConfig) -> Result<Config, ConfigError> {
        record::check_instance(&raw.instance).map_err(|m| ConfigError::at("instance", m))?;
        if raw.routes.is_empty() {
            return Err(ConfigError::at("routes", "at least one route is required"));
        }
        let mut routes = RouteTable::new(raw.path_matching, &raw.bypass_paths, &[])?;
        for (i, r) in raw.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            let route = RouteMatch::new(&r.path_prefix, &r.methods, raw.path_matching, &at)?;
            let name = route.describe();
            routes.push(route, name);
        }
        if !(1..=MAX_KEY_LENGTH).contains(&raw.min_key_length) {
            return Err(ConfigError::at(
                "minKeyLength",
                format!("must be 1 to {MAX_KEY_LENGTH}"),
            ));
        }
        if !(raw.min_key_length..=MAX_KEY_LENGTH).contains(&raw.max_key_length) {
            return Err(ConfigError::at(
                "maxKeyLength",
                format!("must be minKeyLength to {MAX_KEY_LENGTH}"),
            ));
        }
        if raw.lease < Duration::from_secs(1) || raw.lease >= raw.retention {
            return Err(ConfigError::at(
                "lease",
                "must be at least 1s and shorter than the retention",
            ));
        }
        if raw.max_stored_body_bytes > MAX_STORED_BODY {
            return Err(ConfigError::at(
                "maxStoredBodyBytes",
                format!("must be at most {MAX_STORED_BODY}"),
            ));
        }
        for (field, names) in [
            ("fingerprintHeaders", &raw.fingerprint_headers),
            ("storedHeaders", &raw.stored_headers),
        ] {
            for (i, name) in names.iter().enumerate() {
                let valid = !name.is_empty()
                    && name.bytes().all(|b| {
                        banking_filter_common::headers::is_tchar(b) && !b.is_ascii_uppercase()
                    });
                if !valid {
                    return Err(ConfigError::at(
                        format!("{field}[{i}]"),
                        "a header name in lower case",
                    ));
                }
            }
        }
        for (i, status) in raw.retryable_statuses.iter().enumerate() {
            if !(100..=599).contains(status) {
                return Err(ConfigError::at(
                    format!("retryableStatuses[{i}]"),
                    "an HTTP status, 100 to 599",
                ));
            }
        }
        let store = match raw.store {
            StoreConfig::SharedData(shared) => {
                if !(1..=MAX_SLOTS).contains(&shared.slots) {
                    return Err(ConfigError::at(
                        "store.sharedData.slots",
                        format!("must be 1 to {MAX_SLOTS}"),
                    ));
                }
                Store::SharedData {
                    slots: shared.slots,
                }
            }
            StoreConfig::Redis(redis) => Store::Redis(redis_store(redis, &raw.instance)?),
        };
        Ok(Config {
            mode: raw.mode,
            key_prefix: record::key_prefix(FILTER, &raw.instance),
            routes,
            store,
            key_bounds: KeyBounds {
                min_len: raw.min_key_length,
                max_len: raw.max_key_length,
            },
            scope: raw.scope,
            retention: raw.retention,
            lease: raw.lease,
            fingerprint_headers: raw.fingerprint_headers,
            stored_headers: raw.stored_headers,
            max_stored_body_bytes: raw.max_stored_body_bytes,
            settle: SettlePolicy {
                retryable: raw.retryable_statuses,
                store_server_errors: raw.store_server_errors,
            },
        })
    }
}

fn redis_store(redis: RedisConfig, instance: &str) -> Result<WebdisStore, ConfigError> {
    let (cluster, authority) =
        config::callout_target(&redis.cluster, redis.authority.as_deref(), "store.redis")?;
    let key_prefix = redis
        .key_prefix
        .unwrap_or_else(|| format!("banking:idempotency:{instance}:"));
    let prefix_ok = key_prefix.len() <= 64
        && key_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.-".contains(&b));
    if !prefix_ok {
        return Err(ConfigError::at(
            "store.redis.keyPrefix",
            "letters, digits and :_.- only, at most 64 characters",
        ));
    }
    if !(Duration::from_millis(10)..=Duration::from_secs(5)).contains(&redis.timeout) {
        return Err(ConfigError::at("store.redis.timeout", "must be 10ms to 5s"));
    }
    Ok(WebdisStore {
        cluster,
        authority,
        key_prefix,
        timeout: redis.timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::from_json(
            format!(r#"{{"instance":"idem","routes":[{{"pathPrefix":"/payments"}}]{extra}}}"#)
                .as_bytes(),
        )
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_defaults_are_a_day_of_retention_and_a_minute_of_lease() {
        let config = parse("").unwrap();
        assert_eq!(config.retention, Duration::from_secs(86_400));
        assert_eq!(config.lease, Duration::from_secs(60));
        assert_eq!(config.key_prefix, "idempotency/idem/");
        assert_eq!(config.settle, SettlePolicy::default());
        assert_eq!(config.scope, Scope::Subject);
        assert_eq!(config.store, Store::SharedData { slots: 1024 });
        let redis = parse(
            r#","store":{"redis":{"cluster":"outbound|7379||webdis.payments.svc.cluster.local"}}"#,
        )
        .unwrap();
        assert_eq!(
            redis.store,
            Store::Redis(WebdisStore {
                cluster: "outbound|7379||webdis.payments.svc.cluster.local".into(),
                authority: "webdis.payments.svc.cluster.local".into(),
                key_prefix: "banking:idempotency:idem:".into(),
                timeout: Duration::from_millis(250),
            })
        );
        // Istio's floats.
        let floats = parse(r#","maxKeyLength":64.0,"retryableStatuses":[429]"#).unwrap();
        assert_eq!(floats.key_bounds.max_len, 64);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn each_bad_field_is_named() {
        let cases = [
            (r#","minKeyLength":0"#, "minKeyLength"),
            (r#","maxKeyLength":4"#, "maxKeyLength"),
            (r#","lease":"24h""#, "lease"),
            (r#","lease":"500ms""#, "lease"),
            (r#","maxStoredBodyBytes":2000000"#, "maxStoredBodyBytes"),
            (r#","storedHeaders":["Location"]"#, "storedHeaders[0]"),
            (r#","fingerprintHeaders":["a b"]"#, "fingerprintHeaders[0]"),
            (r#","retryableStatuses":[99]"#, "retryableStatuses[0]"),
            (r#","scope":"header""#, "scope"),
            (r#","extra":true"#, "."),
        ];
        for (extra, field) in cases {
            let e = parse(extra).unwrap_err();
            assert!(
                e.path == field || (field == "." && e.message.contains("extra")),
                "{extra}: {e}"
            );
        }
        for (store, field) in [
            (r#"{"redis":{}}"#, "store.redis"),
            (r#"{"redis":{"cluster":"webdis"}}"#, "store.redis.authority"),
            (
                r#"{"redis":{"cluster":"outbound|7379||webdis.p.svc.cluster.local","keyPrefix":"a b"}}"#,
                "store.redis.keyPrefix",
            ),
            (
                r#"{"redis":{"cluster":"outbound|7379||webdis.p.svc.cluster.local","timeout":"9s"}}"#,
                "store.redis.timeout",
            ),
        ] {
            let e = parse(&format!(r#","store":{store}"#)).unwrap_err();
            assert_eq!(e.path, field, "{store}: {e}");
        }
        let no_routes = Config::from_json(br#"{"instance":"idem","routes":[]}"#).unwrap_err();
        assert_eq!(no_routes.path, "routes");
    }
}
