//! Running a tool (`ipmitool`, `squeue`, …) as a subprocess with a deadline.
//!
//! The child runs in its own process group, so that on timeout the whole group is killed:
//! a grandchild holding the output pipe cannot keep the read waiting (the hang
//! prometheus-community/ipmi_exporter#95 describes).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Largest output kept from one run; the rest is discarded.
const MAX_OUTPUT_BYTES: usize = 4 << 20;

/// Why a command produced no usable output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommandError {
    /// It could not be started (not found, not executable).
    Spawn(String),
    /// It ran longer than the timeout and was killed.
    Timeout,
    /// It exited unsuccessfully; the first line of its standard error.
    Failed(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spawn(error) => write!(f, "cannot start: {error}"),
            Self::Timeout => write!(f, "timed out"),
            Self::Failed(stderr) => write!(f, "failed: {stderr}"),
        }
    }
}

/// Runs `program args` with `env` added to the environment, and returns its standard
/// output (lossily decoded). Must run inside a tokio runtime.
pub(crate) async fn run(
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<String, CommandError> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| CommandError::Spawn(e.to_string()))?;
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let work = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut limited_out = (&mut stdout).take(MAX_OUTPUT_BYTES as u64);
        let mut limited_err = (&mut stderr).take(64 * 1024);
        let (read_out, _, status) = tokio::join!(
            limited_out.read_to_end(&mut out),
            limited_err.read_to_end(&mut err),
            child.wait(),
        );
        (read_out, out, err, status)
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) with a negative pid signals the process group the child
                // leads; no memory is shared.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            Err(CommandError::Timeout)
        }
        Ok((_, out, err, status)) => {
            let ok = status.as_ref().is_ok_and(std::process::ExitStatus::success);
            if ok {
                Ok(String::from_utf8_lossy(&out).into_owned())
            } else {
                let stderr = String::from_utf8_lossy(&err);
                let first = stderr.lines().next().unwrap_or("").trim().to_owned();
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                Err(CommandError::Failed(if first.is_empty() {
                    status
                } else {
                    first
                }))
            }
        }
    }
}

/// Where `program` would be run from: itself if it contains a `/`, else the first
/// executable file of that name in `PATH`.
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return is_executable(Path::new(program)).then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
