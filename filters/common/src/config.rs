//! Loading a filter's pluginConfig: JSON into a serde type, with errors that name the field.
//!
//! Istio passes pluginConfig through a protobuf `Struct`, so every number arrives as a JSON
//! float (`100.0`) and an absent pluginConfig arrives as empty bytes. The helpers here accept
//! both, and every error carries the path of the offending field (`rules[2].methods[0]`) so
//! the one log line `on_configure` writes tells the operator exactly what to fix.

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

/// A configuration problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending field, e.g. `rules[0].pathPrefix`; `.` for the document itself.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    /// An error found after parsing, when validating a field.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid plugin configuration at `{}`: {}",
            self.path, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Parses pluginConfig bytes. Empty (or all-whitespace) bytes mean "no pluginConfig" and
/// parse as `{}`, so a filter's defaults apply.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        ConfigError {
            path,
            message: strip_position(&inner),
        }
    })?;
    de.end()
        .map_err(|e| ConfigError::at(".", strip_position(&e)))?;
    Ok(value)
}

/// serde_json appends " at line 1 column 57"; with compact JSON that says nothing the path
/// does not say better.
fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => text.get(..i).unwrap_or(&text).to_string(),
        None => text,
    }
}

/// The cluster and `:authority` of a filter's own HTTP calls (`dispatch_http_call`): the
/// cluster as istiod names it (`outbound|<port>|<subset>|<host>`, or any other name Envoy
/// knows) and the authority given, else the host of an Istio-named cluster. `at` names the
/// config object (`store.redis`, `otlp`) in errors.
pub fn callout_target(
    cluster: &str,
    authority: Option<&str>,
    at: &str,
) -> Result<(String, String), ConfigError> {
    let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !printable(cluster) {
        return Err(ConfigError::at(
            format!("{at}.cluster"),
            "an Envoy cluster, e.g. outbound|<port>||<service>.<namespace>.svc.cluster.local",
        ));
    }
    let authority = match (authority, istio_cluster_host(cluster)) {
        (Some(a), _) if printable(a) => a.to_string(),
        (Some(_), _) => {
            return Err(ConfigError::at(
                format!("{at}.authority"),
                "a host name, e.g. <service>.<namespace>.svc.cluster.local",
            ));
        }
        (None, Some(host)) => host.to_string(),
        (None, None) => {
            return Err(ConfigError::at(
                format!("{at}.authority"),
                "required when the cluster is not named outbound|<port>||<host>",
            ));
        }
    };
    Ok((cluster.to_string(), authority))
}

/// The host of an Istio outbound cluster name, `outbound|<port>|<subset>|<host>`.
pub fn istio_cluster_host(cluster: &str) -> Option<&str> {
    let mut parts = cluster.split('|');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("outbound"), Some(port), Some(_), Some(host), None)
            if port.parse::<u16>().is_ok() && !host.is_empty() =>
        {
            Some(host)
        }
        _ => None,
    }
}

/// Parses a duration written as a whole number and a unit: `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let bad =
        || format!("expected a duration like \"500ms\", \"30s\", \"5m\" or \"1h\", got {text:?}");
    if number.is_empty() {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

/// `#[serde(deserialize_with = "duration")]` for a [`Duration`] written as a string.
pub fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration string like \"30s\"")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            parse_duration(s).map_err(E::custom)
        }
    }
    de.deserialize_str(V)
}

/// Largest float that still holds every integer exactly (2^53).
const MAX_EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

/// `#[serde(deserialize_with = "whole_number")]` for an unsigned integer field that
/// accepts `100` and `100.0` (Istio's floats) but refuses `100.5`, negatives and values
/// that do not fit the field's type, with a message saying which.
pub fn whole_number<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let n = de.deserialize_any(WholeNumber)?;
    T::try_from(n).map_err(|_| de::Error::custom(format!("{n} is too large for this field")))
}

struct WholeNumber;

impl Visitor<'_> for WholeNumber {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole, non-negative number")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("expected a non-negative number, got {v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if !v.is_finite() || v.fract() != 0.0 {
            return Err(E::custom(format!("expected a whole number, got {v}")));
        }
        if v < 0.0 {
            return Err(E::custom(format!(
                "expected a non-negative number, got {v}"
            )));
        }
        if v > MAX_EXACT_FLOAT_INT {
            return Err(E::custom(format!("{v} is too large")));
        }
        // Exact: v is a whole number within 0..=2^53.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(v as u64)
    }
}

