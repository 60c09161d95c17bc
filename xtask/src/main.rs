//! `cargo xtask test`: the whole test suite on a fresh Debian machine that has only the Rust
//! toolchain. It installs what the tests need where it can, says exactly what to run where it
//! cannot, then runs `cargo test --workspace` with the target directory outside the clone and
//! checks the builds the tests do not compile.
//!
//! What it installs, each only when missing (a second run installs nothing):
//! - Debian packages, with `apt-get` as root or through password-less `sudo`; otherwise it
//!   prints the `apt-get` line to run as root and stops;
//! - `playwright-core` for the web console test, with `npm ci` in `tests/console`;
//! - moto's S3 server and the OpenTelemetry Python SDK with its OTLP/HTTP exporter, with
//!   `pip` in a virtual environment of its own (under the target directory, first on the
//!   tests' `PATH`), so the system's Python is left alone.
//!
//! `cargo xtask test ARGS…` passes `ARGS` to `cargo test --no-fail-fast` (a filter,
//! `-p CRATE`, `-- --nocapture`; `--workspace` unless they name a package) and then skips
//! the extra build checks.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// A program the tests run and the Debian package that provides it.
struct Tool {
    program: &'static str,
    package: &'static str,
    why: &'static str,
}

const TOOLS: &[Tool] = &[
    Tool {
        program: "mosquitto_pub",
        package: "mosquitto-clients",
        why: "end-to-end tests publish with it",
    },
    Tool {
        program: "mosquitto",
        package: "mosquitto",
        why: "the reference MQTT broker",
    },
    Tool {
        program: "prometheus",
        package: "prometheus",
        why: "the PromQL differential test",
    },
    Tool {
        program: "promtool",
        package: "prometheus",
        why: "the PromQL differential test",
    },
    Tool {
        program: "prometheus-node-exporter",
        package: "prometheus-node-exporter",
        why: "the scrape test scrapes it",
    },
    Tool {
        program: "prometheus-alertmanager",
        package: "prometheus-alertmanager",
        why: "the alerting test sends alerts to it",
    },
    Tool {
        program: "chromium",
        package: "chromium",
        why: "reports and the web console rendered headless",
    },
    Tool {
        program: "node",
        package: "nodejs",
        why: "the web console test",
    },
    Tool {
        program: "npm",
        package: "npm",
        why: "the web console test's playwright-core",
    },
    Tool {
        program: "openssl",
        package: "openssl",
        why: "the TLS test's certificates",
    },
    Tool {
        program: "curl",
        package: "curl",
        why: "the TLS test",
    },
];

/// The package that lets `python3 -m venv` make the tests' Python environment.
const VENV_PACKAGE: &str = "python3-venv";

/// What the tests need from PyPI: what shows it is there, and the pip packages.
struct PythonPackage {
    installed: Installed,
    pip: &'static [&'static str],
}

/// How to tell that a Python package is installed.
enum Installed {
    /// Its program is on `PATH` (or in the environment's `bin`).
    Program(&'static str),
    /// `python3` imports these modules (the system's or the environment's).
    Modules(&'static str),
}

const PYTHON_PACKAGES: &[PythonPackage] = &[
    // The object-store tests' S3 server.
    PythonPackage {
        installed: Installed::Program("moto_server"),
        pip: &["moto[server]"],
    },
    // tests/otlp.rs: the OpenTelemetry SDK's own OTLP/HTTP exporter sends to exawatch.
    PythonPackage {
        installed: Installed::Modules(
            "opentelemetry.sdk.metrics, opentelemetry.exporter.otlp.proto.http",
        ),
        pip: &[
            "opentelemetry-sdk",
            "opentelemetry-exporter-otlp-proto-http",
        ],
    },
];

/// Where the build goes unless `CARGO_TARGET_DIR` says otherwise: outside the clone, so
/// that clones share it and a fresh clone does not rebuild DataFusion.
const TARGET_DIR: &str = ".cache/exawatch-target";

/// System directories a user's `PATH` may lack, where Debian installs daemons.
const SYSTEM_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

type Result<T = (), E = String> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("test") => test(args.collect()),
        _ => {
            eprintln!(
                "usage: cargo xtask test [ARGS…]\n\n  test  installs what the tests need, \
                 then runs `cargo test --workspace ARGS…`\n        (and, without ARGS, \
                 checks the builds the tests do not compile)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cargo xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn test(args: Vec<String>) -> Result {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is in the repository")
        .to_owned();
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => home()?.join(TARGET_DIR),
    };
    let venv = target_dir.join("xtask").join("python-venv");

    install_packages(&missing_packages(&venv))?;
    npm_ci(&root.join("tests/console"))?;
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(bin) = python_venv(&venv)? {
        path = prepend(&bin, &path)?;
    }
    // Debian installs the mosquitto broker in /usr/sbin, which a user's PATH may lack.
    path = std::env::join_paths(std::env::split_paths(&path).chain(SYSTEM_DIRS.map(PathBuf::from)))
        .map_err(|e| format!("PATH: {e}"))?;

    let cargo = |cargo_args: &[&str]| -> Result {
        let mut command = Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()));
        command
            .args(cargo_args)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("CARGO_INCREMENTAL", "0")
            .env("PATH", &path);
        run(&mut command)
    };
    // Every test binary runs, so that one failure does not hide the others; the whole
    // workspace unless ARGS name packages.
    let mut test_args = vec!["test", "--no-fail-fast"];
    let names_packages = args
        .iter()
        .any(|a| a.starts_with("-p") || a.starts_with("--package"));
    if !names_packages {
        test_args.push("--workspace");
    }
    test_args.extend(args.iter().map(String::as_str));
    cargo(&test_args)?;
    if args.is_empty() {
        // Builds the tests do not compile: the PromQL engine without the store (what its
        // fuzz target links) and every fuzz target (fuzz/ has its own workspace and lockfile).
        cargo(&["check", "-p", "exawatch-promql", "--no-default-features"])?;
        cargo(&[
            "check",
            "--locked",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--bins",
            "--features",
            "promql,sql",
        ])?;
    }
    Ok(())
}

