//! Istio `WasmPlugin` resources read from `wasmplugins/*.yaml`, in the order istiod chains them.
//!
//! Only what decides the Envoy filter is read: `phase`, `priority`, `failStrategy`,
//! `pluginName`, `pluginConfig` and `url`. Workload selection (`selector`, `targetRefs`,
//! `match`) does not apply locally: the one local listener runs every plugin. Whether a file is
//! a valid resource at all is the CRD test's job (`tests/wasmplugins_crd.rs`).
//!
//! A WasmPlugin's `metadata.name` is the name of the filter crate it deploys, so
//! `banking-headers` runs `banking_headers.wasm`.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::EnvoyError;

/// Where in the HTTP filter chain istiod injects a plugin, in chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Before Istio's authentication filters (`jwt_authn`).
    Authn,
    /// After authentication, before Istio's authorization filter (`rbac`).
    Authz,
    /// After authorization, before Istio's stats filter.
    Stats,
    /// `UNSPECIFIED_PHASE` or absent: last, just before the router.
    Unspecified,
}

impl Phase {
    fn parse(text: Option<&str>) -> Option<Phase> {
        match text {
            None | Some("UNSPECIFIED_PHASE") => Some(Phase::Unspecified),
            Some("AUTHN") => Some(Phase::Authn),
            Some("AUTHZ") => Some(Phase::Authz),
            Some("STATS") => Some(Phase::Stats),
            Some(_) => None,
        }
    }
}

/// What Envoy does when the plugin cannot run (VM failed to start, configure, or crashed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailStrategy {
    /// `FAIL_CLOSE` (Istio's default): requests fail with 503 rather than skip the plugin.
    FailClose,
    /// `FAIL_OPEN`: requests bypass the broken plugin.
    FailOpen,
    /// `FAIL_RELOAD`: Envoy restarts the VM, failing requests closed meanwhile.
    FailReload,
}

impl FailStrategy {
    fn parse(text: Option<&str>) -> Option<FailStrategy> {
        match text {
            None | Some("FAIL_CLOSE") => Some(FailStrategy::FailClose),
            Some("FAIL_OPEN") => Some(FailStrategy::FailOpen),
            Some("FAIL_RELOAD") => Some(FailStrategy::FailReload),
            Some(_) => None,
        }
    }

    /// The `failure_policy` value istiod (1.25 and later) writes into Envoy's `PluginConfig`.
    pub fn envoy_failure_policy(self) -> &'static str {
        match self {
            FailStrategy::FailClose => "FAIL_CLOSED",
            FailStrategy::FailOpen => "FAIL_OPEN",
            FailStrategy::FailReload => "FAIL_RELOAD",
        }
    }
}

/// One `WasmPlugin` resource, reduced to what shapes its Envoy filter.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmPlugin {
    /// `metadata.name`; also the filter crate's name.
    pub name: String,
    /// `metadata.namespace`, `default` when absent (as `kubectl apply` without `-n`).
    pub namespace: String,
    /// `spec.pluginName`: Envoy's `root_id`; empty when absent, as istiod leaves it.
    pub plugin_name: String,
    pub phase: Phase,
    /// `spec.priority`; absent or null counts as 0.
    pub priority: i64,
    pub fail_strategy: FailStrategy,
    /// `spec.pluginConfig`, or `None` when absent or empty.
    pub plugin_config: Option<Value>,
    /// `spec.url`, informational locally: the module comes from the local build.
    pub url: String,
    /// The file the resource was read from.
    pub source: PathBuf,
    /// `spec.vmConfig.env`: what the module reads from its environment.
    pub env: Vec<VmEnv>,
}

/// One `spec.vmConfig.env` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEnv {
    /// `valueFrom: HOST`: the proxy process's own variable of that name (Envoy's
    /// `host_env_keys`), e.g. one the istio-proxy container gets from a Kubernetes Secret.
    Host(String),
    /// `valueFrom: INLINE` (the default), with its `value` (Envoy's `key_values`).
    Inline(String, String),
}

