//! `audit-verify` as a user runs it: on the filter's log lines and on OTLP payloads, with the
//! exit status and the findings it prints.

// A test's helpers stop the test on any failed step.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use audit_log::chain::Chain;
use serde_json::{Map, Value, json};

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// A genesis, three requests and a checkpoint.
fn chain_lines() -> Vec<String> {
    let mut chain = Chain::new("0123abcd".into());
    let mut lines = vec![chain.seal(object(json!({"kind": "genesis"})))];
    for status in [200, 401, 201] {
        lines.push(chain.seal(object(json!({"kind": "request", "status": status}))));
    }
    let (count, covers, head) = (chain.len(), chain.len() - 1, chain.head().to_string());
    lines.push(chain.seal(object(
        json!({"kind": "checkpoint", "count": count, "covers": covers, "head": head}),
    )));
    lines
}

fn run(input: &str) -> (i32, String) {
    run_with(&[], &[], input)
}

/// audit-verify with `args` and the environment variables `env`.
fn run_with(args: &[&str], env: &[(&str, &str)], input: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_audit-verify"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // audit-verify may refuse its options and exit before reading: a broken pipe then.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn intact_log_lines_pass_and_a_tampered_one_is_named_with_exit_status_1() {
    // As Envoy logs them: its own prefix, then the filter's.
    let mut logged: Vec<String> = chain_lines()
        .iter()
        .map(|r| format!("[2026-11-29 19:58:40.123][17][info][wasm] wasm log: banking-audit {r}"))
        .collect();
    // The proxy's other lines are no records.
    logged.insert(
        0,
        "[2026-11-29 19:58:40.100][17][info][wasm] wasm log: audit-log: chain 0123abcd started"
            .to_string(),
    );
    let (status, out) = run(&logged.join("\n"));
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("chain 0123abcd: 5 records"), "{out}");

    let mut tampered = logged.clone();
    tampered[3] = tampered[3].replace("\"status\":401", "\"status\":200");
    let (status, out) = run(&tampered.join("\n"));
    assert_eq!(status, 1);
    assert!(out.contains("tampered chain 0123abcd seq 2"), "{out}");

    let mut deleted = logged;
    deleted.remove(2);
    let (status, out) = run(&deleted.join("\n"));
    assert_eq!(status, 1);
    assert!(out.contains("missing chain 0123abcd seq 1"), "{out}");
}

#[test]
fn otlp_payloads_are_read_as_their_records() {
    let records: Vec<Value> = chain_lines()
        .into_iter()
        .map(|r| json!({"body": {"stringValue": r}}))
        .collect();
    let payload = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]});
    let (status, out) = run(&payload.to_string());
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("5 records"), "{out}");
}

#[test]
fn with_the_checkpoint_key_in_the_environment_forged_checkpoints_are_named() {
    let key = "0123456789abcdef0123456789abcdef-key";
    let mut chain = Chain::new("0123abcd".into());
    let mut lines = vec![chain.seal(object(json!({"kind": "genesis"})))];
    lines.push(chain.seal(object(json!({"kind": "request", "status": 200}))));
    let (count, head) = (chain.len(), chain.head().to_string());
    let time = "2026-11-29T19:58:40.123Z";
    let stated = audit_log::chain::Checkpoint {
        kind: "checkpoint",
        chain: "0123abcd",
        count,
        head: &head,
        time,
    };
    let mac = audit_log::chain::checkpoint_mac(key.as_bytes(), &stated);
    lines.push(
        chain.seal(object(json!({"kind": "checkpoint", "count": count,
        "covers": count - 1, "head": head, "time": time, "mac": mac}))),
    );
    let args = ["--checkpoint-key-env", "AUDIT_KEY"];
    let (status, out) = run_with(&args, &[("AUDIT_KEY", key)], &lines.join("\n"));
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("1 checkpoint MACs good"), "{out}");
    // A chain resealed without the key: its hashes hold, its checkpoint does not.
    let (status, out) = run_with(&args, &[("AUDIT_KEY", key)], &chain_lines().join("\n"));
    assert_eq!(status, 1, "{out}");
    assert!(
        out.contains("checkpoint-mac chain 0123abcd seq 4: it has no MAC"),
        "{out}"
    );
    // The key is never an argument, and a missing or short one is an error, not a pass.
    let (status, _) = run_with(&args, &[], &lines.join("\n"));
    assert_eq!(status, 2);
    let (status, _) = run_with(&args, &[("AUDIT_KEY", "short")], &lines.join("\n"));
    assert_eq!(status, 2);
}

#[test]
fn a_chain_the_proxy_log_says_started_but_whose_records_are_gone_is_named() {
    let mut logged: Vec<String> = chain_lines()
        .iter()
        .map(|r| format!("[info][wasm] wasm log: banking-audit {r}"))
        .collect();
    logged.push("[info][wasm] wasm log: audit-log: chain 0123abcd started".into());
    let (status, out) = run(&logged.join("\n"));
    assert_eq!(status, 0, "{out}");
    // A second worker's chain started too, and every one of its records was deleted.
    logged.push("[info][wasm] wasm log: audit-log: chain 9f9f9f9f started".into());
    let (status, out) = run(&logged.join("\n"));
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("missing-chain chain 9f9f9f9f"), "{out}");
}
