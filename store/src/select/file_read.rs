//! Reading the wanted rows of a file: its runs split into pieces of whole row groups read in
//! parallel, only `time` and the value columns of those rows decoded (Parquet row selection
//! over the page index) into blocks, which go to the block cache and become parts.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int8Type, Int64Type, TimestampNanosecondType};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::block_cache::{Block, BlockKey};
use crate::catalog::FileMeta;
use crate::series_index::MARK_ROWS;
use crate::{Error, Inner, Result, decimal};

use super::file_index::IndexedFile;
use super::part::{Part, assemble};
use super::steps::Steps;

/// Rows decoded per batch when reading a file's selected rows.
const READ_BATCH_ROWS: usize = 64 * 1024;

/// Rows of a file read by one task at least: a selection over many rows is read in parallel
/// pieces.
const PIECE_ROWS: u64 = 256 * 1024;

/// Splits a file's runs into pieces of whole row groups and at least [`PIECE_ROWS`] rows,
/// read in parallel (a piece decodes the dictionary pages of the row groups it touches, so
/// pieces do not share row groups but for a run that crosses into the next).
pub(super) fn split(
    runs: Vec<(usize, Range<u64>)>,
    metadata: &ParquetMetaData,
) -> Vec<Vec<(usize, Range<u64>)>> {
    let mut group_ends = metadata
        .row_groups()
        .iter()
        .scan(0u64, |end, group| {
            *end += group.num_rows() as u64;
            Some(*end)
        })
        .peekable();
    let mut pieces = Vec::new();
    let mut piece: Vec<(usize, Range<u64>)> = Vec::new();
    let mut rows = 0;
    for run in runs {
        // Close the piece when this run starts in a later row group and the piece is big.
        let mut crossed = false;
        while group_ends.peek().is_some_and(|&end| run.1.start >= end) {
            group_ends.next();
            crossed = true;
        }
        if crossed && rows >= PIECE_ROWS {
            pieces.push(std::mem::take(&mut piece));
            rows = 0;
        }
        rows += run.1.end - run.1.start;
        piece.push(run);
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

/// Reads `runs` (in file order, whole blocks) of one file: `time` and `value` of those rows
/// only. The blocks go to the cache if `keep`; the samples in `range` that the steps use
/// are returned.
pub(super) async fn read_runs(
    inner: &Arc<Inner>,
    file: &FileMeta,
    indexed: &IndexedFile,
    runs: Vec<(usize, Range<u64>)>,
    range: (i64, i64),
    steps: Option<Steps>,
    keep: bool,
) -> Result<Vec<Part>> {
    let blocks = read_blocks(inner, file, indexed, &runs).await?;
    let out = runs
        .iter()
        .zip(&blocks)
        .map(|((series, _), blocks)| {
            let key = Arc::new(indexed.index.series[*series].key.clone());
            assemble(key, blocks, range, steps)
        })
        .collect();
    if !keep {
        return Ok(out);
    }
    inner.block_cache.insert(
        runs.iter()
            .zip(blocks)
            .flat_map(|((series, rows), blocks)| {
                let first = indexed.blocks(*series, rows).start;
                blocks.into_iter().zip(first..).map(|(block, number)| {
                    let key = BlockKey {
                        file: indexed.id,
                        series: *series as u32,
                        block: number,
                    };
                    (key, block)
                })
            }),
    );
    inner
        .metrics
        .read_cache_bytes
        .set(inner.block_cache.bytes() as i64);
    Ok(out)
}

/// Decodes `runs` of one file into their blocks (per run, its blocks in order).
async fn read_blocks(
    inner: &Arc<Inner>,
    file: &FileMeta,
    indexed: &IndexedFile,
    runs: &[(usize, Range<u64>)],
) -> Result<Vec<Vec<Arc<Block>>>> {
    let mut selectors = Vec::with_capacity(runs.len() * 2);
    let mut at = 0u64;
    for (_, rows) in runs {
        selectors.push(RowSelector::skip((rows.start - at) as usize));
        selectors.push(RowSelector::select((rows.end - rows.start) as usize));
        at = rows.end;
    }
    let schema = indexed.metadata.schema();
    let column = |name: &str| {
        schema.index_of(name).map_err(|e| Error::Encode {
            message: format!("file {}: {e}", file.path),
        })
    };
    // Files written before values had mantissas hold them all in `value`; in the others it
    // is read only if it holds a value (each column read costs a decompression context).
    let decimal = schema.index_of(decimal::MANTISSA).is_ok();
    let value_column = column("value")?;
    let raw_values = !decimal || holds_values(indexed.metadata.metadata(), value_column);
    let mut roots = vec![column("time")?];
    if raw_values {
        roots.push(value_column);
    }
    if decimal {
        roots.extend([column(decimal::MANTISSA)?, column(decimal::SCALE)?]);
    }
    let mask = ProjectionMask::roots(
        indexed.metadata.metadata().file_metadata().schema_descr(),
        roots,
    );
    let reader = FileReader::new(inner, file);
    let parquet_error = |e: parquet::errors::ParquetError| Error::Encode {
        message: format!("reading {}: {e}", file.path),
    };
    let mut stream =
        ParquetRecordBatchStreamBuilder::new_with_metadata(reader, indexed.metadata.clone())
            .with_projection(mask)
            .with_row_selection(RowSelection::from(selectors))
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(parquet_error)?;

    let mut out: Vec<Vec<Arc<Block>>> = runs
        .iter()
        .map(|(series, rows)| Vec::with_capacity(indexed.blocks(*series, rows).len()))
        .collect();
    // The selected rows arrive in file order: run after run, each in whole blocks.
    let mut run = 0;
    let mut left = runs[0].1.end - runs[0].1.start;
    let mut block_left = left.min(MARK_ROWS);
    let mut block = Block::default();
    while let Some(batch) = stream.try_next().await.map_err(parquet_error)? {
        let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
        let raw = raw_values.then(|| batch.column(1).as_primitive::<Float64Type>());
        let first_decimal = 1 + usize::from(raw_values);
        let mantissas = decimal.then(|| {
            (
                batch.column(first_decimal).as_primitive::<Int64Type>(),
                batch.column(first_decimal + 1).as_primitive::<Int8Type>(),
            )
        });
        let mut row = 0;
        while row < batch.num_rows() {
            while left == 0 {
                run += 1;
                left = runs[run].1.end - runs[run].1.start;
                block_left = left.min(MARK_ROWS);
            }
            let take = (block_left as usize).min(batch.num_rows() - row);
            if block.times.capacity() == 0 {
                block.times.reserve_exact(block_left as usize);
                block.values.reserve_exact(block_left as usize);
            }
            let rows = row..row + take;
            decimal::decode_into(
                raw,
                mantissas,
                rows.clone(),
                &times.values()[rows],
                (&mut block.times, &mut block.values),
            );
            row += take;
            left -= take as u64;
            block_left -= take as u64;
            if block_left == 0 {
                out[run].push(Arc::new(std::mem::take(&mut block)));
                block_left = left.min(MARK_ROWS);
            }
        }
    }
    Ok(out)
}

/// Whether a file's column `index` may hold a non-null value: not if every row group's
/// statistics count only nulls in it.
fn holds_values(metadata: &ParquetMetaData, index: usize) -> bool {
    metadata.row_groups().iter().any(|group| {
        let nulls = group
            .column(index)
            .statistics()
            .and_then(|s| s.null_count_opt());
        nulls != Some(group.num_rows() as u64)
    })
}

/// Reads one file of the store's object store for the Parquet reader.
pub(super) struct FileReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
}

impl FileReader {
    pub(super) fn new(inner: &Inner, file: &FileMeta) -> Self {
        Self {
            store: Arc::clone(&inner.object_store),
            path: ObjectPath::from(file.path.as_str()),
            size: file.bytes,
        }
    }
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for FileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(external)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
