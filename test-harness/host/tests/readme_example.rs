//! The harness example the README shows, run as written so the front door cannot rot.

const README: &str = include_str!("../../../README.md");
const THIS_FILE: &str = include_str!("readme_example.rs");

#[test]
fn readme_harness_example_is_this_files_scenario() {
    let start = README
        .find("## Writing a harness test")
        .expect("README has the harness section");
    let block = README[start..]
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the harness section has a rust block");
    let scenario = THIS_FILE
        .split("// --- the README's example, verbatim ---\n")
        .nth(1)
        .expect("marker present");
    assert_eq!(
        block.trim(),
        scenario.trim(),
        "README and test drifted apart"
    );
}

// --- the README's example, verbatim ---
use std::time::Duration;
use test_harness::{Action, Host, LogLevel};

#[test]
fn payment_without_customer_id_is_refused_with_a_problem() {
    let host = Host::new(); // one proxy: shared data, metrics, virtual clock
    let plugin = host
        .load("banking_headers", r#"{"operations":["payment.create"]}"#)
        .unwrap();
    let mut stream = plugin.stream();
    let action = stream.request_headers(&[(":method", "POST"), (":path", "/payments")], true);
    assert_eq!(action, Action::Pause);
    let reply = stream.local_response().unwrap();
    assert_eq!(reply.status, 400);
    assert!(String::from_utf8_lossy(&reply.body).contains("x-customer-id"));
    assert_eq!(
        host.metric("banking_headers_rejected_missing_header"),
        Some(1)
    );
    assert!(plugin.logs(LogLevel::Critical).is_empty());
    // Time moves only when the test says so: 30 s on, the same request is refused alike
    // (banking-headers keeps no time-dependent state; a filter with a tick would see it fire).
    host.advance(Duration::from_secs(30));
    let mut later = plugin.stream();
    later.request_headers(&[(":method", "POST"), (":path", "/payments")], true);
    assert_eq!(later.local_response().unwrap().status, 400);
}
