//! Checks a WasmPlugin's pluginConfig before a gateway does: under `FAIL_CLOSE` a refused
//! config turns every request through the gateway into a 503, and Istio's CRD does not look
//! inside `pluginConfig`. Each config is rendered exactly as istiod hands it to the filter
//! (compact JSON, every number a float) and given to that filter's own parser, compiled
//! natively, so the check and the gateway cannot disagree.
//!
//! Also the source of `schemas/<filter>.schema.json`: the JSON Schema of each filter's
//! pluginConfig, generated from its serde types (their doc comments become descriptions).
//!
//! A new filter is a dependency in Cargo.toml and one row of [`FILTERS`].

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use banking_filter_common::config::ConfigError;
use envoy_runner::wasmplugin::{self, WasmPlugin};
use schemars::Schema;

/// A filter whose pluginConfig can be checked.
pub struct Filter {
    /// Its crate's name, which its WasmPlugin carries as `metadata.name`.
    pub name: &'static str,
    /// Its own parser: the warnings of a config it accepts, or the error it refuses it with.
    pub parse: fn(&[u8]) -> Result<Vec<String>, ConfigError>,
    /// The JSON Schema of its pluginConfig.
    pub schema: fn() -> Schema,
}

/// Every filter with a WasmPlugin.
pub const FILTERS: &[Filter] = &[
    Filter {
        name: "banking-headers",
        parse: |c| banking_headers::config::Config::from_json(c).map(|_| Vec::new()),
        schema: || schemars::schema_for!(banking_headers::config::PluginConfig),
    },
    Filter {
        name: "jwt-auth",
        parse: |c| jwt_auth::config::Config::parse(c).map(|parsed| parsed.warnings),
        schema: || schemars::schema_for!(jwt_auth::config::PluginConfig),
    },
    Filter {
        name: "rate-limit",
        parse: |c| rate_limit::config::Config::from_json(c).map(|_| Vec::new()),
        schema: || schemars::schema_for!(rate_limit::config::PluginConfig),
    },
    Filter {
        name: "idempotency",
        parse: |c| idempotency::config::Config::from_json(c).map(|_| Vec::new()),
        schema: || schemars::schema_for!(idempotency::config::PluginConfig),
    },
    Filter {
        name: "audit-log",
        parse: |c| audit_log::config::Config::from_json(c).map(|_| Vec::new()),
        schema: || schemars::schema_for!(audit_log::config::PluginConfig),
    },
];

/// The filter a WasmPlugin deploys: the one it is named after, as `make run` reads it, or
/// else the one its `url` names as the image (`oci://.../jwt-auth:0.1.0`), so a second
/// plugin of a filter (`jwt-auth-partners`) is still checked.
pub fn filter_of(plugin: &WasmPlugin) -> Option<&'static Filter> {
    let by_name = FILTERS.iter().find(|f| f.name == plugin.name);
    by_name.or_else(|| {
        let image = image_name(&plugin.url)?;
        FILTERS.iter().find(|f| f.name == image)
    })
}

/// The last path segment of an image reference, without its tag or digest.
fn image_name(url: &str) -> Option<&str> {
    let last = url.rsplit('/').next()?;
    let last = last.split('@').next()?;
    let name = last.split(':').next()?;
    let name = name.strip_suffix(".wasm").unwrap_or(name);
    Some(name).filter(|n| !n.is_empty())
}

/// What checking one WasmPlugin found.
#[derive(Debug)]
pub enum Outcome {
    /// The filter accepts the config, with these warnings.
    Valid {
        filter: &'static str,
        warnings: Vec<String>,
    },
    /// The filter refuses it: `on_configure` would fail and, under `FAIL_CLOSE`, so would
    /// every request.
    Invalid {
        filter: &'static str,
        error: ConfigError,
    },
    /// No filter of this workspace is named by the plugin or its image.
    UnknownFilter,
}

/// One WasmPlugin and what checking it found.
#[derive(Debug)]
pub struct Checked {
    pub plugin: WasmPlugin,
    pub outcome: Outcome,
}

impl Checked {
    pub fn is_valid(&self) -> bool {
        matches!(self.outcome, Outcome::Valid { .. })
    }
}

/// The bytes the filter's `on_configure` receives: empty when there is no pluginConfig.
pub fn configuration_bytes(plugin: &WasmPlugin) -> Vec<u8> {
    plugin.configuration_json().unwrap_or_default().into_bytes()
}

