//! `make run` itself: the `local-envoy` program serves through Envoy until interrupted, then
//! stops Envoy and the demo upstream with it.
//!
//! Runs the real binary on kernel-chosen loopback ports (`--port 0` and friends) so it never
//! collides with a `make run` in another terminal. Bounded: a few requests, and every wait has a
//! deadline.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use envoy_runner::{self as envoy, client};

/// A running `local-envoy` and the lines of its banner as it prints them; killed if the test
/// fails before it could stop it.
struct Program {
    child: Child,
    banner: mpsc::Receiver<String>,
    stderr: ChildStderr,
}

impl Program {
    /// Starts `local-envoy` with every port kernel-chosen, a workdir of the test's own, and
    /// `args`.
    fn start(test: &str, args: &[&str]) -> Program {
        let mut child = Command::new(env!("CARGO_BIN_EXE_local-envoy"))
            .args(["--port", "0", "--admin-port", "0", "--upstream-port", "0"])
            .args(args)
            .arg("--workdir")
            .arg(workdir(test))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start local-envoy");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (lines, banner) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        Program {
            child,
            banner,
            stderr,
        }
    }

    /// Hands banner lines to `read` until it says it has all it needs; fails the test with
    /// the program's stderr if that takes longer than `within`.
    fn read_banner(&mut self, what: &str, within: Duration, mut read: impl FnMut(&str) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.banner.recv_timeout(left) else {
                let _ = self.child.kill();
                let mut errors = String::new();
                let _ = self.stderr.read_to_string(&mut errors);
                panic!("local-envoy printed no {what} within {within:?}; stderr:\n{errors}");
            };
            if read(&line) {
                return;
            }
        }
    }

    /// Ctrl-C: the program must exit cleanly within 15 s.
    fn stop_with_ctrl_c(&mut self) {
        interrupt(&self.child);
        let stop_deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for local-envoy") {
                break status;
            }
            assert!(
                Instant::now() < stop_deadline,
                "local-envoy did not stop within 15 s of Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "local-envoy exited with {status} on Ctrl-C"
        );
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            interrupt(&self.child);
            std::thread::sleep(Duration::from_secs(1));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn interrupt(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) on our own child, not yet reaped; no memory is involved.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
}

/// Each run's own bootstrap, admin-address file and demo token: two local-envoy runs sharing
/// the default `target/local-envoy` would read each other's admin address.
fn workdir(test: &str) -> std::path::PathBuf {
    envoy::target_dir().join("envoy-e2e").join(test)
}

/// The address after `label` on the banner line that starts with it, e.g. `requests   http://`.
fn address_after(line: &str, label: &str) -> Option<SocketAddr> {
    let rest = line
        .trim_start()
        .strip_prefix(label)?
        .trim_start()
        .strip_prefix("http://")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn local_envoy_serves_until_interrupted_then_stops_envoy() {
    let mut program = Program::start(
        "local_envoy_serves_until_interrupted_then_stops_envoy",
        &["--plugins", "banking-headers"],
    );
    let (mut listener, mut admin) = (None, None);
    program.read_banner("banner", Duration::from_secs(60), |line| {
        listener = listener.or_else(|| address_after(line, "requests"));
        admin = admin.or_else(|| address_after(line, "admin"));
        listener.is_some() && admin.is_some()
    });
    let (listener, admin) = (listener.unwrap(), admin.unwrap());

    let response = client::get(listener, "/healthz", Duration::from_secs(10))
        .expect("request through local Envoy");
    assert_eq!(
        response.status,
        200,
        "GET /healthz through local Envoy: {}",
        response.body_text()
    );

    program.stop_with_ctrl_c();
    for (what, addr) in [("Envoy's listener", listener), ("Envoy's admin", admin)] {
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "{what} at {addr} still accepts connections after Ctrl-C: Envoy was left running"
        );
    }
}

/// The token in the banner's `-H 'authorization: Bearer <token>'` line.
fn bearer_token_in(line: &str) -> Option<String> {
    let rest = line.split("authorization: Bearer ").nth(1)?;
    let token = rest.split('\'').next()?;
    (token.split('.').count() == 3).then(|| token.to_string())
}

