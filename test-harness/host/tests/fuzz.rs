//! A seeded fuzz run of every filter's real `.wasm` under the harness: arbitrary requests
//! (header names and bytes, non-UTF-8, repeats, huge values, odd pseudo-headers and paths,
//! mangled tokens, bodies in odd chunks, responses), callouts answered at random, time
//! moving, and host faults injected at random. Every answer must be a pass-through, a
//! problem+json 4xx/5xx, or (when the host refused the reply itself) a reset; no trap, no
//! stalled stream, no VM failure.
//!
//! Bounded for `make test` (`FUZZ_SECONDS`, default 12 per filter); `make fuzz` runs longer.
//! `FUZZ_SEED` picks the run; a finding prints the seed of its iteration to replay it with
//! `FUZZ_SEED=<seed> FUZZ_RUNS=1`.

mod idp;

use std::time::{Duration, Instant};

use idp::Idp;
use serde_json::Value;
use test_harness::{Action, Host, HostStatus, Plugin, Stream};

/// Every filter under fuzz: its crate's `.wasm` and its shipped WasmPlugin. A new filter
/// adds one line.
const TARGETS: &[(&str, &str)] = &[
    ("banking_headers", "banking-headers"),
    ("jwt_auth", "jwt-auth"),
    ("rate_limit", "rate-limit"),
    ("idempotency", "idempotency"),
    // The same with its Redis store: Webdis's answers come from the callout corpus below.
    ("idempotency", "idempotency@redis"),
    ("audit_log", "audit-log"),
];

/// What an earlier filter may have left as the identity (`banking.jwt.identity`): jwt-auth's
/// forms and what a broken or hostile one might write.
const IDENTITIES: &[&str] = &[
    r#"{"issuer":"https://idp.bank.example","subject":"user-7","customer":"CUST-1","client":"mobile-app","scopes":["payments:write"]}"#,
    r#"{"issuer":"https://idp.bank.example","subject":"user-8"}"#,
    r#"{"bypass":"path"}"#,
    r#"{"subject":"no-issuer"}"#,
    r#"{"issuer":"i","bypass":"path"}"#,
    "[]",
    "",
];

/// Hostcalls a fault may hit, and statuses a host may answer (99: one no ABI defines).
const FAULT_CALLS: &[&str] = &[
    "proxy_get_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_add_header_map_value",
    "proxy_send_local_response",
    "proxy_set_property",
    "proxy_get_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_http_call",
    "proxy_get_buffer_bytes",
    "proxy_get_current_time_nanoseconds",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_log",
    "proxy_set_tick_period_milliseconds",
    "clock_time_get",
    "random_get",
];
const FAULT_STATUSES: &[HostStatus] = &[
    HostStatus::NotFound,
    HostStatus::BadArgument,
    HostStatus::SerializationFailure,
    HostStatus::Empty,
    HostStatus::CasMismatch,
    HostStatus::InternalFailure,
    HostStatus::Unimplemented,
    HostStatus::Other(99),
];

/// splitmix64: small, seedable, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
    fn bytes_upto(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max);
        self.bytes(len)
    }
}

/// JSON bodies a payment route may get (audit-log reads fields out of them), whole, cut, with
/// a byte changed, or nested deep.
const BODIES: &[&str] = &[
    r#"{"instructedAmount":{"amount":"12.50","currency":"EUR"},"creditorAccount":{"iban":"DE89370400440532013000"},"card":{"number":"4111111111111111","cvv":"123"}}"#,
    r#"{"instructedAmount":{"amount":1e400,"amount":-0},"card":[4111111111111111,{"pin":1}]}"#,
    r#"{"debtorAccount":{"number":null},"card":"\ud800","creditorAccount":{"iban":["a",{"b":{"c":{"d":{"e":[]}}}}]}}"#,
    "[]",
    "\"just a string\"",
];

fn json_body(r: &mut Rng) -> Vec<u8> {
    let mut body = BODIES[r.below(BODIES.len())].as_bytes().to_vec();
    match r.below(4) {
        0 => body.truncate(r.below(body.len() + 1)),
        1 => {
            let at = r.below(body.len());
            body[at] = r.bytes(1)[0];
        }
        2 => {
            let depth = r.below(300);
            let mut deep = b"{\"card\":".to_vec();
            deep.extend(std::iter::repeat_n(b'[', depth));
            deep.extend(std::iter::repeat_n(b']', depth));
            deep.push(b'}');
            body = deep;
        }
        _ => {}
    }
    body
}

/// Values that mean something to some filter, mangled or not.
struct Corpus {
    tokens: Vec<String>,
    jwks: String,
}

