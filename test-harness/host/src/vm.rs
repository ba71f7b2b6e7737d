//! One loaded module instance (an Envoy "VM" on one worker): compiling with wasmtime, linking
//! the hostcalls, calling the module's `proxy_on_*` exports, and running a local reply back
//! through the filter's response path the way Envoy does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use wasmtime::{Config, Engine, Instance, Linker, Module, Store, WasmParams, WasmResults};

use crate::abi::header_name;
use crate::error::HarnessError;
use crate::host::HostInner;
use crate::state::{StreamState, VmState};
use crate::types::{Action, LocalResponse, LogLevel};

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        // Filters are small and run briefly; compile fast rather than produce fast code.
        config.cranelift_opt_level(wasmtime::OptLevel::None);
        // Release filters are stripped, so a wasm backtrace would be a list of bare offsets;
        // the trap reason and the panic hook's critical log say more.
        config.wasm_backtrace_max_frames(None);
        Engine::new(&config).unwrap_or_else(|_| Engine::default())
    })
}

type CacheKey = (PathBuf, u64, Option<SystemTime>);

/// Compiled modules by file identity, so loading the same filter in many tests of one test
/// binary compiles it once.
fn compile_file(path: &Path) -> Result<Module, HarnessError> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Module>>> = OnceLock::new();
    let meta = std::fs::metadata(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            HarnessError::WasmNotBuilt {
                path: path.to_path_buf(),
            }
        } else {
            HarnessError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(module) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(module);
    }
    // Tests run on parallel threads: let one compile while the others wait for its result.
    static COMPILING: Mutex<()> = Mutex::new(());
    let _compiling = COMPILING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(module) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(module);
    }
    let bytes = std::fs::read(path).map_err(|source| HarnessError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let module = compile_bytes(&bytes)?;
    if let Ok(mut cache) = cache.lock() {
        cache.insert(key, module.clone());
    }
    Ok(module)
}

/// FNV-1a: a stable content hash (std's hasher is not promised stable across releases).
fn content_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Compiles, going through an on-disk cache under `<target>/harness-cache`: every test binary
/// is a new process, and compiling a filter with a debug-built Cranelift takes seconds.
pub(crate) fn compile_bytes(bytes: &[u8]) -> Result<Module, HarnessError> {
    let cache_dir = crate::host::target_dir().join("harness-cache");
    let cached = cache_dir.join(format!(
        "{:016x}-{}.cwasm",
        content_hash(bytes),
        bytes.len()
    ));
    // SAFETY: only this harness writes that directory, with `Module::serialize` output of the
    // same wasm; wasmtime itself refuses an artifact from another version or configuration,
    // in which case the module is compiled afresh.
    if let Ok(module) = unsafe { Module::deserialize_file(engine(), &cached) } {
        return Ok(module);
    }
    let module = Module::new(engine(), bytes).map_err(|e| HarnessError::Compile {
        message: describe(&e),
    })?;
    if let Ok(artifact) = module.serialize() {
        // Write then rename, so concurrent test processes never read half a file.
        let temp = cache_dir.join(format!(
            "{}.{}.tmp",
            content_hash(bytes),
            std::process::id()
        ));
        let written = std::fs::create_dir_all(&cache_dir)
            .and_then(|()| std::fs::write(&temp, artifact))
            .and_then(|()| std::fs::rename(&temp, &cached));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        prune_cache(&cache_dir);
    }
    Ok(module)
}

/// Every rebuilt filter leaves a new artifact; keep the most recent few.
fn prune_cache(dir: &Path) {
    const KEEP: usize = 32;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut artifacts: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|ext| ext == "cwasm"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if artifacts.len() <= KEEP {
        return;
    }
    artifacts.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in artifacts.into_iter().skip(KEEP) {
        let _ = std::fs::remove_file(path);
    }
}

pub(crate) fn load_module(path: &Path) -> Result<Module, HarnessError> {
    compile_file(path)
}

