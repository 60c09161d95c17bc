//! The exawatch store: samples in, SQL-queryable `samples` table out.
//!
//! Data flow: [`Store::write`] encodes a batch as a WAL record and hands it to the WAL thread,
//! which appends it to the current segment (group commit, fsync per [`FsyncPolicy`]), then
//! inserts the rows into the in-memory [`buffer`] where queries see them at once, and only then
//! acknowledges. A background flush freezes the buffer (rotating to a new WAL segment), writes
//! it as one sorted, ZSTD-compressed Parquet file to the object store, records the file in the
//! [`catalog`] and only then deletes the WAL segments it covers. [`Store::open`] replays the
//! segments the catalog does not cover, so an acknowledged write is never lost.
//! [`SamplesTable`] is the DataFusion view over buffer + frozen buffers + files.

mod block_cache;
pub mod buffer;
pub mod catalog;
mod cluster;
mod config;
mod decimal;
mod ingest;
mod maintenance;
mod metrics;
mod persist;
pub mod rollup;
mod select;
mod series_index;
mod stats;
mod table;
pub mod wal;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use exawatch_protocol::Batch;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;
use snafu::{ResultExt, Snafu};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::buffer::{Buffer, Chunk, HashedBatch, Limits, Rejections, SeriesHasher, SeriesTable};
use crate::catalog::Catalog;
use crate::metrics::StoreMetrics;
use crate::rollup::Resolution;
use crate::wal::SegmentWriter;

pub use config::{FsyncPolicy, StoreConfig};
pub use ingest::{MqttConnection, MqttIngest};
pub use select::{SampleSink, SeriesSamples, Steps, in_parallel};
pub use stats::{Figures, StoreStats};
pub use table::SamplesTable;

/// Store errors.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// The data directory could not be prepared.
    #[snafu(display("data directory {}: {source}", path.display()))]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A WAL operation failed.
    #[snafu(display("{source}"))]
    Wal { source: wal::WalError },
    /// The object store failed.
    #[snafu(display("object store: {source}"))]
    ObjectStore { source: object_store::Error },
    /// The object store URL is neither empty, `file:///…` nor `s3://…`.
    #[snafu(display(
        "store.object_store_url {url:?}: expected empty (<data_dir>/store), file:///absolute/path or s3://bucket/prefix"
    ))]
    ObjectStoreUrl { url: String },
    /// The ingester name cannot be an object-store prefix.
    #[snafu(display(
        "store.ingester {name:?}: expected letters, digits, '.', '_' or '-' (not first '.')"
    ))]
    InvalidIngester { name: String },
    /// The catalog is unreadable.
    #[snafu(display("catalog: {message}"))]
    CatalogFormat { message: String },
    /// Arrow or Parquet failed while building a file.
    #[snafu(display("building a file: {message}"))]
    Encode { message: String },
    /// DataFusion refused the session or the table registration.
    #[snafu(display("setting up a query session: {source}"))]
    Register {
        source: datafusion::error::DataFusionError,
    },
    /// The store is shutting down or its WAL thread stopped.
    #[snafu(display("the store is not accepting writes (shutting down)"))]
    Closed,
    /// The write could not be made durable; nothing of it was stored.
    #[snafu(display("write not stored: {message}"))]
    WriteFailed { message: String },
    /// Too much data is waiting in memory for a flush; retry later.
    #[snafu(display(
        "the store holds {rows} rows in memory, its limit (store.max_buffer_rows); retry later"
    ))]
    Overloaded { rows: usize },
    /// Some samples were refused by a cardinality limit (the others were stored).
    #[snafu(display("{rejected} samples refused by a cardinality limit: {message}"))]
    LimitExceeded { rejected: u64, message: String },
    /// A [`Store::select_series`] read more samples than its limit.
    #[snafu(display(
        "the selection reads more than {limit} samples; narrow the selector or the time range"
    ))]
    TooManySamples { limit: usize },
    /// The WAL queue stayed full; retry later.
    #[snafu(display("the write queue is full (store.write_queue); retry later"))]
    QueueFull,
    /// A named object's path is invalid or belongs to the store itself.
    #[snafu(display("object path {path:?}: {reason}"))]
    ObjectPath { path: String, reason: &'static str },
}

