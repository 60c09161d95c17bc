//! Writing frozen buffers to Parquet files and keeping the catalog.

use std::ops::Range;
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

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::buffer::{Chunk, HashMap, SeriesKey, SortedRows, sorted_batch};
use crate::catalog::{CATALOG_PATH, CATALOG_VERSION, Catalog, FileMeta};
use crate::decimal;
use crate::rollup::{self, Resolution};
use crate::series_index::{INDEX_KEY, SeriesIndex};
use crate::{Error, Inner, ObjectStoreSnafu, Result, wal};

/// Reads the catalog, or starts an empty one if there is none.
pub(crate) async fn load_catalog(store: &dyn ObjectStore) -> Result<Catalog> {
    load_catalog_at(store, &ObjectPath::from(CATALOG_PATH)).await
}

/// Reads the catalog at `path`, or an empty one if there is none.
pub(crate) async fn load_catalog_at(store: &dyn ObjectStore, path: &ObjectPath) -> Result<Catalog> {
    let bytes = match store.get(path).await {
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
        let (chunks, last_segment, keys, tag_columns) = {
            let state = inner.state.read();
            let Some(frozen) = state.frozen.front() else {
                return Ok(());
            };
            (
                frozen.chunks.clone(),
                frozen.last_segment,
                state.table.keys_of(&frozen.chunks),
                state.table.tag_columns().to_vec(),
            )
        };
        let zstd_level = inner.config.zstd_level;
        let series = keys.len() as u64;
        let encoded = inner
            .encoder
            .run(move || encode_flush(&chunks, &keys, &tag_columns, zstd_level))
            .await
            .ok_or_else(|| Error::Encode {
                message: "the flush encoder panicked".into(),
            })??;
        // A compaction may commit while this flush encodes: the catalog and the file id are
        // read only now, under the commit lock.
        let committing = inner.committing.lock().await;
        let mut catalog = inner.state.read().catalog.clone();
        let file_id = catalog.next_file_id;
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
            state.set_catalog(catalog);
            if let Some(flushed) = state.frozen.pop_front() {
                state.flushed_rows += crate::chunk_rows(&flushed.chunks) as u64;
            }
            inner.metrics.set_state(&state);
        }
        drop(committing);
        inner.room.notify_waiters();
        // Compaction runs beside the flushes (it has files to merge now, perhaps).
        inner.maintenance_wanted.notify_one();
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

/// A job for the [`EncoderThread`].
type Job = Box<dyn FnOnce() + Send>;

/// The thread that sorts and encodes every flush: always the same one, so that each flush
/// can reuse the pages the last one freed (mimalloc keeps freed pages per thread for
/// `PURGE_DELAY_MS`, `src/main.rs`), where flushes on the blocking pool landed on any of its
/// threads.
#[derive(Debug)]
pub(crate) struct EncoderThread {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl EncoderThread {
    /// Starts the thread; it ends when this is dropped.
    pub(crate) fn spawn() -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("exawatch-flush".into())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })
            .expect("the flush thread starts");
        Self { jobs }
    }

    /// Runs `work` on the thread; `None` if it panicked (the thread goes on).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job = move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            if let Ok(value) = outcome {
                let _ = done.send(value);
            }
        };
        self.jobs.send(Box::new(job)).ok()?;
        result.await.ok()
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
    let sorted = sorted_batch(chunks, keys, tag_columns).map_err(arrow_error)?;
    let index = SeriesIndex::of_sorted(&sorted);
    let mut files = vec![(None, encode_raw(&sorted, &index, zstd_level, ENCODE_ROWS)?)];
    for resolution in Resolution::ALL {
        let rolled = rollup::from_sorted(&sorted, resolution).map_err(arrow_error)?;
        if rolled.num_rows() > 0 {
            let (min_time, max_time) = time_range(&rolled);
            let rolled = rollup::encode(&rolled).map_err(arrow_error)?;
            files.push((
                Some(resolution),
                EncodedFile {
                    bytes: encode_parquet(rolled.schema(), [Ok(rolled.clone())], zstd_level, None)?,
                    rows: rolled.num_rows() as u64,
                    min_time,
                    max_time,
                },
            ));
        }
    }
    Ok(EncodedFlush {
        files,
        tag_columns: tag_columns.to_vec(),
    })
}

