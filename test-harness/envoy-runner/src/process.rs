//! Runs Envoy as a child process: writes the bootstrap, starts it, waits until it serves, and
//! stops it when dropped, so a failing test never leaves an Envoy behind.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::EnvoyError;
use crate::client;
use crate::locate::EnvoyBinary;

/// How to run Envoy.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Holds `envoy.json` (the bootstrap), `admin-address`, and `envoy.log` when logging to a
    /// file. Emptied of those files at start.
    pub workdir: PathBuf,
    /// Worker threads (`--concurrency`); each runs its own VM per plugin.
    pub concurrency: u32,
    /// `--log-level`.
    pub log_level: String,
    /// `--component-log-level`, e.g. `wasm:info` to show the filters' logs at a quieter level.
    pub component_log_level: Option<String>,
    /// Log to `workdir/envoy.log` (tests) rather than to this process's stderr (`make run`).
    pub log_to_file: bool,
    /// How long Envoy may take to become ready (V8 compiles each module at start).
    pub startup_timeout: Duration,
}

impl StartOptions {
    /// One worker, logs in `target/envoy-e2e/<label>/envoy.log`, where a failing test can be
    /// diagnosed after the fact.
    pub fn for_test(label: &str) -> Self {
        StartOptions {
            workdir: crate::target_dir().join("envoy-e2e").join(label),
            concurrency: 1,
            log_level: "info".to_string(),
            component_log_level: None,
            log_to_file: true,
            startup_timeout: Duration::from_secs(60),
        }
    }
}

/// A started, ready Envoy. Dropping it stops Envoy.
pub struct RunningEnvoy {
    child: Child,
    admin: SocketAddr,
    listener: SocketAddr,
    log_path: Option<PathBuf>,
}

impl RunningEnvoy {
    /// Starts Envoy with `bootstrap` and waits until its admin says ready and its listener is
    /// bound. On failure the error carries Envoy's own error lines.
    pub fn start(
        binary: &EnvoyBinary,
        bootstrap: &Value,
        options: &StartOptions,
    ) -> Result<RunningEnvoy, EnvoyError> {
        let dir = &options.workdir;
        std::fs::create_dir_all(dir)
            .map_err(|e| EnvoyError(format!("cannot create {}: {e}", dir.display())))?;
        let config_path = dir.join("envoy.json");
        let admin_path = dir.join("admin-address");
        let log_path = dir.join("envoy.log");
        for stale in [&admin_path, &log_path] {
            let _ = std::fs::remove_file(stale);
        }
        let pretty =
            serde_json::to_string_pretty(bootstrap).map_err(|e| EnvoyError(e.to_string()))?;
        std::fs::write(&config_path, pretty)?;

        let mut command = binary.command();
        command
            .arg("--config-path")
            .arg(&config_path)
            // Several Envoys may run at once (parallel tests); hot restart would make them share
            // one shared-memory region and refuse to start.
            .arg("--disable-hot-restart")
            .arg("--concurrency")
            .arg(options.concurrency.to_string())
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--log-level")
            .arg(&options.log_level)
            .stdin(Stdio::null());
        if let Some(levels) = &options.component_log_level {
            command.arg("--component-log-level").arg(levels);
        }
        if options.log_to_file {
            command.arg("--log-path").arg(&log_path);
            command.stdout(File::create(dir.join("stdout.log"))?);
        }
        let child = command.spawn().map_err(|e| {
            EnvoyError(format!(
                "cannot start {} ({}): {e}",
                binary.program.display(),
                binary.found_by
            ))
        })?;

        let mut envoy = RunningEnvoy {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path: options.log_to_file.then_some(log_path),
        };
        envoy.wait_ready(&admin_path, options.startup_timeout)?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_path: &Path, timeout: Duration) -> Result<(), EnvoyError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(EnvoyError(format!(
                    "Envoy exited during start ({status}).\n{}",
                    self.error_excerpt()
                )));
            }
            if let Some(admin) = read_admin_address(admin_path) {
                self.admin = admin;
                if let Ok(listener) = self.ready_listener() {
                    self.listener = listener;
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EnvoyError(format!(
            "Envoy was not ready within {timeout:?}.\n{}",
            self.error_excerpt()
        )))
    }

    fn ready_listener(&self) -> Result<SocketAddr, EnvoyError> {
        let timeout = Duration::from_secs(2);
        let ready = client::get(self.admin, "/ready", timeout)?;
        if ready.status != 200 {
            return Err(EnvoyError(format!("not ready: {}", ready.body_text())));
        }
        let listeners = client::get(self.admin, "/listeners?format=json", timeout)?;
        let listeners = listeners.json().map_err(|e| EnvoyError(e.to_string()))?;
        let address = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
        let ip = address["address"].as_str().and_then(|ip| ip.parse().ok());
        let port = address["port_value"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        match (ip, port) {
            (Some(ip), Some(port)) => Ok(SocketAddr::new(ip, port)),
            _ => Err(EnvoyError(format!("listener not bound yet: {listeners}"))),
        }
    }

    /// The HTTP listener's bound address.
    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    /// The admin interface's bound address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The process id of what was started: Envoy itself, unless it runs through `func-e`,
    /// whose Envoy is a child of this process. `make bench` reads its CPU time from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Envoy's log so far (empty when logging to stderr).
    pub fn log(&self) -> String {
        self.log_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Where Envoy logs, when logging to a file.
    pub fn log_path(&self) -> Option<&Path> {
        self.log_path.as_deref()
    }

    /// Every counter and gauge from the admin `/stats`, by name. Metrics a filter defines
    /// appear as `wasmcustom.<name>`.
    pub fn stats(&self) -> Result<Vec<(String, u64)>, EnvoyError> {
        let stats = client::get(self.admin, "/stats", Duration::from_secs(5))?;
        Ok(stats
            .body_text()
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// One counter or gauge, looked up as named and as `wasmcustom.<name>` (a filter's own).
    pub fn stat(&self, name: &str) -> Option<u64> {
        let custom = format!("wasmcustom.{name}");
        self.stats()
            .ok()?
            .into_iter()
            .find(|(n, _)| *n == name || *n == custom)
            .map(|(_, v)| v)
    }

    /// Whether Envoy is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for Envoy to exit on its own.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }

    /// Asks Envoy to exit (SIGTERM), and kills it if it has not within a few seconds.
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        terminate(&self.child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The lines of Envoy's log that explain a failure (errors first), for error messages.
    pub fn error_excerpt(&self) -> String {
        let Some(path) = &self.log_path else {
            return "See Envoy's output above.".to_string();
        };
        let log = self.log();
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("][error][") || l.contains("][critical]["))
            .take(20)
            .collect();
        let lines: Vec<&str> = if errors.is_empty() {
            let all: Vec<&str> = log.lines().collect();
            all[all.len().saturating_sub(20)..].to_vec()
        } else {
            errors
        };
        format!("Envoy log {}:\n{}", path.display(), lines.join("\n"))
    }
}

impl Drop for RunningEnvoy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_admin_address(path: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// SIGTERM lets `func-e` pass the stop on to the Envoy it started; a SIGKILL would orphan it.
#[cfg(unix)]
fn terminate(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on a pid we spawned and have not reaped yet; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

#[cfg(not(unix))]
fn terminate(_child: &Child) {}
