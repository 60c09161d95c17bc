//! The embedded broker with real MQTT clients (rumqttc, 3.1.1 and 5) and raw sockets on
//! loopback, over an ingest that records what it is given and can be held shut, as a store
//! that has fallen behind.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use exawatch_broker::{BrokerConfig, EmbeddedBroker, Ingest, IngestConnection, IngestError};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// Messages as (topic, payload).
type Stored = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

/// Records every committed message; commits wait while the gate is shut.
#[derive(Clone)]
struct Recorder {
    stored: Stored,
    open: watch::Receiver<bool>,
}

struct RecorderConnection {
    recorder: Recorder,
    pending: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Ingest for Recorder {
    fn connection(&self) -> Box<dyn IngestConnection> {
        Box::new(RecorderConnection {
            recorder: self.clone(),
            pending: Vec::new(),
        })
    }
}

impl IngestConnection for RecorderConnection {
    fn push(&mut self, topic: &[u8], payload: &[u8]) {
        self.pending.push((topic.to_vec(), payload.to_vec()));
    }

    fn commit(&mut self, _durable: bool) -> BoxFuture<'static, Result<(), IngestError>> {
        let batch = std::mem::take(&mut self.pending);
        let stored = Arc::clone(&self.recorder.stored);
        let mut open = self.recorder.open.clone();
        Box::pin(async move {
            let _ = open.wait_for(|open| *open).await;
            stored.lock().extend(batch);
            Ok(())
        })
    }
}

struct Harness {
    broker: EmbeddedBroker,
    stored: Stored,
    gate: watch::Sender<bool>,
    registry: Registry,
}

impl Harness {
    async fn start(config: BrokerConfig) -> Self {
        let (gate, open) = watch::channel(true);
        let stored = Arc::default();
        let recorder = Recorder {
            stored: Arc::clone(&stored),
            open,
        };
        let mut registry = Registry::default();
        let broker = EmbeddedBroker::start(
            &BrokerConfig {
                listen: "127.0.0.1:0".into(),
                ..config
            },
            None,
            Arc::new(recorder),
            &mut registry,
        )
        .await
        .unwrap();
        Self {
            broker,
            stored,
            gate,
            registry,
        }
    }

    fn port(&self) -> u16 {
        self.broker.listen().port()
    }

