//! PromQL query benchmark: Grafana-style queries over the Prometheus HTTP API of exawatch and
//! of Debian's `victoria-metrics`, on the same data, in one run.
//!
//! Data: `shared/bench/gen_nodes.py --format influx` (`BENCH_NODES` × `BENCH_SECONDS`, default
//! 100 nodes × 1 h at 1 s: 18 M samples), posted to both over HTTP with
//! `shared/bench/load_lp.py`; both servers are then restarted so that queries read what is
//! on disk, as dashboards over past hours do. The queries are `shared/bench/query_bench.py`'s
//! (cluster panels over the whole range at the step of a 1000-point panel, one node's panels,
//! topk, aggregations by node). VictoriaMetrics is asked with `nocache=1` (its result cache
//! off: exawatch has none; both keep decoded data in memory, exawatch its blocks in
//! `store.read_cache_mib`).
//! Each round runs every query once on each system, alternating (which goes first alternates
//! by round too), so machine noise hits both;
//! latencies go into one hdrhistogram per query and system. The number of series each system
//! returns is shown (and flagged where they differ).
//!
//! With `BENCH_PEER=querier` the peer is instead an exawatch querier (`--role query`) over
//! the same object store as the single process: what answering through a querier costs.
//!
//! Run: `cargo bench --bench promql_query` (env: `BENCH_NODES`, `BENCH_SECONDS`, `BENCH_REPS`
//! rounds, default 50, `BENCH_PEER`). Prints a Markdown table for `benches/RESULTS.md`.

#[path = "support.rs"]
mod support;

use std::time::Instant;

use hdrhistogram::Histogram;
use support::*;

/// First sample of gen_nodes.py's default `--start`.
const START: i64 = 1_700_000_000;

