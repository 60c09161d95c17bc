//! Sessions: what the broker keeps of a client across its connections (subscriptions, the
//! messages queued for it, the QoS 1/2 exchanges in flight), and the messages they carry.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use tokio::sync::{Notify, oneshot};

/// Session expiry interval meaning "never" (MQTT 5 §3.1.2.11.2).
pub(crate) const NEVER_EXPIRES: u32 = u32::MAX;

/// A published message as the broker routes it.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) topic: Bytes,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// MQTT 5 properties passed on to subscribers (without topic alias and subscription
    /// identifiers, which are per connection and per subscription).
    pub(crate) properties: Option<PublishProperties>,
    /// When the message expires (MQTT 5 message expiry interval).
    pub(crate) expires_at: Option<Instant>,
}

impl Message {
    /// The message a client's PUBLISH carries (its topic alias already resolved).
    pub(crate) fn from_publish(publish: Publish, now: Instant) -> Self {
        let mut properties = publish.properties;
        let expires_at = properties.as_mut().and_then(|p| {
            p.topic_alias = None;
            p.subscription_identifiers.clear();
            p.message_expiry_interval
                .map(|secs| now + Duration::from_secs(u64::from(secs)))
        });
        Self {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            expires_at,
        }
    }

    /// True once the message's expiry interval has passed.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The topic as text (topics are checked to be UTF-8 when published).
    pub(crate) fn topic_str(&self) -> &str {
        std::str::from_utf8(&self.topic).unwrap_or_default()
    }
}

/// A message on its way to one subscriber.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) message: Arc<Message>,
    /// The QoS it is sent with: the lower of the message's and the subscription's.
    pub(crate) qos: QoS,
    /// The RETAIN flag it is sent with.
    pub(crate) retain: bool,
    /// Identifiers of the subscriptions it matched (MQTT 5).
    pub(crate) subscription_ids: Vec<usize>,
}

/// Where a QoS 1 or 2 message sent to the client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutState {
    /// Sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent,
    /// PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// A QoS 1 or 2 message sent to the client and not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Inflight {
    pub(crate) pkid: u16,
    pub(crate) delivery: Delivery,
    pub(crate) state: OutState,
}

/// The options of one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubOptions {
    pub(crate) qos: QoS,
    /// Not sent the messages its own client publishes (MQTT 5).
    pub(crate) no_local: bool,
    /// Sent with the RETAIN flag as published, instead of cleared (MQTT 5).
    pub(crate) retain_as_published: bool,
    /// The subscription identifier (MQTT 5).
    pub(crate) id: Option<usize>,
}

/// A will message waiting for its delay (MQTT 5 will delay interval).
#[derive(Debug)]
pub(crate) struct PendingWill {
    pub(crate) due: Instant,
    pub(crate) message: Arc<Message>,
}

/// A client's session.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) client_id: Arc<str>,
    /// A connection has the session now (read without the lock, to pick shared-subscription
    /// members).
    online: AtomicBool,
    pub(crate) state: Mutex<SessionState>,
    /// Wakes the owning connection: messages were queued, or its writer has room again.
    pub(crate) wake: Notify,
}

/// The mutable part of a [`Session`].
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    /// The connection that has the session now.
    pub(crate) owner: Option<u64>,
    /// Tells the owning connection to close: another connection took the session over.
    pub(crate) takeover: Option<oneshot::Sender<()>>,
    /// Filter (as subscribed, `$share/…` included) → options.
    pub(crate) subscriptions: HashMap<String, SubOptions>,
    /// Messages waiting to be sent.
    pub(crate) queue: VecDeque<Delivery>,
    /// QoS 1/2 messages sent and not acknowledged, oldest first.
    pub(crate) inflight: VecDeque<Inflight>,
    last_pkid: u16,
    /// Packet identifiers of QoS 2 messages received and not yet released (PUBREL).
    pub(crate) incoming_qos2: HashSet<u16>,
    /// Seconds the session outlives its connection ([`NEVER_EXPIRES`]: for ever).
    pub(crate) expiry_secs: u32,
    /// When the last connection ended.
    pub(crate) disconnected_at: Option<Instant>,
    pub(crate) pending_will: Option<PendingWill>,
}

