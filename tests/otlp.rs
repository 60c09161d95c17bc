//! OpenTelemetry metrics over OTLP/HTTP (`POST /v1/metrics`) into the real `exawatch up`:
//! the OpenTelemetry Python SDK's own exporter (PyPI `opentelemetry-sdk`,
//! `opentelemetry-exporter-otlp-proto-http`, run by `tests/otlp_send.py`) sends each kind of
//! instrument with known values, then SQL and PromQL read back exact names, tags and values;
//! and hand-made requests: JSON, gzip, a histogram without buckets (partial success), bodies
//! that are not requests.

mod support {
    pub mod server;
}

use std::path::Path;
use std::process::Command;

use exawatch_protocol::otlp::proto::{
    self, AggregationTemporality, ExportMetricsServiceRequest, ExportMetricsServiceResponse, Gauge,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Status,
    metric::Data, number_data_point::Value as Number,
};
use prost::Message;
use serde_json::Value;
use support::server::{Server, gzip};

/// The Python with the OpenTelemetry SDK: `python3` on `PATH` (`cargo xtask test` puts its
/// virtual environment first).
fn python_with_opentelemetry() -> &'static str {
    let found = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk.metrics, opentelemetry.exporter.otlp.proto.http",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "tests/otlp.rs needs python3 with the OpenTelemetry SDK: run `cargo xtask test` (it \
         installs it into a virtual environment under the target directory), or `pip install \
         opentelemetry-sdk opentelemetry-exporter-otlp-proto-http`"
    );
    "python3"
}

/// `column` and `value` of the samples of `metric`, ordered by time.
fn rows(server: &Server, metric: &str, columns: &str) -> Vec<Value> {
    server.sql(&format!(
        "SELECT {columns}, value FROM samples WHERE metric = '{metric}' ORDER BY time"
    ))
}

fn values(server: &Server, metric: &str) -> Vec<f64> {
    rows(server, metric, "metric")
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect()
}

/// The one value of an instant PromQL query.
fn promql(server: &Server, query: &str) -> String {
    let (status, body) = server.get("/api/v1/query", &[("query", query)]);
    assert_eq!(status, 200, "{query}: {body}");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{query}: {body}");
    result[0]["value"][1].as_str().unwrap().to_owned()
}

#[test]
fn the_python_sdk_exports_every_kind_of_instrument() {
    let python = python_with_opentelemetry();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let output = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp_send.py"))
        .arg(server.url(""))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "otlp_send.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log_text()
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        out["results"],
        serde_json::json!(["SUCCESS", "SUCCESS", "SUCCESS"]),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Resource attributes: job, instance, node on every series.
    let tags = "job, instance, node";
    let requests = rows(&server, "requests_total", &format!("{tags}, http_method"));
    assert_eq!(
        requests,
        [
            serde_json::json!({"job": "shop/checkout", "instance": "pod-7", "node": "cn42",
            "http_method": "GET", "value": 7.0})
        ]
    );
    assert_eq!(values(&server, "queue_length"), [7.0]);
    let gauge = rows(&server, "cpu_temperature_celsius", "cpu, node");
    assert_eq!(
        gauge,
        [serde_json::json!({"cpu": "0", "node": "cn42", "value": 51.5})]
    );
    // The delta counter, sent twice (gzipped), stored as running totals.
    assert_eq!(values(&server, "jobs_done_total"), [5.0, 7.0]);

    // The explicit-bucket histogram, with the SDK's default bounds.
    let buckets = rows(&server, "request_duration_seconds_bucket", "le");
    let bucket = |le: &str| {
        buckets
            .iter()
            .find(|r| r["le"] == le)
            .unwrap_or_else(|| panic!("no le={le} in {buckets:?}"))["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(buckets.len(), 16, "15 bounds and +Inf: {buckets:?}");
    for (le, count) in [
        ("0", 0.0),
        ("5", 1.0),
        ("10", 2.0),
        ("25", 2.0),
        ("50", 4.0),
        ("10000", 4.0),
        ("+Inf", 4.0),
    ] {
        assert_eq!(bucket(le), count, "le={le}");
    }
    assert_eq!(values(&server, "request_duration_seconds_count"), [4.0]);
    assert_eq!(
        values(&server, "request_duration_seconds_sum"),
        [0.3 + 7.0 + 42.0 + 42.0]
    );

    // The exponential histogram as classic buckets: each le counts the values up to it.
    let recorded = [1.5, 3.0, 6.0, 12.0];
    let buckets = rows(&server, "payload_size_bytes_bucket", "le");
    assert!(buckets.len() > 10, "{buckets:?}");
    let mut bounds = Vec::new();
    for row in &buckets {
        let le = row["le"].as_str().unwrap();
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        let want = recorded.iter().filter(|&&v| v <= bound).count() as f64;
        assert_eq!(row["value"].as_f64().unwrap(), want, "le={le}");
        bounds.push(bound);
    }
    assert!(bounds.contains(&0.0), "the zero bucket: {bounds:?}");
    assert_eq!(values(&server, "payload_size_bytes_count"), [4.0]);
    assert_eq!(values(&server, "payload_size_bytes_sum"), [22.5]);

    // Other resource attributes on target_info.
    let info = rows(
        &server,
        "target_info",
        "job, deployment_environment, telemetry_sdk_language",
    );
    assert!(!info.is_empty());
    for row in &info {
        assert_eq!(row["job"], "shop/checkout");
        assert_eq!(row["deployment_environment"], "test");
        assert_eq!(row["telemetry_sdk_language"], "python");
    }

    // PromQL sees the same.
    assert_eq!(
        promql(
            &server,
            r#"requests_total{job="shop/checkout", http_method="GET"}"#
        ),
        "7"
    );
    assert_eq!(
        promql(
            &server,
            "histogram_quantile(0.5, request_duration_seconds_bucket)"
        ),
        "10"
    );
    assert_eq!(
        promql(&server, r#"sum(payload_size_bytes_bucket{le="+Inf"})"#),
        "4"
    );
}

const T: u64 = 1_700_000_000_000_000_000;

fn protobuf_request(metrics: Vec<Metric>) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: None,
            scope_metrics: vec![ScopeMetrics { metrics }],
        }],
    }
    .encode_to_vec()
}

