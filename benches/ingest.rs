//! Ingest benchmark: EXAMON messages over MQTT into `exawatch up`, end to end (published →
//! countable in SQL), against Debian's mosquitto relaying the same packets (published →
//! delivered to a subscriber) in the same run.
//!
//! Workload: `shared/bench/gen_nodes.py --format examon` (`BENCH_NODES` nodes × 50 metrics ×
//! `BENCH_SECONDS` seconds; 100 × 600 = 3 M one-sample messages by default), pre-encoded as
//! MQTT 3.1.1 PUBLISH packets on 4 connections. Each phase runs on a fresh server, so peak
//! RSS is the phase's own:
//! - mosquitto, publishers unpaced: messages/s relayed, and lost;
//! - exawatch QoS 0 at each offered rate of `BENCH_RATES` (messages/s over all publishers,
//!   `max` = as fast as their sockets take them): samples/s stored, lost (published − counted
//!   in SQL), peak RSS, server CPU seconds per million samples, and the seconds the broker held
//!   publishers back;
//! - exawatch QoS 1 (PUBACK once in the WAL), 100 messages in flight per connection:
//!   samples/s and publish → PUBACK latency (hdrhistogram);
//! - publish → visible in SQL, probes every 5 ms on top of a paced background load, and bytes
//!   on disk per sample after the SIGTERM flush.
//!
//! Run: `cargo bench --bench ingest` (env: `BENCH_NODES`, `BENCH_SECONDS`, `BENCH_RUNS`,
//! `BENCH_RATES` (default `400000,900000,max`), `BENCH_BACKGROUND_RATE`, `BENCH_GEN`). Needs
//! `python3` and `mosquitto`. Prints medians as a table for `benches/RESULTS.md`.

#[path = "support.rs"]
mod support;

use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use support::*;

const PROBE_TOPIC: &str = "org/bench/cluster/bench/node/probe/plugin/bench/chnl/data/bench_probe";
/// QoS 1 messages a publisher keeps in flight (the broker's default receive maximum).
const QOS1_WINDOW: usize = 100;

/// mosquitto relaying the workload to one subscriber on `#`: messages per second, and lost.
fn mosquitto_run(workload: &Workload, dir: &Path) -> (f64, u64) {
    let (_broker, port) = start_mosquitto(dir, "");
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
    (
        got as f64 / last.duration_since(started).as_secs_f64(),
        workload.messages - got,
    )
}

/// What one QoS 0 phase measured.
struct Qos0Figures {
    samples_per_sec: f64,
    lost: u64,
    peak_rss_mib: f64,
    cpu_s_per_million: f64,
    held_back_secs: f64,
}

/// Publishes every buffer on its own connection, each at `rate / buffers` messages per
/// second (`None`: as fast as the socket takes them).
fn publish_at(port: u16, workload: &Workload, rate: Option<u64>) {
    let Some(rate) = rate else {
        return blast(port, &workload.buffers);
    };
    let per_connection = rate as f64 / workload.buffers.len() as f64;
    let per_buffer = workload.messages as f64 / workload.buffers.len() as f64;
    std::thread::scope(|scope| {
        for (i, buffer) in workload.buffers.iter().enumerate() {
            scope.spawn(move || {
                let mut stream = connect(port, &format!("bench-paced-{i}"));
                // Slices of about 1/200 s of this connection's load.
                let bytes_per_message = buffer.len() as f64 / per_buffer;
                let slice = ((per_connection / 200.0) * bytes_per_message).max(1024.0) as usize;
                let started = Instant::now();
                let mut sent = 0usize;
                for chunk in buffer.chunks(slice) {
                    stream.write_all(chunk).unwrap();
                    sent += chunk.len();
                    let due = sent as f64 / bytes_per_message / per_connection;
                    if let Some(wait) = Duration::from_secs_f64(due).checked_sub(started.elapsed())
                    {
                        std::thread::sleep(wait);
                    }
                }
                stream.write_all(&[0xe0, 0]).unwrap();
            });
        }
    });
}

