//! The Envoy bootstrap for local runs: one HTTP listener whose filter chain is the WasmPlugins,
//! configured field for field as istiod configures them, in front of the demo upstream.
//!
//! Per plugin, as istiod writes it: HTTP filter `envoy.filters.http.wasm`, `name`
//! `<namespace>.<name>`, `root_id` = `pluginName`, no `vm_id`, runtime `envoy.wasm.runtime.v8`,
//! the `pluginConfig` as compact JSON in a `google.protobuf.StringValue`, and `failure_policy`
//! from `failStrategy` (`FAIL_CLOSE` -> `FAIL_CLOSED`). What differs is the module's source: a
//! local file from `make wasm` instead of the resource's `url`, and the absence of Istio's own
//! filters (`jwt_authn`, `rbac`, stats) between the phases.
//!
//! The listener normalises paths as Istio does by default (`meshConfig.pathNormalization`
//! unset means `BASE`): RFC 3986 normalisation (`normalize_path`), slashes not merged, escaped
//! slashes kept; [`BootstrapOptions::path_normalization`] chooses another of Istio's values,
//! e.g. [`PathNormalization::None`] to see what a filter meets without it.
//!
//! istiod delivers each WasmPlugin's filter over ECDS (the HTTP filter names a
//! `config_discovery` source and the proxy fetches the Wasm configuration by name), so a
//! changed `pluginConfig` reaches a running proxy without a listener change. Locally the
//! filters are inline in the listener, unless [`BootstrapOptions::with_plugin_configs_in`]
//! names a directory: then each filter's configuration is discovered from a file there,
//! which [`write_plugin_config`] replaces to push a new one.
//!
//! Filters that call out (`dispatch_http_call`, e.g. jwt-auth fetching its JWKS) name an
//! Envoy cluster the way istiod names it, `outbound|<port>|<subset>|<host>`. Locally those
//! names are declared with [`BootstrapOptions::with_cluster`] and point at a loopback
//! address, so the plugin's configuration is used unchanged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::EnvoyError;
use crate::wasmplugin::{VmEnv, WasmPlugin};

/// The cluster every request is routed to.
pub const UPSTREAM_CLUSTER: &str = "demo_upstream";

/// An extra upstream cluster that filters reach by name with `dispatch_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedCluster {
    /// The cluster name the plugin configuration uses, e.g.
    /// `outbound|443||idp.bank.svc.cluster.local` (istiod's naming).
    pub name: String,
    /// Where it really is locally: plain HTTP/1.1 on this address.
    pub address: SocketAddr,
}

/// Istio's `meshConfig.pathNormalization`, as istiod's listener builder turns it into
/// HTTP connection manager settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathNormalization {
    /// `NONE`: paths reach the filters and the upstream as the client sent them.
    None,
    /// `BASE`, also what `DEFAULT` and an unset value mean: `normalize_path` (RFC 3986:
    /// `.`/`..` segments resolved, percent-encoded unreserved characters decoded).
    #[default]
    Base,
    /// `MERGE_SLASHES`: `BASE`, and `//` merged into `/`.
    MergeSlashes,
    /// `DECODE_AND_MERGE_SLASHES`: `MERGE_SLASHES`, and `%2F`/`%5C` decoded before both.
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    /// The connection manager fields istiod sets for this value. It always sets
    /// `path_with_escaped_slashes_action` (to `KEEP_UNCHANGED` unless decoding) and sets
    /// `merge_slashes` only when merging.
    fn connection_manager_fields(self) -> Value {
        let (normalize, merge, escaped_slashes) = match self {
            PathNormalization::None => (false, false, "KEEP_UNCHANGED"),
            PathNormalization::Base => (true, false, "KEEP_UNCHANGED"),
            PathNormalization::MergeSlashes => (true, true, "KEEP_UNCHANGED"),
            PathNormalization::DecodeAndMergeSlashes => (true, true, "UNESCAPE_AND_FORWARD"),
        };
        let mut fields = json!({
            "normalize_path": normalize,
            "path_with_escaped_slashes_action": escaped_slashes
        });
        if merge {
            fields["merge_slashes"] = json!(true);
        }
        fields
    }
}

