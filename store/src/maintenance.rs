//! Background upkeep of the files: compaction (small sorted files merged into large ones),
//! retention (files past the configured age dropped), and the deletion of files no longer in
//! the catalog, delayed so that queries already reading them can finish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::compute::SortOptions;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::expressions::col;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use snafu::ResultExt;

use crate::buffer::sort_order;
use crate::catalog::{CATALOG_PATH, Catalog, FileMeta};
use crate::decimal;
use crate::persist::writer_properties;
use crate::rollup::{self, Resolution};
use crate::series_index::{INDEX_KEY, SeriesIndexBuilder};
use crate::{Error, Inner, ObjectStoreSnafu, Result, table};

/// Nanoseconds in a day: compaction never merges files across UTC days, so retention can
/// drop whole days.
const DAY_NS: i64 = 86_400_000_000_000;

/// A list of files in the catalog: the raw table's, or one rollup resolution's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileSet {
    Raw,
    Rollup(Resolution),
}

impl FileSet {
    const ALL: [Self; 3] = [
        Self::Raw,
        Self::Rollup(Resolution::Minute),
        Self::Rollup(Resolution::Hour),
    ];

    fn files(self, catalog: &Catalog) -> &[FileMeta] {
        match self {
            Self::Raw => &catalog.files,
            Self::Rollup(r) => catalog.rollups.get(r.name()).map_or(&[], Vec::as_slice),
        }
    }

    fn files_mut(self, catalog: &mut Catalog) -> &mut Vec<FileMeta> {
        match self {
            Self::Raw => &mut catalog.files,
            Self::Rollup(r) => catalog.rollups.entry(r.name().to_owned()).or_default(),
        }
    }

    fn path(self, id: u64) -> ObjectPath {
        match self {
            Self::Raw => Catalog::file_path(id),
            Self::Rollup(r) => r.file_path(id),
        }
    }

    fn schema(self, state: &crate::State) -> SchemaRef {
        match self {
            Self::Raw => decimal::file_schema(&state.table.schema()),
            Self::Rollup(_) => rollup::file_schema(&rollup::schema(state.table.tag_columns())),
        }
    }
}

/// Merges one group of small files of the same day, raw or rollup, if there is one; returns
/// whether it did.
pub(crate) async fn compact_once(inner: &Arc<Inner>) -> Result<bool> {
    let picked = {
        let state = inner.state.read();
        FileSet::ALL.into_iter().find_map(|set| {
            let group = pick_group(set.files(&state.catalog), &inner.config)?;
            Some((
                set,
                group,
                set.schema(&state),
                state.table.tag_columns().to_vec(),
            ))
        })
    };
    let Some((set, group, schema, tag_columns)) = picked else {
        return Ok(false);
    };
    let started = Instant::now();
    let (bytes, rows, series) = merge(inner, set, &group, &schema, &tag_columns).await?;
    let (min_time, max_time) = group.iter().fold((i64::MAX, i64::MIN), |(lo, hi), f| {
        (lo.min(f.min_time), hi.max(f.max_time))
    });
    let _committing = inner.committing.lock().await;
    let mut catalog = inner.state.read().catalog.clone();
    let path = set.path(catalog.next_file_id);
    let meta = FileMeta {
        path: path.to_string(),
        min_time,
        max_time,
        rows,
        series,
        bytes: bytes.len() as u64,
    };
    inner
        .object_store
        .put(&path, Bytes::from(bytes).into())
        .await
        .context(ObjectStoreSnafu)?;
    // The merged file takes the place of the first of its inputs, keeping the files in age order.
    let files = set.files_mut(&mut catalog);
    let first = files
        .iter()
        .position(|f| f.path == group[0].path)
        .expect("input in catalog");
    files.retain(|f| !group.iter().any(|g| g.path == f.path));
    files.insert(first.min(files.len()), meta.clone());
    catalog.next_file_id += 1;
    replace_catalog(inner, catalog).await?;
    schedule_deletes(inner, &group);
    inner.metrics.compactions.inc();
    tracing::info!(
        inputs = group.len(),
        file = %meta.path,
        rows = meta.rows,
        bytes = meta.bytes,
        bytes_per_row = format!("{:.2}", meta.bytes as f64 / meta.rows.max(1) as f64),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Compacted files."
    );
    Ok(true)
}