fn arrow_error(e: arrow::error::ArrowError) -> Error {
    Error::Encode {
        message: e.to_string(),
    }
}

/// The raw file of sorted rows, built and encoded `group_rows` rows at a time (the writer
/// cuts row groups of [`ROW_GROUP_ROWS`] from them): each series' run in such a slice gets
/// its own decimal scale.
fn encode_raw(
    sorted: &SortedRows,
    index: &SeriesIndex,
    zstd_level: i32,
    group_rows: usize,
) -> Result<EncodedFile> {
    let runs: Vec<Range<usize>> = index
        .series
        .iter()
        .map(|s| s.start as usize..(s.start + s.rows) as usize)
        .collect();
    let rows = sorted.len();
    let groups = (0..rows.max(1)).step_by(group_rows).map(|start| {
        let group = start..(start + group_rows).min(rows);
        let batch = sorted.batch(group.clone())?;
        let in_group = runs.iter().filter_map(|run| {
            let (from, to) = (run.start.max(group.start), run.end.min(group.end));
            (from < to).then(|| from - group.start..to - group.start)
        });
        decimal::encode(&batch, in_group)
    });
    let schema = decimal::file_schema(&sorted.batch(0..0).map_err(arrow_error)?.schema());
    let groups = groups.map(|group| group.map_err(arrow_error));
    Ok(EncodedFile {
        bytes: encode_parquet(schema, groups, zstd_level, Some(index))?,
        rows: rows as u64,
        min_time: arrow::compute::min(&sorted.times).unwrap_or(0),
        max_time: arrow::compute::max(&sorted.times).unwrap_or(0),
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

/// Rows per row group of every file.
const ROW_GROUP_ROWS: usize = 1 << 20;

/// Rows a flush builds into a record batch (label columns, decimals) at a time: the batch is
/// gone once the writer has encoded it, so a flush's memory beyond its sorted rows is that
/// of one slice (a few MiB), not of a row group.
const ENCODE_ROWS: usize = 1 << 16;

/// How every Parquet file is written: ZSTD (but for dictionary keys and scales),
/// dictionary-encoded tags and metric,
/// delta-encoded timestamps and mantissas, row groups of up to a million rows.
pub(crate) fn writer_properties(
    zstd_level: i32,
    schema: &arrow::datatypes::Schema,
) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(zstd_level).map_err(|e| Error::Encode {
        message: e.to_string(),
    })?;
    let mut builder = WriterProperties::builder();
    // Dictionary keys (tags, metric) and scales are runs that RLE already packs: ZSTD makes
    // them larger, and costs every reader a compression context per column chunk.
    for field in schema.fields() {
        if matches!(field.data_type(), DataType::Dictionary(..) | DataType::Int8) {
            builder = builder.set_column_compression(
                ColumnPath::from(field.name().as_str()),
                Compression::UNCOMPRESSED,
            );
        }
    }
    // Rollup files: floats where a row has no decimals (mostly null), delta-packed mantissas.
    for name in rollup::DECIMAL_AGGREGATES {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(name), false);
    }
    for name in rollup::MANTISSA_COLUMNS {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(name), false)
            .set_column_encoding(ColumnPath::from(name), Encoding::DELTA_BINARY_PACKED);
    }
    Ok(builder
        .set_compression(Compression::ZSTD(level))
        .set_column_dictionary_enabled(ColumnPath::from("time"), false)
        .set_column_encoding(ColumnPath::from("time"), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from("value"), false)
        .set_column_dictionary_enabled(ColumnPath::from(decimal::MANTISSA), false)
        .set_column_encoding(
            ColumnPath::from(decimal::MANTISSA),
            Encoding::DELTA_BINARY_PACKED,
        )
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build())
}

