//! The filter's pluginConfig: what the JSON may say, its safe defaults, and the validated
//! form. The doc comments are the configuration reference.

use std::time::Duration;

use banking_filter_common::config::{self, ConfigError, duration, whole_number};
use banking_filter_common::record;
use serde::Deserialize;

use banking_filter_common::route::{PathMatching, RouteMatch, RouteTable};

use crate::body::{self, BodyField, BodyPolicy, FieldMask};
use crate::record::Query;

/// How this filter names itself in logs, problems and metrics.
pub const FILTER: &str = "audit-log";

/// The pluginConfig document.
///
/// ```json
/// {
///   "instance": "audit",
///   "redactedQueryParameters": ["token"],
///   "checkpointInterval": "60s",
///   "otlp": {"cluster": "outbound|4318||otel-collector.observability.svc.cluster.local"}
/// }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    /// This plugin's name among the audit-log plugins on a proxy (required); recorded in
    /// each chain's genesis.
    pub instance: String,

    /// The proxy log level of the record lines (`info` by default; `debug`, `warn`). Istio's
    /// proxy logs Wasm at `warning` unless told otherwise: set the `wasm` component to this
    /// level (`sidecar.istio.io/logLevel`/`componentLogLevel: wasm:info`) to collect them.
    #[serde(default)]
    pub log_level: LineLevel,

    /// `drop` (default): the query string is left out of the recorded path; `mask`: kept,
    /// each value masked, and the values of `redactedQueryParameters` replaced by `***`.
    #[serde(default)]
    pub query_string: QueryString,

    /// Query parameters whose values are never recorded (with `queryString: mask`).
    #[serde(default)]
    pub redacted_query_parameters: Vec<String>,

    /// `truncate` (default: first six and last four digits of a card number) or
    /// `keyedHash` (an HMAC-SHA256 under the key in the environment variable `panKeyEnv`).
    #[serde(default)]
    pub pan_masking: PanMode,

    /// The environment variable (from the WasmPlugin's `vmConfig.env`) holding the key of
    /// `keyedHash` (default `BANKING_AUDIT_PAN_KEY`). Never put the key in pluginConfig.
    #[serde(default = "default_pan_key_env")]
    pub pan_key_env: String,

    /// The environment variable (from `vmConfig.env`) holding the checkpoint key, 32 bytes
    /// or more: with it, every checkpoint and `end` record carries an HMAC-SHA256 that
    /// `audit-verify --checkpoint-key-env` checks, so a rewritten chain cannot pass for the
    /// real one. None by default; when named, the variable must be set.
    #[serde(default)]
    pub checkpoint_key_env: Option<String>,

    /// How often each VM writes a checkpoint record (chain id, count, head): default `60s`,
    /// 1s to 1h.
    #[serde(default = "default_checkpoint", deserialize_with = "duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub checkpoint_interval: Duration,

    /// Where records are shipped, as OTLP/HTTP JSON logs. Without it records only go to the
    /// proxy log.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,

    /// Banking operations (`x-banking-operation` values) counted apart, at most 64: each
    /// gets `banking_audit_log_requests_<operation>_<outcome>` counters (outcome `success`,
    /// `failure` or `denied`; the name in lower case, other characters as `_`). Every other
    /// request counts under `other`: a client's header never creates a metric.
    #[serde(default)]
    pub metric_operations: Vec<String>,

    /// Banking context read from JSON request bodies on some routes (none by default).
    #[serde(default)]
    pub body: Option<BodyConfig>,

    /// As in every filter: how paths are normalised before `body.routes` match them.
    #[serde(default)]
    pub path_matching: PathMatching,
}