/// The oldest run of at least `compaction_min_files` small files of one UTC day, at most
/// `compaction_target_rows` rows together.
fn pick_group(files: &[FileMeta], config: &crate::StoreConfig) -> Option<Vec<FileMeta>> {
    let small = |f: &&FileMeta| f.rows < (config.compaction_target_rows / 2) as u64;
    let mut days: Vec<i64> = files
        .iter()
        .filter(small)
        .map(|f| f.min_time.div_euclid(DAY_NS))
        .collect();
    days.sort_unstable();
    days.dedup();
    for day in days {
        let mut group = Vec::new();
        let mut rows = 0u64;
        for file in files
            .iter()
            .filter(small)
            .filter(|f| f.min_time.div_euclid(DAY_NS) == day)
        {
            if rows + file.rows > config.compaction_target_rows as u64 {
                break;
            }
            rows += file.rows;
            group.push(file.clone());
        }
        if group.len() >= config.compaction_min_files.max(2) {
            return Some(group);
        }
    }
    None
}

/// Streams the files through a sort-preserving merge into one Parquet file; returns its
/// bytes, rows and series.
async fn merge(
    inner: &Arc<Inner>,
    set: FileSet,
    files: &[FileMeta],
    schema: &SchemaRef,
    tag_columns: &[String],
) -> Result<(Vec<u8>, u64, u64)> {
    let plan_error = |e: datafusion::error::DataFusionError| Error::Encode {
        message: format!("compaction: {e}"),
    };
    let keys = sort_order(tag_columns);
    let ordering = keys
        .iter()
        .map(|name| {
            let options = SortOptions {
                descending: false,
                nulls_first: true,
            };
            col(name, schema).map(|expr| PhysicalSortExpr::new(expr, options))
        })
        .collect::<datafusion::error::Result<Vec<_>>>()
        .map_err(plan_error)?;
    let ordering = LexOrdering::new(ordering).expect("metric and time at least");
    let groups = files
        .iter()
        .map(|f| FileGroup::new(vec![PartitionedFile::new(f.path.clone(), f.bytes)]))
        .collect();
    let scan = FileScanConfigBuilder::new(
        table::object_store_url().clone(),
        Arc::new(ParquetSource::new(Arc::clone(schema))),
    )
    .with_file_groups(groups)
    .with_output_ordering(vec![ordering.clone()])
    .build();
    let plan = SortPreservingMergeExec::new(ordering, DataSourceExec::from_data_source(scan));
    let ctx = SessionContext::new();
    ctx.register_object_store(
        table::object_store_url().as_ref(),
        Arc::clone(&inner.object_store),
    );
    let mut stream = plan.execute(0, ctx.task_ctx()).map_err(plan_error)?;

    let encode_error = |e: parquet::errors::ParquetError| Error::Encode {
        message: e.to_string(),
    };
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(
        &mut out,
        Arc::clone(schema),
        Some(writer_properties(inner.config.zstd_level, schema)?),
    )
    .map_err(encode_error)?;
    let series_columns = &keys[..keys.len() - 1];
    let arrow_error = |e: arrow::error::ArrowError| Error::Encode {
        message: e.to_string(),
    };
    let mut index = SeriesIndexBuilder::new(tag_columns).map_err(arrow_error)?;
    let mut rows = 0u64;
    let mut write = |batch: &RecordBatch| -> Result<()> {
        rows += batch.num_rows() as u64;
        index.push(batch).map_err(arrow_error)?;
        writer.write(batch).map_err(encode_error)
    };
    match set {
        FileSet::Raw => {
            while let Some(batch) = stream.next().await {
                write(&batch.map_err(plan_error)?)?;
            }
        }
        // Partial rows of a bucket sit next to each other once merged: combine them. Rollups
        // are small (a row per series per minute at most), so this works on the whole group.
        FileSet::Rollup(_) => {
            let batches: Vec<RecordBatch> = stream
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<datafusion::error::Result<_>>()
                .map_err(plan_error)?;
            let decoded = batches
                .iter()
                .map(rollup::decode)
                .collect::<Result<Vec<_>, _>>()
                .map_err(arrow_error)?;
            let table = rollup::schema(tag_columns);
            let all = arrow::compute::concat_batches(&table, &decoded).map_err(arrow_error)?;
            let combined = rollup::combine_sorted(&all, series_columns).map_err(arrow_error)?;
            write(&rollup::encode(&combined).map_err(arrow_error)?)?;
        }
    }
    let series = index.series();
    if matches!(set, FileSet::Raw) {
        let index = index.finish().encode();
        writer.append_key_value_metadata(KeyValue::new(INDEX_KEY.to_owned(), index));
    }
    writer.close().map_err(encode_error)?;
    Ok((out, rows, series))
}