/// Runs the plugin's filter's parser on its configuration.
pub fn check(plugin: WasmPlugin) -> Checked {
    let outcome = match filter_of(&plugin) {
        None => Outcome::UnknownFilter,
        Some(filter) => match (filter.parse)(&configuration_bytes(&plugin)) {
            Ok(warnings) => Outcome::Valid {
                filter: filter.name,
                warnings,
            },
            Err(error) => Outcome::Invalid {
                filter: filter.name,
                error,
            },
        },
    };
    Checked { plugin, outcome }
}

impl fmt::Display for Checked {
    /// One line, plus one per warning: `ok <file> <name>`, or
    /// `<file>: <name> (<filter>): invalid plugin configuration at `<path>`: <message>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.plugin.source.display();
        let name = &self.plugin.name;
        match &self.outcome {
            Outcome::Valid { filter, warnings } => {
                write!(f, "ok {file} {name}")?;
                for warning in warnings {
                    write!(f, "\nwarning {file}: {name} ({filter}): {warning}")?;
                }
                Ok(())
            }
            Outcome::Invalid { filter, error } => write!(f, "{file}: {name} ({filter}): {error}"),
            Outcome::UnknownFilter => {
                let known: Vec<&str> = FILTERS.iter().map(|f| f.name).collect();
                write!(
                    f,
                    "{file}: {name}: no filter is named {name:?} nor by the image of spec.url {:?}; known filters: {}",
                    self.plugin.url,
                    known.join(", ")
                )
            }
        }
    }
}

/// Why the input could not be checked at all (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The WasmPlugins of each path, in the order given: a file (several YAML documents allowed,
/// other kinds skipped), a directory (its `*.yaml` and `*.yml` files, not its
/// subdirectories), or `-` for standard input (e.g. `kustomize build overlays/prod`).
pub fn read_wasmplugins(paths: &[PathBuf]) -> Result<Vec<WasmPlugin>, Unreadable> {
    let mut plugins = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Unreadable(format!("cannot read standard input: {e}")))?;
            let found = wasmplugin::parse_documents(&text, Path::new("<stdin>"))
                .map_err(|e| Unreadable(e.0))?;
            plugins.extend(found);
        } else if path.is_dir() {
            for file in wasmplugin::wasmplugin_files(path).map_err(|e| Unreadable(e.0))? {
                plugins.extend(wasmplugin::parse_file(&file).map_err(|e| Unreadable(e.0))?);
            }
        } else {
            plugins.extend(wasmplugin::parse_file(path).map_err(|e| Unreadable(e.0))?);
        }
    }
    if plugins.is_empty() {
        let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Unreadable(format!(
            "no WasmPlugin (apiVersion extensions.istio.io/*, kind WasmPlugin) in {}",
            named.join(", ")
        )));
    }
    Ok(plugins)
}

/// Where the shipped schemas live, relative to the repository root.
pub const SCHEMA_DIR: &str = "schemas";

/// `schemas/<filter>.schema.json`.
pub fn schema_path(filter: &Filter) -> PathBuf {
    Path::new(SCHEMA_DIR).join(format!("{}.schema.json", filter.name))
}

/// The schema file's text: pretty JSON ending in a newline, titled after the filter.
pub fn schema_text(filter: &Filter) -> String {
    let mut schema = (filter.schema)();
    schema.insert(
        "title".to_owned(),
        format!("{} pluginConfig", filter.name).into(),
    );
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes every filter's schema under `root`; returns the files written.
pub fn write_schemas(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(root.join(SCHEMA_DIR))?;
    let mut written = Vec::new();
    for filter in FILTERS {
        let path = schema_path(filter);
        std::fs::write(root.join(&path), schema_text(filter))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_name_drops_registry_tag_and_digest() {
        let cases = [
            ("oci://registry.bank.example/x/jwt-auth:0.1.0", "jwt-auth"),
            ("oci://r/jwt-auth@sha256:abc", "jwt-auth"),
            (
                "file:///opt/filters/banking_headers.wasm",
                "banking_headers",
            ),
            ("https://h/f/banking-headers.wasm", "banking-headers"),
        ];
        for (url, name) in cases {
            assert_eq!(image_name(url), Some(name), "{url}");
        }
        assert_eq!(image_name("oci://r/"), None);
    }

    #[test]
    fn every_filter_crate_is_in_the_table() {
        let filters = envoy_runner::repo_root().join("filters");
        for entry in std::fs::read_dir(&filters).unwrap() {
            let dir = entry.unwrap().path();
            let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
            if name == "common" || !dir.join("Cargo.toml").is_file() {
                continue;
            }
            assert!(
                FILTERS.iter().any(|f| f.name == name),
                "filters/{name} has no row in check-config's FILTERS"
            );
        }
    }
}
