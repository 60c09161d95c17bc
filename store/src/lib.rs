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
//!
//! Where each part lives: `writer` (the WAL thread and the replay), `persist` (flushes to
//! Parquet and the catalog), `maintenance` (compaction, retention, deletes), `rollup`
//! (1-minute and 1-hour aggregates), `table` (the DataFusion table), `session` (SQL sessions
//! and their policy), `select` (whole series for PromQL), `objects` (the object store and the
//! named objects of other components), `cluster` (several ingesters over one object store),
//! `late_catalog` (starting while the object store is unreachable).

mod block_cache;
pub mod buffer;
pub mod catalog;
mod cluster;
mod config;
mod decimal;
mod ingest;
pub mod jobs;
mod late_catalog;
mod maintenance;
mod metrics;
mod objects;
mod persist;
pub mod rollup;
mod select;
mod series_index;
mod session;
mod stats;
mod table;
pub mod wal;
mod writer;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use exawatch_protocol::Batch;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;
use snafu::{ResultExt, Snafu};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::buffer::{Buffer, Chunk, HashedBatch, Limits, SeriesHasher, SeriesTable};
use crate::catalog::Catalog;
use crate::metrics::StoreMetrics;
use crate::objects::{object_store, open_objects, root_objects};
use crate::wal::SegmentWriter;
use crate::writer::{Command, replay, wal_thread};

pub use cluster::UnflushedRequest;
pub use config::{FsyncPolicy, StoreConfig};
pub use ingest::{MqttConnection, MqttIngest};
pub use jobs::{JobFilter, StoredJob};
pub use objects::ObjectInfo;
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
    /// The store was opened to read only: a querier, or a tool reading a server's files.
    #[snafu(display(
        "this process stores nothing (role = \"query\", or opened to read only): send writes to an ingester"
    ))]
    ReadOnly,
    /// The object store has been unreachable since start, so the files' catalog is unknown.
    #[snafu(display(
        "the object store has been unreachable since this server started, so the stored history is not loaded yet; writes are kept in the WAL meanwhile (retry later)"
    ))]
    HistoryUnavailable,
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

/// Compactions per flusher round, so one round never runs for long.
const MAX_COMPACTIONS_PER_ROUND: usize = 4;

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
    /// Names this state's row numbering: rows are numbered from 0 in the order they entered
    /// the buffer, files take the oldest first, so the rows in memory are always those from
    /// `flushed_rows` on. A new state (start, late history) has a new epoch.
    epoch: u64,
    /// Rows of this epoch now in files.
    flushed_rows: u64,
    /// Changes whenever `catalog` does.
    catalog_version: u64,
    /// On a querier: what the ingesters hold in memory, as last fetched from them.
    mirrored: Vec<Arc<Chunk>>,
}

#[derive(Debug)]
pub(crate) struct Inner {
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
    /// Serializes flushes (one frozen buffer at a time, oldest first).
    flushing: tokio::sync::Mutex<()>,
    /// Serializes compaction and retention rounds.
    maintaining: tokio::sync::Mutex<()>,
    /// Serializes catalog changes (a flush's, a compaction's, retention's): held from
    /// reading the catalog to making the changed one live, never while encoding or merging,
    /// so that a flush does not wait for a compaction.
    committing: tokio::sync::Mutex<()>,
    /// Notified after each flush: compaction may have files to merge.
    maintenance_wanted: Notify,
    /// Where flushes are sorted and encoded.
    encoder: persist::EncoderThread,
    /// Files out of the catalog, deleted when due.
    pending_deletes: Mutex<Vec<(Instant, object_store::path::Path)>>,
    /// The metadata and series index of files read by [`Store::select_series`], by path.
    file_indexes: Mutex<std::collections::HashMap<String, Arc<select::IndexedFile>>>,
    /// Decoded blocks of those files.
    block_cache: block_cache::BlockCache,
    /// False while the catalog could not be read since start ([`late_catalog`]).
    history_loaded: AtomicBool,
    /// Rows written to the WAL while the history was not loaded, not yet in the buffer.
    wal_only_rows: AtomicUsize,
    /// The `jobs` table.
    jobs: jobs::Jobs,
}

