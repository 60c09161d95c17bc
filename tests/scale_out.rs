//! Several `exawatch` processes over one object store (a shared directory): Debian's
//! mosquitto as the front broker, two ingesters (`--role ingest`) each taking a share of its
//! stream with an MQTT 5 shared subscription at QoS 1, and a querier (`--role query`) started
//! afterwards with no local state, answering from the ingesters' files and what they hold in
//! memory.

mod support {
    pub mod server;
}

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::server::{Server, free_port};

/// Nodes × metrics × time points published.
const NODES: usize = 8;
const METRICS: usize = 5;

/// Debian's mosquitto on a free loopback port: no limit on queued messages, so that what a
/// stopped ingester's session holds is kept for it.
struct Mosquitto {
    child: Child,
    port: u16,
}

impl Mosquitto {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n\
                 max_inflight_messages 0\npersistence false\n"
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package `mosquitto`; `cargo xtask test` installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where every process keeps its files: `file://` URL of `dir`.
fn objects_url(dir: &Path) -> String {
    format!("store.object_store_url=file://{}", dir.display())
}

/// Ingester `name` flushing every second.
fn ingester(dir: &Path, objects: &Path, name: &str, front: u16) -> Server {
    ingester_flushing(dir, objects, name, front, 1)
}

fn ingester_flushing(
    dir: &Path,
    objects: &Path,
    name: &str,
    front: u16,
    flush_secs: u32,
) -> Server {
    Server::start(
        &dir.join(name),
        &[
            "--role",
            "ingest",
            "--set",
            &objects_url(objects),
            "--set",
            &format!("store.ingester={name}"),
            "--set",
            &format!("store.flush_interval_secs={flush_secs}"),
            "--set",
            &format!("upstream.broker=127.0.0.1:{front}"),
            "--set",
            &format!("upstream.client_id=exawatch-{name}"),
        ],
    )
}

fn querier(dir: &Path, objects: &Path) -> Server {
    Server::start(
        &dir.join("querier"),
        &["--role", "query", "--set", &objects_url(objects)],
    )
}

/// The EXAMON messages of `points` time points (one per second, ending a minute ago):
/// topic, payload.
fn messages(points: usize) -> Vec<(String, String)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as usize;
    let first = now - 60 - points;
    let mut out = Vec::new();
    for t in 0..points {
        for node in 0..NODES {
            for metric in 0..METRICS {
                out.push((
                    format!("org/o/node/n{node:02}/plugin/p/chnl/data/m{metric}"),
                    format!("{};{}", (t * 7 + node * 3 + metric) % 101, first + t),
                ));
            }
        }
    }
    out
}

