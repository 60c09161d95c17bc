//! The MQTT publisher: EXAMON messages to one broker over plain TCP, through a bounded
//! offline buffer.
//!
//! Data flow: [`Publisher::publish`] (never blocks) → the offline buffer (at most
//! `offline_buffer_messages`, oldest dropped first) → the forwarder task, which moves
//! messages into rumqttc's request channel only while connected → the event-loop task,
//! which polls rumqttc's [`EventLoop`] continuously, reconnects with exponential backoff and
//! hands back whatever rumqttc had not sent when the connection dropped.
//!
//! A message counts as published once written to the broker (QoS 0) or acknowledged by it
//! (QoS 1). QoS 0 messages in the socket when the connection breaks are lost, as MQTT allows.
//!
//! [`Publisher::start_subscribed`] also subscribes to topic filters (again after every
//! reconnection, since sessions are clean) and hands what arrives on them to a bounded
//! channel: the collector's EXAMON command channel.

mod buffer;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use exawatch_protocol::Sample;
use exawatch_protocol::examon::{encode_payload, encode_topic};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, Request};
use snafu::ensure;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use buffer::Message;
use buffer::OfflineBuffer;

use crate::MqttConnection;
use crate::error::{BrokerAddressSnafu, OfflineBufferSnafu, QosSnafu, Result};

/// Largest MQTT packet sent or accepted; EXAMON messages are around a hundred bytes.
pub const MAX_PACKET_BYTES: usize = 1 << 20;
/// Capacity of rumqttc's request channel (messages handed over but not yet written).
pub const REQUEST_CHANNEL_CAPACITY: usize = 4096;
/// MQTT port used when the broker address has none.
pub const DEFAULT_MQTT_PORT: u16 = 1883;

/// Messages the forwarder takes from the offline buffer at a time.
const BATCH: usize = 512;
const KEEP_ALIVE: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long [`Publisher::close`] waits for the DISCONNECT to go out.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Messages received on subscribed topics that may wait for the consumer; more are dropped.
pub const INCOMING_CAPACITY: usize = 64;
/// Tag keys written first, in this order, so topics read like EXAMON's own.
const LEADING_TAGS: [&str; 5] = ["org", "cluster", "node", "plugin", "chnl"];

/// Settings of one publisher (one MQTT connection).
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherConfig {
    /// The broker (`HOST[:PORT]`, e.g. `127.0.0.1:1883`; `[::1]:1883` for IPv6) and the
    /// login, when the broker requires one.
    pub connection: MqttConnection,
    /// MQTT client id; unique per connection, or the broker drops the older one.
    pub client_id: String,
    /// 0 (at most once) or 1 (at least once).
    pub qos: u8,
    /// Messages kept while the broker is unreachable; beyond that the oldest are dropped.
    pub offline_buffer_messages: usize,
}

/// Counters of one publisher, as returned by [`Publisher::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Messages handed to [`Publisher::publish`].
    pub accepted: u64,
    /// Messages written to the broker (QoS 0) or acknowledged by it (QoS 1).
    pub published: u64,
    /// Messages dropped: the offline buffer overflowed, or rumqttc refused them.
    pub dropped: u64,
    /// Messages waiting in the offline buffer.
    pub queued: u64,
    /// Failed connection attempts and lost connections.
    pub connection_errors: u64,
    /// Whether the broker connection is up.
    pub connected: bool,
}

impl PublisherStats {
    /// Messages neither published nor dropped yet.
    pub fn pending(&self) -> u64 {
        self.accepted.saturating_sub(self.published + self.dropped)
    }
}

/// State shared by the handle and its two tasks.
#[derive(Debug)]
struct Shared {
    buffer: Mutex<OfflineBuffer>,
    /// Wakes the forwarder when messages arrive.
    wake: Notify,
    accepted: AtomicU64,
    published: AtomicU64,
    /// Messages rumqttc refused (invalid topic, closed channel).
    rejected: AtomicU64,
    connection_errors: AtomicU64,
}