/// A named object kept in the store's object store by another component (models, reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Path relative to the object store's root, e.g. `models/cluster/0001.json`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, nanoseconds since the Unix epoch.
    pub modified_ns: i64,
}

/// Compactions per flusher round, so one round never runs for long.
const MAX_COMPACTIONS_PER_ROUND: usize = 4;

/// Wall-clock time in nanoseconds.
fn now_ns() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
}

/// How long an acknowledged write may wait for room in the WAL queue.
const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// How long an acknowledged write may wait for a flush to make room in a full buffer: about
/// the time a flush of `max_buffer_rows` takes on a small machine, and within the 5 s that
/// Telegraf waits for an answer by default.
const ROOM_WAIT: Duration = Duration::from_secs(4);

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A frozen buffer on its way to a Parquet file; still visible to queries.
#[derive(Debug)]
struct Frozen {
    chunks: Vec<Arc<Chunk>>,
    /// The WAL segments up to this id hold exactly this and older frozen buffers.
    last_segment: u64,
}

/// What queries and the flusher share.
#[derive(Debug)]
struct State {
    table: SeriesTable,
    buffer: Buffer,
    frozen: VecDeque<Frozen>,
    catalog: Catalog,
}

enum Command {
    Write {
        body: Vec<u8>,
        /// Shared with the writer, who drops the batch once it is acknowledged (freeing its
        /// keys off the WAL thread).
        samples: Arc<HashedBatch>,
        ack: Option<oneshot::Sender<Result<Rejections, String>>>,
    },
    Freeze {
        ack: oneshot::Sender<()>,
    },
    Stop {
        ack: oneshot::Sender<()>,
    },
}

#[derive(Debug)]
struct Inner {
    config: StoreConfig,
    wal_dir: PathBuf,
    state: RwLock<State>,
    /// The series table's hasher, for writers to hash their batches with.
    series_hasher: SeriesHasher,
    object_store: Arc<dyn ObjectStore>,
    metrics: StoreMetrics,
    flush_wanted: Notify,
    /// Notified (all waiters) when a flush has made room in the buffer.
    room: Notify,
    /// Serializes catalog changes: flushes, compaction, retention.
    flushing: tokio::sync::Mutex<()>,
    /// Files out of the catalog, deleted when due.
    pending_deletes: Mutex<Vec<(Instant, object_store::path::Path)>>,
    /// The metadata and series index of files read by [`Store::select_series`], by path.
    file_indexes: Mutex<std::collections::HashMap<String, Arc<select::IndexedFile>>>,
    /// Decoded blocks of those files.
    block_cache: block_cache::BlockCache,
}

