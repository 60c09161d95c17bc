//! The `[store]` section of the configuration.

use exawatch_protocol::settings::{InvalidSetting, Validate, at_least, redacted, within};
use serde::{Deserialize, Serialize};

/// The longest delay or timeout a `*_secs` key takes: a year.
const MAX_SECS: f64 = 365.0 * 86_400.0;
/// The longest retention a `*_days` key takes: a thousand years.
const MAX_DAYS: f64 = 365_000.0;

/// When the WAL is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Before every acknowledgement: survives power loss, costs a sync per group commit.
    Always,
    /// At most every `wal_fsync_interval_ms`: survives a crash of the process (the data is in
    /// the page cache before the acknowledgement), may lose that interval on power loss.
    Interval,
    /// Never: leave it to the OS.
    Never,
}

/// Store settings. `Debug` shows whether `s3_secret_access_key` is set, never its value.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Seconds between flushes of the in-memory buffer to a Parquet file.
    pub flush_interval_secs: f64,
    /// Flush early when this many rows are buffered.
    pub flush_max_rows: usize,
    /// When the WAL is fsynced.
    pub wal_fsync: FsyncPolicy,
    /// With `wal_fsync = "interval"`, the longest time between fsyncs.
    pub wal_fsync_interval_ms: u64,
    /// Start a new WAL segment after this many bytes.
    pub wal_segment_bytes: u64,
    /// Batches that may wait for the WAL before writers are held back.
    pub write_queue: usize,
    /// Most rows held in memory (buffer and buffers being flushed). At it, HTTP writes wait
    /// a few seconds for a flush and are then refused (503, retried by clients), and MQTT
    /// connections stop reading until a flush makes room (TCP slows the publishers down), so
    /// memory stays bounded when flushes cannot keep up or the object store is down.
    pub max_buffer_rows: usize,
    /// ZSTD level of Parquet files.
    pub zstd_level: i32,
    /// Where the Parquet files and the catalog live: empty for `<data_dir>/store`,
    /// `file:///absolute/path` for another directory (one shared by several processes), or
    /// `s3://bucket/prefix` for an S3-compatible object store (the WAL stays local).
    pub object_store_url: String,
    /// This process's name when several ingesters share one object store (`exawatch up
    /// --role ingest`): its files and catalog go under `ingesters/<name>/`, its WAL stays in
    /// `data_dir`. Empty (one process): at the object store's root.
    pub ingester: String,
    /// An ingester's: the base URL of its HTTP API as queriers reach it, written to the
    /// object store so that queriers answer with what it holds in memory. Empty:
    /// `http(s)://<api.listen>`, with this machine's host name if it listens on every address.
    pub advertise_url: String,
    /// A querier's: bearer token it presents to ingesters that require API users (a `read`
    /// user's token on them). Never logged.
    pub cluster_token: String,
    /// S3 endpoint for S3-compatible servers (MinIO, Ceph, …); empty for AWS.
    pub s3_endpoint: String,
    /// S3 region.
    pub s3_region: String,
    /// S3 credentials; empty to take them from the environment (`AWS_ACCESS_KEY_ID`, …).
    pub s3_access_key_id: String,
    /// S3 secret; empty to take it from the environment (`AWS_SECRET_ACCESS_KEY`).
    pub s3_secret_access_key: String,
    /// Allow plain HTTP to the S3 endpoint.
    pub s3_allow_http: bool,
    /// How long one object-store request is retried before the operation fails (and the
    /// flush is retried on the next round, the data staying in the WAL meanwhile).
    pub s3_retry_timeout_secs: f64,
    /// A metric may have at most this many live series (written in the last hour); samples
    /// of further series are refused and counted.
    pub max_series_per_metric: usize,
    /// The table may have at most this many tag keys (columns).
    pub max_tag_keys: usize,
    /// Compaction merges small files of one day into files of up to this many rows.
    pub compaction_target_rows: usize,
    /// Compaction waits until at least this many small files of one day can be merged.
    pub compaction_min_files: usize,
    /// Files whose newest sample is older than this many days are dropped (0: keep all).
    pub retention_days: f64,
    /// Rollup files (`samples_1m`, `samples_1h`) whose newest bucket is older than this many
    /// days are dropped (0: keep all). Usually longer than `retention_days`.
    pub rollup_retention_days: f64,
    /// Files replaced by compaction or dropped by retention are deleted after this delay, so
    /// that queries already reading them finish.
    pub delete_delay_secs: f64,
    /// Decoded blocks of files kept in memory for later queries, at most this many MiB
    /// (0: none kept).
    pub read_cache_mib: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            flush_interval_secs: 60.0,
            flush_max_rows: 1_000_000,
            wal_fsync: FsyncPolicy::Interval,
            wal_fsync_interval_ms: 1000,
            wal_segment_bytes: 64 << 20,
            write_queue: 256,
            max_buffer_rows: 4_000_000,
            zstd_level: 3,
            object_store_url: String::new(),
            ingester: String::new(),
            advertise_url: String::new(),
            cluster_token: String::new(),
            s3_endpoint: String::new(),
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_allow_http: false,
            s3_retry_timeout_secs: 60.0,
            max_series_per_metric: 1_000_000,
            max_tag_keys: 1000,
            compaction_target_rows: 20_000_000,
            compaction_min_files: 4,
            retention_days: 0.0,
            rollup_retention_days: 0.0,
            delete_delay_secs: 120.0,
            read_cache_mib: 1024,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Taken apart whole, so that a new field cannot be left out here.
        let Self {
            flush_interval_secs,
            flush_max_rows,
            wal_fsync,
            wal_fsync_interval_ms,
            wal_segment_bytes,
            write_queue,
            max_buffer_rows,
            zstd_level,
            object_store_url,
            ingester,
            advertise_url,
            cluster_token,
            s3_endpoint,
            s3_region,
            s3_access_key_id,
            s3_secret_access_key,
            s3_allow_http,
            s3_retry_timeout_secs,
            max_series_per_metric,
            max_tag_keys,
            compaction_target_rows,
            compaction_min_files,
            retention_days,
            rollup_retention_days,
            delete_delay_secs,
            read_cache_mib,
        } = self;
        f.debug_struct("StoreConfig")
            .field("flush_interval_secs", flush_interval_secs)
            .field("flush_max_rows", flush_max_rows)
            .field("wal_fsync", wal_fsync)
            .field("wal_fsync_interval_ms", wal_fsync_interval_ms)
            .field("wal_segment_bytes", wal_segment_bytes)
            .field("write_queue", write_queue)
            .field("max_buffer_rows", max_buffer_rows)
            .field("zstd_level", zstd_level)
            .field("object_store_url", object_store_url)
            .field("ingester", ingester)
            .field("advertise_url", advertise_url)
            .field("cluster_token", &redacted(cluster_token))
            .field("s3_endpoint", s3_endpoint)
            .field("s3_region", s3_region)
            .field("s3_access_key_id", s3_access_key_id)
            .field("s3_secret_access_key", &redacted(s3_secret_access_key))
            .field("s3_allow_http", s3_allow_http)
            .field("s3_retry_timeout_secs", s3_retry_timeout_secs)
            .field("max_series_per_metric", max_series_per_metric)
            .field("max_tag_keys", max_tag_keys)
            .field("compaction_target_rows", compaction_target_rows)
            .field("compaction_min_files", compaction_min_files)
            .field("retention_days", retention_days)
            .field("rollup_retention_days", rollup_retention_days)
            .field("delete_delay_secs", delete_delay_secs)
            .field("read_cache_mib", read_cache_mib)
            .finish()
    }
}

