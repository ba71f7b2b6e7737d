//! Envoy's own filters the bench measures ours against, each configured from the same inputs
//! as ours: the bench's keys, and the shipped `pluginConfig` of the WasmPlugin it stands in
//! for (the Lua yardsticks in `bench/native/` read it as a Lua table).

use envoy_runner::WasmPlugin;
use serde_json::{Value, json};

use crate::BenchError;
use crate::scenarios::{CacheStats, Probe};

/// What native filters are built from.
pub struct Inputs {
    /// The bench's public keys, as a JWKS.
    pub jwks: Value,
    pub issuer: String,
    pub audience: String,
    /// jwt-auth's cache size; jwt_authn's cache is made as large.
    pub cache_entries: u64,
    /// The WasmPlugins of `wasmplugins/`, as shipped.
    pub plugins: Vec<WasmPlugin>,
    /// Where Webdis answers, for the rows with the idempotency filter's Redis store.
    pub webdis: Option<std::net::SocketAddr>,
    /// Where the OTLP collector answers, for the audit-log rows.
    pub collector: Option<std::net::SocketAddr>,
    /// Where the file access log rows write (a directory).
    pub access_log_dir: std::path::PathBuf,
}

impl Inputs {
    pub fn plugin_config(&self, name: &str) -> Result<&Value, BenchError> {
        self.plugins
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.plugin_config.as_ref())
            .ok_or_else(|| format!("wasmplugins/ has no {name} with a pluginConfig").into())
    }
}

/// A native filter a scenario can chain.
pub struct NativeFilter {
    /// How the results name it.
    pub label: &'static str,
    /// Its entry in the connection manager's `http_filters`.
    pub build: fn(&Inputs) -> Result<Value, BenchError>,
    /// The probes it refuses, with the status (see [`Probe`]).
    pub refuses: &'static [(Probe, u16)],
    /// Its verified-token cache, when it keeps one.
    pub cache: Option<&'static CacheStats>,
}

/// jwt_authn's `jwt_cache_config` cache (counted under `http.<prefix>.jwt_authn.`).
static JWT_AUTHN_CACHE: CacheStats = CacheStats {
    filter: "jwt_authn",
    hit: ".jwt_authn.jwt_cache_hit",
    miss: ".jwt_authn.jwt_cache_miss",
};

/// jwt_authn as Envoy configures it by default: no verified-token cache.
pub const JWT_AUTHN: NativeFilter = NativeFilter {
    label: "jwt_authn",
    build: |inputs| jwt_authn(inputs, false, false),
    refuses: &[(Probe::TamperedToken, 401)],
    cache: None,
};

/// jwt_authn with `jwt_cache_config` as large as jwt-auth's cache.
pub const JWT_AUTHN_CACHED: NativeFilter = NativeFilter {
    label: "jwt_authn+cache",
    build: |inputs| jwt_authn(inputs, true, false),
    refuses: &[(Probe::TamperedToken, 401)],
    cache: Some(&JWT_AUTHN_CACHE),
};

/// jwt_authn with its cache, leaving the verified payload in dynamic metadata for
/// [`JWT_AUTHZ_LUA`].
pub const JWT_AUTHN_FOR_AUTHZ: NativeFilter = NativeFilter {
    label: "jwt_authn+cache",
    build: |inputs| jwt_authn(inputs, true, true),
    refuses: &[(Probe::TamperedToken, 401)],
    cache: Some(&JWT_AUTHN_CACHE),
};

/// `local_ratelimit` with one bucket per `x-customer-id` value (a dynamic descriptor fed by
/// the filter's own `rate_limits`), as large as rate-limit's in the bench
/// ([`crate::chain::BENCH_RATE_LIMIT_QUOTA`]), adding its `X-RateLimit-*` headers to responses
/// as rate-limit adds its fields: the closest Envoy comes to a per-customer limit, since it
/// cannot read the verified identity.
pub const LOCAL_RATELIMIT: NativeFilter = NativeFilter {
    label: "local_ratelimit",
    build: |_| Ok(local_ratelimit()),
    refuses: &[],
    cache: None,
};

