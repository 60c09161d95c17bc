//! The store on a real S3-compatible server (moto's server mode, from PyPI: `moto[server]`),
//! started by the test on loopback: flush, restart, read back, stats.

mod support {
    pub mod server;
}

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::server::{EXAWATCH, Server, free_port};

struct S3Server(Child);

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_s3(port: u16) -> S3Server {
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server (pip install 'moto[server]') is installed");
    let server = S3Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

#[test]
fn parquet_files_and_catalog_round_trip_through_s3() {
    let port = free_port();
    let _s3 = start_s3(port);
    let endpoint = format!("http://127.0.0.1:{port}");
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let created = agent
        .put(&format!("{endpoint}/telemetry"))
        .send_empty()
        .unwrap();
    assert_eq!(created.status(), 200);

    let settings = [
        "store.object_store_url=s3://telemetry/site-a".to_owned(),
        format!("store.s3_endpoint={endpoint}"),
        "store.s3_allow_http=true".to_owned(),
        "store.s3_access_key_id=test".to_owned(),
        "store.s3_secret_access_key=test".to_owned(),
    ];
    let mut args: Vec<&str> = Vec::new();
    for setting in &settings {
        args.extend(["--set", setting.as_str()]);
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &args);
    let lines: String = (0..500)
        .map(|i| {
            format!(
                "power,node=n{} watts={i} {}\n",
                i % 5,
                1_700_000_000_000_000_000i64 + i * 1_000_000_000
            )
        })
        .collect();
    assert_eq!(server.post("/api/v2/write", &[], lines.as_bytes()).0, 204);
    assert!(server.terminate().success());

    // The files and the catalog are in the bucket, under the prefix; nothing local but the WAL.
    let listing = agent
        .get(&format!("{endpoint}/telemetry?list-type=2&prefix=site-a/"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(listing.contains("site-a/catalog.json"), "{listing}");
    assert!(
        listing.contains("site-a/files/00000000000000000001.parquet"),
        "{listing}"
    );
    assert!(!data.join("store").exists());

    let server = Server::start(&data, &args);
    let rows = server
        .sql("SELECT count(*) AS n, sum(value) AS s, count(DISTINCT node) AS nodes FROM samples");
    assert_eq!(rows[0], json!({"n": 500, "s": 124750.0, "nodes": 5}));
    drop(server);

    let mut stats = Command::new(EXAWATCH);
    stats
        .args(["store", "stats", "--format", "json", "--data-dir"])
        .arg(&data);
    for setting in &settings {
        stats.args(["--set", setting]);
    }
    let output = stats.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stats["total"]["rows"], 500);
    assert_eq!(stats["total"]["series"], 5);
}
