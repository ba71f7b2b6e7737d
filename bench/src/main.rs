//! `make bench`: what each of our filters and the suite cost in a real Envoy, against Envoy's
//! own filters doing the closest equivalent, written to `bench/results.md`.
//!
//! The rows are the table in [`scenarios`]: a chain of filters, the tokens its requests carry,
//! and the row it is compared with. Every row gets its own Envoy (so its memory is its own),
//! built by [`chain`] from what istiod would generate for our WasmPlugins plus the row's
//! native filters, with a `direct_response` route (no upstream in the measurement).
//!
//! Method, per `--concurrency` level (1 and 2 by default):
//! - Envoy runs on CPU 0 at concurrency 1 and on CPUs 0-1 at concurrency 2; the load
//!   generator ([`load`], this process) on CPU 1. Pinning is inherited: this thread pins
//!   itself to Envoy's CPUs while it starts the Envoys, then to the generator's.
//! - Before measuring, each row answers probes ([`scenarios::Probe`]) as its filters should,
//!   then gets `--warm-up` seconds of load.
//! - `--rounds` rounds; in each, every row in turn gets a quarter second of load, then a
//!   `--seconds` window that is measured; odd rounds run the rows in reverse order, so drift
//!   over the run hits every row alike. The load is a fixed `--rate` (open loop, latency from
//!   the scheduled send time) over `--connections` keep-alive HTTP/1.1 connections.
//! - Per window: Envoy's CPU time (all threads) over the responses completed in it, and the
//!   latency of each request scheduled in it. A row reports the median and range of its
//!   rounds' CPU per request, and p50 and p99 of all its latencies, with what it adds over the
//!   no-filter row.
//! - Envoy's RSS (`VmRSS`) when ready, after the warm-up, at the end, and after `--soak`
//!   seconds more of load per row when asked.
//!
//! `cargo run -p bench -- --help` lists the options; `make bench` builds the modules first.

mod chain;
mod load;
mod mix;
mod native;
mod procfs;
mod report;
mod scenarios;
mod tokens;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use envoy_runner::{self as envoy, RunningEnvoy, StartOptions, client};
use serde_json::Value;

use crate::load::{Edge, Plan, Requests};
use crate::mix::Mix;
use crate::native::Inputs;
use crate::procfs::CpuClock;
use crate::scenarios::{CacheStats, Keys, Load, NO_FILTER, Probe, Rate, Scenario, TokenUse};
use crate::tokens::{Alg, Tokens};

type BenchError = Box<dyn std::error::Error>;

const USAGE: &str = "\
usage: bench [--rate 3000] [--light-rate 500] [--seconds 1.25] [--rounds 7] [--warm-up 1]
             [--connections 8] [--concurrency 1,2] [--soak SECONDS] [--only NAME]...
             [--distinct N] [--out bench/results.md] [--list]

