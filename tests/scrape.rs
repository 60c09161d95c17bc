//! Scraping Prometheus exporters (issue 26), end to end: `exawatch up` with a `[scrape]`
//! section scrapes Debian's `prometheus-node-exporter` and an in-test HTTP server serving
//! the DCGM exporter and ipmi_exporter expositions of `tests/fixtures/scrape/` (one behind
//! basic auth, from a targets file that changes), an exporter that hangs, and one exposing
//! `job`/`instance` of its own; the values are read back over SQL and PromQL.

mod support {
    pub mod server;
}

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::server::{Server, free_port};

const DCGM: &str = include_str!("fixtures/scrape/dcgm-exporter.prom");
const IPMI: &str = include_str!("fixtures/scrape/ipmi-exporter.om.txt");
/// What a Pushgateway or a federating Prometheus exposes: series with their own job and
/// instance.
const PUSHED: &str =
    "# TYPE pushed_metric gauge\npushed_metric{job=\"batch\",instance=\"cn05:9091\"} 7\n";
/// `prometheus:s3cr3t`.
const BASIC_AUTH: &str = "Basic cHJvbWV0aGV1czpzM2NyM3Q=";
const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// The exporters' side: serves the fixtures by path until the test ends. Records whether a
/// scrape asked for OpenMetrics as Prometheus does.
fn serve_exporters(listener: TcpListener, accept_seen: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let accept_seen = Arc::clone(&accept_seen);
        std::thread::spawn(move || answer(stream, &accept_seen));
    }
}

