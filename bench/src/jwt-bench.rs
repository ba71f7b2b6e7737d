//! `make bench`: what JWT validation costs in a real Envoy, jwt-auth against Envoy's native
//! `jwt_authn`, written to `bench/results.md`.
//!
//! One Envoy (`--concurrency 1`, so one worker and one VM per filter) with three listeners
//! that differ only in their HTTP filters: none; the jwt-auth `.wasm` configured from
//! `wasmplugins/jwt-auth.yaml` with its remote JWKS replaced by an inline one; and
//! `jwt_authn` with the same keys inline (`local_jwks`), copying the same claims to headers.
//! Every route answers with a `direct_response`, so no upstream is in the measurement.
//!
//! Tokens come from `demo_services::jwt_minter` (Python `cryptography`, as in the e2e tests): an RSA-2048 and a P-256 key, and per algorithm one token reused by every
//! request plus enough distinct tokens (twice jwt-auth's cache size by default) that the
//! verified-token cache cannot help when `wrk` rotates through them
//! (`bench/rotate-tokens.lua`).
//!
//! Per case: a sanity check (a valid token gets 200, a tampered one 401), a one-second warm-up
//! with the reused token, then `wrk -t1 -c8 -d5s` on loopback. Envoy's CPU time per request
//! is the change in utime+stime of the Envoy process (`/proc/<pid>/stat`) divided by the
//! requests `wrk` completed. Both are shown as ratios to `jwt_authn` on the same tokens.
//!
//! `cargo run -p bench --bin jwt-bench -- [--seconds 5] [--connections 8]
//! [--distinct N] [--out bench/results.md]`; needs `make wasm envoy jwt-minter` and `wrk`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use demo_services::jwt_minter;
use envoy_runner::{
    self as envoy, BootstrapOptions, RunningEnvoy, StartOptions, WasmPlugin, client,
};
use serde_json::{Value, json};

const USAGE: &str = "\
usage: jwt-bench [--seconds 5] [--connections 8] [--distinct N] [--out bench/results.md]

