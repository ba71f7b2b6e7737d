//! One Envoy bootstrap per row: what `envoy_runner::bootstrap` writes for the row's
//! WasmPlugins (istiod's translation, so our filters run exactly as in the mesh), with the
//! row's native filters put in their place in the chain and every route answered by a
//! `direct_response`, so no upstream is in the measurement.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use envoy_runner::{self as envoy, BootstrapOptions, FailStrategy, Phase, WasmPlugin};
use serde_json::{Value, json};

use crate::BenchError;
use crate::native::Inputs;
use crate::scenarios::{Scenario, Step};

/// The bench's no-op filter as a plugin: not in `wasmplugins/` (it is never deployed), so
/// described here.
fn noop_plugin() -> WasmPlugin {
    WasmPlugin {
        name: "bench-noop-filter".to_string(),
        namespace: "bench".to_string(),
        plugin_name: String::new(),
        phase: Phase::Authn,
        priority: 0,
        fail_strategy: FailStrategy::FailClose,
        plugin_config: None,
        url: String::new(),
        source: PathBuf::from("bench/noop-filter"),
    }
}

/// Requests per second each bench bucket allows: far above any row's rate, so nothing is
/// refused and every row measures the same work (its requests' statuses are checked).
pub const BENCH_RATE_LIMIT_QUOTA: u64 = 1_000_000;
/// Buckets rate-limit keeps in the bench, and native `local_ratelimit`'s dynamic descriptors:
/// a quarter of the distinct tokens' subjects, so the distinct rows show buckets being
/// reclaimed rather than the table growing.
pub const BENCH_RATE_LIMIT_SLOTS: u64 = 1024;

/// The rate-limit plugin's limits in the bench: one, per verified subject (the distinct
/// tokens' subjects differ, so those rows rotate over thousands of keys), as many requests as
/// [`BENCH_RATE_LIMIT_QUOTA`] a second. The shipped limits would refuse the load: it is one
/// customer at thousands of requests a second.
fn bench_rate_limits() -> Value {
    json!([{"name": "bench_per_subject", "key": "subject",
            "quota": BENCH_RATE_LIMIT_QUOTA, "window": "1s", "slots": BENCH_RATE_LIMIT_SLOTS}])
}

/// A shipped WasmPlugin as the bench runs it: a remote JWKS becomes the bench's keys inline
/// (no identity provider in the measurement), and rate-limit's limits become
/// [`bench_rate_limits`]; nothing else changes.
fn bench_plugin(name: &str, inputs: &Inputs) -> Result<WasmPlugin, BenchError> {
    let mut plugin = inputs
        .plugins
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| format!("no WasmPlugin named {name:?} in wasmplugins/"))?;
    if name == "rate-limit"
        && let Some(config) = plugin.plugin_config.as_mut()
    {
        config["limits"] = bench_rate_limits();
    }
    if let Some(providers) = plugin
        .plugin_config
        .as_mut()
        .and_then(|c| c.get_mut("providers"))
        .and_then(Value::as_array_mut)
    {
        for provider in providers.iter_mut().filter_map(Value::as_object_mut) {
            if provider.remove("remoteJwks").is_some() {
                provider.insert("jwks".to_string(), inputs.jwks.clone());
            }
        }
    }
    Ok(plugin)
}

/// Our plugins of a chain must come in the order istiod gives them (phase, then priority),
/// or the row would measure a chain no mesh runs.
fn check_istio_order(scenario: &Scenario, inputs: &Inputs) -> Result<(), BenchError> {
    let position = |name: &str| inputs.plugins.iter().position(|p| p.name == name);
    let positions: Vec<Option<usize>> = scenario
        .chain
        .iter()
        .filter_map(|s| match s {
            Step::Plugin(name) => Some(position(name)),
            _ => None,
        })
        .collect();
    if positions.windows(2).any(|w| w[0] > w[1]) {
        return Err(format!(
            "row {:?} chains {} in an order istiod would not: list them as `load_wasmplugins` orders wasmplugins/",
            scenario.name,
            scenario.chain_label()
        )
        .into());
    }
    Ok(())
}

/// The bootstrap of one row's Envoy: one listener, its chain, a direct response.
pub fn bootstrap(
    scenario: &Scenario,
    inputs: &Inputs,
    wasm_dir: &Path,
) -> Result<Value, BenchError> {
    check_istio_order(scenario, inputs)?;
    let mut wasm = Vec::new();
    for step in scenario.chain {
        match step {
            Step::Plugin(name) => wasm.push(bench_plugin(name, inputs)?),
            Step::Noop => wasm.push(noop_plugin()),
            Step::Native(_) => {}
        }
    }
    let unused_upstream = SocketAddr::from(([127, 0, 0, 1], 9));
    let options = BootstrapOptions::ephemeral(unused_upstream, wasm_dir.to_path_buf());
    let mut bootstrap = envoy::bootstrap(&wasm, &options)?;
    let manager = &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
        [0]["typed_config"];
    let generated = match manager["http_filters"].take() {
        Value::Array(filters) => filters,
        other => return Err(format!("generated http_filters is not a list: {other}").into()),
    };
    // The generated list is our filters in the order given, then the router.
    let mut generated = generated.into_iter();
    let mut filters = Vec::new();
    for step in scenario.chain {
        match step {
            Step::Plugin(_) | Step::Noop => filters.push(
                generated
                    .next()
                    .ok_or("the generated chain is shorter than the row's")?,
            ),
            Step::Native(native) => filters.push((native.build)(inputs)?),
        }
    }
    filters.extend(generated);
    manager["http_filters"] = Value::Array(filters);
    manager["route_config"]["virtual_hosts"][0]["routes"] = json!([{
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}
    }]);
    Ok(bootstrap)
}
