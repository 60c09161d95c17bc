//! The embedded MQTT broker (3.1.1 and 5 on one port), and the path by which every published
//! message reaches the store.
//!
//! Data flow: a client connects (the protocol level of its CONNECT picks the version, see
//! [`codec`]) and publishes. Its connection task reads what the socket holds, decodes every
//! PUBLISH into the connection's [`IngestConnection`] and routes it to the sessions whose
//! subscriptions match ([`router`]); then it commits the batch to the store. QoS 1 PUBACKs
//! (and QoS 2 PUBRECs) are sent once the commit says the samples are in the write-ahead log.
//! While commits are pending the connection stops reading: when the store falls behind,
//! publishers are slowed by TCP itself and nothing is dropped. Messages to subscribers wait
//! in their session's bounded queue; a subscriber that does not read loses its own QoS 0
//! copies beyond that (counted), never the store's.
//!
//! Why not rumqttd (the broker this crate used to embed): its router keeps every message in a
//! per-filter commit log and overwrites the oldest segment when the consumer is behind, so a
//! fast burst lost up to 74 % of the messages; it refuses keep-alive 0 (valid in MQTT 3.1.1
//! and 5); and every message crossed its router thread before reaching the store. See
//! README, "MQTT broker".

mod acl;
mod codec;
mod connection;
mod metrics;
mod router;
mod session;
mod topic;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use exawatch_protocol::settings::{InvalidSetting, Validate, at_least, within};
use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use snafu::Snafu;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

pub use acl::BrokerUser;

use crate::acl::Users;
use crate::metrics::BrokerMetrics;
use crate::router::Router;
use crate::session::Message;

/// Broker errors.
#[derive(Debug, Snafu)]
pub enum Error {
    /// A listen address is not `host:port`.
    #[snafu(display("broker listen address {address:?}: {message}"))]
    BadAddress { address: String, message: String },
    /// A listener could not be bound (port in use, no permission).
    #[snafu(display("cannot listen for MQTT on {address} ({key}): {source}"))]
    Bind {
        address: String,
        key: &'static str,
        source: std::io::Error,
    },
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
    /// Largest MQTT packet accepted from a client, in bytes.
    pub max_packet_bytes: usize,
    /// QoS 1/2 messages a client may have unacknowledged towards the broker (the receive
    /// maximum announced to MQTT 5 clients), and that the broker sends a 3.1.1 client
    /// before it acknowledges them.
    pub max_inflight: usize,
    /// Messages waiting for one subscriber (QoS 1/2 also while it is offline, with a
    /// persistent session); beyond it, messages to that subscriber are dropped and counted.
    pub max_queued_messages: usize,
    /// Longest keep-alive granted to MQTT 5 clients, in seconds (a longer request is answered
    /// with this server keep-alive). A keep-alive of 0 (none) is always allowed.
    pub max_keepalive_secs: u16,
    /// A client must send CONNECT within this time.
    pub connection_timeout_ms: u64,
    /// Users; when any is configured, clients must log in (no anonymous access).
    pub users: Vec<BrokerUser>,
    /// Address of an MQTT-over-TLS listener (e.g. `0.0.0.0:8883`); needs `tls_cert` and
    /// `tls_key`.
    pub tls_listen: Option<String>,
    /// PEM certificate chain of the TLS listener.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS listener.
    pub tls_key: Option<PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:1883".into(),
            max_connections: 10_000,
            max_packet_bytes: 1 << 20,
            max_inflight: 100,
            max_queued_messages: 10_000,
            max_keepalive_secs: 60,
            connection_timeout_ms: 10_000,
            users: Vec::new(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Validate for BrokerConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        at_least("max_connections", self.max_connections, 1)?;
        // 268435455 is the largest packet MQTT's remaining length can say.
        within("max_packet_bytes", self.max_packet_bytes, 64..=268_435_455)?;
        within("max_inflight", self.max_inflight, 1..=usize::from(u16::MAX))?;
        at_least("max_queued_messages", self.max_queued_messages, 1)?;
        at_least("max_keepalive_secs", self.max_keepalive_secs, 1)?;
        within(
            "connection_timeout_ms",
            self.connection_timeout_ms,
            1..=3_600_000,
        )?;
        if self.tls_listen.is_some() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err(InvalidSetting {
                key: "tls_listen".into(),
                value: self.tls_listen.clone().unwrap_or_default(),
                allowed: "only with tls_cert and tls_key".into(),
            });
        }
        Ok(())
    }
}