impl WasmPlugin {
    /// The module `make wasm` builds for this plugin: `banking-headers` -> `banking_headers.wasm`.
    pub fn wasm_file_name(&self) -> String {
        format!("{}.wasm", self.name.replace('-', "_"))
    }

    /// The name istiod gives the filter: `<namespace>.<name>`.
    pub fn filter_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// The plugin configuration exactly as the filter will read it: compact JSON of
    /// `pluginConfig` after a trip through a protobuf `Struct` (see [`protobuf_struct_json`]).
    pub fn configuration_json(&self) -> Option<String> {
        self.plugin_config.as_ref().map(protobuf_struct_json)
    }

    /// This plugin with one `pluginConfig` value replaced, for tests that need, say, shorter
    /// timers than production. `pointer` is a JSON pointer (RFC 6901) into `pluginConfig`,
    /// e.g. `/providers/0/remoteJwks/cacheDuration`; it must name a value the file already
    /// has, so an override can only change what is written, never add to it or misspell it.
    pub fn with_config_override(
        mut self,
        pointer: &str,
        value: Value,
    ) -> Result<WasmPlugin, EnvoyError> {
        let slot = self
            .plugin_config
            .as_mut()
            .and_then(|config| config.pointer_mut(pointer))
            .ok_or_else(|| {
                EnvoyError(format!(
                    "WasmPlugin {} ({}): pluginConfig has no {pointer:?} to override",
                    self.name,
                    self.source.display()
                ))
            })?;
        *slot = value;
        Ok(self)
    }
}

/// Renders a JSON value as istiod hands `pluginConfig` to Envoy: compact, keys sorted, and every
/// number a double, because a protobuf `Struct` has no integers.
///
/// Numbers are written with a fractional part (`100` becomes `100.0`). istiod's own JSON printer
/// writes integral doubles without one (`100`), but large values lose precision and switch to
/// exponent form either way; writing `100.0` locally makes every test prove the filters accept
/// a float where they mean an integer, which is the stricter of the two.
pub fn protobuf_struct_json(value: &Value) -> String {
    let mut out = String::new();
    write_struct_value(value, &mut out);
    out
}

fn write_struct_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let double = n.as_f64().unwrap_or(f64::NAN);
            if double.is_finite() {
                // `{:?}` always keeps a fractional part or an exponent: 100.0, 0.5, 1e21.
                out.push_str(&format!("{double:?}"));
            } else {
                out.push_str("null");
            }
        }
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_struct_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(key) {
                    write_struct_value(item, out);
                }
            }
            out.push('}');
        }
    }
}

/// Reads every `WasmPlugin` in `dir/*.yaml` (several documents per file allowed; other kinds
/// are skipped) and returns them in istiod's chain order.
/// The `*.yaml` / `*.yml` files of a WasmPlugin directory, sorted by name.
pub fn wasmplugin_files(dir: &Path) -> Result<Vec<PathBuf>, EnvoyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        EnvoyError(format!(
            "cannot read WasmPlugin directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        })
        .collect();
    files.sort();
    Ok(files)
}

pub fn load_wasmplugins(dir: &Path) -> Result<Vec<WasmPlugin>, EnvoyError> {
    let files = wasmplugin_files(dir)?;
    let mut plugins = Vec::new();
    for file in &files {
        plugins.extend(parse_file(file)?);
    }
    let mut names: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(EnvoyError(format!(
            "two WasmPlugins are named {:?} in {}",
            pair[0],
            dir.display()
        )));
    }
    plugins.sort_by(istio_order);
    Ok(plugins)
}

