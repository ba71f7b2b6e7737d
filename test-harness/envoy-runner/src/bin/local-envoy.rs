//! `make run`: the filters `make wasm` built, in a real Envoy configured from `wasmplugins/`,
//! in front of the demo upstream, on loopback ports, until Ctrl-C.
//!
//! A filter that calls out gets the demo service its declaration names
//! (`demo_services::declared`): jwt-auth's remote JWKS cluster leads to the demo identity
//! provider, whose banner lines include a curl command with a demo token the example routes
//! accept. Nothing here knows any filter.
//!
//! `cargo run -p envoy-runner --bin local-envoy -- [options]`; `--help` lists them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use demo_services::{DemoUpstream, RunningService};
use envoy_runner::redis::{RedisThroughWebdis, WEBDIS_CLUSTER, with_redis_store};
use envoy_runner::{
    self as envoy, BootstrapOptions, PathNormalization, RunningEnvoy, StartOptions, WasmPlugin,
};

/// How long the banner waits for each filter to count what it needs from its demo service
/// before printing the example requests anyway.
const READY_WAIT: Duration = Duration::from_secs(30);

const USAGE: &str = "\
usage: local-envoy [--port 10000] [--admin-port 9901] [--upstream-port 8081]
                   [--demo-port 8082] [--plugins NAME,NAME] [--workdir DIR]
                   [--path-normalization base|none|merge-slashes|decode-and-merge-slashes]
                   [--redis] [--print-config]