Runs Envoy with one worker and compares, with wrk on loopback: no filter, jwt-auth
(target/wasm32-wasip1/release/jwt_auth.wasm) and Envoy's jwt_authn, for RS256 and ES256, one
token reused and N distinct tokens (default: twice jwt-auth's cache size). Writes a markdown
report (default bench/results.md). Needs `make wasm envoy jwt-minter` and wrk.";

type BenchError = Box<dyn std::error::Error>;

/// The request every case sends: `GET /accounts` needs `accounts:read` under the WasmPlugin's
/// rules, so jwt-auth evaluates a scope rule too, as in production.
const PATH: &str = "/accounts";
const SCOPE: &str = "accounts:read payments:read";
/// Issuer, audience and cache size when the WasmPlugin does not say.
const DEFAULT_CACHE_ENTRIES: u64 = 1024;

struct Args {
    seconds: u32,
    connections: u32,
    distinct: Option<usize>,
    out: PathBuf,
}

fn parse_args(repo: &Path) -> Result<Args, String> {
    let mut parsed = Args {
        seconds: 5,
        connections: 8,
        distinct: None,
        out: repo.join("bench").join("results.md"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .ok_or(format!("{name} needs a positive whole number"))
        };
        match arg.as_str() {
            "--seconds" => parsed.seconds = number("--seconds")?.try_into().unwrap_or(u32::MAX),
            "--connections" => {
                parsed.connections = number("--connections")?.try_into().unwrap_or(u32::MAX)
            }
            "--distinct" => {
                parsed.distinct = Some(number("--distinct")?.try_into().unwrap_or(usize::MAX))
            }
            "--out" => {
                parsed.out = PathBuf::from(args.next().ok_or("--out needs a file name")?);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let repo = envoy::repo_root();
    let args = match parse_args(&repo) {
        Ok(args) => args,
        Err(problem) => {
            if !problem.is_empty() {
                eprintln!("jwt-bench: {problem}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&repo, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("jwt-bench: {problem}");
            ExitCode::FAILURE
        }
    }
}

/// The signing algorithms compared, with the key each is minted with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    const ALL: [Alg; 2] = [Alg::Rs256, Alg::Es256];

    fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    fn key_id(self) -> &'static str {
        match self {
            Alg::Rs256 => "rsa",
            Alg::Es256 => "ec",
        }
    }
}

/// Tokens of one algorithm: one reused by every request, and a file of distinct ones.
struct Tokens {
    reused: String,
    tampered: String,
    distinct_file: PathBuf,
}

/// Which HTTP filters a listener runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Filter {
    None,
    JwtAuth,
    Native,
    /// jwt_authn with its own verified-token cache (`jwt_cache_config`), as large as jwt-auth's.
    NativeCached,
}

impl Filter {
    fn listener_name(self) -> &'static str {
        match self {
            Filter::None => "no-filter",
            Filter::JwtAuth => "jwt-auth",
            Filter::Native => "jwt-authn",
            Filter::NativeCached => "jwt-authn-cached",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Filter::None => "no filter",
            Filter::JwtAuth => "jwt-auth (wasm)",
            Filter::Native => "jwt_authn (native)",
            Filter::NativeCached => "jwt_authn + jwt_cache",
        }
    }
}

struct Case {
    filter: Filter,
    alg: Alg,
    distinct: bool,
}

struct Measured {
    requests: u64,
    requests_per_second: f64,
    cpu_seconds: f64,
    cache_hits: Option<u64>,
    cache_misses: Option<u64>,
}

impl Measured {
    fn cpu_micros_per_request(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.requests.max(1) as f64
    }
}

fn run(repo: &Path, args: &Args) -> Result<(), BenchError> {
    // "wrk 4.1.0 [epoll] Copyright (C) 2012 Will Glozer"
    let wrk_version = tool_version("wrk", &["-v"])
        .filter(|v| v.starts_with("wrk"))
        .map(|v| v.split(" Copyright").next().unwrap_or_default().to_string())
        .ok_or("wrk not found: install it (Debian: apt-get install wrk)")?;
    let binary = envoy::find_envoy(repo)?;
    if !binary.leading_args.is_empty() {
        return Err(format!(
            "Envoy was found as `{} run`; the bench reads the CPU time of the Envoy process \
             itself, so set ENVOY to an envoy binary (or `make envoy`)",
            binary.program.display()
        )
        .into());
    }
    // "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    let envoy_version = command_output(binary.command().arg("--version"))
        .and_then(|v| Some(v.split_once("version:")?.1.trim().to_string()))
        .unwrap_or_else(|| "unknown".to_string());
    let wasm_dir = envoy::wasm_dir();
    let wasm_path = wasm_dir.join("jwt_auth.wasm");
    let wasm_bytes = std::fs::metadata(&wasm_path)
        .map_err(|e| format!("{}: {e}: run `make wasm`", wasm_path.display()))?
        .len();

    let plugins = envoy::load_wasmplugins(&repo.join("wasmplugins"))?;
    let plugin = envoy::only(&plugins, &["jwt-auth"])?
        .into_iter()
        .next()
        .ok_or("wasmplugins/ has no jwt-auth")?;
    let config = plugin
        .plugin_config
        .clone()
        .ok_or("wasmplugins/jwt-auth.yaml has no pluginConfig")?;
    let provider = config
        .pointer("/providers/0")
        .ok_or("jwt-auth pluginConfig has no providers[0]")?;
    let issuer = provider["issuer"]
        .as_str()
        .ok_or("providers[0].issuer is not a string")?
        .to_string();
    let audience = provider
        .pointer("/audiences/0")
        .and_then(Value::as_str)
        .ok_or("providers[0].audiences[0] is not a string")?
        .to_string();
    let cache_entries = config
        .pointer("/cache/maxEntries")
        .and_then(Value::as_f64)
        .map_or(DEFAULT_CACHE_ENTRIES, |n| n as u64);
    let distinct = args.distinct.unwrap_or_else(|| {
        usize::try_from(cache_entries.saturating_mul(2).max(1000)).unwrap_or(2048)
    });

    let workdir = envoy::target_dir().join("jwt-bench");
    std::fs::create_dir_all(&workdir)?;
    eprintln!(
        "jwt-bench: minting 2 x {} tokens with Python cryptography",
        distinct + 1
    );
    let (jwks, tokens) = mint_tokens(&workdir, &issuer, &audience, distinct)?;

    let bootstrap = bench_bootstrap(
        &plugin,
        &config,
        &Native {
            jwks: &jwks,
            issuer: &issuer,
            audience: &audience,
            cache_entries,
        },
        &wasm_dir,
    )?;
    let start = StartOptions {
        workdir: workdir.clone(),
        concurrency: 1,
        log_level: "warning".to_string(),
        component_log_level: None,
        log_to_file: true,
        startup_timeout: Duration::from_secs(120),
    };
    let proxy = RunningEnvoy::start(&binary, &bootstrap, &start)?;
    let listeners = listener_addresses(&proxy)?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let mut cases = vec![Case {
        filter: Filter::None,
        alg: Alg::Rs256,
        distinct: false,
    }];
    for alg in Alg::ALL {
        for filter in [Filter::Native, Filter::NativeCached, Filter::JwtAuth] {
            cases.push(Case {
                filter,
                alg,
                distinct: false,
            });
        }
        for filter in [Filter::Native, Filter::JwtAuth] {
            cases.push(Case {
                filter,
                alg,
                distinct: true,
            });
        }
    }

    let mut results = Vec::with_capacity(cases.len());
    for case in &cases {
        let address = *listeners
            .iter()
            .find(|(name, _)| name == case.filter.listener_name())
            .map(|(_, a)| a)
            .ok_or_else(|| format!("listener {} is not bound", case.filter.listener_name()))?;
        let tokens = tokens
            .iter()
            .find(|(alg, _)| *alg == case.alg)
            .map(|(_, t)| t)
            .ok_or("no tokens")?;
        sanity_check(case, address, tokens, &proxy)?;
        let measured = measure(case, address, tokens, args, &proxy)?;
        eprintln!(
            "jwt-bench: {:<20} {} {:<8} {:>9.0} req/s {:>8.1} us CPU/req",
            case.filter.label(),
            case.alg.name(),
            if case.distinct { "distinct" } else { "reused" },
            measured.requests_per_second,
            measured.cpu_micros_per_request()
        );
        results.push(measured);
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let log = proxy.log();
    drop(proxy);

    let report = report(&ReportInput {
        args,
        cases: &cases,
        results: &results,
        envoy_version: &envoy_version,
        wrk_version: &wrk_version,
        wasm_bytes,
        distinct,
        cache_entries,
        load: (&load_before, &load_after),
    });
    print!("{report}");
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, report)?;
    eprintln!("jwt-bench: wrote {}", args.out.display());
    if log.contains("][critical][") {
        eprintln!(
            "jwt-bench: Envoy logged critical errors, see {}",
            workdir.join("envoy.log").display()
        );
    }
    Ok(())
}

/// Mints the keys and tokens; returns the public JWKS and, per algorithm, its tokens.
fn mint_tokens(
    workdir: &Path,
    issuer: &str,
    audience: &str,
    distinct: usize,
) -> Result<(Value, Vec<(Alg, Tokens)>), BenchError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    // Within the WasmPlugin's maxLifetime (1h) and long enough for any run.
    let claims = |jti: &str| {
        json!({
            "iss": issuer, "aud": audience, "sub": format!("customer-{jti}"),
            "customer_id": format!("C-{jti}"), "scope": SCOPE, "jti": jti,
            "iat": now.saturating_sub(5), "exp": now + 1800,
        })
    };
    let mut specs = Vec::new();
    for alg in Alg::ALL {
        let key = alg.key_id();
        specs.push(json!({"id": format!("{key}-reused"), "key": key, "alg": alg.name(), "claims": claims("reused")}));
        specs.push(json!({"id": format!("{key}-tampered"), "key": key, "alg": alg.name(), "claims": claims("reused"), "tamper": true}));
        for i in 0..distinct {
            specs.push(json!({"id": format!("{key}-{i}"), "key": key, "alg": alg.name(), "claims": claims(&i.to_string())}));
        }
    }
    let request = json!({
        "keys": [
            {"id": "rsa", "kty": "RSA", "kid": "bench-rsa-1", "alg": "RS256"},
            {"id": "ec", "kty": "EC", "kid": "bench-ec-1", "alg": "ES256"}
        ],
        "tokens": specs,
    });
    let answer = jwt_minter::mint(&request)?;
    let minted = |id: &str| -> Result<String, BenchError> {
        Ok(answer["tokens"][id]
            .as_str()
            .ok_or_else(|| format!("the minter returned no token {id}"))?
            .to_string())
    };
    let mut tokens = Vec::new();
    for alg in Alg::ALL {
        let key = alg.key_id();
        let mut lines = String::new();
        for i in 0..distinct {
            lines.push_str(&minted(&format!("{key}-{i}"))?);
            lines.push('\n');
        }
        let distinct_file = workdir.join(format!("tokens-{}.txt", alg.name()));
        std::fs::write(&distinct_file, lines)?;
        tokens.push((
            alg,
            Tokens {
                reused: minted(&format!("{key}-reused"))?,
                tampered: minted(&format!("{key}-tampered"))?,
                distinct_file,
            },
        ));
    }
    Ok((answer["jwks"].clone(), tokens))
}

/// What the native jwt_authn listeners are configured with.
struct Native<'a> {
    jwks: &'a Value,
    issuer: &'a str,
    audience: &'a str,
    cache_entries: u64,
}

