//! The filter's pluginConfig: what the JSON may say, its safe defaults, and the validated
//! form every stream shares.
//!
//! The doc comments on [`PluginConfig`] and the types it uses are the configuration
//! reference. Parsing goes through [`Config::from_json`], which refuses unknown fields and
//! names the offending field in its one-line error.

use banking_filter_common::config::{self, ConfigError, whole_number};
use banking_filter_common::headers::NameMatcher;
use banking_filter_common::mode::Mode;
use banking_filter_common::pattern::Pattern;
use banking_filter_common::route::{PathMatch, PathMatching, RouteMatch, RouteTable};
use serde::Deserialize;

/// The four banking headers this filter knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum BankingHeader {
    #[serde(rename = "x-customer-id")]
    CustomerId,
    #[serde(rename = "x-transaction-id")]
    TransactionId,
    #[serde(rename = "x-banking-operation")]
    BankingOperation,
    #[serde(rename = "x-correlation-id")]
    CorrelationId,
}

impl BankingHeader {
    /// Every banking header, in the order requests are checked: the correlation id first,
    /// so that later problems can quote it.
    pub const ALL: [BankingHeader; 4] = [
        BankingHeader::CorrelationId,
        BankingHeader::CustomerId,
        BankingHeader::TransactionId,
        BankingHeader::BankingOperation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BankingHeader::CustomerId => "x-customer-id",
            BankingHeader::TransactionId => "x-transaction-id",
            BankingHeader::BankingOperation => "x-banking-operation",
            BankingHeader::CorrelationId => "x-correlation-id",
        }
    }
}

/// The pluginConfig document (all fields optional; the defaults fail closed).
///
/// ```json
/// {
///   "operations": ["payment.create", "payment.read", "account.read"],
///   "rules": [
///     {"pathPrefix": "/payments", "methods": ["POST"],
///      "requiredHeaders": ["x-customer-id", "x-transaction-id", "x-banking-operation"],
///      "operations": ["payment.create"]},
///     {"pathPrefix": "/payments", "methods": ["GET"], "operations": ["payment.read"]}
///   ],
///   "bypassPaths": [{"exact": "/healthz"}, {"prefix": "/.well-known/"}],
///   "denyUnmatchedUnder": ["/payments"],
///   "customerIdPattern": "CUST-[0-9]{6,12}",
///   "maxHeaderValueLength": 128
/// }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    /// `enforce` (default) refuses what the checks refuse; `dryRun` never refuses: it
    /// counts `banking_headers_would_deny_<reason>`, logs each reason once a minute, records
    /// the would-be refusal in filter state (`banking.decision.would_deny`) and lets the
    /// request through. Internal headers are stripped in both modes.
    #[serde(default)]
    pub mode: Mode,

    /// Route rules, tried in order; the first whose `pathPrefix` and `methods` match the
    /// request applies. Put specific routes before general ones. Paths are normalised and
    /// matched as the README's "Route model" says, the same in every filter.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,

    /// How paths are compared: `{"case": "insensitive" | "sensitive", "parameters":
    /// "refuse" | "strip"}`. Default: case-insensitive rules (`/PAYMENTS` meets the
    /// `/payments` rules) and `;` parameters refused with 400 `invalid-path`.
    #[serde(default)]
    pub path_matching: PathMatching,

    /// Path prefixes under which a request that matches no rule is refused with 403
    /// `route-not-allowed` instead of getting `defaultRule`, e.g. `["/payments"]` so that a
    /// new method on the payment API is refused until a rule names it. Default: none.
    #[serde(default)]
    pub deny_unmatched_under: Vec<String>,

    /// What applies to a request no rule matches (and no bypass path covers). Default:
    /// `x-customer-id` and `x-transaction-id` required, any known operation.
    #[serde(default)]
    pub default_rule: Requirements,

    /// Every valid value of `x-banking-operation`, e.g. `payment.create`. A request carrying
    /// any other value is refused. Each is 1 to 64 characters of letters, digits, `.`, `_`
    /// and `-`. Default: none, so `x-banking-operation` is refused until operations are
    /// listed.
    #[serde(default)]
    pub operations: Vec<String>,

    /// Format of `x-customer-id`, in the filter's pattern language (a bounded subset of
    /// regular expressions, always matched against the whole value: literals, `\d`, `\w`,
    /// `.`, classes like `[A-Z0-9-]`, counts `{n}`, `{n,m}` and `?`; no `*` or `+`, so every
    /// pattern has a length bound). Default: `[A-Za-z0-9_-]{1,64}`.
    #[serde(default = "default_customer_id_pattern")]
    pub customer_id_pattern: String,

    /// Format a client-supplied `x-correlation-id` must have to be kept; a malformed one is
    /// refused with 400 rather than replaced, so a caller's tracing bug shows up at once.
    /// Must accept the UUIDs the filter generates. Default: `[A-Za-z0-9._-]{8,64}` (UUIDs
    /// and the usual trace-id tokens).
    #[serde(default = "default_correlation_id_pattern")]
    pub correlation_id_pattern: String,

    /// Paths that skip the banking-header checks, e.g. health checks: `{"exact": "/healthz"}`
    /// or `{"prefix": "/health/"}`, compared byte for byte with the normalised path (never
    /// ignoring case: a bypass must not widen). Internal headers are still stripped.
    #[serde(default)]
    pub bypass_paths: Vec<PathMatch>,

    /// Request headers removed before the request goes upstream, so a client cannot spoof
    /// what only the mesh may set: exact names or prefixes ending in `*`, compared ignoring
    /// case and with `_` read as `-` (`x-internal_user` goes with `x-internal-*`, as a
    /// CGI-style upstream would read it as `x-internal-user`). Applies to every request,
    /// bypassed or not. Default: `["x-internal-*", "x-jwt-claim-*"]`.
    #[serde(default = "default_strip_request_headers")]
    pub strip_request_headers: Vec<String>,

    /// Longest value, in bytes, accepted for any banking header; longer values are refused
    /// before any other check. 1 to 8192. Default: 128.
    #[serde(
        default = "default_max_header_value_length",
        deserialize_with = "whole_number"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "banking_filter_common::config::schema::WholeNumber")
    )]
    pub max_header_value_length: usize,
}

