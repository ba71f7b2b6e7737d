//! The rate-limit filter's real .wasm under the emulated host: the shipped banking policy,
//! each key kind, check-all-then-charge with refunds, worker VMs racing on one bucket,
//! slot exhaustion and reclaim, contention, a config push, dry-run, and the response fields
//! parsed as structured fields.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};
use test_harness::{Action, HarnessError, Host, HostStatus, LogLevel, Plugin, Stream};

const FILTER: &str = "rate_limit";

fn load(host: &Host, config: &str) -> Plugin {
    match host.load(FILTER, config) {
        Ok(p) => p,
        Err(e @ HarnessError::WasmNotBuilt { .. }) => panic!("{e} (run `make wasm`)"),
        Err(e) => panic!("{e}"),
    }
}

fn shipped_config() -> String {
    envoy_runner::fixture::shipped(&["rate-limit"])[0]
        .configuration_json()
        .expect("a pluginConfig")
}

/// A config of `limits` (JSON objects, comma-separated) and more top-level members.
fn config(limits: &str, extra: &str) -> String {
    format!(r#"{{"instance":"test","limits":[{limits}]{extra}}}"#)
}

/// The identity jwt-auth would publish for a customer.
fn identity(customer: &str) -> String {
    json!({
        "issuer": "https://idp.bank.example",
        "subject": format!("user-{customer}"),
        "customer": customer,
        "client": "mobile-app",
        "scopes": ["payments:write"],
    })
    .to_string()
}

/// One request: `identity` as jwt-auth's filter state (if any), then the headers.
fn send(
    plugin: &Plugin,
    method: &str,
    path: &str,
    identity: Option<&str>,
    extra: &[(&str, &str)],
) -> (Action, Stream) {
    let mut stream = plugin.stream();
    if let Some(identity) = identity {
        stream.set_property(&["banking.jwt.identity"], identity);
    }
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", "api.bank.example"),
    ];
    headers.extend_from_slice(extra);
    let action = stream.request_headers(&headers, true);
    (action, stream)
}

/// A payment by `customer` under the shipped policy.
fn pay(plugin: &Plugin, customer: &str) -> (Action, Stream) {
    send(
        plugin,
        "POST",
        "/payments",
        Some(&identity(customer)),
        &[("x-banking-operation", "payment.create")],
    )
}

fn status(action: Action, stream: &Stream) -> u32 {
    match (action, stream.local_response()) {
        (Action::Continue, None) => 200,
        (_, Some(response)) => response.status,
        (other, None) => panic!("paused without a response: {other:?}"),
    }
}

fn metric(host: &Host, name: &str) -> u64 {
    host.metric(&format!("banking_rate_limit_{name}"))
        .unwrap_or_else(|| panic!("no metric banking_rate_limit_{name}"))
}

fn header(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
}

/// A `RateLimit`/`RateLimit-Policy` value parsed as an RFC 9651 list: (name, parameters).
fn parse_field(value: &str) -> Vec<(String, Vec<(String, i64)>)> {
    use sfv::{BareItem, ListEntry, Parser};
    let list = Parser::parse_list(value.as_bytes())
        .unwrap_or_else(|e| panic!("{value:?} is not a structured-field list: {e}"));
    list.into_iter()
        .map(|entry| {
            let ListEntry::Item(item) = entry else {
                panic!("{value:?}: an inner list");
            };
            let BareItem::String(name) = &item.bare_item else {
                panic!("{value:?}: the item is not a string");
            };
            let params = item
                .params
                .iter()
                .map(|(k, v)| {
                    let BareItem::Integer(n) = v else {
                        panic!("{value:?}: {k} is not an integer");
                    };
                    (k.clone(), *n)
                })
                .collect();
            (name.clone(), params)
        })
        .collect()
}