/// One bootstrap, four listeners: what `envoy::bootstrap` generates for no plugin, for the
/// jwt-auth WasmPlugin (inline JWKS), and for no plugin plus `jwt_authn` (without and with its
/// cache); every route a
/// `direct_response`.
fn bench_bootstrap(
    plugin: &WasmPlugin,
    config: &Value,
    native: &Native<'_>,
    wasm_dir: &Path,
) -> Result<Value, BenchError> {
    let jwks = native.jwks;
    // The WasmPlugin as written, except that every provider's keys are the bench's, inline.
    let mut config = config.clone();
    let providers = config
        .get_mut("providers")
        .and_then(Value::as_array_mut)
        .ok_or("jwt-auth pluginConfig.providers is not a list")?;
    for provider in providers.iter_mut() {
        let provider = provider
            .as_object_mut()
            .ok_or("a jwt-auth provider is not an object")?;
        provider.remove("remoteJwks");
        provider.insert("jwks".to_string(), jwks.clone());
    }
    let claim_headers: Vec<Value> = config
        .pointer("/outputs/claimHeaders")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|c| json!({"header_name": c["header"], "claim_name": c["claim"]}))
                .collect()
        })
        .unwrap_or_default();
    let mut jwt_auth = plugin.clone();
    jwt_auth.plugin_config = Some(config);

    let unused_upstream = SocketAddr::from(([127, 0, 0, 1], 9));
    let options = BootstrapOptions::ephemeral(unused_upstream, wasm_dir.to_path_buf());
    let mut listeners = Vec::new();
    let mut base = Value::Null;
    for filter in [
        Filter::None,
        Filter::JwtAuth,
        Filter::Native,
        Filter::NativeCached,
    ] {
        let plugins: Vec<WasmPlugin> = match filter {
            Filter::JwtAuth => vec![jwt_auth.clone()],
            _ => Vec::new(),
        };
        let mut generated = envoy::bootstrap(&plugins, &options)?;
        let mut listener = generated["static_resources"]["listeners"][0].take();
        listener["name"] = json!(filter.listener_name());
        let manager = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
        manager["route_config"]["virtual_hosts"][0]["routes"] = json!([{
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}
        }]);
        if matches!(filter, Filter::Native | Filter::NativeCached) {
            let mut provider = json!({
                "issuer": native.issuer,
                "audiences": [native.audience],
                "local_jwks": {"inline_string": jwks.to_string()},
                "forward": true,
                "claim_to_headers": claim_headers,
            });
            if filter == Filter::NativeCached {
                provider["jwt_cache_config"] = json!({"jwt_cache_size": native.cache_entries});
            }
            let jwt_authn = json!({
                "name": "envoy.filters.http.jwt_authn",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                    "providers": {"bank": provider},
                    "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bank"}}]
                }
            });
            manager["http_filters"]
                .as_array_mut()
                .ok_or("generated http_filters is not a list")?
                .insert(0, jwt_authn);
        }
        listeners.push(listener);
        base = generated;
    }
    base["static_resources"]["listeners"] = Value::Array(listeners);
    Ok(base)
}

