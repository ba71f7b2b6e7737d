//! What can go wrong when loading or driving a filter, with messages that say what to do.

use std::fmt;
use std::path::PathBuf;

/// An error from the harness: loading a module, or a filter misbehaving while driven.
#[derive(Debug)]
#[non_exhaustive]
pub enum HarnessError {
    /// The `.wasm` file is not where the build puts it.
    WasmNotBuilt {
        /// Where the harness looked.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// wasmtime refused to compile the module.
    Compile {
        /// What wasmtime said.
        message: String,
    },
    /// The module imports a function this host does not provide; Envoy would refuse it too.
    MissingImport {
        /// Import module, e.g. `env` or `wasi_snapshot_preview1`.
        module: String,
        /// Import name, e.g. `proxy_foo`.
        name: String,
    },
    /// The module is not a proxy-wasm 0.2.x module, or exports something with the wrong type.
    BadModule {
        /// What is wrong.
        message: String,
    },
    /// `proxy_on_vm_start` returned false.
    VmStartFailed {
        /// Logs the filter wrote while starting, oldest first.
        logs: Vec<String>,
    },
    /// `proxy_on_configure` returned false: the filter refused its plugin configuration.
    ConfigureFailed {
        /// Logs the filter wrote while configuring, oldest first (one should name the field).
        logs: Vec<String>,
    },
    /// The module trapped (a panic in the filter, `unreachable`, out-of-bounds access...).
    /// Envoy would mark the VM failed; the harness refuses further calls into it.
    Trap {
        /// The export that was running, e.g. `proxy_on_request_headers`.
        function: String,
        /// The trap as wasmtime describes it.
        message: String,
        /// Critical logs, where the SDK's panic hook writes the panic message.
        critical_logs: Vec<String>,
    },
    /// A call into a VM that already trapped.
    VmFailed {
        /// The trap that failed it.
        cause: String,
    },
    /// The filter returned a value the ABI does not define for that callback.
    UnexpectedReturn {
        /// The export.
        function: String,
        /// The value it returned.
        value: i32,
    },
    /// The test referred to an HTTP callout that is not pending.
    UnknownHttpCall {
        /// The token.
        token: u32,
    },
    /// The VM was asked to run a callback while it is inside a hostcall (an after-hook
    /// drove the VM it interrupted); Envoy never re-enters a VM.
    Busy {
        /// The export the harness was asked to call.
        function: String,
    },
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::WasmNotBuilt { path } => write!(
                f,
                "{} not found: run `make wasm` (or `cargo build --release --target wasm32-wasip1 -p <crate>`) first",
                path.display()
            ),
            HarnessError::Io { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            HarnessError::Compile { message } => {
                write!(f, "wasmtime cannot compile the module: {message}")
            }
            HarnessError::MissingImport { module, name } => write!(
                f,
                "module imports `{module}.{name}`, which the host does not provide (Envoy would refuse to load it too)"
            ),
            HarnessError::BadModule { message } => {
                write!(f, "not a usable proxy-wasm module: {message}")
            }
            HarnessError::VmStartFailed { logs } => {
                write!(f, "proxy_on_vm_start returned false; logs: {logs:?}")
            }
            HarnessError::ConfigureFailed { logs } => {
                write!(
                    f,
                    "proxy_on_configure returned false (configuration refused); logs: {logs:?}"
                )
            }
            HarnessError::Trap {
                function,
                message,
                critical_logs,
            } => write!(
                f,
                "module trapped in {function}: {message}; critical logs: {critical_logs:?}"
            ),
            HarnessError::VmFailed { cause } => {
                write!(f, "the VM failed earlier and takes no more calls: {cause}")
            }
            HarnessError::UnexpectedReturn { function, value } => {
                write!(
                    f,
                    "{function} returned {value}, which the ABI does not define"
                )
            }
            HarnessError::UnknownHttpCall { token } => {
                write!(f, "no pending HTTP callout with token {token}")
            }
            HarnessError::Busy { function } => write!(
                f,
                "cannot call {function}: the VM is inside a hostcall (an after-hook may only drive other VMs)"
            ),
        }
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HarnessError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