/// istiod's order: phase (AUTHN, AUTHZ, STATS, unspecified), then higher `priority` first.
/// Ties are broken by namespace and name so the output is stable.
pub fn istio_order(a: &WasmPlugin, b: &WasmPlugin) -> Ordering {
    a.phase
        .cmp(&b.phase)
        .then(b.priority.cmp(&a.priority))
        .then_with(|| a.namespace.cmp(&b.namespace))
        .then_with(|| a.name.cmp(&b.name))
}

/// The named plugins, keeping the given (istiod) order; an unknown name is an error.
pub fn only(plugins: &[WasmPlugin], names: &[&str]) -> Result<Vec<WasmPlugin>, EnvoyError> {
    if let Some(missing) = names
        .iter()
        .find(|n| !plugins.iter().any(|p| p.name == **n))
    {
        let known: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
        return Err(EnvoyError(format!(
            "no WasmPlugin named {missing:?} (known: {})",
            known.join(", ")
        )));
    }
    Ok(plugins
        .iter()
        .filter(|p| names.contains(&p.name.as_str()))
        .cloned()
        .collect())
}

/// Splits plugins into those whose module is built in `wasm_dir` and the names of the rest.
pub fn built(plugins: &[WasmPlugin], wasm_dir: &Path) -> (Vec<WasmPlugin>, Vec<String>) {
    let (present, absent): (Vec<&WasmPlugin>, Vec<&WasmPlugin>) = plugins
        .iter()
        .partition(|p| wasm_dir.join(p.wasm_file_name()).is_file());
    (
        present.into_iter().cloned().collect(),
        absent.into_iter().map(|p| p.name.clone()).collect(),
    )
}

/// Parses one file's `WasmPlugin` documents.
pub fn parse_file(path: &Path) -> Result<Vec<WasmPlugin>, EnvoyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EnvoyError(format!("cannot read {}: {e}", path.display())))?;
    parse_documents(&text, path)
}

/// The `WasmPlugin` documents of YAML text (other kinds skipped); `path` names it in errors.
pub fn parse_documents(text: &str, path: &Path) -> Result<Vec<WasmPlugin>, EnvoyError> {
    use serde::Deserialize;
    let mut plugins = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let fail = |what: String| {
            EnvoyError(format!(
                "{} (document {}): {what}",
                path.display(),
                index + 1
            ))
        };
        let yaml = serde_yaml::Value::deserialize(document)
            .map_err(|e| fail(format!("invalid YAML: {e}")))?;
        if yaml.is_null() {
            continue;
        }
        let doc: Value = serde_json::to_value(&yaml)
            .map_err(|e| fail(format!("not representable as JSON: {e}")))?;
        let is_wasmplugin = doc.get("kind").and_then(Value::as_str) == Some("WasmPlugin")
            && doc
                .get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| v.starts_with("extensions.istio.io/"));
        if !is_wasmplugin {
            continue;
        }
        plugins.push(plugin_from_document(&doc, path).map_err(fail)?);
    }
    Ok(plugins)
}