/// The bound address of every listener, by name, from the admin interface.
fn listener_addresses(proxy: &RunningEnvoy) -> Result<Vec<(String, SocketAddr)>, BenchError> {
    let listeners = client::get(
        proxy.admin(),
        "/listeners?format=json",
        Duration::from_secs(5),
    )?;
    let listeners = listeners.json()?;
    let mut found = Vec::new();
    for status in listeners["listener_statuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = status["name"].as_str().unwrap_or_default().to_string();
        let address = &status["local_address"]["socket_address"];
        let ip: std::net::IpAddr = address["address"].as_str().unwrap_or("").parse()?;
        let port = u16::try_from(address["port_value"].as_u64().unwrap_or(0))?;
        found.push((name, SocketAddr::new(ip, port)));
    }
    Ok(found)
}

/// Refuses to measure a case that does not behave: a filter that let a tampered token
/// through, or refused a valid one, would make its numbers meaningless.
fn sanity_check(
    case: &Case,
    address: SocketAddr,
    tokens: &Tokens,
    proxy: &RunningEnvoy,
) -> Result<(), BenchError> {
    let status = |token: &str| -> Result<u16, BenchError> {
        let request =
            client::Request::get(PATH).header("authorization", &format!("Bearer {token}"));
        Ok(client::send(address, &request, Duration::from_secs(10))?.status)
    };
    let valid = status(&tokens.reused)?;
    let tampered = status(&tokens.tampered)?;
    let want_tampered = if case.filter == Filter::None {
        200
    } else {
        401
    };
    if valid != 200 || tampered != want_tampered {
        return Err(format!(
            "{} ({}): a valid token got {valid} (want 200), a tampered one {tampered} (want \
             {want_tampered}); not measuring a filter that misbehaves.\n{}",
            case.filter.label(),
            case.alg.name(),
            proxy.error_excerpt()
        )
        .into());
    }
    Ok(())
}

