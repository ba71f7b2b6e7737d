//! `check-config [PATH...]`: checks every WasmPlugin's pluginConfig with its filter's own
//! parser (`make check-config`). `check-config --write-schemas` regenerates `schemas/`
//! (`make schemas`).

use std::path::PathBuf;
use std::process::ExitCode;

use check_config::read_wasmplugins;

const USAGE: &str = "\
usage: check-config [PATH...]    check the WasmPlugins in each file or directory (default:
                                 wasmplugins/; - reads standard input, e.g. from kustomize build)
       check-config --write-schemas
                                 regenerate schemas/<filter>.schema.json from the config types

Prints `ok <file> <name>` per valid WasmPlugin and one line naming the field of each invalid
one. Exit status: 0 all valid, 1 any invalid, 2 input unreadable or no WasmPlugin found.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some("--write-schemas") {
        return write_schemas(args.len());
    }
    if let Some(flag) = args.iter().find(|a| a.starts_with("--")) {
        eprintln!("check-config: unknown option {flag}\n{USAGE}");
        return ExitCode::from(2);
    }
    let paths: Vec<PathBuf> = if args.is_empty() {
        vec![PathBuf::from("wasmplugins")]
    } else {
        args.iter().map(PathBuf::from).collect()
    };
    let plugins = match read_wasmplugins(&paths) {
        Ok(plugins) => plugins,
        Err(e) => {
            eprintln!("check-config: {e}");
            return ExitCode::from(2);
        }
    };
    let mut invalid = 0;
    for plugin in plugins {
        let checked = check_config::check(plugin);
        if !checked.is_valid() {
            invalid += 1;
        }
        println!("{checked}");
    }
    if invalid > 0 {
        eprintln!(
            "check-config: {invalid} invalid WasmPlugin{}",
            if invalid == 1 { "" } else { "s" }
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn write_schemas(arg_count: usize) -> ExitCode {
    if arg_count != 1 {
        eprintln!("check-config: --write-schemas takes no paths\n{USAGE}");
        return ExitCode::from(2);
    }
    match check_config::write_schemas(&envoy_runner::repo_root()) {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("check-config: cannot write schemas: {e}");
            ExitCode::from(2)
        }
    }
}
