//! KairosDB API benchmark: latency of the two typical ExamonQL queries against a running
//! `exawatch up`, with the same computation through `POST /api/v1/sql` in the same run as the
//! reference (KairosDB itself, Java on Cassandra, is not available here):
//!
//! - "1 h, all nodes, 1-minute avg": one metric of every node and core over the last hour,
//!   averaged per node over 1-minute ranges (`SELECT('node').FROM(m).TSTART(1, 'hours')
//!   .AGGRBY('avg')`), answered gzipped as ExamonQL asks;
//! - "24 h raw, one node": every point of one metric of one node (all its cores) over the last
//!   24 hours (`SELECT('core').FROM(m).WHERE(node=…).TSTART(24, 'hours')`).
//!
//! Data: `BENCH_NODES` nodes × `BENCH_CORES` cores, one point every `BENCH_PERIOD_SECS` over
//! `BENCH_HOURS`, written through `POST /api/v1/datapoints` (gzip), then the server is
//! restarted so that every query reads Parquet files. Each run sends `BENCH_QUERIES` queries of
//! each kind one after the other (after 3 warm-up queries) and records client-side latency in
//! an hdrhistogram; the table shows medians over `BENCH_RUNS` runs of p50 and p99.
//!
//! Run: `cargo bench --bench kairosdb` (env: `BENCH_NODES`, `BENCH_CORES`, `BENCH_PERIOD_SECS`,
//! `BENCH_HOURS`, `BENCH_RUNS`, `BENCH_QUERIES`). Prints the table for `benches/RESULTS.md`.

#[path = "support.rs"]
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use support::{Server, env_or};

const METRIC: &str = "load_core";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Writes the data set through `POST /api/v1/datapoints`, one gzipped body per node.
fn load(http: u16, nodes: usize, cores: usize, period_ms: i64, end_ms: i64, points: i64) -> u64 {
    let agent = agent();
    let mut written = 0;
    for n in 0..nodes {
        let mut body = String::from("[");
        for core in 0..cores {
            if core > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                r#"{{"name":"{METRIC}","tags":{{"org":"bench","cluster":"c1","node":"n{n:04}","plugin":"pmu_pub","chnl":"data","core":"{core}"}},"datapoints":["#
            ));
            for i in 0..points {
                if i > 0 {
                    body.push(',');
                }
                let t = end_ms - (points - i) * period_ms;
                let v = ((i * 7 + n as i64 * 13 + core as i64 * 3) % 400) as f64 / 4.0;
                body.push_str(&format!("[{t},{v}]"));
                written += 1;
            }
            body.push_str("]}");
        }
        body.push(']');
        let response = agent
            .post(&format!("http://127.0.0.1:{http}/api/v1/datapoints"))
            .header("Content-Type", "application/gzip")
            .send(&gzip(body.as_bytes()))
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    written
}

/// One kind of query: where it goes, its body, and whether the answer is asked gzipped.
struct Probe {
    name: &'static str,
    path: &'static str,
    body: String,
    gzip: bool,
}

