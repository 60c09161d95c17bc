//! [`Store::select_series`]: the float samples of chosen series over a time range, for
//! selectors (PromQL) that want whole series rather than SQL rows.
//!
//! Files are read through their series index ([`crate::series_index`]): the wanted series
//! are picked from the index in memory, and only their rows of `time` and `value` in the
//! range are decoded (Parquet row selection over the page index), never a label column.
//! Buffered rows are picked by their chunk's series list. Each file's Parquet metadata and
//! index are read once and kept while the file is in the catalog.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int8Type, Int64Type, TimestampNanosecondType};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use crate::block_cache::{Block, BlockKey, Lookup};
use crate::buffer::{Chunk, SeriesKey};
use crate::catalog::FileMeta;
use crate::series_index::{INDEX_KEY, MARK_ROWS, SeriesIndex, SeriesIndexBuilder};
use crate::{Error, Inner, Result, Store, decimal};

// Where the crate root re-exports it from (`exawatch_store::in_parallel`).
pub use exawatch_parallel::in_parallel;

/// Rows decoded per batch when reading a file's selected rows.
const READ_BATCH_ROWS: usize = 64 * 1024;

/// Rows of a file read by one task at least: a selection over many rows is read in parallel
/// pieces.
const PIECE_ROWS: u64 = 256 * 1024;

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

/// Evaluation times of a selector: the times `first_ns + k * interval_ns`, at each of which
/// the samples at or before it and no older than `lookback_ns` before it are used: only the
/// latest of them (an instant selector), or all (`whole_windows`: a range selector, whose
/// windows are then shorter than the interval). A selection for them leaves out the samples
/// of files that no step uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    /// The first evaluation time (ns, inclusive bound).
    pub first_ns: i64,
    /// Between evaluation times (ns, > 0).
    pub interval_ns: i64,
    /// How far before an evaluation time a sample may be (ns, inclusive).
    pub lookback_ns: i64,
    /// Every sample within lookback of a step is used, not only the latest.
    pub whole_windows: bool,
}

impl Steps {
    /// The first evaluation time at or after `t`.
    fn next_at_or_after(&self, t: i64) -> i64 {
        if t <= self.first_ns {
            return self.first_ns;
        }
        let interval = self.interval_ns.max(1) as u64;
        let steps = t.abs_diff(self.first_ns).div_ceil(interval);
        let next = i128::from(self.first_ns) + i128::from(steps) * i128::from(interval);
        next.min(i128::from(i64::MAX)) as i64
    }
}

/// [`slice::partition_point`] of `times` for a point expected near the start: probes 1, 2,
/// 4, … ahead, then searches the last gap, so that a step's few samples cost a few nearby
/// reads rather than a search of the whole block.
fn gallop(times: &[i64], pred: impl Fn(i64) -> bool) -> usize {
    let mut low = 0;
    let mut ahead = 1;
    while low + ahead < times.len() && pred(times[low + ahead]) {
        low += ahead;
        ahead *= 2;
    }
    if low == 0 && !times.first().is_some_and(|&t| pred(t)) {
        return 0;
    }
    let high = (low + ahead).min(times.len());
    low + 1 + times[low + 1..high].partition_point(|&t| pred(t))
}

/// Keeps, of one series' samples arriving in time order, those some step uses. Holds back
/// the latest sample until the next one shows whether a step falls between them.
#[derive(Debug)]
struct Thinning {
    steps: Steps,
    /// The held sample and the first step at or after it.
    pending: Option<(i64, f64, i64)>,
}

impl Thinning {
    fn new(steps: Steps) -> Self {
        Self {
            steps,
            pending: None,
        }
    }

    /// Pushes samples at `times` (ascending) with their `values`.
    fn push_sorted(&mut self, times: &[i64], values: &[f64], out: &mut SeriesSamples) {
        let mut i = 0;
        while i < times.len() {
            let step = match self.pending {
                Some((_, _, step)) if times[i] <= step => step,
                _ => {
                    self.flush(out);
                    self.steps.next_at_or_after(times[i])
                }
            };
            // Samples up to the step replace one another: the last stays.
            let end = i + gallop(&times[i..], |t| t <= step);
            self.pending = Some((times[end - 1], values[end - 1], step));
            i = end;
        }
    }

