//! Line-protocol ingest benchmark: the same Influx line protocol posted over HTTP to
//! exawatch, Debian's `victoria-metrics` and Debian's `influxdb` in one run, each on a fresh
//! data directory, with `shared/bench/load_lp.py` (4 threads, 10k-line batches).
//!
//! Workloads from `shared/bench/gen_nodes.py --format influx`: `BENCH_NODES` nodes ×
//! `BENCH_SECONDS` s at 1 s, 50 metrics per node (default 100 × 3600: 18 M samples, 5,000
//! series), and a high-cardinality variant with `BENCH_WIDE_NODES` nodes (default 2000) over
//! the same number of samples (100,000 series). Measured per system and run: samples/s,
//! server CPU seconds per million samples and peak RSS (from load_lp.py), and bytes on disk
//! per sample: `du` of the whole data directory after a clean shutdown (exawatch flushes its
//! buffer on SIGTERM and truncates its WAL; VictoriaMetrics is asked to flush first;
//! InfluxDB's figure includes its WAL and whatever TSM compaction did by then). exawatch's
//! row count is checked against the samples sent.
//!
//! Run: `cargo bench --bench lp_ingest` (env: `BENCH_NODES`, `BENCH_SECONDS`,
//! `BENCH_WIDE_NODES`, `BENCH_RUNS`, `BENCH_SYSTEMS` = comma list of exawatch,
//! victoria-metrics, influxdb; `BENCH_GEN`, `BENCH_LOADER` = paths of gen_nodes.py and
//! load_lp.py). Prints medians as a Markdown table for `benches/RESULTS.md`.

#[path = "support.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

/// Figures of one system on one workload in one run.
struct Figures {
    samples_per_sec: f64,
    cpu_s_per_million: f64,
    peak_rss_mib: f64,
    bytes_per_sample: f64,
}

/// Bytes under `dir`, as `du` counts them (allocated blocks).
fn disk_bytes(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sk").arg(dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn figures(report: &serde_json::Value, bytes_on_disk: u64) -> Figures {
    let samples = report["samples"].as_f64().unwrap();
    Figures {
        samples_per_sec: report["samples_per_s"].as_f64().unwrap(),
        cpu_s_per_million: report["server_cpu_s_per_Msample"].as_f64().unwrap(),
        peak_rss_mib: report["server_peak_rss_MiB"].as_f64().unwrap(),
        bytes_per_sample: bytes_on_disk as f64 / samples,
    }
}

fn exawatch(file: &Path, dir: &Path) -> Figures {
    let data = dir.join("exawatch");
    let (server, http, _) = start_exawatch(&data, &dir.join("exawatch.log"), &[]);
    let pid = server.pid();
    let url = format!("http://127.0.0.1:{http}/api/v2/write?bucket=bench&precision=ns");
    let report = load_lp(&url, file, pid, "exawatch");
    let stored = sql(&agent(), http, "SELECT count(*) AS n FROM samples")[0]["n"]
        .as_u64()
        .unwrap();
    assert_eq!(stored, report["samples"].as_u64().unwrap(), "exawatch rows");
    server.terminate();
    figures(&report, disk_bytes(&data))
}

fn victoria_metrics(file: &Path, dir: &Path) -> Figures {
    let data = dir.join("victoria-metrics");
    let (mut server, port) = start_victoria_metrics(&data, &dir.join("victoria-metrics.log"));
    let url = format!("http://127.0.0.1:{port}/write");
    let report = load_lp(&url, file, server.0.id(), "victoria-metrics");
    let _ = agent()
        .get(&format!("http://127.0.0.1:{port}/internal/force_flush"))
        .call();
    terminate(&mut server);
    figures(&report, disk_bytes(&data))
}