#[test]
fn a_customer_gets_three_payments_at_once_then_429_with_the_fields_and_when_to_retry() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    for remaining in [2, 1, 0] {
        let (action, mut stream) = pay(&plugin, "CUST-1");
        assert_eq!(status(action, &stream), 200);
        stream.response_headers(&[(":status", "201")], true);
        let fields = stream.response_headers_now();
        // payment_create (3 at once) is tighter than payments_per_proxy (1,000).
        let ratelimit = header(&fields, "ratelimit").expect("RateLimit on an allowed response");
        assert_eq!(
            parse_field(&ratelimit),
            [(
                "payment_create".to_string(),
                vec![("r".into(), remaining), ("t".into(), 6 * (3 - remaining))]
            )]
        );
    }
    let (action, stream) = pay(&plugin, "CUST-1");
    assert_eq!(status(action, &stream), 429);
    let response = stream.local_response().unwrap();
    assert_eq!(
        header(&response.headers, "content-type").as_deref(),
        Some("application/problem+json")
    );
    // One request a 6 s (10 a minute): the next fits in 6 s, the bucket is full in 18.
    assert_eq!(
        header(&response.headers, "retry-after").as_deref(),
        Some("6")
    );
    assert_eq!(
        parse_field(&header(&response.headers, "ratelimit-policy").unwrap()),
        [(
            "payment_create".to_string(),
            vec![("q".into(), 10), ("w".into(), 60)]
        )]
    );
    assert_eq!(
        parse_field(&header(&response.headers, "ratelimit").unwrap()),
        [(
            "payment_create".to_string(),
            vec![("r".into(), 0), ("t".into(), 18)]
        )]
    );
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["type"], "urn:banking-filters:problem:rate-limited");
    assert_eq!(body["status"], 429);
    assert_eq!(body["limit"], "payment_create");
    assert!(!String::from_utf8_lossy(&response.body).contains("CUST-1"));
    assert_eq!(
        stream.property(&["banking.decision.reason"]),
        Some(b"rate-limited".to_vec())
    );
    assert_eq!(metric(&host, "allowed_payment_create"), 3);
    assert_eq!(metric(&host, "limited_payment_create"), 1);
    // Another customer has a bucket of its own.
    let (action, stream) = pay(&plugin, "CUST-2");
    assert_eq!(status(action, &stream), 200);
}

#[test]
fn the_quota_comes_back_at_the_rate_and_never_earlier() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    for _ in 0..3 {
        pay(&plugin, "CUST-1");
    }
    host.advance(Duration::from_millis(5_999));
    let (action, stream) = pay(&plugin, "CUST-1");
    assert_eq!(status(action, &stream), 429);
    assert_eq!(
        header(&stream.local_response().unwrap().headers, "retry-after").as_deref(),
        Some("1")
    );
    host.advance(Duration::from_millis(1));
    let (action, stream) = pay(&plugin, "CUST-1");
    assert_eq!(status(action, &stream), 200);
    let (action, stream) = pay(&plugin, "CUST-1");
    assert_eq!(status(action, &stream), 429);
    // A minute idle: the whole burst again.
    host.advance(Duration::from_secs(60));
    let allowed = (0..5)
        .filter(|_| {
            let (action, stream) = pay(&plugin, "CUST-1");
            status(action, &stream) == 200
        })
        .count();
    assert_eq!(allowed, 3);
}

/// Four limits, one per key kind, each 2 at once on its own path.
fn kinds_config(extra: &str) -> String {
    let limit = |name: &str, key: &str| {
        format!(
            r#"{{"name":"{name}","pathPrefix":"/{name}","key":"{key}","quota":2,"window":"1h"}}"#
        )
    };
    config(
        &[
            limit("by_subject", "subject"),
            limit("by_client", "client"),
            limit("by_address", "clientAddress"),
            limit("by_proxy", "proxy"),
        ]
        .join(","),
        extra,
    )
}

fn allowed_of(
    plugin: &Plugin,
    path: &str,
    identity: Option<&str>,
    extra: &[(&str, &str)],
    n: usize,
) -> usize {
    (0..n)
        .filter(|_| {
            let (action, stream) = send(plugin, "GET", path, identity, extra);
            status(action, &stream) == 200
        })
        .count()
}

