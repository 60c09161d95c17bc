//! End to end, the way an EXAMON site uses KairosDB: EXAMON messages published over MQTT to
//! the real `exawatch up` (with API users on: the client logs in with basic auth), then queried back through the
//! KairosDB REST API by `tests/examon_client.py`, a Python client that talks as ExamonQL does
//! (urllib, basic auth, gzip) and prints the rows a pandas dataframe is made from. Every
//! answer is checked against a direct SQL computation on the same data (`POST /api/v1/sql`).

mod support {
    pub mod server;
}

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use support::server::Server;

use serde_json::{Value, json};

const USER: &str = "examon";
const PASSWORD: &str = "s3cret";

/// One dataframe row: name, timestamp (ms), tags, value (a number or a string).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: String,
    timestamp: i64,
    tags: BTreeMap<String, String>,
    value: Value,
}

impl Row {
    fn from_client(row: &Value) -> Self {
        let mut tags = BTreeMap::new();
        for (key, value) in row.as_object().unwrap() {
            if !["name", "timestamp", "value"].contains(&key.as_str()) {
                tags.insert(key.clone(), value.as_str().unwrap().to_owned());
            }
        }
        Self {
            name: row["name"].as_str().unwrap().to_owned(),
            timestamp: row["timestamp"].as_i64().unwrap(),
            tags,
            value: row["value"].clone(),
        }
    }

    fn new(name: &str, timestamp: &Value, tags: &[(&str, &Value)], value: Value) -> Self {
        Self {
            name: name.to_owned(),
            timestamp: timestamp.as_i64().unwrap(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_str().unwrap().to_owned()))
                .collect(),
            value,
        }
    }
}

/// Compares rows exactly; numbers as f64, within `tolerance` (relative) when it is not 0.
fn assert_rows(case: &str, got: &[Row], want: &[Row], tolerance: f64) {
    assert_eq!(got.len(), want.len(), "{case}: {got:#?}\nwant {want:#?}");
    assert!(!want.is_empty(), "{case}: no rows to compare");
    for (g, w) in got.iter().zip(want) {
        let same_value = match (g.value.as_f64(), w.value.as_f64()) {
            (Some(a), Some(b)) if tolerance > 0.0 => (a - b).abs() <= tolerance * b.abs().max(1.0),
            (Some(a), Some(b)) => a == b,
            _ => g.value == w.value,
        };
        assert!(
            g.name == w.name && g.timestamp == w.timestamp && g.tags == w.tags && same_value,
            "{case}: got {g:?}, want {w:?}"
        );
    }
}

fn client_rows(out: &Value, case: &str) -> Vec<Row> {
    out[case]
        .as_array()
        .unwrap_or_else(|| panic!("{case} missing"))
        .iter()
        .map(Row::from_client)
        .collect()
}

/// KairosDB's percentile (`PercentileAggregator.getValue`) over sorted values.
fn kairos_percentile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() as f64 + 1.0);
    if pos < 1.0 {
        sorted[0]
    } else if pos >= sorted.len() as f64 {
        sorted[sorted.len() - 1]
    } else {
        let (lower, upper) = (sorted[pos as usize - 1], sorted[pos as usize]);
        lower + (pos - pos.floor()) * (upper - lower)
    }
}