impl Validate for StoreConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        within(
            "flush_interval_secs",
            self.flush_interval_secs,
            0.1..=MAX_SECS,
        )?;
        at_least("flush_max_rows", self.flush_max_rows, 1)?;
        at_least("write_queue", self.write_queue, 1)?;
        at_least("max_buffer_rows", self.max_buffer_rows, 1)?;
        // What Parquet's ZSTD codec takes.
        within("zstd_level", self.zstd_level, 1..=22)?;
        within(
            "s3_retry_timeout_secs",
            self.s3_retry_timeout_secs,
            0.0..=MAX_SECS,
        )?;
        at_least("compaction_target_rows", self.compaction_target_rows, 1)?;
        within("retention_days", self.retention_days, 0.0..=MAX_DAYS)?;
        within(
            "rollup_retention_days",
            self.rollup_retention_days,
            0.0..=MAX_DAYS,
        )?;
        within("delete_delay_secs", self.delete_delay_secs, 0.0..=MAX_SECS)?;
        if !self.ingester.is_empty() && crate::cluster::ingester_prefix(&self.ingester).is_err() {
            return Err(InvalidSetting {
                key: "ingester".into(),
                value: format!("{:?}", self.ingester),
                allowed: "letters, digits, '.', '_' and '-', not first '.'".into(),
            });
        }
        let url = &self.advertise_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(InvalidSetting {
                key: "advertise_url".into(),
                value: format!("{url:?}"),
                allowed: "empty, or a URL starting with http:// or https://".into(),
            });
        }
        Ok(())
    }
}

impl StoreConfig {
    /// The cardinality limits.
    pub fn limits(&self) -> crate::buffer::Limits {
        crate::buffer::Limits {
            max_series_per_metric: self.max_series_per_metric,
            max_tag_keys: self.max_tag_keys,
        }
    }

    /// Settings for tests: small, fast, no periodic flush surprises.
    pub fn test_config() -> Self {
        Self {
            flush_interval_secs: 3600.0,
            ..Self::default()
        }
    }
}
