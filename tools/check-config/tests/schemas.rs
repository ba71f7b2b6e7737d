//! The shipped JSON Schemas (`schemas/<filter>.schema.json`) against the filters' parsers:
//! fresh, and agreeing on what is a config and what is not.
//!
//! A schema can only say what shape a config has: fields, types, enums, duration spellings,
//! whole numbers. What the parsers check beyond that (a `pathPrefix` already normalised,
//! `maxHeaderValueLength` from 1 to 8192, a `clockSkew` of at most 5 minutes, an operation
//! listed at the top level) is theirs alone, and `make check-config` is what catches it:
//! `semantic_refusals_are_the_parsers_alone` pins that boundary down.

// The workspace lints keep panics out of filter code; a test's helpers may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use check_config::{FILTERS, Filter};
use serde_json::{Value, json};

fn filter(name: &str) -> &'static Filter {
    FILTERS.iter().find(|f| f.name == name).unwrap()
}

fn shipped_schema(filter: &Filter) -> Value {
    let path = envoy_runner::repo_root().join(check_config::schema_path(filter));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make schemas`", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn validator(filter: &Filter) -> jsonschema::Validator {
    jsonschema::validator_for(&shipped_schema(filter)).unwrap()
}

/// The schema's errors for `config`, as `<instance path>: <message>`.
fn schema_errors(filter: &Filter, config: &Value) -> Vec<String> {
    validator(filter)
        .iter_errors(config)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// The parser's verdict on `config` as istiod renders it (compact, numbers as floats).
fn parse(filter: &Filter, config: &Value) -> Result<Vec<String>, String> {
    let rendered = envoy_runner::wasmplugin::protobuf_struct_json(config);
    (filter.parse)(rendered.as_bytes()).map_err(|e| e.to_string())
}

/// The first ```json block of a README section.
fn readme_example(section: &str) -> Value {
    let readme = std::fs::read_to_string(envoy_runner::repo_root().join("README.md")).unwrap();
    let text = readme
        .split(&format!("## {section}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("README has no section {section:?}"))
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("README's {section:?} has no JSON example"));
    serde_json::from_str(text).unwrap()
}

#[test]
fn shipped_schemas_are_generated_from_the_config_types() {
    for filter in FILTERS {
        let path = check_config::schema_path(filter);
        let shipped =
            std::fs::read_to_string(envoy_runner::repo_root().join(&path)).unwrap_or_default();
        assert!(
            shipped == check_config::schema_text(filter),
            "{} is not what {}'s config types generate: run `make schemas` \
             (cargo run -p check-config -- --write-schemas) and commit the result",
            path.display(),
            filter.name
        );
    }
}

#[test]
fn readme_examples_and_shipped_configs_satisfy_schema_and_parser() {
    let mut cases = vec![
        (
            "banking-headers",
            "README example".to_owned(),
            readme_example("Banking-header filter: configuration reference"),
        ),
        (
            "jwt-auth",
            "README example".to_owned(),
            readme_example("JWT filter: configuration reference"),
        ),
        (
            "rate-limit",
            "README example".to_owned(),
            readme_example("Rate-limit filter: configuration reference"),
        ),
        (
            "idempotency",
            "README example".to_owned(),
            readme_example("Idempotency filter: configuration reference"),
        ),
    ];
    let shipped =
        envoy_runner::load_wasmplugins(&envoy_runner::repo_root().join("wasmplugins")).unwrap();
    for plugin in shipped {
        let filter = check_config::filter_of(&plugin).unwrap();
        // What the filter receives: numbers already floats.
        let config: Value = serde_json::from_str(&plugin.configuration_json().unwrap()).unwrap();
        cases.push((filter.name, format!("{}", plugin.source.display()), config));
    }
    assert_eq!(cases.len(), 4 + FILTERS.len());
    for (name, what, config) in cases {
        let filter = filter(name);
        assert_eq!(
            schema_errors(filter, &config),
            Vec::<String>::new(),
            "{name} {what}"
        );
        assert!(
            parse(filter, &config).is_ok(),
            "{name} {what}: {:?}",
            parse(filter, &config)
        );
    }
}

#[test]
fn every_documented_spelling_satisfies_schema_and_parser() {
    let cases = [
        (
            "banking-headers",
            json!({"mode": "dryRun", "pathMatching": {"case": "sensitive", "parameters": "strip"},
                   "bypassPaths": [{"exact": "/healthz"}, {"prefix": "/.well-known/"}],
                   "maxHeaderValueLength": 64.0, "defaultRule": {"requiredHeaders": []}}),
        ),
        ("banking-headers", json!({})),
        (
            "jwt-auth",
            json!({"mode": "dryRun", "instance": "jwt-auth", "providers": [{"issuer": "i", "audiences": ["a"],
                   "jwks": "{\"keys\": [{\"kty\": \"oct\", \"kid\": \"h\", \"k\": \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0xMjM0\"}]}",
                   "allowedAlgorithms": ["HS256"], "clockSkew": "500ms", "maxLifetime": "1h",
                   "requireExpiration": null}],
                   "tokenSources": [{"header": "x-api-token"}, {"cookie": "sess"}],
                   "maxTokenBytes": 4096, "cache": {"maxEntries": 0, "ttl": "30s"},
                   "customerBinding": null, "realm": null}),
        ),
    ];
    for (name, config) in cases {
        let filter = filter(name);
        assert_eq!(
            schema_errors(filter, &config),
            Vec::<String>::new(),
            "{config}"
        );
        assert!(
            parse(filter, &config).is_ok(),
            "{config}: {:?}",
            parse(filter, &config)
        );
    }
}

#[test]
fn shape_errors_are_refused_by_schema_and_parser_alike() {
    let jwt = |extra: Value| {
        let mut config = json!({"instance": "jwt-auth", "providers": [{"issuer": "i",
            "audiences": ["a"], "remoteJwks": {"cluster": "c", "authority": "a", "path": "/j"}}]});
        let (Value::Object(base), Value::Object(extra)) = (&mut config, extra) else {
            unreachable!()
        };
        base.extend(extra);
        config
    };
    let provider = |extra: Value| {
        let mut p = json!({"issuer": "i", "audiences": ["a"],
            "remoteJwks": {"cluster": "c", "authority": "a", "path": "/j"}});
        let (Value::Object(base), Value::Object(extra)) = (&mut p, extra) else {
            unreachable!()
        };
        base.extend(extra);
        jwt(json!({"providers": [p]}))
    };
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "banking-headers",
            "unknown field",
            json!({"maxHeaderValueLenght": 10}),
        ),
        (
            "banking-headers",
            "unknown field in a rule",
            json!({"rules": [{"pathPrefix": "/a", "method": ["GET"]}]}),
        ),
        (
            "banking-headers",
            "wrong type",
            json!({"operations": "payment.create"}),
        ),
        (
            "banking-headers",
            "wrong type in a list",
            json!({"rules": [{"pathPrefix": 7}]}),
        ),
        (
            "banking-headers",
            "fractional whole number",
            json!({"maxHeaderValueLength": 100.5}),
        ),
        (
            "banking-headers",
            "negative whole number",
            json!({"maxHeaderValueLength": -1}),
        ),
        (
            "banking-headers",
            "whole number as a string",
            json!({"maxHeaderValueLength": "128"}),
        ),
        (
            "banking-headers",
            "missing required field",
            json!({"rules": [{"methods": ["GET"]}]}),
        ),
        (
            "banking-headers",
            "unknown banking header",
            json!({"defaultRule": {"requiredHeaders": ["x-account"]}}),
        ),
        (
            "banking-headers",
            "unknown enum value",
            json!({"pathMatching": {"case": "upper"}}),
        ),
        (
            "banking-headers",
            "unknown mode",
            json!({"mode": "dry-run"}),
        ),
        (
            "banking-headers",
            "bypass path of no known kind",
            json!({"bypassPaths": [{"regex": "/h.*"}]}),
        ),
        (
            "banking-headers",
            "bypass path of two kinds",
            json!({"bypassPaths": [{"exact": "/a", "prefix": "/b"}]}),
        ),
        ("banking-headers", "null list", json!({"rules": null})),
        ("jwt-auth", "empty config", json!({})),
        ("jwt-auth", "missing instance", json!({"providers": []})),
        ("jwt-auth", "unknown field", jwt(json!({"realmm": "x"}))),
        ("jwt-auth", "unknown mode", jwt(json!({"mode": "DRY_RUN"}))),
        (
            "jwt-auth",
            "unknown provider field",
            provider(json!({"issuerr": "x"})),
        ),
        (
            "jwt-auth",
            "missing required provider field",
            jwt(json!({"providers": [{"issuer": "i"}]})),
        ),
        (
            "jwt-auth",
            "missing required remoteJwks field",
            provider(json!({"remoteJwks": {"cluster": "c", "path": "/j"}})),
        ),
        (
            "jwt-auth",
            "bad duration string",
            provider(json!({"clockSkew": "10 minutes"})),
        ),
        (
            "jwt-auth",
            "fractional duration",
            provider(json!({"clockSkew": "1.5s"})),
        ),
        (
            "jwt-auth",
            "duration in days",
            jwt(json!({"cache": {"ttl": "1d"}})),
        ),
        (
            "jwt-auth",
            "duration as a number",
            provider(json!({"clockSkew": 60})),
        ),
        (
            "jwt-auth",
            "null duration",
            provider(json!({"maxLifetime": null})),
        ),
        (
            "jwt-auth",
            "fractional whole number",
            jwt(json!({"maxTokenBytes": 8192.5})),
        ),
        (
            "jwt-auth",
            "null whole number",
            jwt(json!({"maxTokenBytes": null})),
        ),
        (
            "jwt-auth",
            "wrong type",
            jwt(json!({"bypassCorsPreflight": "yes"})),
        ),
        (
            "jwt-auth",
            "wrong type in a list",
            jwt(json!({"rules": [{"pathPrefix": "/p", "requiredScopes": "a"}]})),
        ),
        (
            "jwt-auth",
            "missing claim header field",
            jwt(json!({"outputs": {"claimHeaders": [{"claim": "sub"}]}})),
        ),
        (
            "jwt-auth",
            "unknown token source field",
            jwt(json!({"tokenSources": [{"headr": "x"}]})),
        ),
    ];
    for (name, what, config) in cases {
        let filter = filter(name);
        assert!(
            !schema_errors(filter, &config).is_empty(),
            "{name}, {what}: the schema accepts {config}"
        );
        assert!(
            parse(filter, &config).is_err(),
            "{name}, {what}: the parser accepts {config}"
        );
    }
}

#[test]
fn semantic_refusals_are_the_parsers_alone() {
    let cases = [
        ("banking-headers", json!({"maxHeaderValueLength": 0})),
        (
            "banking-headers",
            json!({"rules": [{"pathPrefix": "payments"}]}),
        ),
        ("banking-headers", json!({"customerIdPattern": "[0-9]+"})),
        (
            "jwt-auth",
            json!({"instance": "jwt-auth", "providers": [{"issuer": "i", "audiences": ["a"],
                   "clockSkew": "10m",
                   "remoteJwks": {"cluster": "c", "authority": "a", "path": "/j"}}]}),
        ),
        ("jwt-auth", json!({"instance": "jwt-auth", "providers": []})),
    ];
    for (name, config) in cases {
        let filter = filter(name);
        assert_eq!(
            schema_errors(filter, &config),
            Vec::<String>::new(),
            "{config}"
        );
        assert!(parse(filter, &config).is_err(), "{config}");
    }
}
