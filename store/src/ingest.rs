//! Decoding of MQTT messages (EXAMON, or Influx line protocol) into store writes, counting
//! what is dropped.

use exawatch_protocol::Batch;
use exawatch_protocol::examon::Decoded;
use exawatch_protocol::mqtt;

use crate::Store;
use crate::metrics::{KindLabel, ReasonLabel};

/// Decodes MQTT messages and writes their samples; malformed messages are counted per reason
/// (`exawatch_messages_dropped_total{reason}`) and dropped.
#[derive(Debug, Clone)]
pub struct MqttIngest {
    store: Store,
}

impl MqttIngest {
    pub(crate) fn new(store: Store) -> Self {
        Self { store }
    }

    /// Decodes one message into `out` (samples without a timestamp get `now_ns`); returns
    /// false if it was dropped, in whole or in part.
    pub fn decode(&self, topic: &[u8], payload: &[u8], now_ns: i64, out: &mut Batch) -> bool {
        let metrics = &self.store.inner.metrics;
        let kind = match mqtt::decode(topic, payload, now_ns, out) {
            Ok(Decoded::Samples(_)) => return true,
            Ok(Decoded::Marker) => "marker",
            Ok(Decoded::Command) => "command",
            Err(error) => {
                metrics
                    .messages_dropped
                    .get_or_create(&ReasonLabel {
                        reason: error.reason(),
                    })
                    .inc();
                tracing::debug!(%error, topic = %String::from_utf8_lossy(topic), "Dropped a malformed message.");
                return false;
            }
        };
        metrics
            .messages_ignored
            .get_or_create(&KindLabel { kind })
            .inc();
        true
    }

    /// Writes decoded samples without waiting for the WAL (see [`Store::write_unconfirmed`]).
    pub async fn write(&self, samples: Batch) -> crate::Result<()> {
        self.store.write_unconfirmed(samples).await
    }
}