Starts the demo upstream and Envoy on 127.0.0.1 with every WasmPlugin in wasmplugins/ whose
module `make wasm` has built (or only those named with --plugins), chained as istiod would.
A filter that calls out gets the demo service declared for it (jwt-auth: a demo identity
provider, whose demo token is printed and written to the workdir's demo-token); the first
listens on --demo-port, the next on the port after it (0: any free port).
--workdir (default target/local-envoy) holds the bootstrap, the demo token and Envoy's admin
address; give each local-envoy run at the same time its own. --path-normalization is Istio's
meshConfig.pathNormalization (default base, as in Istio). --redis gives the idempotency
filter its Redis store: a Redis and a Webdis (redis-server and webdis found on PATH) started
from deploy/idempotency-redis/, Webdis behind the cluster outbound|7379||webdis.payments.svc.
cluster.local (the embedded store otherwise). --print-config prints the
generated Envoy bootstrap and exits. Ctrl-C stops them all.";

struct Args {
    port: u16,
    admin_port: u16,
    upstream_port: u16,
    demo_port: u16,
    plugins: Option<Vec<String>>,
    workdir: Option<PathBuf>,
    path_normalization: PathNormalization,
    redis: bool,
    print_config: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut parsed = Args {
        port: 10000,
        admin_port: 9901,
        upstream_port: 8081,
        demo_port: 8082,
        plugins: None,
        workdir: None,
        path_normalization: PathNormalization::default(),
        redis: false,
        print_config: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut port = |name: &str| -> Result<u16, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a port number"))
        };
        match arg.as_str() {
            "--port" => parsed.port = port("--port")?,
            "--admin-port" => parsed.admin_port = port("--admin-port")?,
            "--upstream-port" => parsed.upstream_port = port("--upstream-port")?,
            "--demo-port" => parsed.demo_port = port("--demo-port")?,
            "--plugins" => {
                let names = args
                    .next()
                    .ok_or("--plugins needs a comma-separated list of names")?;
                parsed.plugins = Some(
                    names
                        .split(',')
                        .map(|n| n.trim().to_string())
                        .filter(|n| !n.is_empty())
                        .collect(),
                );
            }
            "--workdir" => {
                parsed.workdir = Some(PathBuf::from(
                    args.next().ok_or("--workdir needs a directory")?,
                ));
            }
            "--path-normalization" => {
                parsed.path_normalization = match args.next().as_deref() {
                    Some("base") => PathNormalization::Base,
                    Some("none") => PathNormalization::None,
                    Some("merge-slashes") => PathNormalization::MergeSlashes,
                    Some("decode-and-merge-slashes") => PathNormalization::DecodeAndMergeSlashes,
                    _ => {
                        return Err("--path-normalization needs base, none, merge-slashes or \
                                    decode-and-merge-slashes"
                            .to_string());
                    }
                }
            }
            "--print-config" => parsed.print_config = true,
            "--redis" => parsed.redis = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(problem) => {
            if !problem.is_empty() {
                eprintln!("local-envoy: {problem}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(code) => code,
        Err(problem) => {
            eprintln!("local-envoy: {problem}");
            ExitCode::FAILURE
        }
    }
}

/// A demo service a running filter calls, before and after it is started.
struct PlannedService {
    filter: String,
    declaration: &'static demo_services::Declaration,
    config: serde_json::Value,
    clusters: Vec<String>,
    addr: SocketAddr,
    running: Option<Box<dyn RunningService>>,
}

/// The demo services the filters declare, each with the clusters its filter's configuration
/// calls it by, on consecutive ports from `first_port` (all kernel-chosen when it is 0).
fn plan_services(
    plugins: &[WasmPlugin],
    first_port: u16,
) -> Result<Vec<PlannedService>, Box<dyn std::error::Error>> {
    let mut planned = Vec::new();
    for plugin in plugins {
        let config = plugin
            .plugin_config
            .clone()
            .unwrap_or(serde_json::Value::Null);
        for declaration in demo_services::declared_for(&plugin.name) {
            let clusters = declaration
                .service
                .clusters(&config)
                .map_err(|e| format!("WasmPlugin {}: {e}", plugin.name))?;
            if clusters.is_empty() {
                continue;
            }
            let port = match first_port {
                0 => 0,
                first => u16::try_from(planned.len())
                    .ok()
                    .and_then(|i| first.checked_add(i))
                    .ok_or("--demo-port leaves no room for every demo service")?,
            };
            planned.push(PlannedService {
                filter: plugin.name.clone(),
                declaration,
                config: config.clone(),
                clusters,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                running: None,
            });
        }
    }
    Ok(planned)
}

fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let repo = envoy::repo_root();
    let wasm_dir = envoy::wasm_dir();
    let all = envoy::load_wasmplugins(&repo.join("wasmplugins"))?;
    let mut plugins: Vec<WasmPlugin> = match &args.plugins {
        // Named plugins must all be built: the bootstrap refuses a missing module.
        Some(names) => envoy::only(&all, &names.iter().map(String::as_str).collect::<Vec<_>>())?,
        None => {
            let (built, missing) = envoy::wasmplugin::built(&all, &wasm_dir);
            for name in &missing {
                eprintln!(
                    "local-envoy: skipping WasmPlugin {name}: its module is not built (make wasm)"
                );
            }
            built
        }
    };
    if plugins.is_empty() {
        return Err(format!(
            "no filter to run: no module built in {} (run `make wasm`)",
            wasm_dir.display()
        )
        .into());
    }

    if args.redis {
        let idempotency = plugins
            .iter_mut()
            .find(|p| p.name == "idempotency")
            .ok_or("--redis is for the idempotency filter, which is not in this run")?;
        *idempotency = with_redis_store(idempotency.clone(), "250ms");
    }

    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut options = BootstrapOptions {
        listener: loopback(args.port),
        admin: loopback(args.admin_port),
        upstream: loopback(args.upstream_port),
        wasm_dir,
        access_log: true,
        clusters: Vec::new(),
        path_normalization: args.path_normalization,
        plugin_configs: None,
    };
    let mut services = plan_services(&plugins, args.demo_port)?;
    if args.print_config {
        for service in &services {
            for cluster in &service.clusters {
                options = options.with_cluster(cluster, service.addr);
            }
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&envoy::bootstrap(&plugins, &options)?)?
        );
        return Ok(ExitCode::SUCCESS);
    }

    let binary = envoy::find_envoy(&repo)?;
    let upstream = DemoUpstream::start(options.upstream)
        .map_err(|e| format!("demo upstream cannot listen on {}: {e}", options.upstream))?;
    // The bound addresses: port 0 lets the kernel choose.
    options.upstream = upstream.addr();
    for service in &mut services {
        let running = service
            .declaration
            .service
            .start(service.addr, &service.config)
            .map_err(|e| {
                format!(
                    "{} for {}: {e}",
                    service.declaration.service.name(),
                    service.filter
                )
            })?;
        for cluster in &service.clusters {
            options = options.with_cluster(cluster, running.addr());
        }
        service.running = Some(running);
    }
    let redis = if args.redis {
        let redis = RedisThroughWebdis::start("local-envoy")?;
        options = options.with_cluster(WEBDIS_CLUSTER, redis.webdis_addr);
        Some(redis)
    } else {
        None
    };
    let bootstrap = envoy::bootstrap(&plugins, &options)?;
    let start = StartOptions {
        workdir: args
            .workdir
            .clone()
            .unwrap_or_else(|| envoy::target_dir().join("local-envoy")),
        concurrency: 2,
        // Envoy's own chatter at warning; the filters' logs (component `wasm`) at info.
        log_level: "warning".to_string(),
        component_log_level: Some("wasm:info".to_string()),
        log_to_file: false,
        startup_timeout: Duration::from_secs(60),
    };
    // Registered before Envoy starts, so a Ctrl-C during start still stops it cleanly.
    let (stop, stopped) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop.send(());
    })?;
    let mut proxy = RunningEnvoy::start(&binary, &bootstrap, &start)?;
    for service in services.iter().filter_map(|s| s.running.as_ref()) {
        for (name, contents) in service.files() {
            let file = start.workdir.join(name);
            std::fs::write(&file, contents)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        }
    }

    println!(
        "Envoy ({} via {}) is serving:",
        binary.program.display(),
        binary.found_by
    );
    println!(
        "  requests   http://{}  ->  demo upstream http://{}",
        proxy.listener(),
        upstream.addr()
    );
    println!(
        "  admin      http://{}  (/stats, /config_dump, /ready)",
        proxy.admin()
    );
    for service in &services {
        if let Some(running) = &service.running {
            println!(
                "  {:<10} {}  [{}]",
                service.declaration.service.name(),
                running.describe(),
                service.filter
            );
        }
    }
    if let Some(redis) = &redis {
        println!(
            "  webdis     http://{}  -> Redis 127.0.0.1:{}  [idempotency's store; data and logs in {}]",
            redis.webdis_addr,
            redis.redis_port,
            redis.dir.display()
        );
    }
    println!(
        "  bootstrap  {}  (path normalization {:?})",
        start.workdir.join("envoy.json").display(),
        args.path_normalization
    );
    println!("Filters, in chain order:");
    for plugin in &plugins {
        println!(
            "  {:<28} phase {:?}, priority {}, failure_policy {}",
            plugin.filter_name(),
            plugin.phase,
            plugin.priority,
            plugin.fail_strategy.envoy_failure_policy()
        );
    }
    // A filter may refuse requests until it has what it needs from its service (jwt-auth
    // answers 503 until it has fetched keys): hold the example requests back until Envoy
    // counts the filter's ready counter (bounded; Ctrl-C still works meanwhile). Not the
    // service's own count: a fetch Envoy abandoned (its config-validation VM's) may have
    // reached it too.
    let ready_counters: Vec<&str> = services
        .iter()
        .filter_map(|s| s.declaration.ready_counter)
        .collect();
    let mut examples_pending = true;
    if !ready_counters.is_empty() {
        println!(
            "Waiting for the filters to get what they need from the demo services ({})...",
            ready_counters.join(", ")
        );
    }
    let waiting_since = Instant::now();
    loop {
        if examples_pending {
            let missing: Vec<&str> = ready_counters
                .iter()
                .copied()
                .filter(|counter| !counted(&proxy, counter))
                .collect();
            if missing.is_empty() || waiting_since.elapsed() > READY_WAIT {
                examples_pending = false;
                if !missing.is_empty() {
                    println!(
                        "Still zero after {READY_WAIT:?}: {}; requests that need a demo service \
                         may fail until they count (see the wasm log lines above).",
                        missing.join(", ")
                    );
                }
                println!(
                    "Try: curl -i http://{}/healthz   (README: more requests to try)",
                    proxy.listener()
                );
                for service in services.iter().filter_map(|s| s.running.as_ref()) {
                    for line in service.examples(proxy.listener(), &start.workdir) {
                        println!("{line}");
                    }
                }
                println!("Ctrl-C to stop. Access log follows.");
            }
        }
        match stopped.recv_timeout(Duration::from_millis(200)) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                proxy.stop();
                println!("\nstopped Envoy and the demo servers");
                return Ok(ExitCode::SUCCESS);
            }
            Err(RecvTimeoutError::Timeout) if !proxy.is_running() => {
                let status = proxy.wait()?;
                return Err(
                    format!("Envoy exited on its own ({status}); see its output above").into(),
                );
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Whether Envoy's counter `name` (a filter's own, as it defined it) is above zero.
fn counted(proxy: &RunningEnvoy, name: &str) -> bool {
    proxy.stat(name).is_some_and(|value| value > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> WasmPlugin {
        envoy_runner::fixture::shipped(&[name]).remove(0)
    }

    #[test]
    fn only_filters_that_declare_a_demo_service_get_one_on_consecutive_ports() {
        let plugins = [shipped("banking-headers"), shipped("jwt-auth")];
        let planned = plan_services(&plugins, 8082).unwrap();
        let summary: Vec<(&str, &str, &[String], u16)> = planned
            .iter()
            .map(|p| {
                (
                    p.filter.as_str(),
                    p.declaration.service.name(),
                    p.clusters.as_slice(),
                    p.addr.port(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [(
                "jwt-auth",
                "idp",
                &["outbound|443||idp.bank.svc.cluster.local".to_string()][..],
                8082
            )]
        );

        let twice = [shipped("jwt-auth"), shipped("jwt-auth")];
        let ports = |first| -> Vec<u16> {
            plan_services(&twice, first)
                .unwrap()
                .iter()
                .map(|p| p.addr.port())
                .collect()
        };
        assert_eq!(ports(9000), [9000, 9001]);
        assert_eq!(ports(0), [0, 0]);
        assert!(plan_services(&twice, u16::MAX).is_err());
    }
}