/// The store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
    commands: mpsc::Sender<Command>,
    wal_thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Store {
    /// Opens (or creates) the store under `data_dir`, replays the WAL and starts the WAL
    /// thread. Call [`Store::run_flusher`] to get periodic flushes.
    pub async fn open(
        data_dir: &Path,
        config: StoreConfig,
        registry: &mut Registry,
    ) -> Result<Self> {
        let wal_dir = data_dir.join("wal");
        std::fs::create_dir_all(&wal_dir).context(DataDirSnafu { path: &wal_dir })?;
        let (object_store, catalog) = open_objects(data_dir, &config, true).await?;
        maintenance::delete_orphans(object_store.as_ref(), &catalog).await?;
        let metrics = StoreMetrics::new(registry);
        let mut state = State::new(catalog, config.limits());
        let next_segment = replay(&wal_dir, &mut state, &metrics)?;
        metrics.set_state(&state);
        let writer = SegmentWriter::create(&wal_dir, next_segment).context(WalSnafu)?;

        let inner = Arc::new(Inner::new(config, wal_dir, state, object_store, metrics));
        let (commands, receiver) = mpsc::channel(inner.config.write_queue.max(1));
        let thread_inner = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("exawatch-wal".into())
            .spawn(move || wal_thread(&thread_inner, writer, receiver))
            .context(DataDirSnafu { path: data_dir })?;
        Ok(Self {
            inner,
            commands,
            wal_thread: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Opens the files of the store under `data_dir` for reading only: no WAL replay, no
    /// writes (they fail with [`Error::Closed`]), nothing changed on disk, so it is safe while
    /// a server runs on the same directory. Queries see the flushed files.
    pub async fn open_read_only(data_dir: &Path, config: &StoreConfig) -> Result<Self> {
        let (object_store, catalog) = open_objects(data_dir, config, false).await?;
        let metrics = StoreMetrics::new(&mut Registry::default());
        let state = State::new(catalog, Limits::default());
        metrics.set_state(&state);
        let inner = Inner::new(
            config.clone(),
            data_dir.join("wal"),
            state,
            object_store,
            metrics,
        );
        let (commands, _) = mpsc::channel(1);
        Ok(Self {
            inner: Arc::new(inner),
            commands,
            wal_thread: Arc::new(Mutex::new(None)),
        })
    }

    /// Opens the whole object store for reading, as a querier of several ingesters does: the
    /// files of the root catalog and of every ingester's (`ingesters/<name>/`), re-read by
    /// [`Store::run_catalog_refresh`]. Like [`Store::open_read_only`] it writes nothing.
    pub async fn open_querier(data_dir: &Path, config: &StoreConfig) -> Result<Self> {
        let root = root_objects(data_dir, config, false)?;
        let catalog = cluster::load_union(root.as_ref()).await?;
        let metrics = StoreMetrics::new(&mut Registry::default());
        let state = State::new(catalog, Limits::default());
        metrics.set_state(&state);
        let inner = Inner::new(config.clone(), data_dir.join("wal"), state, root, metrics);
        let (commands, _) = mpsc::channel(1);
        Ok(Self {
            inner: Arc::new(inner),
            commands,
            wal_thread: Arc::new(Mutex::new(None)),
        })
    }

    /// Re-reads every ingester's catalog every `interval` until `shutdown` resolves (a store
    /// opened with [`Store::open_querier`]); a failed read is logged and the previous files
    /// stay in use.
    pub async fn run_catalog_refresh(
        &self,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match cluster::load_union(self.inner.object_store.as_ref()).await {
                Ok(catalog) => {
                    let mut state = self.inner.state.write();
                    if state.table.tag_columns() != catalog.tag_columns.as_slice() {
                        state.table =
                            SeriesTable::new(catalog.tag_columns.clone(), Limits::default());
                    }
                    state.catalog = catalog;
                    self.inner.metrics.set_state(&state);
                }
                Err(error) => {
                    tracing::warn!(%error, "Cannot re-read the ingesters' catalogs; answering from the files known so far.");
                }
            }
        }
    }

    /// Stores samples and returns once they are in the WAL (fsynced if the policy is
    /// `always`) and visible to queries. While the buffer is full it waits for a flush to
    /// make room, up to [`ROOM_WAIT`]; then it fails, storing nothing, with
    /// [`Error::Overloaded`] (or [`Error::QueueFull`] when the WAL queue stays full).
    pub async fn write(&self, samples: impl Into<Batch>) -> Result<()> {
        let samples = samples.into();
        if samples.is_empty() {
            return Ok(());
        }
        self.wait_for_room().await?;
        let (ack, done) = oneshot::channel();
        let body = wal::encode_batch(&samples);
        let samples = Arc::new(HashedBatch::new(samples, &self.inner.series_hasher));
        let command = Command::Write {
            body,
            samples: Arc::clone(&samples),
            ack: Some(ack),
        };
        tokio::time::timeout(QUEUE_WAIT, self.commands.send(command))
            .await
            .map_err(|_| Error::QueueFull)?
            .map_err(|_| Error::Closed)?;
        match done.await {
            Ok(Ok(rejections)) if rejections.total() > 0 => LimitExceededSnafu {
                rejected: rejections.total(),
                message: rejections.first.unwrap_or_default(),
            }
            .fail(),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(message)) => WriteFailedSnafu { message }.fail(),
            Err(_) => ClosedSnafu.fail(),
        }
    }

    /// Stores samples for a source that is slowed down rather than refused (MQTT): while the
    /// buffer is full it waits, as long as it takes, for a flush to make room (the caller
    /// stops reading its socket meanwhile, so TCP slows the publisher down), then queues them
    /// for the WAL. With `durable` it returns once they are in the WAL, as [`Store::write`]
    /// does; without, once they are queued. Samples refused by a cardinality limit are
    /// counted and the rest stored, as with [`Store::write`].
    pub async fn write_waiting(&self, samples: Batch, durable: bool) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        loop {
            // Created before the check, so a flush that ends in between still wakes it.
            let room = self.inner.room.notified();
            if self.check_memory().is_ok() {
                break;
            }
            room.await;
        }
        let (ack, done) = match durable {
            true => {
                let (ack, done) = oneshot::channel();
                (Some(ack), Some(done))
            }
            false => (None, None),
        };
        let command = Command::Write {
            body: wal::encode_batch(&samples),
            samples: Arc::new(HashedBatch::new(samples, &self.inner.series_hasher)),
            ack,
        };
        self.send(command).await?;
        let Some(done) = done else {
            return Ok(());
        };
        match done.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(message)) => WriteFailedSnafu { message }.fail(),
            Err(_) => ClosedSnafu.fail(),
        }
    }

    /// Waits until the buffer is below `max_buffer_rows`, at most [`ROOM_WAIT`].
    async fn wait_for_room(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        loop {
            // Created before the check, so a flush that ends in between still wakes it.
            let room = self.inner.room.notified();
            match self.check_memory() {
                Ok(()) => return Ok(()),
                Err(overloaded) => {
                    if tokio::time::timeout_at(deadline, room).await.is_err() {
                        return Err(overloaded);
                    }
                }
            }
        }
    }

    fn check_memory(&self) -> Result<()> {
        let rows = self.buffered_rows();
        if rows >= self.inner.config.max_buffer_rows {
            self.inner.flush_wanted.notify_one();
            return OverloadedSnafu { rows }.fail();
        }
        Ok(())
    }

    /// A decoder for MQTT messages (EXAMON or line protocol) that counts what it rejects.
    pub fn mqtt_ingest(&self) -> MqttIngest {
        MqttIngest::new(self.clone())
    }

    /// A fresh DataFusion session over the `samples` table as of now, for one query: at most
    /// `memory_bytes` for its operators, no spilling to disk, PostgreSQL's SQL dialect (the
    /// generic one reserves common tag names: `SELECT node, cluster` fails there).
    pub fn query_context(&self, memory_bytes: usize) -> Result<SessionContext> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(memory_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .context(RegisterSnafu)?;
        let config = SessionConfig::new()
            .with_information_schema(true)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL");
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        self.register(&ctx)?;
        Ok(ctx)
    }

    /// What SQL from API users may do in a [`Store::query_context`]: queries only (no DDL,
    /// DML, `COPY` or `SET`).
    pub fn read_only_sql() -> SQLOptions {
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
    }

    /// Registers the `samples` table (as of now), the rollup views `samples_1m` and
    /// `samples_1h`, and the store's object store in `ctx`.
    pub fn register(&self, ctx: &SessionContext) -> Result<()> {
        for resolution in Resolution::ALL {
            let partial = Arc::new(SamplesTable::rollup(Arc::clone(&self.inner), resolution));
            let view = rollup::view(ctx, partial).context(RegisterSnafu)?;
            ctx.register_table(resolution.table(), view)
                .context(RegisterSnafu)?;
        }
        ctx.register_object_store(
            table::object_store_url().as_ref(),
            Arc::clone(&self.inner.object_store),
        );
        ctx.register_table(
            "samples",
            Arc::new(SamplesTable::new(Arc::clone(&self.inner))),
        )
        .context(RegisterSnafu)?;
        Ok(())
    }

    /// Stores `bytes` as the object `path` (replacing it) in the store's object store, for
    /// other components' objects such as models and reports. Durable when this returns.
    /// Paths under `files/` and `rollups/` and the catalog belong to the store and are
    /// refused.
    pub async fn put_object(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let path = object_path(path)?;
        self.inner
            .object_store
            .put(&path, bytes::Bytes::from(bytes).into())
            .await
            .context(ObjectStoreSnafu)?;
        Ok(())
    }

    /// The object `path` stored with [`Store::put_object`], or `None` if there is none.
    pub async fn get_object(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let path = object_path(path)?;
        match self.inner.object_store.get(&path).await {
            Ok(result) => Ok(Some(
                result.bytes().await.context(ObjectStoreSnafu)?.to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::ObjectStore { source }),
        }
    }

    /// The objects under `prefix` (a directory-like path such as `models/`), sorted by path.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        use futures::TryStreamExt;
        let prefix = object_path(prefix.trim_end_matches('/'))?;
        let mut objects: Vec<ObjectInfo> = self
            .inner
            .object_store
            .list(Some(&prefix))
            .map_ok(|meta| ObjectInfo {
                path: meta.location.to_string(),
                size: meta.size,
                modified_ns: meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
            })
            .try_collect()
            .await
            .context(ObjectStoreSnafu)?;
        objects.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(objects)
    }

    /// Rows waiting in memory (buffer and frozen buffers not yet in files).
    pub fn buffered_rows(&self) -> usize {
        let state = self.inner.state.read();
        state.buffer.rows()
            + state
                .frozen
                .iter()
                .map(|f| chunk_rows(&f.chunks))
                .sum::<usize>()
    }

    /// The catalog as it is now.
    pub fn catalog(&self) -> Catalog {
        self.inner.state.read().catalog.clone()
    }

    /// Writes everything buffered (including writes queued before this call) to Parquet
    /// files now.
    pub async fn flush(&self) -> Result<()> {
        let _flushing = self.inner.flushing.lock().await;
        let (ack, done) = oneshot::channel();
        self.send(Command::Freeze { ack }).await?;
        done.await.map_err(|_| Error::Closed)?;
        persist::persist_frozen(&self.inner).await
    }

    /// An early flush: of the frozen buffers if the WAL thread froze a full one (without
    /// cutting a small file from what came in since), else of everything.
    async fn flush_wanted(&self) -> Result<()> {
        if self.inner.state.read().frozen.is_empty() {
            return self.flush().await;
        }
        let _flushing = self.inner.flushing.lock().await;
        persist::persist_frozen(&self.inner).await
    }

    async fn send(&self, command: Command) -> Result<()> {
        self.commands.send(command).await.map_err(|_| Error::Closed)
    }

    /// Flushes every `flush_interval_secs`, and early when the buffer passes
    /// `flush_max_rows`, until `shutdown` resolves. Failures are logged and retried.
    pub async fn run_flusher(&self, shutdown: impl std::future::Future<Output = ()>) {
        let period = Duration::from_secs_f64(self.inner.config.flush_interval_secs.max(0.1));
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tokio::pin!(shutdown);
        loop {
            let persisted = tokio::select! {
                _ = &mut shutdown => break,
                _ = interval.tick() => self.flush().await,
                _ = self.inner.flush_wanted.notified() => self.flush_wanted().await,
            };
            if let Err(error) = persisted {
                self.inner.metrics.flush_errors.inc();
                tracing::warn!(%error, "Flush failed; the data stays in the WAL and will be retried.");
            }
            if let Err(error) = self.maintain(now_ns()).await {
                tracing::warn!(%error, "Compaction or retention failed; retried on the next round.");
            }
        }
    }

    /// Compacts small files (a few groups per call), applies retention as of `now_ns`, and
    /// deletes files whose delay has passed.
    pub async fn maintain(&self, now_ns: i64) -> Result<()> {
        let _flushing = self.inner.flushing.lock().await;
        for _ in 0..MAX_COMPACTIONS_PER_ROUND {
            if !maintenance::compact_once(&self.inner).await? {
                break;
            }
        }
        maintenance::apply_retention(&self.inner, now_ns).await?;
        maintenance::delete_due(&self.inner, false).await;
        Ok(())
    }

    /// Flushes everything, then stops the WAL thread: writes after this fail with
    /// [`Error::Closed`]. If the flush fails the data stays in the WAL for the next start.
    pub async fn shutdown(&self) -> Result<()> {
        let flushed = self.flush().await;
        let (ack, stopped) = oneshot::channel();
        if self.send(Command::Stop { ack }).await.is_ok() {
            let _ = stopped.await;
        }
        maintenance::delete_due(&self.inner, true).await;
        let handle = self.wal_thread.lock().take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        flushed
    }
}

