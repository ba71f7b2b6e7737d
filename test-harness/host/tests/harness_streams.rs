//! Scenarios for one HTTP stream through the probe filter: headers as bytes, bodies, local
//! replies, properties, logs, and what a panicking filter looks like.

use test_harness::{Action, HarnessError, Host, LogLevel};

fn probe(host: &Host) -> test_harness::Plugin {
    host.load("harness_probe", "")
        .expect("run `make wasm` to build harness_probe.wasm")
}

#[test]
fn request_without_command_continues_with_headers_untouched() {
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    let action = stream.request_headers(
        &[(":method", "GET"), (":path", "/accounts"), ("X-Thing", "a")],
        true,
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(stream.request_header(":path"), Some(b"/accounts".to_vec()));
    assert_eq!(
        stream.request_header("x-thing"),
        Some(b"a".to_vec()),
        "names are lower-cased"
    );
    assert!(plugin.logs(LogLevel::Error).is_empty());
}

#[test]
fn non_utf8_header_value_round_trips_through_the_filter() {
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    let raw: &[u8] = &[0xff, 0xfe, b'a', 0x80];
    stream.request_headers_bytes(
        &[
            (":path", b"/".as_slice()),
            ("x-raw", raw),
            ("x-probe", b"copy-header x-raw x-copy"),
        ],
        true,
    );
    assert_eq!(stream.request_header("x-copy"), Some(raw.to_vec()));
    assert_eq!(stream.request_header("x-raw"), Some(raw.to_vec()));
}

#[test]
fn filter_sets_adds_and_removes_request_headers() {
    let plugin = probe(&Host::new());

    let mut set = plugin.stream();
    set.request_headers(
        &[
            (":path", "/"),
            ("x-a", "1"),
            ("x-a", "2"),
            ("x-probe", "set-header x-a 3"),
        ],
        true,
    );
    let values: Vec<_> = set
        .request_headers_now()
        .into_iter()
        .filter(|(k, _)| k == "x-a")
        .collect();
    assert_eq!(
        values,
        vec![("x-a".to_string(), b"3".to_vec())],
        "replace leaves one value"
    );

    let mut add = plugin.stream();
    add.request_headers(
        &[
            (":path", "/"),
            ("x-a", "1"),
            ("x-probe", "add-header x-a 2"),
        ],
        true,
    );
    let values: Vec<_> = add
        .request_headers_now()
        .into_iter()
        .filter(|(k, _)| k == "x-a")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, vec![b"1".to_vec(), b"2".to_vec()]);

    let mut remove = plugin.stream();
    remove.request_headers(
        &[
            (":path", "/"),
            ("x-a", "1"),
            ("x-a", "2"),
            ("x-probe", "remove-header x-a"),
        ],
        true,
    );
    assert_eq!(remove.request_header("x-a"), None);

    let mut pseudo = plugin.stream();
    pseudo.request_headers(
        &[(":path", "/old"), ("x-probe", "set-header :path /new")],
        true,
    );
    assert_eq!(pseudo.request_header(":path"), Some(b"/new".to_vec()));
}

#[test]
fn local_reply_is_captured_and_stops_the_stream() {
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    let action = stream.request_headers(
        &[(":path", "/"), ("x-probe", "local-reply 403 go away")],
        false,
    );
    assert_eq!(action, Action::Pause);
    let reply = stream.local_response().unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body_text(), "go away");
    assert_eq!(reply.header("x-probe"), Some(&b"local"[..]));
    assert_eq!(
        reply.header("content-type"),
        Some(&b"text/plain"[..]),
        "Envoy's default type"
    );
    assert_eq!(reply.grpc_status, None);

    // Envoy delivers no more request callbacks once the filter answered.
    assert_eq!(stream.request_body(b"late", true), Action::Pause);
    assert_eq!(stream.request_body_now(), Vec::<u8>::new());
}

#[test]
fn local_reply_passes_through_the_filters_own_response_path() {
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    stream.request_headers(&[(":path", "/"), ("x-probe", "local-reply 429")], true);
    let reply = stream.local_response().unwrap();
    assert_eq!(reply.header("x-probe-saw-status"), Some(&b"429"[..]));
}

#[test]
fn response_headers_reach_the_filter_and_its_edits_reach_the_client() {
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    assert_eq!(
        stream.request_headers(&[(":path", "/")], true),
        Action::Continue
    );
    assert_eq!(
        stream.response_headers(&[(":status", "201")], false),
        Action::Continue
    );
    assert_eq!(
        stream.response_header("x-probe-saw-status"),
        Some(b"201".to_vec())
    );
    assert_eq!(stream.local_response(), None);
}

