//! Decoding of EXAMON MQTT messages into store writes, counting what is dropped.

use exawatch_protocol::Sample;
use exawatch_protocol::examon::{self, Decoded};

use crate::Store;
use crate::metrics::{KindLabel, ReasonLabel};

/// Decodes EXAMON messages and writes their samples; malformed messages are counted per
/// reason (`exawatch_messages_dropped_total{reason}`) and dropped.
#[derive(Debug, Clone)]
pub struct ExamonIngest {
    store: Store,
}

impl ExamonIngest {
    pub(crate) fn new(store: Store) -> Self {
        Self { store }
    }

    /// Decodes one message into `out`; returns false if it was dropped.
    pub fn decode(&self, topic: &[u8], payload: &[u8], out: &mut Vec<Sample>) -> bool {
        let metrics = &self.store.inner.metrics;
        match examon::decode(topic, payload, out) {
            Ok(Decoded::Samples(_)) => true,
            Ok(Decoded::Marker) => {
                metrics
                    .messages_ignored
                    .get_or_create(&KindLabel { kind: "marker" })
                    .inc();
                true
            }
            Ok(Decoded::Command) => {
                metrics
                    .messages_ignored
                    .get_or_create(&KindLabel { kind: "command" })
                    .inc();
                true
            }
            Err(error) => {
                metrics
                    .messages_dropped
                    .get_or_create(&ReasonLabel {
                        reason: error.reason(),
                    })
                    .inc();
                tracing::debug!(%error, topic = %String::from_utf8_lossy(topic), "Dropped a malformed message.");
                false
            }
        }
    }

    /// Writes decoded samples without waiting for the WAL (see [`Store::write_unconfirmed`]).
    pub async fn write(&self, samples: Vec<Sample>) -> crate::Result<()> {
        self.store.write_unconfirmed(samples).await
    }
}