fn answer(mut stream: TcpStream, accept_seen: &AtomicBool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("");
    if headers.get("accept").map(String::as_str) == Some(ACCEPT) {
        accept_seen.store(true, Ordering::Relaxed);
    }
    let text = "text/plain; version=0.0.4; charset=utf-8";
    let openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let (status, content_type, body) = match path {
        "/dcgm" => ("200 OK", text, DCGM),
        "/ipmi" if headers.get("authorization").map(String::as_str) == Some(BASIC_AUTH) => {
            ("200 OK", openmetrics, IPMI)
        }
        "/ipmi" => ("401 Unauthorized", text, "Unauthorized\n"),
        "/pushed" => ("200 OK", text, PUSHED),
        "/hang" => {
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        _ => ("404 Not Found", text, "not found\n"),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The PromQL instant query's result: each series' labels (without `__name__`) and value.
fn promql(server: &Server, query: &str) -> Vec<(BTreeMap<String, String>, String)> {
    let (status, body) = server.get("/api/v1/query", &[("query", query)]);
    assert_eq!(status, 200, "{query}: {body}");
    let mut result: Vec<(BTreeMap<String, String>, String)> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            let mut labels: BTreeMap<String, String> =
                serde_json::from_value(series["metric"].clone()).unwrap();
            labels.remove("__name__");
            (labels, series["value"][1].as_str().unwrap().to_owned())
        })
        .collect();
    result.sort();
    result
}

/// Waits until the PromQL `query` has `n` series.
fn wait_for_series(
    server: &Server,
    query: &str,
    n: usize,
) -> Vec<(BTreeMap<String, String>, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result = promql(server, query);
        if result.len() == n {
            return result;
        }
        assert!(
            Instant::now() < deadline,
            "{query}: {result:?}, want {n} series\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn write_targets(path: &Path, exporters: &str, rack: &str) {
    let text = json!([{"targets": [exporters], "labels": {"rack": rack}}]).to_string();
    std::fs::write(path.with_extension("tmp"), text).unwrap();
    std::fs::rename(path.with_extension("tmp"), path).unwrap();
}

#[test]
fn exporters_are_scraped_labelled_and_stored() {
    let dir = tempfile::tempdir().unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let exporters = listener.local_addr().unwrap().to_string();
    let accept_seen = Arc::new(AtomicBool::new(false));
    {
        let accept_seen = Arc::clone(&accept_seen);
        std::thread::spawn(move || serve_exporters(listener, accept_seen));
    }

    // node_exporter with only the textfile collector (and its own Go/process metrics):
    // values that do not depend on the machine.
    let textfiles = dir.path().join("textfiles");
    std::fs::create_dir(&textfiles).unwrap();
    std::fs::write(
        textfiles.join("site.prom"),
        "# TYPE site_room_temperature_celsius gauge\nsite_room_temperature_celsius{room=\"B1\"} 21.5\n",
    )
    .unwrap();
    let node_port = free_port();
    let mut node_exporter = Command::new("prometheus-node-exporter");
    node_exporter
        .arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
        .arg("--collector.disable-defaults")
        .arg("--collector.textfile")
        .arg(format!(
            "--collector.textfile.directory={}",
            textfiles.display()
        ));
    let _node_exporter = Server::spawn(
        node_exporter,
        node_port,
        dir.path().join("node-exporter.log"),
        "/metrics",
    );

    let targets_file = dir.path().join("ipmi-targets.json");
    write_targets(&targets_file, &exporters, "r7");
    let config = dir.path().join("exawatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[scrape.jobs]]
name = "node"
targets = ["127.0.0.1:{node_port}"]
interval_secs = 1
timeout_secs = 1

[[scrape.jobs]]
name = "dcgm"
targets = ["{exporters}"]
metrics_path = "/dcgm"
interval_secs = 1
timeout_secs = 1
[[scrape.jobs.metric_relabel_configs]]
action = "keep"
source_labels = ["__name__"]
regex = "DCGM_FI_DEV_(GPU_TEMP|POWER_USAGE|TOTAL_ENERGY_CONSUMPTION|XID_ERRORS)"
[[scrape.jobs.metric_relabel_configs]]
source_labels = ["Hostname"]
target_label = "node"
[[scrape.jobs.metric_relabel_configs]]
action = "labeldrop"
regex = "UUID|DCGM_FI_DRIVER_VERSION|Hostname|err_msg"

[[scrape.jobs]]
name = "ipmi"
targets_file = "{targets_file}"
metrics_path = "/ipmi"
interval_secs = 1
timeout_secs = 1
basic_auth = {{ username = "prometheus", password = "s3cr3t" }}

[[scrape.jobs]]
name = "ipmi-bad-login"
targets = ["{exporters}"]
metrics_path = "/ipmi"
interval_secs = 1
timeout_secs = 1
basic_auth = {{ username = "prometheus", password = "wrong-password" }}

[[scrape.jobs]]
name = "hang"
targets = ["{exporters}"]
metrics_path = "/hang"
interval_secs = 1
timeout_secs = 0.5

[[scrape.jobs]]
name = "pushed"
targets = ["{exporters}"]
metrics_path = "/pushed"
interval_secs = 1
timeout_secs = 1

[[scrape.jobs]]
name = "pushed-honored"
targets = ["{exporters}"]
metrics_path = "/pushed"
interval_secs = 1
timeout_secs = 1
honor_labels = true
"#,
            targets_file = targets_file.display()
        ),
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let host = exporters.split(':').next().unwrap();
    let target = |job: &str, address: &str| {
        labels(&[
            ("instance", address),
            ("job", job),
            ("node", address.split(':').next().unwrap()),
        ])
    };

    // up: 1 for those that answer, 0 for a refused login and a target that hangs.
    let up = wait_for_series(&server, "up", 7);
    let node_target = format!("127.0.0.1:{node_port}");
    let mut want = vec![
        (target("dcgm", &exporters), "1".to_owned()),
        (target("hang", &exporters), "0".to_owned()),
        (
            {
                let mut l = target("ipmi", &exporters);
                l.insert("rack".into(), "r7".into());
                l
            },
            "1".to_owned(),
        ),
        (target("ipmi-bad-login", &exporters), "0".to_owned()),
        (target("node", &node_target), "1".to_owned()),
        (target("pushed", &exporters), "1".to_owned()),
        (target("pushed-honored", &exporters), "1".to_owned()),
    ];
    want.sort();
    assert_eq!(up, want);

    // DCGM (text format): kept names only, node from Hostname, labels dropped.
    let gpu = |gpu: &str, value: &str| {
        (
            labels(&[
                ("device", &format!("nvidia{gpu}")),
                ("gpu", gpu),
                ("instance", &exporters),
                ("job", "dcgm"),
                ("modelName", "NVIDIA A100-SXM4-40GB"),
                ("node", "gpu01"),
            ]),
            value.to_owned(),
        )
    };
    assert_eq!(
        promql(&server, "DCGM_FI_DEV_GPU_TEMP"),
        [gpu("0", "58"), gpu("1", "31")]
    );
    assert_eq!(
        promql(&server, "DCGM_FI_DEV_POWER_USAGE"),
        [gpu("0", "312.482"), gpu("1", "56.027")]
    );
    assert_eq!(
        promql(&server, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"),
        [gpu("0", "1876429100000"), gpu("1", "402938112455")]
    );
    let xid = promql(&server, "DCGM_FI_DEV_XID_ERRORS == 79");
    assert_eq!(xid.len(), 1);
    assert_eq!(xid[0].0.get("err_code").map(String::as_str), Some("79"));
    assert_eq!(promql(&server, "DCGM_FI_DEV_SM_CLOCK"), []);
    let dcgm = target("dcgm", &exporters);
    let report = |name: &str| {
        promql(&server, &format!("{name}{{job=\"dcgm\"}}"))
            .into_iter()
            .map(|(l, v)| {
                assert_eq!(l, dcgm);
                v
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(report("scrape_samples_scraped"), ["26"]);
    assert_eq!(report("scrape_samples_post_metric_relabeling"), ["8"]);

    // ipmi_exporter (OpenMetrics, basic auth, targets file labels).
    assert!(accept_seen.load(Ordering::Relaxed));
    let ipmi = |extra: &[(&str, &str)], value: &str| {
        let mut l = labels(&[
            ("instance", &exporters),
            ("job", "ipmi"),
            ("node", host),
            ("rack", "r7"),
        ]);
        l.extend(labels(extra));
        (l, value.to_owned())
    };
    assert_eq!(
        promql(&server, "ipmi_temperature_celsius"),
        [
            ipmi(&[("id", "1"), ("name", "Inlet Temp")], "24"),
            ipmi(&[("id", "14"), ("name", "Temp \"CPU1\"")], "63"),
            ipmi(&[("id", "2"), ("name", "Exhaust Temp")], "41"),
        ]
    );
    assert_eq!(
        promql(&server, "ipmi_voltage_volts"),
        [
            ipmi(&[("id", "20"), ("name", "Voltage 1")], "232"),
            ipmi(&[("id", "21"), ("name", "Voltage 2")], "NaN"),
        ]
    );
    assert_eq!(
        promql(
            &server,
            "go_gc_duration_seconds{job=\"ipmi\", quantile=~\"0.0|1.0\"}"
        ),
        [
            ipmi(&[("quantile", "0.0")], "0.000023501"),
            ipmi(&[("quantile", "1.0")], "0.000412901"),
        ]
    );
    assert_eq!(
        promql(&server, "process_cpu_seconds_total{job=\"ipmi\"}"),
        [ipmi(&[], "61.25")]
    );
    assert_eq!(promql(&server, "{__name__=~\".+_created\"}"), []);
    // Over SQL too: the fixture's value, once per scrape.
    let rows = server.sql(
        "SELECT min(value) AS lo, max(value) AS hi, count(DISTINCT rack) AS racks FROM samples \
         WHERE metric = 'ipmi_dcmi_power_consumption_watts'",
    );
    assert_eq!(rows[0], json!({"lo": 418.0, "hi": 418.0, "racks": 1}));
    // honor_labels: the exporter's job and instance win, or are kept as exported_*.
    assert_eq!(
        promql(&server, "pushed_metric"),
        [
            (
                labels(&[
                    ("exported_instance", "cn05:9091"),
                    ("exported_job", "batch"),
                    ("instance", &exporters),
                    ("job", "pushed"),
                    ("node", host),
                ]),
                "7".to_owned()
            ),
            (
                labels(&[
                    ("instance", "cn05:9091"),
                    ("job", "batch"),
                    ("node", "cn05")
                ]),
                "7".to_owned()
            ),
        ]
    );

    // node_exporter: the textfile's value, and its own series.
    let node = |extra: &[(&str, &str)], value: &str| {
        let mut l = target("node", &node_target);
        l.extend(labels(extra));
        (l, value.to_owned())
    };
    assert_eq!(
        promql(&server, "site_room_temperature_celsius"),
        [node(&[("room", "B1")], "21.5")]
    );
    assert_eq!(
        promql(&server, "node_textfile_scrape_error"),
        [node(&[], "0")]
    );

    // The hanging target is cut off at its timeout; failures are counted by reason.
    let hang = promql(&server, "scrape_duration_seconds{job=\"hang\"}");
    let seconds: f64 = hang[0].1.parse().unwrap();
    assert!((0.4..2.0).contains(&seconds), "{hang:?}");
    let failures = |job: &str, reason: &str| {
        server.metric(&format!(
            "exawatch_scrape_failures_total{{job=\"{job}\",reason=\"{reason}\"}}"
        ))
    };
    assert!(failures("hang", "timeout") >= 1.0);
    assert!(failures("ipmi-bad-login", "http_status") >= 1.0);
    assert!(server.metric("exawatch_scrapes_total{job=\"dcgm\"}") >= 1.0);

    // The targets file changes: its target's labels follow.
    write_targets(&targets_file, &exporters, "r8");
    wait_for_series(&server, "ipmi_chassis_power_state{rack=\"r8\"}", 1);

    // Failures are logged once per change of state, and secrets never.
    let log = server.log_text();
    assert_eq!(
        log.matches("Scrape failed").count(),
        2,
        "one for each failing target:\n{log}"
    );
    for secret in ["s3cr3t", "wrong-password", "cHJvbWV0aGV1czpzM2NyM3Q"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    let _ = server.terminate();
}

/// A bad job is refused at start, naming the key.
#[test]
fn a_bad_scrape_job_is_refused_at_start() {
    let output = Command::new(support::server::EXAWATCH)
        .args(["up", "--no-collector", "--set"])
        .arg(r#"scrape.jobs=[{name = "x", targets = ["cn01:9100"], metric_relabel_configs = [{action = "keep", source_labels = ["a"], regex = "(("}]}]"#)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "scrape.jobs[0].metric_relabel_configs[0].regex = \"((\": allowed a regular expression"
        ),
        "{stderr}"
    );
}

/// On a node, `exawatch collect` scrapes too and publishes the samples over its MQTT
/// connection; every series gets the collector's node name (and cluster) as target labels.
#[test]
fn collect_scrapes_on_a_node_and_publishes_over_mqtt() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let exporters = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || serve_exporters(listener, Arc::new(AtomicBool::new(false))));
    let server = Server::start(&dir.path().join("data"), &[]);
    let config = dir.path().join("collect.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[collector]
node = "gpu07"
cluster = "e4red"

[[scrape.jobs]]
name = "dcgm"
targets = ["{exporters}"]
metrics_path = "/dcgm"
interval_secs = 1
timeout_secs = 1
"#
        ),
    )
    .unwrap();
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("collectors/tests/fixtures/linux-node-exporter");
    let log = dir.path().join("collect.log");
    let mut collect = Command::new(support::server::EXAWATCH)
        .arg("collect")
        .arg("--config")
        .arg(&config)
        .arg("--broker")
        .arg(format!("127.0.0.1:{}", server.mqtt))
        .arg("--root")
        .arg(&root)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let temperature = wait_for_series(&server, "DCGM_FI_DEV_GPU_TEMP{gpu=\"0\"}", 1);
    let (labels, value) = &temperature[0];
    assert_eq!(value, "58");
    for (name, want) in [
        ("node", "gpu07"),
        ("cluster", "e4red"),
        ("job", "dcgm"),
        ("instance", exporters.as_str()),
        ("modelName", "NVIDIA A100-SXM4-40GB"),
        ("Hostname", "gpu01"),
    ] {
        assert_eq!(
            labels.get(name).map(String::as_str),
            Some(want),
            "{labels:?}"
        );
    }
    let up = wait_for_series(&server, "up{job=\"dcgm\", node=\"gpu07\"}", 1);
    assert_eq!(up[0].1, "1");
    collect.kill().unwrap();
    let _ = collect.wait();
}
