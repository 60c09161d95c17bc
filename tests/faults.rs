//! Faults, each a test: the disk filling up under the store, and the object store going
//! away mid-run. In both, acknowledged writes are never lost, queries keep working, and
//! ingest resumes when the resource returns.

mod support {
    pub mod server;
}

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::server::{Server, free_port};

fn lines(from: u64, n: u64) -> String {
    (from..from + n)
        .map(|v| {
            format!(
                "fault,node=n{} v={v} {}\n",
                v % 3,
                1_700_000_000_000_000_000i64 + v as i64 * 1_000_000
            )
        })
        .collect()
}

/// A tmpfs of `size` mounted at `dir` for the test's life (the test runs as root, as CI does).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root (as in CI)");
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    path
}

#[test]
fn a_full_disk_refuses_writes_keeps_queries_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    let _tmpfs = Tmpfs::mount(&mount, "16m");
    let data = mount.join("data");
    let settings = ["--set", "store.flush_interval_secs=3600"];
    let server = Server::start(&data, &settings);
    assert_eq!(
        server
            .post("/api/v2/write", &[], lines(0, 1000).as_bytes())
            .0,
        204
    );

    let filler = fill(&mount);
    let mut refused = 0;
    let mut acked = 1000;
    for batch in 1..20u64 {
        let (status, body, retry) =
            server.post("/api/v2/write", &[], lines(batch * 1000, 1000).as_bytes());
        match status {
            204 => acked += 1000,
            503 => {
                assert!(body.contains("No space left"), "{body}");
                assert_eq!(retry.as_deref(), Some("1"));
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refused > 0, "the full disk refused writes");
    assert!(server.metric("exawatch_wal_write_errors_total") >= 1.0);
    assert_eq!(server.count(""), acked, "queries work on a full disk");

    std::fs::remove_file(filler).unwrap();
    assert_eq!(
        server
            .post("/api/v2/write", &[], lines(100_000, 1000).as_bytes())
            .0,
        204,
        "ingest resumes"
    );
    acked += 1000;
    server.kill();
    let server = Server::start(&data, &settings);
    assert_eq!(
        server.count(""),
        acked,
        "every acknowledged sample after a restart"
    );
    let counts = server.sql("SELECT count(DISTINCT value) AS d FROM samples");
    assert_eq!(counts[0]["d"], acked, "nothing twice");
}

/// A TCP forwarder to `target` that can refuse connections, to take a server "down".
struct Switch {
    port: u16,
    up: Arc<AtomicBool>,
}

impl Switch {
    fn new(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&up);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !flag.load(Ordering::SeqCst) {
                    continue; // Dropped: the connection is closed at once.
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c1, mut s1) = (client, server);
                std::thread::spawn(move || pipe(&mut c1, &mut s1));
                std::thread::spawn(move || pipe(&mut s2, &mut c2));
            }
        });
        Self { port, up }
    }
}

