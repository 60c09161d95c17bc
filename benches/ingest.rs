//! Ingest benchmark: EXAMON messages from many simulated nodes over MQTT into a running
//! `exawatch up`, end to end (published → queryable over SQL), against Debian's mosquitto
//! relaying the same messages (published → delivered to a subscriber) in the same run.
//!
//! Workload: `shared/bench/gen_nodes.py --format examon` (100 nodes × 50 metrics per second by
//! default), pre-encoded as MQTT 3.1.1 QoS 0 PUBLISH packets on 4 connections, so the
//! publisher costs about one `write` per 256 KiB. Measured per run:
//! - throughput: all messages published at once; time until `count(*)` reaches the total
//!   (exawatch) or until the subscriber has them all (mosquitto);
//! - exawatch server CPU seconds per million samples and peak RSS (from /proc);
//! - latency publish → visible in SQL, as an hdrhistogram, with 200 probes per second on top of
//!   a paced background load;
//! - bytes on disk per sample after the SIGTERM flush.
//!
//! Run: `cargo bench --bench ingest` (env: `BENCH_NODES`, `BENCH_SECONDS`, `BENCH_RUNS`,
//! `BENCH_BACKGROUND_RATE`, `BENCH_GEN` = path of gen_nodes.py). Needs `python3` and
//! `mosquitto`. Prints medians and the command line to paste into `benches/RESULTS.md`.

#[path = "support.rs"]
mod support;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use support::*;

const PROBE_TOPIC: &str = "org/bench/cluster/bench/node/probe/plugin/bench/chnl/data/bench_probe";

/// mosquitto relaying the workload to one subscriber on `#`: messages per second.
fn mosquitto_run(workload: &Workload, dir: &Path) -> f64 {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"),
    )
    .unwrap();
    let _broker = Process(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package) is installed"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut subscriber = connect(port, "bench-sub");
    let mut body = 1u16.to_be_bytes().to_vec();
    put_str(&mut body, b"#");
    body.push(0);
    let mut packet = vec![0x82];
    put_len(&mut packet, body.len());
    packet.extend_from_slice(&body);
    subscriber.write_all(&packet).unwrap();
    subscriber
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::with_capacity(1 << 20, subscriber);
    let (kind, len) = read_header(&mut reader).unwrap();
    assert_eq!(kind, 0x90);
    std::io::copy(&mut (&mut reader).take(len as u64), &mut std::io::sink()).unwrap();

    let started = Instant::now();
    let counter = std::thread::spawn(move || {
        let mut got = 0u64;
        let mut last = Instant::now();
        while let Some((kind, len)) = read_header(&mut reader) {
            std::io::copy(&mut (&mut reader).take(len as u64), &mut std::io::sink()).unwrap();
            if kind >> 4 == 3 {
                got += 1;
                last = Instant::now();
            }
        }
        (got, last)
    });
    blast(port, &workload.buffers);
    let (got, last) = counter.join().unwrap();
    assert_eq!(got, workload.messages, "mosquitto lost messages");
    workload.messages as f64 / last.duration_since(started).as_secs_f64()
}

struct ExawatchFigures {
    samples_per_sec: f64,
    cpu_s_per_million: f64,
    peak_rss_mib: f64,
    bytes_per_sample: f64,
    latency: Histogram<u64>,
    probe_query: Histogram<u64>,
}