/// Encodes sorted batches as one Parquet file, with its series index in the footer if given.
pub(crate) fn encode_parquet(
    schema: SchemaRef,
    batches: impl IntoIterator<Item = Result<RecordBatch>>,
    zstd_level: i32,
    index: Option<&SeriesIndex>,
) -> Result<Vec<u8>> {
    let encode_error = |e: parquet::errors::ParquetError| Error::Encode {
        message: e.to_string(),
    };
    let props = writer_properties(zstd_level, &schema)?;
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props)).map_err(encode_error)?;
    for batch in batches {
        writer.write(&batch?).map_err(encode_error)?;
    }
    if let Some(index) = index {
        writer.append_key_value_metadata(KeyValue::new(INDEX_KEY.to_owned(), index.encode()));
    }
    writer.close().map_err(encode_error)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Float64Array, Int8Array, Int64Array};
    use exawatch_protocol::{Sample, Value};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::buffer::{Buffer, HashedBatch, Limits, SeriesTable};

    /// A file written a few rows at a time reads back as the rows, in order, every value
    /// bit for bit, though a series' decimal scale may differ between row groups.
    #[test]
    fn raw_files_written_by_row_group_read_back_exactly() {
        let values = [
            1.5,
            2.25,
            3.0,
            -0.0,
            7.125,
            1e300,
            0.1,
            f64::NAN,
            42.0,
            1.0 / 3.0,
        ];
        let samples: Vec<Sample> = (0..40)
            .map(|i| {
                let node = format!("n{}", i % 3);
                let value = Value::Float(values[i % values.len()] * (i / 7) as f64);
                Sample::new("m", vec![("node".into(), node)], i as i64, value)
            })
            .collect();
        let mut table = SeriesTable::new(Vec::new(), Limits::default());
        let mut buffer = Buffer::default();
        let batch = HashedBatch::new(samples.clone().into(), table.hasher());
        buffer.insert(&batch, &mut table).unwrap();
        let chunks = buffer.take();
        let sorted = sorted_batch(&chunks, &table.keys_of(&chunks), table.tag_columns()).unwrap();
        let index = SeriesIndex::of_sorted(&sorted);
        let file = encode_raw(&sorted, &index, 3, 4).unwrap();
        assert_eq!((file.rows, file.min_time, file.max_time), (40, 0, 39));

        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file.bytes))
            .unwrap()
            .build()
            .unwrap();
        let mut read = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let column = |name: &str| Arc::clone(batch.column_by_name(name).unwrap());
            let times = column("time");
            let times = times.as_primitive::<arrow::datatypes::TimestampNanosecondType>();
            let (raw, mantissa, scale) = (
                column("value"),
                column(decimal::MANTISSA),
                column(decimal::SCALE),
            );
            let raw = raw.as_any().downcast_ref::<Float64Array>().unwrap();
            let mantissa = mantissa.as_any().downcast_ref::<Int64Array>().unwrap();
            let scale = scale.as_any().downcast_ref::<Int8Array>().unwrap();
            for row in 0..batch.num_rows() {
                let value =
                    decimal::decode_column(Some(raw), Some((mantissa, scale)), row).unwrap();
                read.push((times.value(row), value.to_bits()));
            }
        }
        // File order: by node, then time.
        let mut expected: Vec<(String, i64, u64)> = samples
            .iter()
            .map(|s| {
                let Value::Float(v) = s.value else {
                    unreachable!()
                };
                (s.tag("node").unwrap().to_owned(), s.time_ns, v.to_bits())
            })
            .collect();
        expected.sort();
        let expected: Vec<(i64, u64)> = expected.into_iter().map(|(_, t, v)| (t, v)).collect();
        assert_eq!(read, expected);
    }
}
