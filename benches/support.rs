//! Shared by the benchmarks: the workload (shared/bench/gen_nodes.py's EXAMON output) as
//! pre-encoded MQTT 3.1.1 packets, publishers, the systems under test, and /proc readings.
//! `exawatch up` is started by the end-to-end tests' harness (`tests/support/server.rs`).
#![allow(dead_code)] // Each benchmark uses a part.

#[path = "../tests/support/server.rs"]
mod server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // Each benchmark uses a part.
pub(crate) use server::{EXAWATCH, Server, agent, free_port};

pub(crate) const PUBLISHERS: usize = 4;

pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- MQTT 3.1.1 packets, just enough for QoS 0 publishing and one subscription ----

pub(crate) fn put_len(buf: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        buf.push(byte);
        if n == 0 {
            break;
        }
    }
}

pub(crate) fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s);
}

pub(crate) fn publish_packet(buf: &mut Vec<u8>, topic: &[u8], payload: &[u8]) {
    buf.push(0x30);
    put_len(buf, 2 + topic.len() + payload.len());
    put_str(buf, topic);
    buf.extend_from_slice(payload);
}

pub(crate) fn connect(port: u16, id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("broker accepts connections");
    stream.set_nodelay(true).unwrap();
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.extend_from_slice(&[4, 0x02]);
    body.extend_from_slice(&600u16.to_be_bytes());
    put_str(&mut body, id.as_bytes());
    let mut packet = vec![0x10];
    put_len(&mut packet, body.len());
    packet.extend_from_slice(&body);
    stream.write_all(&packet).unwrap();
    let mut ack = [0u8; 4];
    stream.read_exact(&mut ack).unwrap();
    assert!(ack[0] == 0x20 && ack[3] == 0, "CONNACK {ack:?}");
    stream
}

pub(crate) fn read_header(reader: &mut impl Read) -> Option<(u8, usize)> {
    let mut byte = [0u8; 1];
    reader.read_exact(&mut byte).ok()?;
    let kind = byte[0];
    let (mut multiplier, mut len) = (1usize, 0usize);
    loop {
        reader.read_exact(&mut byte).ok()?;
        len += (byte[0] & 0x7f) as usize * multiplier;
        multiplier *= 128;
        if byte[0] & 0x80 == 0 {
            return Some((kind, len));
        }
    }
}

/// The workload: one pre-encoded buffer of PUBLISH packets per connection.
pub(crate) struct Workload {
    pub(crate) buffers: Vec<Vec<u8>>,
    pub(crate) messages: u64,
}

pub(crate) fn workload(nodes: usize, seconds: usize) -> Workload {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("n{nodes}d{seconds}.examon"));
    if !file.exists() {
        let generator: PathBuf = std::env::var("BENCH_GEN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/gen_nodes.py")
            });
        eprintln!("generating {} with {}", file.display(), generator.display());
        let status = Command::new("python3")
            .arg(&generator)
            .args([
                "-n",
                &nodes.to_string(),
                "-d",
                &seconds.to_string(),
                "--format",
                "examon",
                "-o",
            ])
            .arg(&file)
            .status()
            .expect("python3 runs gen_nodes.py");
        assert!(status.success());
    }
    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(&file).unwrap());
    let mut buffers = vec![Vec::new(); PUBLISHERS];
    let mut messages = 0u64;
    for line in reader.split(b'\n') {
        let line = line.unwrap();
        let Some(tab) = line.iter().position(|&c| c == b'\t') else {
            continue;
        };
        publish_packet(
            &mut buffers[messages as usize % PUBLISHERS],
            &line[..tab],
            &line[tab + 1..],
        );
        messages += 1;
    }
    Workload { buffers, messages }
}

/// Publishes every buffer on its own connection at once; returns when all is written.
pub(crate) fn blast(port: u16, buffers: &[Vec<u8>]) {
    let streams: Vec<TcpStream> = (0..buffers.len())
        .map(|i| connect(port, &format!("bench-pub-{i}")))
        .collect();
    std::thread::scope(|scope| {
        for (mut stream, buffer) in streams.into_iter().zip(buffers) {
            scope.spawn(move || {
                for chunk in buffer.chunks(256 * 1024) {
                    stream.write_all(chunk).unwrap();
                }
                stream.write_all(&[0xe0, 0]).unwrap();
            });
        }
    });
}

