//! Starting while the object store is unreachable. The catalog (what is already in files)
//! cannot be read, so the store starts with its history unloaded: writes are appended to the
//! WAL and acknowledged as usual but not buffered, queries fail with
//! [`Error::HistoryUnavailable`], and nothing is flushed or compacted (a flush would write a
//! catalog over the one it could not read). A task retries the catalog; once it loads, the
//! WAL thread replays every segment into a fresh state, as a start with the store reachable
//! would, and the store runs normally.
//!
//! The segments written meanwhile are numbered from the local WAL's last id, and the catalog
//! may already count higher (a new data directory, or one whose segments were all flushed and
//! deleted): replay would take them for flushed ones. The first of them is therefore recorded
//! in [`UNCONFIRMED`], and before any replay they are renumbered after the catalog's
//! (`confirm_segments`), also when the process restarts before the catalog came back.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use object_store::ObjectStore;
use snafu::ResultExt;
use tokio::sync::oneshot;

use crate::catalog::Catalog;
use crate::writer::{Command, replay};
use crate::{
    DataDirSnafu, Error, Inner, Result, State, StoreConfig, WalSnafu, maintenance, persist, wal,
};

/// The file in the WAL directory that holds the id of the first segment written while the
/// catalog was not loaded.
pub(crate) const UNCONFIRMED: &str = "unconfirmed";

/// How long the first attempt to read the catalog of an S3 store may take before the store
/// starts without it.
const FIRST_ATTEMPT: Duration = Duration::from_secs(10);