fn local_ratelimit() -> Value {
    let bucket = |tokens: u64| json!({"max_tokens": tokens, "tokens_per_fill": tokens, "fill_interval": "1s"});
    let always = json!({"default_value": {"numerator": 100, "denominator": "HUNDRED"},
                        "runtime_key": "bench_local_rate_limit"});
    json!({
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "bench_local_rate_limit",
            "token_bucket": bucket(crate::chain::BENCH_RATE_LIMIT_QUOTA),
            "filter_enabled": always.clone(),
            "filter_enforced": always,
            "always_consume_default_token_bucket": false,
            "rate_limits": [{"actions": [{"request_headers": {
                "header_name": "x-customer-id", "descriptor_key": "customer"}}]}],
            "descriptors": [{"entries": [{"key": "customer"}],
                             "token_bucket": bucket(crate::chain::BENCH_RATE_LIMIT_QUOTA)}],
            "max_dynamic_descriptors": crate::chain::BENCH_RATE_LIMIT_SLOTS,
            // Like rate-limit's fields on allowed responses, so both add response headers.
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        }
    })
}

/// `bench/native/banking-headers.lua` on banking-headers' shipped config.
pub const BANKING_HEADERS_LUA: NativeFilter = NativeFilter {
    label: "Lua banking-headers",
    build: |inputs| {
        let config = inputs.plugin_config("banking-headers")?;
        Ok(lua(
            &format!("local CONFIG = {}\n", lua_value(config)),
            include_str!("../native/banking-headers.lua"),
        ))
    },
    refuses: &[(Probe::MissingCustomerId, 400)],
    cache: None,
};

/// `bench/native/jwt-authz.lua` on jwt-auth's shipped config: scopes and customer binding
/// after jwt_authn.
pub const JWT_AUTHZ_LUA: NativeFilter = NativeFilter {
    label: "Lua scopes+binding",
    build: |inputs| {
        let config = inputs.plugin_config("jwt-auth")?;
        Ok(lua(
            &format!(
                "local CONFIG = {}\nlocal PAYLOAD_KEY = {}\n",
                lua_value(config),
                lua_value(&json!(PAYLOAD_KEY))
            ),
            include_str!("../native/jwt-authz.lua"),
        ))
    },
    refuses: &[(Probe::OtherCustomer, 403)],
    cache: None,
};

/// Where jwt_authn leaves the verified payload for the Lua step after it.
const PAYLOAD_KEY: &str = "jwt_payload";

/// jwt_authn with the bench's keys inline, jwt-auth's bypass paths left unauthenticated and its
/// claim headers copied, as close to the shipped jwt-auth config as jwt_authn goes.
fn jwt_authn(inputs: &Inputs, cache: bool, payload_in_metadata: bool) -> Result<Value, BenchError> {
    let config = inputs.plugin_config("jwt-auth")?;
    let claim_headers: Vec<Value> = config
        .pointer("/outputs/claimHeaders")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|c| json!({"header_name": c["header"], "claim_name": c["claim"]}))
                .collect()
        })
        .unwrap_or_default();
    let mut provider = json!({
        "issuer": inputs.issuer,
        "audiences": [inputs.audience],
        "local_jwks": {"inline_string": inputs.jwks.to_string()},
        "forward": true,
        "claim_to_headers": claim_headers,
    });
    if cache {
        provider["jwt_cache_config"] = json!({"jwt_cache_size": inputs.cache_entries});
    }
    if payload_in_metadata {
        provider["payload_in_metadata"] = json!(PAYLOAD_KEY);
    }
    let mut rules: Vec<Value> = config
        .get("bypassPaths")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|bypass| {
            if let Some(path) = bypass.get("exact") {
                Some(json!({"match": {"path": path}}))
            } else {
                bypass
                    .get("prefix")
                    .map(|prefix| json!({"match": {"prefix": prefix}}))
            }
        })
        .collect();
    rules.push(json!({"match": {"prefix": "/"}, "requires": {"provider_name": "bank"}}));
    Ok(json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bank": provider},
            "rules": rules
        }
    }))
}

fn lua(prelude: &str, script: &str) -> Value {
    json!({
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": format!("{prelude}{script}")}
        }
    })
}

/// A JSON value as a Lua expression: objects and arrays become tables (arrays 1-based), null
/// becomes nil.
fn lua_value(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' | '\\' => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c == '\u{7f}' => {
                        out.push_str(&format!("\\{:03}", c as u32));
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_value).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_value(&json!(k)), lua_value(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_becomes_a_lua_table_literal() {
        let value = json!({"a": [1, "x\"y"], "b": null, "c": {"d": true}});
        assert_eq!(
            lua_value(&value),
            r#"{["a"] = {1, "x\"y"}, ["c"] = {["d"] = true}}"#
        );
        assert_eq!(lua_value(&json!("a\nb")), r#""a\010b""#);
    }
}
