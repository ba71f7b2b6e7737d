//! `make run`: the filters `make wasm` built, in a real Envoy configured from `wasmplugins/`,
//! in front of the demo upstream, on loopback ports, until Ctrl-C.
//!
//! When a plugin fetches a remote JWKS (jwt-auth), a demo identity provider stands in for
//! the real one, offline: its JWKS is served on `--idp-port` and the plugin's Istio-named
//! cluster points there; the banner prints a curl command with a demo token the example
//! routes accept (see `test_harness::envoy::demo_idp`).
//!
//! `cargo run -p test-harness --bin local-envoy -- [options]`; `--help` lists them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use test_harness::envoy::demo_idp::{self, DemoIdentityProvider, RemoteJwksProvider};
use test_harness::envoy::{
    self, BootstrapOptions, DemoUpstream, RunningEnvoy, StartOptions, WasmPlugin,
};

/// How long the banner waits for the plugin's first JWKS fetch before printing the demo
/// request anyway.
const KEYS_WAIT: Duration = Duration::from_secs(30);

const USAGE: &str = "\
usage: local-envoy [--port 10000] [--admin-port 9901] [--upstream-port 8081]
                   [--idp-port 8082] [--plugins NAME,NAME] [--workdir DIR] [--print-config]

Starts the demo upstream and Envoy on 127.0.0.1 with every WasmPlugin in wasmplugins/ whose
module `make wasm` has built (or only those named with --plugins), chained as istiod would.
When a plugin fetches a remote JWKS (jwt-auth), a demo identity provider serves it on
--idp-port and a demo token is printed (and written to target/local-envoy/demo-token).
--workdir (default target/local-envoy) holds the bootstrap, the demo token and Envoy's admin
address; give each local-envoy run at the same time its own. --print-config prints the
generated Envoy bootstrap and exits. Ctrl-C stops them all.";

