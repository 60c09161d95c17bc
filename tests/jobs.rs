//! End to end, HPC jobs in the real binary: job records published over MQTT (as a site's
//! script would) land in the `jobs` table and `GET /api/v1/jobs`, the latest state of each
//! job winning, across a restart; bad records are counted per reason; a job's energy equals
//! the integral computed independently in SQL over the same samples, shared nodes split by
//! cores, a running job shows partial figures; `exawatch collect` publishes the `sacct` and
//! `squeue` fixtures and a second run neither loses nor duplicates records; `up --simulate`
//! runs Slurm-like jobs.

mod support {
    pub mod server;
}

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::server::{EXAWATCH, Server, mqtt_client, publish};

const S: i64 = 1_000_000_000;
/// Seconds between two samples of a series.
const STEP: i64 = 10;
/// Samples per series.
const POINTS: i64 = 181;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The published power and utilisation of `node` at sample `k` (watts, percent).
fn series(node: usize, k: i64) -> [(&'static str, &'static str, Option<&'static str>, f64); 6] {
    let n = node as i64;
    [
        (
            "rapl",
            "pkg_power",
            Some("0"),
            100.0 + ((k * 7 + n) % 13) as f64,
        ),
        (
            "rapl",
            "pkg_power",
            Some("1"),
            90.0 + ((k + n) % 5 * 3) as f64,
        ),
        ("rapl", "dram_power", Some("0"), 10.0 + (k % 3) as f64),
        ("rapl", "dram_power", Some("1"), 11.5),
        (
            "ipmi",
            "node_power",
            None,
            300.0 + ((k * 11 + n) % 17) as f64,
        ),
        ("procfs", "cpu_util", None, 20.0 + ((k * 3 + n) % 50) as f64),
    ]
}

/// examon-common `bulk` messages with every sample of `node`, ten points of each series
/// apiece (MQTT clients limit packet sizes).
fn bulk(node: usize, base: i64) -> Vec<String> {
    let mut messages = Vec::new();
    for chunk in (0..POINTS).collect::<Vec<_>>().chunks(10) {
        let mut items = Vec::new();
        for &k in chunk {
            for (plugin, metric, socket, value) in series(node, k) {
                let mut tags = json!({"node": format!("cn{:02}", node + 1), "plugin": plugin});
                if let Some(socket) = socket {
                    tags["socket"] = socket.into();
                }
                items.push(json!({
                    "name": metric,
                    "value": value,
                    "timestamp": (base + k * STEP) * 1000,
                    "tags": tags,
                }));
            }
        }
        messages.push(Value::Array(items).to_string());
    }
    messages
}

fn get(server: &Server, path: &str, params: &[(&str, &str)]) -> Value {
    let (status, body) = server.get(path, params);
    assert_eq!(status, 200, "{path} {params:?}: {body}");
    body
}

fn ids(jobs: &Value) -> Vec<String> {
    let mut ids: Vec<String> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn wait_for(server: &Server, query: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = server.sql(query);
        if rows[0]["v"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "{query}: {rows:?}, want {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn exawatch(args: &[&str]) -> String {
    let output = Command::new(EXAWATCH).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "exawatch {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// `Σ w·Δt` per node in SQL, with the window function and its own share rule: the part of
/// each interval starting at `t` that `share_sql` (an SQL expression of `node` and `t`)
/// gives the job.
fn sql_energy(
    server: &Server,
    source: &str,
    nodes: &str,
    from: i64,
    to: i64,
    share_sql: &str,
) -> f64 {
    let query = format!(
        "SELECT sum(w * (next_t - t) / 1e9 * ({share_sql})) AS joules FROM (
           SELECT node, t, w, lead(t) OVER (PARTITION BY node ORDER BY t) AS next_t FROM (
             SELECT node, CAST(time AS BIGINT) AS t, sum(value) AS w FROM samples
             WHERE {source} AND node IN ({nodes})
               AND time >= to_timestamp_nanos({from}) AND time <= to_timestamp_nanos({to})
             GROUP BY node, time))
         WHERE next_t IS NOT NULL AND next_t - t <= 300000000000"
    );
    server.sql(&query)[0]["joules"].as_f64().unwrap()
}

#[test]
fn published_jobs_are_stored_summarised_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let base = (now_s() - 3600) / STEP * STEP;
    let client = mqtt_client(server.mqtt, "jobs-test");
    for node in 0..3 {
        for message in bulk(node, base) {
            publish(&client, "examon/bulk", message);
        }
    }
    server.wait_for_count(
        "WHERE node IN ('cn01', 'cn02', 'cn03')",
        3 * POINTS as u64 * 6,
    );

    // Job 100 on cn01 and cn02 for 20 minutes; array task 101_3 on cn02 from minute 10, still
    // running: cn02 is shared, 32 cores each, for the last 11 minutes of job 100.
    let (a_start, a_end, b_start) = (base + 60, base + 1260, base + 600);
    let a = json!({"id": "100", "name": "relax", "user": "ada", "account": "chem",
        "partition": "cpu", "qos": "normal", "state": "RUNNING", "submit": base,
        "start": a_start, "nodes": "cn[01-02]", "cpus": 64, "mem_bytes": 1u64 << 36});
    let mut a_done = a.clone();
    a_done["state"] = "COMPLETED".into();
    a_done["end"] = a_end.into();
    a_done["exit_code"] = 0.into();
    let b = json!({"id": "101_3", "user": "bob", "partition": "gpu", "state": "RUNNING",
        "start": b_start, "nodes": ["cn02"], "cpus": 32, "gpus": 4});
    publish(&client, "exawatch/jobs/c1", a.to_string());
    publish(&client, "exawatch/jobs/c1", json!([a_done, b]).to_string());
    publish(
        &client,
        "exawatch/jobs/c1",
        r#"[{"id": "7", "state": "RUNNING", "nodes": "cn[1-"}, {"id": "x"}]"#,
    );
    publish(&client, "exawatch/jobs", "not json");
    wait_for(&server, "SELECT count(*) AS v FROM jobs", 2);
    for (reason, n) in [
        ("job_bad_nodes", 1.0),
        ("job_bad_id", 1.0),
        ("job_not_json", 1.0),
    ] {
        let line = format!("exawatch_messages_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(server.metric(&line), n, "{reason}");
    }

    // The list and its filters.
    assert_eq!(ids(&get(&server, "/api/v1/jobs", &[])), ["100", "101_3"]);
    let node1 = get(&server, "/api/v1/jobs", &[("node", "cn01")]);
    assert_eq!(ids(&node1), ["100"]);
    assert_eq!(node1[0]["state"], "COMPLETED", "the later record won");
    assert_eq!(node1[0]["cluster"], "c1", "from the topic");
    assert_eq!(node1[0]["nodes"], json!(["cn01", "cn02"]));
    assert_eq!(node1[0]["end"], a_end);
    let running = get(&server, "/api/v1/jobs", &[("state", "running")]);
    assert_eq!(ids(&running), ["101_3"]);
    assert_eq!(
        ids(&get(&server, "/api/v1/jobs", &[("user", "ada")])),
        ["100"]
    );
    let after_a = (a_end + 1).to_string();
    assert_eq!(
        ids(&get(&server, "/api/v1/jobs", &[("from", &after_a)])),
        ["101_3"]
    );
    let before_b = (b_start - 1).to_string();
    assert_eq!(
        ids(&get(&server, "/api/v1/jobs", &[("to", &before_b)])),
        ["100"]
    );
    let (status, _) = server.get("/api/v1/jobs/999", &[]);
    assert_eq!(status, 404);

    // SQL: by node, and joined with the samples on node and time (the README's query).
    let rows = server.sql(
        "SELECT job_id, node_count, cpus, state FROM jobs WHERE array_has(nodes, 'cn02') ORDER BY job_id",
    );
    assert_eq!(
        Value::Array(rows),
        json!([
            {"job_id": "100", "node_count": 2, "cpus": 64, "state": "COMPLETED"},
            {"job_id": "101_3", "node_count": 1, "cpus": 32, "state": "RUNNING"}
        ])
    );
    let rows = server.sql(
        "WITH job_nodes AS (
           SELECT job_id, unnest(nodes) AS node, start_time, end_time
           FROM jobs)
         SELECT j.job_id, s.node, max(s.value) AS peak_w, count(*) AS n
         FROM samples s JOIN job_nodes j
           ON s.node = j.node AND s.time >= j.start_time
           AND (j.end_time IS NULL OR s.time <= j.end_time)
         WHERE s.metric = 'node_power'
         GROUP BY j.job_id, s.node ORDER BY j.job_id, s.node",
    );
    let expect = |node: usize, from: i64, to: i64| {
        let ks: Vec<i64> = (0..POINTS)
            .filter(|k| (from..=to).contains(&(base + k * STEP)))
            .collect();
        let peak = ks
            .iter()
            .map(|&k| series(node, k)[4].3)
            .fold(f64::MIN, f64::max);
        (peak, ks.len() as u64)
    };
    let want = [
        ("100", 0, a_start, a_end),
        ("100", 1, a_start, a_end),
        ("101_3", 1, b_start, i64::MAX),
    ];
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (row, (id, node, from, to)) in rows.iter().zip(want) {
        let (peak, n) = expect(node, from, to);
        assert_eq!(row["job_id"], id);
        assert_eq!(row["node"], format!("cn{:02}", node + 1));
        assert_eq!(row["peak_w"].as_f64().unwrap(), peak, "{row}");
        assert_eq!(row["n"].as_u64().unwrap(), n, "{row}");
    }

    // Job 100's energy, per source, equals the integral in SQL; cn02 is halved while 101_3
    // shares it.
    let job = get(&server, "/api/v1/jobs/100", &[]);
    let summary = &job["summary"];
    assert_eq!(summary["running"], false);
    let nodes = "'cn01', 'cn02'";
    let share = format!(
        "CASE WHEN node = 'cn02' AND t >= {} THEN 0.5 ELSE 1.0 END",
        b_start * S
    );
    for (source, condition) in [
        (
            "rapl",
            "plugin = 'rapl' AND metric IN ('pkg_power', 'dram_power')",
        ),
        ("ipmi", "plugin = 'ipmi' AND metric = 'node_power'"),
    ] {
        let want = sql_energy(&server, condition, nodes, a_start * S, a_end * S, &share);
        let energy = &summary["energy"][source];
        let joules = energy["joules"].as_f64().unwrap();
        assert!(
            close(joules, want),
            "{source}: {joules} J, SQL says {want} J"
        );
        assert!(close(energy["kwh"].as_f64().unwrap(), want / 3.6e6));
        assert!(close(energy["coverage"].as_f64().unwrap(), 1.0), "{energy}");
        assert!(want > 1e5, "{source}: {want} J is a real figure");
    }
    assert!(summary["energy"].get("gpu").is_none(), "no GPU samples");
    let cpu = server.sql(&format!(
        "SELECT avg(value) AS mean, max(value) AS peak FROM samples WHERE metric = 'cpu_util'
         AND node IN ({nodes}) AND time >= to_timestamp({a_start}) AND time <= to_timestamp({a_end})"
    ));
    assert!(close(
        summary["cpu_util_mean"].as_f64().unwrap(),
        cpu[0]["mean"].as_f64().unwrap()
    ));
    assert_eq!(summary["cpu_util_peak"], cpu[0]["peak"]);

    // The running job: figures up to now, its time only partly covered by samples.
    let job = get(&server, "/api/v1/jobs/101_3", &[]);
    let summary = &job["summary"];
    assert_eq!(summary["running"], true);
    let to = (summary["to"].as_f64().unwrap() * 1e9) as i64;
    let share = format!("CASE WHEN t < {} THEN 0.5 ELSE 1.0 END", a_end * S);
    let want = sql_energy(
        &server,
        "plugin = 'rapl' AND metric IN ('pkg_power', 'dram_power')",
        "'cn02'",
        b_start * S,
        to,
        &share,
    );
    let energy = &summary["energy"]["rapl"];
    assert!(
        close(energy["joules"].as_f64().unwrap(), want),
        "{energy} vs {want}"
    );
    let coverage = energy["coverage"].as_f64().unwrap();
    let measured = (base + (POINTS - 1) * STEP - b_start) as f64;
    let expected = measured / (to as f64 / 1e9 - b_start as f64);
    assert!(
        (coverage - expected).abs() < 0.01,
        "coverage {coverage}, want {expected}"
    );

    // The command line.
    let url = server.url("");
    let table = exawatch(&["jobs", "--url", &url, "--user", "bob"]);
    assert!(
        table.lines().nth(1).unwrap().starts_with("101_3"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 2, "{table}");
    let shown: Value = serde_json::from_str(&exawatch(&["job", "101_3", "--url", &url])).unwrap();
    assert_eq!(shown["summary"]["running"], true);
    assert_eq!(shown["gpus"], 4);

    // It ends; a late running record does not bring it back; all of it survives a restart.
    let mut b_done = job.clone();
    b_done.as_object_mut().unwrap().remove("summary");
    b_done["state"] = "COMPLETED".into();
    b_done["end"] = (base + 1800).into();
    publish(&client, "exawatch/jobs/c1", b_done.to_string());
    wait_for(
        &server,
        "SELECT count(*) AS v FROM jobs WHERE state = 'COMPLETED'",
        2,
    );
    let mut late = b_done.clone();
    late["state"] = "RUNNING".into();
    publish(&client, "exawatch/jobs/c1", late.to_string());
    publish(
        &client,
        "exawatch/jobs/c1",
        json!({"id": "102", "state": "PENDING"}).to_string(),
    );
    wait_for(&server, "SELECT count(*) AS v FROM jobs", 3);
    let before = get(&server, "/api/v1/jobs", &[]);
    assert!(server.terminate().success());
    let server = Server::start(&data, &[]);
    let after = get(&server, "/api/v1/jobs", &[]);
    assert_eq!(after, before);
    let b_after = after
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == "101_3")
        .unwrap();
    assert_eq!(b_after["state"], "COMPLETED");
    assert_eq!(
        server.sql("SELECT count(*) AS v FROM jobs WHERE end_time IS NOT NULL")[0]["v"],
        2
    );
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    path.display().to_string()
}

#[test]
fn the_collector_publishes_sacct_and_squeue_and_a_restart_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("collectors/tests/fixtures/slurm");
    let args_log = dir.path().join("sacct.args");
    let sacct = script(
        dir.path(),
        "sacct",
        &format!(
            "echo \"$@\" >> '{}'\ncat '{}'\n",
            args_log.display(),
            fixtures.join("sacct.parsable2.txt").display()
        ),
    );
    let squeue = script(
        dir.path(),
        "squeue",
        &format!(
            "case \"$*\" in *%i\\|%u\\|%a*) cat '{}' ;; esac\n",
            fixtures.join("squeue.jobs.txt").display()
        ),
    );
    // A cursor left by an earlier run, before every job of the fixture ended.
    let cursor = dir.path().join("cursor");
    std::fs::write(&cursor, "1716470000\n").unwrap();
    let broker = format!("127.0.0.1:{}", server.mqtt);
    let collect = || {
        exawatch(&[
            "collect",
            "--once",
            "--broker",
            &broker,
            "--set",
            "collector.cluster=c1",
            "--set",
            "collector.slurm.job_records=true",
            "--set",
            &format!("collector.slurm.sacct={sacct}"),
            "--set",
            &format!("collector.slurm.squeue={squeue}"),
            "--set",
            "collector.slurm.scontrol=/nonexistent/scontrol",
            "--set",
            &format!("collector.slurm.cursor_file={}", cursor.display()),
        ])
    };
    collect();
    wait_for(&server, "SELECT count(*) AS v FROM jobs", 12);
    let first = get(&server, "/api/v1/jobs", &[("cluster", "c1")]);
    assert_eq!(first.as_array().unwrap().len(), 12);
    assert_eq!(std::fs::read_to_string(&cursor).unwrap(), "1716480130\n");
    let job = |jobs: &Value, id: &str| -> Value {
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .unwrap()
            .clone()
    };
    let het = job(&first, "4713+0");
    assert_eq!(het["nodes"], json!(["a1b3", "a1b4", "a2b3", "a2b4"]));
    assert_eq!(het["name"], "het|pipe");
    assert_eq!(
        job(&first, "4715")["name"],
        "\u{fffd}t\u{fffd}_\u{fffd}_run"
    );
    assert_eq!(job(&first, "4715")["state"], "OUT_OF_MEMORY");
    assert_eq!(job(&first, "4721_3")["state"], "RUNNING");
    assert_eq!(job(&first, "4712_2")["exit_signal"], 15);

    // A second run starts where the first stopped, less the overlap; what it publishes
    // again changes nothing (same rows, same `updated`).
    collect();
    let log = std::fs::read_to_string(&args_log).unwrap();
    assert!(log.contains("--starttime=2024-05-23T15:52:10"), "{log}");
    std::thread::sleep(Duration::from_millis(500));
    let second = get(&server, "/api/v1/jobs", &[("cluster", "c1")]);
    assert_eq!(second, first);
    let rows = server.sql("SELECT count(DISTINCT job_id) AS v FROM jobs");
    assert_eq!(rows[0]["v"], 12);
}

#[test]
fn the_simulator_runs_slurm_like_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--simulate", "64", "--set", "simulate.period_secs=0.5"],
    );
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let rows = server.sql(
            "SELECT count(*) AS jobs, max(node_count) AS widest, count(DISTINCT user) AS users
             FROM jobs WHERE cluster = 'sim'",
        );
        let (jobs, widest) = (
            rows[0]["jobs"].as_u64().unwrap(),
            rows[0]["widest"].as_u64(),
        );
        if jobs >= 3 && widest.is_some_and(|w| w > 1) {
            assert!(rows[0]["users"].as_u64().unwrap() >= 2, "{rows:?}");
            break;
        }
        assert!(Instant::now() < deadline, "simulated jobs so far: {rows:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let running = get(&server, "/api/v1/jobs", &[("state", "RUNNING")]);
    let first = &running[0];
    let node = first["nodes"][0].as_str().unwrap();
    assert!(node.starts_with("node0"), "{first}");
    assert!(["cpu", "gpu"].contains(&first["partition"].as_str().unwrap()));
    let summary = get(
        &server,
        &format!("/api/v1/jobs/{}", first["id"].as_str().unwrap()),
        &[],
    );
    assert_eq!(summary["summary"]["running"], true);
}