/// Where the generated Envoy listens and what it talks to.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// The HTTP listener; port 0 lets the kernel choose (see `RunningEnvoy::listener`).
    pub listener: SocketAddr,
    /// Envoy's admin interface (`/ready`, `/stats`, `/listeners`); port 0 allowed.
    pub admin: SocketAddr,
    /// The demo upstream's address.
    pub upstream: SocketAddr,
    /// Where the `.wasm` modules are ([`crate::wasm_dir`]).
    pub wasm_dir: PathBuf,
    /// Write an access log line per request to Envoy's stdout (for `make run`).
    pub access_log: bool,
    /// Clusters besides the demo upstream, for filters' own HTTP calls.
    pub clusters: Vec<NamedCluster>,
    /// How the listener normalises `:path` before the filters see it; Istio's default unless
    /// changed.
    pub path_normalization: PathNormalization,
    /// Where each plugin's filter configuration is discovered from (ECDS from files), if
    /// not inline in the listener.
    pub plugin_configs: Option<PathBuf>,
}

impl BootstrapOptions {
    /// Listener and admin on kernel-chosen loopback ports, no access log: what tests want.
    pub fn ephemeral(upstream: SocketAddr, wasm_dir: PathBuf) -> Self {
        let any_loopback: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        BootstrapOptions {
            listener: any_loopback,
            admin: any_loopback,
            upstream,
            wasm_dir,
            access_log: false,
            clusters: Vec::new(),
            path_normalization: PathNormalization::default(),
            plugin_configs: None,
        }
    }

    /// Delivers each plugin's filter configuration over ECDS from a file in `dir`, one per
    /// filter, as istiod delivers it over ECDS from its own server: write the files with
    /// [`write_plugin_config`] before Envoy starts, and again to push a changed one.
    pub fn with_plugin_configs_in(mut self, dir: PathBuf) -> Self {
        self.plugin_configs = Some(dir);
        self
    }

    /// Normalises paths as `meshConfig.pathNormalization: <normalization>` would.
    pub fn with_path_normalization(mut self, normalization: PathNormalization) -> Self {
        self.path_normalization = normalization;
        self
    }

    /// Declares the cluster `name` (as the plugin configuration spells it, Istio-style)
    /// served at `address`.
    pub fn with_cluster(mut self, name: &str, address: SocketAddr) -> Self {
        self.clusters.push(NamedCluster {
            name: name.to_string(),
            address,
        });
        self
    }
}

/// Builds the bootstrap for `plugins`, which are chained in the order given (use
/// `load_wasmplugins`, which sorts them as istiod does). Fails when a module is not built,
/// or when two clusters share a name.
pub fn bootstrap(plugins: &[WasmPlugin], options: &BootstrapOptions) -> Result<Value, EnvoyError> {
    let mut clusters = vec![upstream_cluster(UPSTREAM_CLUSTER, options.upstream)];
    for extra in &options.clusters {
        if extra.name.is_empty() {
            return Err(EnvoyError("an extra cluster needs a name".to_string()));
        }
        if extra.name == UPSTREAM_CLUSTER
            || options
                .clusters
                .iter()
                .filter(|c| c.name == extra.name)
                .count()
                > 1
        {
            return Err(EnvoyError(format!(
                "cluster {:?} is declared twice",
                extra.name
            )));
        }
        clusters.push(upstream_cluster(&extra.name, extra.address));
    }
    let mut http_filters = Vec::with_capacity(plugins.len() + 1);
    for plugin in plugins {
        http_filters.push(match &options.plugin_configs {
            None => wasm_filter(plugin, options)?,
            Some(dir) => discovered_filter(plugin, dir),
        });
    }
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));

    let mut connection_manager = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress_http",
        "codec_type": "AUTO",
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [{
                "name": "demo",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": UPSTREAM_CLUSTER, "timeout": "15s"}}]
            }]
        },
        "http_filters": http_filters
    });
    if let (Some(manager), Value::Object(fields)) = (
        connection_manager.as_object_mut(),
        options.path_normalization.connection_manager_fields(),
    ) {
        manager.extend(fields);
    }
    if options.access_log {
        connection_manager["access_log"] = json!([{
            "name": "envoy.access_loggers.stdout",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"}
        }]);
    }

    Ok(json!({
        "node": {"id": "local-envoy", "cluster": "banking-wasm-filters"},
        "admin": {"address": socket_address(options.admin)},
        "static_resources": {
            "listeners": [{
                "name": "banking_ingress",
                "address": socket_address(options.listener),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": connection_manager
                }]}]
            }],
            "clusters": clusters
        }
    }))
}