/// JSON Schema stand-ins for the fields the helpers above read (`schema` feature): a field
/// with `deserialize_with = "duration"` carries `#[schemars(with = "schema::DurationText")]`,
/// one with `whole_number` carries `#[schemars(with = "schema::WholeNumber")]`, so the schema
/// says what the parser accepts rather than what the Rust type holds.
#[cfg(feature = "schema")]
pub mod schema {
    use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
    use std::borrow::Cow;

    /// What [`super::parse_duration`] reads: `500ms`, `30s`, `5m`, `1h`. Never null.
    pub struct DurationText;

    impl JsonSchema for DurationText {
        fn inline_schema() -> bool {
            true
        }
        fn schema_name() -> Cow<'static, str> {
            "DurationText".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "pattern": "^[0-9]+(ms|s|m|h)$"
            })
        }
    }

    /// What [`super::whole_number`] reads: a non-negative whole number, written `100` or, as
    /// Istio hands it, `100.0`; at most 2^53. Never null.
    pub struct WholeNumber;

    impl JsonSchema for WholeNumber {
        fn inline_schema() -> bool {
            true
        }
        fn schema_name() -> Cow<'static, str> {
            "WholeNumber".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "number",
                "minimum": 0,
                "maximum": super::MAX_EXACT_FLOAT_INT,
                "multipleOf": 1
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Sample {
        #[serde(default, deserialize_with = "whole_number")]
        max_length: usize,
        #[serde(default)]
        rules: Vec<SampleRule>,
        #[serde(default, deserialize_with = "duration")]
        ttl: Duration,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct SampleRule {
        path_prefix: String,
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn empty_config_parses_as_defaults() {
        let s: Sample = parse(b"").unwrap();
        assert_eq!(s.max_length, 0);
        let s: Sample = parse(b"  \n").unwrap();
        assert!(s.rules.is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn float_encoded_whole_numbers_are_accepted() {
        let s: Sample = parse(br#"{"maxLength":100.0}"#).unwrap();
        assert_eq!(s.max_length, 100);
        let s: Sample = parse(br#"{"maxLength":100}"#).unwrap();
        assert_eq!(s.max_length, 100);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn fractional_number_is_refused_with_its_field_named() {
        let e = parse::<Sample>(br#"{"maxLength":100.5}"#).unwrap_err();
        assert_eq!(e.path, "maxLength");
        assert!(e.message.contains("whole number"), "{e}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn negative_number_is_refused() {
        let e = parse::<Sample>(br#"{"maxLength":-1}"#).unwrap_err();
        assert_eq!(e.path, "maxLength");
        assert!(e.message.contains("non-negative"), "{e}");
        let e = parse::<Sample>(br#"{"maxLength":-1.0}"#).unwrap_err();
        assert!(e.message.contains("non-negative"), "{e}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn nested_error_names_the_full_path() {
        let ok: Sample = parse(br#"{"rules":[{"pathPrefix":"/a"}]}"#).unwrap();
        assert_eq!(ok.rules[0].path_prefix, "/a");
        let e =
            parse::<Sample>(br#"{"rules":[{"pathPrefix":"/a"},{"pathPrefix":7}]}"#).unwrap_err();
        assert_eq!(e.path, "rules[1].pathPrefix");
        assert!(!e.message.contains("line"), "{e}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_field_is_refused_and_named() {
        let e = parse::<Sample>(br#"{"rules":[{"pathPrefx":"/a"}]}"#).unwrap_err();
        assert!(e.path.starts_with("rules[0]"), "{e}");
        assert!(e.message.contains("pathPrefx"), "{e}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn trailing_garbage_is_refused() {
        assert!(parse::<Sample>(br#"{} {}"#).is_err());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn durations_parse_in_each_unit() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "s", "30", "30 s", "1.5s", "-1s", "5d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn duration_field_error_names_the_field() {
        let s: Sample = parse(br#"{"ttl":"5m"}"#).unwrap();
        assert_eq!(s.ttl, Duration::from_secs(300));
        let e = parse::<Sample>(br#"{"ttl":"5 minutes"}"#).unwrap_err();
        assert_eq!(e.path, "ttl");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn display_names_field_and_problem_on_one_line() {
        let e = ConfigError::at("customerId.pattern", "unbounded repetition");
        let line = e.to_string();
        assert!(line.contains("`customerId.pattern`") && line.contains("unbounded"));
        assert!(!line.contains('\n'));
    }
}