/// Waits until the server has written `n` samples (or a minute passes without progress).
fn wait_written(agent: &ureq::Agent, http: u16, n: u64) -> Instant {
    let mut last = (0.0, Instant::now());
    loop {
        let written = metric(agent, http, "exawatch_samples_written_total");
        if written >= n as f64 {
            return Instant::now();
        }
        if written > last.0 {
            last = (written, Instant::now());
        }
        assert!(
            last.1.elapsed() < Duration::from_secs(60),
            "stuck at {written} of {n} samples"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn count(agent: &ureq::Agent, http: u16) -> u64 {
    sql(agent, http, "SELECT count(*) AS n FROM samples")[0]["n"]
        .as_u64()
        .unwrap()
}

fn qos0_run(workload: &Workload, dir: &Path, rate: Option<u64>) -> Qos0Figures {
    let data = dir.join("exawatch-qos0");
    let _ = std::fs::remove_dir_all(&data);
    let (server, http, mqtt) = start_exawatch(&data, &dir.join("exawatch-qos0.log"), &[]);
    let pid = server.pid();
    let agent = agent();
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let publisher = std::thread::scope(|scope| {
        let publishing = scope.spawn(|| publish_at(mqtt, workload, rate));
        let done = wait_written(&agent, http, workload.messages);
        publishing.join().unwrap();
        done
    });
    let elapsed = publisher.duration_since(started).as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let stored = count(&agent, http);
    Qos0Figures {
        samples_per_sec: workload.messages as f64 / elapsed,
        lost: workload.messages.saturating_sub(stored),
        peak_rss_mib: peak_rss_mib(pid),
        cpu_s_per_million: cpu / (workload.messages as f64 / 1e6),
        held_back_secs: metric(&agent, http, "exawatch_broker_ingest_wait_seconds_total"),
    }
}

/// The workload's packets as QoS 1 PUBLISHes with packet identifiers 1, 2, … per connection.
fn as_qos1(buffer: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut at = 0;
    let mut pkid = 0u16;
    while at < buffer.len() {
        let (mut len, mut shift, mut i) = (0usize, 0, at + 1);
        loop {
            let byte = buffer[i];
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let body = &buffer[i..i + len];
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        pkid = pkid.wrapping_add(1).max(1);
        let mut packet = vec![0x32];
        put_len(&mut packet, len + 2);
        packet.extend_from_slice(&body[..2 + topic_len]);
        packet.extend_from_slice(&pkid.to_be_bytes());
        packet.extend_from_slice(&body[2 + topic_len..]);
        packets.push(packet);
        at = i + len;
    }
    packets
}

/// exawatch with QoS 1 publishers: samples/s and publish → PUBACK latency.
fn qos1_run(workload: &Workload, dir: &Path) -> (f64, Histogram<u64>) {
    let data = dir.join("exawatch-qos1");
    let _ = std::fs::remove_dir_all(&data);
    let (_server, _http, mqtt) = start_exawatch(&data, &dir.join("exawatch-qos1.log"), &[]);
    let connections: Vec<Vec<Vec<u8>>> = workload.buffers.iter().map(|b| as_qos1(b)).collect();
    let started = Instant::now();
    let histograms: Vec<Histogram<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = connections
            .iter()
            .enumerate()
            .map(|(i, packets)| {
                scope.spawn(move || {
                    let stream = connect(mqtt, &format!("bench-qos1-{i}"));
                    let mut reader = BufReader::with_capacity(1 << 16, stream.try_clone().unwrap());
                    let sent: Arc<Vec<AtomicU64>> =
                        Arc::new((0..packets.len()).map(|_| AtomicU64::new(0)).collect());
                    let acked = Arc::new(AtomicU64::new(0));
                    let clock = Instant::now();
                    let writer = {
                        let (sent, acked) = (Arc::clone(&sent), Arc::clone(&acked));
                        let mut stream = stream;
                        scope.spawn(move || {
                            let mut batch = Vec::with_capacity(1 << 16);
                            let mut next = 0usize;
                            while next < packets.len() {
                                let window = acked.load(Ordering::Acquire) as usize + QOS1_WINDOW;
                                if next >= window {
                                    std::thread::yield_now();
                                    continue;
                                }
                                let now = clock.elapsed().as_nanos() as u64;
                                while next < window.min(packets.len()) {
                                    sent[next].store(now, Ordering::Relaxed);
                                    batch.extend_from_slice(&packets[next]);
                                    next += 1;
                                }
                                stream.write_all(&batch).unwrap();
                                batch.clear();
                            }
                            stream
                        })
                    };
                    let mut latency = Histogram::<u64>::new(3).unwrap();
                    for n in 0..packets.len() {
                        let (kind, len) = read_header(&mut reader).expect("PUBACK");
                        assert_eq!((kind, len), (0x40, 2), "PUBACK");
                        let mut pkid = [0u8; 2];
                        reader.read_exact(&mut pkid).unwrap();
                        let now = clock.elapsed().as_nanos() as u64;
                        latency
                            .record((now - sent[n].load(Ordering::Relaxed)) / 1000)
                            .unwrap();
                        acked.store(n as u64 + 1, Ordering::Release);
                    }
                    let mut stream = writer.join().unwrap();
                    stream.write_all(&[0xe0, 0]).unwrap();
                    latency
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latency = Histogram::<u64>::new(3).unwrap();
    for h in &histograms {
        latency.add(h).unwrap();
    }
    (workload.messages as f64 / elapsed, latency)
}

/// Publish → visible in SQL under a paced background load, then bytes on disk per sample
/// after the SIGTERM flush.
fn latency_run(workload: &Workload, dir: &Path, background_rate: u64) -> (Histogram<u64>, f64) {
    let data = dir.join("exawatch-latency");
    let _ = std::fs::remove_dir_all(&data);
    let (server, http, mqtt) = start_exawatch(&data, &dir.join("exawatch-latency.log"), &[]);
    let agent = agent();
    blast(mqtt, &workload.buffers);
    wait_written(&agent, http, workload.messages);

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
    let mut seen = 0u64;
    let probe_sql = "SELECT max(value) AS v FROM samples WHERE metric = 'bench_probe' AND time > now() - interval '5 minutes'";
    let phase = Instant::now();
    while phase.elapsed() < Duration::from_secs(20) {
        let v = sql(&agent, http, probe_sql)[0]["v"].as_f64().unwrap_or(0.0) as u64;
        let answered = Instant::now();
        let sent = sent.lock().unwrap();
        for seq in seen + 1..=v.min(sent.len() as u64) {
            latency
                .record(answered.duration_since(sent[seq as usize - 1]).as_micros() as u64)
                .unwrap();
        }
        seen = seen.max(v);
    }
    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();
    background.join().unwrap();
    server.terminate();
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
    (latency, bytes as f64 / rows as f64)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` lists benchmarks; there is nothing to list quickly here.
        return;
    }
    let nodes: usize = env_or("BENCH_NODES", 100);
    let seconds: usize = env_or("BENCH_SECONDS", 600);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let background_rate: u64 = env_or("BENCH_BACKGROUND_RATE", 50_000);
    let rates: Vec<Option<u64>> = env_or("BENCH_RATES", "400000,900000,max".to_owned())
        .split(',')
        .map(|r| r.trim().parse().ok())
        .collect();
    let workload = workload(nodes, seconds);
    eprintln!(
        "workload: {} EXAMON messages ({nodes} nodes × {seconds} s)",
        workload.messages
    );
    let dir = tempfile::tempdir().unwrap();
    let label = |rate: &Option<u64>| rate.map_or("max".to_owned(), |r| format!("{}k", r / 1000));

    let mut mosquitto = Vec::new();
    let mut qos0: Vec<Vec<Qos0Figures>> = rates.iter().map(|_| Vec::new()).collect();
    let mut qos1 = Vec::new();
    let mut qos1_latency = Histogram::<u64>::new(3).unwrap();
    for run in 1..=runs {
        let (m, lost) = mosquitto_run(&workload, dir.path());
        eprintln!("run {run}: mosquitto {m:.0} msg/s, {lost} lost");
        mosquitto.push((m, lost));
        for (i, rate) in rates.iter().enumerate() {
            let f = qos0_run(&workload, dir.path(), *rate);
            eprintln!(
                "run {run}: exawatch QoS 0 offered {}: {:.0} samples/s, {} lost, {:.0} MiB peak, {:.2} CPU-s/M, held back {:.1} s",
                label(rate),
                f.samples_per_sec,
                f.lost,
                f.peak_rss_mib,
                f.cpu_s_per_million,
                f.held_back_secs
            );
            qos0[i].push(f);
        }
        let (rate, latency) = qos1_run(&workload, dir.path());
        eprintln!(
            "run {run}: exawatch QoS 1: {rate:.0} samples/s, PUBACK p50 {} µs p99 {} µs",
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99)
        );
        qos1.push(rate);
        qos1_latency.add(&latency).unwrap();
    }
    let (latency, bytes_per_sample) = latency_run(&workload, dir.path(), background_rate);

    let m = median(mosquitto.iter().map(|m| m.0).collect());
    println!(
        "| what (median of {runs} runs, {} messages each) | samples/s | lost | peak RSS | CPU-s per M | held back |",
        workload.messages
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| mosquitto relay, pub → sub, unpaced (reference) | {m:.0} | {} | – | – | – |",
        mosquitto.iter().map(|m| m.1).max().unwrap()
    );
    for (rate, figures) in rates.iter().zip(&qos0) {
        let rate_median = median(figures.iter().map(|f| f.samples_per_sec).collect());
        println!(
            "| exawatch QoS 0, offered {} | {rate_median:.0} ({:.2}× mosquitto) | {} | {:.0} MiB | {:.2} | {:.1} s |",
            label(rate),
            rate_median / m,
            figures.iter().map(|f| f.lost).max().unwrap(),
            median(figures.iter().map(|f| f.peak_rss_mib).collect()),
            median(figures.iter().map(|f| f.cpu_s_per_million).collect()),
            median(figures.iter().map(|f| f.held_back_secs).collect()),
        );
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| exawatch QoS 1 ({QOS1_WINDOW} in flight per connection) | {:.0} | 0 | – | – | – |",
        median(qos1)
    );
    println!();
    println!(
        "QoS 1 publish → PUBACK (after the WAL), p50 / p99 / max: {:.2} / {:.2} / {:.2} ms ({} messages)",
        ms(&qos1_latency, 0.5),
        ms(&qos1_latency, 0.99),
        qos1_latency.max() as f64 / 1000.0,
        qos1_latency.len()
    );
    println!(
        "Publish → visible in SQL at {background_rate} msg/s background, p50 / p90 / p99 / max: {:.1} / {:.1} / {:.1} / {:.1} ms ({} probes)",
        ms(&latency, 0.5),
        ms(&latency, 0.9),
        ms(&latency, 0.99),
        latency.max() as f64 / 1000.0,
        latency.len()
    );
    println!("Bytes on disk per sample after the SIGTERM flush: {bytes_per_sample:.2}");
}
