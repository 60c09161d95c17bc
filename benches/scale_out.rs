//! Scale-out ingest benchmark (issue 22): the EXAMON workload published unpaced at QoS 0 to
//! Debian's mosquitto, taken by 1, 2 or 4 ingesters (`--role ingest`, an MQTT 5 shared
//! subscription each, one object store) on this one machine, and counted through a querier.
//! The cores are shared by every process, so this measures cost, not speed-up: CPU seconds
//! per million samples summed over the ingesters, and mosquitto's; the largest ingester's
//! peak RSS; samples/s from the first publish to the last sample stored; and samples lost
//! (published − counted by the querier).
//!
//! Run: `cargo bench --bench scale_out` (env: `BENCH_NODES`, `BENCH_SECONDS` (default
//! 100 × 300: 1.5 M messages), `BENCH_RUNS` (3), `BENCH_INGESTERS` (`1,2,4`)). Needs
//! `python3` and `mosquitto`. Prints medians as a table for `benches/RESULTS.md`.

#[path = "support.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

/// The figures of one run.
struct Figures {
    samples_per_sec: f64,
    lost: u64,
    ingester_cpu_s_per_million: f64,
    mosquitto_cpu_s_per_million: f64,
    peak_rss_mib: f64,
}

/// Waits until the servers on `https` have stored `n` samples together, or stored nothing
/// more for 30 s; returns when the last was stored.
fn wait_stored(agent: &ureq::Agent, https: &[u16], n: u64) -> Instant {
    let mut last = (0.0, Instant::now());
    loop {
        let stored: f64 = https
            .iter()
            .map(|&http| metric(agent, http, "exawatch_samples_written_total"))
            .sum();
        if stored > last.0 {
            last = (stored, Instant::now());
        }
        if stored >= n as f64 || last.1.elapsed() > Duration::from_secs(30) {
            return last.1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run(workload: &Workload, dir: &Path, ingesters: usize) -> Figures {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let objects = format!(
        "store.object_store_url=file://{}",
        dir.join("objects").display()
    );
    // No limit on QoS 1 messages in flight either: each ingester's receive maximum bounds it.
    let (mosquitto, port) = start_mosquitto(dir, "max_inflight_messages 0\npersistence false\n");
    let servers: Vec<Server> = (0..ingesters)
        .map(|i| {
            let name = format!("ing{i}");
            Server::start_logged(
                &dir.join(&name),
                &dir.join(format!("{name}.log")),
                &[
                    "--role",
                    "ingest",
                    "--set",
                    &objects,
                    "--set",
                    &format!("store.ingester={name}"),
                    "--set",
                    &format!("upstream.broker=127.0.0.1:{port}"),
                    "--set",
                    &format!("upstream.client_id=bench-{name}"),
                ],
            )
        })
        .collect();
    // The shared subscriptions are made once the ingesters are up.
    std::thread::sleep(Duration::from_secs(1));
    let https: Vec<u16> = servers.iter().map(|s| s.http).collect();
    let agent = agent();
    let cpu = |pids: &[u32]| pids.iter().map(|&pid| cpu_seconds(pid)).sum::<f64>();
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let mosquitto_pid = mosquitto.0.id();
    let (cpu_before, mosquitto_before) = (cpu(&pids), cpu_seconds(mosquitto_pid));
    let started = Instant::now();
    let done = std::thread::scope(|scope| {
        let publishing = scope.spawn(|| blast(port, &workload.buffers));
        let done = wait_stored(&agent, &https, workload.messages);
        publishing.join().unwrap();
        done
    });
    let elapsed = done.duration_since(started).as_secs_f64();
    let millions = workload.messages as f64 / 1e6;
    let ingester_cpu = (cpu(&pids) - cpu_before) / millions;
    let mosquitto_cpu = (cpu_seconds(mosquitto_pid) - mosquitto_before) / millions;
    let peak_rss_mib = pids
        .iter()
        .map(|&pid| peak_rss_mib(pid))
        .fold(0.0, f64::max);
    // Counted through a querier: every ingester's memory and files, each row once.
    let querier = Server::start_logged(
        &dir.join("querier"),
        &dir.join("querier.log"),
        &["--role", "query", "--set", &objects],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let counted = loop {
        let counted = sql(&agent, querier.http, "SELECT count(*) AS n FROM samples")[0]["n"]
            .as_u64()
            .unwrap();
        if counted >= workload.messages || Instant::now() > deadline {
            break counted;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Figures {
        samples_per_sec: workload.messages as f64 / elapsed,
        lost: workload.messages.saturating_sub(counted),
        ingester_cpu_s_per_million: ingester_cpu,
        mosquitto_cpu_s_per_million: mosquitto_cpu,
        peak_rss_mib,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let nodes: usize = env_or("BENCH_NODES", 100);
    let seconds: usize = env_or("BENCH_SECONDS", 300);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let counts: Vec<usize> = env_or("BENCH_INGESTERS", "1,2,4".to_owned())
        .split(',')
        .map(|n| n.trim().parse().expect("BENCH_INGESTERS: numbers"))
        .collect();
    let workload = workload(nodes, seconds);
    eprintln!(
        "workload: {} EXAMON messages ({nodes} nodes × {seconds} s)",
        workload.messages
    );
    let dir = tempfile::tempdir().unwrap();
    let mut figures: Vec<Vec<Figures>> = counts.iter().map(|_| Vec::new()).collect();
    for round in 1..=runs {
        for (i, &n) in counts.iter().enumerate() {
            let f = run(&workload, &dir.path().join(format!("run-{n}")), n);
            eprintln!(
                "run {round}: {n} ingesters: {:.0} samples/s, {} lost, CPU-s per M {:.2} (mosquitto {:.2}), peak RSS {:.0} MiB",
                f.samples_per_sec,
                f.lost,
                f.ingester_cpu_s_per_million,
                f.mosquitto_cpu_s_per_million,
                f.peak_rss_mib
            );
            figures[i].push(f);
        }
    }
    println!(
        "| ingesters (median of {runs} runs, {} messages each) | samples/s | lost | ingesters' CPU-s per M | mosquitto's CPU-s per M | largest peak RSS |",
        workload.messages
    );
    println!("|---|---|---|---|---|---|");
    for (i, n) in counts.iter().enumerate() {
        let of = |f: fn(&Figures) -> f64| median(figures[i].iter().map(f).collect());
        println!(
            "| {n} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} MiB |",
            of(|f| f.samples_per_sec),
            of(|f| f.lost as f64),
            of(|f| f.ingester_cpu_s_per_million),
            of(|f| f.mosquitto_cpu_s_per_million),
            of(|f| f.peak_rss_mib),
        );
    }
}