/// A plain HTTP/1.1 cluster of one loopback endpoint.
fn upstream_cluster(name: &str, address: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        // Shorter than the demo upstream's own idle timeout, so Envoy never reuses a
        // connection the upstream is about to close.
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": "10s"},
                "explicit_http_config": {"http_protocol_options": {}}
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(address)}}]}]
        }
    })
}

fn wasm_filter(plugin: &WasmPlugin, options: &BootstrapOptions) -> Result<Value, EnvoyError> {
    let module = options.wasm_dir.join(plugin.wasm_file_name());
    if !module.is_file() {
        return Err(EnvoyError(format!(
            "WasmPlugin {} needs {}, which is not built: run `make wasm`",
            plugin.name,
            module.display()
        )));
    }
    let module = module.canonicalize()?;
    let mut config = json!({
        "name": plugin.filter_name(),
        "root_id": plugin.plugin_name,
        "failure_policy": plugin.fail_strategy.envoy_failure_policy(),
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": module.to_string_lossy()}}
        }
    });
    // As istiod translates `vmConfig.env`.
    let host_keys: Vec<&str> = plugin
        .env
        .iter()
        .filter_map(|e| match e {
            VmEnv::Host(name) => Some(name.as_str()),
            VmEnv::Inline(..) => None,
        })
        .collect();
    let inline: serde_json::Map<String, Value> = plugin
        .env
        .iter()
        .filter_map(|e| match e {
            VmEnv::Inline(name, value) => Some((name.clone(), Value::String(value.clone()))),
            VmEnv::Host(_) => None,
        })
        .collect();
    if !plugin.env.is_empty() {
        config["vm_config"]["environment_variables"] =
            json!({"host_env_keys": host_keys, "key_values": inline});
    }
    if let Some(configuration) = plugin.configuration_json() {
        config["configuration"] = json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": configuration
        });
    }
    Ok(json!({
        "name": plugin.filter_name(),
        "typed_config": {
            "@type": WASM_FILTER_TYPE,
            "config": config
        }
    }))
}

const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// The file `plugin`'s filter configuration is discovered from.
fn plugin_config_path(plugin: &WasmPlugin, dir: &Path) -> PathBuf {
    dir.join(format!("{}.json", plugin.filter_name()))
}

/// An HTTP filter whose Wasm configuration Envoy discovers by name (ECDS), from a file: a
/// move into `dir` that replaces the file is a push.
fn discovered_filter(plugin: &WasmPlugin, dir: &Path) -> Value {
    json!({
        "name": plugin.filter_name(),
        "config_discovery": {
            "config_source": {
                "path_config_source": {
                    "path": plugin_config_path(plugin, dir).to_string_lossy(),
                    "watched_directory": {"path": dir.to_string_lossy()}
                },
                "resource_api_version": "V3"
            },
            "type_urls": [WASM_FILTER_TYPE]
        }
    })
}

/// Writes `plugin`'s filter configuration where [`BootstrapOptions::with_plugin_configs_in`]
/// has Envoy discover it: a discovery response holding one `TypedExtensionConfig`, written
/// beside the file and moved over it, so Envoy never reads half a file. A running Envoy
/// applies it as a push.
pub fn write_plugin_config(
    plugin: &WasmPlugin,
    options: &BootstrapOptions,
) -> Result<(), EnvoyError> {
    let Some(dir) = &options.plugin_configs else {
        return Err(EnvoyError(
            "plugin configurations are inline: no directory to write them to".to_string(),
        ));
    };
    let filter = wasm_filter(plugin, options)?;
    // A digest, not the configuration: Envoy shows the version in its config dump and logs.
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&filter.to_string(), &mut digest);
    let response = json!({
        "version_info": format!("{:016x}", std::hash::Hasher::finish(&digest)),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": plugin.filter_name(),
            "typed_config": filter["typed_config"]
        }]
    });
    std::fs::create_dir_all(dir)?;
    let path = plugin_config_path(plugin, dir);
    let staged = dir.join(format!(".{}.json.new", plugin.filter_name()));
    std::fs::write(&staged, response.to_string())?;
    std::fs::rename(&staged, &path)?;
    Ok(())
}