/// A named query: its name, API path and parameters.
type Query = (&'static str, &'static str, Vec<(&'static str, String)>);

/// The queries of shared/bench/query_bench.py, over the whole data (`nodes` × `seconds`) at
/// the step Grafana takes for a panel about 1000 points wide: 15 s over 1 h, 90 s over 24 h,
/// 615 s over 7 d.
fn queries(nodes: usize, seconds: usize) -> Vec<Query> {
    let end = START + seconds as i64 - 1;
    let step = (seconds / 1000).max(15).div_ceil(15) * 15;
    let range = move |q: &str| {
        vec![
            ("query", q.to_owned()),
            ("start", START.to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ]
    };
    // node042 and node007 of 100 nodes; as far into fewer.
    let node_at = |percent: usize| format!("node{:03}", nodes * percent / 100);
    let (node, node2) = (node_at(42), node_at(7));
    vec![
        (
            "avg by node of rate(rx_bytes[1m])",
            "/api/v1/query_range",
            range("avg by (node) (rate(procfs_rx_bytes[1m]))"),
        ),
        (
            "max_over_time, one node, 5m",
            "/api/v1/query_range",
            range(&format!(
                "max_over_time(ipmi_cpu0_temp{{node=\"{node}\"}}[5m])"
            )),
        ),
        (
            "max_over_time, one node, 1h, instant",
            "/api/v1/query",
            vec![
                (
                    "query",
                    format!("max_over_time(ipmi_cpu0_temp{{node=\"{node}\"}}[1h])"),
                ),
                ("time", end.to_string()),
            ],
        ),
        (
            "topk(5, avg_over_time(gpu power[5m]))",
            "/api/v1/query_range",
            range("topk(5, avg_over_time(nvml_power[5m]))"),
        ),
        (
            "avg by node of core util (800 series)",
            "/api/v1/query_range",
            range("avg by (node) (procfs_util)"),
        ),
        (
            "one node's core util",
            "/api/v1/query_range",
            range(&format!("procfs_util{{node=\"{node2}\"}}")),
        ),
        (
            "cluster power sum",
            "/api/v1/query_range",
            range("sum(rapl_pkg_power) + sum(rapl_dram_power) + sum(nvml_power)"),
        ),
        (
            "one node's rate(ctxt[1m])",
            "/api/v1/query_range",
            range(&format!("rate(procfs_ctxt{{node=\"{node2}\"}}[1m])")),
        ),
    ]
}

/// Runs one query; returns the latency in µs and the number of series (or 1 for a scalar).
fn run(agent: &ureq::Agent, base: &str, path: &str, params: &[(&str, String)]) -> (u64, usize) {
    let asked = Instant::now();
    let mut response = agent
        .post(&format!("{base}{path}"))
        .send_form(params.iter().map(|(k, v)| (*k, v.as_str())))
        .unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    let micros = asked.elapsed().as_micros() as u64;
    assert_eq!(response.status(), 200, "{base}{path} {params:?}: {text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let series = json["data"]["result"].as_array().map_or(1, Vec::len);
    (micros, series)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let nodes: usize = env_or("BENCH_NODES", 100);
    let seconds: usize = env_or("BENCH_SECONDS", 3600);
    let reps: usize = env_or("BENCH_REPS", 50);
    let querier_peer = std::env::var("BENCH_PEER").is_ok_and(|p| p == "querier");
    let file = line_protocol(nodes, seconds);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("exawatch.log");
    let objects = format!(
        "store.object_store_url=file://{}",
        dir.path().join("objects").display()
    );

    // Load both, then restart both on their data.
    let exawatch_data = dir.path().join("exawatch");
    let exawatch_args = ["--set", objects.as_str()];
    let (exawatch, http, _) = start_exawatch(&exawatch_data, &log, &exawatch_args);
    let url = format!("http://127.0.0.1:{http}/api/v2/write?bucket=bench&precision=ns");
    let loaded = load_lp(&url, &file, exawatch.pid(), "exawatch");
    exawatch.terminate();
    let agent = agent();
    let (_exawatch, http, _) = start_exawatch(&exawatch_data, &log, &exawatch_args);
    // The peer's process lives (and is stopped when dropped) with `_querier` or `_vm`.
    let (_querier, _vm, peer) = if querier_peer {
        let querier = Server::start_logged(
            &dir.path().join("querier"),
            &dir.path().join("querier.log"),
            &["--role", "query", "--set", objects.as_str()],
        );
        let base = format!("http://127.0.0.1:{}", querier.http);
        (Some(querier), None, (base, Vec::new(), "querier"))
    } else {
        let vm_data = dir.path().join("victoria-metrics");
        let vm_log = dir.path().join("victoria-metrics.log");
        let (mut vm, port) = start_victoria_metrics(&vm_data, &vm_log);
        load_lp(
            &format!("http://127.0.0.1:{port}/write"),
            &file,
            vm.0.id(),
            "victoria-metrics",
        );
        let _ = agent
            .get(&format!("http://127.0.0.1:{port}/internal/force_flush"))
            .call();
        terminate(&mut vm);
        let (vm, port) = start_victoria_metrics(&vm_data, &vm_log);
        let base = format!("http://127.0.0.1:{port}");
        let peer = (base, vec![("nocache", "1".to_owned())], "VictoriaMetrics");
        (None, Some(vm), peer)
    };
    eprintln!("loaded {} samples into both", loaded["samples"]);

    let (peer_base, peer_extra, peer_name) = peer;
    let systems = [
        (format!("http://127.0.0.1:{http}"), Vec::new()),
        (peer_base, peer_extra),
    ];
    let queries = queries(nodes, seconds);
    let mut histograms = vec![
        [
            Histogram::<u64>::new(3).unwrap(),
            Histogram::new(3).unwrap()
        ];
        queries.len()
    ];
    let mut series = vec![[0usize; 2]; queries.len()];
    for round in 0..reps + 2 {
        for (q, (_, path, params)) in queries.iter().enumerate() {
            // Which system goes first alternates by round: the one that goes second finds
            // the CPU caches as the other's same query left them, the first as the other's
            // previous (often much heavier) query did.
            for s in [round % 2, 1 - round % 2] {
                let (base, extra) = &systems[s];
                let params: Vec<(&str, String)> = params.iter().chain(extra).cloned().collect();
                let (micros, n) = run(&agent, base, path, &params);
                // The first two rounds warm caches (page cache, VictoriaMetrics' indexes).
                if round >= 2 {
                    histograms[q][s].record(micros).unwrap();
                }
                series[q][s] = n;
            }
        }
    }
    println!(
        "| query ({nodes} nodes × {seconds} s, {reps} rounds) | series | exawatch p50 / p99 ms | {peer_name} p50 / p99 ms | p50 ratio exawatch / {peer_name} |"
    );
    println!("|---|---|---|---|---|");
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (q, (name, _, _)) in queries.iter().enumerate() {
        let [e, v] = &histograms[q];
        // Equal counts show both answered the same question; a difference is shown.
        let [se, sv] = series[q];
        let count = if se == sv {
            se.to_string()
        } else {
            format!("{se} ({peer_name}: {sv})")
        };
        println!(
            "| {name} | {count} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} |",
            ms(e, 0.5),
            ms(e, 0.99),
            ms(v, 0.5),
            ms(v, 0.99),
            ms(e, 0.5) / ms(v, 0.5)
        );
    }
}