#[test]
fn paused_body_is_buffered_and_rewritten_at_end_of_stream() {
    let plugin = probe(&Host::new());
    let mut prepend = plugin.stream();
    prepend.request_headers(&[(":path", "/"), ("x-probe-body", "prepend >>")], false);
    assert_eq!(prepend.request_body(b"hello ", false), Action::Pause);
    assert_eq!(prepend.request_body(b"world", true), Action::Continue);
    assert_eq!(prepend.request_body_now(), b">>hello world".to_vec());

    let mut append = plugin.stream();
    append.request_headers(&[(":path", "/"), ("x-probe-body", "append <<")], false);
    append.request_body(b"body", true);
    assert_eq!(append.request_body_now(), b"body<<".to_vec());

    let mut replace = plugin.stream();
    replace.request_headers(&[(":path", "/"), ("x-probe-body", "replace new")], false);
    replace.request_body(b"old body", true);
    assert_eq!(replace.request_body_now(), b"new".to_vec());
}

#[test]
fn properties_come_from_stream_overrides_then_host_defaults_then_headers() {
    let host = Host::new();
    host.set_property(&["source", "address"], b"10.0.0.9:1000");
    host.set_property(
        &["connection", "uri_san_peer_certificate"],
        b"spiffe://bank/ns/pay/sa/api",
    );
    let plugin = probe(&host);

    let mut with_override = plugin.stream();
    with_override.set_property(&["source", "address"], b"10.0.0.1:1234");
    with_override.request_headers(
        &[(":path", "/"), ("x-probe", "property-get source.address")],
        true,
    );
    assert_eq!(
        with_override.request_header("x-probe-result"),
        Some(b"10.0.0.1:1234".to_vec())
    );

    let mut default = plugin.stream();
    default.request_headers(
        &[(":path", "/"), ("x-probe", "property-get source.address")],
        true,
    );
    assert_eq!(
        default.request_header("x-probe-result"),
        Some(b"10.0.0.9:1000".to_vec())
    );

    let mut san = plugin.stream();
    san.request_headers(
        &[
            (":path", "/"),
            (
                "x-probe",
                "property-get connection.uri_san_peer_certificate",
            ),
        ],
        true,
    );
    assert_eq!(
        san.request_header("x-probe-result"),
        Some(b"spiffe://bank/ns/pay/sa/api".to_vec())
    );

    let mut derived = plugin.stream();
    derived.request_headers(
        &[
            (":path", "/payments?x=1"),
            ("x-probe", "property-get request.url_path"),
        ],
        true,
    );
    assert_eq!(
        derived.request_header("x-probe-result"),
        Some(b"/payments".to_vec())
    );

    let mut missing = plugin.stream();
    missing.request_headers(
        &[(":path", "/"), ("x-probe", "property-get destination.port")],
        true,
    );
    assert_eq!(
        missing.request_header("x-probe-result"),
        Some(b"none".to_vec())
    );
}

#[test]
fn plugin_identity_properties_follow_the_load_options() {
    let host = Host::new();
    let plugin = host
        .load_with(
            test_harness::LoadOptions::new("harness_probe")
                .plugin_name("banking-probe")
                .root_id("probe-root")
                .vm_id("probe-vm"),
        )
        .unwrap();
    for (path, expected) in [
        ("plugin_name", "banking-probe"),
        ("plugin_root_id", "probe-root"),
        ("plugin_vm_id", "probe-vm"),
    ] {
        let mut stream = plugin.stream();
        stream.request_headers(
            &[(":path", "/"), ("x-probe", &format!("property-get {path}"))],
            true,
        );
        assert_eq!(
            stream.request_header("x-probe-result"),
            Some(expected.as_bytes().to_vec()),
            "{path}"
        );
    }
}

#[test]
fn filter_set_property_is_visible_on_its_stream_only() {
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    stream.request_headers(
        &[
            (":path", "/"),
            ("x-probe", "property-set filter_state.tier gold"),
        ],
        true,
    );
    assert_eq!(
        stream.property(&["filter_state", "tier"]),
        Some(b"gold".to_vec())
    );
    let mut other = plugin.stream();
    other.request_headers(
        &[
            (":path", "/"),
            ("x-probe", "property-get filter_state.tier"),
        ],
        true,
    );
    assert_eq!(
        other.request_header("x-probe-result"),
        Some(b"none".to_vec())
    );
}

