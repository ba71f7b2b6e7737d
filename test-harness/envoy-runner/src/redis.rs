//! A real Redis behind a real Webdis, on loopback, from the configuration files the project
//! ships (`deploy/idempotency-redis/redis.conf` and `webdis.json`): the idempotency filter's
//! shared store for `make run` and the end-to-end tests. Only the addresses, the password, the
//! data directory and the log file are changed; persistence and both ACLs are as shipped.
//!
//! `redis-server` and `webdis` are found on PATH (Debian packages of those names; `make redis`
//! installs them, and `make test` and `make run RUN_ARGS=--redis` run it). Both processes are
//! killed when this is dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::EnvoyError;

/// Where the shipped files are, from the repository root.
pub const DEPLOY_DIR: &str = "deploy/idempotency-redis";

/// The cluster the idempotency filter's Redis store is configured with wherever this project
/// runs it (tests, `make run`, bench), named as istiod names Webdis's Service in the
/// Kubernetes example.
pub const WEBDIS_CLUSTER: &str = "outbound|7379||webdis.payments.svc.cluster.local";

/// `plugin` (the idempotency WasmPlugin) with its store in Redis through [`WEBDIS_CLUSTER`],
/// each call within `timeout` (e.g. `"250ms"`).
pub fn with_redis_store(mut plugin: crate::WasmPlugin, timeout: &str) -> crate::WasmPlugin {
    if let Some(config) = plugin.plugin_config.as_mut() {
        config["store"] =
            serde_json::json!({"redis": {"cluster": WEBDIS_CLUSTER, "timeout": timeout}});
    }
    plugin
}

/// What Redis's only user (`default`, which Webdis logs in as) may do, after its password:
/// the filter's keys and Webdis's four commands. The Kubernetes example's StatefulSet passes
/// the same (a test compares them).
pub const REDIS_USER_RULES: &[&str] = &[
    "~banking:idempotency:*",
    "resetchannels",
    "-@all",
    "+set",
    "+psetex",
    "+get",
    "+del",
    "+ping",
];

/// Redis and Webdis, running.
pub struct RedisThroughWebdis {
    redis: Option<Child>,
    webdis: Child,
    /// Where Webdis answers HTTP: what the filter's Webdis cluster points at.
    pub webdis_addr: SocketAddr,
    pub redis_port: u16,
    /// Redis's data directory and both logs.
    pub dir: PathBuf,
}

fn free_port() -> Result<u16, EnvoyError> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn on_path(name: &str) -> Result<PathBuf, EnvoyError> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            EnvoyError(format!(
                "`{name}` is not on PATH: install the Debian packages redis-server and webdis \
                 (`make redis` does, as root with apt-get)"
            ))
        })
}

fn wait_for(addr: SocketAddr, what: &str, log: &Path) -> Result<(), EnvoyError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(EnvoyError(format!(
                "{what} did not listen on {addr} within 10 s:\n{log}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Consecutive answers from Redis through Webdis that make it ready: Webdis listens before
/// its connections to Redis are up, and answers 503 or 504 until they are (seen in CI:
/// one connection failed at start and the first request after got 504).
const READY_ANSWERS: usize = 16;

/// Waits until Webdis answers [`READY_ANSWERS`] reads in a row from Redis, each on its own
/// connection (so they spread over Webdis's threads and pooled connections).
fn wait_until_answering(webdis: SocketAddr, log: &Path) -> Result<(), EnvoyError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    let mut last = String::new();
    while in_a_row < READY_ANSWERS {
        let answer = crate::client::get(
            webdis,
            "/GET/banking:idempotency:ready-probe?type=application/octet-stream",
            Duration::from_secs(1),
        );
        match answer {
            // The probe key is never set: Redis answers nil, which Webdis gives as 404.
            Ok(response) if response.status == 404 => in_a_row += 1,
            Ok(response) => {
                in_a_row = 0;
                last = format!("status {}", response.status);
            }
            Err(e) => {
                in_a_row = 0;
                last = e.to_string();
            }
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(EnvoyError(format!(
                "Webdis did not answer from Redis within 10 s (last: {last}):\n{log}"
            )));
        }
        if in_a_row == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

impl RedisThroughWebdis {
    /// Starts Redis, then Webdis in front of it, under `target/redis-e2e/<label>/`, and waits
    /// until both listen and Webdis answers from Redis.
    pub fn start(label: &str) -> Result<RedisThroughWebdis, EnvoyError> {
        let (redis_server, webdis) = (on_path("redis-server")?, on_path("webdis")?);
        let shipped = crate::repo_root().join(DEPLOY_DIR);
        let dir = crate::target_dir().join("redis-e2e").join(label);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (redis_port, http_port) = (free_port()?, free_port()?);
        let password = format!("e2e-{}-{redis_port}", std::process::id());

        let redis_log = dir.join("redis.log");
        let redis = Command::new(redis_server)
            .arg(shipped.join("redis.conf"))
            .args(["--port", &redis_port.to_string()])
            .arg("--dir")
            .arg(&dir)
            .args(["--daemonize", "no", "--logfile", ""])
            // As the Kubernetes example declares it: the password, the filter's keys only,
            // Webdis's four commands.
            .args(["--user", "default", "on", &format!(">{password}")])
            .args(REDIS_USER_RULES)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&redis_log)?)
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut redis = Some(redis);
        let started = (|| {
            wait_for(
                SocketAddr::from(([127, 0, 0, 1], redis_port)),
                "Redis",
                &redis_log,
            )?;
            let mut config: Value =
                serde_json::from_str(&std::fs::read_to_string(shipped.join("webdis.json"))?)
                    .map_err(|e| EnvoyError(format!("{DEPLOY_DIR}/webdis.json: {e}")))?;
            config["redis_host"] = "127.0.0.1".into();
            config["redis_port"] = redis_port.into();
            config["redis_auth"] = password.clone().into();
            config["http_host"] = "127.0.0.1".into();
            config["http_port"] = http_port.into();
            config["daemonize"] = false.into();
            let webdis_log = dir.join("webdis.log");
            config["logfile"] = webdis_log.display().to_string().into();
            let config_path = dir.join("webdis.json");
            std::fs::write(&config_path, config.to_string())?;
            let child = Command::new(webdis)
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()?;
            let webdis_addr = SocketAddr::from(([127, 0, 0, 1], http_port));
            Ok::<_, EnvoyError>((child, webdis_addr, webdis_log))
        })();
        let (mut webdis, webdis_addr, webdis_log) = match started {
            Ok(started) => started,
            Err(e) => {
                kill(&mut redis);
                return Err(e);
            }
        };
        let ready = wait_for(webdis_addr, "Webdis", &webdis_log)
            .and_then(|()| wait_until_answering(webdis_addr, &webdis_log));
        if let Err(e) = ready {
            kill(&mut redis);
            let _ = webdis.kill();
            let _ = webdis.wait();
            return Err(e);
        }
        Ok(RedisThroughWebdis {
            redis,
            webdis,
            webdis_addr,
            redis_port,
            dir,
        })
    }

    /// Stops Redis and leaves Webdis running: Webdis then answers 503, as when Redis is down.
    pub fn stop_redis(&mut self) {
        kill(&mut self.redis);
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for RedisThroughWebdis {
    fn drop(&mut self) {
        let _ = self.webdis.kill();
        let _ = self.webdis.wait();
        kill(&mut self.redis);
    }
}
