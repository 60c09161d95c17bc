//! Differential test against Debian's `prometheus` package: the same generated data (node
//! CPU counters, HTTP request counters with resets, classic latency histograms, power,
//! temperature and memory gauges; 264 series, 90 minutes at 15 s) is written into exawatch
//! (store API, then the real `exawatch up`) and, as OpenMetrics, into Prometheus blocks with
//! `promtool tsdb create-blocks-from openmetrics`; then Grafana-style queries (range queries
//! with several steps and instant queries) run on both over HTTP and must agree: same series,
//! same timestamps, values equal within 1e-9 relative.
//!
//! Debian's Prometheus is 2.42 (closed range windows) while exawatch follows Prometheus 3
//! (left-open windows): they differ when a sample sits exactly on a window boundary, so
//! every sample here is off the query grid (and the grid off the subquery steps). They also
//! extrapolate `rate`/`increase` differently towards a counter's zero point when a series
//! starts inside the window close to zero (3 applies the zero clamp after the "too far to
//! extrapolate" rule, 2.42 before it), so every counter here starts well above zero. Needs `prometheus` and `promtool` on PATH
//! (`apt-get install prometheus`): the test fails, not skips, without them.

#[path = "support/server.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

use exawatch_protocol::{Sample, Value as SampleValue};
use serde_json::Value;
use support::{Server, free_port};

/// Samples per series (90 minutes at 15 s).
const POINTS: i64 = 360;
/// Scrape interval in milliseconds.
const INTERVAL: i64 = 15_000;
/// Relative tolerance.
const TOLERANCE: f64 = 1e-9;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct GenSeries {
    metric: String,
    tags: Vec<(String, String)>,
    points: Vec<(i64, f64)>,
}

/// The data set: every series samples every 15 s at its own phase, 1–14 s past the grid.
fn generate(t0_ms: i64) -> Vec<GenSeries> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out: Vec<GenSeries> = Vec::new();
    let tags = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    let nodes: Vec<String> = (1..=8).map(|i| format!("n{i:02}")).collect();
    let mut push = |metric: &str, tags: Vec<(String, String)>, values: Vec<f64>| {
        let index = out.len() as i64;
        let phase = 1_000 + (index * 7_919) % 13_000 + 1;
        let points = values
            .into_iter()
            .enumerate()
            .map(|(k, v)| (t0_ms + k as i64 * INTERVAL + phase, v))
            .collect();
        out.push(GenSeries {
            metric: metric.to_owned(),
            tags,
            points,
        });
    };
    let counter = |rng: &mut Rng, rate: f64, reset_at: Option<usize>| -> Vec<f64> {
        let mut total = rng.next() * 1000.0;
        (0..POINTS as usize)
            .map(|k| {
                if Some(k) == reset_at {
                    total = rng.next() * rate;
                } else {
                    total += rate * (0.5 + rng.next());
                }
                total
            })
            .collect()
    };
    for (i, node) in nodes.iter().enumerate() {
        let rack = format!("r{}", i % 2 + 1);
        for cpu in 0..4 {
            for (mode, rate) in [("user", 9.0), ("system", 3.0), ("idle", 2.5)] {
                let values = counter(&mut rng, rate, None);
                push(
                    "node_cpu_seconds_total",
                    tags(&[
                        ("node", node.clone()),
                        ("cpu", cpu.to_string()),
                        ("mode", mode.into()),
                    ]),
                    values,
                );
            }
        }
        for code in ["200", "404", "500"] {
            for method in ["GET", "POST"] {
                let reset = (rng.next() < 0.3).then(|| 50 + (rng.next() * 250.0) as usize);
                let rate = if code == "200" { 40.0 } else { 2.0 };
                let values = counter(&mut rng, rate, reset);
                push(
                    "http_requests_total",
                    tags(&[
                        ("node", node.clone()),
                        ("code", code.into()),
                        ("method", method.into()),
                    ]),
                    values,
                );
            }
        }
        // A classic histogram: cumulative buckets, _sum and _count.
        let bounds = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"];
        let mut buckets = vec![vec![0.0; POINTS as usize]; bounds.len()];
        let mut sum = vec![0.0; POINTS as usize];
        // The histogram has been running for a while: counts start well above zero (near
        // zero, Prometheus 2.42 and 3 extrapolate a counter's start differently).
        let baseline = 500.0 + rng.next() * 1000.0;
        let mut running: Vec<f64> = (0..bounds.len())
            .map(|b| (baseline * (b + 1) as f64 / bounds.len() as f64).floor())
            .collect();
        let mut running_sum = baseline * 0.4;
        for k in 0..POINTS as usize {
            for _ in 0..(5 + (rng.next() * 20.0) as usize) {
                let latency = rng.next().powi(3) * 4.0 * (1.0 + i as f64 / 8.0);
                running_sum += latency;
                for (b, bound) in bounds.iter().enumerate() {
                    let upper: f64 = if *bound == "+Inf" {
                        f64::INFINITY
                    } else {
                        bound.parse().unwrap()
                    };
                    if latency <= upper {
                        running[b] += 1.0;
                    }
                }
            }
            for b in 0..bounds.len() {
                buckets[b][k] = running[b];
            }
            sum[k] = running_sum;
        }
        for (b, bound) in bounds.iter().enumerate() {
            push(
                "request_duration_seconds_bucket",
                tags(&[("node", node.clone()), ("le", (*bound).into())]),
                buckets[b].clone(),
            );
        }
        push(
            "request_duration_seconds_count",
            tags(&[("node", node.clone())]),
            buckets[bounds.len() - 1].clone(),
        );
        push(
            "request_duration_seconds_sum",
            tags(&[("node", node.clone())]),
            sum,
        );
        let base = 150.0 + 20.0 * i as f64;
        let power = (0..POINTS)
            .map(|k| base + 40.0 * (k as f64 / 20.0).sin() + 10.0 * rng.next())
            .collect();
        push(
            "node_power_watts",
            tags(&[("node", node.clone()), ("rack", rack.clone())]),
            power,
        );
        for sensor in ["cpu0", "cpu1", "inlet"] {
            let temp = (0..POINTS)
                .map(|k| 40.0 + 15.0 * (k as f64 / 30.0 + i as f64).cos() + 5.0 * rng.next())
                .collect();
            push(
                "node_temp_celsius",
                tags(&[("node", node.clone()), ("sensor", sensor.into())]),
                temp,
            );
        }
        let memory = (0..POINTS)
            .map(|k| 8e9 + 1e7 * k as f64 * (1.0 + i as f64 / 4.0) + 5e8 * rng.next())
            .collect();
        push(
            "node_memory_used_bytes",
            tags(&[("node", node.clone())]),
            memory,
        );
    }
    out
}

