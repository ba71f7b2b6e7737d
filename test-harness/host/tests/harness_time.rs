//! Scenarios for the virtual clock: ticks at the configured period, both clocks the filter can
//! read, and deterministic randomness.

use std::time::{Duration, UNIX_EPOCH};

use test_harness::{Host, LoadOptions, LogLevel, Plugin};

fn run(plugin: &Plugin, command: &str) -> String {
    let mut stream = plugin.stream();
    stream.request_headers(&[(":path", "/"), ("x-probe", command)], true);
    String::from_utf8(stream.request_header("x-probe-result").unwrap_or_default()).unwrap()
}

fn now_nanos(host: &Host) -> u128 {
    host.now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

#[test]
fn ticks_fire_at_the_configured_period_as_the_clock_advances() {
    let host = Host::new();
    let plugin = host.load("harness_probe", "tick_ms=100").unwrap();
    assert_eq!(plugin.tick_period(), Some(Duration::from_millis(100)));

    host.advance(Duration::from_millis(99));
    assert_eq!(host.metric("probe_ticks"), None, "not due yet");
    host.advance(Duration::from_millis(1));
    assert_eq!(host.metric("probe_ticks"), Some(1));

    // A long advance fires every tick on the way, each at its own time.
    plugin.clear_logs();
    host.advance(Duration::from_millis(350));
    assert_eq!(host.metric("probe_ticks"), Some(4));
    assert_eq!(host.shared_data("probe_ticks").unwrap().0, b"4".to_vec());
    let start = now_nanos(&host) - 450_000_000;
    let expected: Vec<String> = (2..=4)
        .map(|n| format!("tick {n} at {}", start + n as u128 * 100_000_000))
        .collect();
    assert_eq!(plugin.logs(LogLevel::Debug), expected);
}

#[test]
fn ticks_of_several_vms_interleave_in_time_order() {
    let host = Host::new();
    let fast = host
        .load_with(
            LoadOptions::new("harness_probe")
                .vm_id("fast")
                .plugin_config("tick_ms=30"),
        )
        .unwrap();
    let slow = host
        .load_with(
            LoadOptions::new("harness_probe")
                .vm_id("slow")
                .plugin_config("tick_ms=70"),
        )
        .unwrap();
    host.advance(Duration::from_millis(210));
    assert_eq!(
        host.shared_data_in("fast", "probe_ticks").unwrap().0,
        b"7".to_vec()
    );
    assert_eq!(
        host.shared_data_in("slow", "probe_ticks").unwrap().0,
        b"3".to_vec()
    );
    assert_eq!(host.metric("probe_ticks"), Some(10), "one stat, both VMs");
    // Each VM saw the clock at its own tick times.
    let last_fast = fast.logs(LogLevel::Debug).pop().unwrap();
    let last_slow = slow.logs(LogLevel::Debug).pop().unwrap();
    assert_eq!(last_fast, format!("tick 7 at {}", now_nanos(&host)));
    assert_eq!(last_slow, format!("tick 3 at {}", now_nanos(&host)));
}

#[test]
fn no_tick_without_a_period() {
    let host = Host::new();
    let plugin = host.load("harness_probe", "").unwrap();
    host.advance(Duration::from_secs(3600));
    assert_eq!(plugin.tick_period(), None);
    assert_eq!(host.metric("probe_ticks"), None);
}

#[test]
fn both_proxy_wasm_and_wasi_clocks_read_the_virtual_clock() {
    let host = Host::new();
    let plugin = host.load("harness_probe", "").unwrap();
    let start = now_nanos(&host);
    assert_eq!(run(&plugin, "time"), start.to_string());
    host.advance(Duration::from_secs(90));
    assert_eq!(run(&plugin, "time"), (start + 90_000_000_000).to_string());
    assert_eq!(
        run(&plugin, "wasi-time"),
        (start + 90_000_000_000).to_string()
    );

    host.set_now(UNIX_EPOCH + Duration::from_secs(2_000_000_000));
    assert_eq!(run(&plugin, "time"), "2000000000000000000");
}

#[test]
fn randomness_is_deterministic_for_a_seed() {
    let draw = |seed: u64| {
        let host = Host::new();
        host.set_random_seed(seed);
        let plugin = host.load("harness_probe", "").unwrap();
        run(&plugin, "random 16")
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
    assert_eq!(draw(7).len(), 32);
}
