//! The embedded broker with real MQTT clients (3.1.1 and 5) on loopback.

use std::time::Duration;

use exawatch_broker::{BrokerConfig, EmbeddedBroker, Message};
use prometheus_client::registry::Registry;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn collect(link: &mut exawatch_broker::IngestLink, n: usize) -> Vec<Message> {
    let mut all = Vec::new();
    while all.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(10), link.next_batch())
            .await
            .expect("messages within 10 s")
            .unwrap();
        all.extend(batch);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_and_v5_clients_share_one_port() {
    let port = free_port();
    let config = BrokerConfig {
        listen: format!("127.0.0.1:{port}"),
        ..BrokerConfig::default()
    };
    let mut broker = EmbeddedBroker::start(&config, None, &mut Registry::default()).unwrap();
    let mut link = broker.take_ingest_link().unwrap();
    assert!(broker.take_ingest_link().is_none());

    // MQTT 3.1.1
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
    let v4 = collect(&mut link, 10).await;
    assert_eq!(&v4[3].topic[..], b"node/n1/m3");
    assert_eq!(&v4[3].payload[..], b"3;1");

    // MQTT 5 on the same port
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
    let v5 = collect(&mut link, 1).await;
    assert_eq!(&v5[0].topic[..], b"node/n2/temp");
    assert_eq!(&v5[0].payload[..], b"42;1");
}
