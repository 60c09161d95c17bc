//! Decoding of MQTT messages (EXAMON, EXAMON SDK v3 where a rule says so, or Influx line
//! protocol) into store writes, counting what is dropped.

use std::sync::Arc;

use exawatch_protocol::Batch;
use exawatch_protocol::examon::{Decoded, TopicCache};
use exawatch_protocol::job::{self, JobRecord};
use exawatch_protocol::mqtt::{self, Scheme, TopicRule};

use crate::Store;
use crate::metrics::{KindLabel, ReasonLabel};

/// Decodes MQTT messages and writes their samples; malformed messages are counted per reason
/// (`exawatch_messages_dropped_total{reason}`) and dropped.
#[derive(Debug, Clone)]
pub struct MqttIngest {
    store: Store,
    /// `[[ingest.mqtt]]`: topics read another way than EXAMON's default.
    rules: Arc<[TopicRule]>,
}

impl MqttIngest {
    pub(crate) fn new(store: Store, rules: &[TopicRule]) -> Self {
        Self {
            store,
            rules: rules.into(),
        }
    }

    /// Decodes one message into `out` as `rule` (the topic's, if any) says; samples without
    /// a timestamp get `now_ns`. Returns false if it was dropped, in whole or in part.
    fn decode(
        &self,
        rule: Option<&TopicRule>,
        topic: &[u8],
        payload: &[u8],
        now_ns: i64,
        out: &mut Batch,
    ) -> bool {
        let metrics = &self.store.inner.metrics;
        let kind = match mqtt::decode_with(rule, topic, payload, now_ns, out) {
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

    /// Counts and logs a dropped job record.
    fn count_job_error(&self, error: &job::JobError, topic: &[u8]) {
        self.store
            .inner
            .metrics
            .messages_dropped
            .get_or_create(&ReasonLabel {
                reason: error.reason(),
            })
            .inc();
        tracing::debug!(%error, topic = %String::from_utf8_lossy(topic), "Dropped a job record.");
    }

    /// A decoder for one MQTT connection's messages, committed to the store in batches.
    pub fn connection(&self) -> MqttConnection {
        MqttConnection {
            ingest: self.clone(),
            batch: Batch::new(),
            topics: TopicCache::default(),
            now_ns: None,
            jobs: Vec::new(),
        }
    }
}

/// One MQTT connection's messages on their way to the store: pushed as they are read, then
/// committed together.
#[derive(Debug)]
pub struct MqttConnection {
    ingest: MqttIngest,
    batch: Batch,
    /// The series of the connection's EXAMON topics.
    topics: TopicCache,
    /// The time given to samples without one, read once per batch.
    now_ns: Option<i64>,
    /// Job records of the pending batch.
    jobs: Vec<JobRecord>,
}

impl MqttConnection {
    /// Decodes one message into the pending batch (malformed ones are counted and dropped).
    pub fn push(&mut self, topic: &[u8], payload: &[u8]) {
        let Self {
            ingest,
            batch,
            topics,
            now_ns,
            jobs,
        } = self;
        if job::is_job_topic(topic) {
            for error in job::decode(topic, payload, jobs) {
                ingest.count_job_error(&error, topic);
            }
            return;
        }
        let rule = mqtt::scheme_of(&ingest.rules, topic);
        let default_scheme = rule.is_none_or(|r| r.scheme == Scheme::Examon);
        if default_scheme && topics.decode_csv(topic, payload, batch) {
            return;
        }
        let now_ns = *now_ns.get_or_insert_with(exawatch_protocol::time::now_ns);
        ingest.decode(rule, topic, payload, now_ns, batch);
    }

    /// Takes the pending batch and stores it: its job records with [`Store::write_jobs`],
    /// then its samples with [`Store::write_waiting`].
    pub fn commit(
        &mut self,
        durable: bool,
    ) -> impl std::future::Future<Output = crate::Result<()>> + Send + 'static {
        let batch = std::mem::take(&mut self.batch);
        let jobs = std::mem::take(&mut self.jobs);
        self.now_ns = None;
        let store = self.ingest.store.clone();
        async move {
            store.write_jobs(jobs).await?;
            store.write_waiting(batch, durable).await
        }
    }
}