/// Publishes the buffers at about `rate` messages per second until `stop`.
pub(crate) fn paced(
    port: u16,
    buffers: Vec<Vec<u8>>,
    per_buffer: u64,
    rate: u64,
    stop: Arc<AtomicBool>,
) {
    let mut stream = connect(port, "bench-background");
    let started = Instant::now();
    let mut sent = 0u64;
    'outer: loop {
        for buffer in &buffers {
            // Packets are of similar size: send in slices of ~1/100 s of load.
            let slice = (buffer.len() as u64 * rate / per_buffer.max(1) / 100).max(1024) as usize;
            for chunk in buffer.chunks(slice) {
                if stop.load(Ordering::Relaxed) {
                    break 'outer;
                }
                stream.write_all(chunk).unwrap();
                sent += (rate / 100).max(1);
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }
}

// ---- the systems under test ----

pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's mosquitto on a free loopback port, queueing without limit, with `extra`
/// configuration lines; returns it and its port once it listens.
pub(crate) fn start_mosquitto(dir: &Path, extra: &str) -> (Process, u16) {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n{extra}"),
    )
    .unwrap();
    let broker = Process(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package) is installed"),
    );
    wait_for_port(port, "mosquitto");
    (broker, port)
}

pub(crate) fn sql(agent: &ureq::Agent, http: u16, query: &str) -> serde_json::Value {
    let mut response = agent
        .post(&format!("http://127.0.0.1:{http}/api/v1/sql"))
        .send(query)
        .unwrap();
    let body = response.body_mut().read_to_string().unwrap();
    assert_eq!(response.status(), 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

pub(crate) fn metric(agent: &ureq::Agent, http: u16, name: &str) -> f64 {
    let text = agent
        .get(&format!("http://127.0.0.1:{http}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// utime + stime of a process, seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

pub(crate) fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Resident memory of a process now, MiB.
pub(crate) fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Starts `exawatch up` (no local collector) on free ports with `extra` arguments, its log
/// in `log`; waits for `/health`. Returns it and its HTTP and MQTT ports.
pub(crate) fn start_exawatch(data: &Path, log: &Path, extra: &[&str]) -> (Server, u16, u16) {
    let server = Server::start_logged(data, log, extra);
    let (http, mqtt) = (server.http, server.mqtt);
    (server, http, mqtt)
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

// ---- the shared workload scripts and peer systems ----

pub(crate) fn shared_script(env: &str, name: &str) -> PathBuf {
    std::env::var(env).map(PathBuf::from).unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/bench")
            .join(name)
    })
}

/// The line-protocol file for `nodes` × `seconds`, generated once and kept in the target dir.
pub(crate) fn line_protocol(nodes: usize, seconds: usize) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("n{nodes}d{seconds}.lp"));
    if !file.exists() {
        let generator = shared_script("BENCH_GEN", "gen_nodes.py");
        eprintln!("generating {} with {}", file.display(), generator.display());
        let partial = file.with_extension("lp.partial");
        let status = Command::new("python3")
            .arg(&generator)
            .args(["-n", &nodes.to_string(), "-d", &seconds.to_string()])
            .args(["--format", "influx", "-o"])
            .arg(&partial)
            .status()
            .expect("python3 runs gen_nodes.py");
        assert!(status.success(), "gen_nodes.py failed");
        std::fs::rename(&partial, &file).unwrap();
    }
    file
}

pub(crate) fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs load_lp.py against `url` with the server's `pid`; returns its JSON report.
pub(crate) fn load_lp(url: &str, file: &Path, pid: u32, label: &str) -> serde_json::Value {
    let output = Command::new("python3")
        .arg(shared_script("BENCH_LOADER", "load_lp.py"))
        .args(["--url", url, "--pid", &pid.to_string(), "--label", label])
        .arg("--file")
        .arg(file)
        .stderr(Stdio::inherit())
        .output()
        .expect("python3 runs load_lp.py");
    assert!(output.status.success(), "load_lp.py failed");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["errors"], 0, "{label}: {report}");
    report
}

/// Stops a server with SIGTERM and waits for it to exit.
pub(crate) fn terminate(server: &mut Process) {
    Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    let _ = server.0.wait();
}

/// Starts Debian's `victoria-metrics` on a free port with its data in `data`, keeping
/// samples of any age (the generated data starts in November 2023). Returns it and its port.
pub(crate) fn start_victoria_metrics(data: &Path, log: &Path) -> (Process, u16) {
    let port = free_port();
    let server = Process(
        Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", data.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("victoria-metrics (Debian package) is installed"),
    );
    wait_for_port(port, "victoria-metrics");
    (server, port)
}
