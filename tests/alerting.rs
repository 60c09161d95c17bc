//! Alerting and recording rules end to end (issue 25): `exawatch up` with a rule file and
//! Debian's `prometheus-alertmanager` on loopback ports. Samples written over HTTP make an
//! alert go pending, then firing; Alertmanager's own API shows it with its labels and
//! annotations; the recorded series and `ALERTS` are queryable; the alert resolves and
//! Alertmanager drops it long before its `endsAt` would have lapsed (the resolved
//! notification arrived). A second, unreachable Alertmanager is counted in `/metrics`.
//! Reloads: a bad file is refused (at start with the file and line; on `POST /-/reload`
//! with 400, the running rules staying), a good one is picked up on SIGHUP.

mod support {
    pub mod server;
}

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::server::{EXAWATCH, Server, agent, free_port};

const RULES: &str = r#"groups:
  - name: e2e
    interval: 1s
    rules:
      - record: node:load:doubled
        expr: load_value * 2
      - alert: HighLoad
        expr: load_value > 10
        for: 2s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.node }} load {{ $value }}"
"#;

const ALERTMANAGER_CONFIG: &str =
    "route:\n  receiver: 'null'\n  group_wait: 1s\nreceivers:\n  - name: 'null'\n";

fn alertmanager(dir: &Path) -> Server {
    let port = free_port();
    std::fs::write(dir.join("alertmanager.yml"), ALERTMANAGER_CONFIG).unwrap();
    let mut command = Command::new("prometheus-alertmanager");
    command
        .arg(format!(
            "--config.file={}",
            dir.join("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=");
    Server::spawn(command, port, dir.join("alertmanager.log"), "/-/ready")
}

/// Polls `check` every 200 ms until it gives a value, for at most `secs`.
fn wait_for<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn alertmanager_alerts(am: &Server) -> Vec<Value> {
    let (status, body) = am.get("/api/v2/alerts", &[]);
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

fn firing_alerts(server: &Server) -> Vec<Value> {
    let (status, body) = server.get("/api/v1/alerts", &[]);
    assert_eq!(status, 200, "{body}");
    body["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .cloned()
        .collect()
}

#[test]
fn an_alert_fires_reaches_alertmanager_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let am = alertmanager(dir.path());
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let files = format!("rules.files=[{:?}]", rules.display().to_string());
    let urls = format!(
        "alertmanager.urls=[\"http://127.0.0.1:{}\", {unreachable:?}]",
        am.http
    );
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--set",
            &files,
            "--set",
            &urls,
            // A firing alert is sent once a minute: its endsAt is 4 minutes ahead, so
            // Alertmanager drops it within the test only if the resolved alert arrives.
            "--set",
            "alertmanager.resend_delay_secs=60",
            "--set",
            "alertmanager.max_attempts=2",
        ],
    );

    // A writer: node n01's load every 200 ms (high until told otherwise).
    let load = Arc::new(AtomicU64::new(20));
    let writer = {
        let (load, url) = (Arc::clone(&load), server.url("/api/v2/write"));
        std::thread::spawn(move || {
            let agent = agent();
            while load.load(Ordering::Relaxed) > 0 {
                let ns = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                let line = format!("load,node=n01 value={} {ns}", load.load(Ordering::Relaxed));
                let _ = agent.post(&url).send(line.as_str());
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // Pending first (for: 2s), then firing.
    let pending = wait_for(30, "a pending alert", || {
        let (_, body) = server.get("/api/v1/alerts", &[]);
        body["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["state"] == "pending")
            .cloned()
    });
    assert_eq!(pending["labels"]["alertname"], "HighLoad", "{pending}");
    let firing = wait_for(30, "a firing alert", || firing_alerts(&server).pop());
    assert_eq!(firing["labels"]["node"], "n01", "{firing}");
    assert_eq!(firing["labels"]["severity"], "page", "{firing}");
    assert_eq!(firing["annotations"]["summary"], "n01 load 20", "{firing}");
    assert_eq!(firing["value"], "2e+01", "{firing}");

    // Alertmanager has it, with its labels and annotations.
    let received = wait_for(30, "the alert in Alertmanager", || {
        alertmanager_alerts(&am)
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "HighLoad")
    });
    assert_eq!(received["labels"]["node"], "n01", "{received}");
    assert_eq!(received["labels"]["severity"], "page", "{received}");
    assert_eq!(
        received["annotations"]["summary"], "n01 load 20",
        "{received}"
    );
    assert_eq!(received["status"]["state"], "active", "{received}");

    // The rules API, as Prometheus answers it.
    let (status, body) = server.get("/api/v1/rules", &[]);
    assert_eq!(status, 200, "{body}");
    let group = &body["data"]["groups"][0];
    assert_eq!(group["name"], "e2e", "{body}");
    assert_eq!(group["interval"], 1.0, "{body}");
    let (record, alert) = (&group["rules"][0], &group["rules"][1]);
    assert_eq!(record["type"], "recording", "{body}");
    assert_eq!(record["health"], "ok", "{body}");
    assert_eq!(alert["type"], "alerting", "{body}");
    assert_eq!(alert["state"], "firing", "{body}");
    assert_eq!(alert["duration"], 2.0, "{body}");
    assert_eq!(alert["alerts"][0]["labels"]["node"], "n01", "{body}");
    let (_, only_records) = server.get("/api/v1/rules", &[("type", "record")]);
    assert_eq!(
        only_records["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{only_records}"
    );

    // What the rules wrote is in the store, as ordinary series.
    let (_, doubled) = server.get("/api/v1/query", &[("query", "node:load:doubled")]);
    assert_eq!(doubled["data"]["result"][0]["value"][1], "40", "{doubled}");
    let (_, alerts) = server.get(
        "/api/v1/query",
        &[(
            "query",
            "ALERTS{alertname=\"HighLoad\", alertstate=\"firing\"}",
        )],
    );
    assert_eq!(
        alerts["data"]["result"][0]["metric"]["node"], "n01",
        "{alerts}"
    );

    // The unreachable Alertmanager is counted, the reachable one too.
    let metrics = wait_for(30, "notification errors counted", || {
        let metrics = server.metrics();
        metrics
            .contains(&format!(
                "exawatch_notifications_errors_total{{alertmanager=\"{unreachable}\"}}"
            ))
            .then_some(metrics)
    });
    assert!(
        metrics.contains("exawatch_notifications_sent_total{alertmanager=\"http://127.0.0.1:"),
        "{metrics}"
    );

    // Low load: the alert resolves, and Alertmanager drops it (resolved notification).
    load.store(1, Ordering::Relaxed);
    wait_for(30, "the alert to resolve", || {
        firing_alerts(&server).is_empty().then_some(())
    });
    wait_for(30, "Alertmanager to drop the resolved alert", || {
        alertmanager_alerts(&am)
            .iter()
            .all(|a| a["labels"]["alertname"] != "HighLoad")
            .then_some(())
    });
    load.store(0, Ordering::Relaxed);
    writer.join().unwrap();

    // A bad file on reload is refused with its line; the running rules stay.
    std::fs::write(&rules, RULES.replace("load_value > 10", "load_value >")).unwrap();
    let (status, body, _) = server.post("/-/reload", &[], b"");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("rules.yml")
            && body.contains("line 8")
            && body.contains("could not parse expression"),
        "{body}"
    );
    let (_, body) = server.get("/api/v1/rules", &[]);
    assert_eq!(
        body["data"]["groups"][0]["rules"].as_array().unwrap().len(),
        2
    );

    // A good file is picked up on SIGHUP.
    std::fs::write(
        &rules,
        format!("{RULES}      - record: node:load:tripled\n        expr: load_value * 3\n"),
    )
    .unwrap();
    let killed = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for(30, "the reloaded rules", || {
        let (_, body) = server.get("/api/v1/rules", &[]);
        (body["data"]["groups"][0]["rules"].as_array().unwrap().len() == 3).then_some(())
    });
}

#[test]
fn a_bad_rule_file_stops_the_start_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.yml");
    std::fs::write(&rules, RULES.replace("for: 2s", "for: 2 seconds")).unwrap();
    let output = Command::new(EXAWATCH)
        .args(["up", "--no-collector", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--set",
            "api.listen=127.0.0.1:0",
            "--set",
            "broker.listen=127.0.0.1:0",
            "--set",
            &format!("rules.files=[{:?}]", rules.display().to_string()),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.yml")
            && stderr.contains("line 9")
            && stderr.contains("not a valid duration"),
        "{stderr}"
    );
}