/// `body`: which routes' request bodies are read, and what is recorded from them.
///
/// ```json
/// {"routes": [{"pathPrefix": "/payments", "methods": ["POST"]}],
///  "fields": [{"name": "amount", "pointer": "/amount"},
///             {"name": "creditorIban", "pointer": "/creditorAccount/iban"},
///             {"name": "debtorAccount", "pointer": "/debtorAccount/number", "mask": "last4"}]}
/// ```
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BodyConfig {
    /// The routes whose bodies are read (at least one; first match).
    pub routes: Vec<BodyRouteConfig>,
    /// The values recorded, under `body` in the record (at least one, at most 32).
    pub fields: Vec<BodyFieldConfig>,
    /// Member names never recorded, added to the built-in list (CVV, CVC, CID, PIN, PIN
    /// block, track data...), compared without case, `-` or `_`. A pointer may not name
    /// one; inside a recorded object they are left out.
    #[serde(default)]
    pub drop_fields: Vec<String>,
    /// Bodies longer than this are not read (the record says `bodyUnread: too-large`):
    /// default 64 KiB, at most 1 MiB. The filter never holds a request back: it reads the
    /// body as it passes.
    #[serde(default = "default_max_body", deserialize_with = "whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub max_body_bytes: usize,
}

/// One route whose body is read.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BodyRouteConfig {
    pub path_prefix: String,
    /// Upper case; absent: `["POST", "PUT", "PATCH"]`.
    #[serde(default = "default_body_methods")]
    pub methods: Vec<String>,
}

/// One recorded value.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BodyFieldConfig {
    /// Its name in the record: letters, digits, `_`, `-`, `.`.
    pub name: String,
    /// An RFC 6901 JSON pointer, e.g. `/creditorAccount/iban`.
    pub pointer: String,
    /// `standard` (default: card numbers, IBANs and e-mail addresses masked, as all client
    /// text) or `last4` (only the last four characters kept, e.g. account numbers).
    #[serde(default)]
    pub mask: BodyMask,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum BodyMask {
    #[default]
    Standard,
    Last4,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum LineLevel {
    Debug,
    #[default]
    Info,
    Warn,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum QueryString {
    #[default]
    Drop,
    Mask,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum PanMode {
    #[default]
    Truncate,
    KeyedHash,
}

/// `otlp`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's Envoy cluster (required), as Istio names it:
    /// `outbound|4318||otel-collector.<namespace>.svc.cluster.local`.
    pub cluster: String,
    /// The calls' `:authority` (default: the host of an Istio cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// Default `/v1/logs`.
    #[serde(default = "default_logs_path")]
    pub path: String,
    /// Default `2s`.
    #[serde(default = "default_otlp_timeout", deserialize_with = "duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub timeout: Duration,
    /// Records per request to the collector (default 100).
    #[serde(default = "default_batch", deserialize_with = "whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub batch_records: usize,
    /// Records a VM holds while the collector cannot take them (default 10,000).
    #[serde(default = "default_buffer", deserialize_with = "whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub buffer_records: usize,
    /// Bytes of records a VM holds at most (default 16 MiB, at most 256 MiB): with
    /// `bufferRecords`, whichever comes first.
    #[serde(default = "default_buffer_bytes", deserialize_with = "whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub buffer_bytes: usize,
    /// How often a partial batch is sent (default `1s`).
    #[serde(default = "default_flush", deserialize_with = "duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::DurationText")
    )]
    pub flush_interval: Duration,
    /// `dropOldest` (default: the oldest records go, counted, and a `gap` record on the
    /// chain says how many) or `reject` (requests get 503 `audit-unavailable` while the
    /// buffer is full: no audit, no transaction).
    #[serde(default)]
    pub on_buffer_full: BufferFull,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum BufferFull {
    #[default]
    DropOldest,
    Reject,
}

fn default_max_body() -> usize {
    64 << 10
}
fn default_body_methods() -> Vec<String> {
    ["POST", "PUT", "PATCH"].map(String::from).to_vec()
}
fn default_pan_key_env() -> String {
    "BANKING_AUDIT_PAN_KEY".to_string()
}
fn default_checkpoint() -> Duration {
    Duration::from_secs(60)
}
fn default_logs_path() -> String {
    "/v1/logs".to_string()
}
fn default_otlp_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_batch() -> usize {
    100
}
fn default_buffer() -> usize {
    10_000
}
fn default_buffer_bytes() -> usize {
    16 << 20
}
fn default_flush() -> Duration {
    Duration::from_secs(1)
}

/// Where records are shipped, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otlp {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout: Duration,
    pub batch_records: usize,
    pub buffer_records: usize,
    pub buffer_bytes: usize,
    pub flush_interval: Duration,
    pub on_buffer_full: BufferFull,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub instance: String,
    pub log_level: LineLevel,
    pub query: Query,
    pub pan_masking: PanMode,
    pub pan_key_env: String,
    pub checkpoint_key_env: Option<String>,
    pub checkpoint_interval: Duration,
    pub otlp: Option<Otlp>,
    pub metric_operations: Vec<String>,
    /// The routes whose bodies are read, and what is recorded from them.
    pub body: Option<(RouteTable<()>, BodyPolicy)>,
}