const NAMES: &[&str] = &[
    "x-customer-id",
    "x-transaction-id",
    "x-banking-operation",
    "x-correlation-id",
    "authorization",
    "x-jwt-claim-sub",
    "x-jwt-claim-customer-id",
    "x-internal-route",
    "content-type",
    "origin",
    "access-control-request-method",
    "idempotency-key",
    "x-forwarded-for",
    ":scheme",
    ":authority",
    ":x-odd",
];
const VALUES: &[&str] = &[
    "CUST-00000042",
    "CUST-1",
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    "payment.create",
    "payment.read",
    "account.read",
    "trace-0001-fuzz",
    "",
    " ",
    "application/json",
    "https://app.bank.example",
    "POST",
    "10.0.0.1, 10.0.0.2",
];
const PATHS: &[&str] = &[
    "/payments",
    "/payments/42",
    "/p%61yments",
    "/payments;x=1",
    "/payments%3Bx",
    "/PAYMENTS",
    "/%70ayments",
    "/payments%2f..",
    "/payments%2F..%2Faccounts",
    "/accounts/1?iban=DE89370400440532013000",
    "/healthz",
    "/.well-known/x",
    "//payments",
    "/payments/../accounts",
    "",
    "*",
    "payments",
];
const METHODS: &[&str] = &["GET", "POST", "DELETE", "PUT", "OPTIONS", "HEAD", "get", ""];

fn mangle(rng: &mut Rng, value: &[u8]) -> Vec<u8> {
    let mut v = value.to_vec();
    match rng.below(8) {
        0 => v.truncate(rng.below(v.len() + 1)),
        1 if !v.is_empty() => {
            let i = rng.below(v.len());
            v[i] = rng.next() as u8;
        }
        2 => {
            let n = rng.below(16);
            v.extend(rng.bytes(n));
        }
        3 => {
            let n = rng.below(64);
            v = rng.bytes(n);
        }
        4 => v = vec![b'A'; 1 << (10 + rng.below(7))],
        5 => v.extend_from_slice(&[0xff, 0xfe, 0x00, 0x80]),
        6 => v.insert(0, b'"'),
        _ => {}
    }
    v
}

fn token_value(rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
    let token = rng.pick(&corpus.tokens).clone();
    let mut t = token.into_bytes();
    match rng.below(6) {
        0 => {}
        1 => t = mangle(rng, &t),
        2 => {
            // Swap or drop a segment.
            let s = String::from_utf8_lossy(&t).into_owned();
            let mut parts: Vec<&str> = s.split('.').collect();
            if parts.len() == 3 {
                parts.swap(rng.below(3), rng.below(3));
            }
            parts.truncate(1 + rng.below(3));
            t = parts.join(".").into_bytes();
        }
        3 => t = b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_vec(),
        4 => t.extend_from_slice(b"..."),
        _ => {
            let once = mangle(rng, &t);
            t = mangle(rng, &once);
        }
    }
    const SCHEMES: &[&[u8]] = &[b"Bearer ", b"bearer ", b"Basic ", b"Bearer  ", b""];
    let scheme = *rng.pick(SCHEMES);
    [scheme, &t].concat()
}

fn request(rng: &mut Rng, corpus: &Corpus) -> Vec<(String, Vec<u8>)> {
    let mut headers = Vec::new();
    if !rng.chance(3) {
        headers.push((":method".to_string(), rng.pick(METHODS).as_bytes().to_vec()));
    }
    if !rng.chance(3) {
        let path = rng.pick(PATHS).as_bytes().to_vec();
        let path = if rng.chance(20) {
            mangle(rng, &path)
        } else {
            path
        };
        headers.push((":path".to_string(), path));
    }
    headers.push((":authority".to_string(), b"api.bank.example".to_vec()));
    for _ in 0..rng.below(12) {
        let name = if rng.chance(10) {
            let n = 1 + rng.below(12);
            String::from_utf8_lossy(&rng.bytes(n)).to_ascii_lowercase()
        } else {
            rng.pick(NAMES).to_string()
        };
        let value = if name == "authorization" {
            token_value(rng, corpus)
        } else if rng.chance(30) {
            let value = *rng.pick(VALUES);
            mangle(rng, value.as_bytes())
        } else {
            rng.pick(VALUES).as_bytes().to_vec()
        };
        headers.push((name, value));
    }
    if rng.chance(60) {
        headers.push(("authorization".to_string(), token_value(rng, corpus)));
    }
    headers
}

fn borrowed(headers: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect()
}

