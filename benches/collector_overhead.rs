//! Collector overhead: `exawatch collect` with every family at a 1 s period, publishing into a
//! running `exawatch up`, against Debian's `prometheus-node-exporter` scraped once a second,
//! in the same run on the same machine. Measured: CPU seconds of each process over the
//! window (the exporter's scraper and exawatch's server are not counted), as a share of one
//! core, and how many values each produces per second.
//!
//! Run: `cargo bench --bench collector_overhead` (env: `BENCH_SECONDS` = 60 per window,
//! `BENCH_RUNS` = 3). Needs `apt-get install prometheus-node-exporter`. Prints which families
//! were available here and a Markdown table of medians for `benches/RESULTS.md`.

#[path = "support.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Every family's period set to one second.
const ONE_SECOND: [&str; 11] = [
    "collector.period_secs=1",
    "collector.linux.period_secs=1",
    "collector.perf.period_secs=1",
    "collector.cpufreq.period_secs=1",
    "collector.rapl.period_secs=1",
    "collector.hwmon.period_secs=1",
    "collector.thermal.period_secs=1",
    "collector.jetson.period_secs=1",
    "collector.nvidia.period_secs=1",
    "collector.ipmi.period_secs=1",
    "collector.slurm.period_secs=1",
];

/// `exawatch collect` for `seconds`: (share of one core, values published per second).
fn exawatch_collect(seconds: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (_server, http, mqtt) = start_exawatch(
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        &[],
    );
    let mut command = Command::new(EXAWATCH);
    command
        .args(["collect", "--broker", &format!("127.0.0.1:{mqtt}")])
        .args(["--set", "collector.node=overhead"]);
    for setting in ONE_SECOND {
        command.args(["--set", setting]);
    }
    let collector = Process(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let agent = agent();
    let count = || {
        sql(&agent, http, "SELECT count(*) AS n FROM samples")[0]["n"]
            .as_f64()
            .unwrap()
    };
    // Warm-up: the first samples of counters only set their baselines.
    std::thread::sleep(Duration::from_secs(5));
    let (cpu, rows) = (cpu_seconds(collector.0.id()), count());
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = cpu_seconds(collector.0.id()) - cpu;
    // Published samples reach the table within a second.
    std::thread::sleep(Duration::from_secs(1));
    let rows = count() - rows;
    (cpu / seconds as f64, rows / seconds as f64)
}

/// node-exporter scraped every second for `seconds`: (share of one core, values per second).
fn node_exporter(seconds: u64) -> (f64, f64) {
    let port = free_port();
    let exporter = Process(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter (Debian package) is installed"),
    );
    wait_for_port(port, "prometheus-node-exporter");
    let agent = agent();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let scrape = || {
        let text = agent
            .get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        text.lines().filter(|l| !l.starts_with('#')).count()
    };
    for _ in 0..5 {
        scrape();
        std::thread::sleep(Duration::from_secs(1));
    }
    let cpu = cpu_seconds(exporter.0.id());
    let started = Instant::now();
    let mut values = 0;
    for tick in 1..=seconds {
        values += scrape();
        let due = Duration::from_secs(tick);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let cpu = cpu_seconds(exporter.0.id()) - cpu;
    (cpu / seconds as f64, values as f64 / seconds as f64)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds: u64 = env_or("BENCH_SECONDS", 60);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let list = Command::new(EXAWATCH)
        .args(["collect", "--list"])
        .output()
        .unwrap();
    eprint!("{}", String::from_utf8_lossy(&list.stdout));
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let e = exawatch_collect(seconds);
        let n = node_exporter(seconds);
        eprintln!(
            "run {run}: exawatch collect {:.3} % of a core, {:.0} values/s; node-exporter {:.3} %, {:.0} values/s",
            e.0 * 100.0,
            e.1,
            n.0 * 100.0,
            n.1
        );
        ours.push(e);
        theirs.push(n);
    }
    let med = |list: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(list.iter().map(f).collect());
    println!(
        "| collector ({runs} runs × {seconds} s, medians) | CPU, % of one core | values per second |"
    );
    println!("|---|---|---|");
    println!(
        "| exawatch collect, every family at 1 s | {:.3} | {:.0} |",
        med(&ours, |r| r.0) * 100.0,
        med(&ours, |r| r.1)
    );
    println!(
        "| prometheus-node-exporter, scraped every 1 s (reference) | {:.3} | {:.0} |",
        med(&theirs, |r| r.0) * 100.0,
        med(&theirs, |r| r.1)
    );
}