/// A named object's path, refused if it is empty, malformed or the store's own.
fn object_path(path: &str) -> Result<object_store::path::Path> {
    let fail = |reason| ObjectPathSnafu { path, reason }.fail();
    if path.is_empty() {
        return fail("empty");
    }
    let parsed = match object_store::path::Path::parse(path) {
        Ok(parsed) => parsed,
        Err(_) => return fail("not a valid object path"),
    };
    let first = parsed.parts().next().map(|p| p.as_ref().to_owned());
    if parsed.as_ref() == catalog::CATALOG_PATH
        || matches!(first.as_deref(), Some("files" | "rollups"))
    {
        return fail("belongs to the store (files/, rollups/, catalog.json)");
    }
    Ok(parsed)
}

/// The object store (`data_dir/store`, a directory or S3 as configured; an ingester's
/// prefix of it) and its catalog.
async fn open_objects(
    data_dir: &Path,
    config: &StoreConfig,
    create: bool,
) -> Result<(Arc<dyn ObjectStore>, Catalog)> {
    let root = root_objects(data_dir, config, create)?;
    let object_store: Arc<dyn ObjectStore> = if config.ingester.is_empty() {
        root
    } else {
        let prefix = cluster::ingester_prefix(&config.ingester)?;
        Arc::new(object_store::prefix::PrefixStore::new(root, prefix))
    };
    let catalog = persist::load_catalog(object_store.as_ref()).await?;
    Ok((object_store, catalog))
}

