//! One client connection, from CONNECT to close.
//!
//! A connection is two tasks: this one reads packets, handles them and assembles what goes
//! back; a writer task sends it, so a client that does not read never stops this one from
//! reading (and the reverse). Each read's PUBLISH packets are decoded into the connection's
//! [`IngestConnection`] and committed to the store together (a *round*); acknowledgements of
//! QoS 1/2 messages wait for their round's commit, and at most [`MAX_ROUNDS`] rounds may be
//! pending before the connection stops reading from its socket: backpressure that TCP carries
//! to the publisher.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, PingResp,
    PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, PubRel, PubRelReason,
    Publish, RetainForwardRule, SubAck, Subscribe, SubscribeReasonCode, UnsubAck, UnsubAckReason,
    Unsubscribe,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::acl::{self, ActionLabel, Login};
use crate::codec::{self, ConnectError, ConnectPacket, ReadError, Version};
use crate::router::{Attached, lower};
use crate::session::{
    Delivery, Enqueued, Inflight, Message, NEVER_EXPIRES, OutState, Session, SubOptions,
};
use crate::{IngestConnection, IngestError, Shared, topic};

/// Bytes asked of the socket per read; a read's messages are committed to the store together.
const READ_CHUNK: usize = 64 * 1024;
/// Commits a connection may have pending before it stops reading from its socket.
const MAX_ROUNDS: usize = 2;
/// Bytes waiting for the writer above which no more messages are taken from the session's
/// queue (they wait there, bounded).
const OUT_HIGH_WATER: usize = 256 * 1024;
/// Bytes waiting for the writer beyond which the client is disconnected: it has stopped
/// reading even its acknowledgements.
const OUT_HARD_LIMIT: usize = 16 << 20;
/// How long a connection the broker closes is still read from (and what arrives dropped).
const LINGER: Duration = Duration::from_secs(1);
/// Topic aliases a client may set (MQTT 5, announced in CONNACK).
const TOPIC_ALIAS_MAX: u16 = 64;

/// Whether a published message goes to the store: not `$`-topics (`$SYS`, …) and not the
/// empty retained messages that delete a topic's retained message.
pub(crate) fn ingestible(topic: &[u8], payload: &[u8], retain: bool) -> bool {
    let deletes_retained = retain && payload.is_empty();
    !topic.starts_with(b"$") && !deletes_retained
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT; its will is kept only with MQTT 5's reason 0x04.
    Disconnected { keep_will: bool },
    /// The socket closed or failed without DISCONNECT.
    Lost,
    /// The broker closes it (MQTT 5 clients are told the reason); the label is counted.
    Closed(DisconnectReasonCode, &'static str),
    /// Another connection took the session over.
    TakenOver,
    /// The broker is stopping.
    Stopping,
}

/// A round's commit and the acknowledgements waiting for it.
struct RoundDone {
    result: Result<(), IngestError>,
    acks: Vec<Packet>,
}

/// Serves one client connection until it ends.
pub(crate) async fn serve<R, W>(shared: Arc<Shared>, mut reader: R, mut writer: W, peer: SocketAddr)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let max = shared.limits.max_packet_bytes;
    let first = tokio::time::timeout(
        shared.limits.connection_timeout,
        read_first(&mut reader, &mut input, max),
    )
    .await;
    let packet = match first {
        Ok(Ok(packet)) => packet,
        Ok(Err(Some(ConnectError::UnsupportedLevel(level)))) => {
            shared.metrics.refused("unsupported_version");
            tracing::debug!(%peer, level, "Refused a CONNECT of an unsupported protocol level.");
            // CONNACK "unacceptable protocol version", as 3.1.1 spells it.
            let _ = writer.write_all(&[0x20, 2, 0, 1]).await;
            return;
        }
        Ok(Err(Some(ConnectError::Read(error)))) => {
            shared.metrics.refused("malformed");
            tracing::debug!(%peer, %error, "Refused a connection: no valid CONNECT.");
            return;
        }
        Ok(Err(None)) => return,
        Err(_) => {
            shared.metrics.refused("timeout");
            tracing::debug!(%peer, "No CONNECT within the connection timeout.");
            return;
        }
    };
    let version = packet.version;
    let (mut conn, takeover, connack) = match accept(&shared, packet, peer) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            let mut out = BytesMut::new();
            codec::write(version, &refusal, &mut out);
            let _ = writer.write_all(&out).await;
            let _ = writer.shutdown().await;
            return;
        }
    };
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(
        writer,
        out_rx,
        Arc::clone(&conn.backlog),
        Arc::clone(&conn.session),
    ));
    conn.out_tx = Some(out_tx);
    conn.send(&connack);
    conn.resend_inflight();
    conn.drain();
    let mut rounds = FuturesOrdered::new();
    let end = match conn.flush() {
        Ok(()) => run(&mut conn, &mut reader, &mut input, &mut rounds, takeover).await,
        Err(end) => end,
    };
    let linger = matches!(end, End::Closed(..) | End::TakenOver | End::Stopping);
    finish(conn, end, rounds).await;
    if linger {
        // Read (and drop) what the client still sends for a moment: closing a socket with
        // unread data resets it, and the client would lose the DISCONNECT that says why.
        let mut scratch = [0u8; 4096];
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(1..) = reader.read(&mut scratch).await {}
        })
        .await;
    }
}