/// One route rule.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConfig {
    /// Path prefix the rule covers, matched on segment boundaries: `/payments` covers
    /// `/payments`, `/payments/42` and `/payments?page=2`, not `/paymentsx`. Must start with
    /// `/` and be normalised already (no escapes of letters, no dot segments, no `;`).
    pub path_prefix: String,

    /// HTTP methods the rule covers, written in upper case (`["POST"]`); a request's method
    /// is compared ignoring case, so `post` cannot slip past. Empty or absent: all.
    #[serde(default)]
    pub methods: Vec<String>,

    /// Banking headers the route needs, as in `defaultRule.requiredHeaders`. Default:
    /// `["x-customer-id", "x-transaction-id"]`.
    #[serde(default = "default_required_headers")]
    pub required_headers: Vec<BankingHeader>,

    /// Operations consistent with this route, as in `defaultRule.operations`.
    #[serde(default)]
    pub operations: Vec<String>,
}

/// What a request that matches no rule must carry.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requirements {
    /// Banking headers that must be present: any of `x-customer-id`, `x-transaction-id`,
    /// `x-banking-operation`, `x-correlation-id`. Default: `["x-customer-id",
    /// "x-transaction-id"]`. A banking header that is present is always checked, required or
    /// not. A required `x-correlation-id` is never generated.
    #[serde(default = "default_required_headers")]
    pub required_headers: Vec<BankingHeader>,

    /// Operations consistent with this route, each listed in the top-level `operations`
    /// (e.g. `POST /payments` expects `["payment.create"]`). Listing any makes
    /// `x-banking-operation` required here. Empty or absent: any known operation.
    #[serde(default)]
    pub operations: Vec<String>,
}

