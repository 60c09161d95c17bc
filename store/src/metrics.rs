//! The store's meters on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::State;

/// Label of rejected messages.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// Label of samples refused by a cardinality limit.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimitLabel {
    pub(crate) limit: &'static str,
}

/// Label of messages that carry no samples.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: &'static str,
}

#[derive(Debug, Default)]
pub(crate) struct StoreMetrics {
    pub(crate) samples_written: Counter,
    pub(crate) samples_refused: Counter,
    pub(crate) samples_rejected: Family<LimitLabel, Counter>,
    pub(crate) messages_dropped: Family<ReasonLabel, Counter>,
    pub(crate) messages_ignored: Family<KindLabel, Counter>,
    pub(crate) wal_bytes_written: Counter,
    pub(crate) wal_write_errors: Counter,
    pub(crate) wal_discarded_bytes: Counter,
    pub(crate) wal_replayed_samples: Counter,
    pub(crate) flushes: Counter,
    pub(crate) flush_errors: Counter,
    pub(crate) flushed_rows: Counter,
    pub(crate) compactions: Counter,
    pub(crate) expired_rows: Counter,
    pub(crate) buffered_rows: Gauge,
    pub(crate) history_loaded: Gauge,
    pub(crate) series: Gauge,
    pub(crate) files: Gauge,
    pub(crate) file_bytes: Gauge,
    pub(crate) file_rows: Gauge,
    pub(crate) read_cache_bytes: Gauge,
    pub(crate) read_cache_hits: Counter,
    pub(crate) read_cache_misses: Counter,
}

impl StoreMetrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let reasons = exawatch_protocol::examon::DecodeError::REASONS;
        let otlp = exawatch_protocol::otlp::Rejection::REASONS;
        let otlp_request = exawatch_protocol::otlp::DecodeError::REASON;
        for reason in reasons
            .into_iter()
            .chain(["line_protocol", otlp_request])
            .chain(otlp)
            .chain(exawatch_protocol::job::JobError::REASONS)
        {
            let _ = m.messages_dropped.get_or_create(&ReasonLabel { reason });
        }
        let r = registry.sub_registry_with_prefix("exawatch");
        r.register(
            "samples_written",
            "Samples written to the WAL and buffer",
            m.samples_written.clone(),
        );
        r.register(
            "samples_refused",
            "Samples refused because the WAL write failed",
            m.samples_refused.clone(),
        );
        r.register(
            "samples_rejected",
            "Samples refused by a cardinality limit (store.max_series_per_metric, store.max_tag_keys)",
            m.samples_rejected.clone(),
        );
        r.register(
            "messages_dropped",
            "Malformed messages (MQTT), requests and data points (OTLP) dropped, by reason",
            m.messages_dropped.clone(),
        );
        r.register(
            "messages_ignored",
            "Well-formed messages without samples (markers, commands)",
            m.messages_ignored.clone(),
        );
        r.register(
            "wal_written_bytes",
            "Bytes appended to the WAL",
            m.wal_bytes_written.clone(),
        );
        r.register(
            "wal_write_errors",
            "Failed WAL appends",
            m.wal_write_errors.clone(),
        );
        r.register(
            "wal_discarded_bytes",
            "Bytes of torn or corrupt WAL records skipped at replay",
            m.wal_discarded_bytes.clone(),
        );
        r.register(
            "wal_replayed_samples",
            "Samples recovered from the WAL at start",
            m.wal_replayed_samples.clone(),
        );
        r.register(
            "flushes",
            "Buffers written to Parquet files",
            m.flushes.clone(),
        );
        r.register(
            "flush_errors",
            "Failed flushes (retried)",
            m.flush_errors.clone(),
        );
        r.register(
            "flushed_rows",
            "Rows written to Parquet files",
            m.flushed_rows.clone(),
        );
        r.register(
            "compactions",
            "Groups of files merged into one",
            m.compactions.clone(),
        );
        r.register(
            "expired_rows",
            "Rows dropped by retention",
            m.expired_rows.clone(),
        );
        r.register(
            "buffered_rows",
            "Rows in memory not yet in a file",
            m.buffered_rows.clone(),
        );
        r.register(
            "history_loaded",
            "1 once the catalog of stored files is read; 0 while the object store has been unreachable since start (writes go to the WAL only, queries answer 503)",
            m.history_loaded.clone(),
        );
        r.register("series", "Series known since start", m.series.clone());
        r.register(
            "read_cache_bytes",
            "Bytes of decoded file blocks held for queries (store.read_cache_mib)",
            m.read_cache_bytes.clone(),
        );
        r.register(
            "read_cache_hits",
            "Series runs of files that queries found decoded in memory",
            m.read_cache_hits.clone(),
        );
        r.register(
            "read_cache_misses",
            "Series runs of files that queries read and decoded",
            m.read_cache_misses.clone(),
        );
        r.register("files", "Parquet files in the catalog", m.files.clone());
        r.register(
            "file_bytes",
            "Bytes of Parquet files in the catalog",
            m.file_bytes.clone(),
        );
        r.register(
            "file_rows",
            "Rows in Parquet files in the catalog",
            m.file_rows.clone(),
        );
        m
    }

    /// Counts samples refused by cardinality limits.
    pub(crate) fn count_rejections(&self, rejections: &crate::buffer::Rejections) {
        for (limit, n) in [
            ("series_per_metric", rejections.series_per_metric),
            ("tag_keys", rejections.tag_keys),
        ] {
            if n > 0 {
                self.samples_rejected
                    .get_or_create(&LimitLabel { limit })
                    .inc_by(n);
            }
        }
    }

    /// Refreshes the gauges from the state.
    pub(crate) fn set_state(&self, state: &State) {
        let frozen: usize = state
            .frozen
            .iter()
            .map(|f| crate::chunk_rows(&f.chunks))
            .sum();
        self.buffered_rows
            .set((state.buffer.rows() + frozen) as i64);
        self.series.set(state.table.len() as i64);
        self.files.set(state.catalog.files.len() as i64);
        self.file_bytes
            .set(state.catalog.files.iter().map(|f| f.bytes as i64).sum());
        self.file_rows
            .set(state.catalog.files.iter().map(|f| f.rows as i64).sum());
    }
}