struct Args {
    port: u16,
    admin_port: u16,
    upstream_port: u16,
    idp_port: u16,
    plugins: Option<Vec<String>>,
    workdir: Option<PathBuf>,
    print_config: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut parsed = Args {
        port: 10000,
        admin_port: 9901,
        upstream_port: 8081,
        idp_port: 8082,
        plugins: None,
        workdir: None,
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
            "--idp-port" => parsed.idp_port = port("--idp-port")?,
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
            "--print-config" => parsed.print_config = true,
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

fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let repo = envoy::repo_root();
    let wasm_dir = envoy::wasm_dir(&repo);
    let all = envoy::load_wasmplugins(&repo.join("wasmplugins"))?;
    let plugins: Vec<WasmPlugin> = match &args.plugins {
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

    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut options = BootstrapOptions {
        listener: loopback(args.port),
        admin: loopback(args.admin_port),
        upstream: loopback(args.upstream_port),
        wasm_dir,
        access_log: true,
        clusters: Vec::new(),
    };
    // Every cluster a plugin fetches keys from leads to the one demo identity provider.
    let remote_jwks = demo_idp::remote_jwks_providers(&plugins);
    let idp_address = loopback(args.idp_port);
    for cluster in distinct_clusters(&remote_jwks) {
        options = options.with_cluster(&cluster, idp_address);
    }
    if args.print_config {
        println!(
            "{}",
            serde_json::to_string_pretty(&envoy::bootstrap(&plugins, &options)?)?
        );
        return Ok(ExitCode::SUCCESS);
    }

    let binary = envoy::find_envoy(&repo)?;
    let upstream = DemoUpstream::start(options.upstream)
        .map_err(|e| format!("demo upstream cannot listen on {}: {e}", options.upstream))?;
    // The bound address: --upstream-port 0 lets the kernel choose.
    options.upstream = upstream.addr();
    let idp = match remote_jwks.first() {
        None => None,
        Some(provider) => {
            let plugin = plugins
                .iter()
                .find(|p| p.name == provider.plugin)
                .ok_or("the provider's plugin vanished")?;
            let idp =
                DemoIdentityProvider::start(idp_address, provider, demo_idp::demo_claims(plugin))?;
            for cluster in &mut options.clusters {
                cluster.address = idp.addr();
            }
            Some(idp)
        }
    };
    let bootstrap = envoy::bootstrap(&plugins, &options)?;
    let start = StartOptions {
        workdir: args
            .workdir
            .clone()
            .unwrap_or_else(|| envoy::target_dir(&repo).join("local-envoy")),
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
    let token_file = start.workdir.join("demo-token");
    if let Some(idp) = &idp {
        std::fs::write(&token_file, format!("{}\n", idp.token()))
            .map_err(|e| format!("cannot write {}: {e}", token_file.display()))?;
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
    if let Some(idp) = &idp {
        println!(
            "  idp        http://{}{}  (demo JWKS for {}, as cluster {})",
            idp.addr(),
            idp.provider().path,
            idp.provider().issuer,
            idp.provider().cluster
        );
    }
    println!(
        "  bootstrap  {}",
        start.workdir.join("envoy.json").display()
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
    if idp.is_none() {
        println!(
            "Try: curl -i http://{}/healthz   (README: more requests to try)",
            proxy.listener()
        );
        println!("Ctrl-C to stop. Access log follows.");
    }
    // Until the plugin has its keys, tokens get 503: hold the curl lines back until Envoy
    // counts a good JWKS fetch (bounded; Ctrl-C still works meanwhile). Not the server's own
    // count: a fetch Envoy abandoned (its config-validation VM's) may have reached it too.
    let mut keys_pending = idp.is_some();
    if keys_pending {
        println!("Waiting for the plugin to fetch the demo JWKS...");
    }
    let waiting_since = Instant::now();
    loop {
        if keys_pending
            && let Some(idp) = &idp
            && let fetched = jwks_fetched(&proxy)
            && (fetched || waiting_since.elapsed() > KEYS_WAIT)
        {
            keys_pending = false;
            if !fetched {
                println!(
                    "The plugin has not fetched the demo JWKS within {KEYS_WAIT:?}: tokens get 503 \
                     until it does (see the wasm log lines above)."
                );
            }
            println!(
                "Try: curl -i http://{}/healthz   (README: more requests to try)",
                proxy.listener()
            );
            print_demo_request(idp, proxy.listener(), &token_file);
            println!("Ctrl-C to stop. Access log follows.");
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

/// Whether a filter's `*_jwks_fetch_ok` counter (jwt-auth's `banking_jwt_auth_jwks_fetch_ok`)
/// has counted a fetch.
fn jwks_fetched(proxy: &RunningEnvoy) -> bool {
    proxy.stats().is_ok_and(|stats| {
        stats
            .iter()
            .any(|(name, value)| name.ends_with("_jwks_fetch_ok") && *value > 0)
    })
}

fn distinct_clusters(providers: &[RemoteJwksProvider]) -> Vec<String> {
    let mut clusters: Vec<String> = providers.iter().map(|p| p.cluster.clone()).collect();
    clusters.sort();
    clusters.dedup();
    clusters
}

/// A payment any example route accepts: the demo token plus the banking headers.
fn print_demo_request(idp: &DemoIdentityProvider, listener: SocketAddr, token_file: &Path) {
    let claims = idp.claims();
    let claim = |name: &str| claims.get(name).and_then(|v| v.as_str()).unwrap_or("-");
    println!(
        "Demo token: ES256 kid {}, valid {} min, sub {}, customer_id {}, scope \"{}\"; also in {}",
        idp.kid(),
        demo_idp::DEMO_TOKEN_LIFETIME_SECS / 60,
        claim("sub"),
        claim("customer_id"),
        claim("scope"),
        token_file.display()
    );
    println!("  curl -i -X POST http://{listener}/payments \\");
    println!("    -H 'authorization: Bearer {}' \\", idp.token());
    println!("    -H 'x-customer-id: {}' \\", demo_idp::DEMO_CUSTOMER_ID);
    println!("    -H 'x-transaction-id: 0f8fad5b-d9cb-469f-a165-70867728950e' \\");
    println!("    -H 'x-banking-operation: payment.create'");
}
