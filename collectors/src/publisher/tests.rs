//! The offline buffer's accounting, address parsing, and the publisher against a minimal
//! in-test MQTT 3.1.1 server (CONNECT/CONNACK, QoS 0 PUBLISH, PINGREQ, DISCONNECT) that can
//! go away and come back.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::buffer::{Message, OfflineBuffer};
use super::*;

fn message(i: usize) -> Message {
    Message {
        topic: format!("t/{i}"),
        payload: i.to_string().into_bytes(),
    }
}

fn topics(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.topic.as_str()).collect()
}

#[test]
fn offline_buffer_drops_oldest_first_and_counts() {
    let mut buffer = OfflineBuffer::new(3);
    for i in 0..5 {
        buffer.push(message(i));
    }
    assert_eq!((buffer.len(), buffer.dropped()), (3, 2));
    let taken = buffer.take(2);
    assert_eq!(topics(&taken), ["t/2", "t/3"]);
    assert_eq!(buffer.len(), 1);

    // Undelivered messages go back in front, in order; overflow drops the oldest of them.
    buffer.push(message(5));
    buffer.push(message(6));
    buffer.requeue(taken.into_iter());
    assert_eq!((buffer.len(), buffer.dropped()), (3, 4));
    assert_eq!(topics(&buffer.take(10)), ["t/4", "t/5", "t/6"]);
    assert_eq!(buffer.take(10), Vec::new());
}

#[test]
fn offline_buffer_capacity_is_at_least_one() {
    let mut buffer = OfflineBuffer::new(0);
    buffer.push(message(0));
    buffer.push(message(1));
    assert_eq!((buffer.len(), buffer.dropped()), (1, 1));
    assert_eq!(topics(&buffer.take(1)), ["t/1"]);
}