#[test]
fn local_envoy_with_jwt_auth_accepts_the_demo_token_it_prints() {
    let mut program = Program::start(
        "local_envoy_with_jwt_auth_accepts_the_demo_token_it_prints",
        &["--demo-port", "0", "--plugins", "banking-headers,jwt-auth"],
    );
    // The demo request is printed once the plugin has fetched the demo JWKS.
    let (mut listener, mut token) = (None, None);
    program.read_banner("demo token", Duration::from_secs(90), |line| {
        listener = listener.or_else(|| address_after(line, "requests"));
        if token.is_none() {
            token = bearer_token_in(line);
        }
        listener.is_some() && token.is_some()
    });
    let (listener, token) = (listener.unwrap(), token.unwrap());

    let payment = client::Request::post("/payments")
        .header("authorization", &format!("Bearer {token}"))
        .header("x-customer-id", "CUST-00012345")
        .header("x-transaction-id", "0f8fad5b-d9cb-469f-a165-70867728950e")
        .header("x-banking-operation", "payment.create");
    // Each worker installs the fetched keys on its next tick (1 s): a 503 may precede them.
    let mut response = None;
    for _ in 0..10 {
        let answer =
            client::send(listener, &payment, Duration::from_secs(10)).expect("demo payment");
        if answer.status != 503 {
            response = Some(answer);
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let response = response.expect("jwt-auth still without keys after 10 tries");
    assert_eq!(
        response.status,
        200,
        "the printed demo request: {}",
        response.body_text()
    );
    let echoed = response.json().expect("upstream echo");
    let claim_header = echoed["headers"]
        .as_array()
        .expect("echoed headers")
        .iter()
        .find(|h| h["name"] == "x-jwt-claim-customer-id")
        .map(|h| h["value"].clone());
    assert_eq!(claim_header, Some(serde_json::json!("CUST-00012345")));

    let mut anonymous = payment.clone();
    anonymous
        .headers
        .retain(|(name, _)| name != "authorization");
    let refused = client::send(listener, &anonymous, Duration::from_secs(10)).expect("anonymous");
    assert_eq!(refused.status, 401, "{}", refused.body_text());

    program.stop_with_ctrl_c();
}

/// The README's rate-limit loop: with every shipped plugin, the demo customer's fourth
/// payment at once gets 429, and each answer carries the `RateLimit` field the README shows.
#[test]
fn local_envoy_limits_the_demo_customer_as_the_readme_shows() {
    let mut program = Program::start(
        "local_envoy_limits_the_demo_customer_as_the_readme_shows",
        &["--demo-port", "0"],
    );
    let (mut listener, mut token) = (None, None);
    program.read_banner("demo token", Duration::from_secs(90), |line| {
        listener = listener.or_else(|| address_after(line, "requests"));
        if token.is_none() {
            token = bearer_token_in(line);
        }
        listener.is_some() && token.is_some()
    });
    let (listener, token) = (listener.unwrap(), token.unwrap());
    let payment = |n: usize| {
        client::Request::post("/payments")
            .header("authorization", &format!("Bearer {token}"))
            .header("x-customer-id", "CUST-00012345")
            .header("x-transaction-id", "0f8fad5b-d9cb-469f-a165-70867728950e")
            .header("x-banking-operation", "payment.create")
            .header("idempotency-key", &format!("\"readme-loop-{n}\""))
    };
    // jwt-auth answers 503 until its keys arrive, before rate-limit charges anything.
    let mut answers = Vec::new();
    for n in 0..14 {
        let answer = client::send(listener, &payment(n), Duration::from_secs(10)).expect("payment");
        if answer.status == 503 {
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        answers.push(answer);
        if answers.len() == 4 {
            break;
        }
    }
    let seen: Vec<(u16, Option<&str>)> = answers
        .iter()
        .map(|a| (a.status, a.header_str("ratelimit")))
        .collect();
    assert_eq!(
        seen,
        [
            (200, Some("\"payment_create\";r=2;t=6")),
            (200, Some("\"payment_create\";r=1;t=12")),
            (200, Some("\"payment_create\";r=0;t=18")),
            (429, Some("\"payment_create\";r=0;t=18")),
        ]
    );
    assert_eq!(answers[3].header_str("retry-after"), Some("6"));
    program.stop_with_ctrl_c();
}
