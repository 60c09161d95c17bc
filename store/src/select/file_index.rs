//! What a selection keeps of each file while it is in the catalog ([`IndexedFile`]): its
//! Parquet metadata with the page index, and its series index, from which the wanted
//! series' runs of rows are picked in memory. A file written before files carried an index
//! gets one built from its label columns, once.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use futures::TryStreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::PageIndexPolicy;

use crate::buffer::SeriesKey;
use crate::catalog::FileMeta;
use crate::series_index::{INDEX_KEY, MARK_ROWS, SeriesIndex, SeriesIndexBuilder};
use crate::{Error, Inner, Result, decimal};

use super::file_read::FileReader;

/// What is kept of a file for selections: its Parquet metadata (with the page index) and
/// its series index.
#[derive(Debug)]
pub(crate) struct IndexedFile {
    /// The file's number in this process, for the block cache.
    pub(super) id: u64,
    pub(super) metadata: ArrowReaderMetadata,
    pub(super) index: SeriesIndex,
    /// The positions in `index` of each metric's series.
    by_metric: HashMap<String, Vec<usize>>,
}

impl IndexedFile {
    /// The rows of the series that `wanted` accepts that may hold times in `[min_ns, max_ns]`,
    /// in file order: (series in the index, rows).
    pub(super) fn runs(
        &self,
        metric: Option<&str>,
        wanted: &(dyn Fn(&SeriesKey) -> bool + Send + Sync),
        min_ns: i64,
        max_ns: i64,
    ) -> Vec<(usize, Range<u64>)> {
        let candidates: Box<dyn Iterator<Item = usize>> = match metric {
            Some(metric) => Box::new(self.by_metric.get(metric).into_iter().flatten().copied()),
            None => Box::new(0..self.index.series.len()),
        };
        let mut runs: Vec<(usize, Range<u64>)> = candidates
            .map(|i| (i, &self.index.series[i]))
            .filter(|(_, s)| wanted(&s.key))
            .map(|(i, s)| (i, s.rows_in(min_ns, max_ns)))
            .filter(|(_, rows)| !rows.is_empty())
            .collect();
        runs.sort_by_key(|(_, rows)| rows.start);
        runs
    }

    /// The numbers of the blocks that `rows` (of [`IndexedFile::runs`]) of `series` cover.
    pub(super) fn blocks(&self, series: usize, rows: &Range<u64>) -> Range<u32> {
        let start = self.index.series[series].start;
        let first = (rows.start - start) / MARK_ROWS;
        let end = (rows.end - start).div_ceil(MARK_ROWS);
        first as u32..end as u32
    }
}

/// The file's metadata and index: kept from an earlier read, or read now (and kept). A file
/// written before files carried an index has one built from its label columns, once.
pub(super) async fn indexed_file(inner: &Arc<Inner>, file: &FileMeta) -> Result<Arc<IndexedFile>> {
    if let Some(found) = inner.file_indexes.lock().get(&file.path) {
        return Ok(Arc::clone(found));
    }
    let parquet_error = |e: parquet::errors::ParquetError| Error::Encode {
        message: format!("reading {}: {e}", file.path),
    };
    let mut reader = FileReader::new(inner, file);
    let metadata = ArrowReaderMetadata::load_async(
        &mut reader,
        // The offset index lets a row selection skip whole pages.
        ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional),
    )
    .await
    .map_err(parquet_error)?;
    let stored = metadata
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == INDEX_KEY))
        .and_then(|kv| kv.value.as_deref());
    let index = match stored {
        Some(text) => SeriesIndex::decode(text).map_err(|message| Error::Encode {
            message: format!("series index of {}: {message}", file.path),
        })?,
        None => build_index(reader, &metadata, &file.path).await?,
    };
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let indexed = Arc::new(IndexedFile {
        id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        by_metric: index
            .series
            .iter()
            .enumerate()
            .fold(HashMap::new(), |mut by_metric, (i, s)| {
                by_metric
                    .entry(s.key.metric.clone())
                    .or_insert_with(Vec::new)
                    .push(i);
                by_metric
            }),
        metadata,
        index,
    });
    let mut cache = inner.file_indexes.lock();
    let current: std::collections::HashSet<String> = inner
        .state
        .read()
        .catalog
        .files
        .iter()
        .map(|f| f.path.clone())
        .collect();
    let mut gone = Vec::new();
    cache.retain(|path, file| {
        let keep = current.contains(path);
        if !keep {
            gone.push(file.id);
        }
        keep
    });
    inner.block_cache.forget_files(&gone);
    inner
        .metrics
        .read_cache_bytes
        .set(inner.block_cache.bytes() as i64);
    cache.insert(file.path.clone(), Arc::clone(&indexed));
    Ok(indexed)
}

/// Builds the index of a file without one by reading its label and time columns.
async fn build_index(
    reader: FileReader,
    metadata: &ArrowReaderMetadata,
    path: &str,
) -> Result<SeriesIndex> {
    let parquet_error = |e: parquet::errors::ParquetError| Error::Encode {
        message: format!("reading {path}: {e}"),
    };
    let arrow_error = |e: arrow::error::ArrowError| Error::Encode {
        message: format!("indexing {path}: {e}"),
    };
    let schema = metadata.schema();
    let tag_columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !exawatch_protocol::RESERVED_COLUMNS.contains(&n.as_str()))
        .collect();
    let roots: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !decimal::is_file_value_column(f.name()) && f.name() != "text")
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(metadata.metadata().file_metadata().schema_descr(), roots);
    let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata.clone())
        .with_projection(mask)
        .build()
        .map_err(parquet_error)?;
    let mut builder = SeriesIndexBuilder::new(&tag_columns).map_err(arrow_error)?;
    while let Some(batch) = stream.try_next().await.map_err(parquet_error)? {
        builder.push(&batch).map_err(arrow_error)?;
    }
    tracing::info!(
        file = path,
        series = builder.series(),
        "Indexed a file written without a series index."
    );
    Ok(builder.finish())
}
