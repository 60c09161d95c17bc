//! Broker clients misbehaving: many idle connections, garbage bytes, oversized packets, a
//! subscriber that never reads. The server stays up and keeps ingesting from a well-behaved
//! collector.

mod support {
    pub mod server;
}

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use support::server::{Server, mqtt_client, publish};

/// A CONNECT packet (MQTT 3.1.1, clean session, keep-alive 60 s).
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

#[test]
fn the_broker_shrugs_off_bad_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--set",
            "broker.max_packet_bytes=65536",
            "--set",
            "broker.connection_timeout_ms=2000",
        ],
    );
    let good = mqtt_client(server.mqtt, "good-collector");

    // A thousand connections that never say CONNECT (closed after the connection timeout).
    let idle: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", server.mqtt)).ok())
        .collect();
    assert!(idle.len() >= 900, "the broker accepts connections");
    // Garbage instead of MQTT.
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xff; 64],
        &[0x10, 0xff, 0xff, 0xff, 0xff, 0x7f],
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", server.mqtt)).unwrap();
        let _ = stream.write_all(garbage);
    }
    // A PUBLISH far beyond max_packet_bytes after a proper CONNECT.
    let mut big = TcpStream::connect(("127.0.0.1", server.mqtt)).unwrap();
    big.write_all(&connect_packet("oversized")).unwrap();
    let payload = vec![b'1'; 1 << 20];
    let topic = b"node/big/m";
    let remaining = 2 + topic.len() + payload.len();
    let mut packet = vec![0x30];
    let mut n = remaining;
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if n == 0 {
            break;
        }
    }
    packet.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    packet.extend_from_slice(topic);
    packet.extend_from_slice(&payload);
    let _ = big.write_all(&packet);
    // A subscriber to everything that never reads.
    let mut slow = TcpStream::connect(("127.0.0.1", server.mqtt)).unwrap();
    slow.write_all(&connect_packet("slow")).unwrap();
    slow.write_all(&[0x82, 6, 0, 1, 0, 1, b'#', 0]).unwrap();

    // Meanwhile a well-behaved collector publishes, and everything of it is stored.
    for i in 0..2000 {
        publish(
            &good,
            &format!("org/o/node/n{}/plugin/p/chnl/data/m", i % 10),
            format!("{i};1700000000.{:03}", i % 1000),
        );
    }
    server.wait_for_count("WHERE org = 'o'", 2000);
    assert_eq!(
        server.count("WHERE node = 'big'"),
        0,
        "the oversized packet was refused"
    );
    std::thread::sleep(Duration::from_millis(2500));
    publish(
        &good,
        "org/o/node/after/plugin/p/chnl/data/m",
        "1;1700000001",
    );
    server.wait_for_count("WHERE node = 'after'", 1);
    drop(idle);
    assert!(server.terminate().success(), "still up, and stops cleanly");
}
