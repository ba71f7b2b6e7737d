//! The demo upstream on its own: answers every request with a JSON echo of what reached it.
//!
//! `cargo run -p demo-services --bin demo-upstream -- [--port 8081]`; stops on Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use demo_services::DemoUpstream;

const USAGE: &str = "usage: demo-upstream [--port PORT]   (default 8081, loopback only)";

fn main() -> ExitCode {
    let mut port: u16 = 8081;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().map(|v| v.parse::<u16>())) {
            ("--port", Some(Ok(value))) => port = value,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let upstream = match DemoUpstream::start(SocketAddr::from(([127, 0, 0, 1], port))) {
        Ok(upstream) => upstream,
        Err(e) => {
            eprintln!("demo-upstream: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stop, stopped) = std::sync::mpsc::channel();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = stop.send(());
    }) {
        eprintln!("demo-upstream: cannot handle Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "demo upstream on http://{} (Ctrl-C to stop)",
        upstream.addr()
    );
    let _ = stopped.recv();
    ExitCode::SUCCESS
}