/// Drops the files whose newest sample is older than `retention_days` (rollup files:
/// `rollup_retention_days`); returns how many.
pub(crate) async fn apply_retention(inner: &Arc<Inner>, now_ns: i64) -> Result<usize> {
    let cutoff =
        |days: f64| (days > 0.0).then(|| now_ns.saturating_sub((days * DAY_NS as f64) as i64));
    let _committing = inner.committing.lock().await;
    let mut catalog = inner.state.read().catalog.clone();
    let mut expired = Vec::new();
    let mut expired_raw_rows = 0;
    for set in FileSet::ALL {
        let days = match set {
            FileSet::Raw => inner.config.retention_days,
            FileSet::Rollup(_) => inner.config.rollup_retention_days,
        };
        let Some(cutoff) = cutoff(days) else { continue };
        let files = set.files_mut(&mut catalog);
        let (old, kept): (Vec<FileMeta>, Vec<FileMeta>) = std::mem::take(files)
            .into_iter()
            .partition(|f| f.max_time < cutoff);
        *files = kept;
        if set == FileSet::Raw {
            expired_raw_rows = old.iter().map(|f| f.rows).sum();
        }
        expired.extend(old);
    }
    if expired.is_empty() {
        return Ok(0);
    }
    replace_catalog(inner, catalog).await?;
    schedule_deletes(inner, &expired);
    inner.metrics.expired_rows.inc_by(expired_raw_rows);
    tracing::info!(
        files = expired.len(),
        rows = expired_raw_rows,
        "Dropped files past retention."
    );
    Ok(expired.len())
}

/// Writes `catalog` to the object store, then makes it the live one.
pub(crate) async fn replace_catalog(inner: &Inner, catalog: Catalog) -> Result<()> {
    let json = serde_json::to_vec_pretty(&catalog).expect("catalog serializes");
    inner
        .object_store
        .put(&ObjectPath::from(CATALOG_PATH), Bytes::from(json).into())
        .await
        .context(ObjectStoreSnafu)?;
    let mut state = inner.state.write();
    state.set_catalog(catalog);
    inner.metrics.set_state(&state);
    Ok(())
}

fn schedule_deletes(inner: &Inner, files: &[FileMeta]) {
    let due = Instant::now() + Duration::from_secs_f64(inner.config.delete_delay_secs);
    inner.pending_deletes.lock().extend(
        files
            .iter()
            .map(|f| (due, ObjectPath::from(f.path.as_str()))),
    );
}

/// Deletes the files whose delay has passed (all of them with `all`).
pub(crate) async fn delete_due(inner: &Inner, all: bool) {
    let now = Instant::now();
    let due: Vec<ObjectPath> = {
        let mut pending = inner.pending_deletes.lock();
        let (due, later): (Vec<_>, Vec<_>) =
            pending.drain(..).partition(|(at, _)| all || *at <= now);
        *pending = later;
        due.into_iter().map(|(_, path)| path).collect()
    };
    for path in due {
        if let Err(error) = inner.object_store.delete(&path).await {
            tracing::warn!(%error, %path, "Cannot delete a file no longer in the catalog.");
        }
    }
}

/// Deletes files under `files/` that the catalog does not list: leftovers of a compaction or
/// flush interrupted before its catalog update. Only safe before any query runs.
pub(crate) async fn delete_orphans(store: &dyn ObjectStore, catalog: &Catalog) -> Result<usize> {
    let mut listed = Vec::new();
    for prefix in ["files", "rollups"] {
        let objects: Vec<_> = store
            .list(Some(&ObjectPath::from(prefix)))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .context(ObjectStoreSnafu)?;
        listed.extend(objects);
    }
    let known = |path: &str| {
        FileSet::ALL
            .iter()
            .any(|set| set.files(catalog).iter().any(|f| f.path == path))
    };
    let mut deleted = 0;
    for object in listed {
        if !known(object.location.as_ref()) {
            store
                .delete(&object.location)
                .await
                .context(ObjectStoreSnafu)?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        tracing::info!(
            files = deleted,
            "Deleted files left over by an interrupted flush or compaction."
        );
    }
    Ok(deleted)
}
