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
use crate::scenarios::{Keys, Load, Scenario, Step, WEBDIS_CLUSTER};

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
        env: Vec::new(),
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

/// How long the idempotency filter keeps an outcome in the first-use rows (its lease is 1 s):
/// they rotate through more keys than are used in this time, so each request is a first use,
/// and records expire so the store stays small over a long run. The replay rows keep theirs
/// for the whole run (an hour), so the one payment is never executed again.
pub const BENCH_RETENTION_S: u64 = 2;
const REPLAY_RETENTION_S: u64 = 3600;

/// The idempotency plugin's store and retention in the bench; `redis`: Redis through Webdis.
fn bench_idempotency(config: &mut Value, redis: bool, load: Load) {
    let retention = match load {
        Load::Payment(Keys::Same) => REPLAY_RETENTION_S,
        Load::Payment(Keys::New) | Load::Account => BENCH_RETENTION_S,
    };
    config["retention"] = json!(format!("{retention}s"));
    config["lease"] = json!("1s");
    config["store"] = if redis {
        json!({"redis": {"cluster": WEBDIS_CLUSTER, "timeout": "1s"}})
    } else {
        json!({"sharedData": {"slots": 8192}})
    };
}

/// A step's WasmPlugin name: `idempotency@redis` is the idempotency plugin with Redis.
fn plugin_name(step: &str) -> &str {
    step.split('@').next().unwrap_or(step)
}

/// A shipped WasmPlugin as the bench runs it: a remote JWKS becomes the bench's keys inline
/// (no identity provider in the measurement), and rate-limit's limits become
/// [`bench_rate_limits`]; nothing else changes.
fn bench_plugin(name: &str, inputs: &Inputs, load: Load) -> Result<WasmPlugin, BenchError> {
    let step = name;
    let name = plugin_name(step);
    let mut plugin = inputs
        .plugins
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| format!("no WasmPlugin named {name:?} in wasmplugins/"))?;
    if name == "idempotency"
        && let Some(config) = plugin.plugin_config.as_mut()
    {
        bench_idempotency(config, step.ends_with("@redis"), load);
    }
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
            Step::Plugin(name) => Some(position(plugin_name(name))),
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

/// The payment rows' upstream: a second listener of the row's Envoy on `port` that answers
/// every request itself, once it has the whole body (Envoy's buffer filter): a service that
/// answered on the headers alone would answer before the idempotency filter releases the
/// body, which the README says no upstream behind it may do.
fn payment_service(port: u16) -> Value {
    json!({
        "name": "payment_service",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "payment_service",
                "route_config": {"virtual_hosts": [{"name": "payments", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200,
                        "body": {"inline_string": "{\"id\":\"pay-42\",\"status\":\"accepted\"}"}}}]}]},
                "http_filters": [{"name": "envoy.filters.http.buffer", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                    "max_request_bytes": 65536}},
                    {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
            }
        }]}]
    })
}

/// The collector cluster the shipped audit-log plugin names.
fn audit_collector_cluster(inputs: &Inputs) -> Result<String, BenchError> {
    let cluster = inputs.plugin_config("audit-log")?["otlp"]["cluster"]
        .as_str()
        .ok_or("the shipped audit-log plugin names no otlp.cluster")?;
    Ok(cluster.to_string())
}

/// Envoy's file access log, one JSON line per request with what an audit record holds and
/// Envoy knows: time, the verified identity jwt-auth leaves in filter state, the banking
/// headers, method, path, status, flags, details, duration, sizes, addresses, trace context.
fn file_access_log(path: &Path) -> Value {
    json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path.to_string_lossy(),
            "log_format": {"json_format": {
                "time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
                "verified": "%FILTER_STATE(banking.jwt.identity:PLAIN)%",
                "claimedCustomer": "%REQ(X-CUSTOMER-ID)%",
                "operation": "%REQ(X-BANKING-OPERATION)%",
                "transactionId": "%REQ(X-TRANSACTION-ID)%",
                "correlationId": "%RESP(X-CORRELATION-ID)%",
                "requestId": "%REQ(X-REQUEST-ID)%",
                "method": "%REQ(:METHOD)%",
                "path": "%REQ_WITHOUT_QUERY(:PATH)%",
                "route": "%ROUTE_NAME%",
                "status": "%RESPONSE_CODE%",
                "responseFlags": "%RESPONSE_FLAGS%",
                "codeDetails": "%RESPONSE_CODE_DETAILS%",
                "durationMs": "%DURATION%",
                "requestBytes": "%BYTES_RECEIVED%",
                "responseBytes": "%BYTES_SENT%",
                "sourceAddress": "%DOWNSTREAM_REMOTE_ADDRESS%",
                "peerIdentity": "%DOWNSTREAM_PEER_URI_SAN%",
                "upstreamHost": "%UPSTREAM_HOST%",
                "traceparent": "%REQ(TRACEPARENT)%"
            },
            "formatters": [{"name": "envoy.formatter.req_without_query", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"}}]}
        }
    }])
}

/// The bootstrap of one row's Envoy: one listener, its chain, a direct response (for the
/// payment rows, the payment service listener behind it).
pub fn bootstrap(
    scenario: &Scenario,
    inputs: &Inputs,
    wasm_dir: &Path,
) -> Result<Value, BenchError> {
    check_istio_order(scenario, inputs)?;
    let mut wasm = Vec::new();
    for step in scenario.chain {
        match step {
            Step::Plugin(name) => wasm.push(bench_plugin(name, inputs, scenario.load)?),
            Step::Noop => wasm.push(noop_plugin()),
            Step::Native(_) | Step::FileAccessLog => {}
        }
    }
    let payments = matches!(scenario.load, Load::Payment(_));
    let upstream_port = if payments {
        // Free now; Envoy binds it a moment later.
        std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port()
    } else {
        9
    };
    let upstream = SocketAddr::from(([127, 0, 0, 1], upstream_port));
    let mut options = BootstrapOptions::ephemeral(upstream, wasm_dir.to_path_buf());
    if scenario.chain.iter().any(Step::needs_redis) {
        let webdis = inputs.webdis.ok_or("a Redis row without Redis")?;
        options = options.with_cluster(WEBDIS_CLUSTER, webdis);
    }
    if scenario.chain.iter().any(Step::needs_collector) {
        let collector = inputs
            .collector
            .ok_or("an audit-log row without a collector")?;
        let cluster = audit_collector_cluster(inputs)?;
        options = options.with_cluster(&cluster, collector);
    }
    let mut bootstrap = envoy::bootstrap(&wasm, &options)?;
    if payments {
        bootstrap["static_resources"]["listeners"]
            .as_array_mut()
            .ok_or("the bootstrap has no listener list")?
            .push(payment_service(upstream_port));
    }
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
            Step::FileAccessLog => {
                let path = inputs.access_log_dir.join(format!("{}.log", scenario.name));
                manager["access_log"] = file_access_log(&path);
            }
        }
    }
    filters.extend(generated);
    manager["http_filters"] = Value::Array(filters);
    if !payments {
        manager["route_config"]["virtual_hosts"][0]["routes"] = json!([{
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}
        }]);
    }
    Ok(bootstrap)
}