/// The whole object store, as `store.object_store_url` names it.
fn root_objects(
    data_dir: &Path,
    config: &StoreConfig,
    create: bool,
) -> Result<Arc<dyn ObjectStore>> {
    let url = config.object_store_url.as_str();
    let directory = match url {
        "" => data_dir.join("store"),
        _ if url.starts_with("s3://") => return s3_store(url, config),
        _ => match url.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => PathBuf::from(path),
            _ => return ObjectStoreUrlSnafu { url }.fail(),
        },
    };
    if create {
        std::fs::create_dir_all(&directory).context(DataDirSnafu { path: &directory })?;
    }
    Ok(Arc::new(
        LocalFileSystem::new_with_prefix(&directory).context(ObjectStoreSnafu)?,
    ))
}

/// An S3-compatible store at `s3://bucket/prefix`.
fn s3_store(url: &str, config: &StoreConfig) -> Result<Arc<dyn ObjectStore>> {
    let Some(rest) = url.strip_prefix("s3://") else {
        return ObjectStoreUrlSnafu { url }.fail();
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(&config.s3_region)
        .with_allow_http(config.s3_allow_http)
        .with_retry(object_store::RetryConfig {
            retry_timeout: Duration::from_secs_f64(config.s3_retry_timeout_secs),
            ..object_store::RetryConfig::default()
        });
    if !config.s3_endpoint.is_empty() {
        builder = builder.with_endpoint(&config.s3_endpoint);
    }
    if !config.s3_access_key_id.is_empty() {
        builder = builder.with_access_key_id(&config.s3_access_key_id);
    }
    if !config.s3_secret_access_key.is_empty() {
        builder = builder.with_secret_access_key(&config.s3_secret_access_key);
    }
    let s3 = builder.build().context(ObjectStoreSnafu)?;
    let prefix = prefix.trim_matches('/');
    Ok(if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
    })
}