/// Answers the callouts a paused stream waits for, as a store or a proxy in between might,
/// until none is left (a few rounds at most): a filter that pauses for a call must then answer,
/// resume or reset. Returns whether a Redis reservation (`SET`) was asked for, and whether
/// one was granted (200 `+OK`): a stream that went on must have had one.
fn answer_waiting_calls(plugin: &Plugin, r: &mut Rng) -> (bool, bool) {
    let (mut asked, mut granted) = (false, false);
    for _ in 0..4 {
        let calls = plugin.pending_http_calls();
        if calls.is_empty() {
            break;
        }
        for call in calls {
            let status = *r.pick(&[200u32, 200, 404, 403, 503]);
            let body = match r.below(4) {
                0 => b"+OK".to_vec(),
                1 => b"-ERR unknown command".to_vec(),
                2 => r.bytes_upto(128),
                _ => Vec::new(),
            };
            if call
                .header(":path")
                .is_some_and(|p| p.starts_with(b"/SET/"))
            {
                asked = true;
                granted |= status == 200 && body == b"+OK";
            }
            let _ = plugin.try_respond_http_call(call.token, status, &[] as &[(&str, &str)], &body);
        }
    }
    (asked, granted)
}

/// A stream that waited for a Redis reservation and went on without one was let through
/// unreserved: a payment that could run twice.
fn check_reserved(stream: &Stream, (asked, granted): (bool, bool)) -> Option<String> {
    let went_on = stream.resumed() && stream.local_response().is_none();
    (asked && !granted && went_on)
        .then(|| "went upstream without Redis granting its reservation".to_string())
}

/// What is wrong with how the filter answered, if anything.
fn check_answer(stream: &Stream, action: Action) -> Option<String> {
    if action == Action::Pause && stream.resumed() && stream.local_response().is_none() {
        // Paused for a callout, then resumed: the request went on.
        return None;
    }
    if let Some(reply) = stream.local_response() {
        if !(400..=599).contains(&reply.status) {
            return Some(format!("local reply with status {}", reply.status));
        }
        if reply.header("content-type") != Some(&b"application/problem+json"[..]) {
            return Some(format!("local reply {} is not problem+json", reply.status));
        }
        let problem: Option<Value> = serde_json::from_slice(&reply.body).ok();
        let valid = problem.as_ref().is_some_and(|p| {
            p["status"] == reply.status && p["type"].as_str().is_some_and(|t| !t.is_empty())
        });
        if !valid {
            return Some(format!("malformed problem body: {}", reply.body_text()));
        }
        return None;
    }
    // `proxy_close_stream` is never faulted, so a filter can always fail closed.
    if action == Action::Pause && !stream.was_reset() {
        return Some("paused with no reply and no reset: the stream would hang".to_string());
    }
    None
}

struct Run {
    executions: u64,
    /// Answers by kind: "pass", "reset", or the local reply's status.
    answers: std::collections::BTreeMap<String, u64>,
    findings: Vec<String>,
    elapsed: Duration,
}