    /// The index ranges of `times` (ascending) within lookback of the first step at or
    /// after them (whole windows: lookback is shorter than the interval, so no other step's
    /// window holds them).
    fn windows<'t>(&self, times: &'t [i64]) -> impl Iterator<Item = Range<usize>> + 't {
        let steps = self.steps;
        let mut i = 0;
        std::iter::from_fn(move || {
            while i < times.len() {
                let step = steps.next_at_or_after(times[i]);
                let window_start = step.saturating_sub(steps.lookback_ns);
                if times[i] < window_start {
                    i += gallop(&times[i..], |t| t < window_start);
                    continue;
                }
                let end = i + gallop(&times[i..], |t| t <= step);
                let window = i..end;
                i = end;
                return Some(window);
            }
            None
        })
    }

    /// Ends the series: the held sample is kept if its next step is within lookback.
    fn flush(&mut self, out: &mut SeriesSamples) {
        if let Some((t, v, step)) = self.pending.take()
            && t >= step.saturating_sub(self.steps.lookback_ns)
        {
            out.times.push(t);
            out.values.push(v);
        }
    }
}

/// What is kept of a file for selections: its Parquet metadata (with the page index) and
/// its series index.
#[derive(Debug)]
pub(crate) struct IndexedFile {
    /// The file's number in this process, for the block cache.
    id: u64,
    metadata: ArrowReaderMetadata,
    index: SeriesIndex,
    /// The positions in `index` of each metric's series.
    by_metric: HashMap<String, Vec<usize>>,
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

/// One file's or the buffer's samples of a series.
enum Part {
    /// Decoded samples.
    Samples(SeriesSamples),
    /// The rows of blocks in the selection's range, all of them (copied once, when the
    /// series is put together).
    Blocks {
        key: Arc<SeriesKey>,
        blocks: Vec<(Arc<Block>, Range<usize>)>,
    },
}

impl Part {
    fn key(&self) -> &Arc<SeriesKey> {
        match self {
            Part::Samples(s) => &s.key,
            Part::Blocks { key, .. } => key,
        }
    }

    /// The samples as slices of times and values, in order.
    fn slices(&self) -> Box<dyn Iterator<Item = (&[i64], &[f64])> + '_> {
        match self {
            Part::Samples(s) => Box::new(std::iter::once((&s.times[..], &s.values[..]))),
            Part::Blocks { blocks, .. } => Box::new(
                blocks
                    .iter()
                    .map(|(b, rows)| (&b.times[rows.clone()], &b.values[rows.clone()])),
            ),
        }
    }

    fn len(&self) -> usize {
        self.slices().map(|(times, _)| times.len()).sum()
    }

    fn into_samples(self) -> SeriesSamples {
        match self {
            Part::Samples(s) => s,
            blocks => {
                let mut s = SeriesSamples::with_capacity(Arc::clone(blocks.key()), blocks.len());
                for (times, values) in blocks.slices() {
                    s.extend(times, values);
                }
                s
            }
        }
    }
}

/// The series gathered so far: each series' parts with their place in write order.
struct Selection {
    series: Vec<Vec<(usize, Part)>>,
    by_key: HashMap<Arc<SeriesKey>, usize>,
    samples: usize,
    max_samples: usize,
}

impl Selection {
    fn new(max_samples: usize) -> Self {
        Self {
            series: Vec::new(),
            by_key: HashMap::new(),
            samples: 0,
            max_samples,
        }
    }

    /// Adds a part of a series; `order` is its place in write order (the file's in the
    /// catalog, the buffer last): parts may be added in any order.
    fn add(&mut self, order: usize, part: Part) -> Result<()> {
        let len = part.len();
        self.samples += len;
        if self.samples > self.max_samples {
            return Err(Error::TooManySamples {
                limit: self.max_samples,
            });
        }
        if len == 0 {
            return Ok(());
        }
        match self.by_key.get(part.key()) {
            Some(&i) => self.series[i].push((order, part)),
            None => {
                self.by_key
                    .insert(Arc::clone(part.key()), self.series.len());
                self.series.push(vec![(order, part)]);
            }
        }
        Ok(())
    }