/// The Debian packages of the tools that are not installed, each once, with why.
fn missing_packages(venv: &Path) -> Vec<(&'static str, &'static str)> {
    let mut missing: Vec<(&str, &str)> = Vec::new();
    for tool in TOOLS {
        if find(tool.program).is_none() && !missing.iter().any(|(p, _)| *p == tool.package) {
            missing.push((tool.package, tool.why));
        }
    }
    let venv_works = Command::new("python3")
        .args(["-c", "import ensurepip, venv"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !python_missing(venv).is_empty() && !venv.join("bin/python3").exists() && !venv_works {
        missing.push((
            VENV_PACKAGE,
            "a Python environment for moto's S3 server and the OpenTelemetry SDK",
        ));
    }
    missing
}

/// Installs `packages` with apt-get, as root or through password-less sudo; otherwise
/// fails with the command to run.
fn install_packages(packages: &[(&str, &str)]) -> Result {
    if packages.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = packages.iter().map(|(name, _)| *name).collect();
    let list = names.join(" ");
    println!("cargo xtask: installing the Debian packages {list}");
    let sudo: &[&str] = if is_root() {
        &[]
    } else if Command::new("sudo")
        .args(["-n", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        &["sudo", "-n"]
    } else {
        let why: Vec<String> = packages
            .iter()
            .map(|(name, why)| format!("  {name}: {why}"))
            .collect();
        return Err(format!(
            "the tests need Debian packages this user cannot install (not root, no \
             password-less sudo):\n{}\nRun as root:\n  apt-get update && apt-get install -y \
             {list}\nthen `cargo xtask test` again.",
            why.join("\n")
        ));
    };
    let apt_get = |apt_args: &[&str]| {
        let mut words: Vec<&str> = sudo.to_vec();
        words.extend(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-qq"]);
        words.extend(apt_args);
        run(Command::new(words[0]).args(&words[1..]))
    };
    apt_get(&["update"])?;
    let mut install = vec!["install", "-y"];
    install.extend(&names);
    apt_get(&install)
}

/// `npm ci` in the web console test's directory, unless its lockfile is installed already.
fn npm_ci(dir: &Path) -> Result {
    let installed = dir.join("node_modules/.package-lock.json");
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if let (Some(installed), Some(wanted)) = (
        modified(&installed),
        modified(&dir.join("package-lock.json")),
    ) && installed >= wanted
    {
        return Ok(());
    }
    println!("cargo xtask: npm ci in {}", dir.display());
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir))
}

/// The Python packages the tests need that neither the system nor `venv` has.
fn python_missing(venv: &Path) -> Vec<&'static PythonPackage> {
    let has_module = |python: &Path, module: &str| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let venv_python = venv.join("bin/python3");
    PYTHON_PACKAGES
        .iter()
        .filter(|package| match package.installed {
            Installed::Program(program) => {
                find(program).is_none() && !venv.join("bin").join(program).exists()
            }
            Installed::Modules(modules) => {
                let system = has_module(Path::new("python3"), modules);
                !(system || venv_python.exists() && has_module(&venv_python, modules))
            }
        })
        .collect()
}

/// The tests' Python environment: `None` when the system has every package, otherwise
/// `venv`'s `bin` (made and filled with pip as needed), to put first on `PATH`.
fn python_venv(venv: &Path) -> Result<Option<PathBuf>> {
    let bin = venv.join("bin");
    let missing = python_missing(venv);
    if missing.is_empty() {
        return Ok(bin.join("python3").exists().then_some(bin));
    }
    if !bin.join("python3").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    }
    let pip: Vec<&str> = missing.iter().flat_map(|p| p.pip.iter().copied()).collect();
    println!(
        "cargo xtask: installing {} into {}",
        pip.join(" "),
        venv.display()
    );
    run(Command::new(bin.join("pip"))
        .args(["install", "--quiet"])
        .args(&pip))?;
    Ok(Some(bin))
}

/// Runs `command`, failing unless it exits with success.
fn run(command: &mut Command) -> Result {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed ({status})"))
    }
}

/// `program` on `PATH`, or in the system directories a user's `PATH` may lack.
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SYSTEM_DIRS.map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn prepend(dir: &Path, path: &OsString) -> Result<OsString> {
    let dirs = std::iter::once(dir.to_owned()).chain(std::env::split_paths(path));
    std::env::join_paths(dirs).map_err(|e| format!("PATH: {e}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| "HOME is not set: set CARGO_TARGET_DIR".to_owned())
}