/// Why a commit to the store failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestError {
    /// What went wrong, for the log.
    pub message: String,
}

/// Where the broker hands every published message for storage (the store, in the server).
pub trait Ingest: Send + Sync + 'static {
    /// A decoder for one connection's messages.
    fn connection(&self) -> Box<dyn IngestConnection>;
}

/// One connection's decoder: messages are pushed as they are read, then committed together.
pub trait IngestConnection: Send + 'static {
    /// Decodes one message into the pending batch (malformed ones are counted and dropped).
    fn push(&mut self, topic: &[u8], payload: &[u8]);

    /// Hands what was pushed since the last commit to the store. The future resolves once the
    /// store has accepted it (with `durable`, once it is in the write-ahead log), waiting as
    /// long as the store is behind; `Err` if the store cannot take it.
    fn commit(&mut self, durable: bool) -> BoxFuture<'static, Result<(), IngestError>>;
}

/// Reads `bytes` as a client's side of a connection (a CONNECT, then packets) the way a
/// connection does, until they end or a packet is refused; returns the number of packets
/// read. The entry point of the `mqtt_packets` fuzz target.
pub fn read_client_bytes(bytes: &[u8]) -> usize {
    const MAX_PACKET: usize = 1 << 20;
    let mut buf = bytes::BytesMut::from(bytes);
    let Ok(connect) = codec::read_connect(&mut buf, MAX_PACKET) else {
        return 0;
    };
    let mut packets = 1;
    while codec::read(connect.version, &mut buf, MAX_PACKET).is_ok() {
        packets += 1;
    }
    packets
}

/// Limits every connection obeys.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) max_packet_bytes: usize,
    pub(crate) receive_maximum: u16,
    pub(crate) max_keepalive_secs: u16,
    pub(crate) connection_timeout: Duration,
}

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) router: Router,
    pub(crate) ingest: Arc<dyn Ingest>,
    pub(crate) users: Users,
    pub(crate) limits: Limits,
    pub(crate) metrics: BrokerMetrics,
    pub(crate) next_connection: AtomicU64,
    /// Connections past CONNECT.
    pub(crate) open: AtomicUsize,
    /// Connection tasks running (before CONNECT too).
    tasks: AtomicUsize,
    tasks_done: Notify,
    /// Turns true when the broker stops.
    pub(crate) stopping: watch::Receiver<bool>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Routes, retains and stores a message the broker publishes itself (a will).
    pub(crate) async fn publish_will(&self, message: Arc<Message>, origin: &str) {
        if message.retain {
            self.router.retain(&message);
        }
        self.router.route(&message, origin);
        if connection::ingestible(&message.topic, &message.payload, message.retain) {
            let mut ingest = self.ingest.connection();
            ingest.push(&message.topic, &message.payload);
            if let Err(error) = ingest.commit(false).await {
                tracing::warn!(error = %error.message, "A will message was not stored.");
            }
        }
    }

    /// Counts a connection task in; the guard counts it out.
    fn task(self: &Arc<Self>) -> TaskGuard {
        self.tasks.fetch_add(1, Ordering::SeqCst);
        TaskGuard(Arc::clone(self))
    }
}

/// Counts a connection task out when dropped.
struct TaskGuard(Arc<Shared>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.tasks.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.tasks_done.notify_waiters();
        }
    }
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    listen: SocketAddr,
    tls_listen: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

/// How often sessions are checked for expiry and delayed wills.
const REAP_PERIOD: Duration = Duration::from_millis(250);

