//! End-to-end tests of the real `exawatch` binary: `exawatch up` on free loopback ports, EXAMON
//! messages published with real MQTT clients (rumqttc and Debian's `mosquitto_pub`), answers
//! read over HTTP; crashes by SIGKILL and stops by SIGTERM.

mod support {
    pub mod server;
}

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::server::{EXAWATCH, Server, gzip, mosquitto_pub, mqtt_client, publish};

#[test]
fn examon_messages_in_sql_rows_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let client = mqtt_client(server.mqtt, "e2e-rumqttc");
    let pmu = "org/acme/cluster/c1/node/n01/plugin/pmu_pub/chnl/data";
    publish(
        &client,
        &format!("{pmu}/core/0/instr"),
        "123456;1700000000.123",
    );
    publish(
        &client,
        &format!("{pmu}/core/1/instr"),
        "654321;1700000000.123",
    );
    // Tag order differs between plugins; segments may be URL-quoted.
    publish(
        &client,
        "node/rack%2F1%20a/org/acme/plugin/ipmi/chnl/data/temp",
        "41.5;1700000002.5",
    );
    publish(
        &client,
        "org/acme/cluster/c1/node/n01/plugin/nagios/chnl/data/state",
        "OK - all good;1700000001",
    );
    // Not samples: markers and a collector command.
    publish(&client, &format!("{pmu}/core/0/instr"), "CK");
    publish(&client, &format!("{pmu}/core/0/instr"), "__FLUSH");
    publish(
        &client,
        "org/acme/cluster/c1/node/n01/plugin/pmu_pub/chnl/cmd",
        "-s 2",
    );
    // Malformed: counted per reason and dropped.
    publish(&client, "org/acme/node/n01", "1;1700000000");
    publish(&client, &format!("{pmu}/x"), "12");
    publish(&client, &format!("{pmu}/x"), "12;yesterday");
    publish(&client, &format!("{pmu}/x"), vec![0x1f, 0x8b, 0, 1]);
    // examon-common's json and gzipped bulk formats.
    publish(
        &client,
        "examon/json",
        r#"{"name": "power", "value": 250.5, "timestamp": 1700000003000, "tags": {"org": "acme", "node": "n02", "plugin": "ipmi"}}"#,
    );
    let bulk = json!([
        {"name": "fan1", "value": 4800, "timestamp": 1700000003500u64, "tags": {"org": "acme", "node": "n02", "plugin": "ipmi"}},
        {"name": "fan2", "value": 4860, "timestamp": 1700000003500u64, "tags": {"org": "acme", "node": "n02", "plugin": "ipmi"}}
    ]);
    publish(&client, "examon/bulk", gzip(bulk.to_string().as_bytes()));
    // Debian's mosquitto_pub, MQTT 3.1.1 and 5, on the same port.
    mosquitto_pub(
        server.mqtt,
        "mqttv311",
        "org/acme/cluster/c1/node/n03/plugin/mosq/chnl/data/fan1",
        "4200;1700000004.250",
    );
    mosquitto_pub(
        server.mqtt,
        "mqttv5",
        "org/acme/cluster/c1/node/n03/plugin/mosq/chnl/data/fan2",
        "4260;1700000004.250",
    );

    server.wait_for_count("", 9);
    let rows = server.sql(
        "SELECT time, metric, value, text, org, cluster, node, plugin, chnl, core \
         FROM samples ORDER BY time, metric, core",
    );
    let expected = json!([
        {"time": "2023-11-14T22:13:20.123Z", "metric": "instr", "value": 123456.0, "text": null, "org": "acme", "cluster": "c1", "node": "n01", "plugin": "pmu_pub", "chnl": "data", "core": "0"},
        {"time": "2023-11-14T22:13:20.123Z", "metric": "instr", "value": 654321.0, "text": null, "org": "acme", "cluster": "c1", "node": "n01", "plugin": "pmu_pub", "chnl": "data", "core": "1"},
        {"time": "2023-11-14T22:13:21Z", "metric": "state", "value": null, "text": "OK - all good", "org": "acme", "cluster": "c1", "node": "n01", "plugin": "nagios", "chnl": "data", "core": null},
        {"time": "2023-11-14T22:13:22.500Z", "metric": "temp", "value": 41.5, "text": null, "org": "acme", "cluster": null, "node": "rack/1 a", "plugin": "ipmi", "chnl": "data", "core": null},
        {"time": "2023-11-14T22:13:23Z", "metric": "power", "value": 250.5, "text": null, "org": "acme", "cluster": null, "node": "n02", "plugin": "ipmi", "chnl": null, "core": null},
        {"time": "2023-11-14T22:13:23.500Z", "metric": "fan1", "value": 4800.0, "text": null, "org": "acme", "cluster": null, "node": "n02", "plugin": "ipmi", "chnl": null, "core": null},
        {"time": "2023-11-14T22:13:23.500Z", "metric": "fan2", "value": 4860.0, "text": null, "org": "acme", "cluster": null, "node": "n02", "plugin": "ipmi", "chnl": null, "core": null},
        {"time": "2023-11-14T22:13:24.250Z", "metric": "fan1", "value": 4200.0, "text": null, "org": "acme", "cluster": "c1", "node": "n03", "plugin": "mosq", "chnl": "data", "core": null},
        {"time": "2023-11-14T22:13:24.250Z", "metric": "fan2", "value": 4260.0, "text": null, "org": "acme", "cluster": "c1", "node": "n03", "plugin": "mosq", "chnl": "data", "core": null},
    ]);
    assert_eq!(Value::Array(rows), expected);

    for (reason, n) in [
        ("topic_shape", 1.0),
        ("missing_timestamp", 1.0),
        ("bad_timestamp", 1.0),
        ("bad_gzip", 1.0),
        ("empty_value", 0.0),
    ] {
        assert_eq!(
            server.metric(&format!(
                "exawatch_messages_dropped_total{{reason=\"{reason}\"}}"
            )),
            n,
            "{reason}"
        );
    }
    assert_eq!(
        server.metric("exawatch_messages_ignored_total{kind=\"marker\"}"),
        2.0
    );
    assert_eq!(
        server.metric("exawatch_messages_ignored_total{kind=\"command\"}"),
        1.0
    );
    assert_eq!(server.metric("exawatch_samples_written_total"), 9.0);

    // The server carries on after bad input.
    publish(&client, &format!("{pmu}/core/0/instr"), "1;1700000010");
    server.wait_for_count("WHERE metric = 'instr'", 3);
    assert!(server.terminate().success());
}

