//! Writing frozen buffers to Parquet files and keeping the catalog.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, TimestampNanosecondArray};
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use snafu::ResultExt;

use arrow::record_batch::RecordBatch;

use crate::buffer::{Chunk, HashMap, SeriesKey, sorted_batch};
use crate::catalog::{CATALOG_PATH, CATALOG_VERSION, Catalog, FileMeta};
use crate::decimal;
use crate::rollup::{self, Resolution};
use crate::series_index::{INDEX_KEY, SeriesIndex};
use crate::{Error, Inner, ObjectStoreSnafu, Result, wal};

/// Reads the catalog, or starts an empty one if there is none.
pub(crate) async fn load_catalog(store: &dyn ObjectStore) -> Result<Catalog> {
    let bytes = match store.get(&ObjectPath::from(CATALOG_PATH)).await {
        Ok(result) => result.bytes().await.context(ObjectStoreSnafu)?,
        Err(object_store::Error::NotFound { .. }) => return Ok(Catalog::new()),
        Err(source) => return Err(Error::ObjectStore { source }),
    };
    let catalog: Catalog = serde_json::from_slice(&bytes).map_err(|e| Error::CatalogFormat {
        message: e.to_string(),
    })?;
    if catalog.version != CATALOG_VERSION {
        return Err(Error::CatalogFormat {
            message: format!(
                "version {} is not supported by this build (which reads version {CATALOG_VERSION})",
                catalog.version
            ),
        });
    }
    Ok(catalog)
}

/// Writes every frozen buffer, oldest first, to a file; records each in the catalog, then
/// deletes the WAL segments it covers. Stops at the first failure (the rest stays frozen
/// and in the WAL, to be retried).
pub(crate) async fn persist_frozen(inner: &Arc<Inner>) -> Result<()> {
    loop {
        let started = Instant::now();
        let (chunks, last_segment, keys, tag_columns, file_id) = {
            let state = inner.state.read();
            let Some(frozen) = state.frozen.front() else {
                return Ok(());
            };
            (
                frozen.chunks.clone(),
                frozen.last_segment,
                state.table.keys_of(&frozen.chunks),
                state.table.tag_columns().to_vec(),
                state.catalog.next_file_id,
            )
        };
        let zstd_level = inner.config.zstd_level;
        let series = keys.len() as u64;
        let encoded = tokio::task::spawn_blocking(move || {
            encode_flush(&chunks, &keys, &tag_columns, zstd_level)
        })
        .await
        .map_err(|e| Error::Encode {
            message: e.to_string(),
        })??;
        let mut catalog = inner.state.read().catalog.clone();
        let mut meta = None;
        for (kind, file) in encoded.files {
            let path = match kind {
                None => Catalog::file_path(file_id),
                Some(resolution) => resolution.file_path(file_id),
            };
            let file_meta = FileMeta {
                path: path.to_string(),
                min_time: file.min_time,
                max_time: file.max_time,
                rows: file.rows,
                series,
                bytes: file.bytes.len() as u64,
            };
            inner
                .object_store
                .put(&path, Bytes::from(file.bytes).into())
                .await
                .context(ObjectStoreSnafu)?;
            match kind {
                None => {
                    catalog.files.push(file_meta.clone());
                    meta = Some(file_meta);
                }
                Some(resolution) => catalog
                    .rollups
                    .entry(resolution.name().to_owned())
                    .or_default()
                    .push(file_meta),
            }
        }
        let meta = meta.expect("a flush writes a raw file");
        catalog.persisted_segment = last_segment;
        catalog.next_file_id = file_id + 1;
        catalog.tag_columns = encoded.tag_columns;
        let json = serde_json::to_vec_pretty(&catalog).expect("catalog serializes");
        inner
            .object_store
            .put(&ObjectPath::from(CATALOG_PATH), Bytes::from(json).into())
            .await
            .context(ObjectStoreSnafu)?;
        {
            // One lock: queries see the frozen rows or the file, never both or neither.
            let mut state = inner.state.write();
            state.catalog = catalog;
            state.frozen.pop_front();
            inner.metrics.set_state(&state);
        }
        inner.room.notify_waiters();
        delete_segments_through(inner, last_segment);
        inner.metrics.flushes.inc();
        inner.metrics.flushed_rows.inc_by(meta.rows);
        tracing::info!(
            file = %meta.path,
            rows = meta.rows,
            series = meta.series,
            bytes = meta.bytes,
            bytes_per_sample = format!("{:.2}", meta.bytes as f64 / meta.rows.max(1) as f64),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Flushed buffer to Parquet."
        );
    }
}

