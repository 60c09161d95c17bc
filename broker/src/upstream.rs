//! Ingest from a front broker: this process subscribes, as an MQTT 5 client, to a shared
//! subscription (`$share/<group>/<filter>`) on another broker (mosquitto, EMQX, VerneMQ,
//! HiveMQ or another exawatch), so that several ingesters each take a share of one stream.
//! QoS 1 with a persistent session: a message is acknowledged to the front broker only once
//! its samples are in this ingester's write-ahead log, so one that is not is sent again (to
//! this ingester when it reconnects, or to another member of the group).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde::{Deserialize, Serialize};

use crate::{Ingest, IngestConnection};

/// Where and how an ingester takes its share of a front broker's stream (`[upstream]`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The front broker, `host:port`; empty: none (the embedded broker takes publishes).
    pub broker: String,
    /// The shared subscription's group: every ingester of a cluster uses the same.
    pub group: String,
    /// Topic filter of the messages to take.
    pub filter: String,
    /// This ingester's MQTT client id: stable across restarts (its session is kept on the
    /// front broker, with the messages not yet acknowledged).
    pub client_id: String,
    /// How long the front broker keeps the session while the ingester is away, seconds.
    pub session_expiry_secs: u32,
    /// Messages the front broker may send before the ingester acknowledges them.
    pub receive_maximum: u16,
    /// MQTT user name, if the front broker wants one.
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<String>,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("broker", &self.broker)
            .field("group", &self.group)
            .field("filter", &self.filter)
            .field("client_id", &self.client_id)
            .field("session_expiry_secs", &self.session_expiry_secs)
            .field("receive_maximum", &self.receive_maximum)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            broker: String::new(),
            group: "exawatch".into(),
            filter: "#".into(),
            client_id: String::new(),
            session_expiry_secs: 86_400,
            receive_maximum: 10_000,
            username: None,
            password: None,
        }
    }
}

impl UpstreamConfig {
    /// The subscription: `$share/<group>/<filter>`.
    pub fn subscription(&self) -> String {
        format!("$share/{}/{}", self.group, self.filter)
    }
}

/// A batch is committed at the latest this long after its first message.
const BATCH_DELAY: Duration = Duration::from_millis(5);
/// Pause before connecting again after the front broker failed.
const RETRY: Duration = Duration::from_secs(1);

/// Takes messages from the front broker into `ingest` until `stop` resolves.
pub async fn run(config: UpstreamConfig, ingest: Arc<dyn Ingest>, stop: impl Future<Output = ()>) {
    let (host, port) = match config.broker.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(1883)),
        None => (config.broker.clone(), 1883),
    };
    let mut options = MqttOptions::new(config.client_id.clone(), host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_start(false)
        .set_session_expiry_interval(Some(config.session_expiry_secs))
        .set_receive_maximum(Some(config.receive_maximum))
        .set_manual_acks(true);
    if let Some(user) = &config.username {
        options.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
    }
    // Room for an acknowledgement of every message the front broker may have in flight, so
    // that acknowledging never waits for the event loop this task also polls.
    let (client, mut events) = AsyncClient::new(options, usize::from(config.receive_maximum) + 16);
    let batch = usize::from(config.receive_maximum / 2).max(1);
    let mut connection = ingest.connection();
    let mut pending: Vec<Publish> = Vec::new();
    let mut due = None;
    tokio::pin!(stop);
    tracing::info!(broker = %config.broker, subscription = %config.subscription(), "Taking a share of the front broker's stream.");
    loop {
        let deadline =
            due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep_until(deadline), if due.is_some() => {
                commit(&client, &mut *connection, &mut pending).await;
                due = None;
            }
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if !ack.session_present
                        && let Err(error) = client.subscribe(config.subscription(), QoS::AtLeastOnce).await
                    {
                        tracing::warn!(%error, "Cannot subscribe on the front broker.");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    connection.push(&publish.topic, &publish.payload);
                    pending.push(publish);
                    due.get_or_insert_with(|| tokio::time::Instant::now() + BATCH_DELAY);
                    if pending.len() >= batch {
                        commit(&client, &mut *connection, &mut pending).await;
                        due = None;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, broker = %config.broker, "The front broker connection failed; retrying.");
                    tokio::time::sleep(RETRY).await;
                }
            },
        }
    }
    commit(&client, &mut *connection, &mut pending).await;
    let _ = client.disconnect().await;
}

/// Commits the pending messages to the WAL, then acknowledges them; when the store fails
/// they are not acknowledged, and the front broker sends them again.
async fn commit(
    client: &AsyncClient,
    connection: &mut dyn IngestConnection,
    pending: &mut Vec<Publish>,
) {
    if pending.is_empty() {
        return;
    }
    match connection.commit(true).await {
        Ok(()) => {
            for publish in pending.drain(..) {
                if let Err(error) = client.ack(&publish).await {
                    tracing::warn!(%error, "Cannot acknowledge to the front broker.");
                }
            }
        }
        Err(error) => {
            // MQTT sends unacknowledged messages again only on a new connection.
            tracing::warn!(error = %error.message, "The store did not take the front broker's messages; not acknowledged, reconnecting so that they come again.");
            pending.clear();
            let _ = client.disconnect().await;
        }
    }
}