#[test]
fn each_key_kind_has_its_own_buckets() {
    let host = Host::new();
    let plugin = load(
        &host,
        &kinds_config(r#","clientAddress":{"trustedHops":1}"#),
    );
    let alice = identity("CUST-1");
    let bob = identity("CUST-2");
    // Subject: Alice and Bob each get 2.
    assert_eq!(allowed_of(&plugin, "/by_subject", Some(&alice), &[], 4), 2);
    assert_eq!(allowed_of(&plugin, "/by_subject", Some(&bob), &[], 4), 2);
    // Client: both use mobile-app, one bucket.
    assert_eq!(allowed_of(&plugin, "/by_client", Some(&alice), &[], 1), 1);
    assert_eq!(allowed_of(&plugin, "/by_client", Some(&bob), &[], 4), 1);
    // Address: one trusted hop, so the second entry from the right; what the client put
    // further left does not matter.
    let from = |client: &'static str| [("x-forwarded-for", client)];
    assert_eq!(
        allowed_of(
            &plugin,
            "/by_address",
            None,
            &from("1.1.1.1, 203.0.113.5, 10.0.0.1"),
            4
        ),
        2
    );
    assert_eq!(
        allowed_of(
            &plugin,
            "/by_address",
            None,
            &from("9.9.9.9, 203.0.113.5, 10.0.0.1"),
            4
        ),
        0,
        "a spoofed leftmost entry is not a new client"
    );
    assert_eq!(
        allowed_of(
            &plugin,
            "/by_address",
            None,
            &from("203.0.113.6, 10.0.0.1"),
            4
        ),
        2
    );
    // Proxy: one bucket for everyone.
    assert_eq!(allowed_of(&plugin, "/by_proxy", Some(&alice), &[], 1), 1);
    assert_eq!(allowed_of(&plugin, "/by_proxy", None, &[], 4), 1);
}

#[test]
fn a_header_the_client_sends_never_picks_the_bucket() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    let alice = identity("CUST-1");
    for _ in 0..3 {
        pay(&plugin, "CUST-1");
    }
    // Alice claims to be someone else in every header a naive limiter might read.
    let (action, stream) = send(
        &plugin,
        "POST",
        "/payments",
        Some(&alice),
        &[
            ("x-banking-operation", "payment.create"),
            ("x-customer-id", "CUST-99"),
            ("x-jwt-claim-customer_id", "CUST-99"),
            ("x-forwarded-for", "198.51.100.1"),
        ],
    );
    assert_eq!(status(action, &stream), 429);
}

#[test]
fn without_an_identity_a_customer_limit_refuses_or_falls_back_to_the_address() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    let (action, stream) = send(
        &plugin,
        "POST",
        "/payments",
        None,
        &[("x-banking-operation", "payment.create")],
    );
    assert_eq!(status(action, &stream), 403);
    let body: Value = serde_json::from_slice(&stream.local_response().unwrap().body).unwrap();
    assert_eq!(
        body["type"],
        "urn:banking-filters:problem:identity-required"
    );
    assert_eq!(metric(&host, "identity_required"), 1);
    // Nothing was charged: the proxy-wide limit saw no request.
    assert_eq!(metric(&host, "allowed_payments_per_proxy"), 0);

    let host = Host::new();
    let mut shipped: Value = serde_json::from_str(&shipped_config()).unwrap();
    shipped["withoutIdentity"] = json!("clientAddress");
    shipped["clientAddress"] = json!({"trustedHops": 0});
    let plugin = load(&host, &shipped.to_string());
    let anonymous = |ip: &'static str| {
        let (action, stream) = send(
            &plugin,
            "POST",
            "/payments",
            None,
            &[
                ("x-banking-operation", "payment.create"),
                ("x-forwarded-for", ip),
            ],
        );
        status(action, &stream)
    };
    let statuses: Vec<u32> = (0..4).map(|_| anonymous("203.0.113.5")).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_eq!(anonymous("203.0.113.6"), 200);
}

#[test]
fn an_exempt_subject_and_a_bypass_path_are_never_limited() {
    let host = Host::new();
    let mut shipped: Value = serde_json::from_str(&shipped_config()).unwrap();
    shipped["exemptSubjects"] =
        json!([{"issuer": "https://idp.bank.example", "subject": "user-BATCH"}]);
    let plugin = load(&host, &shipped.to_string());
    let statuses: Vec<u32> = (0..10)
        .map(|_| {
            let (action, stream) = pay(&plugin, "BATCH");
            status(action, &stream)
        })
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // The same subject from another identity provider is not exempt.
    let other_issuer = json!({"issuer": "https://partner.example", "subject": "user-BATCH",
                              "customer": "BATCH"})
    .to_string();
    let limited = (0..5)
        .filter(|_| {
            let (action, stream) = send(
                &plugin,
                "POST",
                "/payments",
                Some(&other_issuer),
                &[("x-banking-operation", "payment.create")],
            );
            status(action, &stream) == 429
        })
        .count();
    assert_eq!(limited, 2);
    // /healthz is a bypass path: a read limit would cover it, and a request without an
    // identity would get 403 there, were it not bypassed.
    for _ in 0..3 {
        let (action, stream) = send(
            &plugin,
            "GET",
            "/healthz",
            None,
            &[("x-banking-operation", "account.read")],
        );
        assert_eq!(status(action, &stream), 200);
    }
}