impl State {
    fn new(catalog: Catalog, limits: Limits) -> Self {
        Self {
            table: SeriesTable::new(catalog.tag_columns.clone(), limits),
            buffer: Buffer::default(),
            frozen: VecDeque::new(),
            catalog,
        }
    }

    /// Every row not yet in a file: the frozen chunks (oldest first), then the buffer's.
    fn unflushed_chunks(&self) -> Vec<Arc<Chunk>> {
        let mut chunks: Vec<Arc<Chunk>> = self
            .frozen
            .iter()
            .flat_map(|f| f.chunks.iter().cloned())
            .collect();
        chunks.extend(self.buffer.chunks());
        chunks
    }
}

impl Inner {
    fn new(
        config: StoreConfig,
        wal_dir: PathBuf,
        state: State,
        object_store: Arc<dyn ObjectStore>,
        metrics: StoreMetrics,
    ) -> Self {
        Self {
            wal_dir,
            series_hasher: state.table.hasher().clone(),
            state: RwLock::new(state),
            object_store,
            metrics,
            flush_wanted: Notify::new(),
            room: Notify::new(),
            flushing: tokio::sync::Mutex::new(()),
            pending_deletes: Mutex::new(Vec::new()),
            file_indexes: Mutex::new(std::collections::HashMap::new()),
            block_cache: block_cache::BlockCache::new(config.read_cache_mib << 20),
            config,
        }
    }
}

