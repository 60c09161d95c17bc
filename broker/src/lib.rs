//! The embedded MQTT broker: rumqttd's router plus our own listener, and the in-process link
//! through which the store receives every published message.
//!
//! Data flow: collectors connect to the listener (MQTT 3.1.1 and 5 on the same port: the
//! protocol level of each CONNECT picks the codec, see [`AnyVersion`]) and publish; the
//! router appends each message to the commit log of the `#` filter that the [`IngestLink`]
//! subscribed to, and the link hands batches of messages to the caller. The commit log is the
//! ingest backlog, sized by [`BrokerConfig::backlog_bytes`].

mod acl;
mod any_version;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use rumqttd::local::{LinkBuilder, LinkRx};
use rumqttd::{ConnectionSettings, Notification, Router, RouterConfig, Server, ServerSettings};
use serde::{Deserialize, Serialize};
use snafu::Snafu;

use acl::Acl;
pub use acl::BrokerUser;
pub use any_version::AnyVersion;

/// Broker errors.
#[derive(Debug, Snafu)]
pub enum Error {
    /// The listen address is not `host:port`.
    #[snafu(display("broker listen address {address:?}: {message}"))]
    BadAddress { address: String, message: String },
    /// The in-process link to the router failed.
    #[snafu(display("broker link: {message}"))]
    Link { message: String },
}

/// `Result` with the broker's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `[broker]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address of the MQTT listener (3.1.1 and 5).
    pub listen: String,
    /// Most clients connected at once.
    pub max_connections: usize,
    /// Largest MQTT packet accepted from a client.
    pub max_packet_bytes: usize,
    /// Messages a client may have in flight (QoS 1/2).
    pub max_inflight: usize,
    /// Memory for messages waiting to be ingested (the router's commit log per filter).
    pub backlog_bytes: usize,
    /// A client must send CONNECT within this time.
    pub connection_timeout_ms: u16,
    /// Users; when any is configured, clients must log in (no anonymous access).
    pub users: Vec<BrokerUser>,
    /// Address of an MQTT-over-TLS listener (e.g. `0.0.0.0:8883`); empty: none. Its
    /// connections are decrypted and handed to the plain listener over loopback, so set
    /// `listen` to `127.0.0.1:…` to accept TLS only from outside.
    pub tls_listen: String,
    /// PEM certificate chain of the TLS listener.
    pub tls_cert: String,
    /// PEM private key of the TLS listener.
    pub tls_key: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:1883".into(),
            max_connections: 10_000,
            max_packet_bytes: 1 << 20,
            max_inflight: 100,
            backlog_bytes: 64 << 20,
            connection_timeout_ms: 10_000,
            users: Vec::new(),
            tls_listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

/// One published message.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic.
    pub topic: Bytes,
    /// The payload.
    pub payload: Bytes,
}

/// Number of commit-log segments the backlog is split into.
const BACKLOG_SEGMENTS: usize = 4;
/// Most messages returned by one [`IngestLink::next_batch`].
const MAX_BATCH: usize = 4096;

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    listen: SocketAddr,
    ingest: Option<IngestLink>,
}