#[test]
fn by_default_the_client_address_is_envoys_not_x_forwarded_for() {
    let host = Host::new();
    let plugin = load(&host, &kinds_config(""));
    let from = |peer: &str, xff: &str| {
        let mut stream = plugin.stream();
        stream.set_property(&["source", "address"], peer);
        let action = stream.request_headers(
            &[
                (":method", "GET"),
                (":path", "/by_address"),
                (":authority", "api.bank.example"),
                ("x-forwarded-for", xff),
            ],
            true,
        );
        status(action, &stream)
    };
    // Rotating x-forwarded-for does not give a client new buckets.
    let statuses: Vec<u32> = (0..4)
        .map(|n| from("203.0.113.5:40000", &format!("198.51.100.{n}")))
        .collect();
    assert_eq!(statuses, [200, 200, 429, 429]);
    assert_eq!(from("203.0.113.6:40000", "198.51.100.1"), 200);
}

#[test]
fn a_request_without_its_operation_header_does_not_escape_the_operations_limit() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    let statuses: Vec<u32> = (0..4)
        .map(|_| {
            let (action, stream) =
                send(&plugin, "POST", "/payments", Some(&identity("CUST-1")), &[]);
            status(action, &stream)
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
}

/// Runs `run` on `vms[0]` with each later VM's `run` nested right after the previous VM's
/// first shared-data read: each whole request lands between another's read and its write.
fn nested(vms: &[Plugin], run: Rc<dyn Fn(&Plugin) -> u32>, results: &Rc<RefCell<Vec<u32>>>) {
    let Some((first, rest)) = vms.split_first() else {
        return;
    };
    if !rest.is_empty() {
        let (rest, inner, results_inside) = (rest.to_vec(), run.clone(), results.clone());
        first.after_hostcall("proxy_get_shared_data", move || {
            nested(&rest, inner, &results_inside);
        });
    }
    let status = run(first);
    results.borrow_mut().push(status);
}

fn racing_vms_allow_exactly_the_quota(workers: usize) {
    let host = Host::new();
    // 5 an hour at once: no refill during the test.
    let limit = r#"{"name":"tight","key":"customer","quota":5,"window":"1h"}"#;
    let vms: Vec<Plugin> = (0..workers)
        .map(|_| load(&host, &config(limit, "")))
        .collect();
    let run: Rc<dyn Fn(&Plugin) -> u32> = Rc::new(|vm: &Plugin| {
        let (action, stream) = send(vm, "GET", "/accounts", Some(&identity("CUST-1")), &[]);
        status(action, &stream)
    });
    let results = Rc::new(RefCell::new(Vec::new()));
    // Rounds of every worker inside each other's window, from the key's first request on.
    for _ in 0..4 {
        nested(&vms, run.clone(), &results);
    }
    let results = results.take();
    assert_eq!(results.len(), 4 * workers);
    let allowed = results.iter().filter(|s| **s == 200).count();
    assert_eq!(allowed, 5, "{results:?}");
    assert!(
        results.iter().all(|s| *s == 200 || *s == 429),
        "{results:?}"
    );
    assert!(metric(&host, "slot_retried") > 0, "the races happened");
    assert_eq!(metric(&host, "slot_claimed"), 1, "one bucket for the key");
}

#[test]
fn two_workers_racing_on_one_new_key_allow_exactly_the_quota() {
    racing_vms_allow_exactly_the_quota(2);
}

#[test]
fn four_workers_racing_on_one_new_key_allow_exactly_the_quota() {
    racing_vms_allow_exactly_the_quota(4);
}

#[test]
fn a_charge_refused_by_a_later_limit_is_given_back_even_when_another_worker_took_it() {
    let host = Host::new();
    // Per customer: 1 an hour. Proxy-wide: 1 every 10 s.
    let limits = r#"{"name":"per_customer","key":"customer","quota":1,"window":"1h"},
        {"name":"per_proxy","key":"proxy","quota":1,"window":"10s"}"#;
    let a = load(&host, &config(limits, ""));
    let b = load(&host, &config(limits, ""));
    // Worker A charges Alice's bucket; before it reaches the proxy bucket, worker B's
    // request for Bob takes the proxy's only unit.
    let b_status = Rc::new(RefCell::new(0));
    let (b_inner, b_seen) = (b.clone(), b_status.clone());
    // Her slot's creation is the first write, her charge the second.
    a.after_nth_hostcall("proxy_set_shared_data", 2, move || {
        let (action, stream) = send(&b_inner, "GET", "/accounts", Some(&identity("CUST-2")), &[]);
        *b_seen.borrow_mut() = status(action, &stream);
    });
    let (action, stream) = send(&a, "GET", "/accounts", Some(&identity("CUST-1")), &[]);
    assert_eq!(*b_status.borrow(), 200);
    assert_eq!(status(action, &stream), 429);
    let body: Value = serde_json::from_slice(&stream.local_response().unwrap().body).unwrap();
    assert_eq!(body["limit"], "per_proxy");
    // Alice's charge was given back: once the proxy bucket refills she is allowed, though
    // her own limit allows one an hour.
    host.advance(Duration::from_secs(10));
    let (action, stream) = send(&a, "GET", "/accounts", Some(&identity("CUST-1")), &[]);
    assert_eq!(status(action, &stream), 200);
    assert_eq!(metric(&host, "refund_failed"), 0);
}

#[test]
fn a_full_table_follows_on_contention_and_idle_buckets_are_reclaimed() {
    let host = Host::new();
    let limit = r#"{"name":"small","key":"customer","quota":1,"window":"10s","slots":2}"#;
    let plugin = load(&host, &config(limit, ""));
    let customer = |id: &str| {
        let (action, stream) = send(&plugin, "GET", "/accounts", Some(&identity(id)), &[]);
        status(action, &stream)
    };
    assert_eq!(customer("CUST-1"), 200);
    assert_eq!(customer("CUST-2"), 200);
    // Two buckets, both live: a third customer finds none and is refused (onContention deny).
    assert_eq!(customer("CUST-3"), 429);
    assert_eq!(metric(&host, "contention_denied_small"), 1);
    // Once the buckets have refilled (and the reclaim grace passed), new keys take them.
    host.advance(Duration::from_secs(12));
    assert_eq!(customer("CUST-3"), 200);
    assert_eq!(customer("CUST-4"), 200);
    assert_eq!(metric(&host, "slot_reclaimed"), 2);
    // The occupancy gauge counts live buckets on the tick.
    plugin.tick();
    assert_eq!(metric(&host, "slots_in_use_small"), 2);
}

#[test]
fn new_customers_are_not_refused_because_idle_buckets_are_in_their_way() {
    // Buckets refill within a millisecond, so every customer before leaves a slot that is
    // idle but still in its reclaim grace when the next one comes.
    let host = Host::new();
    let limit = r#"{"name":"churn","key":"customer","quota":1000,"window":"1s","slots":16}"#;
    let plugin = load(&host, &config(limit, ""));
    let mut statuses = Vec::new();
    for n in 0..200 {
        let (action, stream) = send(
            &plugin,
            "GET",
            "/accounts",
            Some(&identity(&format!("CUST-{n}"))),
            &[],
        );
        statuses.push(status(action, &stream));
        host.advance(Duration::from_millis(50));
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(metric(&host, "slot_reclaimed") > 100);
    plugin.tick();
    assert!(metric(&host, "slots_in_use_churn") <= 16);
}

#[test]
fn lost_compare_and_swaps_follow_on_contention_and_are_counted() {
    for (policy, expected, counter) in [
        ("deny", 429, "contention_denied_hot"),
        ("allow", 200, "contention_allowed_hot"),
    ] {
        let host = Host::new();
        let limit = format!(
            r#"{{"name":"hot","key":"proxy","quota":100,"window":"1s","onContention":"{policy}"}}"#
        );
        let plugin = load(&host, &config(&limit, ""));
        // The slot is created by the first request; fail every write after that.
        let (action, stream) = send(&plugin, "GET", "/", None, &[]);
        assert_eq!(status(action, &stream), 200);
        host.fail_hostcall("proxy_set_shared_data", HostStatus::CasMismatch, 8);
        let (action, stream) = send(&plugin, "GET", "/", None, &[]);
        assert_eq!(status(action, &stream), expected, "{policy}");
        assert_eq!(metric(&host, counter), 1);
        assert_eq!(metric(&host, "slot_retried"), 8);
    }
}

#[test]
fn a_config_push_keeps_the_buckets_of_limits_it_keeps() {
    let host = Host::new();
    let before = load(&host, &shipped_config());
    for _ in 0..3 {
        pay(&before, "CUST-1");
    }
    // The push raises the quota and adds a limit: payment_create keeps its name and key.
    let mut pushed: Value = serde_json::from_str(&shipped_config()).unwrap();
    pushed["limits"][0]["quota"] = json!(20);
    pushed["limits"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "extra", "key": "proxy", "quota": 5, "window": "1s"}));
    let after = load(&host, &pushed.to_string());
    let (action, stream) = pay(&after, "CUST-1");
    assert_eq!(status(action, &stream), 429, "the bucket survived the push");
    // A renamed limit starts afresh.
    pushed["limits"][0]["name"] = json!("payment_create_v2");
    let renamed = load(&host, &pushed.to_string());
    let (action, stream) = pay(&renamed, "CUST-1");
    assert_eq!(status(action, &stream), 200);
    // A push to a faster rate: the kept bucket counts as empty under it, not as the old
    // rate's 18 s of waiting; it refills at the new rate (10 a second, 100 ms apart).
    pushed["limits"][0]["name"] = json!("payment_create");
    pushed["limits"][0]["window"] = json!("1s");
    pushed["limits"][0]["quota"] = json!(10);
    let faster = load(&host, &pushed.to_string());
    let (action, stream) = pay(&faster, "CUST-1");
    assert_eq!(status(action, &stream), 429);
    host.advance(Duration::from_millis(100));
    let (action, stream) = pay(&faster, "CUST-1");
    assert_eq!(status(action, &stream), 200);
}