impl Default for Requirements {
    fn default() -> Self {
        Requirements {
            required_headers: default_required_headers(),
            operations: Vec::new(),
        }
    }
}

fn default_required_headers() -> Vec<BankingHeader> {
    vec![BankingHeader::CustomerId, BankingHeader::TransactionId]
}

fn default_customer_id_pattern() -> String {
    "[A-Za-z0-9_-]{1,64}".to_string()
}

fn default_correlation_id_pattern() -> String {
    "[A-Za-z0-9._-]{8,64}".to_string()
}

fn default_strip_request_headers() -> Vec<String> {
    vec!["x-internal-*".to_string(), "x-jwt-claim-*".to_string()]
}

fn default_max_header_value_length() -> usize {
    128
}

/// Largest `maxHeaderValueLength`: Envoy's default limit for all request headers is 60 KiB,
/// and no banking identifier comes near 8 KiB.
pub const MAX_HEADER_VALUE_LENGTH_LIMIT: usize = 8192;

/// A UUID the correlation-id pattern must accept, since the filter generates such ids.
const SAMPLE_GENERATED_ID: &str = "123e4567-e89b-42d3-a456-426614174000";

/// The validated configuration every stream of the plugin shares.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    /// The rules, bypass paths and protected prefixes.
    pub routes: RouteTable<Rule>,
    pub default_rule: Rule,
    pub operations: Vec<String>,
    pub customer_id: Pattern,
    pub correlation_id: Pattern,
    pub strip_request_headers: Vec<NameMatcher>,
    pub max_header_value_length: usize,
}

/// What a validated rule (or the default rule) requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// How problems name the rule: `POST /payments`, or `/` for the default rule.
    pub name: String,
    /// Sorted and deduplicated.
    pub required: Vec<BankingHeader>,
    pub operations: Vec<String>,
}

impl Rule {
    pub fn requires(&self, header: BankingHeader) -> bool {
        self.required.contains(&header)
    }
}

impl Config {
    /// Parses and validates pluginConfig bytes (empty bytes: all defaults).
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        Config::validate(config::parse(bytes)?)
    }

    /// Checks everything serde cannot and compiles patterns and matchers.
    pub fn validate(raw: PluginConfig) -> Result<Config, ConfigError> {
        for (i, op) in raw.operations.iter().enumerate() {
            check_operation_name(op).map_err(|m| ConfigError::at(format!("operations[{i}]"), m))?;
            if raw
                .operations
                .get(..i)
                .is_some_and(|seen| seen.contains(op))
            {
                return Err(ConfigError::at(
                    format!("operations[{i}]"),
                    format!("{op:?} is listed twice"),
                ));
            }
        }

        let mut routes = RouteTable::new(
            raw.path_matching,
            &raw.bypass_paths,
            &raw.deny_unmatched_under,
        )?;
        for (i, r) in raw.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            let route = RouteMatch::new(&r.path_prefix, &r.methods, raw.path_matching, &at)?;
            let (required, operations) =
                requirements(&r.required_headers, &r.operations, &raw.operations, &at)?;
            let rule = Rule {
                name: route.describe(),
                required,
                operations,
            };
            routes.push(route, rule);
        }
        let (required, operations) = requirements(
            &raw.default_rule.required_headers,
            &raw.default_rule.operations,
            &raw.operations,
            "defaultRule",
        )?;
        let default_rule = Rule {
            name: "/".to_string(),
            required,
            operations,
        };

        let customer_id = Pattern::new(&raw.customer_id_pattern)
            .map_err(|e| ConfigError::at("customerIdPattern", e.to_string()))?;
        let correlation_id = Pattern::new(&raw.correlation_id_pattern)
            .map_err(|e| ConfigError::at("correlationIdPattern", e.to_string()))?;
        if !correlation_id.matches(SAMPLE_GENERATED_ID.as_bytes()) {
            return Err(ConfigError::at(
                "correlationIdPattern",
                "must accept the lowercase hyphenated UUIDs the filter generates",
            ));
        }

        let mut strip_request_headers = Vec::with_capacity(raw.strip_request_headers.len());
        for (i, text) in raw.strip_request_headers.iter().enumerate() {
            let at = format!("stripRequestHeaders[{i}]");
            let matcher = NameMatcher::parse(text).map_err(|e| ConfigError::at(&at, e))?;
            if let Some(h) = BankingHeader::ALL
                .iter()
                .find(|h| matcher.matches(h.name()))
            {
                return Err(ConfigError::at(
                    at,
                    format!("{text:?} would strip the banking header {}", h.name()),
                ));
            }
            strip_request_headers.push(matcher);
        }

        let max = raw.max_header_value_length;
        if max == 0 || max > MAX_HEADER_VALUE_LENGTH_LIMIT {
            return Err(ConfigError::at(
                "maxHeaderValueLength",
                format!("must be between 1 and {MAX_HEADER_VALUE_LENGTH_LIMIT}, got {max}"),
            ));
        }

        Ok(Config {
            mode: raw.mode,
            routes,
            default_rule,
            operations: raw.operations,
            customer_id,
            correlation_id,
            strip_request_headers,
            max_header_value_length: max,
        })
    }
}