fn influxdb(file: &Path, dir: &Path) -> Figures {
    let data = dir.join("influxdb");
    let port = free_port();
    let conf = dir.join("influxdb.conf");
    std::fs::write(
        &conf,
        format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  \
             cache-max-memory-size = \"8g\"\n  max-series-per-database = 0\n  max-values-per-tag = 0\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n",
            free_port(),
            d = data.display()
        ),
    )
    .unwrap();
    let mut server = Process(
        Command::new("influxd")
            .arg("-config")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("influxdb.log")).unwrap())
            .spawn()
            .expect("influxdb (Debian package) is installed"),
    );
    wait_for_port(port, "influxd");
    let mut created = agent()
        .post(&format!("http://127.0.0.1:{port}/query"))
        .content_type("application/x-www-form-urlencoded")
        .send("q=CREATE DATABASE bench")
        .unwrap();
    assert_eq!(
        created.status(),
        200,
        "{}",
        created.body_mut().read_to_string().unwrap_or_default()
    );
    let url = format!("http://127.0.0.1:{port}/write?db=bench&precision=ns");
    let report = load_lp(&url, file, server.0.id(), "influxdb");
    terminate(&mut server);
    figures(&report, disk_bytes(&data))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let nodes: usize = env_or("BENCH_NODES", 100);
    let seconds: usize = env_or("BENCH_SECONDS", 3600);
    let wide_nodes: usize = env_or("BENCH_WIDE_NODES", 2000);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let systems: String = env_or(
        "BENCH_SYSTEMS",
        "exawatch,victoria-metrics,influxdb".to_owned(),
    );
    let workloads = [
        (nodes, seconds),
        (wide_nodes, (nodes * seconds / wide_nodes).max(1)),
    ];
    let dir = tempfile::tempdir().unwrap();
    println!(
        "| workload | system | samples/s (ratio to VM) | CPU-s per M samples | peak RSS MiB | bytes on disk per sample |"
    );
    println!("|---|---|---|---|---|---|");
    for (nodes, seconds) in workloads {
        let file = line_protocol(nodes, seconds);
        let mut results: Vec<(&str, Vec<Figures>)> = Vec::new();
        for run in 1..=runs {
            for system in systems.split(',') {
                let scratch = dir.path().join(format!("{system}-{run}"));
                std::fs::create_dir_all(&scratch).unwrap();
                let f = match system {
                    "exawatch" => exawatch(&file, &scratch),
                    "victoria-metrics" => victoria_metrics(&file, &scratch),
                    "influxdb" => influxdb(&file, &scratch),
                    other => panic!("unknown system {other}"),
                };
                eprintln!(
                    "n{nodes}d{seconds} run {run} {system}: {:.0} samples/s, {:.2} CPU-s/M, {:.0} MiB, {:.2} B/sample",
                    f.samples_per_sec, f.cpu_s_per_million, f.peak_rss_mib, f.bytes_per_sample
                );
                let _ = std::fs::remove_dir_all(&scratch);
                match results.iter_mut().find(|(s, _)| *s == system) {
                    Some((_, list)) => list.push(f),
                    None => results.push((system, vec![f])),
                }
            }
        }
        let medians: Vec<(&str, [f64; 4])> = results
            .iter()
            .map(|(system, list)| {
                let m = |f: fn(&Figures) -> f64| median(list.iter().map(f).collect());
                (
                    *system,
                    [
                        m(|f| f.samples_per_sec),
                        m(|f| f.cpu_s_per_million),
                        m(|f| f.peak_rss_mib),
                        m(|f| f.bytes_per_sample),
                    ],
                )
            })
            .collect();
        let reference = medians
            .iter()
            .find(|(s, _)| *s == "victoria-metrics")
            .map(|(_, m)| m[0]);
        for (system, [rate, cpu, rss, bytes]) in &medians {
            let ratio = reference.map_or(String::new(), |r| format!(" ({:.2})", rate / r));
            println!(
                "| n{nodes}d{seconds} | {system} | {rate:.0}{ratio} | {cpu:.2} | {rss:.0} | {bytes:.2} |"
            );
        }
    }
}