#[test]
fn dry_run_never_refuses_charges_nothing_over_the_limit_and_logs_once_per_window() {
    let host = Host::new();
    let mut shipped: Value = serde_json::from_str(&shipped_config()).unwrap();
    shipped["mode"] = json!("dryRun");
    let plugin = load(&host, &shipped.to_string());
    for _ in 0..6 {
        let (action, stream) = pay(&plugin, "CUST-1");
        assert_eq!(status(action, &stream), 200);
    }
    assert_eq!(metric(&host, "allowed_payment_create"), 3);
    assert_eq!(metric(&host, "would_limit_payment_create"), 3);
    assert_eq!(metric(&host, "limited_payment_create"), 0);
    let logged = plugin.logs(LogLevel::Info);
    let lines = logged
        .iter()
        .filter(|l| l.contains("limit payment_create would refuse"))
        .count();
    assert_eq!(lines, 1, "{logged:?}");
    let (_, stream) = pay(&plugin, "CUST-1");
    assert_eq!(
        stream.property(&["banking.decision.would_deny"]),
        Some(b"rate-limit:rate-limited".to_vec())
    );
}

#[test]
fn a_host_that_refuses_shared_data_gets_503_never_a_trap() {
    let host = Host::new();
    let plugin = load(&host, &shipped_config());
    host.fail_hostcall("proxy_get_shared_data", HostStatus::InternalFailure, 1);
    let (action, stream) = pay(&plugin, "CUST-1");
    assert_eq!(status(action, &stream), 503);
    let response = stream.local_response().unwrap();
    assert_eq!(
        header(&response.headers, "retry-after").as_deref(),
        Some("1")
    );
    assert_eq!(metric(&host, "unavailable"), 1);
    assert!(plugin.failure().is_none());
    // A malformed identity fails closed.
    let (action, stream) = send(
        &plugin,
        "POST",
        "/payments",
        Some(r#"{"subject":"no-issuer"}"#),
        &[("x-banking-operation", "payment.create")],
    );
    assert_eq!(status(action, &stream), 500);
}

#[test]
fn a_bad_config_is_refused_naming_the_field() {
    let host = Host::new();
    let bad = config(r#"{"name":"a","key":"proxy","quota":0,"window":"1s"}"#, "");
    let err = host.load(FILTER, &bad).map(|_| ()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("limits[0].quota"), "{text}");
}