impl EmbeddedBroker {
    /// Starts the router, the listener task (on the current tokio runtime) and the ingest
    /// link. Fails if the address is bad; a port already in use is reported by the listener
    /// task (it logs and exits), so callers wanting certainty should bind-check first.
    pub fn start(
        config: &BrokerConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        registry: &mut Registry,
    ) -> Result<Self> {
        let listen: SocketAddr = config
            .listen
            .parse()
            .map_err(|e: std::net::AddrParseError| Error::BadAddress {
                address: config.listen.clone(),
                message: e.to_string(),
            })?;
        let segment = (config.backlog_bytes / BACKLOG_SEGMENTS).max(1 << 20);
        let router = Router::new(
            0,
            RouterConfig {
                max_connections: config.max_connections + 1,
                max_outgoing_packet_count: 200,
                max_segment_size: segment,
                max_segment_count: BACKLOG_SEGMENTS,
                ..RouterConfig::default()
            },
        );
        let router_tx = router.spawn();

        let (mut link_tx, link_rx, _) = LinkBuilder::new("exawatch-ingest", router_tx.clone())
            .build()
            .map_err(|e| Error::Link {
                message: e.to_string(),
            })?;
        link_tx.subscribe("#").map_err(|e| Error::Link {
            message: e.to_string(),
        })?;

        let settings = ServerSettings {
            name: "mqtt".into(),
            listen,
            tls: None,
            next_connection_delay_ms: 0,
            connections: ConnectionSettings {
                connection_timeout_ms: config.connection_timeout_ms,
                max_payload_size: config.max_packet_bytes,
                max_inflight_count: config.max_inflight,
                auth: (!config.users.is_empty()).then(|| {
                    config
                        .users
                        .iter()
                        .map(|u| (u.name.clone(), u.password.clone()))
                        .collect()
                }),
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let acl = (!config.users.is_empty()).then(|| {
            let acl = Arc::new(Acl::new(&config.users));
            registry
                .sub_registry_with_prefix("exawatch_broker")
                .register(
                    "acl_denied",
                    "Packets refused by the per-node ACL (the client is disconnected)",
                    acl.denied.clone(),
                );
            acl
        });
        let mut server = Server::new(settings, router_tx, AnyVersion::with_acl(acl));
        tokio::spawn(async move {
            if let Err(error) = server.start(rumqttd::LinkType::Remote).await {
                tracing::error!(%error, %listen, "MQTT listener stopped.");
            }
        });
        tracing::info!(%listen, "MQTT broker listening (3.1.1 and 5).");
        if let Some(tls) = tls {
            let tls_listen: SocketAddr =
                config
                    .tls_listen
                    .parse()
                    .map_err(|e: std::net::AddrParseError| Error::BadAddress {
                        address: config.tls_listen.clone(),
                        message: e.to_string(),
                    })?;
            let plain = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), listen.port());
            tokio::spawn(tls::terminate(tls_listen, plain, tls));
            tracing::info!(listen = %tls_listen, "MQTT over TLS listening.");
        }
        Ok(Self {
            listen,
            ingest: Some(IngestLink::new(link_tx, link_rx, registry)),
        })
    }

    /// The listen address.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The link that receives every published message; `None` after the first call.
    pub fn take_ingest_link(&mut self) -> Option<IngestLink> {
        self.ingest.take()
    }
}

/// Receives every message published to the broker, in batches.
pub struct IngestLink {
    // Kept alive: dropping it would disconnect the link from the router.
    _tx: rumqttd::local::LinkTx,
    rx: LinkRx,
    /// Messages taken from the router but not yet returned: kept here so that a cancelled
    /// [`IngestLink::next_batch`] loses nothing.
    pending: Vec<Message>,
    received: Counter,
    overrun: Counter,
    last_offset: Option<u64>,
}

impl std::fmt::Debug for IngestLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestLink")
            .field("last_offset", &self.last_offset)
            .finish()
    }
}

impl IngestLink {
    fn new(tx: rumqttd::local::LinkTx, rx: LinkRx, registry: &mut Registry) -> Self {
        let received = Counter::default();
        let overrun = Counter::default();
        let r = registry.sub_registry_with_prefix("exawatch_broker");
        r.register(
            "messages_received",
            "Messages the ingest link received from the router",
            received.clone(),
        );
        r.register(
            "messages_overrun",
            "Messages lost because ingest fell behind the router's backlog (shed load)",
            overrun.clone(),
        );
        Self {
            _tx: tx,
            rx,
            pending: Vec::new(),
            received,
            overrun,
            last_offset: None,
        }
    }

    /// Waits for messages and returns those available, at least one. `Err` when the router
    /// has gone away. Cancel-safe: messages already taken are returned by the next call.
    pub async fn next_batch(&mut self) -> Result<Vec<Message>> {
        while self.pending.is_empty() {
            let first = self.rx.next().await;
            self.handle(first).await?;
            while self.pending.len() < MAX_BATCH {
                match self.rx.next().now_or_never() {
                    Some(next) => self.handle(next).await?,
                    None => break,
                }
            }
        }
        self.received.inc_by(self.pending.len() as u64);
        Ok(std::mem::take(&mut self.pending))
    }

    async fn handle(
        &mut self,
        notification: Result<Option<Notification>, rumqttd::local::LinkError>,
    ) -> Result<()> {
        let link_error = |e: rumqttd::local::LinkError| Error::Link {
            message: e.to_string(),
        };
        match notification.map_err(link_error)? {
            Some(Notification::Forward(forward)) => {
                if let Some((_, offset)) = forward.cursor {
                    // Offsets in the filter's log advance by one per message: a jump means
                    // the router dropped old segments we had not read.
                    if let Some(last) = self.last_offset.filter(|&last| offset > last + 1) {
                        self.overrun.inc_by(offset - last - 1);
                    }
                    self.last_offset = Some(offset);
                }
                self.pending.push(Message {
                    topic: forward.publish.topic,
                    payload: forward.publish.payload,
                });
            }
            // The router paused the link because its buffer is full: ask for more.
            Some(Notification::Unschedule) => self.rx.wake().await.map_err(link_error)?,
            Some(_) | None => {}
        }
        Ok(())
    }
}