/// One encoded Parquet file.
struct EncodedFile {
    bytes: Vec<u8>,
    rows: u64,
    min_time: i64,
    max_time: i64,
}

/// The raw file of a flush (kind `None`) and its rollups.
struct EncodedFlush {
    files: Vec<(Option<Resolution>, EncodedFile)>,
    tag_columns: Vec<String>,
}

/// Sorts frozen chunks into a raw file and rolls them up; CPU work, run off the runtime.
fn encode_flush(
    chunks: &[Arc<Chunk>],
    keys: &HashMap<u32, Arc<SeriesKey>>,
    tag_columns: &[String],
    zstd_level: i32,
) -> Result<EncodedFlush> {
    let arrow_error = |e: arrow::error::ArrowError| Error::Encode {
        message: e.to_string(),
    };
    let sorted = sorted_batch(chunks, keys, tag_columns).map_err(arrow_error)?;
    let index = SeriesIndex::of_sorted(&sorted);
    let runs = index
        .series
        .iter()
        .map(|s| s.start as usize..(s.start + s.rows) as usize);
    let raw = decimal::encode(&sorted.batch, runs).map_err(arrow_error)?;
    let mut files = vec![(None, encode_file(&raw, zstd_level, Some(&index))?)];
    for resolution in Resolution::ALL {
        let rolled = rollup::from_sorted(&sorted, resolution, tag_columns).map_err(arrow_error)?;
        if rolled.num_rows() > 0 {
            files.push((Some(resolution), encode_file(&rolled, zstd_level, None)?));
        }
    }
    Ok(EncodedFlush {
        files,
        tag_columns: tag_columns.to_vec(),
    })
}

fn encode_file(
    batch: &RecordBatch,
    zstd_level: i32,
    index: Option<&SeriesIndex>,
) -> Result<EncodedFile> {
    let (min_time, max_time) = time_range(batch);
    Ok(EncodedFile {
        bytes: encode_parquet(batch, zstd_level, index)?,
        rows: batch.num_rows() as u64,
        min_time,
        max_time,
    })
}

fn delete_segments_through(inner: &Inner, last: u64) {
    let Ok(ids) = wal::list_segments(&inner.wal_dir) else {
        return;
    };
    for id in ids.into_iter().filter(|&id| id <= last) {
        let path = wal::segment_path(&inner.wal_dir, id);
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!(%error, segment = %path.display(), "Cannot delete a persisted WAL segment.");
        }
    }
}

pub(crate) fn time_range(batch: &arrow::record_batch::RecordBatch) -> (i64, i64) {
    let times = batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .expect("time column");
    let min = arrow::compute::min(times).unwrap_or(0);
    let max = arrow::compute::max(times).unwrap_or(0);
    debug_assert_eq!(times.null_count(), 0);
    (min, max)
}

/// How every Parquet file is written: ZSTD, dictionary-encoded tags and metric,
/// delta-encoded timestamps, row groups of up to a million rows.
pub(crate) fn writer_properties(zstd_level: i32) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(zstd_level).map_err(|e| Error::Encode {
        message: e.to_string(),
    })?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_column_dictionary_enabled(ColumnPath::from("time"), false)
        .set_column_encoding(ColumnPath::from("time"), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from("value"), false)
        .set_column_dictionary_enabled(ColumnPath::from(decimal::MANTISSA), false)
        .set_column_encoding(
            ColumnPath::from(decimal::MANTISSA),
            Encoding::DELTA_BINARY_PACKED,
        )
        .set_max_row_group_row_count(Some(1 << 20))
        .build())
}

/// Encodes a sorted batch as a Parquet file, with its series index in the footer if given.
pub(crate) fn encode_parquet(
    batch: &arrow::record_batch::RecordBatch,
    zstd_level: i32,
    index: Option<&SeriesIndex>,
) -> Result<Vec<u8>> {
    let encode_error = |e: parquet::errors::ParquetError| Error::Encode {
        message: e.to_string(),
    };
    let props = writer_properties(zstd_level)?;
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).map_err(encode_error)?;
    writer.write(batch).map_err(encode_error)?;
    if let Some(index) = index {
        writer.append_key_value_metadata(KeyValue::new(INDEX_KEY.to_owned(), index.encode()));
    }
    writer.close().map_err(encode_error)?;
    Ok(out)
}