fn exawatch_run(workload: &Workload, dir: &Path, background_rate: u64) -> ExawatchFigures {
    let data = dir.join("exawatch-data");
    let _ = std::fs::remove_dir_all(&data);
    // The whole burst must fit in the broker's backlog: this measures ingest capacity.
    let (mut server, http, mqtt) = start_exawatch(
        &data,
        &dir.join("exawatch.log"),
        &["--set", "broker.backlog_bytes=4294967296"],
    );
    let pid = server.0.id();
    let agent = agent();

    // Throughput.
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    blast(mqtt, &workload.buffers);
    loop {
        let n = sql(&agent, http, "SELECT count(*) AS n FROM samples")[0]["n"]
            .as_u64()
            .unwrap();
        if n >= workload.messages {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {n} of {} stored",
            workload.messages
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let overrun = metric(&agent, http, "exawatch_broker_messages_overrun_total");
    assert_eq!(overrun, 0.0, "the broker dropped messages");

    // Latency: probes every 5 ms on top of a paced background load.
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (buffers, per_buffer, stop) = (
            workload.buffers.clone(),
            workload.messages / PUBLISHERS as u64,
            Arc::clone(&stop),
        );
        std::thread::spawn(move || paced(mqtt, buffers, per_buffer, background_rate, stop))
    };
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(AtomicU64::new(0));
    let prober = {
        let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut stream = connect(mqtt, "bench-probe");
            for seq in 1..=4000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis();
                let mut packet = Vec::new();
                let payload = format!("{seq};{}.{:03}", now_ms / 1000, now_ms % 1000);
                publish_packet(&mut packet, PROBE_TOPIC.as_bytes(), payload.as_bytes());
                sent.lock().unwrap().push(Instant::now());
                stream.write_all(&packet).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut latency = Histogram::<u64>::new(3).unwrap();
    let mut probe_query = Histogram::<u64>::new(3).unwrap();
    let probe_sql = "SELECT max(value) AS v FROM samples WHERE metric = 'bench_probe' AND time > now() - interval '5 minutes'";
    let phase = Instant::now();
    while phase.elapsed() < Duration::from_secs(20) {
        let asked = Instant::now();
        let v = sql(&agent, http, probe_sql)[0]["v"].as_f64().unwrap_or(0.0) as u64;
        let answered = Instant::now();
        probe_query
            .record(answered.duration_since(asked).as_micros() as u64)
            .unwrap();
        let before = seen.swap(v.max(seen.load(Ordering::Relaxed)), Ordering::Relaxed);
        let sent = sent.lock().unwrap();
        for seq in before + 1..=v.min(sent.len() as u64) {
            let published = sent[seq as usize - 1];
            latency
                .record(answered.duration_since(published).as_micros() as u64)
                .unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();
    background.join().unwrap();
    let rss = peak_rss_mib(pid);

    // Bytes on disk after the SIGTERM flush.
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let _ = server.0.wait();
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("store/catalog.json")).unwrap()).unwrap();
    let (bytes, rows) =
        catalog["files"]
            .as_array()
            .unwrap()
            .iter()
            .fold((0u64, 0u64), |(b, r), f| {
                (
                    b + f["bytes"].as_u64().unwrap(),
                    r + f["rows"].as_u64().unwrap(),
                )
            });
    ExawatchFigures {
        samples_per_sec: workload.messages as f64 / elapsed,
        cpu_s_per_million: cpu / (workload.messages as f64 / 1e6),
        peak_rss_mib: rss,
        bytes_per_sample: bytes as f64 / rows as f64,
        latency,
        probe_query,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` lists benchmarks; there is nothing to list quickly here.
        return;
    }
    let nodes: usize = env_or("BENCH_NODES", 100);
    let seconds: usize = env_or("BENCH_SECONDS", 300);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let background_rate: u64 = env_or("BENCH_BACKGROUND_RATE", 50_000);
    let workload = workload(nodes, seconds);
    eprintln!(
        "workload: {} EXAMON messages ({nodes} nodes × {seconds} s)",
        workload.messages
    );
    let dir = tempfile::tempdir().unwrap();

    let (mut mosquitto, mut exawatch) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let m = mosquitto_run(&workload, dir.path());
        let e = exawatch_run(&workload, dir.path(), background_rate);
        eprintln!(
            "run {run}: mosquitto {m:.0} msg/s; exawatch {:.0} samples/s, {:.2} CPU-s/M, {:.0} MiB peak, {:.2} B/sample, latency p50 {} µs p99 {} µs",
            e.samples_per_sec,
            e.cpu_s_per_million,
            e.peak_rss_mib,
            e.bytes_per_sample,
            e.latency.value_at_quantile(0.5),
            e.latency.value_at_quantile(0.99)
        );
        mosquitto.push(m);
        exawatch.push(e);
    }
    let m = median(mosquitto);
    let e_rate = median(exawatch.iter().map(|e| e.samples_per_sec).collect());
    let mut latency = Histogram::<u64>::new(3).unwrap();
    let mut probe_query = Histogram::<u64>::new(3).unwrap();
    for e in &exawatch {
        latency.add(&e.latency).unwrap();
        probe_query.add(&e.probe_query).unwrap();
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| figure (median of {runs} runs, {} messages each) | value |",
        workload.messages
    );
    println!("|---|---|");
    println!("| mosquitto relay, pub → sub (reference) | {m:.0} msg/s |");
    println!("| exawatch end to end, pub → queryable | {e_rate:.0} samples/s |");
    println!("| ratio exawatch / mosquitto | {:.2} |", e_rate / m);
    println!(
        "| exawatch CPU-s per million samples | {:.2} |",
        median(exawatch.iter().map(|e| e.cpu_s_per_million).collect())
    );
    println!(
        "| exawatch peak RSS | {:.0} MiB |",
        median(exawatch.iter().map(|e| e.peak_rss_mib).collect())
    );
    println!(
        "| exawatch bytes on disk per sample (after flush) | {:.2} |",
        median(exawatch.iter().map(|e| e.bytes_per_sample).collect())
    );
    println!(
        "| publish → visible in SQL at {background_rate} msg/s background, p50 / p90 / p99 / max ({} probes) | {:.1} / {:.1} / {:.1} / {:.1} ms |",
        latency.len(),
        ms(&latency, 0.5),
        ms(&latency, 0.9),
        ms(&latency, 0.99),
        latency.max() as f64 / 1000.0
    );
    println!(
        "| the probe query itself, p50 / p99 | {:.1} / {:.1} ms |",
        ms(&probe_query, 0.5),
        ms(&probe_query, 0.99)
    );
}