    async fn wait_stored(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.stored.lock().len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} stored",
                self.stored.lock().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// A CONNECT packet (MQTT 3.1.1, clean session) with the given keep-alive.
fn connect_packet(client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// A PUBLISH packet (MQTT 3.1.1).
fn publish_packet(topic: &str, payload: &[u8], qos: u8, pkid: u16) -> Vec<u8> {
    let id_len = if qos > 0 { 2 } else { 0 };
    let remaining = 2 + topic.len() + id_len + payload.len();
    assert!(remaining < 128 * 128);
    let mut packet = vec![0x30 | (qos << 1)];
    if remaining < 128 {
        packet.push(remaining as u8);
    } else {
        packet.extend_from_slice(&[(remaining % 128) as u8 | 0x80, (remaining / 128) as u8]);
    }
    packet.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    packet.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        packet.extend_from_slice(&pkid.to_be_bytes());
    }
    packet.extend_from_slice(payload);
    packet
}

/// Connects with a raw socket and reads the CONNACK.
fn raw_client(port: u16, client_id: &str, keep_alive: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(&connect_packet(client_id, keep_alive))
        .unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK, accepted");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_and_v5_clients_share_one_port() {
    let harness = Harness::start(BrokerConfig::default()).await;
    let port = harness.port();

    let mut options = rumqttc::MqttOptions::new("v4-client", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    for i in 0..10 {
        client
            .publish(
                format!("node/n1/m{i}"),
                rumqttc::QoS::AtLeastOnce,
                false,
                format!("{i};1"),
            )
            .await
            .unwrap();
    }
    harness.wait_stored(10).await;
    assert_eq!(
        harness.stored.lock()[3],
        (b"node/n1/m3".to_vec(), b"3;1".to_vec())
    );

    let mut options = rumqttc::v5::MqttOptions::new("v5-client", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 100);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    client
        .publish(
            "node/n2/temp",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "42;1",
        )
        .await
        .unwrap();
    harness.wait_stored(11).await;
    assert_eq!(
        harness.stored.lock()[10],
        (b"node/n2/temp".to_vec(), b"42;1".to_vec())
    );
    // `$` topics and empty retained messages (which delete one) are routed, not stored.
    client
        .publish(
            "$SYS/x",
            rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            false,
            "1",
        )
        .await
        .unwrap();
    client
        .publish(
            "node/n2/temp",
            rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            true,
            "",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(harness.stored.lock().len(), 11);
}

/// Keep-alive 0 turns the keep-alive mechanism off (MQTT 3.1.1 §3.1.2.10, MQTT 5
/// §3.1.2.10); rumqttd refused such a CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_is_accepted_and_never_times_out() {
    let harness = Harness::start(BrokerConfig::default()).await;
    let port = harness.port();
    tokio::task::spawn_blocking(move || {
        let mut stream = raw_client(port, "quiet", 0);
        std::thread::sleep(Duration::from_secs(2));
        stream
            .write_all(&publish_packet("node/q/m", b"1;1", 0, 0))
            .unwrap();
        // PINGREQ is still answered.
        stream.write_all(&[0xc0, 0]).unwrap();
        let mut pingresp = [0u8; 2];
        stream.read_exact(&mut pingresp).unwrap();
        assert_eq!(pingresp, [0xd0, 0]);
    })
    .await
    .unwrap();
    harness.wait_stored(1).await;
}

/// A QoS 1 PUBLISH is acknowledged only once the store has it; while the store is behind
/// the publisher's socket is no longer read, so a publisher writing as fast as it can is
/// slowed down, not dropped, and everything arrives once the store catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_behind_slows_publishers_and_loses_nothing() {
    let harness = Harness::start(BrokerConfig::default()).await;
    let port = harness.port();
    harness.gate.send_replace(false);

    // QoS 1: no PUBACK while the commit waits.
    let mut qos1 = raw_client(port, "qos1", 60);
    qos1.write_all(&publish_packet("node/a/m", b"1;1", 1, 7))
        .unwrap();
    qos1.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut puback = [0u8; 4];
    assert!(
        qos1.read_exact(&mut puback).is_err(),
        "no PUBACK before the store has it"
    );

    // QoS 0 at full speed: the writer blocks once the broker stops reading.
    let message = publish_packet("node/b/m", b"123456;1700000000.123", 0, 0);
    let (written_tx, written_rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut stream = raw_client(port, "flood", 0);
        let chunk: Vec<u8> = message.repeat(1000);
        let mut sent = 0usize;
        // Long enough to fill every buffer on the way many times over.
        for _ in 0..2000 {
            stream.write_all(&chunk).unwrap();
            sent += 1000;
            let _ = written_tx.send(sent);
        }
        stream
    });
    // The writer stalls: what it has written stops growing well short of the end.
    let mut last = 0;
    let mut stalled = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = written_rx.try_iter().last().unwrap_or(last);
        if now == last && now < 2_000_000 {
            stalled = true;
            break;
        }
        last = now;
    }
    assert!(
        stalled,
        "the publisher was never slowed down ({last} written)"
    );
    assert!(harness.stored.lock().is_empty());
    assert!(harness.metric("exawatch_broker_ingest_wait_seconds_total") >= 0.0);

    // The store catches up: the PUBACK comes and every message is there.
    harness.gate.send_replace(true);
    qos1.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    qos1.read_exact(&mut puback).unwrap();
    assert_eq!(puback, [0x40, 2, 0, 7]);
    let stream = tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    harness.wait_stored(2_000_001).await;
    let stored = harness.stored.lock();
    assert_eq!(
        stored.iter().filter(|(t, _)| t == b"node/b/m").count(),
        2_000_000
    );
    drop(stored);
    assert_eq!(
        harness.metric("exawatch_broker_connections"),
        2.0,
        "none dropped"
    );
    assert!(harness.metric("exawatch_broker_ingest_wait_seconds_total") > 0.0);
    drop(stream);
}