#[test]
fn broker_addresses() {
    let ok = |s: &str| parse_broker(s).expect(s);
    assert_eq!(ok("127.0.0.1:1883"), ("127.0.0.1".into(), 1883));
    assert_eq!(ok("broker"), ("broker".into(), 1883));
    assert_eq!(ok("mqtt://broker:11883"), ("broker".into(), 11883));
    assert_eq!(ok("[::1]:1884"), ("::1".into(), 1884));
    assert_eq!(ok("[::1]"), ("::1".into(), 1883));
    assert_eq!(ok("::1"), ("::1".into(), 1883));
    for bad in [
        "",
        ":1883",
        "host:0",
        "host:port",
        "host:99999",
        "[::1",
        "[::1]x",
        "a b:1",
    ] {
        assert!(parse_broker(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn sample_topics_lead_with_examon_tags() {
    let tags = [
        ("core", "3"),
        ("node", "n1"),
        ("chnl", "data"),
        ("org", "acme"),
        ("plugin", "linux"),
        ("cluster", "c1"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let sample = Sample::new("cpu_util", tags, 0, exawatch_protocol::Value::Float(1.0));
    assert_eq!(
        sample_topic(&sample),
        "org/acme/cluster/c1/node/n1/plugin/linux/chnl/data/core/3/cpu_util"
    );
}

#[tokio::test]
async fn invalid_settings_are_refused() {
    let config = |qos, buffer| PublisherConfig {
        connection: MqttConnection::anonymous("127.0.0.1:1"),
        client_id: "t".into(),
        qos,
        offline_buffer_messages: buffer,
    };
    assert!(matches!(
        Publisher::start(config(2, 10)),
        Err(crate::Error::Qos { qos: 2 })
    ));
    assert!(matches!(
        Publisher::start(config(0, 0)),
        Err(crate::Error::OfflineBuffer)
    ));
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn unreachable_broker_buffers_and_drops_oldest() {
    let publisher = Publisher::start(PublisherConfig {
        connection: MqttConnection::anonymous(format!("127.0.0.1:{}", closed_port().await)),
        client_id: "exawatch-test-unreachable".into(),
        qos: 0,
        offline_buffer_messages: 5,
    })
    .expect("start");
    for i in 0..10 {
        publisher.publish(format!("t/{i}"), "1;0.000".into());
    }
    let stats = publisher.stats();
    assert_eq!((stats.accepted, stats.dropped, stats.queued), (10, 5, 5));
    assert!(!publisher.flush(Duration::from_millis(200)).await);
    let stats = publisher.close(Duration::ZERO).await;
    assert_eq!((stats.published, stats.dropped, stats.pending()), (0, 5, 5));
    assert!(stats.connection_errors >= 1);
}

/// Reads one MQTT packet: (first header byte, body).
async fn read_packet(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let header = stream.read_u8().await?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let byte = stream.read_u8().await?;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    Ok((header, body))
}

/// Serves one client connection: sends each PUBLISH's topic to `topics` (acknowledging QoS 1
/// ones); stops after `limit` publishes (closing the connection, as a broker that goes away)
/// or on DISCONNECT.
async fn serve(mut stream: TcpStream, topics: mpsc::UnboundedSender<String>, limit: usize) {
    let mut seen = 0;
    while seen < limit {
        let Ok((header, body)) = read_packet(&mut stream).await else {
            return;
        };
        let reply: Vec<u8> = match header >> 4 {
            1 => vec![0x20, 0x02, 0x00, 0x00], // CONNECT → CONNACK accepted
            3 => {
                let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let topic = String::from_utf8_lossy(&body[2..2 + len]).into_owned();
                let _ = topics.send(topic);
                seen += 1;
                match (header >> 1) & 0x03 {
                    0 => Vec::new(),
                    // QoS 1: PUBACK with the packet id that follows the topic.
                    _ => vec![0x40, 0x02, body[2 + len], body[3 + len]],
                }
            }
            12 => vec![0xd0, 0x00], // PINGREQ → PINGRESP
            14 => return,           // DISCONNECT
            _ => Vec::new(),
        };
        if !reply.is_empty() && stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn receive(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let topic = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("message within 5 s")
            .expect("server alive");
        got.push(topic);
    }
    got
}

#[tokio::test]
async fn delivers_buffers_while_the_broker_is_away_and_resends_on_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let publisher = Publisher::start(PublisherConfig {
        connection: MqttConnection::anonymous(addr.to_string()),
        client_id: "exawatch-test-reconnect".into(),
        qos: 0,
        offline_buffer_messages: 100,
    })
    .expect("start");
    let (tx, mut rx) = mpsc::unbounded_channel();

    // First broker life: three messages, then it goes away (connection and listener).
    let (stream, _) = listener.accept().await.expect("accept");
    let first = tokio::spawn(serve(stream, tx.clone(), 3));
    for i in 0..3 {
        publisher.publish(format!("a/{i}"), "1;0.000".into());
    }
    assert_eq!(receive(&mut rx, 3).await, ["a/0", "a/1", "a/2"]);
    first.await.expect("server task");
    drop(listener);
    wait_until("the publisher sees the broker gone", || {
        !publisher.stats().connected
    })
    .await;

    // While it is away, messages wait in the offline buffer.
    for i in 0..4 {
        publisher.publish(format!("b/{i}"), "2;0.000".into());
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stats = publisher.stats();
    assert_eq!((stats.published, stats.queued), (3, 4));
    assert!(stats.connection_errors >= 1);

    // The broker comes back on the same port: the buffered messages go out in order.
    let listener = TcpListener::bind(addr).await.expect("rebind");
    let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("reconnect within 10 s")
        .expect("accept");
    let second = tokio::spawn(serve(stream, tx, usize::MAX));
    assert_eq!(receive(&mut rx, 4).await, ["b/0", "b/1", "b/2", "b/3"]);

    assert!(publisher.flush(Duration::from_secs(5)).await);
    let stats = publisher.close(Duration::from_secs(1)).await;
    assert_eq!(
        (
            stats.accepted,
            stats.published,
            stats.dropped,
            stats.pending()
        ),
        (7, 7, 0, 0)
    );
    // A clean DISCONNECT ends the server loop.
    tokio::time::timeout(Duration::from_secs(2), second)
        .await
        .expect("server saw DISCONNECT")
        .expect("server task");
}

#[tokio::test]
async fn qos1_counts_acknowledged_messages() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let publisher = Publisher::start(PublisherConfig {
        connection: MqttConnection::anonymous(listener.local_addr().expect("addr").to_string()),
        client_id: "exawatch-test-qos1".into(),
        qos: 1,
        offline_buffer_messages: 100,
    })
    .expect("start");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stream, _) = listener.accept().await.expect("accept");
    let server = tokio::spawn(serve(stream, tx, usize::MAX));
    for i in 0..20 {
        publisher.publish(format!("q/{i}"), "1;0.000".into());
    }
    assert_eq!(receive(&mut rx, 20).await.len(), 20);
    assert!(publisher.flush(Duration::from_secs(5)).await);
    let stats = publisher.close(Duration::from_secs(1)).await;
    assert_eq!((stats.published, stats.pending()), (20, 0));
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("server saw DISCONNECT")
        .expect("server task");
}

#[tokio::test]
async fn run_once_delivers_every_sample_and_returns() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = crate::CollectorConfig {
        mqtt: MqttConnection::anonymous(listener.local_addr().expect("addr").to_string()),
        root: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/linux-node-exporter"),
        node: Some("n1".into()),
        ..crate::CollectorConfig::default()
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        serve(stream, tx, usize::MAX).await;
    });
    let stats = tokio::time::timeout(
        Duration::from_secs(10),
        crate::run(config, true, std::future::pending()),
    )
    .await
    .expect("run --once returns")
    .expect("run --once succeeds");
    assert!(stats.published > 100, "{stats:?}");
    assert_eq!((stats.dropped, stats.pending), (0, 0));
    server.await.expect("server saw DISCONNECT");
    let mut topics = Vec::new();
    while let Ok(topic) = rx.try_recv() {
        topics.push(topic);
    }
    assert_eq!(topics.len() as u64, stats.published);
    assert!(topics.contains(
        &"org/exawatch/cluster/local/node/n1/plugin/linux/chnl/data/mem_total_bytes".to_owned()
    ));
}