fn fuzz(wasm: &str, wasmplugin: &str, seed: u64, budget: Duration, max_runs: u64) -> Run {
    let host = Host::new();
    host.set_random_seed(seed);
    let (name, variant) = wasmplugin.split_once('@').unwrap_or((wasmplugin, ""));
    let mut shipped = envoy_runner::fixture::shipped(&[name]).remove(0);
    if variant == "redis" {
        shipped = envoy_runner::redis::with_redis_store(shipped, "250ms");
    }
    let config = shipped.configuration_json().unwrap_or_default();
    let plugin: Plugin = host.load(wasm, &config).unwrap_or_else(|e| panic!("{e}"));
    let idp = Idp::new();
    let corpus = Corpus {
        tokens: vec![idp.token(&host), "x.y.z".into(), String::new()],
        jwks: idp.jwks(),
    };
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut run = Run {
        executions: 0,
        answers: Default::default(),
        findings: Vec::new(),
        elapsed: Duration::ZERO,
    };
    while started.elapsed() < budget && run.executions < max_runs {
        let iteration_seed = rng.next();
        let mut r = Rng(iteration_seed);
        run.executions += 1;
        // Time passes: ticks run, callouts time out.
        if r.chance(10)
            && let Err(e) = host.try_advance(Duration::from_millis(r.below(3000) as u64))
        {
            run.findings.push(format!(
                "seed {iteration_seed}: trap while time passed: {e}"
            ));
            break;
        }
        // Callouts answered with anything, the real key set among them.
        for call in plugin.pending_http_calls() {
            if r.chance(50) {
                let status = *r.pick(&[200u32, 200, 404, 500, 302, 403, 503]);
                let body = match r.below(7) {
                    0 => corpus.jwks.clone().into_bytes(),
                    1 => mangle(&mut r, corpus.jwks.as_bytes()),
                    2 => r.bytes_upto(256),
                    // Webdis's raw answers: a status, a Redis error, an integer, a record.
                    3 => r
                        .pick(&[b"+OK".as_slice(), b"-ERR syntax error", b"1"])
                        .to_vec(),
                    4 => {
                        let mut record = b"BKIR\x01".to_vec();
                        record.extend(r.bytes_upto(120));
                        record
                    }
                    _ => Vec::new(),
                };
                let _ =
                    plugin.try_respond_http_call(call.token, status, &[] as &[(&str, &str)], &body);
            }
        }
        if r.chance(12) {
            let call = FAULT_CALLS[r.below(FAULT_CALLS.len())];
            host.fail_hostcall(call, *r.pick(FAULT_STATUSES), 1 + r.below(2) as u32);
        }
        let headers = request(&mut r, &corpus);
        let answers = &mut run.answers;
        let outcome = (|| -> Result<Option<String>, test_harness::HarnessError> {
            let mut stream = plugin.try_stream()?;
            if r.chance(70) {
                let identity = *r.pick(IDENTITIES);
                let identity = if r.chance(10) {
                    mangle(&mut r, identity.as_bytes())
                } else {
                    identity.as_bytes().to_vec()
                };
                stream.set_property(&["banking.jwt.identity"], identity);
            }
            let action = stream.try_request_headers(&borrowed(&headers), r.chance(50))?;
            if action == Action::Pause
                && let Some(problem) =
                    check_reserved(&stream, answer_waiting_calls(&plugin, &mut r))
            {
                return Ok(Some(problem));
            }
            if let Some(problem) = check_answer(&stream, action) {
                return Ok(Some(problem));
            }
            let kind = match (stream.local_response(), stream.was_reset()) {
                (Some(reply), _) => reply.status.to_string(),
                (None, true) => "reset".to_string(),
                (None, false) => "pass".to_string(),
            };
            *answers.entry(kind).or_default() += 1;
            if action == Action::Continue {
                for _ in 0..r.below(3) {
                    let chunk = if r.below(2) == 0 {
                        r.bytes_upto(2048)
                    } else {
                        json_body(&mut r)
                    };
                    stream.try_request_body(&chunk, false)?;
                }
                let action = stream.try_request_body(&[], true)?;
                if action == Action::Pause {
                    let reservation = answer_waiting_calls(&plugin, &mut r);
                    if let Some(problem) = check_reserved(&stream, reservation)
                        .or_else(|| check_answer(&stream, action))
                    {
                        return Ok(Some(format!("after the body: {problem}")));
                    }
                }
                let status = r.pick(&["200", "201", "404", "503", "x"]).to_string();
                stream.try_response_headers(&[(":status", status.as_str())], r.chance(50))?;
                stream.try_response_body(&r.bytes_upto(512), true)?;
            }
            stream.try_complete()?;
            Ok(None)
        })();
        match outcome {
            Ok(None) => {}
            Ok(Some(problem)) => run
                .findings
                .push(format!("seed {iteration_seed}: {problem}")),
            Err(e) => {
                run.findings.push(format!("seed {iteration_seed}: {e}"));
                break;
            }
        }
        // Faults not used up by this request do not leak into the next.
        host.clear_faults();
        if let Some(failure) = plugin.failure() {
            run.findings
                .push(format!("seed {iteration_seed}: VM failed: {failure}"));
            break;
        }
    }
    run.elapsed = started.elapsed();
    run
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[test]
fn no_request_traps_a_filter_or_gets_anything_but_a_pass_or_a_problem() {
    let seconds = env_u64("FUZZ_SECONDS").unwrap_or(12);
    let seed = env_u64("FUZZ_SEED").unwrap_or(0x00ba_5eba_11f0_0d00);
    let max_runs = env_u64("FUZZ_RUNS").unwrap_or(u64::MAX);
    let mut all = Vec::new();
    for (wasm, wasmplugin) in TARGETS {
        let run = fuzz(
            wasm,
            wasmplugin,
            seed,
            Duration::from_secs(seconds),
            max_runs,
        );
        println!(
            "fuzz {wasmplugin}: {} executions in {:.1}s ({:.0}/s), {} findings, seed {seed}; answers {:?}",
            run.executions,
            run.elapsed.as_secs_f64(),
            run.executions as f64 / run.elapsed.as_secs_f64().max(1e-9),
            run.findings.len(),
            run.answers
        );
        all.extend(run.findings.into_iter().map(|f| format!("{wasm}: {f}")));
    }
    assert!(
        all.is_empty(),
        "{} findings:\n{}",
        all.len(),
        all.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}