impl Config {
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        Config::validate(config::parse(bytes)?)
    }

    pub fn validate(raw: PluginConfig) -> Result<Config, ConfigError> {
        record::check_instance(&raw.instance).map_err(|m| ConfigError::at("instance", m))?;
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&raw.checkpoint_interval)
        {
            return Err(ConfigError::at("checkpointInterval", "must be 1s to 1h"));
        }
        let env_ok = |name: &str| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        const ENV_NAME: &str = "an environment variable name: letters, digits and _";
        if !env_ok(&raw.pan_key_env) {
            return Err(ConfigError::at("panKeyEnv", ENV_NAME));
        }
        if raw
            .checkpoint_key_env
            .as_deref()
            .is_some_and(|n| !env_ok(n))
        {
            return Err(ConfigError::at("checkpointKeyEnv", ENV_NAME));
        }
        if raw.checkpoint_key_env.as_deref() == Some(raw.pan_key_env.as_str()) {
            return Err(ConfigError::at(
                "checkpointKeyEnv",
                "must not be panKeyEnv: whoever verifies chains holds the checkpoint key, and must not be able to test card numbers against their keyed hashes",
            ));
        }
        let query = match raw.query_string {
            QueryString::Drop => Query::Drop,
            QueryString::Mask => Query::Mask {
                redacted: raw.redacted_query_parameters,
            },
        };
        let otlp = match raw.otlp {
            None => None,
            Some(o) => Some(otlp(o)?),
        };
        if raw.metric_operations.len() > 64 {
            return Err(ConfigError::at("metricOperations", "at most 64 operations"));
        }
        let mut metric_names: Vec<String> = Vec::new();
        for (i, op) in raw.metric_operations.iter().enumerate() {
            let metric = metric_operation_name(op);
            if metric_names.contains(&metric) {
                return Err(ConfigError::at(
                    format!("metricOperations[{i}]"),
                    format!("counted as `{metric}` like an operation before it"),
                ));
            }
            metric_names.push(metric);
            let ok = (1..=64).contains(&op.len())
                && op
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok || op.eq_ignore_ascii_case("other") {
                return Err(ConfigError::at(
                    format!("metricOperations[{i}]"),
                    "an operation name: 1 to 64 letters, digits, ., _ or - (not `other`)",
                ));
            }
        }
        let body = match raw.body {
            None => None,
            Some(b) => Some(body(b, raw.path_matching)?),
        };
        Ok(Config {
            body,
            instance: raw.instance,
            log_level: raw.log_level,
            query,
            pan_masking: raw.pan_masking,
            pan_key_env: raw.pan_key_env,
            checkpoint_key_env: raw.checkpoint_key_env,
            metric_operations: raw.metric_operations,
            checkpoint_interval: raw.checkpoint_interval,
            otlp,
        })
    }
}

