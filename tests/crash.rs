//! SIGKILL at random moments while writes are acknowledged, flushes run every half second and
//! compaction merges files as soon as two exist: after every restart, every acknowledged
//! sample is there, exactly once.

mod support {
    pub mod server;
}

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::server::Server;

const ROUNDS: u64 = 6;
const BATCH: u64 = 200;

/// Writes batches of `BATCH` samples with unique values until `stop`; records what was
/// acknowledged.
fn writer(
    server_url: String,
    next: Arc<Mutex<u64>>,
    acked: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    while !stop.load(Ordering::Relaxed) {
        let first = {
            let mut next = next.lock().unwrap();
            let first = *next;
            *next += BATCH;
            first
        };
        let body: String = (first..first + BATCH)
            .map(|v| {
                format!(
                    "crash,node=n{} seq={v} {}\n",
                    v % 7,
                    1_700_000_000_000_000_000i64 + v as i64 * 1_000_000
                )
            })
            .collect();
        match agent
            .post(&format!("{server_url}/api/v2/write"))
            .send(&body)
        {
            Ok(response) if response.status() == 204 => {
                acked.lock().unwrap().extend(first..first + BATCH)
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return, // The server is gone.
        }
    }
}

#[test]
fn sigkill_during_ingest_flush_and_compaction_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let settings = [
        "--set",
        "store.flush_interval_secs=0.5",
        "--set",
        "store.compaction_min_files=2",
        "--set",
        "store.delete_delay_secs=0",
    ];
    let next = Arc::new(Mutex::new(0u64));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    for round in 0..ROUNDS {
        let server = Server::start(&data, &settings);
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (url, next, acked, stop) = (
                    server.url(""),
                    Arc::clone(&next),
                    Arc::clone(&acked),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || writer(url, next, acked, stop))
            })
            .collect();
        // xorshift: a kill between 0.3 and 2.3 s into the round.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(300 + seed % 2000));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.join().unwrap();
        }
        eprintln!(
            "round {round}: {} samples acknowledged so far",
            acked.lock().unwrap().len()
        );
    }

    let server = Server::start(&data, &settings);
    let acked: HashSet<u64> = acked.lock().unwrap().iter().copied().collect();
    assert!(
        acked.len() as u64 >= ROUNDS * BATCH,
        "the writers got through"
    );
    let counts = server.sql("SELECT count(*) AS n, count(DISTINCT value) AS d FROM samples");
    assert_eq!(counts[0]["n"], counts[0]["d"], "no sample stored twice");
    // Batches are BATCH consecutive values: an acknowledged batch must be there whole.
    let stored: HashMap<u64, u64> = server
        .sql(&format!(
            "SELECT floor(value / {BATCH}) AS b, count(*) AS n FROM samples GROUP BY b"
        ))
        .iter()
        .map(|row| {
            (
                row["b"].as_f64().unwrap() as u64,
                row["n"].as_u64().unwrap(),
            )
        })
        .collect();
    let batches: HashSet<u64> = acked.iter().map(|v| v / BATCH).collect();
    let lost: Vec<_> = batches
        .iter()
        .filter(|b| stored.get(b) != Some(&BATCH))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged batches lost or partial: {lost:?}"
    );
    assert!(
        server.metric("exawatch_flushes_total")
            + server.metric("exawatch_wal_replayed_samples_total")
            > 0.0
    );
}