/// The store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
    commands: mpsc::Sender<Command>,
    wal_thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Opened to read only ([`Store::open_read_only`], [`Store::open_querier`]).
    read_only: bool,
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
        let object_store = object_store(data_dir, &config, true)?;
        let catalog = late_catalog::load_at_start(object_store.as_ref(), &config).await?;
        let metrics = StoreMetrics::new(registry);
        let loaded = catalog.is_some();
        let (state, next_segment) = match catalog {
            Some(catalog) => {
                maintenance::delete_orphans(object_store.as_ref(), &catalog).await?;
                late_catalog::confirm_segments(&wal_dir, &catalog)?;
                let mut state = State::new(catalog, config.limits(), SeriesHasher::default());
                let next_segment = replay(&wal_dir, &mut state, &metrics)?;
                (state, next_segment)
            }
            None => {
                let state = State::new(Catalog::new(), config.limits(), SeriesHasher::default());
                (state, late_catalog::start_unconfirmed(&wal_dir)?)
            }
        };
        metrics.set_state(&state);
        let writer = SegmentWriter::create(&wal_dir, next_segment).context(WalSnafu)?;

        let inner = Arc::new(Inner::new(config, wal_dir, state, object_store, metrics));
        inner.history_loaded.store(loaded, Ordering::Release);
        inner.metrics.history_loaded.set(i64::from(loaded));
        let (commands, receiver) = mpsc::channel(inner.config.write_queue.max(1));
        let thread_inner = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("exawatch-wal".into())
            .spawn(move || wal_thread(&thread_inner, writer, receiver))
            .context(DataDirSnafu { path: data_dir })?;
        let store = Self {
            inner,
            commands,
            wal_thread: Arc::new(Mutex::new(Some(handle))),
            read_only: false,
        };
        if !loaded {
            tokio::spawn(late_catalog::load_later(store.clone()));
        }
        Ok(store)
    }

    /// Opens the files of the store under `data_dir` for reading only: no WAL replay, no
    /// writes (they fail with [`Error::ReadOnly`]), nothing changed on disk, so it is safe
    /// while a server runs on the same directory. Queries see the flushed files.
    pub async fn open_read_only(data_dir: &Path, config: &StoreConfig) -> Result<Self> {
        let (object_store, catalog) = open_objects(data_dir, config, false).await?;
        Ok(Self::reader(data_dir, config, object_store, catalog))
    }

    /// Opens the whole object store for reading, as a querier of several ingesters does: the
    /// files of the root catalog and of every ingester's (`ingesters/<name>/`), re-read by
    /// [`Store::run_catalog_refresh`]. Like [`Store::open_read_only`] it writes nothing.
    pub async fn open_querier(data_dir: &Path, config: &StoreConfig) -> Result<Self> {
        let root = root_objects(data_dir, config, false)?;
        let catalog = cluster::load_union(root.as_ref()).await?;
        Ok(Self::reader(data_dir, config, root, catalog))
    }

    /// A store without a WAL thread over `catalog`'s files in `object_store`.
    fn reader(
        data_dir: &Path,
        config: &StoreConfig,
        object_store: Arc<dyn ObjectStore>,
        catalog: Catalog,
    ) -> Self {
        let metrics = StoreMetrics::new(&mut Registry::default());
        let state = State::new(catalog, Limits::default(), SeriesHasher::default());
        metrics.set_state(&state);
        let inner = Inner::new(
            config.clone(),
            data_dir.join("wal"),
            state,
            object_store,
            metrics,
        );
        let (commands, _) = mpsc::channel(1);
        Self {
            inner: Arc::new(inner),
            commands,
            wal_thread: Arc::new(Mutex::new(None)),
            read_only: true,
        }
    }

    /// On a querier ([`Store::open_querier`]): every `interval` until `shutdown` resolves,
    /// asks each ingester that advertises its API ([`Store::advertise`]) with `fetch` (its
    /// base URL, what to ask) for what it holds in memory and its catalog, and reads the
    /// catalogs of the others from the object store. Queries then see every file plus what
    /// the reachable ingesters hold, each row once. A failed round is logged and the previous
    /// view stays in use; an ingester that cannot be reached is answered from its files.
    pub async fn run_refresh<F, Fut>(
        &self,
        interval: Duration,
        fetch: F,
        shutdown: impl std::future::Future<Output = ()>,
    ) where
        F: Fn(String, UnflushedRequest) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Vec<u8>, String>>,
    {
        tokio::pin!(shutdown);
        let mut mirrors = std::collections::HashMap::new();
        let mut unreachable = std::collections::HashSet::new();
        loop {
            if let Err(error) = self.refresh(&mut mirrors, &mut unreachable, &fetch).await {
                tracing::warn!(%error, "Cannot re-read the ingesters' catalogs; answering from the files known so far.");
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One round of [`Store::run_refresh`]. `mirrors` holds, by ingester prefix, what each
    /// reachable ingester held at the last round; `unreachable` the prefixes of those that
    /// could not be asked (each logged once).
    async fn refresh<F, Fut>(
        &self,
        mirrors: &mut std::collections::HashMap<String, cluster::Mirror>,
        unreachable: &mut std::collections::HashSet<String>,
        fetch: &F,
    ) -> Result<()>
    where
        F: Fn(String, UnflushedRequest) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Vec<u8>, String>>,
    {
        let root = self.inner.object_store.as_ref();
        let root_catalog =
            persist::load_catalog_at(root, &object_store::path::Path::from(catalog::CATALOG_PATH))
                .await?;
        let prefixes = cluster::ingester_prefixes(root).await?;
        let asked = prefixes.iter().map(|prefix| {
            let request = mirrors
                .get(prefix.as_ref())
                .map(cluster::Mirror::request)
                .unwrap_or_default();
            async move {
                let url = cluster::endpoint(root, prefix).await?;
                let answer = fetch(url.clone(), request)
                    .await
                    .and_then(|bytes| cluster::decode_unflushed(&bytes));
                Some((url, answer))
            }
        });
        let answers = futures::future::join_all(asked).await;
        let mut fetched = Vec::new();
        let mut catalogs = Vec::new();
        for (prefix, answer) in prefixes.into_iter().zip(answers) {
            let name = prefix.to_string();
            match answer {
                Some((url, Ok(unflushed))) => {
                    if !mirrors.contains_key(&name) {
                        unreachable.remove(&name);
                        tracing::info!(ingester = %name, %url, "Answering with what this ingester holds in memory.");
                    }
                    let hashed = HashedBatch::new(unflushed.rows, &self.inner.series_hasher);
                    fetched.push((name, unflushed.header, hashed));
                }
                failed => {
                    if unreachable.insert(name.clone()) {
                        let (url, error) = match failed {
                            Some((url, Err(error))) => (url, error),
                            _ => (String::new(), format!("no {}", cluster::ENDPOINT_PATH)),
                        };
                        tracing::warn!(ingester = %name, %url, %error, "Cannot reach this ingester; answering from its files only.");
                    }
                    catalogs.push((
                        prefix.clone(),
                        cluster::ingester_catalog(root, &prefix).await?,
                    ));
                }
            }
        }
        // Only the ingesters that answered now are mirrored (not one whose prefix is gone).
        let answered: std::collections::HashSet<&String> =
            fetched.iter().map(|(name, _, _)| name).collect();
        mirrors.retain(|name, _| answered.contains(name));
        let mut state = self.inner.state.write();
        for (name, header, hashed) in fetched {
            let mut buffer = Buffer::default();
            buffer
                .insert(&hashed, &mut state.table)
                .map_err(|e| Error::WriteFailed {
                    message: e.to_string(),
                })?;
            mirrors
                .entry(name)
                .or_default()
                .apply(header, buffer.take());
        }
        let mut names: Vec<&String> = mirrors.keys().collect();
        names.sort();
        catalogs.extend(names.iter().map(|name| {
            (
                object_store::path::Path::from(name.as_str()),
                mirrors[*name].catalog.clone(),
            )
        }));
        catalogs.sort_by(|a, b| a.0.cmp(&b.0));
        let union = cluster::union(root_catalog, catalogs);
        state.table.add_tag_columns(&union.tag_columns);
        state.set_catalog(union);
        state.mirrored = names
            .iter()
            .flat_map(|name| mirrors[*name].chunks.iter().cloned())
            .collect();
        self.inner.metrics.set_state(&state);
        Ok(())
    }

    /// On an ingester: writes where queriers reach its API (`url`) under its prefix, for
    /// [`Store::run_refresh`].
    pub async fn advertise(&self, url: &str) -> Result<()> {
        let endpoint = cluster::Endpoint {
            url: url.to_owned(),
        };
        let json = serde_json::to_vec(&endpoint).expect("an endpoint serializes");
        self.inner
            .object_store
            .put(
                &object_store::path::Path::from(cluster::ENDPOINT_PATH),
                bytes::Bytes::from(json).into(),
            )
            .await
            .context(ObjectStoreSnafu)?;
        Ok(())
    }

    /// On an ingester: what it holds in memory after the rows `request` says the querier
    /// holds, and its catalog if the querier's copy is not the current one, read under one
    /// lock so that each row is either in the catalog's files or sent (or held), never both
    /// or neither. Encoded for [`Store::run_refresh`].
    pub fn unflushed(&self, request: UnflushedRequest) -> Result<Vec<u8>> {
        self.writable()?;
        let (header, chunks, keys) = {
            let state = self.inner.state.read();
            let chunks = state.unflushed_chunks();
            let end = state.flushed_rows + chunk_rows(&chunks) as u64;
            let same_epoch = request.epoch == state.epoch;
            let start = if same_epoch && (state.flushed_rows..=end).contains(&request.from) {
                request.from
            } else {
                state.flushed_rows
            };
            let header = cluster::UnflushedHeader {
                epoch: state.epoch,
                flushed: state.flushed_rows,
                start,
                catalog_version: state.catalog_version,
                catalog: (!same_epoch || request.catalog_version != state.catalog_version)
                    .then(|| state.catalog.clone()),
            };
            let keys = state.table.keys_of(&chunks);
            (header, chunks, keys)
        };
        let skip = (header.start - header.flushed) as usize;
        Ok(cluster::encode_unflushed(&header, &chunks, skip, &keys))
    }

    /// Stores samples and returns once they are in the WAL (fsynced if the policy is
    /// `always`) and visible to queries. While the buffer is full it waits for a flush to
    /// make room, up to [`ROOM_WAIT`]; then it fails, storing nothing, with
    /// [`Error::Overloaded`] (or [`Error::QueueFull`] when the WAL queue stays full).
    pub async fn write(&self, samples: impl Into<Batch>) -> Result<()> {
        self.writable()?;
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
        self.writable()?;
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
    /// Fails with [`Error::ReadOnly`] if this store was opened to read only.
    fn writable(&self) -> Result<()> {
        if self.read_only {
            return ReadOnlySnafu.fail();
        }
        Ok(())
    }

    /// Fails with [`Error::HistoryUnavailable`] while the catalog could not be read since
    /// start: an answer without the stored history would be silently wrong.
    pub(crate) fn readable(&self) -> Result<()> {
        if !self.inner.history_loaded.load(Ordering::Acquire) {
            return HistoryUnavailableSnafu.fail();
        }
        Ok(())
    }

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

    /// Stores HPC job records (the latest state of each job wins, see [`jobs`]); returns
    /// once they are durable in the object store and visible in the `jobs` table.
    pub async fn write_jobs(&self, records: Vec<exawatch_protocol::job::JobRecord>) -> Result<()> {
        self.writable()?;
        if records.is_empty() {
            return Ok(());
        }
        let now_ns = exawatch_protocol::time::now_ns();
        self.inner
            .jobs
            .write(self.inner.object_store.as_ref(), records, now_ns)
            .await
    }

    /// The stored jobs `filter` selects, sorted by cluster and id.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<Vec<StoredJob>> {
        self.inner
            .jobs
            .load(self.inner.object_store.as_ref())
            .await?;
        Ok(self.inner.jobs.select(filter))
    }

    /// A decoder for MQTT messages (EXAMON or line protocol; the topics of `rules` as they
    /// say) that counts what it rejects.
    pub fn mqtt_ingest(&self, rules: &[exawatch_protocol::mqtt::TopicRule]) -> MqttIngest {
        MqttIngest::new(self.clone(), rules)
    }

    /// Counts `count` messages or data points a writer sent that were refused, as
    /// `exawatch_messages_dropped_total{reason}` (the HTTP writes' decoders name the reason).
    pub fn count_dropped(&self, reason: &'static str, count: u64) {
        self.inner
            .metrics
            .messages_dropped
            .get_or_create(&metrics::ReasonLabel { reason })
            .inc_by(count);
    }

    /// Rows waiting in memory (buffer and frozen buffers not yet in files), and rows in the
    /// WAL that will be when the history is loaded.
    pub fn buffered_rows(&self) -> usize {
        let state = self.inner.state.read();
        self.inner.wal_only_rows.load(Ordering::Acquire)
            + state.buffer.rows()
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
    /// `flush_max_rows`, until `shutdown` resolves. Once no frozen buffer waits, compacts
    /// and applies retention ([`Store::maintain`]) beside the flushes, so that a long merge
    /// never holds up a flush (and with it the writers waiting for room). Failures are logged
    /// and retried. A compaction under way when `shutdown` resolves is finished first.
    pub async fn run_flusher(&self, shutdown: impl std::future::Future<Output = ()>) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let flushes = async {
            self.flush_loop(shutdown).await;
            let _ = stop.send(true);
        };
        tokio::join!(flushes, self.maintenance_loop(stopped));
    }

    async fn flush_loop(&self, shutdown: impl std::future::Future<Output = ()>) {
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
            self.inner.maintenance_wanted.notify_one();
        }
    }

    async fn maintenance_loop(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                _ = self.inner.maintenance_wanted.notified() => {}
            }
            if !self.inner.state.read().frozen.is_empty() {
                // Flushes first: a frozen buffer waits, and writers may wait for the room it
                // takes. The flush of the last one asks again.
                continue;
            }
            if let Err(error) = self.maintain(exawatch_protocol::time::now_ns()).await {
                tracing::warn!(%error, "Compaction or retention failed; retried on the next round.");
            }
        }
    }

    /// Compacts small files (a few groups per call), applies retention as of `now_ns`, and
    /// deletes files whose delay has passed.
    pub async fn maintain(&self, now_ns: i64) -> Result<()> {
        if self.readable().is_err() {
            return Ok(());
        }
        let _maintaining = self.inner.maintaining.lock().await;
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

impl State {
    fn new(catalog: Catalog, limits: Limits, hasher: SeriesHasher) -> Self {
        Self {
            table: SeriesTable::new(catalog.tag_columns.clone(), limits).with_hasher(hasher),
            buffer: Buffer::default(),
            frozen: VecDeque::new(),
            catalog,
            epoch: fastrand::u64(1..),
            flushed_rows: 0,
            catalog_version: 1,
            mirrored: Vec::new(),
        }
    }

    /// Every row not yet in a file: the frozen chunks (oldest first), then the buffer's, then
    /// on a querier what the ingesters hold.
    fn unflushed_chunks(&self) -> Vec<Arc<Chunk>> {
        let mut chunks: Vec<Arc<Chunk>> = self
            .frozen
            .iter()
            .flat_map(|f| f.chunks.iter().cloned())
            .collect();
        chunks.extend(self.buffer.chunks());
        chunks.extend(self.mirrored.iter().cloned());
        chunks
    }

    /// Makes `catalog` the live one.
    fn set_catalog(&mut self, catalog: Catalog) {
        self.catalog = catalog;
        self.catalog_version += 1;
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
            maintaining: tokio::sync::Mutex::new(()),
            committing: tokio::sync::Mutex::new(()),
            maintenance_wanted: Notify::new(),
            encoder: persist::EncoderThread::spawn(),
            pending_deletes: Mutex::new(Vec::new()),
            file_indexes: Mutex::new(std::collections::HashMap::new()),
            block_cache: block_cache::BlockCache::new(config.read_cache_mib << 20),
            history_loaded: AtomicBool::new(true),
            wal_only_rows: AtomicUsize::new(0),
            jobs: jobs::Jobs::default(),
            config,
        }
    }
}

fn chunk_rows(chunks: &[Arc<Chunk>]) -> usize {
    chunks.iter().map(|c| c.keys.len()).sum()
}