fn body(
    b: BodyConfig,
    matching: PathMatching,
) -> Result<(RouteTable<()>, BodyPolicy), ConfigError> {
    if b.routes.is_empty() {
        return Err(ConfigError::at(
            "body.routes",
            "at least one route is required",
        ));
    }
    let mut routes = RouteTable::new(matching, &[], &[])?;
    for (i, r) in b.routes.iter().enumerate() {
        let at = format!("body.routes[{i}]");
        routes.push(
            RouteMatch::new(&r.path_prefix, &r.methods, matching, &at)?,
            (),
        );
    }
    if !(1..=MAX_BODY_FIELDS).contains(&b.fields.len()) {
        return Err(ConfigError::at(
            "body.fields",
            format!("1 to {MAX_BODY_FIELDS} fields"),
        ));
    }
    let mut dropped: Vec<String> = Vec::new();
    for (i, name) in b.drop_fields.iter().enumerate() {
        let key = body::drop_key(name);
        if key.is_empty() {
            return Err(ConfigError::at(
                format!("body.dropFields[{i}]"),
                "a member name",
            ));
        }
        dropped.push(key);
    }
    let mut fields: Vec<BodyField> = Vec::with_capacity(b.fields.len());
    for (i, f) in b.fields.into_iter().enumerate() {
        let at = |what: &str| format!("body.fields[{i}].{what}");
        let name_ok = !f.name.is_empty()
            && f.name.len() <= 64
            && f.name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(&c));
        if !name_ok {
            return Err(ConfigError::at(
                at("name"),
                "1 to 64 letters, digits, _, - or .",
            ));
        }
        if fields.iter().any(|g| g.name == f.name) {
            return Err(ConfigError::at(at("name"), "names a field twice"));
        }
        let tokens =
            body::parse_pointer(&f.pointer).map_err(|m| ConfigError::at(at("pointer"), m))?;
        if body::names_dropped(&tokens, &dropped) {
            return Err(ConfigError::at(
                at("pointer"),
                "names card security data (CVV, PIN, track data...), which is never recorded",
            ));
        }
        fields.push(BodyField {
            name: f.name,
            tokens,
            mask: match f.mask {
                BodyMask::Standard => FieldMask::Standard,
                BodyMask::Last4 => FieldMask::Last4,
            },
        });
    }
    if !(1..=1 << 20).contains(&b.max_body_bytes) {
        return Err(ConfigError::at("body.maxBodyBytes", "must be 1 to 1 MiB"));
    }
    Ok((
        routes,
        BodyPolicy {
            fields,
            dropped,
            max_bytes: b.max_body_bytes,
        },
    ))
}