/// Reads until a whole first packet is there; `Err(None)` if the socket closed first.
async fn read_first<R: AsyncRead + Unpin>(
    reader: &mut R,
    input: &mut BytesMut,
    max: usize,
) -> Result<ConnectPacket, Option<ConnectError>> {
    loop {
        match codec::read_connect(input, max) {
            Err(ConnectError::Read(ReadError::Incomplete)) => {}
            other => return other.map_err(Some),
        }
        input.reserve(READ_CHUNK);
        match reader.read_buf(input).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(_) => {}
        }
    }
}

/// The CONNACK refusing a connection, counted under `reason`.
fn refuse(shared: &Shared, code: ConnectReturnCode, reason: &'static str) -> Packet {
    shared.metrics.refused(reason);
    Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: None,
    })
}

/// Checks a CONNECT and attaches the client's session: the connection, its takeover signal
/// and the CONNACK to send; or the CONNACK refusing it.
#[allow(clippy::result_large_err)]
fn accept(
    shared: &Arc<Shared>,
    packet: ConnectPacket,
    peer: SocketAddr,
) -> Result<(Connection, oneshot::Receiver<()>, Packet), Packet> {
    let ConnectPacket {
        version,
        connect,
        will,
        login,
    } = packet;
    let properties = connect.properties.as_ref();
    if properties.is_some_and(|p| p.authentication_method.is_some()) {
        return Err(refuse(
            shared,
            ConnectReturnCode::BadAuthenticationMethod,
            "auth_method",
        ));
    }
    let credentials = login
        .as_ref()
        .map(|l| (l.username.as_str(), l.password.as_str()));
    let node = match shared.users.login(credentials) {
        Some(Login::Anonymous) => None,
        Some(Login::User { node }) => node,
        None => {
            tracing::debug!(%peer, "Refused a connection: bad user name or password.");
            return Err(refuse(
                shared,
                ConnectReturnCode::BadUserNamePassword,
                "bad_credentials",
            ));
        }
    };
    let mut assigned = None;
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        if version == Version::V311 && !connect.clean_start {
            return Err(refuse(
                shared,
                ConnectReturnCode::ClientIdentifierNotValid,
                "bad_client_id",
            ));
        }
        let id = format!("exawatch-{:016x}", fastrand::u64(..));
        if version == Version::V5 {
            assigned = Some(id.clone());
        }
        id.into()
    } else {
        connect.client_id.into()
    };
    let will = match will {
        Some(will) => {
            if !topic::valid_topic(&will.topic) {
                return Err(refuse(
                    shared,
                    ConnectReturnCode::TopicNameInvalid,
                    "bad_will",
                ));
            }
            let topic_text = std::str::from_utf8(&will.topic).unwrap_or_default();
            if node
                .as_deref()
                .is_some_and(|node| !acl::within(topic_text, node, false))
            {
                acl_denied(shared, "publish");
                return Err(refuse(shared, ConnectReturnCode::NotAuthorized, "acl"));
            }
            let delay = will
                .properties
                .as_ref()
                .and_then(|p| p.delay_interval)
                .unwrap_or(0);
            let message = Message::from_publish(
                Publish {
                    dup: false,
                    qos: will.qos,
                    retain: will.retain,
                    topic: will.topic,
                    pkid: 0,
                    payload: will.message,
                    properties: will.properties.map(|p| {
                        rumqttc::v5::mqttbytes::v5::PublishProperties {
                            payload_format_indicator: p.payload_format_indicator,
                            message_expiry_interval: p.message_expiry_interval,
                            topic_alias: None,
                            response_topic: p.response_topic,
                            correlation_data: p.correlation_data,
                            user_properties: p.user_properties,
                            subscription_identifiers: Vec::new(),
                            content_type: p.content_type,
                        }
                    }),
                },
                Instant::now(),
            );
            Some((Arc::new(message), delay))
        }
        None => None,
    };
    if shared.open.fetch_add(1, Ordering::SeqCst) >= shared.limits.max_connections {
        shared.open.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(%peer, "Refused a connection: broker.max_connections reached.");
        return Err(refuse(shared, ConnectReturnCode::ServerBusy, "busy"));
    }
    shared.metrics.connections.inc();

    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if version == Version::V5 && keep_alive > shared.limits.max_keepalive_secs {
        keep_alive = shared.limits.max_keepalive_secs;
        server_keep_alive = Some(keep_alive);
    }
    let expiry_secs = match version {
        Version::V311 if connect.clean_start => 0,
        Version::V311 => NEVER_EXPIRES,
        Version::V5 => properties
            .and_then(|p| p.session_expiry_interval)
            .unwrap_or(0),
    };
    let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let (takeover_tx, takeover_rx) = oneshot::channel();
    let Attached { session, present } = shared.router.attach(
        &client_id,
        connect.clean_start,
        id,
        expiry_secs,
        takeover_tx,
    );
    let connack = Packet::ConnAck(ConnAck {
        session_present: present,
        code: ConnectReturnCode::Success,
        properties: (version == Version::V5).then(|| ConnAckProperties {
            receive_max: Some(shared.limits.receive_maximum),
            retain_available: Some(1),
            max_packet_size: Some(shared.limits.max_packet_bytes as u32),
            assigned_client_identifier: assigned,
            topic_alias_max: Some(TOPIC_ALIAS_MAX),
            wildcard_subscription_available: Some(1),
            subscription_identifiers_available: Some(1),
            shared_subscription_available: Some(1),
            server_keep_alive,
            session_expiry_interval: None,
            max_qos: None,
            reason_string: None,
            user_properties: Vec::new(),
            response_information: None,
            server_reference: None,
            authentication_method: None,
            authentication_data: None,
        }),
    });
    tracing::debug!(%peer, client_id = %client_id, ?version, keep_alive, present, "Client connected.");
    let conn = Connection {
        shared: Arc::clone(shared),
        id,
        version,
        session,
        node,
        will,
        expiry_secs,
        keep_alive: (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
        client_max_packet: properties
            .and_then(|p| p.max_packet_size)
            .map_or(usize::MAX, |n| n as usize),
        client_receive_max: match version {
            Version::V5 => properties
                .and_then(|p| p.receive_maximum)
                .map_or(usize::from(u16::MAX), usize::from),
            Version::V311 => usize::from(shared.limits.receive_maximum),
        },
        client_alias_max: properties.and_then(|p| p.topic_alias_max).unwrap_or(0),
        aliases_in: HashMap::new(),
        aliases_out: HashMap::new(),
        ingest: shared.ingest.connection(),
        out: BytesMut::new(),
        out_tx: None,
        backlog: Arc::new(AtomicUsize::new(0)),
        acks: Vec::new(),
        pushed: false,
        durable: false,
        acks_pending: 0,
    };
    Ok((conn, takeover_rx, connack))
}