fn linker() -> Result<Linker<VmState>, HarnessError> {
    let mut linker = Linker::new(engine());
    crate::proxy::link(&mut linker)
        .and_then(|()| crate::wasi::link(&mut linker))
        .map_err(|e| HarnessError::BadModule {
            message: format!("cannot set up hostcalls: {e:#}"),
        })?;
    Ok(linker)
}

/// A running module instance and what the harness tracks about it.
pub(crate) struct Vm {
    pub(crate) store: RefCell<Store<VmState>>,
    instance: Instance,
    pub(crate) key: usize,
    pub(crate) failed: RefCell<Option<String>>,
    pub(crate) host: Rc<HostInner>,
}

impl Vm {
    /// Links and instantiates; refuses modules importing anything the host lacks.
    pub(crate) fn instantiate(
        host: Rc<HostInner>,
        module: &Module,
        state: VmState,
    ) -> Result<Vm, HarnessError> {
        let linker = linker()?;
        let key = state.vm;
        let mut store = Store::new(engine(), state);
        for import in module.imports() {
            if linker
                .get(&mut store, import.module(), import.name())
                .is_err()
            {
                return Err(HarnessError::MissingImport {
                    module: import.module().to_string(),
                    name: import.name().to_string(),
                });
            }
        }
        let exports: Vec<&str> = module.exports().map(|e| e.name()).collect();
        if !exports
            .iter()
            .any(|name| *name == "proxy_abi_version_0_2_1" || *name == "proxy_abi_version_0_2_0")
        {
            return Err(HarnessError::BadModule {
                message: "it exports no proxy_abi_version_0_2_1 (or 0_2_0) marker; is it built with the proxy-wasm SDK?".into(),
            });
        }
        if !exports.contains(&"memory") {
            return Err(HarnessError::BadModule {
                message: "it exports no `memory`".into(),
            });
        }
        let instance =
            linker
                .instantiate(&mut store, module)
                .map_err(|e| HarnessError::BadModule {
                    message: format!("instantiation failed: {e:#}"),
                })?;
        Ok(Vm {
            store: RefCell::new(store),
            instance,
            key,
            failed: RefCell::new(None),
            host,
        })
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        let mut store = self.store.borrow_mut();
        self.instance
            .get_memory(&mut *store, "memory")
            .map(|memory| memory.data_size(&*store))
            .unwrap_or(0)
    }

    pub(crate) fn has_export(&self, name: &str) -> bool {
        let mut store = self.store.borrow_mut();
        self.instance.get_func(&mut *store, name).is_some()
    }

    /// Calls an export as the host would from `context`; `Ok(None)` if the module does not
    /// export it (every callback is optional). A trap fails the VM for good, as in Envoy.
    pub(crate) fn call<P: WasmParams, R: WasmResults>(
        &self,
        name: &str,
        context: u32,
        params: P,
    ) -> Result<Option<R>, HarnessError> {
        let failed = self.failed.borrow().clone();
        if let Some(cause) = failed {
            return Err(HarnessError::VmFailed { cause });
        }
        let result = {
            let Ok(mut store) = self.store.try_borrow_mut() else {
                return Err(HarnessError::Busy {
                    function: name.to_string(),
                });
            };
            let Some(func) = self.instance.get_func(&mut *store, name) else {
                return Ok(None);
            };
            let typed = func
                .typed::<P, R>(&*store)
                .map_err(|e| HarnessError::BadModule {
                    message: format!("export `{name}` has an unexpected signature: {e:#}"),
                })?;
            let data = store.data_mut();
            data.active_context = context;
            data.effective_context = 0;
            let logs_before = data.logs.len();
            match typed.call(&mut *store, params) {
                Ok(value) => Ok(Some(value)),
                Err(e) => {
                    let critical_logs = store.data().logs[logs_before..]
                        .iter()
                        .filter(|l| l.level == LogLevel::Critical)
                        .map(|l| l.message.clone())
                        .collect::<Vec<_>>();
                    let message = describe(&e);
                    *self.failed.borrow_mut() = Some(format!(
                        "{name} trapped: {message}; critical logs: {critical_logs:?}"
                    ));
                    Err(HarnessError::Trap {
                        function: name.to_string(),
                        message,
                        critical_logs,
                    })
                }
            }
        };
        if result.is_ok() {
            self.deliver_local_replies()?;
        }
        self.host.pump();
        result
    }

