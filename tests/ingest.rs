//! Every way data gets in, end to end into the same `samples` table: Influx line protocol over
//! HTTP (as Telegraf sends it) and over MQTT, EXAMON SDK v3 beside EXAMON's key/value topics,
//! Prometheus remote write; and what happens when
//! the store is behind (HTTP writes wait for a flush, MQTT samples are shed and counted).

mod support {
    pub mod server;
}

use exawatch_protocol::remote_write;
use exawatch_protocol::{Sample, Value};
use serde_json::{Value as Json, json};
use support::server::{Server, gzip, mosquitto_pub, mqtt_client, publish};

#[test]
fn line_protocol_over_http_and_mqtt() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);

    // InfluxDB 2 style, nanoseconds.
    let body = "cpu,host=n01,cpu=cpu0 usage_user=12.5,usage_system=3i 1700000000000000000\n\
                cpu,host=n02,cpu=cpu0 usage_user=7.25 1700000000000000000\n";
    let (status, text, _) = server.post(
        "/api/v2/write?org=o&bucket=b&precision=ns",
        &[],
        body.as_bytes(),
    );
    assert_eq!((status, text.as_str()), (204, ""));
    // InfluxDB 1 style, seconds, gzipped as Telegraf does with content_encoding = "gzip".
    let body = gzip(b"mem,host=n01 used=1024i,status=\"ok\" 1700000001\n");
    let (status, text, _) = server.post(
        "/write?db=telegraf&precision=s",
        &[("Content-Encoding", "gzip")],
        &body,
    );
    assert_eq!((status, text.as_str()), (204, ""));
    // Telegraf's MQTT output: line protocol on any topic.
    let client = mqtt_client(server.mqtt, "telegraf");
    publish(
        &client,
        "telegraf/n03/disk",
        "disk,host=n03,device=sda free=5e9 1700000002000000000",
    );

    server.wait_for_count("", 6);
    let rows = server.sql(
        "SELECT time, metric, host, cpu, device, value, text FROM samples ORDER BY time, metric, host",
    );
    assert_eq!(
        Json::Array(rows),
        json!([
            {"time": "2023-11-14T22:13:20Z", "metric": "cpu_usage_system", "host": "n01", "cpu": "cpu0", "device": null, "value": 3.0, "text": null},
            {"time": "2023-11-14T22:13:20Z", "metric": "cpu_usage_user", "host": "n01", "cpu": "cpu0", "device": null, "value": 12.5, "text": null},
            {"time": "2023-11-14T22:13:20Z", "metric": "cpu_usage_user", "host": "n02", "cpu": "cpu0", "device": null, "value": 7.25, "text": null},
            {"time": "2023-11-14T22:13:21Z", "metric": "mem_status", "host": "n01", "cpu": null, "device": null, "value": null, "text": "ok"},
            {"time": "2023-11-14T22:13:21Z", "metric": "mem_used", "host": "n01", "cpu": null, "device": null, "value": 1024.0, "text": null},
            {"time": "2023-11-14T22:13:22Z", "metric": "disk_free", "host": "n03", "cpu": null, "device": "sda", "value": 5e9, "text": null},
        ])
    );

    // A bad line: 400 with the line number; the good lines of the body are stored.
    let (status, text, _) = server.post(
        "/api/v2/write",
        &[],
        b"ok v=1 1700000003000000000\nbroken\n",
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("line 2"), "{text}");
    server.wait_for_count("WHERE metric = 'ok_v'", 1);
    let (status, text, _) = server.post("/api/v2/write?precision=fortnight", &[], b"x v=1");
    assert_eq!(status, 400);
    assert!(text.contains("precision"), "{text}");
    let (status, _, _) = server.post("/write", &[("Content-Encoding", "gzip")], b"not gzip");
    assert_eq!(status, 400);
    // MQTT: a bad line-protocol message is counted.
    publish(&client, "telegraf/n03/x", "no fields=");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.metric("exawatch_messages_dropped_total{reason=\"line_protocol\"}") < 1.0 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn examon_sdk_v3_topics_beside_key_value_topics() {
    let dir = tempfile::tempdir().unwrap();
    let rule = r#"ingest.mqtt=[{filter = "examon/#", scheme = "examon_v3", tags = ["org", "cluster", "plugin", "node"]}]"#;
    let server = Server::start(&dir.path().join("data"), &["--set", rule]);
    // As an EXAMON v0.5 plugin publishes (`examon-base-plugin`), and as older plugins do.
    mosquitto_pub(
        server.mqtt,
        "mqttv311",
        "examon/e4red/nvml_pub/cn01/temperature.gpu",
        r#"{"v": 58.0, "ts": 1716480000123, "gpu": "0"}"#,
    );
    mosquitto_pub(
        server.mqtt,
        "mqttv5",
        "examon/e4red/nvml_pub/cn%2F02/power.draw",
        r#"{"v": 210.5, "ts": 1716480000123, "node": "cn03"}"#,
    );
    mosquitto_pub(
        server.mqtt,
        "mqttv311",
        "org/examon/cluster/e4red/node/cn01/plugin/pmu_pub/chnl/data/instr",
        "42;1716480000.5",
    );
    // Not what the rule's topics look like: counted, with the reason.
    mosquitto_pub(
        server.mqtt,
        "mqttv311",
        "examon/e4red/cn01/x",
        r#"{"v": 1}"#,
    );
    mosquitto_pub(server.mqtt, "mqttv311", "examon/a/b/cn01/x", "1;1716480000");

    server.wait_for_count("", 3);
    let rows = server.sql(
        "SELECT time, metric, org, cluster, plugin, node, gpu, value FROM samples ORDER BY metric",
    );
    assert_eq!(
        Json::Array(rows),
        json!([
            {"time": "2024-05-23T16:00:00.500Z", "metric": "instr", "org": "examon", "cluster": "e4red", "plugin": "pmu_pub", "node": "cn01", "gpu": null, "value": 42.0},
            {"time": "2024-05-23T16:00:00.123Z", "metric": "power.draw", "org": "examon", "cluster": "e4red", "plugin": "nvml_pub", "node": "cn03", "gpu": null, "value": 210.5},
            {"time": "2024-05-23T16:00:00.123Z", "metric": "temperature.gpu", "org": "examon", "cluster": "e4red", "plugin": "nvml_pub", "node": "cn01", "gpu": "0", "value": 58.0},
        ])
    );
    let dropped = |reason: &str| {
        server.metric(&format!(
            "exawatch_messages_dropped_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(dropped("topic_levels"), 1.0);
    assert_eq!(dropped("bad_v3_payload"), 1.0);

    // A rule that cannot work is refused at start, with its key.
    let output = std::process::Command::new(support::server::EXAWATCH)
        .args(["up", "--no-collector", "--data-dir"])
        .arg(dir.path().join("other"))
        .args([
            "--set",
            r#"ingest.mqtt=[{filter = "a/#/b", scheme = "examon_v3", tags = ["node"]}]"#,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ingest.mqtt[0].filter"), "{stderr}");
}

#[test]
fn prometheus_remote_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let tags = vec![
        ("instance".to_owned(), "n01:9100".to_owned()),
        ("job".to_owned(), "node".to_owned()),
    ];
    let samples: Vec<Sample> = (0..100)
        .map(|i| {
            Sample::new(
                "node_load1",
                tags.clone(),
                1_700_000_000_000_000_000 + i * 15_000_000_000,
                Value::Float(i as f64 / 4.0),
            )
        })
        .collect();
    let headers = [
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    let (status, text, _) = server.post("/api/v1/write", &headers, &remote_write::encode(&samples));
    assert_eq!((status, text.as_str()), (204, ""));
    let rows = server.sql(
        "SELECT count(*) AS n, sum(value) AS s, min(time) AS first, max(instance) AS i, max(job) AS j \
         FROM samples WHERE metric = 'node_load1'",
    );
    assert_eq!(
        rows[0],
        json!({"n": 100, "s": 1237.5, "first": "2023-11-14T22:13:20Z", "i": "n01:9100", "j": "node"})
    );
    let (status, text, _) = server.post("/api/v1/write", &headers, b"garbage");
    assert_eq!(status, 400, "{text}");
}

#[test]
fn a_full_store_holds_http_and_mqtt_writes_for_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--set",
            "store.max_buffer_rows=1000",
            "--set",
            "store.flush_interval_secs=3600",
        ],
    );
    let lines: String = (0..1000)
        .map(|i| format!("m,n=a v={i} {}\n", 1_700_000_000_000_000_000i64 + i))
        .collect();
    let (status, _, _) = server.post("/api/v2/write", &[], lines.as_bytes());
    assert_eq!(status, 204);
    assert_eq!(server.metric("exawatch_flushes_total"), 0.0);
    // The buffer is at its limit: the next write asks for a flush and waits for the room it
    // makes (a store that cannot flush refuses with 503 instead: tests/faults.rs).
    let (status, text, _) = server.post("/api/v2/write", &[], b"m,n=b v=1 1");
    assert_eq!(status, 204, "{text}");
    assert!(server.metric("exawatch_flushes_total") >= 1.0);
    assert_eq!(server.count("WHERE n = 'b'"), 1);
    assert_eq!(
        server.count("WHERE n = 'a'"),
        1000,
        "acknowledged rows all there"
    );

    // MQTT is not refused either: at the limit, the broker stops reading from the publisher
    // until a flush makes room (TCP slows it down), and then stores what it sent.
    let lines: String = (0..1000)
        .map(|i| format!("m,n=d v={i} {}\n", 1_700_000_000_000_000_000i64 + i))
        .collect();
    let (status, _, _) = server.post("/api/v2/write", &[], lines.as_bytes());
    assert_eq!(status, 204);
    let flushes = server.metric("exawatch_flushes_total");
    let client = mqtt_client(server.mqtt, "held");
    publish(&client, "node/x/m", "1;1700000000");
    server.wait_for_count("WHERE node = 'x'", 1);
    assert!(server.metric("exawatch_flushes_total") > flushes);
}

#[test]
fn store_stats_reports_files_rows_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let lines: String = (0..300)
        .map(|i| {
            format!(
                "cpu,host=n{} usage={i} {}\n",
                i % 3,
                1_700_000_000_000_000_000i64 + i * 1_000_000_000
            )
        })
        .chain((0..100).map(|i| {
            format!(
                "mem,host=n0 used={i} {}\n",
                1_700_000_000_000_000_000i64 + i * 1_000_000_000
            )
        }))
        .collect();
    assert_eq!(server.post("/api/v2/write", &[], lines.as_bytes()).0, 204);
    assert!(server.terminate().success(), "SIGTERM flushes");

    let output = std::process::Command::new(support::server::EXAWATCH)
        .args(["store", "stats", "--format", "json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stats: Json = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stats["files"], 1);
    assert_eq!(stats["total"]["rows"], 400);
    assert_eq!(stats["total"]["series"], 4);
    assert_eq!(stats["total"]["min_time"], 1_700_000_000_000_000_000i64);
    assert_eq!(stats["total"]["max_time"], 1_700_000_299_000_000_000i64);
    assert!(stats["total"]["bytes_per_sample"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["metrics"][0][0], "cpu_usage");
    assert_eq!(stats["metrics"][0][1]["rows"], 300);
    assert_eq!(stats["metrics"][0][1]["series"], 3);
    assert_eq!(stats["metrics"][1][0], "mem_used");
    assert_eq!(stats["metrics"][1][1]["series"], 1);

    let table = std::process::Command::new(support::server::EXAWATCH)
        .args(["store", "stats", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("1 files, 400 rows, 4 series"), "{text}");
    assert!(text.contains("cpu_usage  300   3"), "{text}");
}

#[test]
fn cardinality_limits_refuse_new_series_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--set", "store.max_series_per_metric=2"],
    );
    let body = "m,node=a v=1 1\nm,node=b v=1 1\nm,node=c v=1 1\nm,node=a v=2 2\n";
    let (status, text, _) = server.post("/api/v2/write", &[], body.as_bytes());
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("1 samples refused by a cardinality limit"),
        "{text}"
    );
    assert!(text.contains("store.max_series_per_metric"), "{text}");
    assert_eq!(server.count(""), 3);
    assert_eq!(
        server.metric("exawatch_samples_rejected_total{limit=\"series_per_metric\"}"),
        1.0
    );
}

/// Hundreds of malformed inputs over MQTT and HTTP: each refused with its reason and
/// counted; what was stored before does not change.
#[test]
fn malformed_inputs_are_refused_counted_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let client = mqtt_client(server.mqtt, "malformed");
    publish(&client, "org/o/node/n1/good", "1;1700000000");
    server.wait_for_count("", 1);
    let before = server.sql("SELECT * FROM samples");

    let good_topic = "org/o/node/n1/plugin/p/chnl/data/m";
    let bad_timestamps = [
        "x",
        "1e400",
        "-",
        "--1",
        "1.2.3",
        "NaN",
        "inf",
        "0x10",
        "17e",
        "٣",
        "1 2",
        "1,2,3",
        "99999999999999999999",
        "-99999999999999999999",
        ".",
        "..",
        "1..2",
        "+-1",
        "1,5",
        "1_000",
    ];
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    for ts in bad_timestamps {
        payloads.push(format!("42;{ts}").into_bytes());
        payloads.push(format!("text value;{ts}").into_bytes());
    }
    for bad in [
        "42",
        "",
        ";1700000000",
        "{",
        "[",
        "{\"name\": 1}",
        "{\"name\": \"m\"}",
        "{\"name\": \"m\", \"value\": 1}",
        "{\"name\": \"m\", \"value\": {}, \"timestamp\": 1}",
        "{\"name\": \"m\", \"value\": 1, \"timestamp\": \"soon\"}",
        "{\"name\": \"\", \"value\": 1, \"timestamp\": 1}",
        "{\"name\": \"m\", \"value\": 1, \"timestamp\": 1, \"tags\": []}",
        "{\"name\": \"m\", \"value\": 1, \"timestamp\": 1, \"tags\": {\"time\": \"x\"}}",
        "{\"name\": \"m\", \"value\": 1, \"timestamp\": 1, \"tags\": {\"a\": null}}",
        "[1, 2, 3]",
        "[{\"name\": \"m\"}]",
        "null",
        "true",
    ] {
        payloads.push(bad.as_bytes().to_vec());
        // examon-common gzips its json and bulk payloads.
        payloads.push(gzip(bad.as_bytes()));
    }
    payloads.push(vec![0xff, 0xfe, b';', b'1']);
    payloads.push(vec![0x1f, 0x8b, 8, 0, 0, 0]);
    payloads.push(gzip(b"not json at all"));
    payloads.push(gzip(b"[{\"name\": \"m\", \"value\": 1}]"));
    let mut sent = 0u64;
    for payload in &payloads {
        publish(&client, good_topic, payload.clone());
        sent += 1;
    }
    let bad_topics = [
        "org/o",
        "org/o/node/",
        "org//node/n/m",
        "/org/o/m",
        "org/o/m/",
        "org/o/node//m",
        "org/%ff%fe/m",
        "time/x/m",
        "metric/x/m",
        "value/x/m",
        "text/x/m",
        "a/1/a/2/m",
        "org/o/org/o/m",
        "org/o/node/n1",
        "a/b/c/d",
        "x//y",
    ];
    for topic in bad_topics {
        for payload in ["1;1700000000", "2;1700000000.5", "ok;1700000000"] {
            publish(&client, topic, payload);
            sent += 1;
        }
    }
    assert!(sent >= 100, "{sent} MQTT cases");
    let dropped = |server: &Server| -> f64 {
        server
            .metrics()
            .lines()
            .filter(|l| l.starts_with("exawatch_messages_dropped_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while dropped(&server) < sent as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {sent} counted; stored: {:?}",
            dropped(&server),
            server.sql("SELECT * FROM samples")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let stored = server.sql("SELECT metric, text, value, org FROM samples");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(dropped(&server), sent as f64, "each refused exactly once");

    // Line protocol over HTTP: every bad line named, none stored.
    let bad_lines = [
        "m",
        "m ",
        "m v",
        "m v=",
        "m =1",
        "m,t v=1",
        "m,t= v=1",
        "m,=x v=1",
        "m v=1i1",
        "m v=\"open",
        "m v=1 abc",
        "m v=1 1.5",
        "m,time=x v=1",
        "m,a=1,a=2 v=1",
        "m v=1,",
        "m v=1,,w=2",
        "m, v=1",
        "m v=tru",
        "m v=1u1",
        "m v=--1",
        ",m v=1",
        "m  v=1 1 1",
        "m v=1 99999999999999999999",
        "m\\",
        "m v=1\\",
        "m v=\"\\",
    ];
    let mut http_cases = 0;
    for line in bad_lines {
        for suffix in ["", " 1700000000000000000", " -5"] {
            let body = format!("{line}{suffix}");
            let (status, text, _) = server.post("/api/v2/write", &[], body.as_bytes());
            assert_eq!(status, 400, "{body:?}: {text}");
            http_cases += 1;
        }
    }
    let whole = remote_write::encode(&[Sample::new("m", vec![], 0, Value::Float(1.0))]);
    for body in [&b"\xff\xfe"[..], b"garbage", &whole[..whole.len() / 2]] {
        let (status, _, _) = server.post("/api/v1/write", &[], body);
        assert_eq!(status, 400);
        http_cases += 1;
    }
    assert!(sent + http_cases >= 200);
    assert_eq!(
        server.sql("SELECT * FROM samples"),
        before,
        "nothing stored changed"
    );
}

/// A publisher writing as fast as its socket takes, far more than the store may hold in
/// memory (issue 21): the broker stops reading while flushes make room, so the connection is
/// slowed down, not dropped, and every sample is stored.
#[test]
fn an_mqtt_publisher_faster_than_the_store_is_slowed_and_loses_nothing() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--set",
            "store.max_buffer_rows=20000",
            "--set",
            "store.flush_max_rows=10000",
        ],
    );
    const MESSAGES: usize = 200_000;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.mqtt)).unwrap();
    // CONNECT (3.1.1, clean session, keep-alive 0), then its CONNACK.
    stream
        .write_all(&[
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 2, b'o', b'v',
        ])
        .unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    let mut burst = Vec::new();
    for i in 0..MESSAGES {
        let topic = format!("org/o/node/n{}/plugin/p/chnl/data/flood", i % 50);
        let payload = format!("{i};{}.{:03}", 1_700_000_000 + i / 1000, i % 1000);
        burst.push(0x30);
        burst.push((2 + topic.len() + payload.len()) as u8);
        burst.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        burst.extend_from_slice(topic.as_bytes());
        burst.extend_from_slice(payload.as_bytes());
    }
    for chunk in burst.chunks(256 * 1024) {
        stream.write_all(chunk).unwrap();
    }
    stream.write_all(&[0xe0, 0]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while server.count("WHERE metric = 'flood'") < MESSAGES as u64 {
        assert!(std::time::Instant::now() < deadline, "not all stored");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(server.count("WHERE metric = 'flood'"), MESSAGES as u64);
    assert!(
        server.metric("exawatch_flushes_total") >= 10.0,
        "the burst was far more than memory holds"
    );
    assert!(
        server.metric("exawatch_broker_ingest_wait_seconds_total") > 0.0,
        "the publisher was held back"
    );
    assert!(
        !server
            .metrics()
            .contains("exawatch_broker_connections_closed_total{"),
        "the broker closed no connection"
    );
}