fn acl_denied(shared: &Shared, action: &'static str) {
    shared
        .metrics
        .acl_denied
        .get_or_create(&ActionLabel { action })
        .inc();
}

/// The state of one accepted connection.
struct Connection {
    shared: Arc<Shared>,
    id: u64,
    version: Version,
    session: Arc<Session>,
    /// The node the client's user is bound to (per-node ACL).
    node: Option<String>,
    /// The will and its delay in seconds.
    will: Option<(Arc<Message>, u32)>,
    /// The session expiry interval as it stands (DISCONNECT may change it).
    expiry_secs: u32,
    /// How long the client may stay silent (1.5 × its keep-alive).
    keep_alive: Option<Duration>,
    /// The largest packet the client accepts (MQTT 5).
    client_max_packet: usize,
    /// QoS 1/2 messages the client accepts unacknowledged.
    client_receive_max: usize,
    /// Topic aliases the client accepts from the broker (MQTT 5).
    client_alias_max: u16,
    aliases_in: HashMap<u16, Bytes>,
    aliases_out: HashMap<Bytes, u16>,
    ingest: Box<dyn IngestConnection>,
    /// Packets assembled for the writer.
    out: BytesMut,
    out_tx: Option<mpsc::UnboundedSender<Bytes>>,
    /// Bytes handed to the writer and not yet written.
    backlog: Arc<AtomicUsize>,
    /// This round's acknowledgements, sent once its commit succeeds.
    acks: Vec<Packet>,
    /// Messages were pushed to the ingest this round.
    pushed: bool,
    /// This round has QoS 1/2 messages: commit them to the write-ahead log.
    durable: bool,
    /// QoS 1 messages received and not yet acknowledged (waiting for their round).
    acks_pending: usize,
}

