//! Soak: `exawatch up` under steady EXAMON load over MQTT for a long time (30 minutes by
//! default) with Grafana-style PromQL queries running alongside. Every minute it prints the
//! server's resident memory and the queries' p50/p99; at the end, whether RSS stayed flat
//! (the last third against the middle third) and how p99 under load compares with p99 at
//! idle. Every query covers the last [`WINDOW_SECS`], and the load runs for that long before
//! the idle baseline is taken, so idle and loaded queries read the same amount of data.
//!
//! Run: `cargo bench --bench soak` (env: `SOAK_MINUTES` = 30, `SOAK_RATE` = 50000 samples/s,
//! `SOAK_NODES` = 200). Paste the output into `benches/RESULTS.md`.

#[path = "support.rs"]
mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use support::*;

/// Metrics each simulated node publishes per tick, EXAMON style.
const METRICS: [&str; 10] = [
    "cpu_util",
    "load1",
    "mem_used",
    "rx_bytes",
    "tx_bytes",
    "pkg_power",
    "dram_power",
    "cpu0_temp",
    "fan1",
    "node_power",
];

/// The time range of every query: the last 5 minutes.
const WINDOW_SECS: u64 = 300;

const QUERIES: [&str; 3] = [
    "avg by (node) (cpu_util)",
    "topk(5, avg_over_time(node_power[5m]))",
    "sum by (node) (rate(rx_bytes[1m]))",
];

/// Publishes `rate` samples per second with current timestamps until `stop`.
fn publisher(mqtt: u16, nodes: usize, rate: u64, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let mut stream = connect(mqtt, "soak-publisher");
    let topics: Vec<Vec<u8>> = (0..nodes)
        .flat_map(|n| {
            METRICS.iter().map(move |m| {
                format!("org/soak/cluster/c/node/node{n:04}/plugin/sim/chnl/data/{m}").into_bytes()
            })
        })
        .collect();
    let started = Instant::now();
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut next = 0usize;
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        buffer.clear();
        for _ in 0..(rate / 100).max(1) {
            let topic = &topics[next % topics.len()];
            let payload = format!(
                "{};{}.{:03}",
                (count % 997) as f64 / 7.0,
                now.as_secs(),
                now.subsec_millis()
            );
            publish_packet(&mut buffer, topic, payload.as_bytes());
            next += 1;
            count += 1;
        }
        if stream.write_all(&buffer).is_err() {
            return;
        }
        sent.store(count, Ordering::Relaxed);
        let due = Duration::from_secs_f64(count as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// Runs the queries in a loop for `duration`; returns their latencies (µs).
fn query_for(
    agent: &ureq::Agent,
    http: u16,
    duration: Duration,
    stop: &AtomicBool,
) -> Histogram<u64> {
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
        let end = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let url = format!(
            "http://127.0.0.1:{http}/api/v1/query_range?query={}&start={}&end={end}&step=15",
            urlencode(QUERIES[i % QUERIES.len()]),
            end - WINDOW_SECS
        );
        let asked = Instant::now();
        let mut response = agent.get(&url).call().unwrap();
        let _ = response.body_mut().read_to_string();
        latencies
            .record(asked.elapsed().as_micros() as u64)
            .unwrap();
        assert_eq!(response.status(), 200, "{url}");
        i += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    latencies
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let minutes: u64 = env_or("SOAK_MINUTES", 30);
    let rate: u64 = env_or("SOAK_RATE", 50_000);
    let nodes: usize = env_or("SOAK_NODES", 200);
    let dir = tempfile::tempdir().unwrap();
    let (server, http, mqtt) = start_exawatch(
        &dir.path().join("data"),
        &dir.path().join("exawatch.log"),
        &[],
    );
    let pid = server.pid();
    let agent = agent();
    println!(
        "soak: {minutes} min at {rate} samples/s from {nodes} nodes; PromQL queries 4/s over the last {WINDOW_SECS} s"
    );

    // A full query window of data, then the idle baseline on it.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let warmup = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || publisher(mqtt, nodes, rate, stop, sent))
    };
    std::thread::sleep(Duration::from_secs(WINDOW_SECS));
    stop.store(true, Ordering::Relaxed);
    warmup.join().unwrap();
    let idle = query_for(
        &agent,
        http,
        Duration::from_secs(30),
        &AtomicBool::new(false),
    );
    println!(
        "idle: p50 {:.1} ms, p99 {:.1} ms",
        idle.value_at_quantile(0.5) as f64 / 1e3,
        idle.value_at_quantile(0.99) as f64 / 1e3
    );

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || publisher(mqtt, nodes, rate, stop, sent))
    };
    println!(
        "{:>6} {:>10} {:>9} {:>9} {:>12}",
        "minute", "rss MiB", "p50 ms", "p99 ms", "samples"
    );
    let mut rss = Vec::new();
    let mut all = Histogram::<u64>::new(3).unwrap();
    for minute in 1..=minutes {
        let latencies = query_for(&agent, http, Duration::from_secs(60), &stop);
        let now_rss = rss_mib(pid);
        rss.push(now_rss);
        all.add(&latencies).unwrap();
        println!(
            "{minute:>6} {now_rss:>10.0} {:>9.1} {:>9.1} {:>12}",
            latencies.value_at_quantile(0.5) as f64 / 1e3,
            latencies.value_at_quantile(0.99) as f64 / 1e3,
            sent.load(Ordering::Relaxed)
        );
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let third = (rss.len() / 3).max(1);
    let middle = median(rss[third..(2 * third).max(third + 1).min(rss.len())].to_vec());
    let last = median(rss[rss.len() - third..].to_vec());
    let p99_ratio = all.value_at_quantile(0.99) as f64 / idle.value_at_quantile(0.99).max(1) as f64;
    println!(
        "RSS median middle third {middle:.0} MiB, last third {last:.0} MiB ({:+.1} %); query p99 under load / idle = {p99_ratio:.2}",
        (last / middle - 1.0) * 100.0
    );
}