fn chunk_rows(chunks: &[Arc<Chunk>]) -> usize {
    chunks.iter().map(|c| c.keys.len()).sum()
}

/// Replays the WAL segments the catalog does not cover into `state`; returns the id for the
/// next segment.
fn replay(wal_dir: &Path, state: &mut State, metrics: &StoreMetrics) -> Result<u64> {
    let persisted = state.catalog.persisted_segment;
    let segments = wal::list_segments(wal_dir).context(WalSnafu)?;
    let started = Instant::now();
    let mut replayed = 0u64;
    for &id in &segments {
        let path = wal::segment_path(wal_dir, id);
        if id <= persisted {
            // Persisted, but the process stopped before deleting it.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let contents = wal::read_segment(&path).context(WalSnafu)?;
        if contents.discarded_bytes > 0 {
            tracing::warn!(
                segment = %path.display(),
                bytes = contents.discarded_bytes,
                "WAL segment ends in a torn or corrupt record; replaying the intact records before it."
            );
            metrics.wal_discarded_bytes.inc_by(contents.discarded_bytes);
        }
        for batch in contents.batches {
            replayed += batch.len() as u64;
            let batch = HashedBatch::new(batch, state.table.hasher());
            let rejections =
                state
                    .buffer
                    .insert(&batch, &mut state.table)
                    .map_err(|e| Error::Encode {
                        message: e.to_string(),
                    })?;
            metrics.count_rejections(&rejections);
        }
    }
    if replayed > 0 || !segments.is_empty() {
        tracing::info!(
            samples = replayed,
            segments = segments.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Replayed the write-ahead log."
        );
    }
    metrics.wal_replayed_samples.inc_by(replayed);
    Ok(segments.last().copied().unwrap_or(0).max(persisted) + 1)
}

/// The WAL thread: group-commits queued writes, inserts them into the buffer, acknowledges,
/// and freezes the buffer on request, until told to stop.
fn wal_thread(inner: &Inner, mut writer: SegmentWriter, mut commands: mpsc::Receiver<Command>) {
    let mut wal = WalState {
        writer_ok: true,
        last_sync: Instant::now(),
    };
    let mut pending: Vec<Command> = Vec::new();
    while let Some(first) = commands.blocking_recv() {
        pending.push(first);
        while pending.len() < 1024 {
            match commands.try_recv() {
                Ok(command) => pending.push(command),
                Err(_) => break,
            }
        }
        let mut writes = Vec::new();
        for command in pending.drain(..) {
            match command {
                Command::Write { body, samples, ack } => writes.push((body, samples, ack)),
                Command::Freeze { ack } => {
                    commit(inner, &mut writer, &mut wal, std::mem::take(&mut writes));
                    freeze(inner, &mut writer, &mut wal);
                    let _ = ack.send(());
                }
                Command::Stop { ack } => {
                    commit(inner, &mut writer, &mut wal, std::mem::take(&mut writes));
                    if wal.writer_ok {
                        let _ = writer.sync();
                    }
                    commands.close();
                    let _ = ack.send(());
                    return;
                }
            }
        }
        commit(inner, &mut writer, &mut wal, writes);
    }
}

/// The WAL thread's bookkeeping.
struct WalState {
    /// False after a failed append: the segment may end in a torn record.
    writer_ok: bool,
    last_sync: Instant,
}

type Write = (
    Vec<u8>,
    Arc<HashedBatch>,
    Option<oneshot::Sender<Result<Rejections, String>>>,
);

/// Appends a group of writes to the WAL, then makes them visible, then acknowledges; freezes
/// the buffer once it holds `flush_max_rows`.
fn commit(inner: &Inner, writer: &mut SegmentWriter, wal: &mut WalState, writes: Vec<Write>) {
    if writes.is_empty() {
        return;
    }
    if let Err(message) = append_group(inner, writer, wal, &writes) {
        inner.metrics.wal_write_errors.inc();
        for (_, samples, ack) in writes {
            inner
                .metrics
                .samples_refused
                .inc_by(samples.batch().len() as u64);
            if let Some(ack) = ack {
                let _ = ack.send(Err(message.clone()));
            }
        }
        return;
    }
    let mut written = 0u64;
    let mut acks = Vec::with_capacity(writes.len());
    let mut state = inner.state.write();
    let State { table, buffer, .. } = &mut *state;
    for (_, samples, ack) in writes {
        written += samples.batch().len() as u64;
        let rejections = match buffer.insert(&samples, table) {
            Ok(rejections) => rejections,
            Err(e) => {
                tracing::error!(error = %e, "Buffer insert failed.");
                Rejections::default()
            }
        };
        written -= rejections.total();
        inner.metrics.count_rejections(&rejections);
        acks.push((ack, rejections));
    }
    let rows = buffer.rows();
    inner.metrics.set_state(&state);
    drop(state);
    inner.metrics.samples_written.inc_by(written);
    for (ack, rejections) in acks {
        if let Some(ack) = ack {
            let _ = ack.send(Ok(rejections));
        }
    }
    if rows >= inner.config.flush_max_rows {
        // Frozen here rather than by the flusher, so that no file is larger than about
        // `flush_max_rows` however far behind the flusher is.
        freeze(inner, writer, wal);
        inner.flush_wanted.notify_one();
    }
}

fn append_group(
    inner: &Inner,
    writer: &mut SegmentWriter,
    wal: &mut WalState,
    writes: &[Write],
) -> Result<(), String> {
    if !wal.writer_ok {
        // The last append failed part-way: continue in a fresh segment so that a torn
        // record never hides later ones at replay.
        *writer =
            SegmentWriter::create(&inner.wal_dir, writer.id() + 1).map_err(|e| e.to_string())?;
        wal.writer_ok = true;
    }
    let bodies: Vec<&[u8]> = writes.iter().map(|w| w.0.as_slice()).collect();
    let result = writer.append(&bodies).and_then(|bytes| {
        inner.metrics.wal_bytes_written.inc_by(bytes);
        let due = match inner.config.wal_fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval => {
                wal.last_sync.elapsed() >= Duration::from_millis(inner.config.wal_fsync_interval_ms)
            }
            FsyncPolicy::Never => false,
        };
        if due {
            writer.sync()?;
            wal.last_sync = Instant::now();
        }
        Ok(())
    });
    if let Err(e) = result {
        wal.writer_ok = false;
        tracing::error!(error = %e, "WAL write failed; the writes are refused.");
        return Err(e.to_string());
    }
    if writer.bytes() >= inner.config.wal_segment_bytes {
        // Rotation does not move data between buffers: only file boundaries change.
        let _ = writer.sync();
        *writer =
            SegmentWriter::create(&inner.wal_dir, writer.id() + 1).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Moves the buffer to the frozen queue and starts a new WAL segment, so that the frozen
/// data is exactly the segments up to the old one. Does nothing when the buffer is empty.
fn freeze(inner: &Inner, writer: &mut SegmentWriter, wal: &mut WalState) {
    if inner.state.read().buffer.rows() == 0 {
        return;
    }
    let _ = writer.sync();
    let last_segment = writer.id();
    match SegmentWriter::create(&inner.wal_dir, last_segment + 1) {
        Ok(next) => {
            *writer = next;
            wal.writer_ok = true;
        }
        Err(e) => {
            tracing::error!(error = %e, "Cannot start a new WAL segment; the buffer is not frozen.");
            return;
        }
    }
    let mut state = inner.state.write();
    let chunks = state.buffer.take();
    state.frozen.push_back(Frozen {
        chunks,
        last_segment,
    });
}