/// The connection's loop: until the socket closes, the client disconnects, or the broker
/// closes it.
async fn run<R: AsyncRead + Unpin>(
    conn: &mut Connection,
    reader: &mut R,
    input: &mut BytesMut,
    rounds: &mut FuturesOrdered<BoxFuture<'static, RoundDone>>,
    mut takeover: oneshot::Receiver<()>,
) -> End {
    let mut stopping = conn.shared.stopping.clone();
    let mut last_read = Instant::now();
    let mut paused_since: Option<Instant> = None;
    let far = Duration::from_secs(86_400 * 365);
    loop {
        let reading = rounds.len() < MAX_ROUNDS;
        match (reading, paused_since) {
            (false, None) => paused_since = Some(Instant::now()),
            (true, Some(since)) => {
                // Silence while the broker was not reading is not the client's.
                last_read = Instant::now();
                conn.shared
                    .metrics
                    .ingest_wait_seconds
                    .inc_by(since.elapsed().as_secs_f64());
                paused_since = None;
            }
            _ => {}
        }
        let idle_until = last_read + conn.keep_alive.unwrap_or(far);
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        let step = tokio::select! {
            biased;
            _ = &mut takeover => Err(End::TakenOver),
            _ = stopping.wait_for(|s| *s) => Err(End::Stopping),
            Some(done) = rounds.next(), if !rounds.is_empty() => conn.finish_round(done),
            read = reader.read_buf(input), if reading => match read {
                Ok(0) | Err(_) => Err(End::Lost),
                Ok(_) => {
                    last_read = Instant::now();
                    let handled = conn.on_input(input);
                    if let Some(round) = conn.take_round() {
                        rounds.push_back(round);
                    }
                    handled
                }
            },
            _ = conn.session.wake.notified() => {
                conn.drain();
                Ok(())
            }
            _ = tokio::time::sleep_until(idle_until.into()), if reading && conn.keep_alive.is_some() => {
                Err(End::Closed(DisconnectReasonCode::KeepAliveTimeout, "keep_alive"))
            }
        };
        if let Err(end) = step.and_then(|()| conn.flush()) {
            return end;
        }
    }
}

/// Ends a connection: what it read reaches the store (acknowledged if the socket still
/// takes it), MQTT 5 clients are told why the broker closed, the will is published or kept
/// for its delay, and the session is released.
async fn finish(
    mut conn: Connection,
    end: End,
    mut rounds: FuturesOrdered<BoxFuture<'static, RoundDone>>,
) {
    while let Some(done) = rounds.next().await {
        let _ = conn.finish_round(done);
    }
    let reason = match &end {
        End::Closed(code, label) => {
            conn.shared.metrics.closed(label);
            Some(*code)
        }
        End::TakenOver => {
            conn.shared.metrics.closed("takeover");
            Some(DisconnectReasonCode::SessionTakenOver)
        }
        End::Stopping => Some(DisconnectReasonCode::ServerShuttingDown),
        End::Disconnected { .. } | End::Lost => None,
    };
    if let Some(reason_code) = reason {
        conn.send(&Packet::Disconnect(Disconnect {
            reason_code,
            properties: None,
        }));
    }
    let _ = conn.flush();
    conn.out_tx = None;
    tracing::debug!(client_id = %conn.session.client_id, ?end, "Client disconnected.");

    let will = match end {
        End::Disconnected { keep_will: false } => None,
        _ => conn.will.take(),
    };
    conn.shared.open.fetch_sub(1, Ordering::SeqCst);
    conn.shared.metrics.connections.dec();
    let shared = Arc::clone(&conn.shared);
    let publish_now = shared.router.detach(
        &conn.session,
        conn.id,
        conn.expiry_secs,
        will,
        Instant::now(),
    );
    // Whoever has the session now (a new connection) may have missed a wake meant for it.
    conn.session.wake.notify_one();
    if let Some(will) = publish_now {
        shared.publish_will(will, &conn.session.client_id).await;
    }
}

