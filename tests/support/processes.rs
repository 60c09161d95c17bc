//! Helpers shared by the PromQL end-to-end tests: free loopback ports, the real `exawatch up`
//! binary and Debian's `prometheus` as child processes, and HTTP GETs with JSON answers.
//! Included by several test crates, each using part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const EXAWATCH: &str = env!("CARGO_BIN_EXE_exawatch");

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// A child process serving HTTP on a loopback port, killed when dropped.
pub(crate) struct Process {
    child: Child,
    pub(crate) port: u16,
    /// The MQTT port, for `exawatch up` (0 otherwise).
    pub(crate) mqtt: u16,
    log: PathBuf,
    pub(crate) agent: ureq::Agent,
}

impl Process {
    /// Starts `command` (stderr to `log`) and waits until `ready_path` answers 200.
    pub(crate) fn start(mut command: Command, port: u16, log: PathBuf, ready_path: &str) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let mut process = Self {
            child,
            port,
            mqtt: 0,
            log,
            agent: agent(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut r) = process.agent.get(&process.url(ready_path)).call()
                && r.status() == 200
            {
                let _ = r.body_mut().read_to_string();
                break;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("{command:?} exited with {status}:\n{}", process.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{ready_path} not ready within 60 s:\n{}",
                process.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        process
    }

    /// `exawatch up` on `data_dir`, no local collector, on free loopback ports.
    pub(crate) fn exawatch(data_dir: &Path) -> Self {
        Self::exawatch_with(data_dir, &[])
    }

    /// `exawatch up` as [`Process::exawatch`], with `extra` arguments.
    pub(crate) fn exawatch_with(data_dir: &Path, extra: &[&str]) -> Self {
        let (http, mqtt) = (free_port(), free_port());
        let mut command = Command::new(EXAWATCH);
        command
            .args(["up", "--no-collector", "--data-dir"])
            .arg(data_dir)
            .args([
                "--set",
                "api.listen=127.0.0.1:0",
                "--set",
                "broker.listen=127.0.0.1:0",
            ])
            .args(["--http-port", &http.to_string()])
            .args(["--mqtt-port", &mqtt.to_string()])
            .args(extra);
        let mut process = Self::start(
            command,
            http,
            data_dir.with_extension(format!("{http}.log")),
            "/health",
        );
        process.mqtt = mqtt;
        process
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` with `params` (URL-encoded here); the status and the JSON body.
    pub(crate) fn get(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self.agent.get(&self.url(path));
        for (k, v) in params {
            request = request.query(*k, *v);
        }
        let mut response = request.call().unwrap();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap();
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        (status, json)
    }

    /// POST `params` form-encoded to `path`; the status and the JSON body.
    pub(crate) fn post_form(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let mut response = self
            .agent
            .post(&self.url(path))
            .send_form(params.iter().copied())
            .unwrap();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&body).unwrap())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