fn measure(http: u16, probe: &Probe, queries: usize) -> (Histogram<u64>, usize) {
    let agent = agent();
    let url = format!("http://127.0.0.1:{http}{}", probe.path);
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    let mut bytes = 0;
    for i in 0..queries + 3 {
        let mut request = agent.post(&url).header("Content-Type", "application/json");
        if probe.gzip {
            request = request.header("Accept-Encoding", "gzip");
        }
        let started = Instant::now();
        let mut response = request.send(probe.body.as_bytes()).unwrap();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 32)
            .read_to_vec()
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(
            response.status(),
            200,
            "{}: {}",
            probe.name,
            String::from_utf8_lossy(&body)
        );
        if i >= 3 {
            histogram.record(elapsed.as_micros() as u64).unwrap();
            bytes = body.len();
        }
    }
    (histogram, bytes)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let nodes: usize = env_or("BENCH_NODES", 100);
    let cores: usize = env_or("BENCH_CORES", 4);
    let period_s: i64 = env_or("BENCH_PERIOD_SECS", 10);
    let hours: i64 = env_or("BENCH_HOURS", 24);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let queries: usize = env_or("BENCH_QUERIES", 30);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let now_ms = exawatch_protocol::time::now_ms();
    let end_ms = now_ms - now_ms % 60_000;
    let points = hours * 3600 / period_s;
    // Long answers: the row limit is lifted.
    let settings = ["--set", "api.max_result_rows=100000000"];
    let server = Server::start(&data, &settings);
    let http = server.http;
    let loading = Instant::now();
    let written = load(http, nodes, cores, period_s * 1000, end_ms, points);
    eprintln!(
        "loaded {written} points ({nodes} nodes × {cores} cores × {points}) in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    assert!(server.terminate().success());
    let server = Server::start(&data, &settings);
    let http = server.http;

    let hour_start = end_ms - 3_600_000;
    let day_start = end_ms - hours * 3_600_000;
    let probes = [
        Probe {
            name: "1 h, all nodes, 1-minute avg (KairosDB API, gzip)",
            path: "/api/v1/datapoints/query",
            body: format!(
                r#"{{"cache_time":0,"time_zone":"Europe/Rome","start_absolute":{hour_start},"end_absolute":{end_ms},"metrics":[{{"name":"{METRIC}","tags":{{}},"group_by":[{{"name":"tag","tags":["node"]}}],"aggregators":[{{"name":"avg","align_sampling":true,"align_start_time":false,"sampling":{{"value":1,"unit":"minutes"}}}}]}}]}}"#
            ),
            gzip: true,
        },
        Probe {
            name: "1 h, all nodes, 1-minute avg (SQL API, reference)",
            path: "/api/v1/sql",
            body: serde_json::json!({"query": format!(
                "SELECT node, date_bin(INTERVAL '1 minute', time, TIMESTAMP '1970-01-01T00:00:00Z') AS t, \
                 min(time) AS first, avg(value) AS avg FROM samples WHERE metric = '{METRIC}' \
                 AND time >= to_timestamp_millis({hour_start}) AND time <= to_timestamp_millis({end_ms}) \
                 GROUP BY node, t ORDER BY node, t")})
            .to_string(),
            gzip: false,
        },
        Probe {
            name: "24 h raw, one node (KairosDB API, gzip)",
            path: "/api/v1/datapoints/query",
            body: format!(
                r#"{{"cache_time":0,"time_zone":"Europe/Rome","start_absolute":{day_start},"end_absolute":{end_ms},"metrics":[{{"name":"{METRIC}","tags":{{"node":["n0000"]}},"group_by":[{{"name":"tag","tags":["core"]}}]}}]}}"#
            ),
            gzip: true,
        },
        Probe {
            name: "24 h raw, one node (KairosDB API, identity)",
            path: "/api/v1/datapoints/query",
            body: format!(
                r#"{{"cache_time":0,"start_absolute":{day_start},"end_absolute":{end_ms},"metrics":[{{"name":"{METRIC}","tags":{{"node":["n0000"]}},"group_by":[{{"name":"tag","tags":["core"]}}]}}]}}"#
            ),
            gzip: false,
        },
        Probe {
            name: "24 h raw, one node (SQL API, reference)",
            path: "/api/v1/sql",
            body: serde_json::json!({"query": format!(
                "SELECT time, value, core FROM samples WHERE metric = '{METRIC}' AND node = 'n0000' \
                 AND time >= to_timestamp_millis({day_start}) AND time <= to_timestamp_millis({end_ms}) \
                 ORDER BY core, time")})
            .to_string(),
            gzip: false,
        },
    ];
    let mut p50s = vec![Vec::new(); probes.len()];
    let mut p99s = vec![Vec::new(); probes.len()];
    let mut sizes = vec![0; probes.len()];
    for run in 1..=runs {
        for (i, probe) in probes.iter().enumerate() {
            let (histogram, bytes) = measure(http, probe, queries);
            let (p50, p99) = (
                histogram.value_at_quantile(0.5) as f64 / 1000.0,
                histogram.value_at_quantile(0.99) as f64 / 1000.0,
            );
            eprintln!(
                "run {run}: {}: p50 {p50:.1} ms, p99 {p99:.1} ms, {bytes} B",
                probe.name
            );
            p50s[i].push(p50);
            p99s[i].push(p99);
            sizes[i] = bytes;
        }
    }
    assert!(server.terminate().success());

    println!(
        "| query (median of {runs} runs × {queries} queries; {written} points: {nodes} nodes × {cores} cores, every {period_s} s, {hours} h, in Parquet) | p50 | p99 | answer |"
    );
    println!("|---|---|---|---|");
    for (i, probe) in probes.iter().enumerate() {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {} KiB |",
            probe.name,
            median(p50s[i].clone()),
            median(p99s[i].clone()),
            sizes[i] / 1024
        );
    }
    println!();
    println!(
        "Command: `BENCH_NODES={nodes} BENCH_CORES={cores} BENCH_PERIOD_SECS={period_s} BENCH_HOURS={hours} BENCH_RUNS={runs} BENCH_QUERIES={queries} cargo bench --bench kairosdb`"
    );
}