    /// Every series with its samples in time order (stable: the later write of a time last),
    /// put together on several threads when there are many samples (it is a copy of each).
    fn finish<S: SampleSink>(self) -> Vec<S> {
        in_parallel(self.series, self.samples, |mut parts| {
            parts.sort_by_key(|(order, _)| *order);
            join(parts.into_iter().map(|(_, part)| part).collect())
        })
    }
}

/// One series from its parts in write order. Parts each in time order (files; the buffer's
/// unless written out of order) are merged run by run straight into the sink: parts that
/// follow one another in time, or overlap only at their edges (flushes of concurrent
/// writers), are copied in a few long runs. Otherwise the samples are sorted.
fn join<S: SampleSink>(mut parts: Vec<Part>) -> S {
    if parts
        .iter()
        .any(|p| matches!(p, Part::Samples(s) if !s.times.is_sorted()))
    {
        return S::from_samples(sort(parts.into_iter().map(Part::into_samples).collect()));
    }
    if let [Part::Samples(_)] = &parts[..]
        && let Some(Part::Samples(s)) = parts.pop()
    {
        return S::from_samples(s);
    }
    let total = parts.iter().map(Part::len).sum();
    let mut out = S::with_capacity(Arc::clone(parts[0].key()), total);
    let mut cursors: Vec<Cursor> = parts.iter().map(Cursor::new).collect();
    cursors.retain(|c| !c.done());
    while !cursors.is_empty() {
        // The part whose next sample comes first; of equal times, the one written first.
        let first = (0..cursors.len())
            .min_by_key(|&i| cursors[i].head())
            .expect("not empty");
        // It goes on until another part's next sample, which goes first if that part was
        // written earlier and on an equal time (`limit` is exclusive).
        let limit = cursors
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != first)
            .map(|(i, c)| c.head().saturating_add(i64::from(i > first)))
            .min();
        let cursor = &mut cursors[first];
        let (times, values) = cursor.slices[cursor.slice];
        let end = match limit {
            Some(limit) => cursor.row + times[cursor.row..].partition_point(|&t| t < limit),
            None => times.len(),
        };
        out.extend(&times[cursor.row..end], &values[cursor.row..end]);
        cursor.advance_to(end);
        if cursor.done() {
            cursors.remove(first);
        }
    }
    out
}

/// A place in a part in time order: its non-empty slices, the current one and the row in it.
struct Cursor<'a> {
    slices: Vec<(&'a [i64], &'a [f64])>,
    slice: usize,
    row: usize,
}

impl<'a> Cursor<'a> {
    fn new(part: &'a Part) -> Self {
        Self {
            slices: part.slices().filter(|(t, _)| !t.is_empty()).collect(),
            slice: 0,
            row: 0,
        }
    }

    fn done(&self) -> bool {
        self.slice == self.slices.len()
    }

    /// The time of the next sample.
    fn head(&self) -> i64 {
        self.slices[self.slice].0[self.row]
    }

    /// Moves to `row` of the current slice (to the next slice at its end).
    fn advance_to(&mut self, row: usize) {
        self.row = row;
        if row == self.slices[self.slice].0.len() {
            (self.slice, self.row) = (self.slice + 1, 0);
        }
    }
}

/// One series from parts not all in time order: their samples in write order, sorted by
/// time (stable: the later write of a time last).
fn sort(parts: Vec<SeriesSamples>) -> SeriesSamples {
    let total = parts.iter().map(|p| p.times.len()).sum();
    let mut all = SeriesSamples::with_capacity(Arc::clone(&parts[0].key), total);
    for part in &parts {
        all.extend(&part.times, &part.values);
    }
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by_key(|&i| all.times[i]);
    all.times = order.iter().map(|&i| all.times[i]).collect();
    all.values = order.iter().map(|&i| all.values[i]).collect();
    all
}