fn requirements(
    required_headers: &[BankingHeader],
    operations: &[String],
    known: &[String],
    at: &str,
) -> Result<(Vec<BankingHeader>, Vec<String>), ConfigError> {
    let mut required = required_headers.to_vec();
    for (j, op) in operations.iter().enumerate() {
        if !known.contains(op) {
            return Err(ConfigError::at(
                format!("{at}.operations[{j}]"),
                format!("{op:?} is not listed in the top-level `operations`"),
            ));
        }
    }
    if !operations.is_empty() {
        required.push(BankingHeader::BankingOperation);
    }
    required.sort();
    required.dedup();
    Ok((required, operations.to_vec()))
}

fn check_operation_name(op: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if op.is_empty() || op.len() > 64 || !op.chars().all(ok_char) {
        return Err(format!(
            "{op:?} must be 1 to 64 letters, digits, `.`, `_` or `-`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn err(json: &str) -> ConfigError {
        Config::from_json(json.as_bytes()).unwrap_err()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn empty_config_fails_closed_with_defaults() {
        let c = Config::from_json(b"").unwrap();
        assert_eq!(c.routes.rules().count(), 0);
        assert_eq!(
            c.default_rule.required,
            vec![BankingHeader::CustomerId, BankingHeader::TransactionId]
        );
        assert!(c.operations.is_empty());
        assert_eq!(c.max_header_value_length, 128);
        assert_eq!(c.strip_request_headers.len(), 2);
        assert_eq!(c.customer_id.as_str(), "[A-Za-z0-9_-]{1,64}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn istio_float_numbers_are_accepted() {
        let c = Config::from_json(br#"{"maxHeaderValueLength":100.0}"#).unwrap();
        assert_eq!(c.max_header_value_length, 100);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn fractional_and_out_of_range_lengths_are_refused() {
        assert_eq!(
            err(r#"{"maxHeaderValueLength":100.5}"#).path,
            "maxHeaderValueLength"
        );
        assert_eq!(
            err(r#"{"maxHeaderValueLength":-3}"#).path,
            "maxHeaderValueLength"
        );
        assert_eq!(
            err(r#"{"maxHeaderValueLength":0}"#).path,
            "maxHeaderValueLength"
        );
        assert_eq!(
            err(r#"{"maxHeaderValueLength":9000}"#).path,
            "maxHeaderValueLength"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_fields_are_refused_and_named() {
        let e = err(r#"{"maxHeaderValueLenght":10}"#);
        assert!(e.message.contains("maxHeaderValueLenght"), "{e}");
        let e = err(r#"{"rules":[{"pathPrefix":"/a","method":["GET"]}]}"#);
        assert!(e.to_string().contains("method"), "{e}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_required_header_is_named_by_path() {
        let e = err(
            r#"{"rules":[{"pathPrefix":"/a","requiredHeaders":["x-customer-id","x-account"]}]}"#,
        );
        assert_eq!(e.path, "rules[0].requiredHeaders[1]");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rule_operation_must_be_a_known_operation() {
        let e = err(
            r#"{"operations":["payment.create"],"rules":[{"pathPrefix":"/p","operations":["payment.delete"]}]}"#,
        );
        assert_eq!(e.path, "rules[0].operations[0]");
        assert!(e.message.contains("payment.delete"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn listing_operations_makes_the_operation_header_required() {
        let c = Config::from_json(
            br#"{"operations":["payment.create"],"rules":[{"pathPrefix":"/p","requiredHeaders":[],"operations":["payment.create"]}]}"#,
        )
        .unwrap();
        let (_, rule) = c.routes.rules().next().unwrap();
        assert_eq!(rule.required, vec![BankingHeader::BankingOperation]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_operation_names_and_duplicates_are_refused() {
        assert_eq!(err(r#"{"operations":["pay ment"]}"#).path, "operations[0]");
        assert_eq!(err(r#"{"operations":["a","b","a"]}"#).path, "operations[2]");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rule_paths_and_methods_are_checked() {
        assert_eq!(
            err(r#"{"rules":[{"pathPrefix":"payments"}]}"#).path,
            "rules[0].pathPrefix"
        );
        assert_eq!(
            err(r#"{"rules":[{"pathPrefix":"/a/../b"}]}"#).path,
            "rules[0].pathPrefix"
        );
        assert_eq!(
            err(r#"{"rules":[{"pathPrefix":"/a","methods":["GET","post"]}]}"#).path,
            "rules[0].methods[1]"
        );
        assert_eq!(
            err(r#"{"rules":[{"pathPrefix":"/p%61yments"}]}"#).path,
            "rules[0].pathPrefix"
        );
        assert_eq!(
            err(r#"{"denyUnmatchedUnder":["/payments;x"]}"#).path,
            "denyUnmatchedUnder[0]"
        );
        assert_eq!(
            err(r#"{"pathMatching":{"case":"upper"}}"#).path,
            "pathMatching.case"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unbounded_customer_pattern_is_refused() {
        let e = err(r#"{"customerIdPattern":"[0-9]+"}"#);
        assert_eq!(e.path, "customerIdPattern");
        assert!(e.message.contains("{min,max}"), "{e}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn correlation_pattern_must_accept_generated_uuids() {
        let e = err(r#"{"correlationIdPattern":"[0-9]{8,64}"}"#);
        assert_eq!(e.path, "correlationIdPattern");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn strip_list_cannot_remove_banking_headers() {
        let e = err(r#"{"stripRequestHeaders":["x-*"]}"#);
        assert_eq!(e.path, "stripRequestHeaders[0]");
        let e = err(r#"{"stripRequestHeaders":["x-internal-*","x-customer-id"]}"#);
        assert_eq!(e.path, "stripRequestHeaders[1]");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn readme_example_is_a_valid_config() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Banking-header filter: configuration reference")
            .nth(1)
            .expect("README has the configuration reference");
        let example = section
            .split("```json\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the reference has a JSON example");
        let c = Config::from_json(example.as_bytes()).unwrap();
        assert!(c.routes.rules().count() > 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bypass_paths_are_exact_or_prefix() {
        let c =
            Config::from_json(br#"{"bypassPaths":[{"exact":"/healthz"},{"prefix":"/health/"}]}"#)
                .unwrap();
        assert!(c.routes.has_bypass_paths());
        assert_eq!(
            err(r#"{"bypassPaths":[{"regex":"/h.*"}]}"#).path,
            "bypassPaths[0]"
        );
        assert_eq!(
            err(r#"{"bypassPaths":[{"exact":"healthz"}]}"#).path,
            "bypassPaths[0].exact"
        );
    }
}
