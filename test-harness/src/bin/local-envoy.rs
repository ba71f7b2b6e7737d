//! `make run`: the filters `make wasm` built, in a real Envoy configured from `wasmplugins/`,
//! in front of the demo upstream, on loopback ports, until Ctrl-C.
//!
//! `cargo run -p test-harness --bin local-envoy -- [options]`; `--help` lists them.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use test_harness::envoy::{
    self, BootstrapOptions, DemoUpstream, RunningEnvoy, StartOptions, WasmPlugin,
};

const USAGE: &str = "\
usage: local-envoy [--port 10000] [--admin-port 9901] [--upstream-port 8081]
                   [--plugins NAME,NAME] [--print-config]

Starts the demo upstream and Envoy on 127.0.0.1 with every WasmPlugin in wasmplugins/ whose
module `make wasm` has built (or only those named with --plugins), chained as istiod would.
--print-config prints the generated Envoy bootstrap and exits. Ctrl-C stops both.";

struct Args {
    port: u16,
    admin_port: u16,
    upstream_port: u16,
    plugins: Option<Vec<String>>,
    print_config: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut parsed = Args {
        port: 10000,
        admin_port: 9901,
        upstream_port: 8081,
        plugins: None,
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
    };
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
    let bootstrap = envoy::bootstrap(&plugins, &options)?;
    let start = StartOptions {
        workdir: envoy::target_dir(&repo).join("local-envoy"),
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
    println!(
        "Try: curl -i http://{}/healthz   (README: more requests to try)",
        proxy.listener()
    );
    println!("Ctrl-C to stop. Access log follows.");

    loop {
        match stopped.recv_timeout(Duration::from_millis(200)) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                proxy.stop();
                println!("\nstopped Envoy and the demo upstream");
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
