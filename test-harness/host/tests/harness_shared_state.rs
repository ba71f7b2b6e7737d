//! Scenarios for what the VMs of one proxy share: shared data with CAS, shared queues and
//! metrics, with two VMs standing in for two Envoy worker threads.

use test_harness::{Host, LoadOptions, LogLevel, MetricKind, Plugin};

fn probe(host: &Host) -> Plugin {
    host.load("harness_probe", "")
        .expect("run `make wasm` to build harness_probe.wasm")
}

/// Runs one probe command on a fresh stream and returns `x-probe-result`.
fn run(plugin: &Plugin, command: &str) -> String {
    let mut stream = plugin.stream();
    stream.request_headers(&[(":path", "/"), ("x-probe", command)], true);
    String::from_utf8(stream.request_header("x-probe-result").unwrap_or_default()).unwrap()
}

#[test]
fn two_vms_racing_on_one_key_one_wins_and_the_other_sees_cas_mismatch() {
    let host = Host::new();
    let worker_a = probe(&host);
    let worker_b = probe(&host);
    host.set_shared_data("balance", "100");

    // Both workers read the same version...
    let read_a = run(&worker_a, "shared-get balance");
    let read_b = run(&worker_b, "shared-get balance");
    assert_eq!(read_a, read_b);
    let cas = read_a.split(' ').nth(1).unwrap().to_string();

    // ...the first write with that CAS wins, the second is stale.
    assert_eq!(
        run(&worker_a, &format!("shared-set balance 90 {cas}")),
        "ok"
    );
    assert_eq!(
        run(&worker_b, &format!("shared-set balance 80 {cas}")),
        "cas-mismatch"
    );

    let (value, new_cas) = host.shared_data("balance").unwrap();
    assert_eq!(value, b"90".to_vec());
    assert_ne!(new_cas.to_string(), cas);
    // The loser retries with a fresh read and succeeds.
    assert_eq!(
        run(&worker_b, &format!("shared-set balance 80 {new_cas}")),
        "ok"
    );
    assert_eq!(host.shared_data("balance").unwrap().0, b"80".to_vec());
}

#[test]
fn absent_key_is_not_found_and_cas_zero_writes_unconditionally() {
    let host = Host::new();
    let plugin = probe(&host);
    assert_eq!(run(&plugin, "shared-get nothing"), "not-found");
    assert_eq!(run(&plugin, "shared-set k first"), "ok");
    assert_eq!(run(&plugin, "shared-set k second 0"), "ok");
    assert_eq!(host.shared_data("k").unwrap().0, b"second".to_vec());
    assert!(run(&plugin, "shared-get k").starts_with("second "));
}

#[test]
fn shared_data_is_scoped_by_vm_id() {
    let host = Host::new();
    let payments = host
        .load_with(LoadOptions::new("harness_probe").vm_id("payments"))
        .unwrap();
    let default = probe(&host);
    assert_eq!(run(&payments, "shared-set k p"), "ok");
    assert_eq!(run(&default, "shared-get k"), "not-found");
    assert_eq!(
        host.shared_data_in("payments", "k").unwrap().0,
        b"p".to_vec()
    );
    assert_eq!(payments.shared_data("k").unwrap().0, b"p".to_vec());
    assert_eq!(host.shared_data("k"), None);
}

#[test]
fn enqueue_from_the_test_notifies_the_vm_that_registered_the_queue() {
    let host = Host::new();
    let consumer = host.load("harness_probe", "queue=audit").unwrap();
    consumer.clear_logs();

    assert!(host.enqueue("", "audit", "record-1"));
    assert_eq!(
        consumer.logs(LogLevel::Info),
        vec!["queue audit got record-1".to_string()]
    );
    assert_eq!(
        host.queue_items("", "audit"),
        Some(vec![]),
        "the consumer drained it"
    );
    assert!(!host.enqueue("", "missing", "x"));
}

#[test]
fn enqueue_from_another_vm_is_delivered_after_its_callback() {
    let host = Host::new();
    let consumer = host
        .load_with(
            LoadOptions::new("harness_probe")
                .vm_id("audit-vm")
                .plugin_config("queue=events"),
        )
        .unwrap();
    let producer = host
        .load_with(LoadOptions::new("harness_probe").vm_id("edge"))
        .unwrap();
    consumer.clear_logs();
    assert_eq!(run(&producer, "queue-enqueue audit-vm events login"), "ok");
    assert_eq!(
        consumer.logs(LogLevel::Info),
        vec!["queue events got login".to_string()]
    );
    assert!(
        producer
            .logs(LogLevel::Info)
            .iter()
            .all(|l| !l.contains("queue events got"))
    );
}

#[test]
fn counters_are_read_by_name_and_shared_across_vms() {
    let host = Host::new();
    let worker_a = probe(&host);
    let worker_b = probe(&host);
    assert_eq!(host.metric("requests_seen"), None);
    run(&worker_a, "metric-inc requests_seen");
    run(&worker_b, "metric-inc requests_seen");
    run(&worker_b, "metric-inc requests_seen");
    assert_eq!(host.metric("requests_seen"), Some(3));
    assert_eq!(
        run(&worker_a, "metric-get requests_seen"),
        "3",
        "the filter reads the same stat"
    );
}

#[test]
fn gauges_are_set_and_histograms_record_samples() {
    let host = Host::new();
    let plugin = probe(&host);
    run(&plugin, "gauge-set queue_depth 7");
    run(&plugin, "gauge-set queue_depth 4");
    assert_eq!(host.metric("queue_depth"), Some(4));
    run(&plugin, "histogram-record latency_ms 12");
    run(&plugin, "histogram-record latency_ms 30");
    assert_eq!(host.histogram("latency_ms"), Some(vec![12, 30]));
    assert_eq!(
        host.metric("latency_ms"),
        None,
        "histograms have no single value"
    );
    let kinds: Vec<_> = host
        .metrics()
        .into_iter()
        .map(|(name, kind, _)| (name, kind))
        .collect();
    assert!(kinds.contains(&("queue_depth".to_string(), MetricKind::Gauge)));
    assert!(kinds.contains(&("latency_ms".to_string(), MetricKind::Histogram)));
}