fn pipe(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[test]
fn an_object_store_outage_keeps_data_in_the_wal_and_catches_up() {
    let s3_port = free_port();
    let mut moto = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &s3_port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto_server (pip install 'moto[server]') is installed");
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    // Ready once it creates the bucket (a bare TCP connect can race with its start-up).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let created = agent
            .put(&format!("http://127.0.0.1:{s3_port}/bucket"))
            .send_empty();
        if created.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let switch = Switch::new(s3_port);

    let endpoint = format!("store.s3_endpoint=http://127.0.0.1:{}", switch.port);
    let settings = [
        "--set",
        "store.object_store_url=s3://bucket/x",
        "--set",
        &endpoint,
        "--set",
        "store.s3_allow_http=true",
        "--set",
        "store.s3_access_key_id=k",
        "--set",
        "store.s3_secret_access_key=s",
        "--set",
        "store.s3_retry_timeout_secs=1",
        "--set",
        "store.flush_interval_secs=0.5",
        "--set",
        "store.max_buffer_rows=500",
    ];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &settings);
    assert_eq!(
        server
            .post("/api/v2/write", &[], lines(0, 500).as_bytes())
            .0,
        204
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.metric("exawatch_flushes_total") < 1.0 {
        assert!(Instant::now() < deadline, "no flush to S3");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The object store goes away: writes are still acknowledged (WAL), queries still see
    // everything (files already cached are not needed: the new rows are in memory)…
    switch.up.store(false, Ordering::SeqCst);
    assert_eq!(
        server
            .post("/api/v2/write", &[], lines(500, 500).as_bytes())
            .0,
        204
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("exawatch_flush_errors_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "flushes did not fail while S3 was down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // (The time range keeps the query off the first file, which is in the unreachable S3.)
    assert_eq!(
        server.count("WHERE time >= to_timestamp_nanos(1700000000500000000)"),
        500
    );
    assert_eq!(
        server.metric("exawatch_buffered_rows"),
        500.0,
        "held in memory (and the WAL)"
    );
    // The buffer is full now (store.max_buffer_rows): a write waits for a flush that cannot
    // happen, and is refused with 503 and Retry-After, nothing of it stored.
    let (status, body, retry) = server.post("/api/v2/write", &[], lines(5000, 10).as_bytes());
    assert_eq!((status, retry.as_deref()), (503, Some("1")), "{body}");
    assert!(body.contains("max_buffer_rows"), "{body}");

    // It comes back: the retried flush catches up.
    switch.up.store(true, Ordering::SeqCst);
    assert_eq!(
        server
            .post("/api/v2/write", &[], lines(1000, 500).as_bytes())
            .0,
        204
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("exawatch_buffered_rows") > 0.0 {
        assert!(Instant::now() < deadline, "the buffer never drained to S3");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.count(""), 1500);
    server.kill();
    let server = Server::start(&data, &settings);
    assert_eq!(
        server.metric("exawatch_wal_replayed_samples_total"),
        0.0,
        "all of it is in S3"
    );
    assert_eq!(server.count(""), 1500);
    assert!(server.terminate().success());

    // A server that starts while the object store is down (here a replacement with a new data
    // directory, so its WAL segment ids are below the catalog's): it starts, keeps writes in
    // the WAL, refuses queries with 503 rather than answer without the stored history, keeps
    // them across a SIGKILL, and catches up once the store is back.
    switch.up.store(false, Ordering::SeqCst);
    let replacement = dir.path().join("replacement");
    let server = Server::start(&replacement, &settings);
    assert_eq!(server.metric("exawatch_history_loaded"), 0.0);
    assert_eq!(
        server
            .post("/api/v2/write", &[], lines(2000, 300).as_bytes())
            .0,
        204
    );
    let (status, body) = server.post_sql("SELECT count(*) FROM samples", "json");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unreachable"), "{body}");
    let (status, body) = server.get("/api/v1/query", &[("query", "fault")]);
    assert_eq!(
        (status, &body["errorType"]),
        (503, &json!("unavailable")),
        "{body}"
    );
    server.kill();
    let server = Server::start(&replacement, &settings);
    assert_eq!(
        server
            .post("/api/v2/write", &[], lines(2300, 200).as_bytes())
            .0,
        204
    );
    switch.up.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("exawatch_history_loaded") < 1.0 {
        assert!(Instant::now() < deadline, "the catalog was never read");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        server.count(""),
        2000,
        "the stored history and both runs' writes"
    );
    assert!(server.terminate().success());
    let server = Server::start(&replacement, &settings);
    assert_eq!(server.metric("exawatch_wal_replayed_samples_total"), 0.0);
    assert_eq!(server.count(""), 2000);
    assert_eq!(
        server.count("WHERE time >= to_timestamp_nanos(1700000002000000000)"),
        500,
        "each written once"
    );
    let _ = moto.kill();
    let _ = moto.wait();
}
