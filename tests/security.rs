//! Authentication and access control, end to end: API users with roles (bearer tokens and
//! basic auth), broker users with per-node publish/subscribe ACLs, exercised with real
//! clients (ureq, Debian's mosquitto_pub and mosquitto_sub).

mod support {
    pub mod server;
}

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use support::server::Server;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn api_users_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let users = r#"api.users=[{name="grafana", role="read", token="read-token"}, {name="telegraf", role="write", password="w-pass"}, {name="ops", role="admin", token="admin-token"}]"#;
    let server = Server::start(&dir.path().join("data"), &["--set", users]);
    let line = b"m,node=n1 v=1 1700000000000000000";

    // No credentials: 401 with a challenge, except /health.
    let (status, body, _) = server.post("/api/v1/sql", &[], b"SELECT 1");
    assert_eq!(status, 401, "{body}");
    let response = server
        .agent
        .post(&server.url("/api/v2/write"))
        .send(&line[..])
        .unwrap();
    assert_eq!(
        response.headers().get("www-authenticate").unwrap(),
        "Basic realm=\"exawatch\""
    );
    assert_eq!(
        server
            .agent
            .get(&server.url("/health"))
            .call()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        server
            .agent
            .get(&server.url("/metrics"))
            .call()
            .unwrap()
            .status(),
        401
    );
    let (status, _, _) = server.post(
        "/api/v1/sql",
        &[("Authorization", "Bearer wrong")],
        b"SELECT 1",
    );
    assert_eq!(status, 401);

    // read: queries yes, writes no.
    let reader = [("Authorization", "Bearer read-token")];
    assert_eq!(server.post("/api/v1/sql", &reader, b"SELECT 1").0, 200);
    let (status, body, _) = server.post("/api/v2/write", &reader, line);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("has the role read; this needs write"),
        "{body}"
    );
    let query = server
        .agent
        .get(&server.url("/api/v1/query?query=1%2B1&time=4"))
        .header("Authorization", "Bearer read-token")
        .call()
        .unwrap();
    assert_eq!(query.status(), 200);

    // write (basic auth, as Telegraf sends it): writes and queries.
    let writer = basic("telegraf", "w-pass");
    assert_eq!(
        server
            .post("/api/v2/write", &[("Authorization", &writer)], line)
            .0,
        204
    );
    assert_eq!(
        server
            .post(
                "/api/v2/write",
                &[("Authorization", &basic("telegraf", "nope"))],
                line
            )
            .0,
        401
    );
    let (status, body, _) = server.post(
        "/api/v1/sql",
        &[("Authorization", "Bearer admin-token")],
        b"SELECT count(*) AS n FROM samples",
    );
    assert_eq!((status, body.as_str()), (200, r#"[{"n":1}]"#));

    let metrics = server
        .agent
        .get(&server.url("/metrics"))
        .header("Authorization", "Bearer admin-token")
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("exawatch_http_auth_refused_total{reason=\"role\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("exawatch_http_auth_refused_total{reason=\"bad_credentials\"} 2"),
        "{metrics}"
    );
}

fn mosquitto(
    program: &str,
    port: u16,
    login: Option<(&str, &str)>,
    args: &[&str],
) -> std::process::Output {
    let mut command = Command::new(program);
    command.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"]);
    if let Some((user, password)) = login {
        command.args(["-u", user, "-P", password]);
    }
    command
        .args(args)
        .output()
        .expect("mosquitto-clients (Debian) is installed")
}

fn wait_for(server: &Server, metric: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric(metric) < value {
        assert!(Instant::now() < deadline, "{metric} never reached {value}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn broker_logins_and_per_node_acls() {
    let dir = tempfile::tempdir().unwrap();
    let users = r#"broker.users=[{name="n01", password="n01-secret", node="n01"}, {name="bridge", password="b-secret"}]"#;
    let server = Server::start(
        &dir.path().join("data"),
        &["--set", users, "--simulate", "2"],
    );
    let own = "org/o/cluster/c/node/n01/plugin/p/chnl/data/temp";

    // Anonymous and wrong passwords are refused.
    let anonymous = mosquitto(
        "mosquitto_pub",
        server.mqtt,
        None,
        &["-t", own, "-m", "1;1700000000"],
    );
    assert!(!anonymous.status.success(), "{anonymous:?}");
    let wrong = mosquitto(
        "mosquitto_pub",
        server.mqtt,
        Some(("n01", "guess")),
        &["-t", own, "-m", "2;1700000000"],
    );
    assert!(!wrong.status.success(), "{wrong:?}");

    // A node publishes under its own subtree…
    let ok = mosquitto(
        "mosquitto_pub",
        server.mqtt,
        Some(("n01", "n01-secret")),
        &["-t", own, "-m", "3;1700000000"],
    );
    assert!(ok.status.success(), "{ok:?}");
    server.wait_for_count("WHERE node = 'n01'", 1);
    // …not under another node's: the connection is closed and nothing is stored.
    let other = "org/o/cluster/c/node/n02/plugin/p/chnl/data/temp";
    let _ = mosquitto(
        "mosquitto_pub",
        server.mqtt,
        Some(("n01", "n01-secret")),
        &["-t", other, "-m", "4;1700000000"],
    );
    wait_for(
        &server,
        "exawatch_broker_acl_denied_total{action=\"publish\"}",
        1.0,
    );
    // It may subscribe to its own command topics, not to everything.
    let cmd = "org/o/cluster/c/node/n01/plugin/+/chnl/cmd";
    let _ = mosquitto(
        "mosquitto_sub",
        server.mqtt,
        Some(("n01", "n01-secret")),
        &["-t", cmd, "-C", "1", "-W", "1"],
    );
    let _ = mosquitto(
        "mosquitto_sub",
        server.mqtt,
        Some(("n01", "n01-secret")),
        &["-t", "#", "-C", "1", "-W", "1"],
    );
    wait_for(
        &server,
        "exawatch_broker_acl_denied_total{action=\"subscribe\"}",
        1.0,
    );
    assert_eq!(
        server.metric("exawatch_broker_acl_denied_total{action=\"subscribe\"}"),
        1.0,
        "own command topics are allowed"
    );
    // An unrestricted user publishes anywhere.
    let bridge = mosquitto(
        "mosquitto_pub",
        server.mqtt,
        Some(("bridge", "b-secret")),
        &["-t", other, "-m", "5;1700000000"],
    );
    assert!(bridge.status.success(), "{bridge:?}");
    server.wait_for_count("WHERE node = 'n02'", 1);

    assert_eq!(
        server.count("WHERE node IN ('n01', 'n02') AND value IN (1, 2, 4)"),
        0
    );
    // The server's own simulator still gets in, with its internal login.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.count("WHERE node = 'node001'") == 0 {
        assert!(
            Instant::now() < deadline,
            "the simulator's samples never arrived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sql_is_read_only_sandboxed_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--set",
            "api.query_timeout_secs=2",
            "--set",
            "api.query_memory_bytes=20000000",
            "--set",
            "api.max_result_rows=1000",
        ],
    );
    assert_eq!(
        server
            .post("/api/v2/write", &[], b"m,node=n1 v=1 1700000000000000000")
            .0,
        204
    );
    let escapes = [
        "CREATE TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT * FROM samples",
        "CREATE EXTERNAL TABLE e STORED AS PARQUET LOCATION '/'",
        "CREATE FUNCTION f(a INT) RETURNS INT RETURN a",
        "DROP TABLE samples",
        "INSERT INTO samples (metric) VALUES ('x')",
        "UPDATE samples SET value = 0",
        "DELETE FROM samples",
        "COPY (SELECT 1) TO '/tmp/exawatch-escape.parquet'",
        "COPY samples TO '/tmp/exawatch-escape.csv' STORED AS CSV",
        "SET datafusion.execution.target_partitions = 1000",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/passwd'",
        "SELECT * FROM 'https://example.com/data.parquet'",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "PREPARE p AS SELECT 1",
        "SELECT 1; DROP TABLE samples",
    ];
    for query in escapes {
        let (status, body) = server.post_sql(query, "json");
        assert!(status == 400 || status == 403, "{query}: {status} {body}");
        assert!(body.contains("\"error\""), "{query}: {body}");
    }
    assert!(!std::path::Path::new("/tmp/exawatch-escape.parquet").exists());
    assert!(!std::path::Path::new("/tmp/exawatch-escape.csv").exists());
    assert_eq!(server.count(""), 1, "nothing changed");

    // Limits: rows, memory, time — each a clear error, and the server carries on.
    let (status, body) = server.post_sql("SELECT * FROM generate_series(1, 5000)", "json");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("max_result_rows"), "{body}");
    let (status, body) = server.post_sql(
        "SELECT x % 100000 AS k, array_agg(x) FROM generate_series(1, 20000000) t(x) GROUP BY k",
        "json",
    );
    assert!(status == 422 || status == 503, "{status} {body}");
    let (status, body) = server.post_sql(
        "SELECT count(*) FROM generate_series(1, 10000000000) a(x) WHERE x % 7 = 3",
        "json",
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("query_timeout_secs"), "{body}");
    assert_eq!(server.count(""), 1, "the server carries on");
}

/// Runs curl; returns its exit status and output.
fn curl(args: &[&str]) -> (bool, String) {
    let output = Command::new("curl")
        .args(["-s", "-S", "--max-time", "5"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn https_and_mqtt_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let openssl = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(openssl.status.success(), "{openssl:?}");
    let (http, mqtt, mqtts) = (
        support::server::free_port(),
        support::server::free_port(),
        support::server::free_port(),
    );
    let mut child = Command::new(support::server::EXAWATCH)
        .args(["up", "--no-collector", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--http-port",
            &http.to_string(),
            "--mqtt-port",
            &mqtt.to_string(),
        ])
        .args([
            "--set",
            &format!("api.tls_cert={}", cert.display()),
            "--set",
            &format!("api.tls_key={}", key.display()),
        ])
        .args(["--set", &format!("broker.tls_listen=127.0.0.1:{mqtts}")])
        .args([
            "--set",
            &format!("broker.tls_cert={}", cert.display()),
            "--set",
            &format!("broker.tls_key={}", key.display()),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let health = format!("https://127.0.0.1:{http}/health");
    let cacert = cert.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !curl(&["--cacert", cacert, &health]).0 {
        assert!(Instant::now() < deadline, "no HTTPS /health");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !curl(&[&format!("http://127.0.0.1:{http}/health")]).0,
        "plain HTTP is not served"
    );
    assert!(
        !curl(&[&health]).0,
        "an unknown certificate is refused by the client"
    );

    let published = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &mqtts.to_string(),
            "--cafile",
            cacert,
            "-q",
            "1",
        ])
        .args(["-t", "org/o/node/tls01/m", "-m", "7;1700000000"])
        .output()
        .unwrap();
    assert!(published.status.success(), "{published:?}");
    let query = format!("https://127.0.0.1:{http}/api/v1/sql");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, body) = curl(&[
            "--cacert",
            cacert,
            &query,
            "-d",
            "SELECT value FROM samples WHERE node = 'tls01'",
        ]);
        if ok && body == r#"[{"value":7.0}]"# {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sample published over TLS never arrived: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}
