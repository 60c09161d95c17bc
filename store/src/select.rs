//! [`Store::select_series`]: the float samples of chosen series over a time range, for
//! selectors (PromQL) that want whole series rather than SQL rows.
//!
//! Files are read through their series index ([`crate::series_index`]): the wanted series
//! are picked from the index in memory, and only their rows of `time` and `value` in the
//! range are decoded (Parquet row selection over the page index), never a label column.
//! Buffered rows are picked by their chunk's series list. Each file's Parquet metadata and
//! index are read once and kept while the file is in the catalog.
//!
//! One concern per file: `file_index` (what is kept of each file), `file_read` (decoding a
//! file's rows into blocks), `buffer_read` (the buffer's rows), `steps` (keeping only the
//! samples a query's steps use), `part` (one file's or the buffer's samples of a series) and
//! `merge` (each series put together from its parts, in time order). This file holds the
//! types callers see and the selection itself.

mod buffer_read;
mod file_index;
mod file_read;
mod merge;
mod part;
mod steps;

use std::sync::Arc;

use crate::block_cache::Lookup;
use crate::buffer::SeriesKey;
use crate::catalog::FileMeta;
use crate::{Error, Result, Store};

// Where the crate root re-exports it from (`exawatch_store::in_parallel`).
pub use exawatch_parallel::in_parallel;
pub(crate) use file_index::IndexedFile;
pub use steps::Steps;

use buffer_read::read_buffer;
use file_index::indexed_file;
use file_read::{read_runs, split};
use merge::Selection;
use part::{Part, assemble};

/// One series' float samples, as [`Store::select_series`] returns them.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// The series.
    pub key: Arc<SeriesKey>,
    /// Nanoseconds since the epoch, ascending; of samples with the same time, the one
    /// written last is last.
    pub times: Vec<i64>,
    /// The values, by `times` (text samples are left out).
    pub values: Vec<f64>,
}

/// What [`Store::select_series_into`] builds each series into, from its samples in time
/// order, a slice at a time: the caller's own representation, so that samples are copied
/// once from the store's blocks.
pub trait SampleSink: Send + Sized {
    /// An empty series with room for `samples` samples.
    fn with_capacity(key: Arc<SeriesKey>, samples: usize) -> Self;
    /// Appends samples (`times` and `values` of the same length).
    fn extend(&mut self, times: &[i64], values: &[f64]);
    /// The series from samples already gathered.
    fn from_samples(samples: SeriesSamples) -> Self {
        let mut out = Self::with_capacity(samples.key, samples.times.len());
        out.extend(&samples.times, &samples.values);
        out
    }
}

impl SampleSink for SeriesSamples {
    fn with_capacity(key: Arc<SeriesKey>, samples: usize) -> Self {
        Self {
            key,
            times: Vec::with_capacity(samples),
            values: Vec::with_capacity(samples),
        }
    }

    fn extend(&mut self, times: &[i64], values: &[f64]) {
        self.times.extend_from_slice(times);
        self.values.extend_from_slice(values);
    }

    fn from_samples(samples: SeriesSamples) -> Self {
        samples
    }
}

impl Store {
    /// The float samples in `[min_ns, max_ns]` of every series that `wanted` accepts (only
    /// series of `metric`, when given: found without looking at the others), from the files
    /// and the buffer, one entry per series (in no particular order); with `steps`,
    /// only those the steps use (and all of the buffer's). Fails with
    /// [`Error::TooManySamples`] once more than `max_samples` samples are kept.
    pub async fn select_series(
        &self,
        metric: Option<&str>,
        wanted: &(dyn Fn(&SeriesKey) -> bool + Send + Sync),
        min_ns: i64,
        max_ns: i64,
        steps: Option<Steps>,
        max_samples: usize,
    ) -> Result<Vec<SeriesSamples>> {
        self.select_series_into(metric, wanted, min_ns, max_ns, steps, max_samples)
            .await
    }