impl IndexedFile {
    /// The rows of the series that `wanted` accepts that may hold times in `[min_ns, max_ns]`,
    /// in file order: (series in the index, rows).
    fn runs(
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
    fn blocks(&self, series: usize, rows: &Range<u64>) -> Range<u32> {
        let start = self.index.series[series].start;
        let first = (rows.start - start) / MARK_ROWS;
        let end = (rows.end - start).div_ceil(MARK_ROWS);
        first as u32..end as u32
    }
}

/// One file's part of a series from its blocks: the samples in `[min_ns, max_ns]`, only
/// those the steps use.
fn assemble(
    key: Arc<SeriesKey>,
    blocks: &[Arc<Block>],
    (min_ns, max_ns): (i64, i64),
    steps: Option<Steps>,
) -> Part {
    let in_range = |b: &Block| {
        let from = b.times.partition_point(|&t| t < min_ns);
        let to = b.times.partition_point(|&t| t <= max_ns);
        from..to.max(from)
    };
    let Some(steps) = steps else {
        let blocks = blocks
            .iter()
            .map(|b| (Arc::clone(b), in_range(b)))
            .filter(|(_, rows)| !rows.is_empty())
            .collect();
        return Part::Blocks { key, blocks };
    };
    let mut out = SeriesSamples {
        key,
        times: Vec::new(),
        values: Vec::new(),
    };
    let mut thinning = Thinning::new(steps);
    for block in blocks {
        let rows = in_range(block);
        let (times, values) = (&block.times[rows.clone()], &block.values[rows]);
        if steps.whole_windows {
            for window in thinning.windows(times) {
                out.times.extend_from_slice(&times[window.clone()]);
                out.values.extend_from_slice(&values[window]);
            }
        } else {
            thinning.push_sorted(times, values, &mut out);
        }
    }
    thinning.flush(&mut out);
    Part::Samples(out)
}

/// Splits a file's runs into pieces of whole row groups and at least [`PIECE_ROWS`] rows,
/// read in parallel (a piece decodes the dictionary pages of the row groups it touches, so
/// pieces do not share row groups but for a run that crosses into the next).
fn split(
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
async fn read_runs(
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

/// The file's metadata and index: kept from an earlier read, or read now (and kept). A file
/// written before files carried an index has one built from its label columns, once.
async fn indexed_file(inner: &Arc<Inner>, file: &FileMeta) -> Result<Arc<IndexedFile>> {
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

/// The wanted series' samples of the buffered chunks (in write order). `keys` are the
/// series table's keys by id; `wanted` is asked once per series.
fn read_buffer(
    chunks: &[Arc<Chunk>],
    keys: &[Arc<SeriesKey>],
    wanted: &(dyn Fn(&SeriesKey) -> bool + Send + Sync),
    min_ns: i64,
    max_ns: i64,
) -> Vec<SeriesSamples> {
    const UNSEEN: u32 = u32::MAX;
    const UNWANTED: u32 = u32::MAX - 1;
    let mut out: Vec<SeriesSamples> = Vec::new();
    // Series id → position in `out`, UNWANTED, or UNSEEN.
    let mut slots = vec![UNSEEN; keys.len()];
    for chunk in chunks {
        let local: Vec<u32> = chunk
            .series
            .iter()
            .map(|&id| {
                let Some(slot) = slots.get_mut(id as usize) else {
                    return UNWANTED;
                };
                if *slot == UNSEEN {
                    let key = &keys[id as usize];
                    *slot = if wanted(key) {
                        out.push(SeriesSamples {
                            key: Arc::clone(key),
                            times: Vec::new(),
                            values: Vec::new(),
                        });
                        (out.len() - 1) as u32
                    } else {
                        UNWANTED
                    };
                }
                *slot
            })
            .collect();
        if local.iter().all(|&slot| slot == UNWANTED) {
            continue;
        }
        let (times, values) = (&chunk.time, &chunk.value);
        for (row, key) in chunk.keys.values().iter().enumerate() {
            let slot = local[*key as usize];
            if slot == UNWANTED {
                continue;
            }
            let t = times.value(row);
            if t >= min_ns && t <= max_ns && values.is_valid(row) {
                let s = &mut out[slot as usize];
                s.times.push(t);
                s.values.push(values.value(row));
            }
        }
    }
    out
}

/// Reads one file of the store's object store for the Parquet reader.
struct FileReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
}

impl FileReader {
    fn new(inner: &Inner, file: &FileMeta) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn part(key: &Arc<SeriesKey>, samples: &[(i64, f64)]) -> SeriesSamples {
        SeriesSamples {
            key: Arc::clone(key),
            times: samples.iter().map(|s| s.0).collect(),
            values: samples.iter().map(|s| s.1).collect(),
        }
    }

    /// The parts joined, each given as decoded samples and as cached blocks of 2 rows.
    fn merged(key: &Arc<SeriesKey>, parts: &[&[(i64, f64)]]) -> Vec<(i64, f64)> {
        let joined = |parts: Vec<Part>| {
            let s: SeriesSamples = join(parts);
            s.times.into_iter().zip(s.values).collect::<Vec<_>>()
        };
        let decoded = joined(parts.iter().map(|p| Part::Samples(part(key, p))).collect());
        let in_blocks = parts.iter().map(|p| {
            let p = part(key, p);
            let blocks = p
                .times
                .chunks(2)
                .zip(p.values.chunks(2))
                .map(|(times, values)| {
                    let block = Block {
                        times: times.to_vec(),
                        values: values.to_vec(),
                    };
                    (Arc::new(block), 0..times.len())
                })
                .collect();
            match p.times.is_sorted() {
                true => Part::Blocks {
                    key: Arc::clone(key),
                    blocks,
                },
                false => Part::Samples(p),
            }
        });
        assert_eq!(joined(in_blocks.collect()), decoded);
        decoded
    }

    #[test]
    fn gallop_finds_what_partition_point_finds() {
        for len in 0..40 {
            let times: Vec<i64> = (0..len).map(|t| t * 3).collect();
            for bound in -1..len * 3 + 2 {
                assert_eq!(
                    gallop(&times, |t| t <= bound),
                    times.partition_point(|&t| t <= bound),
                    "{len} {bound}"
                );
            }
        }
    }

    #[test]
    fn parts_merge_in_time_order_with_the_later_write_of_a_time_last() {
        let key = Arc::new(SeriesKey {
            metric: "m".into(),
            tags: Vec::new(),
        });
        // Overlapping edges, as flushes of concurrent writers leave them.
        assert_eq!(
            merged(
                &key,
                &[
                    &[(1, 1.0), (3, 3.0), (5, 5.0)],
                    &[(2, 2.0), (5, 50.0), (6, 6.0)]
                ]
            ),
            [(1, 1.0), (2, 2.0), (3, 3.0), (5, 5.0), (5, 50.0), (6, 6.0)]
        );
        // Disjoint parts in order, and in reverse order.
        assert_eq!(
            merged(&key, &[&[(1, 1.0)], &[(2, 2.0)], &[(3, 3.0)]]),
            [(1, 1.0), (2, 2.0), (3, 3.0)]
        );
        assert_eq!(
            merged(&key, &[&[(3, 3.0)], &[(1, 1.0), (2, 2.0)]]),
            [(1, 1.0), (2, 2.0), (3, 3.0)]
        );
        // Interleaved parts, equal times among them.
        assert_eq!(
            merged(
                &key,
                &[
                    &[(1, 1.0), (3, 3.0), (5, 5.0), (7, 7.0)],
                    &[(1, 10.0), (2, 2.0), (5, 50.0), (8, 8.0)],
                    &[(0, 0.0), (5, 500.0), (7, 70.0)]
                ]
            ),
            [
                (0, 0.0),
                (1, 1.0),
                (1, 10.0),
                (2, 2.0),
                (3, 3.0),
                (5, 5.0),
                (5, 50.0),
                (5, 500.0),
                (7, 7.0),
                (7, 70.0),
                (8, 8.0)
            ]
        );
        // A part out of order (the buffer's, written late) is sorted, stably.
        assert_eq!(
            merged(&key, &[&[(1, 1.0), (4, 4.0)], &[(4, 40.0), (2, 2.0)]]),
            [(1, 1.0), (2, 2.0), (4, 4.0), (4, 40.0)]
        );
    }
}