/// The data as OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`.
fn openmetrics(series: &[GenSeries]) -> String {
    let mut by_metric: BTreeMap<&str, Vec<&GenSeries>> = BTreeMap::new();
    for s in series {
        by_metric.entry(&s.metric).or_default().push(s);
    }
    let mut out = String::new();
    for (metric, group) in by_metric {
        let _ = writeln!(out, "# TYPE {metric} unknown");
        for s in group {
            let labels: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            for (t, v) in &s.points {
                let _ = writeln!(
                    out,
                    "{metric}{{{}}} {v} {}.{:03}",
                    labels.join(","),
                    t.div_euclid(1000),
                    t.rem_euclid(1000)
                );
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Writes the data into a store on `data_dir` and flushes it to Parquet.
fn write_exawatch(data_dir: &std::path::Path, series: &[GenSeries]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut registry = prometheus_client::registry::Registry::default();
        let store = exawatch_store::Store::open(
            data_dir,
            exawatch_store::StoreConfig::test_config(),
            &mut registry,
        )
        .await
        .unwrap();
        for s in series {
            let samples: Vec<Sample> = s
                .points
                .iter()
                .map(|(t, v)| {
                    Sample::new(
                        s.metric.clone(),
                        s.tags.clone(),
                        t * 1_000_000,
                        SampleValue::Float(*v),
                    )
                })
                .collect();
            store.write(samples).await.unwrap();
        }
        store.shutdown().await.unwrap();
    });
}

/// Grafana-style queries; each runs as two range queries and two instant queries.
const QUERIES: &[&str] = &[
    "rate(node_cpu_seconds_total[5m])",
    "irate(node_cpu_seconds_total{mode=\"user\"}[2m])",
    "increase(http_requests_total[10m])",
    "rate(http_requests_total{code=~\"5..\"}[5m])",
    "sum by (node) (rate(node_cpu_seconds_total{mode!=\"idle\"}[5m]))",
    "sum without (cpu) (rate(node_cpu_seconds_total[5m]))",
    "avg by (mode) (rate(node_cpu_seconds_total[5m]))",
    "sum by (code) (rate(http_requests_total[5m]))",
    "sum(rate(http_requests_total{code!=\"200\"}[5m])) / sum(rate(http_requests_total[5m]))",
    "sum by (node) (rate(http_requests_total{code=\"500\"}[5m])) / sum by (node) (rate(http_requests_total[5m]))",
    "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
    "histogram_quantile(0.5, sum by (node, le) (rate(request_duration_seconds_bucket[10m])))",
    "histogram_quantile(0.99, rate(request_duration_seconds_bucket{node=\"n03\"}[5m]))",
    "rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])",
    "topk(3, node_power_watts)",
    "bottomk(2, sum by (node) (rate(http_requests_total[5m])))",
    "topk(2, rate(node_cpu_seconds_total[5m])) by (node)",
    "max by (rack) (node_power_watts)",
    "min by (rack) (node_power_watts)",
    "count by (node) (node_cpu_seconds_total)",
    "count(node_temp_celsius > 45)",
    "quantile(0.9, node_temp_celsius)",
    "stddev by (rack) (node_power_watts)",
    "stdvar(node_temp_celsius)",
    "group by (rack) (node_power_watts)",
    "avg(node_temp_celsius) by (sensor)",
    "node_memory_used_bytes / 1024 / 1024",
    "node_power_watts offset 10m",
    "rate(http_requests_total[5m] offset 15m)",
    "node_power_watts - node_power_watts offset 30m",
    "max_over_time(node_temp_celsius[10m])",
    "min_over_time(node_temp_celsius[10m])",
    "avg_over_time(node_power_watts[5m])",
    "sum_over_time(node_power_watts[2m])",
    "count_over_time(node_power_watts[3m])",
    "stddev_over_time(node_temp_celsius[10m])",
    "quantile_over_time(0.95, node_power_watts[15m])",
    "last_over_time(node_temp_celsius[1m])",
    "deriv(node_memory_used_bytes[10m])",
    "predict_linear(node_memory_used_bytes[15m], 3600)",
    "delta(node_temp_celsius[10m])",
    "idelta(node_temp_celsius[5m])",
    "resets(http_requests_total[30m])",
    "changes(node_temp_celsius[10m])",
    "max_over_time(rate(http_requests_total[5m])[20m:1m])",
    "avg_over_time(sum by (node) (node_power_watts)[15m:30s])",
    "rate(sum by (node) (http_requests_total)[10m:1m])",
    "node_power_watts > 180",
    "node_temp_celsius > bool 45",
    "node_power_watts < on(node) group_left node_temp_celsius{sensor=\"inlet\"} * 5",
    "rate(node_cpu_seconds_total{mode=\"user\"}[5m]) * on(node) group_left(rack) node_power_watts",
    "sum by (rack) (node_power_watts) / on(rack) group_left count by (rack) (node_power_watts)",
    "node_power_watts and on(node) node_temp_celsius{sensor=\"cpu0\"} > 50",
    "node_power_watts unless on(node) node_temp_celsius{sensor=\"cpu0\"} > 50",
    "node_temp_celsius{sensor=\"cpu0\"} or node_temp_celsius{sensor=\"inlet\"}",
    "label_replace(node_power_watts, \"host\", \"$1\", \"node\", \"n(.*)\")",
    "label_join(node_power_watts, \"id\", \"-\", \"rack\", \"node\")",
    "clamp_max(node_temp_celsius, 50)",
    "clamp(node_power_watts, 160, 250)",
    "abs(delta(node_temp_celsius[5m]))",
    "round(node_power_watts, 5)",
    "sqrt(node_power_watts) + ln(node_memory_used_bytes)",
    "absent(nonexistent_metric{job=\"x\"})",
    "scalar(sum(node_power_watts)) * 2",
    "vector(1) + 1",
    "timestamp(node_power_watts)",
    "sort_desc(sum by (node) (node_power_watts))",
    "sum by (method) (http_requests_total offset 5m)",
    "1 - avg by (node) (rate(node_cpu_seconds_total{mode=\"idle\"}[5m])) / 10",
    "count_values(\"celsius\", round(node_temp_celsius{sensor=\"inlet\"}))",
    "absent_over_time(nonexistent_metric{node=\"n01\"}[5m])",
    "sum by (node) (rate(http_requests_total[5m])) > 5",
    "increase(request_duration_seconds_count[1h])",
    "min_over_time(node_temp_celsius[10m] offset 5m)",
    "time() - timestamp(node_power_watts)",
    "node_power_watts @ end()",
    "rate(http_requests_total[5m] @ start())",
    "avg_over_time(node_power_watts[10m:1m] offset 10m)",
    "sort(node_power_watts)",
    "sum by (node) (irate(node_cpu_seconds_total[1m]))",
    "max by (node) (node_temp_celsius) - min by (node) (node_temp_celsius)",
];

/// Series (labels printed) → points `(time, value)` as the API wrote them.
type Points = BTreeMap<String, Vec<(String, String)>>;

/// A result as comparable data: its type and its series.
fn normalise(query: &str, body: &Value) -> Result<(String, Points), String> {
    if body["status"] != "success" {
        return Ok((format!("error:{}", body["errorType"]), BTreeMap::new()));
    }
    let data = &body["data"];
    let kind = data["resultType"].as_str().unwrap_or_default().to_owned();
    let mut out = BTreeMap::new();
    let point = |p: &Value| -> (String, String) {
        (
            p[0].to_string(),
            p[1].as_str().unwrap_or_default().to_owned(),
        )
    };
    match kind.as_str() {
        "scalar" | "string" => {
            out.insert(String::new(), vec![point(&data["result"])]);
        }
        "vector" | "matrix" => {
            for s in data["result"]
                .as_array()
                .ok_or(format!("{query}: no result"))?
            {
                let metric: BTreeMap<String, String> = serde_json::from_value(s["metric"].clone())
                    .map_err(|e| format!("{query}: {e}"))?;
                let points = if kind == "vector" {
                    vec![point(&s["value"])]
                } else {
                    s["values"].as_array().unwrap().iter().map(point).collect()
                };
                let key = format!("{metric:?}");
                if out.insert(key.clone(), points).is_some() {
                    return Err(format!("{query}: duplicate series {key}"));
                }
            }
        }
        other => return Err(format!("{query}: unknown result type {other}")),
    }
    Ok((kind, out))
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or(f64::NAN),
    }
}

fn close(a: f64, b: f64) -> (bool, f64) {
    if a.is_nan() && b.is_nan() || a == b {
        return (true, 0.0);
    }
    let relative = (a - b).abs() / a.abs().max(b.abs());
    (relative <= TOLERANCE, relative)
}

#[test]
fn promql_answers_match_prometheus() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // Two hours back, aligned to the hour: inside Prometheus' retention, off nothing else.
    let now_s = exawatch_protocol::time::now_ms() / 1000;
    let t0 = (now_s - 3 * 3600) / 3600 * 3600;
    let series = generate(t0 * 1000);
    let samples: usize = series.iter().map(|s| s.points.len()).sum();

    // Prometheus: OpenMetrics → blocks → server on a loopback port.
    let om = dir.path().join("data.om");
    std::fs::write(&om, openmetrics(&series)).unwrap();
    let tsdb = dir.path().join("tsdb");
    let output = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&tsdb)
        .output()
        .expect(
            "promtool (Debian package `prometheus`) must be installed: apt-get install prometheus",
        );
    assert!(
        output.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  evaluation_interval: 1m\n").unwrap();
    let port = free_port();
    let mut command = Command::new("prometheus");
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(["--storage.tsdb.retention.time=10y", "--log.level=warn"]);
    let prometheus = Server::spawn(command, port, dir.path().join("prometheus.log"), "/-/ready");

    // exawatch: the same samples through the store, then the real server.
    let data_dir = dir.path().join("exawatch");
    write_exawatch(&data_dir, &series);
    let exawatch = Server::start(&data_dir, &[]);

    // Evaluation times sit 0.5 s past the 15 s grid: raw samples are 1–14 s past it and
    // subquery points on it, so no window boundary ever meets a point.
    let t0 = t0 as f64 + 0.5;
    // The 7-minute step is longer than most windows: range selectors then read only the
    // samples of each step's window. Its end is off the grid, as `end()` must not be.
    // No range starts before t0 + 1200 s: windows with `offset 15m` reaching back past the
    // first sample extrapolate rate differently in Prometheus 2.42 than in 3.
    let ranges: [(f64, f64, &str); 3] = [
        (t0 + 1800.0, t0 + 5400.0, "15s"),
        (t0 + 1200.0, t0 + 4800.0, "60"),
        (t0 + 1200.0, t0 + 5300.0, "7m"),
    ];
    let instants = [t0 + 2700.0, t0 + 4500.0];
    let (mut queries, mut compared_series, mut compared_points, mut max_relative) =
        (0, 0, 0, 0.0f64);
    let mut failures = Vec::new();
    for query in QUERIES {
        let mut requests: Vec<(&str, Vec<(&str, String)>)> = Vec::new();
        for (start, end, step) in ranges {
            requests.push((
                "/api/v1/query_range",
                vec![
                    ("query", (*query).to_owned()),
                    ("start", start.to_string()),
                    ("end", end.to_string()),
                    ("step", step.to_owned()),
                ],
            ));
        }
        for t in instants {
            requests.push((
                "/api/v1/query",
                vec![("query", (*query).to_owned()), ("time", t.to_string())],
            ));
        }
        for (path, params) in requests {
            queries += 1;
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (_, expected) = prometheus.get(path, &params);
            let (_, got) = exawatch.get(path, &params);
            let context = format!("{path} {params:?}");
            let (expected_kind, expected) = normalise(query, &expected).unwrap();
            let (got_kind, got) = match normalise(query, &got) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            assert_ne!(
                expected_kind, "error:\"bad_data\"",
                "Prometheus refused {context}"
            );
            if expected_kind != got_kind {
                failures.push(format!(
                    "{context}: result type {got_kind}, Prometheus {expected_kind}"
                ));
                continue;
            }
            if expected.keys().ne(got.keys()) {
                failures.push(format!(
                    "{context}: series differ: exawatch {:?}, Prometheus {:?}",
                    got.keys().collect::<Vec<_>>(),
                    expected.keys().collect::<Vec<_>>()
                ));
                continue;
            }
            let failed_before = failures.len();
            for (key, want) in &expected {
                if failures.len() > failed_before {
                    // One report per request is enough.
                    break;
                }
                compared_series += 1;
                let have = &got[key];
                if want.len() != have.len() {
                    failures.push(format!(
                        "{context} {key}: {} points, Prometheus {}",
                        have.len(),
                        want.len()
                    ));
                    continue;
                }
                for (w, h) in want.iter().zip(have) {
                    compared_points += 1;
                    let (ok, relative) = close(parse_value(&w.1), parse_value(&h.1));
                    max_relative = max_relative.max(relative);
                    if w.0.parse::<f64>().ok() != h.0.parse::<f64>().ok() || !ok {
                        failures.push(format!("{context} {key}: point {h:?}, Prometheus {w:?}"));
                        break;
                    }
                }
            }
        }
    }
    // Grafana's metadata requests: the same names, values and series on both.
    let range = [
        ("start", t0.to_string()),
        ("end", (t0 + 5400.0).to_string()),
    ];
    let metadata: [(&str, Vec<(&str, String)>); 5] = [
        ("/api/v1/labels", range.to_vec()),
        ("/api/v1/label/__name__/values", range.to_vec()),
        (
            "/api/v1/label/node/values",
            vec![("match[]", "node_power_watts".into())],
        ),
        ("/api/v1/label/le/values", range.to_vec()),
        (
            "/api/v1/series",
            vec![
                ("match[]", "http_requests_total{code=\"500\"}".into()),
                ("match[]", "node_temp_celsius{node=~\"n0[12]\"}".into()),
            ],
        ),
    ];
    for (path, params) in metadata {
        queries += 1;
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let sorted = |body: Value| -> Vec<String> {
            let mut items: Vec<String> = body["data"]
                .as_array()
                .unwrap_or_else(|| panic!("{path}: {body}"))
                .iter()
                .map(Value::to_string)
                .collect();
            items.sort();
            items
        };
        let expected = sorted(prometheus.get(path, &params).1);
        let got = sorted(exawatch.get(path, &params).1);
        assert!(!expected.is_empty(), "{path}: Prometheus has nothing");
        if expected != got {
            failures.push(format!(
                "{path} {params:?}: {got:?}, Prometheus {expected:?}"
            ));
        }
    }
    println!(
        "{} series, {samples} samples; {queries} queries, {compared_series} series and {compared_points} points compared; largest relative difference {max_relative:e}; {:.1} s",
        series.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {queries} queries differ:\n{}",
        failures.len(),
        failures
            .iter()
            .take(80)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        compared_points > 100_000,
        "too little compared: {compared_points} points"
    );
}