impl Shared {
    /// The buffer; a panic elsewhere leaves it consistent, so poisoning is ignored.
    fn buffer(&self) -> MutexGuard<'_, OfflineBuffer> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self, connected: bool) -> PublisherStats {
        let (queued, overflowed) = {
            let buffer = self.buffer();
            (buffer.len() as u64, buffer.dropped())
        };
        PublisherStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            dropped: overflowed + self.rejected.load(Ordering::Relaxed),
            queued,
            connection_errors: self.connection_errors.load(Ordering::Relaxed),
            connected,
        }
    }

    fn requeue(&self, messages: Vec<Message>) {
        if !messages.is_empty() {
            self.buffer().requeue(messages.into_iter());
            self.wake.notify_one();
        }
    }
}

/// A running publisher: a cheap, non-blocking [`publish`](Self::publish) in front of an MQTT
/// connection that keeps reconnecting. Dropping it stops its tasks without flushing; call
/// [`close`](Self::close) to deliver what is buffered first.
#[derive(Debug)]
pub struct Publisher {
    shared: Arc<Shared>,
    broker: String,
    client: AsyncClient,
    connected: watch::Receiver<bool>,
    stop_forwarder: watch::Sender<bool>,
    stop_event_loop: watch::Sender<bool>,
    forwarder: JoinHandle<()>,
    event_loop: JoinHandle<()>,
}

impl Publisher {
    /// Validates the config and starts connecting in the background; must be called inside
    /// a tokio runtime. Never waits for the broker: messages are buffered until it answers.
    pub fn start(config: PublisherConfig) -> Result<Self> {
        Self::start_subscribed(config, Vec::new()).map(|(publisher, _)| publisher)
    }

    /// As [`start`](Self::start), and subscribes (QoS 1) to each of `filters` on every
    /// connection; messages arriving on them come out of the returned receiver, at most
    /// [`INCOMING_CAPACITY`] waiting (more are dropped with a WARN).
    pub fn start_subscribed(
        config: PublisherConfig,
        filters: Vec<String>,
    ) -> Result<(Self, mpsc::Receiver<Message>)> {
        let PublisherConfig {
            connection,
            client_id,
            qos,
            offline_buffer_messages,
        } = config;
        let (host, port) = parse_broker(&connection.broker)?;
        let qos = match qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => return QosSnafu { qos }.fail(),
        };
        ensure!(offline_buffer_messages > 0, OfflineBufferSnafu);

        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_request_channel_capacity(REQUEST_CHANNEL_CAPACITY);
        if let Some((username, password)) = connection.credentials() {
            options.set_credentials(username, password);
        }
        let (client, event_loop) = AsyncClient::new(options, REQUEST_CHANNEL_CAPACITY);

