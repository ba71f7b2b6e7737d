//! `audit-verify [FILE...]`: checks the audit-log filter's records (`-` or no file: stdin).
//!
//! A file holds records one per line (NDJSON: the filter's log lines with their prefix, or
//! the records alone), or OTLP/HTTP JSON log payloads as the filter ships them (one
//! `{"resourceLogs": ...}` document per line or per file), whose log records' bodies are the
//! records. Every chain is checked (`audit_log::verify`); each finding is printed on its own
//! line. Exit status: 0 nothing found, 1 findings, 2 unreadable input or a bad option.
//!
//! `--checkpoint-key-env NAME`: the filter's checkpoint key is in the environment variable
//! NAME (never on the command line, where `ps` shows it); every checkpoint's MAC is checked.

use std::io::Read;
use std::process::ExitCode;

use serde_json::Value;

/// What the filter puts before each record it logs.
const LOG_PREFIX: &str = "banking-audit ";

const USAGE: &str =
    "usage: audit-verify [--checkpoint-key-env NAME] [FILE...]   (no FILE or -: standard input)";

/// What a proxy log says when a VM's chain starts.
const CHAIN_STARTED: &str = "audit-log: chain ";

/// The records in `text`: NDJSON lines (a log prefix before a record is skipped), or OTLP
/// JSON documents whose log records' string bodies are records; and the chains a proxy log
/// says started.
fn records(text: &str) -> (Vec<String>, Vec<String>) {
    if let Ok(document) = serde_json::from_str::<Value>(text)
        && document.get("resourceLogs").is_some()
    {
        return (audit_log::otlp::record_bodies(&document), Vec::new());
    }
    let mut out = Vec::new();
    let mut started = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(at) = line.find(CHAIN_STARTED)
            && let Some(id) = line
                .get(at + CHAIN_STARTED.len()..)
                .and_then(|rest| rest.strip_suffix(" started"))
        {
            started.push(id.to_string());
            continue;
        }
        // A proxy log holds other lines too: only the filter's records, or bare records.
        let line = match line.find(LOG_PREFIX) {
            Some(at) => line.get(at + LOG_PREFIX.len()..).unwrap_or(line),
            None if line.starts_with('{') => line,
            None => continue,
        };
        match serde_json::from_str::<Value>(line) {
            Ok(document) if document.get("resourceLogs").is_some() => {
                out.extend(audit_log::otlp::record_bodies(&document));
            }
            _ => out.push(line.to_string()),
        }
    }
    (out, started)
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mut key = None;
    if let Some(at) = args.iter().position(|a| a == "--checkpoint-key-env") {
        let Some(name) = args.get(at + 1).cloned() else {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        };
        match std::env::var(&name) {
            Ok(value) if value.len() >= 32 => key = Some(value.into_bytes()),
            _ => {
                eprintln!("audit-verify: {name} must hold the checkpoint key (32 bytes or more)");
                return ExitCode::from(2);
            }
        }
        args.drain(at..at + 2);
    }
    let sources = if args.is_empty() {
        vec!["-".to_string()]
    } else {
        args
    };
    let mut lines = Vec::new();
    let mut started = Vec::new();
    for source in &sources {
        let mut text = String::new();
        let read = if source == "-" {
            std::io::stdin().read_to_string(&mut text).map(|_| ())
        } else {
            std::fs::read_to_string(source).map(|t| text = t)
        };
        if let Err(e) = read {
            eprintln!("audit-verify: {source}: {e}");
            return ExitCode::from(2);
        }
        let (found, chains) = records(&text);
        lines.extend(found);
        started.extend(chains);
    }
    let mut report =
        audit_log::verify::verify_with_key(lines.iter().map(String::as_str), key.as_deref());
    let missing = audit_log::verify::missing_chains(&report, &started);
    report.findings.extend(missing);
    for (chain, count) in &report.chains {
        println!("chain {chain}: {count} records");
    }
    for finding in &report.findings {
        println!("{finding}");
    }
    if key.is_some() {
        println!("{} checkpoint MACs good", report.macs_checked);
        for (chain, tail) in &report.unauthenticated_tail {
            println!(
                "chain {chain}: {tail} records after its last checkpoint, covered by hashes only until the next"
            );
        }
    }
    if report.findings.is_empty() {
        println!("ok: {} chains, no findings", report.chains.len());
        ExitCode::SUCCESS
    } else {
        println!("{} findings", report.findings.len());
        ExitCode::from(1)
    }
}
