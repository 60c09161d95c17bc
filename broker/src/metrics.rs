//! The broker's meters on `/metrics` (prefix `exawatch_broker_`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label with a fixed set of values (bounded cardinality).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// What the broker counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct BrokerMetrics {
    /// Connections open now (past CONNECT).
    pub(crate) connections: Gauge,
    /// CONNECTs refused, per reason.
    pub(crate) connections_refused: Family<ReasonLabel, Counter>,
    /// Connections the broker closed, per reason.
    pub(crate) connections_closed: Family<ReasonLabel, Counter>,
    /// PUBLISH packets received from clients.
    pub(crate) messages_received: Counter,
    /// Messages sent to subscribers.
    pub(crate) messages_delivered: Counter,
    /// Messages not sent to a subscriber, per reason.
    pub(crate) messages_dropped: Family<ReasonLabel, Counter>,
    /// Seconds connections spent not reading because the store was behind (backpressure).
    pub(crate) ingest_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Packets refused by the per-node ACL, per action.
    pub(crate) acl_denied: Family<crate::acl::ActionLabel, Counter>,
}

impl BrokerMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("exawatch_broker");
        r.register(
            "connections",
            "MQTT connections open now",
            self.connections.clone(),
        );
        r.register(
            "connections_refused",
            "CONNECTs refused, per reason",
            self.connections_refused.clone(),
        );
        r.register(
            "connections_closed",
            "Connections the broker closed, per reason",
            self.connections_closed.clone(),
        );
        r.register(
            "messages_received",
            "PUBLISH packets received from clients",
            self.messages_received.clone(),
        );
        r.register(
            "messages_delivered",
            "Messages sent to MQTT subscribers",
            self.messages_delivered.clone(),
        );
        r.register(
            "messages_dropped",
            "Messages not sent to a subscriber: its queue was full (queue_full), the message expired (expired) or exceeded the subscriber's maximum packet size (too_large); ingest never drops",
            self.messages_dropped.clone(),
        );
        r.register(
            "ingest_wait_seconds",
            "Seconds connections spent not reading because the store was behind (TCP backpressure on publishers)",
            self.ingest_wait_seconds.clone(),
        );
        r.register(
            "acl_denied",
            "Packets refused by the per-node ACL",
            self.acl_denied.clone(),
        );
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub(crate) fn closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub(crate) fn dropped(&self, reason: &'static str) {
        self.messages_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}