fn socket_address(addr: SocketAddr) -> Value {
    json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasmplugin::{FailStrategy, Phase};

    fn plugin(name: &str, config: Option<Value>) -> WasmPlugin {
        WasmPlugin {
            name: name.to_string(),
            namespace: "bank".to_string(),
            plugin_name: format!("{name}-root"),
            phase: Phase::Authn,
            priority: 0,
            fail_strategy: FailStrategy::FailClose,
            plugin_config: config,
            url: "oci://example/x:1".to_string(),
            source: PathBuf::from("wasmplugins/x.yaml"),
            env: Vec::new(),
        }
    }

    fn scratch_wasm_dir(label: &str, files: &[&str]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("bootstrap-test-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in files {
            std::fs::write(dir.join(file), b"\0asm").unwrap();
        }
        dir
    }

    #[test]
    fn vm_config_env_becomes_envoys_environment_variables_as_istiod_writes_them() {
        let dir = scratch_wasm_dir("env", &["keyed.wasm", "plain.wasm"]);
        let mut keyed = plugin("keyed", None);
        keyed.env = vec![
            VmEnv::Host("BANKING_AUDIT_CHECKPOINT_KEY".into()),
            VmEnv::Inline("REGION".into(), "eu-west".into()),
        ];
        let options = BootstrapOptions::ephemeral("127.0.0.1:8081".parse().unwrap(), dir.clone());
        let bootstrap = bootstrap(&[keyed, plugin("plain", None)], &options);
        let _ = std::fs::remove_dir_all(&dir);
        let bootstrap = bootstrap.unwrap();
        let filters = &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
            [0]["typed_config"]["http_filters"];
        let vm = &filters[0]["typed_config"]["config"]["vm_config"];
        assert_eq!(
            vm["environment_variables"],
            json!({"host_env_keys": ["BANKING_AUDIT_CHECKPOINT_KEY"],
                   "key_values": {"REGION": "eu-west"}})
        );
        let plain = &filters[1]["typed_config"]["config"]["vm_config"];
        assert!(plain.get("environment_variables").is_none());
    }

    #[test]
    fn configures_each_plugin_as_istiod_does_in_the_given_order() {
        let dir = scratch_wasm_dir("order", &["first.wasm", "second.wasm"]);
        let plugins = [
            plugin("first", Some(json!({"limit": 100}))),
            plugin("second", None),
        ];
        let options = BootstrapOptions::ephemeral("127.0.0.1:8081".parse().unwrap(), dir.clone());
        let bootstrap = bootstrap(&plugins, &options).unwrap();
        let filters = &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
            [0]["typed_config"]["http_filters"];
        let names: Vec<&str> = filters
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["bank.first", "bank.second", "envoy.filters.http.router"]
        );

        let first = &filters[0]["typed_config"]["config"];
        assert_eq!(first["root_id"], "first-root");
        assert_eq!(first["failure_policy"], "FAIL_CLOSED");
        assert_eq!(first["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
        assert!(
            first["vm_config"].get("vm_id").is_none(),
            "istiod sets no vm_id"
        );
        assert_eq!(
            first["configuration"]["@type"],
            "type.googleapis.com/google.protobuf.StringValue"
        );
        assert_eq!(first["configuration"]["value"], r#"{"limit":100.0}"#);
        assert!(
            first["vm_config"]["code"]["local"]["filename"]
                .as_str()
                .unwrap()
                .ends_with("first.wasm")
        );
        assert!(
            filters[1]["typed_config"]["config"]
                .get("configuration")
                .is_none()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn plugin_configs_in_a_directory_are_discovered_by_filter_name_and_rewritten_whole() {
        let dir = scratch_wasm_dir("ecds", &["first.wasm"]);
        let configs = dir.join("configs");
        let options = BootstrapOptions::ephemeral("127.0.0.1:8081".parse().unwrap(), dir.clone())
            .with_plugin_configs_in(configs.clone());
        let mut first = plugin("first", Some(json!({"limit": 100})));
        let bootstrap = bootstrap(std::slice::from_ref(&first), &options).unwrap();
        let filter = &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
            [0]["typed_config"]["http_filters"][0];
        assert_eq!(filter["name"], "bank.first");
        assert!(filter.get("typed_config").is_none());
        let discovery = &filter["config_discovery"];
        assert_eq!(discovery["type_urls"], json!([WASM_FILTER_TYPE]));
        let file = configs.join("bank.first.json");
        assert_eq!(
            discovery["config_source"]["path_config_source"]["path"],
            file.to_string_lossy().as_ref()
        );

        let read = || -> Value { serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap() };
        write_plugin_config(&first, &options).unwrap();
        let resource = &read()["resources"][0];
        assert_eq!(resource["name"], "bank.first");
        let config = &resource["typed_config"]["config"];
        assert_eq!(config["root_id"], "first-root");
        assert_eq!(config["configuration"]["value"], r#"{"limit":100.0}"#);
        first.plugin_config = Some(json!({"limit": 7}));
        write_plugin_config(&first, &options).unwrap();
        assert_eq!(
            read()["resources"][0]["typed_config"]["config"]["configuration"]["value"],
            r#"{"limit":7.0}"#
        );
        assert_eq!(
            std::fs::read_dir(&configs).unwrap().count(),
            1,
            "nothing staged is left"
        );
        let inline = BootstrapOptions::ephemeral("127.0.0.1:8081".parse().unwrap(), dir.clone());
        assert!(write_plugin_config(&first, &inline).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn declares_istio_named_clusters_at_local_addresses_beside_the_upstream() {
        let dir = scratch_wasm_dir("clusters", &[]);
        let idp = "outbound|443||idp.bank.svc.cluster.local";
        let options = BootstrapOptions::ephemeral("127.0.0.1:8081".parse().unwrap(), dir.clone())
            .with_cluster(idp, "127.0.0.1:8082".parse().unwrap());
        let bootstrap = bootstrap(&[], &options).unwrap();
        let clusters = bootstrap["static_resources"]["clusters"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = clusters
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, [UPSTREAM_CLUSTER, idp]);
        assert_eq!(clusters[1]["load_assignment"]["cluster_name"], idp);
        assert_eq!(
            clusters[1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"],
            json!({"address": "127.0.0.1", "port_value": 8082})
        );

        let twice = options.with_cluster(idp, "127.0.0.1:9000".parse().unwrap());
        let err = super::bootstrap(&[], &twice).unwrap_err();
        assert!(err.0.contains("declared twice"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn connection_manager(options: &BootstrapOptions) -> Value {
        let bootstrap = bootstrap(&[], options).unwrap();
        bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]
            .clone()
    }

    #[test]
    fn normalises_paths_as_istio_does_by_default_and_as_each_mesh_setting_says() {
        let dir = scratch_wasm_dir("normalization", &[]);
        let options = BootstrapOptions::ephemeral("127.0.0.1:8081".parse().unwrap(), dir.clone());
        let fields = |manager: &Value| {
            (
                manager["normalize_path"].clone(),
                manager.get("merge_slashes").cloned(),
                manager["path_with_escaped_slashes_action"].clone(),
            )
        };
        let keep = json!("KEEP_UNCHANGED");
        assert_eq!(
            fields(&connection_manager(&options)),
            (json!(true), None, keep.clone()),
            "BASE, Istio's default"
        );
        let cases = [
            (PathNormalization::None, (json!(false), None, keep.clone())),
            (PathNormalization::Base, (json!(true), None, keep.clone())),
            (
                PathNormalization::MergeSlashes,
                (json!(true), Some(json!(true)), keep.clone()),
            ),
            (
                PathNormalization::DecodeAndMergeSlashes,
                (
                    json!(true),
                    Some(json!(true)),
                    json!("UNESCAPE_AND_FORWARD"),
                ),
            ),
        ];
        for (normalization, expected) in cases {
            let options = options.clone().with_path_normalization(normalization);
            assert_eq!(
                fields(&connection_manager(&options)),
                expected,
                "{normalization:?}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_a_plugin_whose_module_is_not_built_and_says_how_to_build_it() {
        let dir = scratch_wasm_dir("missing", &[]);
        let options = BootstrapOptions::ephemeral("127.0.0.1:8081".parse().unwrap(), dir.clone());
        let err = bootstrap(&[plugin("absent-filter", None)], &options).unwrap_err();
        assert!(
            err.0.contains("absent_filter.wasm") && err.0.contains("make wasm"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