    /// Calls a callback returning a filter action.
    pub(crate) fn call_action<P: WasmParams>(
        &self,
        name: &str,
        context: u32,
        params: P,
    ) -> Result<Action, HarnessError> {
        match self.call::<P, i32>(name, context, params)? {
            None | Some(0) => Ok(Action::Continue),
            Some(1) => Ok(Action::Pause),
            Some(value) => Err(HarnessError::UnexpectedReturn {
                function: name.to_string(),
                value,
            }),
        }
    }

    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut VmState) -> T) -> T {
        let Ok(mut store) = self.store.try_borrow_mut() else {
            panic!("this VM is inside a hostcall: an after-hook may only drive other VMs");
        };
        f(store.data_mut())
    }

    /// Inside a hostcall (an after-hook is running on it).
    pub(crate) fn is_busy(&self) -> bool {
        self.store.try_borrow_mut().is_err()
    }

    pub(crate) fn with_stream<T>(
        &self,
        id: u32,
        f: impl FnOnce(&mut StreamState) -> T,
    ) -> Option<T> {
        self.with_state(|vm| vm.streams.get_mut(&id).map(f))
    }

    /// Envoy sends a filter's local reply through the encoder chain, this filter included:
    /// its `on_http_response_headers` (and body callback) see the reply before the client does.
    fn deliver_local_replies(&self) -> Result<(), HarnessError> {
        let pending: Vec<(u32, LocalResponse)> = self.with_state(|vm| {
            vm.streams
                .iter_mut()
                .filter(|(_, s)| s.local_response.is_some() && !s.local_reply_delivered)
                .filter_map(|(id, s)| {
                    s.local_reply_delivered = true;
                    s.local_response.clone().map(|r| (*id, r))
                })
                .collect()
        });
        for (id, reply) in pending {
            let headers = local_reply_headers(&reply);
            let count = headers.len() as i32;
            let body_len = reply.body.len() as i32;
            self.with_stream(id, |s| {
                s.response_headers = Some(headers);
                s.response_body = Some(reply.body.clone());
            });
            self.call_action(
                "proxy_on_response_headers",
                id,
                (id as i32, count, i32::from(reply.body.is_empty())),
            )?;
            if !reply.body.is_empty() {
                self.call_action("proxy_on_response_body", id, (id as i32, body_len, 1i32))?;
            }
            self.with_stream(id, |s| {
                let headers = s.response_headers.clone().unwrap_or_default();
                let status = headers
                    .iter()
                    .find(|(k, _)| k == ":status")
                    .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(reply.status);
                s.local_response = Some(LocalResponse {
                    status,
                    headers: headers
                        .into_iter()
                        .filter(|(k, _)| !k.starts_with(':'))
                        .collect(),
                    body: s.response_body.clone().unwrap_or_default(),
                    ..reply
                });
            });
        }
        Ok(())
    }
}

/// The whole error chain on one line: "wasm trap: wasm `unreachable` instruction executed".
fn describe(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// The headers Envoy builds for a local reply: status, length, a text/plain type when there
/// is a body, then the filter's own headers replacing those defaults.
fn local_reply_headers(reply: &LocalResponse) -> Vec<(String, Vec<u8>)> {
    let mut headers = vec![(":status".to_string(), reply.status.to_string().into_bytes())];
    if !reply.body.is_empty() {
        headers.push((
            "content-length".to_string(),
            reply.body.len().to_string().into_bytes(),
        ));
        headers.push(("content-type".to_string(), b"text/plain".to_vec()));
    }
    for (name, value) in &reply.headers {
        crate::proxy::replace_header(&mut headers, &header_name(name.as_bytes()), value.clone());
    }
    headers
}