impl SessionState {
    /// A free packet identifier for a message to the client.
    pub(crate) fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.wrapping_add(1).max(1);
            let pkid = self.last_pkid;
            if !self.inflight.iter().any(|i| i.pkid == pkid) {
                return pkid;
            }
        }
    }

    /// True when the session has outlived its expiry interval at `now`.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.owner.is_none()
            && self.expiry_secs != NEVER_EXPIRES
            && self.disconnected_at.is_some_and(|at| {
                now.saturating_duration_since(at) >= Duration::from_secs(self.expiry_secs.into())
            })
    }
}

/// What became of a message handed to [`Session::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    Queued,
    /// QoS 0 to a session without a connection: not kept (as MQTT allows).
    SkippedOffline,
    /// The session's queue is full.
    QueueFull,
}

impl Session {
    pub(crate) fn new(client_id: Arc<str>) -> Self {
        Self {
            client_id,
            online: AtomicBool::new(false),
            state: Mutex::new(SessionState::default()),
            wake: Notify::new(),
        }
    }

    pub(crate) fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Marks the session owned by connection `owner` (or by none).
    pub(crate) fn set_owner(&self, state: &mut SessionState, owner: Option<u64>) {
        state.owner = owner;
        self.online.store(owner.is_some(), Ordering::Relaxed);
    }

    /// Queues a message for the client (up to `limit` waiting) and wakes its connection.
    pub(crate) fn enqueue(&self, delivery: Delivery, limit: usize) -> Enqueued {
        let mut state = self.state.lock();
        let online = state.owner.is_some();
        if !online && delivery.qos == QoS::AtMostOnce {
            return Enqueued::SkippedOffline;
        }
        if state.queue.len() >= limit {
            return Enqueued::QueueFull;
        }
        state.queue.push_back(delivery);
        drop(state);
        if online {
            self.wake.notify_one();
        }
        Enqueued::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(qos: QoS) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: Bytes::from_static(b"t"),
                payload: Bytes::new(),
                qos,
                retain: false,
                properties: None,
                expires_at: None,
            }),
            qos,
            retain: false,
            subscription_ids: Vec::new(),
        }
    }

    #[test]
    fn offline_sessions_keep_qos1_not_qos0_and_stay_bounded() {
        let session = Session::new("c".into());
        assert_eq!(
            session.enqueue(delivery(QoS::AtMostOnce), 2),
            Enqueued::SkippedOffline
        );
        assert_eq!(
            session.enqueue(delivery(QoS::AtLeastOnce), 2),
            Enqueued::Queued
        );
        assert_eq!(
            session.enqueue(delivery(QoS::ExactlyOnce), 2),
            Enqueued::Queued
        );
        assert_eq!(
            session.enqueue(delivery(QoS::AtLeastOnce), 2),
            Enqueued::QueueFull
        );
    }

    #[test]
    fn packet_identifiers_skip_zero_and_those_in_flight() {
        let mut state = SessionState {
            last_pkid: u16::MAX - 1,
            ..SessionState::default()
        };
        assert_eq!(state.next_pkid(), u16::MAX);
        state.inflight.push_back(Inflight {
            pkid: 1,
            delivery: delivery(QoS::AtLeastOnce),
            state: OutState::Sent,
        });
        assert_eq!(state.next_pkid(), 2);
    }

    #[test]
    fn expiry() {
        let now = Instant::now();
        let mut state = SessionState {
            expiry_secs: 5,
            disconnected_at: Some(now),
            ..SessionState::default()
        };
        assert!(!state.expired(now + Duration::from_secs(4)));
        assert!(state.expired(now + Duration::from_secs(5)));
        state.expiry_secs = NEVER_EXPIRES;
        assert!(!state.expired(now + Duration::from_secs(1 << 40)));
        state.expiry_secs = 0;
        state.owner = Some(1);
        assert!(!state.expired(now), "a connected session never expires");
    }
}
