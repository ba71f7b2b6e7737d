//! The `check-config` binary as an operator runs it: on the shipped WasmPlugins, on copies
//! with an error planted, on input it cannot read.

// The workspace lints keep panics out of filter code; a test's helpers may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    envoy_runner::repo_root()
}

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

fn from_output(out: Output) -> Run {
    Run {
        status: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn check_config(args: &[&Path]) -> Run {
    from_output(
        Command::new(env!("CARGO_BIN_EXE_check-config"))
            .args(args)
            .current_dir(repo())
            .output()
            .unwrap(),
    )
}

fn check_config_stdin(text: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_check-config"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    from_output(child.wait_with_output().unwrap())
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("check-config-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The shipped WasmPlugin `file` with `from` replaced by `to` (which must occur once).
fn shipped_with(file: &str, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(repo().join("wasmplugins").join(file)).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{from:?} in {file}");
    text.replace(from, to)
}

#[test]
fn every_shipped_wasmplugin_is_valid() {
    let run = check_config(&[]);
    assert_eq!(run.status, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            "ok wasmplugins/audit-log.yaml audit-log",
            "ok wasmplugins/banking-headers.yaml banking-headers",
            "ok wasmplugins/idempotency.yaml idempotency",
            "ok wasmplugins/jwt-auth.yaml jwt-auth",
            "ok wasmplugins/rate-limit.yaml rate-limit"
        ]
    );
}

#[test]
fn planted_error_in_a_copy_is_named_by_its_field() {
    let dir = scratch("planted");
    std::fs::write(
        dir.join("jwt-auth.yaml"),
        shipped_with("jwt-auth.yaml", "clockSkew: 60s", "clockSkew: 10m"),
    )
    .unwrap();
    std::fs::write(
        dir.join("banking-headers.yaml"),
        shipped_with(
            "banking-headers.yaml",
            "maxHeaderValueLength: 128",
            "maxHeaderValueLength: 0",
        ),
    )
    .unwrap();
    let run = check_config(&[&dir]);
    assert_eq!(run.status, Some(1), "{}{}", run.stdout, run.stderr);
    let file = |name: &str| dir.join(name).display().to_string();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].starts_with(&format!(
            "{}: banking-headers (banking-headers): invalid plugin configuration at `maxHeaderValueLength`: must be between 1 and 8192",
            file("banking-headers.yaml")
        )),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!(
            "{}: jwt-auth (jwt-auth): invalid plugin configuration at `providers[0].clockSkew`: ",
            file("jwt-auth.yaml")
        )),
        "{}",
        lines[1]
    );
    assert!(
        run.stderr.contains("2 invalid WasmPlugins"),
        "{}",
        run.stderr
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_file_path_checks_only_that_file_and_a_good_one_passes() {
    let dir = scratch("one-file");
    let bad = dir.join("overlay.yaml");
    std::fs::write(
        &bad,
        shipped_with(
            "banking-headers.yaml",
            "maxHeaderValueLength: 128",
            "maxHeaderValueLength: 12.5",
        ),
    )
    .unwrap();
    let good = repo().join("wasmplugins/jwt-auth.yaml");
    let run = check_config(&[&good, &bad]);
    assert_eq!(run.status, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("ok "), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("at `maxHeaderValueLength`: expected a whole number, got 12.5"),
        "{}",
        run.stdout
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn several_documents_from_stdin_each_get_a_line() {
    let jwt = shipped_with("jwt-auth.yaml", "ttl: 5m", "ttl: 5 minutes");
    let headers = shipped_with(
        "banking-headers.yaml",
        "      - exact: /healthz\n      - exact: /ready\n",
        "      - exact: /healthz\n      - regex: /ready\n",
    );
    let run = check_config_stdin(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: bank}}\n---\n{headers}---\n{jwt}"
    ));
    assert_eq!(run.status, Some(1), "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with(
            "<stdin>: banking-headers (banking-headers): invalid plugin configuration at `bypassPaths[1]`: unknown variant `regex`"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(
            "<stdin>: jwt-auth (jwt-auth): invalid plugin configuration at `cache.ttl`: expected a duration"
        ),
        "{}",
        lines[1]
    );
}

#[test]
fn a_second_plugin_of_a_filter_is_known_by_its_image() {
    let partners = shipped_with(
        "jwt-auth.yaml",
        "  name: jwt-auth\n",
        "  name: jwt-partners\n",
    )
    .replace("instance: jwt-auth", "instance: jwt-partners");
    let run = check_config_stdin(&partners);
    assert_eq!(run.status, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, "ok <stdin> jwt-partners\n");
}

#[test]
fn a_plugin_naming_no_known_filter_is_an_error_that_lists_the_filters() {
    let text = shipped_with("jwt-auth.yaml", "  name: jwt-auth\n", "  name: jwt-authn\n")
        .replace("banking-wasm-filters/jwt-auth:0.1.0", "vendor/authn:2.0");
    let run = check_config_stdin(&text);
    assert_eq!(run.status, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(
            "<stdin>: jwt-authn: no filter is named \"jwt-authn\" nor by the image of spec.url"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("known filters: banking-headers, jwt-auth"),
        "{}",
        run.stdout
    );
}

#[test]
fn warnings_are_printed_without_failing() {
    // One usable P-256 key (RFC 7517 appendix A.1) and one on a curve the filter skips.
    let jwks = r#"{"keys": [
          {"kty": "EC", "crv": "P-256", "kid": "1", "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
          {"kty": "EC", "crv": "P-521", "kid": "2", "x": "AA", "y": "AA"}]}"#;
    let text = shipped_with(
        "jwt-auth.yaml",
        "        remoteJwks:\n          cluster: \"outbound|443||idp.bank.svc.cluster.local\"\n          authority: idp.bank.svc.cluster.local\n          path: /.well-known/jwks.json\n          timeout: 5s\n          cacheDuration: 10m\n          minRefetchInterval: 30s\n          retryInterval: 5s\n          # At least cacheDuration: raise it with cacheDuration (three times is the default).\n          maxStaleness: 30m\n",
        &format!("        jwks: {jwks}\n"),
    );
    let run = check_config_stdin(&text);
    assert_eq!(run.status, Some(0), "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "ok <stdin> jwt-auth");
    assert!(
        lines[1].starts_with("warning <stdin>: jwt-auth (jwt-auth): ")
            && lines[1].contains("providers[0].jwks: skipped key 1 (kid \"2\")"),
        "{}",
        run.stdout
    );
}

#[test]
fn unreadable_input_exits_2_saying_why() {
    let missing = repo().join("wasmplugins/no-such-plugin.yaml");
    let run = check_config(&[&missing]);
    assert_eq!(run.status, Some(2));
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("cannot read") && run.stderr.contains("no-such-plugin.yaml"),
        "{}",
        run.stderr
    );

    let run = check_config_stdin("kind: WasmPlugin\n  bad: [indent\n");
    assert_eq!(run.status, Some(2));
    assert!(run.stderr.contains("invalid YAML"), "{}", run.stderr);

    let run = check_config_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    assert_eq!(run.status, Some(2));
    assert!(run.stderr.contains("no WasmPlugin"), "{}", run.stderr);
}