    /// [`Store::select_series`], each series built into a [`SampleSink`].
    pub async fn select_series_into<S: SampleSink>(
        &self,
        metric: Option<&str>,
        wanted: &(dyn Fn(&SeriesKey) -> bool + Send + Sync),
        min_ns: i64,
        max_ns: i64,
        steps: Option<Steps>,
        max_samples: usize,
    ) -> Result<Vec<S>> {
        self.readable()?;
        let (files, chunks, keys) = {
            let state = self.inner.state.read();
            let files: Vec<FileMeta> = state
                .catalog
                .files
                .iter()
                .filter(|f| f.min_time <= max_ns && f.max_time >= min_ns)
                .cloned()
                .collect();
            let mut chunks = state.unflushed_chunks();
            chunks.retain(|c| c.min_time <= max_ns && c.max_time >= min_ns);
            // The buffer's series are looked up by id: their keys are needed only if it has
            // rows in the range.
            let keys = if chunks.is_empty() {
                Vec::new()
            } else {
                state.table.keys().to_vec()
            };
            (files, chunks, keys)
        };
        // Pick the series of each file from its index; take their blocks from the cache or
        // read them in parallel pieces. Files in catalog order (older writes first), then the
        // buffer: of two samples with the same time, the later write comes last.
        let range = (min_ns, max_ns);
        let mut cached = Vec::new();
        let mut to_read = Vec::new();
        let buffer_order = files.len();
        for (order, file) in files.into_iter().enumerate() {
            let indexed = indexed_file(&self.inner, &file).await?;
            let mut missing = Vec::new();
            for (series, rows) in indexed.runs(metric, wanted, min_ns, max_ns) {
                let blocks = indexed.blocks(series, &rows);
                match self
                    .inner
                    .block_cache
                    .get(indexed.id, series as u32, blocks)
                {
                    Lookup::Hit(blocks) => {
                        self.inner.metrics.read_cache_hits.inc();
                        let key = Arc::new(indexed.index.series[series].key.clone());
                        cached.push((order, key, blocks));
                    }
                    Lookup::Miss => {
                        self.inner.metrics.read_cache_misses.inc();
                        missing.push((series, rows));
                    }
                }
            }
            to_read.push((order, Arc::new(file), indexed, missing));
        }
        // A selection reading more than a quarter of the cache (a scan over days of many
        // series) would only push out what dashboards reuse: its blocks are not kept.
        let rows: u64 = to_read
            .iter()
            .flat_map(|(_, _, _, runs)| runs.iter().map(|(_, rows)| rows.end - rows.start))
            .sum();
        let keep = self.inner.block_cache.would_keep(rows as usize * 16);
        let mut reads = Vec::new();
        for (order, file, indexed, missing) in to_read {
            for piece in split(missing, indexed.metadata.metadata()) {
                let (inner, file, indexed) = (
                    Arc::clone(&self.inner),
                    Arc::clone(&file),
                    Arc::clone(&indexed),
                );
                let read = tokio::spawn(async move {
                    read_runs(&inner, &file, &indexed, piece, range, steps, keep).await
                });
                reads.push((order, read));
            }
        }
        let mut out = Selection::new(max_samples);
        // Cached blocks are taken apart meanwhile, on as many threads as the rows are worth.
        let rows = cached
            .iter()
            .flat_map(|(_, _, blocks)| blocks.iter().map(|b| b.times.len()))
            .sum();
        let assembled = in_parallel(cached, rows, |(order, key, blocks)| {
            (order, assemble(key, &blocks, range, steps))
        });
        for (order, part) in assembled {
            out.add(order, part)?;
        }
        for (order, read) in reads {
            let series = read.await.map_err(|e| Error::Encode {
                message: format!("reading files: {e}"),
            })??;
            for part in series {
                out.add(order, part)?;
            }
        }
        let wanted_in_buffer =
            |key: &SeriesKey| metric.is_none_or(|m| key.metric == m) && wanted(key);
        for s in read_buffer(&chunks, &keys, &wanted_in_buffer, min_ns, max_ns) {
            out.add(buffer_order, Part::Samples(s))?;
        }
        Ok(out.finish())
    }
}
