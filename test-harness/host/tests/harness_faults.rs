//! The harness's fault injection, interleaving hook, foreign functions and VM lifecycle,
//! proven on the probe filter (`test-harness/probe-filter`).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use test_harness::{Action, HarnessError, Host, HostStatus, Plugin};

fn probe(host: &Host, config: &str) -> Plugin {
    host.load("harness_probe", config)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs one probe command on a new stream and returns its `x-probe-result`.
fn run(plugin: &Plugin, command: &str) -> String {
    let mut stream = plugin.stream();
    stream.request_headers(&[(":path", "/"), ("x-probe", command)], true);
    String::from_utf8(stream.request_header("x-probe-result").unwrap_or_default()).unwrap()
}

#[test]
fn a_fault_answers_its_status_for_the_next_n_calls_then_the_call_works_again() {
    let host = Host::new();
    let plugin = probe(&host, "");
    host.fail_hostcall("proxy_set_shared_data", HostStatus::CasMismatch, 2);
    assert_eq!(run(&plugin, "shared-set k v"), "cas-mismatch");
    assert_eq!(run(&plugin, "shared-set k v"), "cas-mismatch");
    assert_eq!(run(&plugin, "shared-set k v"), "ok");
    assert_eq!(host.shared_data("k").map(|(v, _)| v), Some(b"v".to_vec()));
    assert_eq!(host.hostcall_count("proxy_set_shared_data"), 3);
}

#[test]
fn a_plugin_scoped_fault_leaves_other_vms_alone() {
    let host = Host::new();
    let (a, b) = (probe(&host, ""), probe(&host, ""));
    a.fail_hostcall("proxy_set_shared_data", HostStatus::CasMismatch, 1);
    assert_eq!(run(&b, "shared-set k v"), "ok");
    assert_eq!(run(&a, "shared-set k v"), "cas-mismatch");
}

#[test]
fn the_sdk_traps_on_a_status_it_does_not_expect_which_our_host_layer_exists_to_prevent() {
    // The probe is built on the proxy-wasm SDK: a NotFound from set_shared_data panics there.
    let host = Host::new();
    let plugin = probe(&host, "");
    host.fail_hostcall("proxy_set_shared_data", HostStatus::NotFound, 1);
    let mut stream = plugin.stream();
    let trapped =
        stream.try_request_headers(&[(":path", "/"), ("x-probe", "shared-set k v")], true);
    assert!(
        matches!(trapped, Err(HarnessError::Trap { .. })),
        "{trapped:?}"
    );
}

#[test]
fn an_after_hook_runs_another_vm_between_a_read_and_what_follows() {
    let host = Host::new();
    let (a, b) = (probe(&host, ""), probe(&host, ""));
    assert_eq!(run(&a, "shared-set k old"), "ok");
    let b_inside = b.clone();
    let b_result = Rc::new(RefCell::new(String::new()));
    let seen = b_result.clone();
    a.after_hostcall("proxy_get_shared_data", move || {
        *seen.borrow_mut() = run(&b_inside, "shared-set k new");
    });
    // A read `old` before B wrote `new`; its own result shows what it read.
    let read = run(&a, "shared-get k");
    assert!(read.starts_with("old "), "{read}");
    assert_eq!(*b_result.borrow(), "ok");
    assert!(run(&a, "shared-get k").starts_with("new "));
    // The hook fired once.
    assert!(run(&a, "shared-get k").starts_with("new "));
}

#[test]
fn a_hook_that_drives_the_interrupted_vm_gets_busy_not_a_deadlock() {
    let host = Host::new();
    let a = probe(&host, "");
    let a_inside = a.clone();
    let outcome = Rc::new(RefCell::new(None));
    let seen = outcome.clone();
    a.after_hostcall("proxy_get_shared_data", move || {
        *seen.borrow_mut() = Some(matches!(
            a_inside.try_stream(),
            Err(HarnessError::Busy { .. })
        ));
    });
    run(&a, "shared-get k");
    assert_eq!(*outcome.borrow(), Some(true));
}

#[test]
fn foreign_functions_answer_what_the_test_registered_and_are_counted() {
    let host = Host::new();
    let plugin = probe(&host, "");
    host.register_foreign_function("shout", |args| Ok(args.to_ascii_uppercase()));
    host.register_foreign_function("refuse", |_| Err(2));
    assert_eq!(run(&plugin, "foreign shout quiet"), "QUIET");
    assert_eq!(run(&plugin, "foreign refuse x"), "error BadArgument");
    assert_eq!(run(&plugin, "foreign absent x"), "error NotFound");
    assert_eq!(host.foreign_function_calls("shout"), 1);
    assert_eq!(host.foreign_function_calls("absent"), 1);
}

#[test]
fn shutdown_waits_for_a_filter_that_flushes_then_the_vm_is_gone() {
    let host = Host::new();
    let plugin = probe(&host, "flush_on_done=probe_flush");
    assert!(!plugin.shutdown().unwrap(), "the probe defers its shutdown");
    assert_eq!(
        host.shared_data("probe_flush").map(|(v, _)| v),
        Some(b"flushed".to_vec())
    );
    // Its tick calls proxy_done.
    host.advance(Duration::from_millis(10));
    assert!(plugin.shutdown().unwrap());
    assert!(matches!(
        plugin.try_stream(),
        Err(HarnessError::VmFailed { .. })
    ));
}

#[test]
fn a_filter_that_does_not_defer_is_gone_at_once() {
    let host = Host::new();
    let plugin = probe(&host, "");
    assert!(plugin.shutdown().unwrap());
    assert!(plugin.failure().is_some());
}

#[test]
fn restart_gives_a_fresh_vm_that_keeps_the_proxys_shared_data() {
    let host = Host::new();
    let plugin = probe(&host, "");
    assert_eq!(run(&plugin, "shared-set kept yes"), "ok");
    let mut stream = plugin.stream();
    let _ = stream.try_request_headers(&[(":path", "/"), ("x-probe", "panic")], true);
    assert!(plugin.failure().is_some(), "the VM trapped");
    let fresh = plugin.restart().unwrap_or_else(|e| panic!("{e}"));
    assert!(run(&fresh, "shared-get kept").starts_with("yes "));
    let mut next = fresh.stream();
    assert_eq!(
        next.request_headers(&[(":path", "/")], true),
        Action::Continue
    );
}