/// How an operation is named in its counters: lower case, other characters as `_`.
pub fn metric_operation_name(operation: &str) -> String {
    operation
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Most values recorded from one body.
const MAX_BODY_FIELDS: usize = 32;

fn otlp(o: OtlpConfig) -> Result<Otlp, ConfigError> {
    let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    let (cluster, authority) = config::callout_target(&o.cluster, o.authority.as_deref(), "otlp")?;
    if !o.path.starts_with('/') || !printable(&o.path) {
        return Err(ConfigError::at("otlp.path", "a path, e.g. /v1/logs"));
    }
    if !(Duration::from_millis(50)..=Duration::from_secs(30)).contains(&o.timeout) {
        return Err(ConfigError::at("otlp.timeout", "must be 50ms to 30s"));
    }
    if !(1..=1000).contains(&o.batch_records) {
        return Err(ConfigError::at("otlp.batchRecords", "must be 1 to 1,000"));
    }
    if !(o.batch_records..=1_000_000).contains(&o.buffer_records) {
        return Err(ConfigError::at(
            "otlp.bufferRecords",
            "must be batchRecords to 1,000,000",
        ));
    }
    if !(64 << 10..=256 << 20).contains(&o.buffer_bytes) {
        return Err(ConfigError::at(
            "otlp.bufferBytes",
            "must be 64 KiB to 256 MiB",
        ));
    }
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&o.flush_interval) {
        return Err(ConfigError::at(
            "otlp.flushInterval",
            "must be 100ms to 60s",
        ));
    }
    Ok(Otlp {
        cluster,
        authority,
        path: o.path,
        timeout: o.timeout,
        batch_records: o.batch_records,
        buffer_records: o.buffer_records,
        buffer_bytes: o.buffer_bytes,
        flush_interval: o.flush_interval,
        on_buffer_full: o.on_buffer_full,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::from_json(format!(r#"{{"instance":"audit"{extra}}}"#).as_bytes())
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn defaults_drop_the_query_truncate_cards_and_ship_nowhere() {
        let c = parse("").unwrap();
        assert_eq!(c.query, Query::Drop);
        assert_eq!(c.pan_masking, PanMode::Truncate);
        assert_eq!(c.checkpoint_interval, Duration::from_secs(60));
        assert_eq!(c.otlp, None);
        let o = parse(r#","otlp":{"cluster":"outbound|4318||otel.obs.svc.cluster.local","batchRecords":10.0}"#)
            .unwrap()
            .otlp
            .unwrap();
        assert_eq!(o.authority, "otel.obs.svc.cluster.local");
        assert_eq!(o.batch_records, 10);
        assert_eq!(o.on_buffer_full, BufferFull::DropOldest);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn each_bad_field_is_named() {
        for (extra, field) in [
            (r#","checkpointInterval":"0s""#, "checkpointInterval"),
            (r#","panKeyEnv":"A-B""#, "panKeyEnv"),
            (r#","checkpointKeyEnv":"""#, "checkpointKeyEnv"),
            (
                r#","metricOperations":["pay ments"]"#,
                "metricOperations[0]",
            ),
            (
                r#","metricOperations":["a.b","A_b"]"#,
                "metricOperations[1]",
            ),
            (
                r#","checkpointKeyEnv":"BANKING_AUDIT_PAN_KEY""#,
                "checkpointKeyEnv",
            ),
            (r#","otlp":{"cluster":"otel"}"#, "otlp.authority"),
            (
                r#","otlp":{"cluster":"outbound|4318||o.svc","batchRecords":0}"#,
                "otlp.batchRecords",
            ),
            (
                r#","otlp":{"cluster":"outbound|4318||o.svc","bufferRecords":5,"batchRecords":10}"#,
                "otlp.bufferRecords",
            ),
            (
                r#","otlp":{"cluster":"outbound|4318||o.svc","path":"v1/logs"}"#,
                "otlp.path",
            ),
            (
                r#","body":{"routes":[],"fields":[{"name":"a","pointer":"/a"}]}"#,
                "body.routes",
            ),
            (
                r#","body":{"routes":[{"pathPrefix":"/payments"}],"fields":[]}"#,
                "body.fields",
            ),
            (
                r#","body":{"routes":[{"pathPrefix":"/payments"}],"fields":[{"name":"a","pointer":"a"}]}"#,
                "body.fields[0].pointer",
            ),
            (
                r#","body":{"routes":[{"pathPrefix":"/payments"}],"fields":[{"name":"a","pointer":"/a"},{"name":"a","pointer":"/b"}]}"#,
                "body.fields[1].name",
            ),
            (
                r#","body":{"routes":[{"pathPrefix":"/payments"}],"fields":[{"name":"sec","pointer":"/card/security_code"}]}"#,
                "body.fields[0].pointer",
            ),
            (
                r#","body":{"routes":[{"pathPrefix":"/payments"}],"dropFields":["otp"],"fields":[{"name":"o","pointer":"/OTP"}]}"#,
                "body.fields[0].pointer",
            ),
            (
                r#","body":{"routes":[{"pathPrefix":"/payments"}],"fields":[{"name":"a","pointer":"/a"}],"maxBodyBytes":0}"#,
                "body.maxBodyBytes",
            ),
        ] {
            assert_eq!(parse(extra).unwrap_err().path, field, "{extra}");
        }
    }
}
