//! Scenarios for loading a module: what Envoy would refuse, the harness refuses, with an error
//! that says what to do.

use test_harness::{HarnessError, Host, LoadOptions, LogLevel};

/// A minimal proxy-wasm module importing `module.name`, built in the test with `wat`.
fn module_importing(module: &str, name: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
             (import "{module}" "{name}" (func (param i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#
    ))
    .unwrap()
}

#[test]
fn module_importing_an_unknown_hostcall_fails_at_load_naming_it() {
    let err = Host::new()
        .load_with(LoadOptions::from_wasm_bytes(module_importing(
            "env",
            "proxy_teleport",
        )))
        .err()
        .expect("load must fail");
    match &err {
        HarnessError::MissingImport { module, name } => {
            assert_eq!((module.as_str(), name.as_str()), ("env", "proxy_teleport"));
        }
        other => panic!("expected MissingImport, got {other}"),
    }
    assert!(err.to_string().contains("env.proxy_teleport"), "{err}");
}

#[test]
fn module_importing_an_unknown_wasi_function_fails_at_load_naming_it() {
    let err = Host::new()
        .load_with(LoadOptions::from_wasm_bytes(module_importing(
            "wasi_snapshot_preview1",
            "sock_open",
        )))
        .err()
        .expect("load must fail");
    assert!(
        err.to_string().contains("wasi_snapshot_preview1.sock_open"),
        "{err}"
    );
}

#[test]
fn hand_written_module_runs_through_the_abi() {
    // Logs "up" at warn from on_vm_start, straight through proxy_log.
    let wasm = wat::parse_str(
        r#"(module
             (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (data (i32.const 16) "up")
             (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
             (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
               (drop (call $log (i32.const 3) (i32.const 16) (i32.const 2)))
               i32.const 1))"#,
    )
    .unwrap();
    let plugin = Host::new()
        .load_with(LoadOptions::from_wasm_bytes(wasm))
        .unwrap();
    assert_eq!(plugin.logs(LogLevel::Warn), vec!["up".to_string()]);
}

#[test]
fn module_without_the_proxy_wasm_abi_marker_is_refused() {
    let wasm = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    let err = Host::new()
        .load_with(LoadOptions::from_wasm_bytes(wasm))
        .err()
        .unwrap();
    assert!(matches!(err, HarnessError::BadModule { .. }), "{err}");
    assert!(err.to_string().contains("proxy_abi_version_0_2_1"), "{err}");
}

#[test]
fn missing_wasm_tells_to_run_make_wasm() {
    let err = Host::new().load("no_such_filter", "{}").err().unwrap();
    assert!(matches!(err, HarnessError::WasmNotBuilt { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("run `make wasm`"), "{message}");
    assert!(
        message.contains("wasm32-wasip1/release/no_such_filter.wasm"),
        "{message}"
    );
}

#[test]
fn refused_plugin_configuration_fails_the_load_with_the_filters_logs() {
    let err = Host::new()
        .load("harness_probe", "refuse=limits-missing")
        .err()
        .unwrap();
    match err {
        HarnessError::ConfigureFailed { logs } => {
            assert!(
                logs.contains(&"refused: limits-missing".to_string()),
                "{logs:?}"
            );
        }
        other => panic!("expected ConfigureFailed, got {other}"),
    }
}

#[test]
fn vm_configuration_reaches_on_vm_start() {
    let plugin = Host::new()
        .load_with(LoadOptions::new("harness-probe").vm_config("shared-vm"))
        .unwrap();
    assert_eq!(
        plugin.logs(LogLevel::Info),
        vec!["vm_config=shared-vm".to_string()]
    );
}

#[test]
fn environment_variables_reach_the_module_through_wasi() {
    let host = Host::new();
    host.set_env("BANK_REGION", "eu-west");
    let plugin = host.load("harness_probe", "").unwrap();
    let mut stream = plugin.stream();
    stream.request_headers(&[(":path", "/"), ("x-probe", "env BANK_REGION")], true);
    assert_eq!(
        stream.request_header("x-probe-result"),
        Some(b"eu-west".to_vec())
    );
    let mut unset = plugin.stream();
    unset.request_headers(&[(":path", "/"), ("x-probe", "env NOT_THERE")], true);
    assert_eq!(
        unset.request_header("x-probe-result"),
        Some(b"unset".to_vec())
    );
}

/// A hand-written filter that, in each phase below, reads the request header map and
/// stores the status the host answered in shared data under the phase's name.
fn header_reader() -> Vec<u8> {
    wat::parse_str(
        r#"(module
             (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
             (import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 2)
             (data (i32.const 0) "headersbodylog")
             (func $record (param $key i32) (param $len i32)
               (i32.store (i32.const 64) (call $pairs (i32.const 0) (i32.const 80) (i32.const 84)))
               (drop (call $set (local.get $key) (local.get $len) (i32.const 64) (i32.const 4) (i32.const 0))))
             (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 4096)
             (func (export "proxy_on_context_create") (param i32 i32))
             (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
             (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
             (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
               (call $record (i32.const 0) (i32.const 7)) i32.const 0)
             (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
               (call $record (i32.const 7) (i32.const 4)) i32.const 0)
             (func (export "proxy_on_log") (param i32)
               (call $record (i32.const 11) (i32.const 3))))"#,
    )
    .unwrap()
}

#[test]
fn request_headers_are_lent_until_the_filter_continues_and_again_in_on_log() {
    let host = Host::new();
    let plugin = host
        .load_with(LoadOptions::from_wasm_bytes(header_reader()))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stream = plugin.stream();
    stream.request_headers(&[(":path", "/")], false);
    stream.request_body(b"x", true);
    stream.complete();
    let status = |phase: &str| {
        let (value, _) = host.shared_data(phase).expect(phase);
        u32::from_le_bytes(value.try_into().unwrap())
    };
    assert_eq!(status("headers"), 0, "readable in their own phase");
    assert_eq!(
        status("body"),
        2,
        "BadArgument once the filter continued, as in Envoy"
    );
    assert_eq!(status("log"), 0, "readable again in on_log");
}
