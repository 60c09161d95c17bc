//! Every query of every Grafana dashboard in `dashboards/` runs against a real `exawatch up`
//! with simulated nodes, the way Grafana sends it, and must return data: each template
//! variable (`label_values(…)`) and each panel target, as a range query and an instant query.

#[path = "support/server.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Server;

fn now() -> f64 {
    exawatch_protocol::time::now_ns() as f64 / 1e9
}

/// `label_values(selector, label)` or `label_values(label)` → (label, selector).
fn label_values_query(query: &str) -> (String, Option<String>) {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unsupported variable query {query:?}"));
    match inner.rsplit_once(',') {
        Some((selector, label)) => (label.trim().to_owned(), Some(selector.trim().to_owned())),
        None => (inner.trim().to_owned(), None),
    }
}

/// Grafana's built-in and dashboard variables, as Grafana substitutes them.
fn substitute(expr: &str, variables: &[(String, String)]) -> String {
    let mut expr = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "2s")
        .replace("$__range", "1h");
    for (name, value) in variables {
        expr = expr.replace(&format!("${name}"), value);
    }
    expr
}

fn panels(value: &Value, out: &mut Vec<Value>) {
    for panel in value["panels"].as_array().into_iter().flatten() {
        out.push(panel.clone());
        panels(panel, out);
    }
}

#[test]
fn every_dashboard_query_returns_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--simulate", "4", "--set", "simulate.period_secs=0.5"],
    );
    // Enough samples for rates over a minute: wait until every node reported a few times.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = server.get(
            "/api/v1/query",
            &[
                ("query", "min(count_over_time(node_power[1m]))"),
                ("time", &now().to_string()),
            ],
        );
        let samples = body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if samples >= 4.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no simulated data: {body}");
        std::thread::sleep(Duration::from_millis(250));
    }

    let dashboards_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dashboards_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no dashboards in {}",
        dashboards_dir.display()
    );
    let mut checked = 0;
    for file in files {
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // Template variables, in order: later ones may use earlier ones.
        let mut variables: Vec<(String, String)> = Vec::new();
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let var_name = variable["name"].as_str().unwrap().to_owned();
            let query = variable["query"]["query"]
                .as_str()
                .or(variable["query"].as_str())
                .unwrap();
            let (label, selector) = label_values_query(&substitute(query, &variables));
            let mut params = vec![];
            if let Some(selector) = &selector {
                params.push(("match[]", selector.as_str()));
            }
            let (status, body) = server.get(&format!("/api/v1/label/{label}/values"), &params);
            let values = body["data"].as_array().cloned().unwrap_or_default();
            assert!(
                status == 200 && !values.is_empty(),
                "{name}: variable {var_name} ({query}): {body}"
            );
            checked += 1;
            let value = if variable["includeAll"] == true {
                variable["allValue"].as_str().unwrap_or(".*").to_owned()
            } else {
                values[0].as_str().unwrap().to_owned()
            };
            variables.push((var_name, value));
        }
        let mut all = Vec::new();
        panels(&dashboard, &mut all);
        for panel in all {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let expr = substitute(expr, &variables);
                let end = now();
                let (start, end_s) = ((end - 30.0).to_string(), end.to_string());
                let (status, body) = server.post_form(
                    "/api/v1/query_range",
                    &[
                        ("query", &expr),
                        ("start", &start),
                        ("end", &end_s),
                        ("step", "2"),
                    ],
                );
                let series = body["data"]["result"].as_array().map_or(0, Vec::len);
                assert!(
                    status == 200 && series > 0,
                    "{name}: panel {title:?}: range {expr}: {body}"
                );
                let (status, body) =
                    server.post_form("/api/v1/query", &[("query", &expr), ("time", &end_s)]);
                let series = body["data"]["result"].as_array().map_or(0, Vec::len);
                assert!(
                    status == 200 && series > 0,
                    "{name}: panel {title:?}: instant {expr}: {body}"
                );
                checked += 1;
            }
        }
        // Annotation queries (anomalies): valid PromQL that the API answers. No model scores
        // here, so they may be empty; tests/analytics.rs finds `anomaly_score > 1` with data.
        for annotation in dashboard["annotations"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(expr) = annotation["expr"].as_str() else {
                continue;
            };
            let expr = substitute(expr, &variables);
            let end = now();
            let (start, end_s) = ((end - 30.0).to_string(), end.to_string());
            let (status, body) = server.post_form(
                "/api/v1/query_range",
                &[
                    ("query", &expr),
                    ("start", &start),
                    ("end", &end_s),
                    ("step", "10"),
                ],
            );
            assert!(
                status == 200 && body["data"]["result"].is_array(),
                "{name}: annotation {expr}: {body}"
            );
        }
    }
    println!("{checked} dashboard queries returned data");
}