Measures every row of bench/src/scenarios.rs (our filters, the suite, their native
equivalents, a no-filter row and the no-op wasm floor), each in its own Envoy, at a fixed
request rate, alternating rows over rounds; writes a markdown report.

  --rate N          requests per second offered to each row (default 3000)
  --light-rate N    the same for rows marked Rate::Light, distinct and mixed tokens
                    (default 500)
  --seconds S       measured window per row and round (default 1.25)
  --rounds N        rounds (default 7)
  --warm-up S       load per row before the first round (default 1)
  --connections N   keep-alive connections (default 8)
  --concurrency L   Envoy worker counts to run, e.g. 1 or 1,2 (default 1,2)
  --soak S          after the rounds, S more seconds of load per row, then RSS again
  --only NAME       rows whose name contains NAME (repeatable); their yardsticks and the
                    no-filter row come along
  --distinct N      distinct tokens per algorithm (default 4 x jwt-auth's cache size); the
                    mixed rows' pool is sized from their rate and the run's length
  --out FILE        the report (default bench/results.md)
  --list            print the rows and exit

Needs `make wasm envoy jwt-minter` (make bench runs them).";

/// The request every row sends: `GET /accounts`, which jwt-auth's rules give a scope check and
/// banking-headers' an operation check.
const PATH: &str = "/accounts";
const TRANSACTION_ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const OPERATION: &str = "account.read";
/// A well-formed customer id that is not the tokens' customer.
const OTHER_CUSTOMER_ID: &str = "CUST-00099999";
/// Load before each measured window, so a row that sat idle is running again.
const LEAD_IN: Duration = Duration::from_millis(250);
/// jwt-auth's cache size when its WasmPlugin does not say.
const DEFAULT_CACHE_ENTRIES: u64 = 1024;

struct Args {
    rate: f64,
    light_rate: f64,
    seconds: f64,
    rounds: u32,
    warm_up: f64,
    connections: usize,
    concurrency: Vec<u32>,
    soak: f64,
    only: Vec<String>,
    distinct: Option<usize>,
    out: PathBuf,
    list: bool,
}

fn parse_args(repo: &Path) -> Result<Args, String> {
    let mut parsed = Args {
        rate: 3000.0,
        light_rate: 500.0,
        seconds: 1.25,
        rounds: 7,
        warm_up: 1.0,
        connections: 8,
        concurrency: vec![1, 2],
        soak: 0.0,
        only: Vec::new(),
        distinct: None,
        out: repo.join("bench").join("results.md"),
        list: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let positive = |name: &str, text: String| -> Result<f64, String> {
            text.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n > 0.0)
                .ok_or(format!("{name} needs a positive number, not {text:?}"))
        };
        match arg.as_str() {
            "--rate" => parsed.rate = positive("--rate", value("--rate")?)?,
            "--light-rate" => parsed.light_rate = positive("--light-rate", value("--light-rate")?)?,
            "--seconds" => parsed.seconds = positive("--seconds", value("--seconds")?)?,
            "--warm-up" => parsed.warm_up = positive("--warm-up", value("--warm-up")?)?,
            "--soak" => parsed.soak = positive("--soak", value("--soak")?)?,
            "--rounds" => parsed.rounds = positive("--rounds", value("--rounds")?)? as u32,
            "--connections" => {
                parsed.connections = positive("--connections", value("--connections")?)? as usize
            }
            "--distinct" => {
                parsed.distinct = Some(positive("--distinct", value("--distinct")?)? as usize)
            }
            "--concurrency" => {
                let list = value("--concurrency")?;
                parsed.concurrency = list
                    .split(',')
                    .map(|c| {
                        c.trim()
                            .parse::<u32>()
                            .ok()
                            .filter(|c| (1..=64).contains(c))
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or(format!(
                        "--concurrency needs worker counts like 1,2, not {list:?}"
                    ))?;
            }
            "--only" => parsed.only.push(value("--only")?),
            "--out" => parsed.out = PathBuf::from(value("--out")?),
            "--list" => parsed.list = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if parsed.rounds == 0 {
        return Err("--rounds needs at least 1".to_string());
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let repo = envoy::repo_root();
    let args = match parse_args(&repo) {
        Ok(args) => args,
        Err(problem) => {
            if !problem.is_empty() {
                eprintln!("bench: {problem}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(problem) = scenarios::check_table() {
        eprintln!("bench: {problem}");
        return ExitCode::FAILURE;
    }
    if args.list {
        for s in scenarios::select(&args.only) {
            let versus: String = s.versus.iter().map(|v| format!(", vs {v}")).collect();
            println!(
                "{:<26} {} ({}{versus})",
                s.name,
                s.chain_label(),
                s.tokens.label()
            );
        }
        return ExitCode::SUCCESS;
    }
    match run(&repo, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("bench: {problem}");
            ExitCode::FAILURE
        }
    }
}

/// What the report needs about one row at one concurrency level.
pub struct RowResult {
    pub scenario: &'static Scenario,
    /// Requests per second offered.
    pub rate: f64,
    /// Envoy CPU µs per request, one per round.
    pub cpu_us: Vec<f64>,
    /// Every measured latency, µs, sorted.
    pub latencies_us: Vec<u32>,
    pub rss_ready_kib: u64,
    pub rss_warm_kib: u64,
    pub rss_end_kib: u64,
    pub rss_soak_kib: Option<u64>,
    /// Each verified-token cache of the chain, with its hits and misses over all the row's
    /// load.
    pub caches: Vec<CacheCount>,
    /// The chain's [`scenarios::Step::shown_stats`] at the end of the row: (label, value).
    pub shown: Vec<(&'static str, u64)>,
    /// The lowest share of the offered rate a window completed.
    pub min_achieved: f64,
    /// Envoy's CPU over the whole run by its clock and by `/proc/<pid>/stat`, seconds.
    pub cpu_clock_s: f64,
    pub cpu_stat_s: f64,
}

pub struct CacheCount {
    pub stats: &'static CacheStats,
    pub hits: u64,
    pub misses: u64,
}

pub struct LevelResult {
    pub concurrency: u32,
    /// Steal time during the rounds, percent of the machine's CPU time.
    pub steal_percent: f64,
    pub envoy_cpus: String,
    pub load_cpus: String,
    pub rows: Vec<RowResult>,
}

/// A row's Envoy and what has been measured of it so far.
struct Row {
    scenario: &'static Scenario,
    rate: f64,
    proxy: RunningEnvoy,
    clock: CpuClock,
    requests: Requests,
    cpu_at_start: Duration,
    stat_at_start: f64,
    result: RowResult,
}

fn run(repo: &Path, args: &Args) -> Result<(), BenchError> {
    let started = Instant::now();
    let selected = scenarios::select(&args.only);
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
    let plugins = envoy::load_wasmplugins(&repo.join("wasmplugins"))?;
    let wasm_dir = envoy::wasm_dir();
    let mut modules = Vec::new();
    // Every shipped filter's module, then the floor's.
    let names = plugins
        .iter()
        .map(|p| p.name.replace('-', "_"))
        .chain(["bench_noop_filter".to_string()]);
    for name in names {
        let path = wasm_dir.join(format!("{name}.wasm"));
        let bytes = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}: run `make wasm`", path.display()))?
            .len();
        modules.push((format!("{name}.wasm"), bytes));
    }

    let jwt_config = plugins
        .iter()
        .find(|p| p.name == "jwt-auth")
        .and_then(|p| p.plugin_config.clone())
        .ok_or("wasmplugins/ has no jwt-auth with a pluginConfig")?;
    let issuer = jwt_config
        .pointer("/providers/0/issuer")
        .and_then(Value::as_str)
        .ok_or("jwt-auth providers[0].issuer is not a string")?
        .to_string();
    let audience = jwt_config
        .pointer("/providers/0/audiences/0")
        .and_then(Value::as_str)
        .ok_or("jwt-auth providers[0].audiences[0] is not a string")?
        .to_string();
    let cache_entries = jwt_config
        .pointer("/cache/maxEntries")
        .and_then(Value::as_f64)
        .map_or(DEFAULT_CACHE_ENTRIES, |n| n as u64);
    // Four times the cache: with two workers each sees about half the tokens, and a token
    // still comes back only after twice as many others as one worker's cache holds.
    let wants_distinct = selected
        .iter()
        .any(|s| matches!(s.tokens, TokenUse::Distinct(_)));
    let distinct = match (wants_distinct, args.distinct) {
        (false, _) => 0,
        (true, Some(n)) => n,
        (true, None) => usize::try_from(cache_entries.saturating_mul(4).max(1000)).unwrap_or(4096),
    };
    // One sequence per rate of the mixed rows, sized from the row's whole run.
    let mut mixes: Vec<(f64, Mix)> = Vec::new();
    for s in selected
        .iter()
        .filter(|s| matches!(s.tokens, TokenUse::Mix(_)))
    {
        let rate = rate_of(args, s.rate);
        if !mixes.iter().any(|(r, _)| *r == rate) {
            mixes.push((rate, Mix::for_requests(requests_per_row(args, rate))));
        }
    }
    let minted = mixes.iter().map(|(_, m)| m.pool).fold(distinct, usize::max);
    eprintln!(
        "bench: minting {} x {} tokens with Python cryptography",
        Alg::ALL.len(),
        minted + 2
    );
    let (jwks, tokens) = tokens::mint(&issuer, &audience, minted)?;
    // The Redis rows' store, for the whole run: a Redis behind a Webdis from
    // deploy/idempotency-redis/, as the e2e tests and `make run RUN_ARGS=--redis` start them.
    let redis = if selected
        .iter()
        .any(|s| s.chain.iter().any(scenarios::Step::needs_redis))
    {
        Some(envoy_runner::redis::RedisThroughWebdis::start("bench")?)
    } else {
        None
    };
    // The audit-log rows' OTLP collector, for the whole run.
    let collector = if selected
        .iter()
        .any(|s| s.chain.iter().any(scenarios::Step::needs_collector))
    {
        Some(demo_services::OtlpCollector::start(SocketAddr::from((
            [127, 0, 0, 1],
            0,
        )))?)
    } else {
        None
    };
    let access_log_dir = envoy::target_dir().join("bench").join("access-logs");
    std::fs::create_dir_all(&access_log_dir)?;
    let inputs = Inputs {
        jwks,
        issuer,
        audience,
        cache_entries,
        plugins,
        webdis: redis.as_ref().map(|r| r.webdis_addr),
        collector: collector.as_ref().map(|c| c.addr()),
        access_log_dir,
    };

    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut levels = Vec::new();
    for &concurrency in &args.concurrency {
        levels.push(measure_level(
            concurrency,
            &selected,
            &inputs,
            &TokenSet {
                minted: &tokens,
                distinct,
                mixes: &mixes,
            },
            &wasm_dir,
            &binary,
            args,
        )?);
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let text = report::render(&report::Input {
        command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        rate: args.rate,
        light_rate: args.light_rate,
        seconds: args.seconds,
        rounds: args.rounds,
        warm_up: args.warm_up,
        connections: args.connections,
        soak: args.soak,
        lead_in: LEAD_IN,
        distinct,
        mixes: mixes
            .iter()
            .map(|(rate, mix)| report::MixSummary {
                rate: *rate,
                pool: mix.pool,
                requests: mix.order.len(),
                drawn: mix.drawn(),
            })
            .collect(),
        uses_per_token: mix::USES_PER_TOKEN,
        standard_pool: Mix::pool_for(requests_per_row(args, args.rate)),
        cache_entries,
        envoy_version: &envoy_version,
        modules: &modules,
        load: (&load_before, &load_after),
        wall: started.elapsed(),
        levels: &levels,
    });
    print!("{text}");
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, text)?;
    eprintln!(
        "bench: wrote {} in {:.0} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn rate_of(args: &Args, rate: Rate) -> f64 {
    match rate {
        Rate::Standard => args.rate,
        Rate::Light => args.light_rate,
    }
}

/// The requests a row at `rate` gets over its run: warm-up, then each round's lead-in and
/// window (a soak, when asked, comes after and is not counted).
fn requests_per_row(args: &Args, rate: f64) -> usize {
    let seconds = args.warm_up + f64::from(args.rounds) * (LEAD_IN.as_secs_f64() + args.seconds);
    (rate * seconds).round() as usize
}

/// The minted tokens, how many of them the distinct rows rotate through, and the mixed rows'
/// sequence per rate.
struct TokenSet<'a> {
    minted: &'a [Tokens],
    distinct: usize,
    mixes: &'a [(f64, Mix)],
}

/// What is measured: each selected row at its rate, and the no-filter row at every rate used.
fn units(selected: &[&'static Scenario], args: &Args) -> Vec<(&'static Scenario, f64)> {
    let mut rates: Vec<f64> = Vec::new();
    for s in selected {
        let rate = rate_of(args, s.rate);
        if !rates.contains(&rate) {
            rates.push(rate);
        }
    }
    let mut units = Vec::new();
    for &s in selected {
        if s.name == NO_FILTER {
            units.extend(rates.iter().map(|&r| (s, r)));
        } else {
            units.push((s, rate_of(args, s.rate)));
        }
    }
    units
}

/// The CPUs Envoy and the load run on at `concurrency`; none when the machine has one CPU.
fn placement(concurrency: u32) -> (Vec<usize>, Vec<usize>) {
    let cpus = procfs::online_cpus();
    match (cpus, concurrency) {
        (1, _) => (Vec::new(), Vec::new()),
        (_, 1) => (vec![0], vec![1]),
        // Envoy gets both cores for its two workers; the generator shares the second.
        _ => (vec![0, 1], vec![1]),
    }
}

fn measure_level(
    concurrency: u32,
    selected: &[&'static Scenario],
    inputs: &Inputs,
    tokens: &TokenSet<'_>,
    wasm_dir: &Path,
    binary: &envoy::EnvoyBinary,
    args: &Args,
) -> Result<LevelResult, BenchError> {
    let (envoy_cpus, load_cpus) = placement(concurrency);
    let units = units(selected, args);
    eprintln!(
        "bench: --concurrency {concurrency}: starting {} Envoys on CPUs {envoy_cpus:?}, load on {load_cpus:?}",
        units.len()
    );
    if !envoy_cpus.is_empty() {
        procfs::pin_current_thread(&envoy_cpus)?;
    }
    let mut rows = Vec::new();
    for (i, &(scenario, rate)) in units.iter().enumerate() {
        let bootstrap = chain::bootstrap(scenario, inputs, wasm_dir)?;
        let start = StartOptions {
            workdir: envoy::target_dir()
                .join("bench")
                .join(format!("concurrency-{concurrency}"))
                .join(format!("{i:02}-{}", scenario.name)),
            concurrency,
            log_level: "warning".to_string(),
            component_log_level: None,
            log_to_file: true,
            startup_timeout: Duration::from_secs(120),
        };
        let proxy = RunningEnvoy::start(binary, &bootstrap, &start)
            .map_err(|e| format!("row {}: {e}", scenario.name))?;
        let pid = proxy.pid();
        let clock = CpuClock::of(pid)?;
        let alg_tokens = tokens
            .minted
            .iter()
            .find(|t| t.alg == scenario.tokens.alg())
            .ok_or("no tokens for the row's algorithm")?;
        let pool = |n: usize| -> Vec<Vec<u8>> {
            alg_tokens
                .distinct
                .iter()
                .take(n)
                .map(|t| load_request(t))
                .collect()
        };
        let requests = match (scenario.load, scenario.tokens) {
            (Load::Payment(Keys::Same), _) => {
                Requests::new(vec![payment_request(&alg_tokens.reused, REPLAYED_KEY)])
            }
            (Load::Payment(Keys::New), _) => Requests::new(
                (0..payment_keys(rate))
                    .map(|i| payment_request(&alg_tokens.reused, &format!("\"bench-{i:08}\"")))
                    .collect(),
            ),
            (Load::Account, TokenUse::Reused(_)) => {
                Requests::new(vec![load_request(&alg_tokens.reused)])
            }
            (Load::Account, TokenUse::Distinct(_)) => Requests::new(pool(tokens.distinct)),
            (Load::Account, TokenUse::Mix(_)) => {
                let (_, mix) = tokens
                    .mixes
                    .iter()
                    .find(|(r, _)| *r == rate)
                    .ok_or("no token mix for the row's rate")?;
                Requests::in_order(pool(mix.pool), mix.order.clone())
            }
        };
        rows.push(Row {
            scenario,
            rate,
            clock,
            requests,
            cpu_at_start: clock.read()?,
            stat_at_start: procfs::stat_cpu_seconds(pid)?,
            result: RowResult {
                scenario,
                rate,
                cpu_us: Vec::new(),
                latencies_us: Vec::new(),
                rss_ready_kib: procfs::rss_kib(pid)?,
                rss_warm_kib: 0,
                rss_end_kib: 0,
                rss_soak_kib: None,
                caches: scenario
                    .cache_stats()
                    .into_iter()
                    .map(|stats| CacheCount {
                        stats,
                        hits: 0,
                        misses: 0,
                    })
                    .collect(),
                shown: Vec::new(),
                min_achieved: f64::INFINITY,
                cpu_clock_s: 0.0,
                cpu_stat_s: 0.0,
            },
            proxy,
        });
    }
    if !load_cpus.is_empty() {
        procfs::pin_current_thread(&load_cpus)?;
    }
    let envoy_placement = rows
        .first()
        .map(|r| procfs::cpus_allowed(r.proxy.pid()))
        .unwrap_or_default();
    let load_placement = procfs::cpus_allowed(std::process::id());

    for row in &rows {
        probe(row, tokens.minted)?;
    }
    eprintln!(
        "bench: --concurrency {concurrency}: warm-up, {} s per row",
        args.warm_up
    );
    for row in &mut rows {
        let plan = plan(args, row.rate, Duration::ZERO, args.warm_up);
        run_load(row, plan, None)?;
        row.result.rss_warm_kib = procfs::rss_kib(row.proxy.pid())?;
    }
    let ticks_before = procfs::machine_ticks();
    for round in 0..args.rounds {
        eprintln!(
            "bench: --concurrency {concurrency}: round {} of {}",
            round + 1,
            args.rounds
        );
        let order: Vec<usize> = if round % 2 == 0 {
            (0..rows.len()).collect()
        } else {
            (0..rows.len()).rev().collect()
        };
        for i in order {
            let Some(row) = rows.get_mut(i) else { continue };
            let plan = plan(args, row.rate, LEAD_IN, args.seconds);
            let mut cpu = [Duration::ZERO; 2];
            let outcome = run_load(row, plan, Some(&mut cpu))?;
            let used = cpu[1].saturating_sub(cpu[0]);
            let per_request = used.as_secs_f64() * 1e6 / outcome.completed.max(1) as f64;
            row.result.cpu_us.push(per_request);
            row.result.latencies_us.extend(outcome.latencies_us);
            let achieved = outcome.completed as f64 / (row.rate * args.seconds);
            row.result.min_achieved = row.result.min_achieved.min(achieved);
            eprintln!(
                "bench:   {:<26} {:>5.0} req/s {:>8.1} µs CPU/req  {:>5.1}% of the rate",
                row.scenario.name,
                row.rate,
                per_request,
                achieved * 100.0
            );
        }
    }
    let ticks_after = procfs::machine_ticks();
    let steal_percent = 100.0 * ticks_after.1.saturating_sub(ticks_before.1) as f64
        / ticks_after.0.saturating_sub(ticks_before.0).max(1) as f64;
    for row in &mut rows {
        row.result.rss_end_kib = procfs::rss_kib(row.proxy.pid())?;
        let stats = row.proxy.stats().unwrap_or_default();
        row.result.shown = row
            .scenario
            .chain
            .iter()
            .flat_map(|step| step.shown_stats().iter())
            .map(|(label, name)| {
                let value = stats.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
                (*label, value)
            })
            .collect();
    }
    if args.soak > 0.0 {
        eprintln!(
            "bench: --concurrency {concurrency}: soak, {} s per row ({} rows)",
            args.soak,
            rows.len()
        );
        for row in &mut rows {
            run_load(row, plan(args, row.rate, Duration::ZERO, args.soak), None)?;
            row.result.rss_soak_kib = Some(procfs::rss_kib(row.proxy.pid())?);
        }
    }
    let mut results = Vec::new();
    for mut row in rows {
        let pid = row.proxy.pid();
        row.result.cpu_clock_s = (row.clock.read()? - row.cpu_at_start).as_secs_f64();
        row.result.cpu_stat_s = procfs::stat_cpu_seconds(pid)? - row.stat_at_start;
        row.result.latencies_us.sort_unstable();
        let log = row.proxy.log();
        if log.contains("][critical][") {
            return Err(format!(
                "row {}: Envoy logged critical errors:\n{}",
                row.scenario.name,
                row.proxy.error_excerpt()
            )
            .into());
        }
        results.push(row.result);
        row.proxy.stop();
    }
    Ok(LevelResult {
        concurrency,
        steal_percent,
        envoy_cpus: envoy_placement,
        load_cpus: load_placement,
        rows: results,
    })
}

fn plan(args: &Args, rate: f64, lead_in: Duration, window: f64) -> Plan {
    Plan {
        rate,
        connections: args.connections,
        lead_in,
        window: Duration::from_secs_f64(window),
    }
}

/// Runs load on a row, recording Envoy's CPU clock at the window's edges into `cpu` when
/// given, and the chain's cache counters around it. Any failed request fails the bench.
fn run_load(
    row: &mut Row,
    plan: Plan,
    mut cpu: Option<&mut [Duration; 2]>,
) -> Result<load::Outcome, BenchError> {
    let cache_before = cache_counters(row);
    let address = row.proxy.listener();
    let clock = row.clock;
    let outcome = load::run(address, plan, &row.requests, |edge| {
        if let Some(cpu) = cpu.as_deref_mut() {
            let slot = match edge {
                Edge::Start => 0,
                Edge::End => 1,
            };
            if let Some(s) = cpu.get_mut(slot) {
                *s = clock.read()?;
            }
        }
        Ok(())
    })?;
    if outcome.failures > 0 {
        return Err(format!(
            "row {}: {} of {} requests failed (first: {}); not a clean run.\n{}",
            row.scenario.name,
            outcome.failures,
            outcome.sent,
            outcome.first_failure.as_deref().unwrap_or("?"),
            row.proxy.error_excerpt()
        )
        .into());
    }
    let cache_after = cache_counters(row);
    for ((count, before), after) in row
        .result
        .caches
        .iter_mut()
        .zip(cache_before)
        .zip(cache_after)
    {
        count.hits += after.0.saturating_sub(before.0);
        count.misses += after.1.saturating_sub(before.1);
    }
    Ok(outcome)
}

/// Hits and misses so far of each cache of the row's chain, in the order of `caches`.
fn cache_counters(row: &Row) -> Vec<(u64, u64)> {
    if row.result.caches.is_empty() {
        return Vec::new();
    }
    let stats = row.proxy.stats().unwrap_or_default();
    let find = |suffix: &str| {
        stats
            .iter()
            .find(|(n, _)| n.ends_with(suffix))
            .map_or(0, |(_, v)| *v)
    };
    row.result
        .caches
        .iter()
        .map(|c| (find(c.stats.hit), find(c.stats.miss)))
        .collect()
}

/// The key of every request of a replay row.
const REPLAYED_KEY: &str = "\"bench-replayed-payment\"";
/// The payment every payment row sends.
const PAYMENT_BODY: &str =
    r#"{"amount":"10.00","currency":"EUR","creditor":"DE89370400440532013000"}"#;

/// Distinct keys a first-use row rotates through at `rate`: a key comes back only after
/// twice the bench's retention, when its record has expired.
fn payment_keys(rate: f64) -> usize {
    (rate * 2.0 * chain::BENCH_RETENTION_S as f64).ceil() as usize + 1
}

/// A payment with `key`, on a kept-alive connection.
fn payment_request(token: &str, key: &str) -> Vec<u8> {
    payment(token, key)
        .header("x-customer-id", tokens::CUSTOMER_ID)
        .header("connection", "keep-alive")
        .to_bytes()
}

fn payment(token: &str, key: &str) -> client::Request {
    client::Request::post("/payments")
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .header("x-transaction-id", TRANSACTION_ID)
        .header("x-banking-operation", "payment.create")
        .body(PAYMENT_BODY.as_bytes())
}

/// The request of a probe, as the probe client sends it (one connection per request).
fn probe_request(probe: Probe, tokens: &Tokens, load: Load) -> client::Request {
    let token = match probe {
        Probe::TamperedToken => &tokens.tampered,
        _ => &tokens.reused,
    };
    let mut request = match load {
        Load::Account => {
            client::Request::get(PATH).header("authorization", &format!("Bearer {token}"))
        }
        // The valid probe of a replay row stores the payment the load then replays; other
        // probes get a key each (the probes differ: one key for two would be a 422).
        Load::Payment(Keys::Same) if probe == Probe::Valid => payment(token, REPLAYED_KEY),
        Load::Payment(_) => payment(token, &format!("\"bench-probe-{probe:?}\"")),
    };
    match probe {
        Probe::MissingCustomerId => {}
        Probe::OtherCustomer => request = request.header("x-customer-id", OTHER_CUSTOMER_ID),
        Probe::Valid | Probe::TamperedToken => {
            request = request.header("x-customer-id", tokens::CUSTOMER_ID)
        }
    }
    match load {
        Load::Account => request
            .header("x-transaction-id", TRANSACTION_ID)
            .header("x-banking-operation", OPERATION),
        Load::Payment(_) => request,
    }
}

/// The request the load sends with `token`: the valid probe on a kept-alive connection.
fn load_request(token: &str) -> Vec<u8> {
    client::Request::get(PATH)
        .header("authorization", &format!("Bearer {token}"))
        .header("x-customer-id", tokens::CUSTOMER_ID)
        .header("x-transaction-id", TRANSACTION_ID)
        .header("x-banking-operation", OPERATION)
        .header("connection", "keep-alive")
        .to_bytes()
}

/// Refuses to measure a row whose chain does not behave: one that let a tampered token or a
/// missing header through, or refused the load's request, would make its numbers meaningless.
fn probe(row: &Row, tokens: &[Tokens]) -> Result<(), BenchError> {
    let scenario = row.scenario;
    let tokens = tokens
        .iter()
        .find(|t| t.alg == scenario.tokens.alg())
        .ok_or("no tokens for the row's algorithm")?;
    let checks_banking_headers = scenario.expected(Probe::MissingCustomerId) == 400;
    for probe in Probe::ALL {
        let want = scenario.expected(probe);
        let request = probe_request(probe, tokens, scenario.load);
        let response = client::send(row.proxy.listener(), &request, Duration::from_secs(10))?;
        if response.status != want {
            return Err(format!(
                "row {} ({}): probe {probe:?} got {} (want {want}): {}\nnot measuring a chain that misbehaves.\n{}",
                scenario.name,
                scenario.chain_label(),
                response.status,
                response.body_text().trim(),
                row.proxy.error_excerpt()
            )
            .into());
        }
        // A replay row's payment is stored after its answer (with Redis, by a call of its
        // own): wait until it replays, or the load's first requests would find it in flight.
        if probe == Probe::Valid && scenario.load == Load::Payment(Keys::Same) {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let again = client::send(row.proxy.listener(), &request, Duration::from_secs(10))?;
                if again.header("idempotent-replayed").is_some() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(format!(
                        "row {}: the probe's payment was never replayed (last answer {})",
                        scenario.name, again.status
                    )
                    .into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Both banking-header implementations echo the correlation id they settled.
        if probe == Probe::Valid
            && checks_banking_headers
            && response.header("x-correlation-id").is_none()
        {
            return Err(format!(
                "row {}: a valid request got no x-correlation-id back",
                scenario.name
            )
            .into());
        }
    }
    Ok(())
}

fn command_output(command: &mut Command) -> Option<String> {
    let output = command.stdin(Stdio::null()).output().ok()?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Some(text)
}
