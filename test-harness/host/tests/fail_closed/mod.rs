//! What "fail closed" means for every filter when the host refuses a call it needs: a 500
//! `proxy-host-call-failed` problem if a response can still be sent, else a reset stream;
//! never a pass; the refused call named in a critical log line; the VM still alive.
#![allow(dead_code)]

use serde_json::Value;
use test_harness::{Action, LogLevel, Plugin, Stream};

/// Asserts `stream` was failed closed after the host refused `call`, and that the plugin
/// said so at critical, naming the call.
pub fn assert_failed_closed(plugin: &Plugin, stream: &Stream, action: Action, call: &str) {
    assert_eq!(
        action,
        Action::Pause,
        "a refused {call} must not pass the request"
    );
    match stream.local_response() {
        Some(reply) => {
            assert_eq!(reply.status, 500, "{}", reply.body_text());
            let problem: Value = serde_json::from_slice(&reply.body).expect("problem+json");
            assert_eq!(
                problem["type"], "urn:banking-filters:problem:proxy-host-call-failed",
                "{problem}"
            );
        }
        None => assert!(
            stream.was_reset(),
            "neither answered nor reset after {call}"
        ),
    }
    assert!(
        plugin
            .logs(LogLevel::Critical)
            .iter()
            .any(|line| line.contains("failing closed") && line.contains(call)),
        "no critical line naming {call}: {:?}",
        plugin.logs(LogLevel::Critical)
    );
    assert_eq!(
        plugin.failure(),
        None,
        "the VM must survive a refused {call}"
    );
}