        let shared = Arc::new(Shared {
            buffer: Mutex::new(OfflineBuffer::new(offline_buffer_messages)),
            wake: Notify::new(),
            accepted: AtomicU64::new(0),
            published: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
        });
        let (connected_tx, connected) = watch::channel(false);
        let (stop_forwarder, forwarder_stop) = watch::channel(false);
        let (stop_event_loop, event_loop_stop) = watch::channel(false);
        let (incoming_tx, incoming) = mpsc::channel(INCOMING_CAPACITY);
        let event_loop = tokio::spawn(drive_event_loop(EventLoopTask {
            event_loop,
            client: client.clone(),
            filters,
            incoming: incoming_tx,
            shared: Arc::clone(&shared),
            connected: connected_tx,
            stop: event_loop_stop,
            qos,
            broker: connection.broker.clone(),
        }));
        let forwarder = tokio::spawn(forward(
            client.clone(),
            Arc::clone(&shared),
            connected.clone(),
            forwarder_stop,
            qos,
        ));
        let publisher = Self {
            shared,
            broker: connection.broker,
            client,
            connected,
            stop_forwarder,
            stop_event_loop,
            forwarder,
            event_loop,
        };
        Ok((publisher, incoming))
    }

    /// The broker address this publisher was started with.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// Queues one message; never blocks. If the buffer is full the oldest message is dropped.
    pub fn publish(&self, topic: String, payload: String) {
        self.publish_many(std::iter::once(Message {
            topic,
            payload: payload.into_bytes(),
        }));
    }

    /// Queues one sample as an EXAMON message (topic from [`sample_topic`]).
    pub fn publish_sample(&self, sample: &Sample) {
        self.publish(
            sample_topic(sample),
            encode_payload(&sample.value, sample.time_ns),
        );
    }

    /// Queues several messages under one lock.
    pub fn publish_many(&self, messages: impl IntoIterator<Item = Message>) {
        let mut n = 0;
        {
            let mut buffer = self.shared.buffer();
            for message in messages {
                buffer.push(message);
                n += 1;
            }
        }
        self.shared.accepted.fetch_add(n, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }

    /// The current counters.
    pub fn stats(&self) -> PublisherStats {
        self.shared.stats(*self.connected.borrow())
    }

    /// Waits until every accepted message is published or dropped; false if `timeout` passed
    /// first.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.stats().pending() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Flushes for at most `timeout` (not at all while disconnected), disconnects cleanly and
    /// stops the tasks. Returns the final counters; messages still undelivered are counted in
    /// [`PublisherStats::pending`], not in `dropped`.
    pub async fn close(self, timeout: Duration) -> PublisherStats {
        let flushed = if *self.connected.borrow() {
            self.flush(timeout).await
        } else {
            self.stats().pending() == 0
        };
        self.stop_forwarder.send_replace(true);
        let mut forwarder = self.forwarder;
        if tokio::time::timeout(DISCONNECT_TIMEOUT, &mut forwarder)
            .await
            .is_err()
        {
            forwarder.abort();
        }
        let mut event_loop = self.event_loop;
        // The event loop ends by itself once the DISCONNECT is written.
        let disconnected = flushed
            && *self.connected.borrow()
            && self.client.try_disconnect().is_ok()
            && tokio::time::timeout(DISCONNECT_TIMEOUT, &mut event_loop)
                .await
                .is_ok();
        if !disconnected {
            self.stop_event_loop.send_replace(true);
            let _ = event_loop.await;
        }
        let stats = self.shared.stats(false);
        info!(
            broker = %self.broker,
            published = stats.published,
            dropped = stats.dropped,
            pending = stats.pending(),
            "MQTT publisher closed."
        );
        stats
    }
}

/// The EXAMON topic of a sample: `org`, `cluster`, `node`, `plugin`, `chnl` first (those
/// present), then the other tags in key order, then the metric name.
pub fn sample_topic(sample: &Sample) -> String {
    let leading = LEADING_TAGS
        .iter()
        .filter_map(|key| sample.tag(key).map(|value| (*key, value)));
    let rest = sample
        .tags
        .iter()
        .filter(|(key, _)| !LEADING_TAGS.contains(&key.as_str()))
        .map(|(key, value)| (key.as_str(), value.as_str()));
    encode_topic(leading.chain(rest), &sample.metric)
}