impl EmbeddedBroker {
    /// Binds the listeners (a busy port is an error here, naming the key), then serves on the
    /// current tokio runtime, handing every published message to `ingest`.
    pub async fn start(
        config: &BrokerConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        ingest: Arc<dyn Ingest>,
        registry: &mut Registry,
    ) -> Result<Self> {
        let plain = bind(&config.listen, "broker.listen, --mqtt-port").await?;
        let tls_listener = match (&config.tls_listen, tls) {
            (Some(address), Some(tls)) => Some((bind(address, "broker.tls_listen").await?, tls)),
            _ => None,
        };
        let metrics = BrokerMetrics::default();
        metrics.register(registry);
        let (stop, stopping) = watch::channel(false);
        let shared = Arc::new(Shared {
            router: Router::new(config.max_queued_messages, metrics.clone()),
            ingest,
            users: Users::new(&config.users),
            limits: Limits {
                max_connections: config.max_connections,
                max_packet_bytes: config.max_packet_bytes,
                receive_maximum: config.max_inflight.clamp(1, u16::MAX.into()) as u16,
                max_keepalive_secs: config.max_keepalive_secs,
                connection_timeout: Duration::from_millis(config.connection_timeout_ms),
            },
            metrics,
            next_connection: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            tasks: AtomicUsize::new(0),
            tasks_done: Notify::new(),
            stopping,
        });
        let listen = plain.local_addr().map_err(|source| Error::Bind {
            address: config.listen.clone(),
            key: "broker.listen",
            source,
        })?;
        tokio::spawn(accept_plain(plain, Arc::clone(&shared)));
        tracing::info!(%listen, "MQTT broker listening (3.1.1 and 5).");
        let tls_listen = match tls_listener {
            Some((listener, tls)) => {
                let address = listener.local_addr().ok();
                tokio::spawn(accept_tls(listener, tls, Arc::clone(&shared)));
                tracing::info!(listen = ?address, "MQTT over TLS listening.");
                address
            }
            None => None,
        };
        tokio::spawn(reap(Arc::clone(&shared)));
        Ok(Self {
            listen,
            tls_listen,
            shared,
            stop,
        })
    }

    /// The address of the plain listener.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The address of the TLS listener, if there is one.
    pub fn tls_listen(&self) -> Option<SocketAddr> {
        self.tls_listen
    }

    /// Stops accepting, tells every connection to finish (what it has read reaches the store;
    /// MQTT 5 clients get DISCONNECT "server shutting down") and waits for them, at most
    /// `patience`.
    pub async fn shutdown(&self, patience: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let done = self.shared.tasks_done.notified();
            if self.shared.tasks.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                tracing::warn!(
                    connections = self.shared.tasks.load(Ordering::SeqCst),
                    "MQTT connections did not finish in time."
                );
                return;
            }
        }
    }
}

async fn bind(address: &str, key: &'static str) -> Result<TcpListener> {
    let parsed: SocketAddr =
        address
            .parse()
            .map_err(|e: std::net::AddrParseError| Error::BadAddress {
                address: address.to_owned(),
                message: e.to_string(),
            })?;
    TcpListener::bind(parsed)
        .await
        .map_err(|source| Error::Bind {
            address: address.to_owned(),
            key,
            source,
        })
}

/// How long accepting pauses after an error (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

async fn accept_plain(listener: TcpListener, shared: Arc<Shared>) {
    let mut stopping = shared.stopping.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let guard = shared.task();
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let (reader, writer) = stream.into_split();
                    connection::serve(shared, reader, writer, peer).await;
                    drop(guard);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot accept an MQTT connection.");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// A TLS handshake must complete within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept_tls(listener: TcpListener, tls: Arc<rustls::ServerConfig>, shared: Arc<Shared>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut stopping = shared.stopping.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|s| *s) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "Cannot accept an MQTT/TLS connection.");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let guard = shared.task();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let (reader, writer) = tokio::io::split(stream);
                    connection::serve(shared, reader, writer, peer).await;
                }
                Ok(Err(error)) => tracing::debug!(%error, %peer, "MQTT/TLS handshake failed."),
                Err(_) => tracing::debug!(%peer, "MQTT/TLS handshake timed out."),
            }
            drop(guard);
        });
    }
}

/// Ends expired sessions and publishes wills whose delay has passed, until the broker stops.
async fn reap(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(REAP_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stopping = shared.stopping.clone();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        for will in shared.router.reap(Instant::now()) {
            shared.publish_will(will, "").await;
        }
    }
}