#[test]
fn examon_client_queries_through_the_kairosdb_api() {
    let dir = tempfile::tempdir().unwrap();
    let users = format!(r#"api.users=[{{name="{USER}", role="write", password="{PASSWORD}"}}]"#);
    let mut server = Server::start(&dir.path().join("data"), &["--set", &users]);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    server.authorize(&format!("Basic {basic}"));

    // 15 minutes ago, at a quarter of a second: not on a minute boundary.
    let now_s = (exawatch_protocol::time::now_ms() / 1000) as u64;
    let t0 = (now_s - 900) * 1000 + 250;
    let t1 = t0 + 200_000;

    // What EXAMON plugins publish: pmu_pub temperatures per core, an IPMI energy counter,
    // Nagios states as text.
    let mut options = rumqttc::MqttOptions::new("e2e-kairosdb", "127.0.0.1", server.mqtt);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut connection) = rumqttc::Client::new(options, 1000);
    std::thread::spawn(move || for _ in connection.iter() {});
    let publish = |topic: &str, payload: String| {
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .unwrap();
    };
    let seconds = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
    let mut published = 0;
    for (n, node) in ["n01", "n02", "n03"].iter().enumerate() {
        for core in 0..2u64 {
            let topic = format!(
                "org/acme/cluster/c1/node/{node}/plugin/pmu_pub/chnl/data/core/{core}/temp"
            );
            for i in 0..36u64 {
                let value = 30.0 + ((i * 37 + n as u64 * 11 + core * 5) % 40) as f64 * 0.25;
                publish(&topic, format!("{value};{}", seconds(t0 + i * 5_000)));
                published += 1;
            }
        }
        let topic = format!("org/acme/cluster/c1/node/{node}/plugin/ipmi/chnl/data/energy");
        for i in 0..18u64 {
            let value = 1000 * (n as u64 + 1) + i * i * 7 + i * 3;
            publish(&topic, format!("{value};{}", seconds(t0 + i * 10_000 + 7)));
            published += 1;
        }
    }
    let nagios = "org/acme/cluster/c1/node/n01/plugin/nagios/chnl/data/state";
    for (i, state) in ["OK - load 0.10", "WARNING - disk 91%", "OK - load 0.20"]
        .iter()
        .enumerate()
    {
        publish(
            nagios,
            format!("{state};{}", seconds(t0 + 3_000 + i as u64 * 60_000)),
        );
        published += 1;
    }
    server.wait_for_count("", published);

    let output = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examon_client.py"))
        .args([&server.url(""), USER, PASSWORD])
        .args([t0.to_string(), t1.to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "examon_client.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log_text()
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    let range = format!(
        "time >= to_timestamp_millis({t0}) AND time < to_timestamp_millis({})",
        t1 + 1
    );
    let ms = "CAST(time AS BIGINT) / 1000000";

    // Raw points, grouped by node and core.
    let raw: Vec<Row> = server
        .sql(&format!(
            "SELECT {ms} AS ts, value, node, core FROM samples \
             WHERE metric = 'temp' AND node IN ('n01', 'n02') AND {range} \
             ORDER BY node, core, time, value"
        ))
        .iter()
        .map(|r| {
            Row::new(
                "temp",
                &r["ts"],
                &[("node", &r["node"]), ("core", &r["core"])],
                r["value"].clone(),
            )
        })
        .collect();
    assert_eq!(raw.len(), 2 * 2 * 36);
    assert_rows("raw", &client_rows(&out, "raw"), &raw, 0.0);
    assert_rows(
        "raw_relative",
        &client_rows(&out, "raw_relative"),
        &raw,
        0.0,
    );

    // Every range aggregator by node over 1-minute ranges aligned on the minute.
    let buckets = server.sql(&format!(
        "SELECT node, \
           CAST(date_bin(INTERVAL '1 minute', time, TIMESTAMP '1970-01-01T00:00:00Z') AS BIGINT) / 1000000 AS bucket, \
           CAST(min(time) AS BIGINT) / 1000000 AS first_ms, CAST(max(time) AS BIGINT) / 1000000 AS last_ms, \
           avg(value) AS avg, min(value) AS min, max(value) AS max, sum(value) AS sum, count(*) AS count, \
           first_value(value ORDER BY time, value) AS first, last_value(value ORDER BY time, value) AS last, \
           coalesce(stddev(value), 0) AS dev, array_agg(value ORDER BY value) AS sorted \
         FROM samples WHERE metric = 'temp' AND {range} GROUP BY node, bucket ORDER BY node, bucket"
    ));
    assert!(buckets.len() >= 9, "{buckets:?}");
    for name in ["avg", "min", "max", "sum", "count", "first", "last", "dev"] {
        let time = if name == "last" {
            "last_ms"
        } else {
            "first_ms"
        };
        let want: Vec<Row> = buckets
            .iter()
            .map(|b| Row::new("temp", &b[time], &[("node", &b["node"])], b[name].clone()))
            .collect();
        let tolerance = if name == "dev" { 1e-12 } else { 0.0 };
        assert_rows(name, &client_rows(&out, name), &want, tolerance);
    }
    let want: Vec<Row> = buckets
        .iter()
        .map(|b| {
            let sorted: Vec<f64> = b["sorted"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            Row::new(
                "temp",
                &b["bucket"],
                &[("node", &b["node"])],
                json!(kairos_percentile(&sorted, 0.9)),
            )
        })
        .collect();
    assert_rows("percentile", &client_rows(&out, "percentile"), &want, 0.0);
    let want: Vec<Row> = buckets
        .iter()
        .map(|b| {
            let end = json!(b["bucket"].as_i64().unwrap() + 60_000);
            Row::new("temp", &end, &[("node", &b["node"])], b["avg"].clone())
        })
        .collect();
    assert_rows("avg_end", &client_rows(&out, "avg_end"), &want, 0.0);

    // rate (per second) and diff between successive points of each node.
    let steps = server.sql(&format!(
        "SELECT node, ms, rate, diff FROM ( \
           SELECT node, ms, \
             (value - lag(value) OVER (PARTITION BY node ORDER BY ms)) \
               / CAST(ms - lag(ms) OVER (PARTITION BY node ORDER BY ms) AS DOUBLE) * 1000 AS rate, \
             value - lag(value) OVER (PARTITION BY node ORDER BY ms) AS diff \
           FROM (SELECT node, {ms} AS ms, value FROM samples WHERE metric = 'energy' AND {range})) \
         WHERE diff IS NOT NULL ORDER BY node, ms"
    ));
    assert_eq!(steps.len(), 3 * 17);
    for name in ["rate", "diff"] {
        let want: Vec<Row> = steps
            .iter()
            .map(|s| Row::new("energy", &s["ms"], &[("node", &s["node"])], s[name].clone()))
            .collect();
        assert_rows(name, &client_rows(&out, name), &want, 0.0);
    }

    // Text values; without group_by the row carries every tag of the series.
    let state: Vec<Row> = server
        .sql(&format!(
            "SELECT {ms} AS ts, text, org, cluster, node, plugin, chnl FROM samples \
             WHERE metric = 'state' AND {range} ORDER BY time"
        ))
        .iter()
        .map(|r| {
            let tags = ["org", "cluster", "node", "plugin", "chnl"].map(|k| (k, &r[k]));
            Row::new("state", &r["ts"], &tags, r["text"].clone())
        })
        .collect();
    assert_eq!(state.len(), 3);
    assert_rows("state", &client_rows(&out, "state"), &state, 0.0);

    let limited: Vec<Row> = server
        .sql(&format!(
            "SELECT {ms} AS ts, value, org, cluster, node, plugin, chnl, core FROM samples \
             WHERE metric = 'temp' AND node = 'n03' AND core = '1' AND {range} ORDER BY time LIMIT 5"
        ))
        .iter()
        .map(|r| {
            let tags = ["org", "cluster", "node", "plugin", "chnl", "core"].map(|k| (k, &r[k]));
            Row::new("temp", &r["ts"], &tags, r["value"].clone())
        })
        .collect();
    assert_rows("limit", &client_rows(&out, "limit"), &limited, 0.0);

    // Written through POST /api/v1/datapoints by the same client, read back.
    assert_eq!(out["write_status"], 204);
    let tags = [
        ("node", &json!("n09")),
        ("org", &json!("acme")),
        ("plugin", &json!("examon_pub")),
    ];
    let written = [(500, 12.5), (1500, 13.0), (2500, 13.75)]
        .map(|(dt, v)| Row::new("kairos_written", &json!(t0 + dt), &tags, json!(v)));
    assert_rows("written", &client_rows(&out, "written"), &written, 0.0);
    let stored = server
        .sql("SELECT count(*) AS n FROM samples WHERE metric = 'kairos_written' AND node = 'n09'");
    assert_eq!(stored[0]["n"], 3);

    // Metadata, against SQL.
    let strings = |rows: Vec<Value>, key: &str| -> Vec<Value> {
        rows.into_iter().map(|r| r[key].clone()).collect()
    };
    let metrics = strings(
        server.sql("SELECT DISTINCT metric FROM samples ORDER BY metric"),
        "metric",
    );
    assert_eq!(out["metricnames"], json!(metrics));
    let tag_names = strings(
        server.sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'samples' \
             AND column_name NOT IN ('time', 'metric', 'value', 'text') ORDER BY column_name",
        ),
        "column_name",
    );
    assert_eq!(out["tagnames"], json!(tag_names));
    let union = tag_names
        .iter()
        .map(|t| {
            format!(
                "SELECT CAST({} AS VARCHAR) AS v FROM samples",
                t.as_str().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let tag_values = strings(
        server.sql(&format!(
            "SELECT DISTINCT v FROM ({union}) WHERE v IS NOT NULL ORDER BY v"
        )),
        "v",
    );
    assert_eq!(out["tagvalues"], json!(tag_values));
    assert_eq!(
        out["temp_tag_keys"],
        json!(["chnl", "cluster", "core", "node", "org", "plugin"])
    );
    let cores = strings(
        server.sql("SELECT DISTINCT core FROM samples WHERE metric = 'temp' AND node = 'n02' ORDER BY core"),
        "core",
    );
    assert_eq!(out["temp_cores_of_n02"], json!(cores));

    // Errors in KairosDB's shape; credentials required; health checks open.
    assert_eq!(out["bad_query"][0], 400);
    let error = out["bad_query"][1]["errors"][0].as_str().unwrap();
    assert!(
        error.starts_with("query.metric[0].aggregators[0].median invalid aggregator name"),
        "{error}"
    );
    assert_eq!(out["no_credentials_status"], 401);
    assert_eq!(out["health_check_status"], 204);
}