/// Splits `HOST[:PORT]` (or `[V6]:PORT`, optionally prefixed `mqtt://` or `tcp://`).
pub(crate) fn parse_broker(broker: &str) -> Result<(String, u16)> {
    let bad = || BrokerAddressSnafu { broker }.build();
    let text = broker.trim();
    let text = ["mqtt://", "tcp://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme))
        .unwrap_or(text);
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            // A bare IPv6 address or no port at all.
            _ => (text, None),
        }
    };
    let port = match port {
        None => DEFAULT_MQTT_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(bad)?,
    };
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// True once the handle asked to stop, or went away.
fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Moves messages from the offline buffer into rumqttc, only while connected.
async fn forward(
    client: AsyncClient,
    shared: Arc<Shared>,
    mut connected: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    qos: QoS,
) {
    loop {
        if stopping(&stop) {
            return;
        }
        if !*connected.borrow_and_update() {
            tokio::select! {
                changed = connected.changed() => if changed.is_err() { return },
                _ = stop.changed() => {}
            }
            continue;
        }
        let batch = shared.buffer().take(BATCH);
        if batch.is_empty() {
            tokio::select! {
                () = shared.wake.notified() => {}
                _ = connected.changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let mut batch = batch.into_iter();
        while let Some(message) = batch.next() {
            if !*connected.borrow() {
                // Keep the rest for the next connection rather than piling it up in rumqttc.
                shared.requeue(std::iter::once(message).chain(batch).collect());
                break;
            }
            if let Err(error) = client
                .publish(message.topic, qos, false, message.payload)
                .await
            {
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                debug!(%error, "MQTT client refused a message.");
            }
        }
    }
}

/// What the event-loop task owns.
struct EventLoopTask {
    event_loop: EventLoop,
    /// Used to (re)subscribe after each CONNACK.
    client: AsyncClient,
    filters: Vec<String>,
    incoming: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    connected: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
    qos: QoS,
    broker: String,
}

/// Polls rumqttc continuously; on errors counts, hands undelivered messages back to the
/// offline buffer, backs off and retries (polling again reconnects).
async fn drive_event_loop(task: EventLoopTask) {
    let EventLoopTask {
        mut event_loop,
        client,
        filters,
        incoming,
        shared,
        connected,
        mut stop,
        qos,
        broker,
    } = task;
    let mut backoff = BACKOFF_MIN;
    // Failures since the last successful connection: only the first one is a WARN.
    let mut failures: u64 = 0;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            event = event_loop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = BACKOFF_MIN;
                failures = 0;
                // Before the forwarder starts filling the request channel.
                for filter in &filters {
                    if let Err(error) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                        warn!(%broker, %filter, %error, "Cannot subscribe to a command topic.");
                    }
                }
                connected.send_replace(true);
                info!(%broker, "Connected to the MQTT broker.");
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => {
                shared.published.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let message = Message {
                    topic: publish.topic,
                    payload: publish.payload.to_vec(),
                };
                if let Err(mpsc::error::TrySendError::Full(_)) = incoming.try_send(message) {
                    warn!(%broker, "Incoming message dropped: they arrive faster than read.");
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                shared.published.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                connected.send_replace(false);
                return;
            }
            Ok(_) => {}
            Err(error) => {
                shared.connection_errors.fetch_add(1, Ordering::Relaxed);
                let was_connected = connected.send_replace(false);
                if failures == 0 {
                    if was_connected {
                        warn!(%broker, %error, "Lost the MQTT broker; buffering and reconnecting.");
                    } else {
                        warn!(%broker, %error, "Cannot reach the MQTT broker; buffering and retrying.");
                    }
                } else {
                    debug!(%broker, %error, failures, "MQTT broker still unreachable.");
                }
                failures += 1;
                shared.requeue(take_pending(&mut event_loop));
                let jitter = backoff.mul_f64(fastrand::f64() * 0.2);
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => return,
                    () = tokio::time::sleep(backoff + jitter) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Publishes rumqttc set aside when the connection broke. With a clean session it would
/// discard them on reconnect, so they go back to the offline buffer instead.
fn take_pending(event_loop: &mut EventLoop) -> Vec<Message> {
    std::mem::take(&mut event_loop.pending)
        .into_iter()
        .filter_map(|request| match request {
            Request::Publish(publish) => Some(Message {
                topic: publish.topic,
                payload: publish.payload.to_vec(),
            }),
            _ => None,
        })
        .collect()
}