#[test]
fn logs_are_captured_per_level_including_stdout() {
    let plugin = probe(&Host::new());
    plugin.clear_logs();
    for (level, expected) in [
        ("trace", LogLevel::Trace),
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
        ("critical", LogLevel::Critical),
    ] {
        let mut stream = plugin.stream();
        stream.request_headers(
            &[
                (":path", "/"),
                ("x-probe", &format!("log {level} said at {level}")),
            ],
            true,
        );
        assert_eq!(
            plugin.logs(expected),
            vec![format!("said at {level}")],
            "{level}"
        );
    }
    plugin.clear_logs();
    let mut stream = plugin.stream();
    stream.request_headers(&[(":path", "/"), ("x-probe", "stdout printed line")], true);
    assert_eq!(
        plugin.logs(LogLevel::Info),
        vec!["printed line".to_string()]
    );
}

#[test]
fn panic_is_reported_as_a_trap_with_the_hooks_critical_log_and_fails_the_vm() {
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    let err = stream
        .try_request_headers(&[(":path", "/"), ("x-probe", "panic")], true)
        .unwrap_err();
    match &err {
        HarnessError::Trap {
            function,
            critical_logs,
            ..
        } => {
            assert_eq!(function, "proxy_on_request_headers");
            assert!(
                critical_logs
                    .iter()
                    .any(|l| l.contains("probe asked to panic")),
                "{critical_logs:?}"
            );
        }
        other => panic!("expected a trap, got {other}"),
    }
    assert!(
        plugin
            .logs(LogLevel::Critical)
            .iter()
            .any(|l| l.contains("probe asked to panic"))
    );
    assert!(plugin.failure().is_some());
    assert!(matches!(
        plugin.try_stream(),
        Err(HarnessError::VmFailed { .. })
    ));
}

#[test]
fn completing_a_stream_runs_done_log_and_delete() {
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    stream.request_headers(&[(":path", "/")], true);
    stream.response_headers(&[(":status", "200")], true);
    stream.complete();
    assert!(plugin.failure().is_none());
}

#[test]
fn filter_reads_and_replaces_the_whole_header_map() {
    let plugin = probe(&Host::new());
    let mut count = plugin.stream();
    count.request_headers(
        &[
            (":method", "GET"),
            (":path", "/"),
            ("x-probe", "header-count"),
        ],
        true,
    );
    assert_eq!(count.request_header("x-probe-result"), Some(b"3".to_vec()));

    let mut replace = plugin.stream();
    replace.request_headers(
        &[
            (":path", "/"),
            ("x-old", "1"),
            ("x-probe", "replace-all-headers"),
        ],
        true,
    );
    assert_eq!(
        replace.request_headers_now(),
        vec![
            (":path".to_string(), b"/replaced".to_vec()),
            ("x-only".to_string(), b"\xffyes".to_vec()),
        ]
    );
}

#[test]
fn request_trailers_reach_the_filter_and_its_additions_stay() {
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    stream.request_headers(&[(":path", "/")], false);
    stream.request_body(b"data", false);
    assert_eq!(
        stream.request_trailers(&[("x-probe-trailer", "1")]),
        Action::Continue
    );
    assert_eq!(
        stream.request_trailers_now(),
        vec![
            ("x-probe-trailer".to_string(), b"1".to_vec()),
            ("x-probe-trailer-seen".to_string(), b"yes".to_vec()),
        ]
    );
}

#[test]
fn reading_response_headers_during_the_request_path_fails_as_in_envoy() {
    // Envoy answers BadArgument for a map that does not exist yet, and the SDK panics on it:
    // the harness shows the bug before a real proxy does.
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    let err = stream
        .try_request_headers(
            &[(":path", "/"), ("x-probe", "response-header-in-request")],
            true,
        )
        .unwrap_err();
    let HarnessError::Trap { critical_logs, .. } = err else {
        panic!("expected a trap");
    };
    assert!(
        critical_logs
            .iter()
            .any(|l| l.contains("unexpected status: 2")),
        "{critical_logs:?}"
    );
}

#[test]
fn grpc_local_reply_carries_its_grpc_status() {
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    stream.request_headers(
        &[
            (":path", "/bank.Payments/Create"),
            ("x-probe", "grpc-reply not allowed"),
        ],
        true,
    );
    let reply = stream.local_response().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.grpc_status, Some(7));
    assert_eq!(reply.body_text(), "not allowed");
    assert_eq!(reply.header("x-probe"), Some(&b"grpc"[..]));
}

#[test]
fn reset_stream_is_reported_and_ends_the_stream() {
    let plugin = probe(&Host::new());
    let mut stream = plugin.stream();
    stream.request_headers(&[(":path", "/"), ("x-probe", "reset")], false);
    assert!(stream.was_reset());
    assert_eq!(stream.local_response(), None);
    assert_eq!(stream.request_body(b"more", true), Action::Pause);
}