/// Sends what the connection task hands over, until it hangs up; wakes the session when the
/// backlog falls below [`OUT_HIGH_WATER`] again.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut chunks: mpsc::UnboundedReceiver<Bytes>,
    backlog: Arc<AtomicUsize>,
    session: Arc<Session>,
) {
    while let Some(first) = chunks.recv().await {
        let mut written = first.len();
        let mut result = writer.write_all(&first).await;
        while result.is_ok() {
            match chunks.try_recv() {
                Ok(chunk) => {
                    written += chunk.len();
                    result = writer.write_all(&chunk).await;
                }
                Err(_) => break,
            }
        }
        let before = backlog.fetch_sub(written, Ordering::SeqCst);
        if result.is_err() {
            return;
        }
        if before >= OUT_HIGH_WATER && before - written < OUT_HIGH_WATER {
            session.wake.notify_one();
        }
    }
    let _ = writer.shutdown().await;
}

impl Connection {
    /// Appends a packet for the writer.
    fn send(&mut self, packet: &Packet) {
        codec::write(self.version, packet, &mut self.out);
    }

    /// Hands the assembled packets to the writer.
    fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let chunk = self.out.split().freeze();
        let size = chunk.len();
        if self.backlog.fetch_add(size, Ordering::SeqCst) + size > OUT_HARD_LIMIT {
            return Err(End::Closed(
                DisconnectReasonCode::ImplementationSpecificError,
                "not_reading",
            ));
        }
        match &self.out_tx {
            Some(tx) => tx.send(chunk).map_err(|_| End::Lost),
            None => Ok(()),
        }
    }

    /// Handles every whole packet in `input`.
    fn on_input(&mut self, input: &mut BytesMut) -> Result<(), End> {
        loop {
            match codec::read(self.version, input, self.shared.limits.max_packet_bytes) {
                Ok(packet) => self.on_packet(packet)?,
                Err(ReadError::Incomplete) => return Ok(()),
                Err(ReadError::TooLarge(size)) => {
                    tracing::debug!(client_id = %self.session.client_id, size, "Packet larger than broker.max_packet_bytes; closing.");
                    return Err(End::Closed(
                        DisconnectReasonCode::PacketTooLarge,
                        "too_large",
                    ));
                }
                Err(error @ ReadError::Malformed(_)) => {
                    tracing::debug!(client_id = %self.session.client_id, %error, "Closing the connection.");
                    return Err(End::Closed(
                        DisconnectReasonCode::MalformedPacket,
                        "malformed",
                    ));
                }
            }
        }
    }

    fn on_packet(&mut self, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish),
            Packet::PubAck(ack) => {
                self.acknowledged(ack.pkid, OutState::Sent, QoS::AtLeastOnce);
                Ok(())
            }
            Packet::PubRec(rec) => {
                self.on_pubrec(rec);
                Ok(())
            }
            Packet::PubComp(comp) => {
                self.acknowledged(comp.pkid, OutState::Released, QoS::ExactlyOnce);
                Ok(())
            }
            Packet::PubRel(rel) => {
                let known = self.session.state.lock().incoming_qos2.remove(&rel.pkid);
                self.send(&Packet::PubComp(PubComp {
                    pkid: rel.pkid,
                    reason: if known {
                        PubCompReason::Success
                    } else {
                        PubCompReason::PacketIdentifierNotFound
                    },
                    properties: None,
                }));
                Ok(())
            }
            Packet::Subscribe(subscribe) => {
                self.on_subscribe(subscribe);
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.on_unsubscribe(unsubscribe);
                Ok(())
            }
            Packet::PingReq(_) => {
                self.send(&Packet::PingResp(PingResp));
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                if let Some(secs) = disconnect
                    .properties
                    .and_then(|p| p.session_expiry_interval)
                {
                    self.expiry_secs = secs;
                }
                Err(End::Disconnected {
                    keep_will: disconnect.reason_code
                        == DisconnectReasonCode::DisconnectWithWillMessage,
                })
            }
            other => {
                tracing::debug!(client_id = %self.session.client_id, packet = ?other, "Unexpected packet; closing.");
                Err(End::Closed(
                    DisconnectReasonCode::ProtocolError,
                    "protocol_error",
                ))
            }
        }
    }

    fn on_publish(&mut self, mut publish: Publish) -> Result<(), End> {
        let alias = publish
            .properties
            .as_mut()
            .and_then(|p| p.topic_alias.take());
        if let Some(alias) = alias {
            if alias == 0 || alias > TOPIC_ALIAS_MAX {
                return Err(End::Closed(
                    DisconnectReasonCode::TopicAliasInvalid,
                    "topic_alias",
                ));
            }
            if publish.topic.is_empty() {
                match self.aliases_in.get(&alias) {
                    Some(topic) => publish.topic = topic.clone(),
                    None => {
                        return Err(End::Closed(
                            DisconnectReasonCode::ProtocolError,
                            "topic_alias",
                        ));
                    }
                }
            } else {
                self.aliases_in.insert(alias, publish.topic.clone());
            }
        }
        if !topic::valid_topic(&publish.topic) {
            return Err(End::Closed(
                DisconnectReasonCode::TopicNameInvalid,
                "bad_topic",
            ));
        }
        if let Some(node) = &self.node {
            let topic = std::str::from_utf8(&publish.topic).unwrap_or_default();
            if !acl::within(topic, node, false) {
                acl_denied(&self.shared, "publish");
                tracing::debug!(
                    topic,
                    node,
                    "Refused by the broker ACL; closing the connection."
                );
                return Err(End::Closed(DisconnectReasonCode::NotAuthorized, "acl"));
            }
        }
        self.shared.metrics.messages_received.inc();
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                if self.over_receive_maximum() {
                    return Err(End::Closed(
                        DisconnectReasonCode::ReceiveMaximumExceeded,
                        "receive_maximum",
                    ));
                }
                self.acks_pending += 1;
                self.acks.push(Packet::PubAck(PubAck {
                    pkid: publish.pkid,
                    reason: PubAckReason::Success,
                    properties: None,
                }));
            }
            QoS::ExactlyOnce => {
                if self.over_receive_maximum() {
                    return Err(End::Closed(
                        DisconnectReasonCode::ReceiveMaximumExceeded,
                        "receive_maximum",
                    ));
                }
                let fresh = self.session.state.lock().incoming_qos2.insert(publish.pkid);
                self.acks.push(Packet::PubRec(PubRec {
                    pkid: publish.pkid,
                    reason: PubRecReason::Success,
                    properties: None,
                }));
                if !fresh {
                    // Sent again before our PUBREC arrived: it was stored and routed once.
                    return Ok(());
                }
            }
        }
        if ingestible(&publish.topic, &publish.payload, publish.retain) {
            self.ingest.push(&publish.topic, &publish.payload);
            self.pushed = true;
            self.durable |= publish.qos != QoS::AtMostOnce;
        }
        if publish.retain || self.shared.router.has_subscriptions() {
            let message = Arc::new(Message::from_publish(publish, Instant::now()));
            if message.retain {
                self.shared.router.retain(&message);
            }
            self.shared.router.route(&message, &self.session.client_id);
        }
        Ok(())
    }

    /// True when the client has as many QoS 1/2 messages unacknowledged as the broker's
    /// receive maximum allows (MQTT 5; a 3.1.1 client has no such limit).
    fn over_receive_maximum(&self) -> bool {
        self.version == Version::V5
            && self.acks_pending + self.session.state.lock().incoming_qos2.len()
                >= usize::from(self.shared.limits.receive_maximum)
    }

    /// The round so far: its commit, and the acknowledgements that wait for it.
    fn take_round(&mut self) -> Option<BoxFuture<'static, RoundDone>> {
        if !self.pushed && self.acks.is_empty() {
            return None;
        }
        let commit = self.pushed.then(|| self.ingest.commit(self.durable));
        let acks = std::mem::take(&mut self.acks);
        self.pushed = false;
        self.durable = false;
        Some(Box::pin(async move {
            let result = match commit {
                Some(commit) => commit.await,
                None => Ok(()),
            };
            RoundDone { result, acks }
        }))
    }

    /// Sends a finished round's acknowledgements: positive once the store has the messages;
    /// when it failed, negative to MQTT 5 clients, and a 3.1.1 client (which has no negative
    /// acknowledgement) is disconnected so that it sends them again.
    fn finish_round(&mut self, done: RoundDone) -> Result<(), End> {
        self.acks_pending -= done
            .acks
            .iter()
            .filter(|a| matches!(a, Packet::PubAck(_)))
            .count();
        if let Err(error) = &done.result {
            tracing::warn!(client_id = %self.session.client_id, error = %error.message, "The store did not take a connection's messages; they are not acknowledged.");
            if self.version == Version::V311 {
                return Err(End::Closed(
                    DisconnectReasonCode::UnspecifiedError,
                    "store_error",
                ));
            }
        }
        for mut ack in done.acks {
            if done.result.is_err() {
                match &mut ack {
                    Packet::PubAck(a) => a.reason = PubAckReason::UnspecifiedError,
                    Packet::PubRec(r) => {
                        r.reason = PubRecReason::UnspecifiedError;
                        self.session.state.lock().incoming_qos2.remove(&r.pkid);
                    }
                    _ => {}
                }
            }
            self.send(&ack);
        }
        Ok(())
    }

    /// A PUBACK (QoS 1) or PUBCOMP (QoS 2) from the client ends that message's exchange.
    fn acknowledged(&mut self, pkid: u16, state: OutState, qos: QoS) {
        {
            let mut session = self.session.state.lock();
            if let Some(at) = session
                .inflight
                .iter()
                .position(|i| i.pkid == pkid && i.state == state && i.delivery.qos == qos)
            {
                session.inflight.remove(at);
            }
        }
        self.drain();
    }

    fn on_pubrec(&mut self, rec: PubRec) {
        let failed = !matches!(
            rec.reason,
            PubRecReason::Success | PubRecReason::NoMatchingSubscribers
        );
        let known = {
            let mut session = self.session.state.lock();
            match session
                .inflight
                .iter()
                .position(|i| i.pkid == rec.pkid && i.delivery.qos == QoS::ExactlyOnce)
            {
                Some(at) if failed => {
                    session.inflight.remove(at);
                    true
                }
                Some(at) => {
                    session.inflight[at].state = OutState::Released;
                    true
                }
                None => false,
            }
        };
        if failed {
            self.drain();
            return;
        }
        self.send(&Packet::PubRel(PubRel {
            pkid: rec.pkid,
            reason: if known {
                PubRelReason::Success
            } else {
                PubRelReason::PacketIdentifierNotFound
            },
            properties: None,
        }));
    }

    fn on_subscribe(&mut self, subscribe: Subscribe) {
        let id = subscribe.properties.as_ref().and_then(|p| p.id);
        let now = Instant::now();
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        for filter in &subscribe.filters {
            let Some(parsed) = topic::parse_subscription(&filter.path) else {
                codes.push(SubscribeReasonCode::TopicFilterInvalid);
                continue;
            };
            if let Some(node) = &self.node
                && !acl::within(&filter.path, node, true)
            {
                acl_denied(&self.shared, "subscribe");
                tracing::debug!(filter = %filter.path, node, "Subscription refused by the broker ACL.");
                codes.push(SubscribeReasonCode::NotAuthorized);
                continue;
            }
            let options = SubOptions {
                qos: filter.qos,
                no_local: filter.nolocal,
                retain_as_published: filter.preserve_retain,
                id,
            };
            let new = self
                .shared
                .router
                .subscribe(&self.session, &filter.path, &parsed, options);
            codes.push(SubscribeReasonCode::Success(filter.qos));
            let send_retained = parsed.group.is_none()
                && match filter.retain_forward_rule {
                    RetainForwardRule::OnEverySubscribe => true,
                    RetainForwardRule::OnNewSubscribe => new,
                    RetainForwardRule::Never => false,
                };
            if send_retained {
                for message in self.shared.router.retained_matching(parsed.filter, now) {
                    retained.push(Delivery {
                        qos: lower(message.qos, filter.qos),
                        retain: true,
                        subscription_ids: id.into_iter().collect(),
                        message,
                    });
                }
            }
        }
        self.send(&Packet::SubAck(SubAck {
            pkid: subscribe.pkid,
            return_codes: codes,
            properties: None,
        }));
        let limit = self.shared.router.queue_limit();
        for delivery in retained {
            if self.session.enqueue(delivery, limit) == Enqueued::QueueFull {
                self.shared.metrics.dropped("queue_full");
            }
        }
        self.drain();
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let reasons = unsubscribe
            .filters
            .iter()
            .map(|filter| {
                if self.shared.router.unsubscribe(&self.session, filter) {
                    UnsubAckReason::Success
                } else {
                    UnsubAckReason::NoSubscriptionExisted
                }
            })
            .collect();
        self.send(&Packet::UnsubAck(UnsubAck {
            pkid: unsubscribe.pkid,
            reasons,
            properties: None,
        }));
    }

    /// Sends again what a resumed session had in flight (PUBLISH with DUP, or PUBREL).
    fn resend_inflight(&mut self) {
        let now = Instant::now();
        let resend: Vec<(u16, OutState, Delivery)> = self
            .session
            .state
            .lock()
            .inflight
            .iter()
            .map(|i| (i.pkid, i.state, i.delivery.clone()))
            .collect();
        for (pkid, state, delivery) in resend {
            match state {
                OutState::Sent => {
                    let publish = self.publish_packet(&delivery, pkid, true, now);
                    self.send(&Packet::Publish(publish));
                }
                OutState::Released => self.send(&Packet::PubRel(PubRel {
                    pkid,
                    reason: PubRelReason::Success,
                    properties: None,
                })),
            }
        }
    }

    /// Sends queued messages while the client's receive window and the writer's backlog
    /// allow; wakes itself again if more are waiting.
    fn drain(&mut self) {
        if self.backlog.load(Ordering::SeqCst) >= OUT_HIGH_WATER {
            return; // The writer wakes the session when it has room.
        }
        let now = Instant::now();
        let mut more = false;
        loop {
            if self.out.len() >= OUT_HIGH_WATER {
                more = true;
                break;
            }
            let (delivery, pkid) = {
                let mut state = self.session.state.lock();
                let Some(front) = state.queue.front() else {
                    break;
                };
                if front.qos != QoS::AtMostOnce && state.inflight.len() >= self.client_receive_max {
                    break; // Until the client acknowledges one.
                }
                let delivery = state.queue.pop_front().expect("front exists");
                if delivery.message.expired(now) {
                    drop(state);
                    self.shared.metrics.dropped("expired");
                    continue;
                }
                let pkid = if delivery.qos == QoS::AtMostOnce {
                    0
                } else {
                    state.next_pkid()
                };
                (delivery, pkid)
            };
            let publish = self.publish_packet(&delivery, pkid, false, now);
            if codec::size(self.version, &publish) > self.client_max_packet {
                self.shared.metrics.dropped("too_large");
                continue;
            }
            self.send(&Packet::Publish(publish));
            self.shared.metrics.messages_delivered.inc();
            if delivery.qos != QoS::AtMostOnce {
                self.session.state.lock().inflight.push_back(Inflight {
                    pkid,
                    delivery,
                    state: OutState::Sent,
                });
            }
        }
        if more {
            self.session.wake.notify_one();
        }
    }

    /// The PUBLISH that sends `delivery` to this client: subscription identifiers, the
    /// remaining expiry interval and a topic alias where the client accepts them (MQTT 5).
    fn publish_packet(
        &mut self,
        delivery: &Delivery,
        pkid: u16,
        dup: bool,
        now: Instant,
    ) -> Publish {
        let message = &delivery.message;
        let mut publish = Publish {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic: message.topic.clone(),
            pkid,
            payload: message.payload.clone(),
            properties: None,
        };
        if self.version == Version::V311 {
            return publish;
        }
        let mut properties = message.properties.clone();
        if !delivery.subscription_ids.is_empty() {
            properties
                .get_or_insert_with(Default::default)
                .subscription_identifiers = delivery.subscription_ids.clone();
        }
        if let Some(at) = message.expires_at {
            let remaining = at.saturating_duration_since(now).as_secs_f64().ceil() as u32;
            properties
                .get_or_insert_with(Default::default)
                .message_expiry_interval = Some(remaining.max(1));
        }
        publish.properties = properties;
        if self.client_alias_max > 0
            && codec::size(self.version, &publish) <= self.client_max_packet
        {
            let next = self.aliases_out.len() as u16 + 1;
            let alias = match self.aliases_out.get(&publish.topic) {
                Some(&alias) => {
                    publish.topic = Bytes::new();
                    Some(alias)
                }
                None if next <= self.client_alias_max => {
                    self.aliases_out.insert(publish.topic.clone(), next);
                    Some(next)
                }
                None => None,
            };
            if let Some(alias) = alias {
                publish
                    .properties
                    .get_or_insert_with(Default::default)
                    .topic_alias = Some(alias);
            }
        }
        publish
    }
}
