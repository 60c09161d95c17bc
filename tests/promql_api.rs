//! End-to-end tests of the Prometheus HTTP API on the real `exawatch up`: EXAMON messages go
//! in over MQTT, Grafana's requests (GET and form-encoded POST) come back in Prometheus' JSON
//! shapes, and bad requests get Prometheus' error envelope with the right status.

#[path = "support/server.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, mqtt_client};

/// Seconds of the first sample: 2023-11-14T22:13:20Z.
const T0: i64 = 1_700_000_000;

/// Publishes `power` for nodes n01 and n02 (n02 draws twice as much) and `cpu_load` per
/// core, every 15 s for 10 minutes, and waits until all of it is queryable.
fn load(server: &Server) {
    let client = mqtt_client(server.mqtt, "promql-api-test");
    let mut published = 0;
    for k in 0..40 {
        let t = T0 + k * 15;
        for (node, factor) in [("n01", 1.0), ("n02", 2.0)] {
            let base = format!("org/acme/cluster/c1/node/{node}/plugin/ipmi/chnl/data");
            let power = factor * (100.0 + k as f64);
            client
                .publish(
                    format!("{base}/power"),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    format!("{power};{t}.250"),
                )
                .unwrap();
            for core in 0..2 {
                let topic = format!(
                    "org/acme/cluster/c1/node/{node}/plugin/pmu_pub/chnl/data/core/{core}/cpu_load"
                );
                client
                    .publish(
                        topic,
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        format!("{};{t}.5", core + k),
                    )
                    .unwrap();
            }
            published += 3;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = server.get(
            "/api/v1/query",
            &[
                ("query", "count_over_time({cluster=\"c1\"}[1h])"),
                ("time", &(T0 + 700).to_string()),
            ],
        );
        let total: f64 = body["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
                    .sum()
            })
            .unwrap_or(0.0);
        if total as usize == published {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {total} of {published} samples arrived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn grafana_requests_get_prometheus_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);

    // Grafana's "Save & test": instant query `1+1` at time=4, GET and POST.
    let ok = json!({"status": "success", "data": {"resultType": "scalar", "result": [4, "2"]}});
    assert_eq!(
        server.get("/api/v1/query", &[("query", "1+1"), ("time", "4")]),
        (200, ok.clone())
    );
    assert_eq!(
        server.post_form("/api/v1/query", &[("query", "1+1"), ("time", "4")]),
        (200, ok)
    );
    let (status, body) = server.get("/api/v1/status/buildinfo", &[]);
    assert_eq!(status, 200);
    assert!(
        body["data"]["version"].as_str().unwrap().starts_with('3'),
        "{body}"
    );

    load(&server);
    let at = (T0 + 300).to_string();

    // An instant vector: EXAMON's metric is __name__, its topic tags are labels.
    let (status, body) = server.get(
        "/api/v1/query",
        &[("query", "power{node=\"n02\"}"), ("time", &at)],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({"resultType": "vector", "result": [{
            "metric": {"__name__": "power", "chnl": "data", "cluster": "c1", "node": "n02", "org": "acme", "plugin": "ipmi"},
            "value": [T0 + 300, "238"],
        }]})
    );

    // A Grafana range query, form-encoded POST with RFC 3339 times and a duration step.
    let (status, body) = server.post_form(
        "/api/v1/query_range",
        &[
            ("query", "sum by (node) (rate(cpu_load[1m]))"),
            ("start", "2023-11-14T22:15:00Z"),
            ("end", "2023-11-14T22:17:00Z"),
            ("step", "1m"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "matrix");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2, "{body}");
    for series in result {
        let values = series["values"].as_array().unwrap();
        assert_eq!(values.len(), 3, "{series}");
        assert_eq!(values[0][0], json!(T0 + 100));
        // Two cores each rising by 1 per 15 s.
        let rate: f64 = values[0][1].as_str().unwrap().parse().unwrap();
        assert!((rate - 2.0 / 15.0).abs() < 1e-9, "{rate}");
    }

    // Binary operators with vector matching.
    let (_, body) = server.get(
        "/api/v1/query",
        &[
            (
                "query",
                "power / on(node) group_left sum by (node) (cpu_load)",
            ),
            ("time", &at),
        ],
    );
    assert_eq!(
        body["data"]["result"].as_array().unwrap().len(),
        2,
        "{body}"
    );

    // Metadata endpoints Grafana uses for its query editor.
    let (status, body) = server.get("/api/v1/labels", &[]);
    assert_eq!(status, 200);
    let labels = body["data"].as_array().unwrap();
    for name in ["__name__", "cluster", "core", "node", "plugin"] {
        assert!(labels.contains(&json!(name)), "{name} not in {labels:?}");
    }
    let (_, body) = server.get("/api/v1/label/__name__/values", &[]);
    assert_eq!(body["data"], json!(["cpu_load", "power"]));
    let (_, body) = server.get(
        "/api/v1/label/core/values",
        &[("match[]", "cpu_load{node=\"n01\"}")],
    );
    assert_eq!(body["data"], json!(["0", "1"]));
    let (_, body) = server.get("/api/v1/label/nonexistent/values", &[]);
    assert_eq!(body["data"], json!([]));
    let (_, body) = server.get(
        "/api/v1/series",
        &[
            ("match[]", "power"),
            ("start", &T0.to_string()),
            ("end", &(T0 + 600).to_string()),
        ],
    );
    assert_eq!(body["data"].as_array().unwrap().len(), 2, "{body}");
    let (_, body) = server.post_form(
        "/api/v1/series",
        &[
            ("match[]", "cpu_load"),
            ("match[]", "power{node=\"n01\"}"),
            ("limit", "2"),
        ],
    );
    assert_eq!(body["data"].as_array().unwrap().len(), 2, "{body}");
    assert!(body["warnings"].is_array(), "{body}");
    let (_, body) = server.get("/api/v1/metadata", &[]);
    assert!(body["data"]["power"].is_array(), "{body}");
    let (status, body) = server.get("/api/v1/query_exemplars", &[("query", "power")]);
    assert_eq!((status, body["data"].clone()), (200, json!([])));
}

#[test]
fn bad_requests_get_prometheus_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let error = |(status, body): (u16, Value)| {
        assert_eq!(body["status"], "error", "{body}");
        assert!(!body["error"].as_str().unwrap().is_empty(), "{body}");
        (status, body["errorType"].as_str().unwrap().to_owned())
    };
    let bad = (400, "bad_data".to_owned());
    assert_eq!(
        error(server.get("/api/v1/query", &[("query", "sum(")])),
        bad
    );
    assert_eq!(error(server.get("/api/v1/query", &[])), bad);
    assert_eq!(
        error(server.get("/api/v1/query", &[("query", "1"), ("time", "noon")])),
        bad
    );
    assert_eq!(
        error(server.get(
            "/api/v1/query_range",
            &[
                ("query", "up[5m]"),
                ("start", "0"),
                ("end", "60"),
                ("step", "15")
            ]
        )),
        bad
    );
    assert_eq!(
        error(server.get(
            "/api/v1/query_range",
            &[
                ("query", "1"),
                ("start", "0"),
                ("end", "60"),
                ("step", "fast")
            ]
        )),
        bad
    );
    assert_eq!(
        error(server.get(
            "/api/v1/query_range",
            &[
                ("query", "1"),
                ("start", "0"),
                ("end", "1e9"),
                ("step", "1")
            ]
        )),
        bad
    );
    assert_eq!(error(server.get("/api/v1/series", &[])), bad);
    assert_eq!(
        error(server.get("/api/v1/series", &[("match[]", "1+1")])),
        bad
    );
    // Many-to-many matching fails at execution: 422.
    let many = "vector(1) + on() (vector(2) or label_replace(vector(3), \"a\", \"x\", \"\", \"\"))";
    assert_eq!(
        error(server.get("/api/v1/query", &[("query", many), ("time", "0")])),
        (422, "execution".to_owned())
    );
}