/// Publishes `messages` at QoS 1 to `port` from a thread; the returned counter holds how
/// many the broker has acknowledged.
fn publish_all(port: u16, messages: Vec<(String, String)>) -> Arc<AtomicU64> {
    let mut options = rumqttc::MqttOptions::new("publisher", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut connection) = rumqttc::Client::new(options, 100);
    let acked = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&acked);
    std::thread::spawn(move || {
        for event in connection.iter() {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = event {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    std::thread::spawn(move || {
        for (topic, payload) in messages {
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .unwrap();
        }
    });
    acked
}

fn wait_until(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {seconds} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const PER_SERIES: &str = "SELECT node, metric, count(*) AS n, sum(value) AS total, min(time) AS first, \
     max(time) AS last FROM samples GROUP BY node, metric ORDER BY node, metric";

/// `query_range` over the last `minutes`, its `data` member.
fn promql(server: &Server, query: &str, minutes: u64) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, body) = server.get(
        "/api/v1/query_range",
        &[
            ("query", query),
            ("start", &(now - minutes * 60).to_string()),
            ("end", &now.to_string()),
            ("step", "15"),
        ],
    );
    assert_eq!(status, 200, "{query}: {body}");
    body["data"].clone()
}

#[test]
fn ingesters_share_the_stream_and_a_querier_answers_as_one_process_would() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let front = Mosquitto::start(dir.path());
    let a = ingester(dir.path(), &objects, "a", front.port);
    let b = ingester(dir.path(), &objects, "b", front.port);
    // The same data, stored by one process.
    let single = Server::start(
        &dir.path().join("single"),
        &["--set", "store.flush_interval_secs=1"],
    );
    let points = 100;
    let data = messages(points);
    let total = data.len() as u64;
    // The ingesters' subscriptions are made once they are up (CONNACK, then SUBSCRIBE).
    std::thread::sleep(Duration::from_secs(1));
    let to_front = publish_all(front.port, data.clone());
    let to_single = publish_all(single.mqtt, data);
    wait_until("mosquitto acknowledged every message", 60, || {
        to_front.load(Ordering::Relaxed) == total
    });
    wait_until("the ingesters stored every message", 60, || {
        a.count("") + b.count("") == total
    });
    let (from_a, from_b) = (a.count(""), b.count(""));
    eprintln!("ingester a took {from_a}, b {from_b} of {total}");
    assert!(
        from_a > 0 && from_b > 0,
        "each ingester takes a share: {from_a} and {from_b}"
    );
    wait_until("the single process stored every message", 60, || {
        to_single.load(Ordering::Relaxed) == total && single.count("") == total
    });

    // Files under each ingester's own prefix.
    for name in ["a", "b"] {
        let catalog = objects.join("ingesters").join(name).join("catalog.json");
        wait_until(&format!("{} written", catalog.display()), 30, || {
            std::fs::read_to_string(&catalog).is_ok_and(|text| {
                let catalog: Value = serde_json::from_str(&text).unwrap();
                let rows: u64 = catalog["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["rows"].as_u64().unwrap())
                    .sum();
                rows == if name == "a" { from_a } else { from_b }
            })
        });
    }

    wait_until("the single process flushed everything", 30, || {
        single.sql("SELECT sum(count) AS n FROM samples_1m")[0]["n"].as_u64() == Some(total)
    });

    // A querier started now, with nothing of its own, answers as the single process.
    let q = querier(dir.path(), &objects);
    assert_eq!(q.count(""), total);
    assert_eq!(q.sql(PER_SERIES), single.sql(PER_SERIES));
    // The 1-minute rollups: each ingester holds part of every bucket; the view combines them.
    let rollup = "SELECT node, metric, time, min, max, sum, count, avg FROM samples_1m \
                  ORDER BY node, metric, time";
    assert_eq!(q.sql(rollup), single.sql(rollup));
    for query in [
        "sum by (node) (m0)",
        "max_over_time(m3{node=\"n05\"}[1m])",
        "count(m1)",
    ] {
        assert_eq!(
            promql(&q, query, 5),
            promql(&single, query, 5),
            "PromQL {query}"
        );
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let kairosdb = serde_json::json!({
        "start_absolute": now_ms - 600_000,
        "end_absolute": now_ms,
        "metrics": [{
            "name": "m2",
            "tags": {"node": ["n01", "n06"]},
            "group_by": [{"name": "tag", "tags": ["node"]}],
            "aggregators": [{"name": "avg", "sampling": {"value": 30, "unit": "seconds"}}]
        }]
    })
    .to_string();
    let answer = |server: &Server| {
        let (status, body, _) = server.post(
            "/api/v1/datapoints/query",
            &[("Content-Type", "application/json")],
            kairosdb.as_bytes(),
        );
        assert_eq!(status, 200, "{body}");
        body
    };
    assert_eq!(answer(&q), answer(&single), "KairosDB");
    // Writes go to ingesters: the querier stores nothing.
    let (status, body, _) = q.post(
        "/write",
        &[("Content-Type", "text/plain")],
        b"m,node=x value=1",
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("send writes to an ingester"), "{body}");
}

#[test]
fn an_ingester_killed_mid_stream_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let front = Mosquitto::start(dir.path());
    let a = ingester(dir.path(), &objects, "a", front.port);
    let b = ingester(dir.path(), &objects, "b", front.port);
    std::thread::sleep(Duration::from_secs(1));
    let data = messages(500);
    let total = data.len() as u64;
    let acked = publish_all(front.port, data);
    wait_until("a third acknowledged", 60, || {
        acked.load(Ordering::Relaxed) >= total / 3
    });
    let at_kill = acked.load(Ordering::Relaxed);
    a.kill();
    assert!(at_kill < total, "killed mid-stream");
    std::thread::sleep(Duration::from_millis(500));
    let a = ingester(dir.path(), &objects, "a", front.port);
    wait_until("mosquitto acknowledged every message", 120, || {
        acked.load(Ordering::Relaxed) == total
    });
    let q = querier(dir.path(), &objects);
    wait_until("every sample answered by the querier", 60, || {
        q.count("") >= total
    });
    let distinct = q
        .sql("SELECT count(*) AS n FROM (SELECT DISTINCT node, metric, time FROM samples)")[0]["n"]
        .as_u64()
        .unwrap();
    assert_eq!(distinct, total, "every acknowledged sample");
    // What the front broker sent again (stored, but its PUBACK lost in the kill) is in the
    // restarted ingester's memory twice until its next flush keeps one of each.
    wait_until("each exactly once", 30, || q.count("") == total);
    eprintln!(
        "killed at {at_kill} of {total} acknowledged; ingester a holds {}, b {}",
        a.count(""),
        b.count("")
    );
}

#[test]
fn a_querier_answers_with_what_ingesters_hold_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let front = Mosquitto::start(dir.path());
    // Nothing is flushed during the test: every answer comes from the ingesters' memory.
    let a = ingester_flushing(dir.path(), &objects, "a", front.port, 3600);
    let b = ingester_flushing(dir.path(), &objects, "b", front.port, 3600);
    let q = querier(dir.path(), &objects);
    std::thread::sleep(Duration::from_secs(1));
    let data = messages(100);
    let total = data.len() as u64;
    let acked = publish_all(front.port, data);
    wait_until("mosquitto acknowledged every message", 60, || {
        acked.load(Ordering::Relaxed) == total
    });
    wait_until("the querier answers every sample", 30, || {
        q.count("") == total
    });
    let distinct = "SELECT count(*) AS n FROM (SELECT DISTINCT node, metric, time FROM samples)";
    assert_eq!(q.sql(distinct)[0]["n"].as_u64(), Some(total));
    for name in ["a", "b"] {
        let catalog = objects.join("ingesters").join(name).join("catalog.json");
        assert!(!catalog.exists(), "{name} flushed nothing");
    }
    let from_b = b.count("");
    assert!(from_b > 0 && from_b < total, "b holds a share: {from_b}");
    // PromQL answers from the same rows.
    let sum = promql(&q, "count(m0)", 5);
    let counts: Vec<u64> = sum["result"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[1].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(counts.contains(&(NODES as u64)), "every node's m0: {sum}");

    // An ingester killed: the querier answers from the others; restarted, its WAL is back.
    a.kill();
    wait_until("the querier answers without a", 30, || {
        q.count("") == from_b
    });
    let a = ingester_flushing(dir.path(), &objects, "a", front.port, 3600);
    wait_until("the querier answers with a's replayed WAL", 30, || {
        q.count("") == total
    });
    assert_eq!(a.count("") + from_b, total);
}
