//! The slot table (`banking_filter_common::slots`, compiled into the probe) in a real .wasm,
//! with worker VMs running inside each other's window between reading a slot and writing it
//! back: every increment counts exactly once, and a new key ends up in exactly one slot.

use std::cell::RefCell;
use std::rc::Rc;
use test_harness::{Host, LogLevel, Plugin};

/// The probe's table: `probe/slots`, 8 slots, a probe of 4.
const SLOTS: u32 = 8;
const HEADER_LEN: usize = 20;

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

/// The slots whose record holds `key`, read straight from the host's shared data
/// (a record is a 20-byte header, with the key's length at bytes 14..16, then the key).
fn slots_holding(host: &Host, key: &str) -> Vec<u32> {
    (0..SLOTS)
        .filter(|n| {
            let Some((record, _)) = host.shared_data(&format!("probe/slots/slot/{n}")) else {
                return false;
            };
            let len = (key.len() as u16).to_be_bytes();
            record.get(14..16) == Some(len.as_slice())
                && record.get(HEADER_LEN..HEADER_LEN + key.len()) == Some(key.as_bytes())
        })
        .collect()
}

/// Runs `command` on `vms[0]`, with `vms[1..]` run the same way right after its next shared
/// data read: each VM's whole request lands between the previous VM's read and its write.
/// Returns the results, innermost first.
fn nested(vms: &[Plugin], command: &str) -> Vec<String> {
    let results = Rc::new(RefCell::new(Vec::new()));
    run_nested(vms, command, &results);
    results.take()
}

fn run_nested(vms: &[Plugin], command: &str, results: &Rc<RefCell<Vec<String>>>) {
    let Some((first, rest)) = vms.split_first() else {
        return;
    };
    if !rest.is_empty() {
        let (rest, command_inside, results_inside) =
            (rest.to_vec(), command.to_string(), results.clone());
        first.after_hostcall("proxy_get_shared_data", move || {
            run_nested(&rest, &command_inside, &results_inside);
        });
    }
    let result = run(first, command);
    results.borrow_mut().push(result);
}

fn workers(host: &Host, n: usize) -> Vec<Plugin> {
    let vms: Vec<Plugin> = (0..n).map(|_| probe(host)).collect();
    vms
}

fn retried(vm: &Plugin) -> bool {
    vm.logs(LogLevel::Info)
        .iter()
        .any(|l| l.starts_with("slot events") && l.contains("Retried"))
}

#[test]
fn two_vms_incrementing_one_key_inside_each_others_window_count_every_increment() {
    let host = Host::new();
    let vms = workers(&host, 2);
    assert_eq!(run(&vms[0], "slot-setup"), format!("created {SLOTS}"));
    for round in 0..3u64 {
        let results = nested(&vms, "slot-incr alice");
        let (inner, outer) = (2 * round + 1, 2 * round + 2);
        assert_eq!(results, vec![inner.to_string(), outer.to_string()]);
    }
    assert!(retried(&vms[0]), "the outer VM lost its CAS and read again");
    assert_eq!(run(&vms[1], "slot-incr alice"), "7");
    assert_eq!(slots_holding(&host, "alice").len(), 1);
}

#[test]
fn four_vms_nested_in_each_others_windows_lose_no_increment() {
    let host = Host::new();
    let vms = workers(&host, 4);
    assert_eq!(run(&vms[0], "slot-setup"), format!("created {SLOTS}"));
    for round in 0..3u64 {
        let results = nested(&vms, "slot-incr alice");
        let expected: Vec<String> = (1..=4).map(|i| (4 * round + i).to_string()).collect();
        assert_eq!(results, expected, "round {round}");
    }
    assert!(vms.iter().take(3).all(retried));
    assert_eq!(run(&vms[3], "slot-incr alice"), "13");
    assert_eq!(slots_holding(&host, "alice").len(), 1);
}

#[test]
fn two_vms_creating_one_new_key_at_once_leave_it_in_one_slot() {
    let host = Host::new();
    let vms = workers(&host, 2);
    assert_eq!(run(&vms[0], "slot-setup"), format!("created {SLOTS}"));
    assert_eq!(nested(&vms, "slot-incr bob"), vec!["1", "2"]);
    assert_eq!(slots_holding(&host, "bob").len(), 1);
}

#[test]
fn four_vms_creating_one_new_key_at_once_leave_it_in_one_slot() {
    let host = Host::new();
    let vms = workers(&host, 4);
    assert_eq!(run(&vms[0], "slot-setup"), format!("created {SLOTS}"));
    assert_eq!(nested(&vms, "slot-incr bob"), vec!["1", "2", "3", "4"]);
    assert_eq!(slots_holding(&host, "bob").len(), 1);
}

#[test]
fn vms_racing_to_create_the_table_itself_keep_the_one_claim() {
    // No `slot-setup`: every VM finds the home slot absent and creates it on first sight,
    // each inside the previous one's window; the creation writes must not wipe the claim.
    let host = Host::new();
    let vms = workers(&host, 4);
    assert_eq!(nested(&vms, "slot-incr carol"), vec!["1", "2", "3", "4"]);
    assert_eq!(slots_holding(&host, "carol").len(), 1);
    assert_eq!(run(&vms[0], "slot-setup"), format!("created {}", SLOTS - 1));
    assert_eq!(run(&vms[0], "slot-incr carol"), "5");
}

#[test]
fn a_new_key_raced_past_a_neighbour_on_its_home_slot_lands_in_one_slot() {
    let host = Host::new();
    let vms = workers(&host, 2);
    assert_eq!(run(&vms[0], "slot-setup"), format!("created {SLOTS}"));
    // Two keys with one home slot: the neighbour takes it, the new key goes one further.
    let home = run(&vms[0], "slot-home dave");
    let neighbour = (0..)
        .map(|i| format!("neighbour-{i}"))
        .find(|k| run(&vms[0], &format!("slot-home {k}")) == home)
        .unwrap();
    assert_eq!(run(&vms[0], &format!("slot-incr {neighbour}")), "1");
    // A reads the neighbour's slot, then the free one after it; B inserts `dave` there
    // before A writes.
    let b = vms[1].clone();
    let inside = Rc::new(RefCell::new(String::new()));
    let seen = inside.clone();
    vms[0].after_nth_hostcall("proxy_get_shared_data", 2, move || {
        *seen.borrow_mut() = run(&b, "slot-incr dave");
    });
    assert_eq!(run(&vms[0], "slot-incr dave"), "2");
    assert_eq!(*inside.borrow(), "1");
    let home: u32 = home.parse().unwrap();
    assert_eq!(slots_holding(&host, "dave"), vec![(home + 1) % SLOTS]);
    assert_eq!(slots_holding(&host, &neighbour), vec![home]);
}