/// A subscriber that never reads loses its own QoS 0 copies (counted), the store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_costs_ingest_nothing() {
    let harness = Harness::start(BrokerConfig {
        max_queued_messages: 100,
        ..BrokerConfig::default()
    })
    .await;
    let port = harness.port();
    let mut slow = raw_client(port, "slow", 0);
    // SUBSCRIBE # at QoS 0, then read the SUBACK and nothing more.
    slow.write_all(&[0x82, 6, 0, 1, 0, 1, b'#', 0]).unwrap();
    let mut suback = [0u8; 5];
    slow.read_exact(&mut suback).unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 0]);

    let payload = vec![b'7'; 1000];
    let message = publish_packet("node/c/m", &payload, 0, 0);
    tokio::task::spawn_blocking(move || {
        let mut stream = raw_client(port, "fast", 0);
        for _ in 0..50 {
            stream.write_all(&message.repeat(200)).unwrap();
        }
    })
    .await
    .unwrap();
    harness.wait_stored(10_000).await;
    assert!(harness.metric("exawatch_broker_messages_dropped_total{reason=\"queue_full\"}") > 0.0);
    drop(slow);
}

/// Retained messages, wills and $-topics with a real client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_and_wills_reach_subscribers() {
    use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
    let harness = Harness::start(BrokerConfig::default()).await;
    let port = harness.port();

    let (publisher, mut events) =
        AsyncClient::new(MqttOptions::new("retainer", "127.0.0.1", port), 10);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    publisher
        .publish("cfg/n1", QoS::AtLeastOnce, true, "on")
        .await
        .unwrap();
    harness.wait_stored(1).await;

    let mut options = MqttOptions::new("doomed", "127.0.0.1", port);
    options.set_last_will(LastWill::new(
        "status/doomed",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    options.set_keep_alive(Duration::from_secs(5));
    let (_doomed, mut doomed_events) = AsyncClient::new(options, 10);
    let (connected, doomed_connected) = tokio::sync::oneshot::channel();
    let doomed = tokio::spawn(async move {
        let mut connected = Some(connected);
        while let Ok(event) = doomed_events.poll().await {
            if let Event::Incoming(Packet::ConnAck(_)) = event
                && let Some(connected) = connected.take()
            {
                let _ = connected.send(());
            }
        }
    });
    // Its will is only there once the broker has its CONNECT.
    tokio::time::timeout(Duration::from_secs(10), doomed_connected)
        .await
        .expect("the doomed client connects")
        .unwrap();

    let (subscriber, mut events) =
        AsyncClient::new(MqttOptions::new("watcher", "127.0.0.1", port), 10);
    subscriber
        .subscribe("cfg/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    subscriber
        .subscribe("status/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut subscribed = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 2 {
        assert!(Instant::now() < deadline, "got only {got:?}");
        match tokio::time::timeout(Duration::from_millis(100), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                got.push((p.topic.clone(), p.payload.to_vec(), p.retain));
            }
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => subscribed += 1,
            _ => {}
        }
        if got.len() == 1 && subscribed == 2 && !doomed.is_finished() {
            // The retained message came and both subscriptions hold; now the other client
            // dies without DISCONNECT.
            doomed.abort();
        }
    }
    assert_eq!(got[0], ("cfg/n1".into(), b"on".to_vec(), true));
    assert_eq!(got[1], ("status/doomed".into(), b"gone".to_vec(), false));
}
