//! Keys and JWTs from another implementation than the filter's: this crate's
//! `scripts/mint_jwt.py`, run with the project's `.venv/bin/python` (Python's `cryptography`),
//! so jwt-auth (jwt-simple) is checked against tokens it did not sign itself. The Envoy
//! end-to-end tests and `make bench` both mint through [`mint`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::DemoError;

/// What to do when the minter cannot run.
const HOW_TO_INSTALL: &str = "JWTs are minted with Python's `cryptography` in the \
                                  project's .venv: run `make jwt-minter` (part of `make tools` \
                                  and `make test`; `make envoy` alone does not install it).";

/// The minting script, which this crate owns.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mint_jwt.py")
}

/// Runs the minter on `request` (`{"keys": [..], "tokens": [..]}`, as `mint_jwt.py`
/// documents it) and returns its answer: the private keys' public JWKs by id (`keys`), a JWKS
/// of them all (`jwks`) and the tokens by id (`tokens`).
pub fn mint(request: &Value) -> Result<Value, DemoError> {
    let python = workspace_dirs::repo_root()
        .join(".venv")
        .join("bin")
        .join("python");
    let script = script();
    if !python.is_file() {
        return Err(DemoError(format!(
            "{} is missing. {HOW_TO_INSTALL}",
            python.display()
        )));
    }
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            DemoError(format!(
                "cannot run {}: {e}. {HOW_TO_INSTALL}",
                python.display()
            ))
        })?;
    // Dropped at the end of the statement, so the minter sees end of input.
    child
        .stdin
        .take()
        .ok_or_else(|| DemoError("no stdin for the minter".into()))?
        .write_all(request.to_string().as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        return Err(DemoError(format!(
            "{} failed ({}):\n{}\n{HOW_TO_INSTALL}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| DemoError(format!("{} printed no JSON: {e}", script.display())))
}