#[test]
fn sql_api_formats_errors_and_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let client = mqtt_client(server.mqtt, "e2e-sql");
    publish(&client, "org/o/node/n1/temp", "40.5;1700000000");
    publish(&client, "org/o/node/n2/temp", "41;1700000000");
    server.wait_for_count("", 2);

    let (status, csv) = server.post_sql("SELECT node, value FROM samples ORDER BY node", "csv");
    assert_eq!(
        (status, csv.as_str()),
        (200, "node,value\nn1,40.5\nn2,41.0\n")
    );
    let (status, empty) = server.post_sql("SELECT node FROM samples WHERE node = 'none'", "csv");
    assert_eq!((status, empty.as_str()), (200, "node\n"));
    assert_eq!(
        server.sql("SELECT node FROM samples WHERE node = 'none'"),
        Vec::<Value>::new()
    );

    // JSON request body.
    let mut response = server
        .agent
        .post(&server.url("/api/v1/sql"))
        .header("Content-Type", "application/json")
        .send(r#"{"query": "SELECT max(value) AS m FROM samples"}"#)
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.body_mut().read_to_string().unwrap(),
        r#"[{"m":41.0}]"#
    );

    // Bad queries: 400 with the reason.
    let bad = [
        ("SELEC 1", "SQL error"),
        ("SELECT nope FROM samples", "nope"),
        ("SELECT * FROM other_table", "other_table"),
        ("", "empty query"),
        ("CREATE TABLE t (a INT)", "not supported"),
        ("INSERT INTO samples (metric) VALUES ('x')", "not supported"),
        ("DELETE FROM samples", "not supported"),
        ("COPY samples TO '/tmp/stolen.csv'", "not supported"),
        (
            "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/passwd'",
            "not supported",
        ),
        ("SET datafusion.execution.batch_size = 1", "not supported"),
        ("SELECT * FROM '/etc/passwd'", "passwd"),
    ];
    for (query, reason) in bad {
        let (status, body) = server.post_sql(query, "json");
        assert_eq!(status, 400, "{query}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(reason), "{query}: {message}");
    }
    assert!(!Path::new("/tmp/stolen.csv").exists());
    let (status, body) = server.post_sql("SELECT 1", "xml");
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        server.metric("exawatch_queries_total{api=\"sql\",status=\"bad_request\"}"),
        12.0
    );

    // The CLI client prints a table, and fails with the server's reason.
    let output = Command::new(EXAWATCH)
        .args([
            "query",
            "--url",
            &server.url(""),
            "SELECT node, value FROM samples ORDER BY node",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "node | value\n-----+------\nn1   | 40.5\nn2   | 41.0\n(2 rows)\n"
    );
    let output = Command::new(EXAWATCH)
        .args(["query", "--url", &server.url(""), "SELEC 1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8(output.stderr).unwrap().contains("400"));
}

/// The samples one node publishes in the durability tests: `seq` 0..n, value = seq.
fn publish_sequence(client: &rumqttc::Client, node: &str, range: std::ops::Range<u64>) {
    for seq in range {
        let topic = format!(
            "org/o/cluster/c/node/{node}/plugin/seq/chnl/data/core/{}/seq",
            seq % 8
        );
        publish(
            client,
            &topic,
            format!("{seq};{}.{:03}", 1_700_000_000 + seq / 1000, seq % 1000),
        );
    }
}

#[test]
fn sigkill_loses_nothing_that_was_in_the_wal_and_sigterm_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let n = 20_000u64;
    {
        let server = Server::start(&data, &[]);
        let client = mqtt_client(server.mqtt, "e2e-durability");
        publish_sequence(&client, "n1", 0..n);
        server.wait_for_count("", n);
        server.kill();
    }
    let wal_segments = std::fs::read_dir(data.join("wal")).unwrap().count();
    assert!(wal_segments >= 1, "the WAL holds the data after SIGKILL");
    {
        let server = Server::start(&data, &[]);
        assert_eq!(server.count(""), n, "every sample replayed from the WAL");
        let sums = server.sql("SELECT sum(value) AS s, count(DISTINCT value) AS d FROM samples");
        assert_eq!(sums[0]["s"].as_f64().unwrap(), (n * (n - 1) / 2) as f64);
        assert_eq!(sums[0]["d"].as_u64().unwrap(), n, "no duplicates");
        assert_eq!(
            server.metric("exawatch_wal_replayed_samples_total"),
            n as f64
        );
        // More data after the replay, then a graceful stop.
        let client = mqtt_client(server.mqtt, "e2e-durability-2");
        publish_sequence(&client, "n2", 0..1000);
        server.wait_for_count("", n + 1000);
        assert!(server.terminate().success());
    }
    // SIGTERM flushed everything to Parquet and left nothing to replay.
    let catalog: Value =
        serde_json::from_slice(&std::fs::read(data.join("store/catalog.json")).unwrap()).unwrap();
    let rows: u64 = catalog["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, n + 1000);
    let server = Server::start(&data, &[]);
    assert_eq!(server.metric("exawatch_wal_replayed_samples_total"), 0.0);
    assert_eq!(server.count(""), n + 1000);
    assert_eq!(server.count("WHERE node = 'n2' AND core = '3'"), 125);
}

/// Runs `exawatch collect --once` on the fixture tree `root` into `server`, with `settings`
/// (`key=value`), and checks that it succeeded.
fn collect_once(server: &Server, root: &Path, settings: &[&str]) {
    let mut command = Command::new(EXAWATCH);
    command
        .args(["collect", "--once", "--broker"])
        .arg(format!("127.0.0.1:{}", server.mqtt))
        .arg("--root")
        .arg(root);
    for setting in settings {
        command.args(["--set", setting]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        root.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn collect_once_publishes_a_fixture_machine() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("collectors/tests/fixtures/linux-node-exporter");
    collect_once(
        &server,
        &root,
        &["collector.node=fixture01", "collector.cluster=test"],
    );
    let filter = "WHERE node = 'fixture01' AND metric = 'mem_total_bytes'";
    server.wait_for_count(filter, 1);
    let rows = server.sql(&format!(
        "SELECT value, plugin, cluster, chnl FROM samples {filter}"
    ));
    // MemTotal: 3742148 kB in the fixture's /proc/meminfo.
    assert_eq!(
        rows[0],
        json!({"value": 3742148.0 * 1024.0, "plugin": "linux", "cluster": "test", "chnl": "data"})
    );
    // tun0 in the fixture's /proc/net/dev: 1888 bytes received, 67120 sent.
    let tun0 = server.sql(
        "SELECT metric, value FROM samples WHERE node = 'fixture01' AND iface = 'tun0' \
         AND metric IN ('rx_bytes', 'tx_bytes') ORDER BY metric",
    );
    assert_eq!(
        Value::Array(tun0),
        json!([{"metric": "rx_bytes", "value": 1888.0}, {"metric": "tx_bytes", "value": 67120.0}])
    );

    let list = Command::new(EXAWATCH)
        .args(["collect", "--list", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(String::from_utf8(list.stdout).unwrap().contains("linux"));
}

#[test]
fn collect_once_publishes_x86_and_arm_sensor_families() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("collectors/tests/fixtures");
    for machine in [
        "x86-amd-epyc9224",
        "x86-amd-ryzen-zenpower",
        "arm-jetson-xavier-nx",
    ] {
        collect_once(
            &server,
            &fixtures.join(machine),
            &[&format!("collector.node={machine}")],
        );
    }
    server.wait_for_count("WHERE node = 'arm-jetson-xavier-nx'", 9);
    server.wait_for_count("WHERE node = 'x86-amd-epyc9224'", 5);
    server.wait_for_count("WHERE node = 'x86-amd-ryzen-zenpower'", 9);

    // EPYC 9224, k10temp: temp1_input 34800 (Tctl), temp3_input 29400 (Tccd1).
    let epyc = server.sql(
        "SELECT sensor, value, chip FROM samples WHERE node = 'x86-amd-epyc9224' \
         AND metric = 'temp_c' AND sensor IN ('Tctl', 'Tccd1') ORDER BY sensor",
    );
    assert_eq!(
        Value::Array(epyc),
        json!([
            {"sensor": "Tccd1", "value": 29.4, "chip": "k10temp"},
            {"sensor": "Tctl", "value": 34.8, "chip": "k10temp"}
        ])
    );
    // Ryzen with zenpower: core power from power1_input in µW, SoC voltage in mV.
    let ryzen = server.sql(
        "SELECT metric, sensor, value FROM samples WHERE node = 'x86-amd-ryzen-zenpower' \
         AND sensor IN ('SVI2_P_Core', 'SVI2_SoC') ORDER BY metric",
    );
    assert_eq!(
        Value::Array(ryzen),
        json!([
            {"metric": "in_v", "sensor": "SVI2_SoC", "value": 1.188},
            {"metric": "power_w", "sensor": "SVI2_P_Core", "value": 15.646}
        ])
    );
    // Jetson Xavier NX, INA3221 rail VDD_IN: 5016 mV × 1268 mA.
    let jetson = server.sql(
        "SELECT metric, value FROM samples WHERE node = 'arm-jetson-xavier-nx' \
         AND plugin = 'jetson' AND rail = 'VDD_IN' ORDER BY metric",
    );
    let values: Vec<(String, f64)> = jetson
        .iter()
        .map(|r| {
            (
                r["metric"].as_str().unwrap().to_owned(),
                r["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(values.len(), 3, "{values:?}");
    let get = |m: &str| values.iter().find(|(n, _)| n == m).unwrap().1;
    assert_eq!(get("current_a"), 1.268);
    assert_eq!(get("voltage_v"), 5.016);
    assert!((get("power_w") - 5.016 * 1.268).abs() < 1e-12, "{values:?}");
}
