//! Scenarios for HTTP callouts: recorded as the filter dispatched them, answered by the test,
//! failed, or timed out on the virtual clock.

use std::time::Duration;

use test_harness::{Action, HarnessError, Host, Plugin};

fn probe(host: &Host) -> Plugin {
    host.load("harness_probe", "")
        .expect("run `make wasm` to build harness_probe.wasm")
}

#[test]
fn callout_is_recorded_and_the_tests_answer_resumes_the_request() {
    let host = Host::new();
    let plugin = probe(&host);
    let mut stream = plugin.stream();
    let action = stream.request_headers(
        &[(":path", "/pay"), ("x-probe", "http-call fraud-check 500")],
        true,
    );
    assert_eq!(action, Action::Pause);
    assert!(!stream.resumed());

    let calls = plugin.pending_http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.upstream, "fraud-check");
    assert_eq!(call.header(":method"), Some(&b"GET"[..]));
    assert_eq!(call.header(":authority"), Some(&b"fraud-check"[..]));
    assert_eq!(call.header("x-probe-caller"), Some(&b"harness-probe"[..]));
    assert_eq!(call.body, b"probe".to_vec());
    assert_eq!(call.timeout, Some(Duration::from_millis(500)));

    plugin.respond_http_call(call.token, 200, &[("x-risk", "low")], b"{\"score\":3}");
    assert!(stream.resumed());
    assert_eq!(
        stream.request_header("x-probe-call-status"),
        Some(b"200".to_vec())
    );
    assert_eq!(
        stream.request_header("x-probe-call-body"),
        Some(b"{\"score\":3}".to_vec())
    );
    assert!(plugin.pending_http_calls().is_empty());
}

#[test]
fn callout_times_out_when_the_virtual_clock_passes_its_timeout() {
    let host = Host::new();
    let plugin = probe(&host);
    let mut stream = plugin.stream();
    stream.request_headers(
        &[(":path", "/pay"), ("x-probe", "http-call fraud-check 250")],
        true,
    );

    host.advance(Duration::from_millis(249));
    assert_eq!(plugin.pending_http_calls().len(), 1, "still waiting");
    assert!(!stream.resumed());

    host.advance(Duration::from_millis(1));
    assert!(plugin.pending_http_calls().is_empty());
    assert!(stream.resumed());
    assert_eq!(
        stream.request_header("x-probe-call-status"),
        Some(b"failed".to_vec()),
        "no headers, as Envoy reports a failure"
    );
}

#[test]
fn failed_callout_gets_an_empty_response() {
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    stream.request_headers(
        &[(":path", "/"), ("x-probe", "http-call ledger 1000")],
        true,
    );
    let token = plugin.pending_http_calls()[0].token;
    plugin.fail_http_call(token);
    assert_eq!(
        stream.request_header("x-probe-call-status"),
        Some(b"failed".to_vec())
    );
    assert_eq!(stream.request_header("x-probe-call-body"), Some(Vec::new()));
}

#[test]
fn answering_an_unknown_callout_is_an_error() {
    let plugin = probe(&Host::new());
    let err = plugin
        .try_respond_http_call(42, 200, &[("a", "b")], b"")
        .unwrap_err();
    assert!(
        matches!(err, HarnessError::UnknownHttpCall { token: 42 }),
        "{err}"
    );
}

#[test]
fn callout_to_an_undeclared_cluster_is_refused_once_clusters_are_declared() {
    let host = Host::new();
    host.add_cluster("fraud-check");
    let plugin = probe(&host);
    let mut stream = plugin.stream();
    let action = stream.request_headers(
        &[(":path", "/"), ("x-probe", "http-call nowhere 100")],
        true,
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(
        stream.request_header("x-probe-result"),
        Some(b"dispatch-failed BadArgument".to_vec())
    );
    assert!(plugin.pending_http_calls().is_empty());
}

#[test]
fn a_streams_callout_is_still_answered_after_the_stream_ends() {
    // Envoy makes every callout on behalf of the plugin's root context: a stream that ends
    // does not cancel its calls, and their answers still arrive (at the root's id).
    let host = Host::new();
    let plugin = probe(&host);
    let mut stream = plugin.stream();
    stream.request_headers(
        &[(":path", "/pay"), ("x-probe", "http-call fraud-check 500")],
        true,
    );
    stream.complete();
    let calls = plugin.pending_http_calls();
    assert_eq!(calls.len(), 1, "the call outlives its stream");
    plugin.respond_http_call(calls[0].token, 200, &[], b"late");
    assert!(plugin.failure().is_none());
}

#[test]
fn a_filter_that_stops_on_request_headers_sees_no_body_until_it_resumes() {
    // Envoy makes a Wasm filter's StopIteration on request headers a stop of everything: the
    // body is buffered, not shown to the filter, until the filter resumes.
    let host = Host::new();
    let plugin = probe(&host);
    let mut stream = plugin.stream();
    let action = stream.request_headers(
        &[
            (":path", "/pay"),
            ("x-probe", "http-call fraud-check 500"),
            ("x-probe-body", "append !"),
        ],
        false,
    );
    assert_eq!(action, Action::Pause);
    assert_eq!(stream.request_body(b"{\"amount\":", false), Action::Pause);
    assert_eq!(
        stream.request_body_now(),
        b"{\"amount\":".to_vec(),
        "held from the filter: not rewritten"
    );
    let call = plugin.pending_http_calls().remove(0);
    plugin.respond_http_call(call.token, 200, &[], b"");
    assert!(stream.resumed());
    // The next chunk brings the filter the whole body.
    assert_eq!(stream.request_body(b"1}", true), Action::Continue);
    assert_eq!(stream.request_body_now(), b"{\"amount\":1}!".to_vec());
}
