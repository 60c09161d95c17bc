//! The one harness of the end-to-end tests and the benchmarks: servers as child processes on
//! free loopback ports, waited for until they answer (`exawatch up`, Debian's `prometheus`),
//! real MQTT clients, HTTP over `ureq`. Included by each test crate (and by
//! `benches/support.rs`), each using a part of it.

#![allow(dead_code, unreachable_pub)] // Each test file uses a different part of it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const EXAWATCH: &str = env!("CARGO_BIN_EXE_exawatch");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP client that returns error statuses as answers.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// A server under test: a child process answering HTTP on a loopback port, killed when
/// dropped. `exawatch up` ([`Server::start`]) or any other ([`Server::spawn`]).
pub struct Server {
    child: Child,
    pub http: u16,
    /// The MQTT port of `exawatch up` (0 for other servers).
    pub mqtt: u16,
    log: PathBuf,
    pub agent: ureq::Agent,
    /// Sent as `Authorization` with every request the harness makes, once set.
    authorization: Option<String>,
}

impl Server {
    /// Starts `command` (stderr to `log`) and waits until `ready_path` on `http` answers 200.
    pub fn spawn(mut command: Command, http: u16, log: PathBuf, ready_path: &str) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let mut server = Self {
            child,
            http,
            mqtt: 0,
            log,
            agent: agent(),
            authorization: None,
        };
        server.wait_until_ready(ready_path, &format!("{command:?}"));
        server
    }

    /// Starts `exawatch up` on `data_dir` (no local collector) with `extra` arguments, on
    /// free loopback ports, and waits for `/health`. Its log is beside `data_dir`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let (http, mqtt) = (free_port(), free_port());
        let log = data_dir.with_extension(format!("{http}.log"));
        Self::start_on(data_dir, http, mqtt, log, extra)
    }

    /// [`Server::start`] with its log in `log`.
    pub fn start_logged(data_dir: &Path, log: &Path, extra: &[&str]) -> Self {
        Self::start_on(data_dir, free_port(), free_port(), log.to_owned(), extra)
    }

    fn start_on(data_dir: &Path, http: u16, mqtt: u16, log: PathBuf, extra: &[&str]) -> Self {
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
        let mut server = Self::spawn(command, http, log, "/health");
        server.mqtt = mqtt;
        server
    }

    /// Waits until `ready_path` answers 200; fails at once if the process exits, and after
    /// 60 s. The one readiness loop of the tests and benchmarks.
    fn wait_until_ready(&mut self, ready_path: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut r) = self.agent.get(&self.url(ready_path)).call()
                && r.status() == 200
            {
                let _ = r.body_mut().read_to_string();
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what} exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {ready_path} not ready within 60 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `authorization` as the `Authorization` header of every later request.
    pub fn authorize(&mut self, authorization: &str) {
        self.authorization = Some(authorization.to_owned());
    }

    fn with_auth<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        }
    }

    /// POSTs SQL; returns the status and body.
    pub fn post_sql(&self, query: &str, format: &str) -> (u16, String) {
        let request = self
            .agent
            .post(&self.url(&format!("/api/v1/sql?format={format}")));
        let mut response = self
            .with_auth(request)
            .header("Content-Type", "text/plain")
            .send(query)
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    /// POSTs `body` to `path` with `headers`; returns the status, the body and `Retry-After`.
    pub fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, Option<String>) {
        let mut request = self.with_auth(self.agent.post(&self.url(path)));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send(body).unwrap();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap(),
            retry_after,
        )
    }

    /// GETs `path` with `params` (URL-encoded here); the status and the JSON body.
    pub fn get(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self.with_auth(self.agent.get(&self.url(path)));
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

    /// POSTs `params` form-encoded to `path`; the status and the JSON body.
    pub fn post_form(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let mut response = self
            .with_auth(self.agent.post(&self.url(path)))
            .send_form(params.iter().copied())
            .unwrap();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&body).unwrap())
    }

    /// The rows of a query that must succeed.
    pub fn sql(&self, query: &str) -> Vec<Value> {
        let (status, body) = self.post_sql(query, "json");
        assert_eq!(status, 200, "{query}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn count(&self, filter: &str) -> u64 {
        self.sql(&format!("SELECT count(*) AS n FROM samples {filter}"))[0]["n"]
            .as_u64()
            .unwrap()
    }

    /// The `n` of a `SELECT count(*) AS n ...` query. Until the first sample with a tag the
    /// query names is stored, the column does not exist and the query is refused: that
    /// counts as 0.
    pub fn count_or_zero(&self, query: &str) -> u64 {
        let (status, body) = self.post_sql(query, "json");
        match status {
            200 => serde_json::from_str::<Vec<Value>>(&body).unwrap()[0]["n"]
                .as_u64()
                .unwrap(),
            400 if body.contains("No field named") => 0,
            _ => panic!("{query}: {status} {body}"),
        }
    }

    /// Waits until `count(filter) == n`.
    pub fn wait_for_count(&self, filter: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.count_or_zero(&format!("SELECT count(*) AS n FROM samples {filter}"));
            if got == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "count {filter} stuck at {got}, want {n}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn metrics(&self) -> String {
        self.with_auth(self.agent.get(&self.url("/metrics")))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    /// The value of one line of `/metrics`, e.g. `exawatch_messages_dropped_total{reason="topic_shape"}`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit 60 s after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the process dies at once, without flushing anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An MQTT 3.1.1 client whose event loop runs on its own thread.
pub fn mqtt_client(port: u16, id: &str) -> rumqttc::Client {
    let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut connection) = rumqttc::Client::new(options, 1000);
    std::thread::spawn(move || for _ in connection.iter() {});
    client
}

pub fn publish(client: &rumqttc::Client, topic: &str, payload: impl Into<Vec<u8>>) {
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
        .unwrap();
}

pub fn mosquitto_pub(port: u16, version: &str, topic: &str, payload: &str) {
    let output = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            version,
            "-q",
            "1",
        ])
        .args(["-t", topic, "-m", payload])
        .output()
        .expect("mosquitto_pub (Debian package mosquitto-clients) is installed");
    assert!(output.status.success(), "mosquitto_pub: {output:?}");
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}
