//! Where the workspace keeps things, defined once for every crate that needs it: the
//! repository root, Cargo's target directory, and the `.wasm` modules `make wasm` builds.
//!
//! Both the wasmtime host (`test-harness`) and the Envoy runner find the modules here, so they
//! cannot disagree about where a build went. No dependencies, so the runner stays light.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The repository (workspace) root: this crate lives in `<root>/test-harness/workspace-dirs`.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set and not empty (a relative one is
/// taken relative to the repository root, where `make` runs cargo), else `<root>/target`.
pub fn target_dir() -> PathBuf {
    target_dir_for(
        &repo_root(),
        std::env::var_os("CARGO_TARGET_DIR").as_deref(),
    )
}

/// Where `make wasm` (`cargo build --release --target wasm32-wasip1`) leaves the filters.
pub fn wasm_dir() -> PathBuf {
    target_dir().join("wasm32-wasip1").join("release")
}

/// The module of crate `name` (`banking-headers` or `banking_headers`) in [`wasm_dir`].
pub fn wasm_file(name: &str) -> PathBuf {
    wasm_dir().join(format!("{}.wasm", name.replace('-', "_")))
}

fn target_dir_for(root: &Path, cargo_target_dir: Option<&OsStr>) -> PathBuf {
    match cargo_target_dir {
        // `join` keeps an absolute path as it is.
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_root_holds_the_workspace_manifest_and_the_wasmplugins() {
        let root = repo_root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"), "{}", root.display());
        assert!(root.join("wasmplugins").is_dir(), "{}", root.display());
    }

    #[test]
    fn cargo_target_dir_is_relative_to_the_root_unless_absolute_and_ignored_when_empty() {
        let root = Path::new("/repo");
        assert_eq!(target_dir_for(root, None), Path::new("/repo/target"));
        assert_eq!(
            target_dir_for(root, Some(OsStr::new(""))),
            Path::new("/repo/target")
        );
        assert_eq!(
            target_dir_for(root, Some(OsStr::new("build/t"))),
            Path::new("/repo/build/t")
        );
        assert_eq!(
            target_dir_for(root, Some(OsStr::new("/elsewhere/t"))),
            Path::new("/elsewhere/t")
        );
    }

    #[test]
    fn a_filter_module_is_named_like_its_crate_with_underscores() {
        assert_eq!(
            wasm_file("banking-headers"),
            target_dir().join("wasm32-wasip1/release/banking_headers.wasm")
        );
    }
}