fn plugin_from_document(doc: &Value, path: &Path) -> Result<WasmPlugin, String> {
    let metadata = doc.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .ok_or("metadata.name is missing")?
        .to_string();
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let spec = doc
        .get("spec")
        .ok_or_else(|| format!("WasmPlugin {name}: spec is missing"))?;
    let text = |field: &str| spec.get(field).and_then(Value::as_str);

    let phase = Phase::parse(text("phase")).ok_or_else(|| {
        format!(
            "WasmPlugin {name}: spec.phase {:?} is not AUTHN, AUTHZ or STATS",
            text("phase")
        )
    })?;
    let fail_strategy = FailStrategy::parse(text("failStrategy")).ok_or_else(|| {
        format!(
            "WasmPlugin {name}: spec.failStrategy {:?} is not FAIL_CLOSE, FAIL_OPEN or FAIL_RELOAD",
            text("failStrategy")
        )
    })?;
    let priority = match spec.get("priority") {
        None | Some(Value::Null) => 0,
        Some(value) => value
            .as_i64()
            .filter(|p| i32::try_from(*p).is_ok())
            .ok_or_else(|| format!("WasmPlugin {name}: spec.priority must be a 32-bit integer"))?,
    };
    match text("type") {
        None | Some("HTTP" | "UNSPECIFIED_PLUGIN_TYPE") => {}
        Some(other) => {
            return Err(format!(
                "WasmPlugin {name}: spec.type {other} is not an HTTP plugin"
            ));
        }
    }
    let url = text("url")
        .ok_or_else(|| format!("WasmPlugin {name}: spec.url is missing"))?
        .to_string();
    let plugin_config = match spec.get("pluginConfig") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) if map.is_empty() => None,
        Some(config @ Value::Object(_)) => Some(config.clone()),
        Some(_) => {
            return Err(format!(
                "WasmPlugin {name}: spec.pluginConfig must be a mapping"
            ));
        }
    };
    let mut env = Vec::new();
    let entries = match spec.pointer("/vmConfig/env") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(entries)) => entries.as_slice(),
        Some(_) => {
            return Err(format!(
                "WasmPlugin {name}: spec.vmConfig.env must be a list"
            ));
        }
    };
    for (i, entry) in entries.iter().enumerate() {
        let field = |f: &str| entry.get(f).and_then(Value::as_str);
        let at = format!("WasmPlugin {name}: spec.vmConfig.env[{i}]");
        let var = field("name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{at}.name is missing"))?;
        env.push(match field("valueFrom") {
            Some("HOST") => VmEnv::Host(var.to_string()),
            None | Some("INLINE") => VmEnv::Inline(
                var.to_string(),
                field("value").unwrap_or_default().to_string(),
            ),
            Some(other) => return Err(format!("{at}.valueFrom {other} is not INLINE or HOST")),
        });
    }
    Ok(WasmPlugin {
        env,
        plugin_name: text("pluginName").unwrap_or_default().to_string(),
        name,
        namespace,
        phase,
        priority,
        fail_strategy,
        plugin_config,
        url,
        source: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Vec<WasmPlugin>, EnvoyError> {
        parse_documents(text, Path::new("test.yaml"))
    }

    fn plugin(name: &str, phase: &str, priority: &str) -> String {
        format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: {name}\n\
             spec:\n  url: oci://example/{name}:1\n  phase: {phase}\n  priority: {priority}\n"
        )
    }

    #[test]
    fn orders_plugins_by_phase_then_higher_priority_first() {
        let text = [
            plugin("stats-low", "STATS", "1"),
            plugin("authz", "AUTHZ", "0"),
            plugin("unspecified", "UNSPECIFIED_PHASE", "100"),
            plugin("authn-low", "AUTHN", "null"),
            plugin("authn-high", "AUTHN", "10"),
            plugin("stats-high", "STATS", "5"),
        ]
        .join("---\n");
        let mut plugins = parse(&text).unwrap();
        plugins.sort_by(istio_order);
        let names: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "authn-high",
                "authn-low",
                "authz",
                "stats-high",
                "stats-low",
                "unspecified"
            ]
        );
    }

    #[test]
    fn reads_vm_config_env_and_refuses_an_unknown_source() {
        let text = format!(
            "{}  vmConfig:\n    env:\n    - name: KEY\n      valueFrom: HOST\n    - name: REGION\n      value: eu\n",
            plugin("keyed", "STATS", "1")
        );
        let plugins = parse(&text).unwrap();
        assert_eq!(
            plugins[0].env,
            [
                VmEnv::Host("KEY".into()),
                VmEnv::Inline("REGION".into(), "eu".into())
            ]
        );
        let unnamed = text.replace("name: KEY", "name: ''");
        assert!(
            parse(&unnamed)
                .unwrap_err()
                .to_string()
                .contains("vmConfig.env[0].name")
        );
        let bad = text.replace("HOST", "SECRET");
        assert!(
            parse(&bad)
                .unwrap_err()
                .to_string()
                .contains("vmConfig.env[0].valueFrom")
        );
    }

    #[test]
    fn renders_plugin_config_numbers_as_doubles_like_a_protobuf_struct() {
        let config = json!({"maxHeaderBytes": 256, "ratio": 0.5, "nested": {"list": [1, -2, "3"]}, "on": true, "z": null});
        assert_eq!(
            protobuf_struct_json(&config),
            r#"{"maxHeaderBytes":256.0,"nested":{"list":[1.0,-2.0,"3"]},"on":true,"ratio":0.5,"z":null}"#
        );
    }

    #[test]
    fn keeps_plugin_config_strings_byte_exact_and_escaped() {
        let config = json!({"pattern": "^[A-Z]{2}\\d+$", "quote": "a\"b", "unicode": "é"});
        let rendered = protobuf_struct_json(&config);
        let back: Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn overrides_only_plugin_config_values_the_file_already_has() {
        let text = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: x}\n\
                    spec: {url: u, pluginConfig: {providers: [{remoteJwks: {cacheDuration: 10m}}], realm: r}}\n";
        let plugin = parse(text).unwrap().remove(0);
        let shorter = plugin
            .clone()
            .with_config_override("/providers/0/remoteJwks/cacheDuration", json!("10s"))
            .unwrap();
        assert_eq!(
            shorter.configuration_json().unwrap(),
            r#"{"providers":[{"remoteJwks":{"cacheDuration":"10s"}}],"realm":"r"}"#
        );
        for absent in [
            "/providers/0/remoteJwks/cacheDuratoin",
            "/providers/1",
            "/limit",
        ] {
            let err = plugin
                .clone()
                .with_config_override(absent, json!(1))
                .unwrap_err();
            assert!(err.0.contains(absent), "{err}");
        }
    }

    #[test]
    fn maps_fail_strategy_to_envoy_failure_policy_as_istiod_does() {
        let doc = |strategy: &str| {
            format!(
                "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: x}}\nspec: {{url: u, failStrategy: {strategy}}}\n"
            )
        };
        let policy = |s: &str| {
            parse(&doc(s)).unwrap()[0]
                .fail_strategy
                .envoy_failure_policy()
        };
        assert_eq!(policy("FAIL_CLOSE"), "FAIL_CLOSED");
        assert_eq!(policy("FAIL_OPEN"), "FAIL_OPEN");
        assert_eq!(policy("FAIL_RELOAD"), "FAIL_RELOAD");
        let absent = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: x}\nspec: {url: u}\n";
        assert_eq!(
            parse(absent).unwrap()[0].fail_strategy,
            FailStrategy::FailClose
        );
    }

    #[test]
    fn refuses_a_misspelled_phase_naming_the_field() {
        let err = parse(&plugin("x", "AUTHENTICATION", "0")).unwrap_err();
        assert!(err.0.contains("spec.phase"), "{err}");
    }

    #[test]
    fn skips_documents_of_other_kinds() {
        let text = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: bank}}\n---\n{}",
            plugin("x", "AUTHN", "0")
        );
        let plugins = parse(&text).unwrap();
        assert_eq!(plugins.len(), 1);
        assert_eq!(plugins[0].wasm_file_name(), "x.wasm");
        assert_eq!(plugins[0].filter_name(), "default.x");
    }

    #[test]
    fn every_wasmplugin_in_the_repo_names_a_filter_crate() {
        let repo = crate::repo_root();
        let plugins = load_wasmplugins(&repo.join("wasmplugins")).unwrap();
        for plugin in &plugins {
            let crate_dir = repo.join("filters").join(&plugin.name);
            assert!(
                crate_dir.join("Cargo.toml").is_file(),
                "WasmPlugin {} ({}) must be named after its filter crate: filters/{} does not exist",
                plugin.name,
                plugin.source.display(),
                plugin.name
            );
        }
    }
}