fn measure(
    case: &Case,
    address: SocketAddr,
    tokens: &Tokens,
    args: &Args,
    proxy: &RunningEnvoy,
) -> Result<Measured, BenchError> {
    let url = format!("http://{address}{PATH}");
    let auth = format!("authorization: Bearer {}", tokens.reused);
    let wrk = |seconds: u32, rotate: bool| -> Result<String, BenchError> {
        let mut command = Command::new("wrk");
        command
            .arg("-t1")
            .arg(format!("-c{}", args.connections))
            .arg(format!("-d{seconds}s"));
        if rotate {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("rotate-tokens.lua");
            command
                .arg("-s")
                .arg(script)
                .arg(&url)
                .arg("--")
                .arg(&tokens.distinct_file);
        } else {
            command.arg("-H").arg(&auth).arg(&url);
        }
        let output = command.stdin(Stdio::null()).output()?;
        if !output.status.success() {
            return Err(format!(
                "wrk failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    // Warm-up with the reused token only: a distinct token seen here could be a cache hit
    // in the measured run.
    wrk(1, false)?;
    let hits_before = proxy.stat("banking_jwt_auth_cache_hit");
    let misses_before = proxy.stat("banking_jwt_auth_cache_miss");
    let cpu_before = cpu_seconds(proxy.pid())?;
    let output = wrk(args.seconds, case.distinct)?;
    let cpu_after = cpu_seconds(proxy.pid())?;
    let requests: u64 = field_before(&output, " requests in")
        .ok_or_else(|| format!("cannot read wrk's request count from:\n{output}"))?;
    let requests_per_second: f64 = field_after(&output, "Requests/sec:")
        .ok_or_else(|| format!("cannot read wrk's Requests/sec from:\n{output}"))?;
    let failed: u64 = field_after(&output, "Non-2xx or 3xx responses:").unwrap_or(0);
    if output.contains("Socket errors") || failed > 0 {
        return Err(format!(
            "{} {} {}: {failed} non-2xx responses or socket errors, not a clean run:\n{output}",
            case.filter.label(),
            case.alg.name(),
            if case.distinct { "distinct" } else { "reused" },
        )
        .into());
    }
    let delta = |after: Option<u64>, before: Option<u64>| Some(after?.saturating_sub(before?));
    let (cache_hits, cache_misses) = if case.filter == Filter::JwtAuth {
        (
            delta(proxy.stat("banking_jwt_auth_cache_hit"), hits_before),
            delta(proxy.stat("banking_jwt_auth_cache_miss"), misses_before),
        )
    } else {
        (None, None)
    };
    Ok(Measured {
        requests,
        requests_per_second,
        cpu_seconds: cpu_after - cpu_before,
        cache_hits,
        cache_misses,
    })
}

/// utime + stime of the whole process (every thread), in seconds.
fn cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name, which may itself contain spaces.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, BenchError> {
        Ok(fields
            .get(i)
            .ok_or("short /proc stat line")?
            .parse::<u64>()? as f64)
    };
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    // SAFETY: sysconf has no preconditions and touches no memory of ours.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = if per_second > 0 {
        per_second as f64
    } else {
        100.0
    };
    Ok((ticks(11)? + ticks(12)?) / per_second)
}

/// The number just before `marker` on its line ("12345 requests in 5.00s").
fn field_before<T: std::str::FromStr>(text: &str, marker: &str) -> Option<T> {
    let line = text.lines().find(|l| l.contains(marker))?;
    line.split(marker)
        .next()?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The number just after `marker` on its line ("Requests/sec:  1234.56").
fn field_after<T: std::str::FromStr>(text: &str, marker: &str) -> Option<T> {
    let line = text.lines().find(|l| l.contains(marker))?;
    line.split(marker)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn command_output(command: &mut Command) -> Option<String> {
    let output = command.stdin(Stdio::null()).output().ok()?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Some(text)
}

fn tool_version(program: &str, args: &[&str]) -> Option<String> {
    let text = command_output(Command::new(program).args(args))?;
    text.lines().next().map(|l| l.trim().to_string())
}

struct ReportInput<'a> {
    args: &'a Args,
    cases: &'a [Case],
    results: &'a [Measured],
    envoy_version: &'a str,
    wrk_version: &'a str,
    wasm_bytes: u64,
    distinct: usize,
    cache_entries: u64,
    load: (&'a str, &'a str),
}

fn report(input: &ReportInput<'_>) -> String {
    let date = command_output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|d| d.trim().to_string())
        .unwrap_or_default();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = command_output(Command::new("uname").arg("-sr"))
        .map(|k| k.trim().to_string())
        .unwrap_or_default();
    let commit = command_output(Command::new("git").args(["rev-parse", "--short", "HEAD"]))
        .map(|c| c.trim().to_string())
        .unwrap_or_default();
    let local_changes =
        command_output(Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]))
            .is_some_and(|s| !s.trim().is_empty());
    let commit = if local_changes {
        format!("{commit} with local changes")
    } else {
        commit
    };
    let loadavg = |l: &str| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ");

    let native = |alg: Alg, distinct: bool| {
        input
            .cases
            .iter()
            .zip(input.results)
            .find(|(c, _)| c.filter == Filter::Native && c.alg == alg && c.distinct == distinct)
            .map(|(_, m)| m)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# `make bench`: jwt-auth against Envoy's native jwt_authn\n"
    );
    let _ = writeln!(
        out,
        "Generated by `make bench` (`bench/src/jwt-bench.rs`, whose module doc \
         describes the method). Numbers from one run on one machine: compare the ratios, \
         which come from the same run, rather than absolute values.\n"
    );
    let _ = writeln!(out, "- Date: {date}; commit {commit}");
    let _ = writeln!(
        out,
        "- Machine: {cpu_model}, {cores} cores, {kernel}; load average {} before, {} after",
        loadavg(input.load.0),
        loadavg(input.load.1)
    );
    let _ = writeln!(
        out,
        "- Envoy: {} (`--concurrency 1`, V8)",
        input.envoy_version
    );
    let _ = writeln!(
        out,
        "- Load: {} `-t1 -c{} -d{}s` on loopback, HTTP/1.1 keep-alive, `GET {PATH}` answered by a `direct_response`",
        input.wrk_version, input.args.connections, input.args.seconds
    );
    let _ = writeln!(
        out,
        "- jwt-auth: `jwt_auth.wasm` {} bytes, configured from `wasmplugins/jwt-auth.yaml` with an inline JWKS (cache {} entries); jwt_authn: `local_jwks` inline, the same claims copied to headers, no `jwt_cache_config`",
        input.wasm_bytes, input.cache_entries
    );
    let _ = writeln!(
        out,
        "- Tokens: RSA-2048 and P-256 keys; \"reused\" = one token on every request, \"distinct\" = {} tokens in rotation (more than the cache holds)\n",
        input.distinct
    );
    let _ = writeln!(
        out,
        "| filter | alg | tokens | req/s | req/s vs native | Envoy CPU µs/req | CPU vs native | jwt-auth cache hit / miss |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---|");
    for (case, m) in input.cases.iter().zip(input.results) {
        let base = native(case.alg, case.distinct);
        let ratio = |mine: f64, theirs: Option<f64>| match theirs {
            Some(t) if t > 0.0 => format!("{:.2}", mine / t),
            _ => "–".to_string(),
        };
        let tokens = match (case.filter, case.distinct) {
            (Filter::None, _) => "–",
            (_, false) => "reused",
            (_, true) => "distinct",
        };
        let alg = if case.filter == Filter::None {
            "–"
        } else {
            case.alg.name()
        };
        let cache = match (m.cache_hits, m.cache_misses) {
            (Some(h), Some(miss)) => format!("{h} / {miss}"),
            _ => "–".to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {alg} | {tokens} | {:.0} | {} | {:.1} | {} | {cache} |",
            case.filter.label(),
            m.requests_per_second,
            ratio(m.requests_per_second, base.map(|b| b.requests_per_second)),
            m.cpu_micros_per_request(),
            ratio(
                m.cpu_micros_per_request(),
                base.map(Measured::cpu_micros_per_request)
            ),
        );
    }
    let _ = writeln!(
        out,
        "\nRatios are against jwt_authn as Envoy configures it by default (no `jwt_cache_config`) \
         with the same algorithm and tokens; for \"no filter\", against jwt_authn RS256 reused. \
         req/s above 1 and CPU below 1 mean cheaper than native. Envoy CPU is the whole process \
         (worker, main thread, V8) per completed request. \"distinct\" rotates through more \
         tokens than jwt-auth's cache holds, so every request pays a signature check (the \
         hit / miss column shows it). On a shared machine CPU per request is steadier from run \
         to run than req/s, which also depends on how much CPU the worker got."
    );
    out
}