/// Between later attempts.
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Reads the catalog at start. `None` when an S3 object store cannot be reached (or read in
/// [`FIRST_ATTEMPT`]): the store then starts without its history. A local store, a catalog
/// that is there but unreadable, and refused credentials stop the start.
pub(crate) async fn load_at_start(
    store: &dyn ObjectStore,
    config: &StoreConfig,
) -> Result<Option<Catalog>> {
    if !config.object_store_url.starts_with("s3://") {
        return persist::load_catalog(store).await.map(Some);
    }
    match tokio::time::timeout(FIRST_ATTEMPT, persist::load_catalog(store)).await {
        Ok(Ok(catalog)) => Ok(Some(catalog)),
        Ok(Err(Error::ObjectStore { source }))
            if !matches!(
                source,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ) =>
        {
            tracing::warn!(error = %source, "The object store is unreachable: starting without the stored history. Writes are kept in the WAL, queries answer 503 until the catalog is read.");
            Ok(None)
        }
        Ok(Err(error)) => Err(error),
        Err(_) => {
            tracing::warn!(
                seconds = FIRST_ATTEMPT.as_secs(),
                "The object store did not answer: starting without the stored history. Writes are kept in the WAL, queries answer 503 until the catalog is read."
            );
            Ok(None)
        }
    }
}

/// The id of the first segment to write while the catalog is not loaded, recorded in
/// [`UNCONFIRMED`] (unless an earlier run recorded one that is still unconfirmed).
pub(crate) fn start_unconfirmed(wal_dir: &Path) -> Result<u64> {
    let next = wal::list_segments(wal_dir)
        .context(WalSnafu)?
        .last()
        .map_or(1, |last| last + 1);
    if recorded(wal_dir)?.is_none() {
        let path = wal_dir.join(UNCONFIRMED);
        std::fs::write(&path, next.to_string())
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
            .and_then(|()| std::fs::File::open(wal_dir)?.sync_all())
            .context(DataDirSnafu { path })?;
    }
    Ok(next)
}

fn recorded(wal_dir: &Path) -> Result<Option<u64>> {
    let path = wal_dir.join(UNCONFIRMED);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::CatalogFormat {
                message: format!("{}: expected a segment id, found {text:?}", path.display()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::DataDir { path, source }),
    }
}

/// Renumbers the segments written without the catalog (from the id in [`UNCONFIRMED`] on)
/// to follow both the catalog's persisted segment and every older segment, keeping their
/// order, then forgets the record. Does nothing when there is no record.
pub(crate) fn confirm_segments(wal_dir: &Path, catalog: &Catalog) -> Result<()> {
    let Some(first) = recorded(wal_dir)? else {
        return Ok(());
    };
    let segments = wal::list_segments(wal_dir).context(WalSnafu)?;
    let (older, unconfirmed): (Vec<u64>, Vec<u64>) =
        segments.into_iter().partition(|&id| id < first);
    let base = older
        .last()
        .copied()
        .unwrap_or(0)
        .max(catalog.persisted_segment)
        + 1;
    if unconfirmed.first().is_some_and(|&id| id < base) {
        // Highest first: every target is above its source, so none is overwritten.
        for (i, &id) in unconfirmed.iter().enumerate().rev() {
            let from = wal::segment_path(wal_dir, id);
            std::fs::rename(&from, wal::segment_path(wal_dir, base + i as u64))
                .context(DataDirSnafu { path: from })?;
        }
        tracing::info!(
            segments = unconfirmed.len(),
            from = base,
            "Renumbered the WAL segments written while the catalog was unreadable."
        );
    }
    let sync_dir = |dir: &Path| std::fs::File::open(dir)?.sync_all();
    sync_dir(wal_dir).context(DataDirSnafu { path: wal_dir })?;
    let record = wal_dir.join(UNCONFIRMED);
    std::fs::remove_file(&record).context(DataDirSnafu { path: record })?;
    sync_dir(wal_dir).context(DataDirSnafu { path: wal_dir })
}

/// Retries the catalog every [`RETRY_EVERY`] until it loads, then has the WAL thread adopt it;
/// ends early when the store stops.
pub(crate) async fn load_later(store: crate::Store) {
    let inner = Arc::clone(&store.inner);
    let mut failures = 0u64;
    loop {
        tokio::time::sleep(RETRY_EVERY).await;
        if store.commands.is_closed() {
            return;
        }
        let loaded = async {
            let catalog = persist::load_catalog(inner.object_store.as_ref()).await?;
            maintenance::delete_orphans(inner.object_store.as_ref(), &catalog).await?;
            Ok::<_, Error>(catalog)
        }
        .await;
        let catalog = match loaded {
            Ok(catalog) => catalog,
            Err(error) => {
                failures += 1;
                // Once a minute is enough to say it is still down.
                if failures % 12 == 1 {
                    tracing::warn!(%error, failures, "The object store is still unreachable; the stored history is not loaded, writes go to the WAL.");
                }
                continue;
            }
        };
        let (ack, done) = oneshot::channel();
        if store.send(Command::Adopt { catalog, ack }).await.is_err() {
            return;
        }
        match done.await {
            Ok(Ok(samples)) => {
                tracing::info!(
                    samples,
                    "Read the catalog from the object store: the stored history is loaded and the WAL replayed."
                );
                inner.flush_wanted.notify_one();
                return;
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "Could not replay the WAL after reading the catalog; retrying.");
            }
            Err(_) => return,
        }
    }
}

/// Run by the WAL thread (after it committed what was queued): renumbers the segments written
/// meanwhile, replays the whole WAL over `catalog` and makes that the store's state. Returns
/// the samples replayed and the id for the next segment.
pub(crate) fn adopt(inner: &Inner, catalog: Catalog) -> Result<(u64, u64)> {
    confirm_segments(&inner.wal_dir, &catalog)?;
    let mut state = State::new(catalog, inner.config.limits(), inner.series_hasher.clone());
    let before = inner.metrics.wal_replayed_samples.get();
    let next_segment = replay(&inner.wal_dir, &mut state, &inner.metrics)?;
    let samples = inner.metrics.wal_replayed_samples.get() - before;
    let mut current = inner.state.write();
    *current = state;
    inner.wal_only_rows.store(0, Ordering::Release);
    inner.history_loaded.store(true, Ordering::Release);
    inner.metrics.history_loaded.set(1);
    inner.metrics.set_state(&current);
    Ok((samples, next_segment))
}