#[test]
fn json_gzip_partial_success_and_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let json = |headers: &[(&str, &str)], body: &[u8]| server.post("/v1/metrics", headers, body);

    // JSON, plain and gzipped.
    let body = |name: &str| {
        format!(
            r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"host.name","value":{{"stringValue":"n7"}}}}]}},
            "scopeMetrics":[{{"metrics":[{{"name":"{name}","unit":"W","gauge":{{"dataPoints":[
            {{"timeUnixNano":"{T}","asDouble":230.5,"attributes":[{{"key":"psu.id","value":{{"intValue":"2"}}}}]}}]}}}}]}}]}}]}}"#
        )
    };
    let content_json = ("Content-Type", "application/json");
    let (status, answer, _) = json(&[content_json], body("power").as_bytes());
    assert_eq!((status, answer.as_str()), (200, "{}"));
    let (status, answer, _) = json(
        &[content_json, ("Content-Encoding", "gzip")],
        &gzip(body("power.gz").as_bytes()),
    );
    assert_eq!((status, answer.as_str()), (200, "{}"));
    for metric in ["power_watts", "power_gz_watts"] {
        assert_eq!(
            rows(&server, metric, "node, psu_id, CAST(time AS BIGINT) AS t"),
            [serde_json::json!({"node": "n7", "psu_id": "2", "t": T, "value": 230.5})]
        );
    }

    // A histogram without buckets is refused in a partial success; the gauge beside it stored.
    let histogram = |count: u64| Metric {
        name: "latency".to_owned(),
        unit: "ms".to_owned(),
        data: Some(Data::Histogram(proto::Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: vec![],
                start_time_unix_nano: 0,
                time_unix_nano: T,
                count,
                sum: Some(1.0),
                bucket_counts: vec![],
                explicit_bounds: vec![],
                flags: 0,
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
    };
    let gauge = Metric {
        name: "up".to_owned(),
        unit: String::new(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: vec![],
                start_time_unix_nano: 0,
                time_unix_nano: T,
                value: Some(Number::AsInt(1)),
                flags: 0,
            }],
        })),
    };
    let content_protobuf = ("Content-Type", "application/x-protobuf");
    let mut response = server
        .agent
        .post(&server.url("/v1/metrics"))
        .header(content_protobuf.0, content_protobuf.1)
        .send(&protobuf_request(vec![histogram(3), gauge])[..])
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let answer =
        ExportMetricsServiceResponse::decode(&response.body_mut().read_to_vec().unwrap()[..])
            .unwrap();
    let partial = answer.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_data_points, 1);
    assert!(
        partial
            .error_message
            .contains("metric \"latency\": histogram point without buckets"),
        "{}",
        partial.error_message
    );
    assert_eq!(values(&server, "up"), [1.0]);
    // The same in JSON.
    let (status, answer, _) = json(
        &[content_json],
        br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"latency","histogram":{"aggregationTemporality":2,"dataPoints":[{"timeUnixNano":"1700000000000000000","count":"1"}]}}]}]}]}"#,
    );
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedDataPoints"], "1");
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("latency")
    );
    assert_eq!(
        server.metric("exawatch_messages_dropped_total{reason=\"otlp_no_buckets\"}"),
        2.0
    );

    // Bodies that are not requests: 400 with a google.rpc.Status in the request's format.
    let mut response = server
        .agent
        .post(&server.url("/v1/metrics"))
        .header(content_protobuf.0, content_protobuf.1)
        .send(&b"\xff\xff\xff"[..])
        .unwrap();
    assert_eq!(response.status(), 400);
    let status = Status::decode(&response.body_mut().read_to_vec().unwrap()[..]).unwrap();
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    assert!(
        status
            .message
            .contains("not a protobuf ExportMetricsServiceRequest"),
        "{}",
        status.message
    );
    let (status, answer, _) = json(&[content_json], b"{\"resourceMetrics\": 1}");
    assert_eq!(status, 400);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["code"], 3);
    assert!(
        answer["message"].as_str().unwrap().contains("OTLP JSON"),
        "{answer}"
    );
    let (status, _, _) = json(&[content_json, ("Content-Encoding", "gzip")], b"not gzip");
    assert_eq!(status, 400);
    assert_eq!(
        server.metric("exawatch_messages_dropped_total{reason=\"otlp_request\"}"),
        3.0
    );
    let (status, answer, _) = json(&[("Content-Type", "text/plain")], b"x");
    assert_eq!(status, 415, "{answer}");
    assert!(answer.contains("application/x-protobuf"), "{answer}");
}
