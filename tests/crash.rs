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
    let mut seed = exawatch_protocol::time::now_ns() as u64;
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

/// MQTT QoS 1 (issue 21): a PUBACK is sent only once the sample is in the write-ahead log, so
/// every sample acknowledged before a SIGKILL is there after the restart, exactly once.
#[test]
fn mqtt_qos1_acknowledged_samples_survive_sigkill() {
    use std::io::{BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    const MESSAGES: u16 = 30_000;
    let stream = std::net::TcpStream::connect(("127.0.0.1", server.mqtt)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer
        .write_all(&[
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 2, b'q', b'1',
        ])
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut connack = [0u8; 4];
    reader.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let reading = {
        let acked = Arc::clone(&acked);
        std::thread::spawn(move || {
            let mut puback = [0u8; 4];
            while reader.read_exact(&mut puback).is_ok() {
                assert_eq!(&puback[..2], &[0x40, 2], "PUBACK");
                acked
                    .lock()
                    .unwrap()
                    .push(u16::from_be_bytes([puback[2], puback[3]]));
            }
        })
    };
    // Publishes with packet identifier = sequence number = value, 100 in flight at most.
    for seq in 1..=MESSAGES {
        while usize::from(seq) > acked.lock().unwrap().len() + 100 {
            std::thread::sleep(Duration::from_micros(200));
        }
        let topic = format!("org/o/node/n{}/plugin/p/chnl/data/acked", seq % 7);
        let payload = format!(
            "{seq};{}.{:03}",
            1_700_000_000 + u32::from(seq) / 1000,
            seq % 1000
        );
        let mut packet = vec![0x32, (2 + topic.len() + 2 + payload.len()) as u8];
        packet.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        packet.extend_from_slice(topic.as_bytes());
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(payload.as_bytes());
        if writer.write_all(&packet).is_err() {
            break;
        }
        if seq == MESSAGES / 2 {
            server.signal("-KILL");
            break;
        }
    }
    reading.join().unwrap();
    drop(server);
    let acked: HashSet<u16> = acked.lock().unwrap().iter().copied().collect();
    assert!(
        acked.len() > 1000,
        "{} acknowledged before the kill",
        acked.len()
    );

    let server = Server::start(&data, &[]);
    let stored = server.sql("SELECT value FROM samples WHERE metric = 'acked'");
    let mut seen: HashMap<u16, usize> = HashMap::new();
    for row in stored {
        *seen
            .entry(row["value"].as_f64().unwrap() as u16)
            .or_default() += 1;
    }
    let missing: Vec<u16> = acked
        .iter()
        .filter(|v| !seen.contains_key(v))
        .copied()
        .collect();
    assert!(missing.is_empty(), "acknowledged, then lost: {missing:?}");
    assert!(seen.values().all(|&n| n == 1), "each sample once");
}
