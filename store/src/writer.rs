//! The write path: the WAL thread (group commit, then the rows into the buffer, then the
//! acknowledgements), freezing the buffer for a flush, and the replay of the WAL at start.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use snafu::ResultExt;
use tokio::sync::{mpsc, oneshot};

use crate::buffer::{HashedBatch, Rejections};
use crate::catalog::Catalog;
use crate::metrics::StoreMetrics;
use crate::wal::{self, SegmentWriter};
use crate::{Error, Frozen, FsyncPolicy, Inner, Result, State, WalSnafu, late_catalog};

/// What writers ask of the WAL thread.
pub(crate) enum Command {
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
    /// The catalog, read late ([`crate::late_catalog`]): replay the WAL over it; answers the
    /// samples replayed.
    Adopt {
        catalog: Catalog,
        ack: oneshot::Sender<Result<u64>>,
    },
}

/// Replays the WAL segments the catalog does not cover into `state`; returns the id for the
/// next segment.
pub(crate) fn replay(wal_dir: &Path, state: &mut State, metrics: &StoreMetrics) -> Result<u64> {
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
pub(crate) fn wal_thread(
    inner: &Inner,
    mut writer: SegmentWriter,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut wal = WalState {
        writer_ok: true,
        last_sync: Instant::now(),
        started: Instant::now(),
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
                Command::Adopt { catalog, ack } => {
                    commit(inner, &mut writer, &mut wal, std::mem::take(&mut writes));
                    let _ = writer.sync();
                    let adopted =
                        late_catalog::adopt(inner, catalog).and_then(|(samples, next)| {
                            writer =
                                SegmentWriter::create(&inner.wal_dir, next).context(WalSnafu)?;
                            wal.writer_ok = true;
                            Ok(samples)
                        });
                    let _ = ack.send(adopted);
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
    /// The series table's clock for live series counts from here.
    started: Instant,
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
    if !inner.history_loaded.load(Ordering::Acquire) {
        // In the WAL only, until the catalog is read and the WAL replayed.
        let rows: usize = writes.iter().map(|w| w.1.batch().len()).sum();
        inner.wal_only_rows.fetch_add(rows, Ordering::AcqRel);
        inner.metrics.samples_written.inc_by(rows as u64);
        for (_, _, ack) in writes {
            if let Some(ack) = ack {
                let _ = ack.send(Ok(Rejections::default()));
            }
        }
        return;
    }
    let mut written = 0u64;
    let mut acks = Vec::with_capacity(writes.len());
    let minute = u32::try_from(wal.started.elapsed().as_secs() / 60).unwrap_or(u32::MAX);
    let mut state = inner.state.write();
    let State { table, buffer, .. } = &mut *state;
    if table.minute() != minute {
        table.expire_idle(minute);
    }
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
