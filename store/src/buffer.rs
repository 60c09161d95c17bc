//! The in-memory write buffer: interned series, and rows in column chunks that queries read
//! as Arrow record batches at once.
//!
//! Rows go into the active chunk; at [`CHUNK_ROWS`] rows it is sealed into an immutable
//! [`Chunk`]: a series id, time and value per row, about 21 bytes whatever the number of
//! tags. A chunk's record batch with metric and tag columns (dictionaries over the chunk's
//! own series list, sharing the row → series keys) is built the first time SQL reads it.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Float64Builder, Int32Array, StringArray,
    StringBuilder, TimestampNanosecondArray, TimestampNanosecondBuilder, new_null_array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use exawatch_protocol::{Batch, Value};

#[cfg(test)]
mod tests;

/// Rows per sealed chunk.
pub const CHUNK_ROWS: usize = 8192;

/// A hash map for per-sample lookups: aHash instead of the standard SipHash, which took ~10 %
/// of ingest CPU (perf).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// EXAMON's topic tags, in topic order: new tag columns with these names come first.
const EXAMON_TAG_ORDER: [&str; 5] = ["org", "cluster", "node", "plugin", "chnl"];

pub use exawatch_protocol::SeriesKey;

/// Cardinality limits: what a new series may not exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Live series of one metric: those written in the last [`LIVE_MINUTES`] (a series that
    /// returns after a longer pause counts as new).
    pub max_series_per_metric: usize,
    /// Tag keys, i.e. tag columns of the table.
    pub max_tag_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_series_per_metric: usize::MAX,
            max_tag_keys: usize::MAX,
        }
    }
}

/// A series counts toward [`Limits::max_series_per_metric`] until it has not been written
/// for this many minutes (VictoriaMetrics' hourly series limit counts the same way).
pub const LIVE_MINUTES: u32 = 60;

/// A sample refused because its new series would pass a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    /// Which limit: `series_per_metric` or `tag_keys`.
    pub limit: &'static str,
    /// What happened, for the client.
    pub message: String,
}

/// Samples refused by [`Buffer::insert`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    /// Refused for `max_series_per_metric`.
    pub series_per_metric: u64,
    /// Refused for `max_tag_keys`.
    pub tag_keys: u64,
    /// The first refusal's message.
    pub first: Option<String>,
}

impl Rejections {
    /// Samples refused in all.
    pub fn total(&self) -> u64 {
        self.series_per_metric + self.tag_keys
    }

    fn add(&mut self, refusal: &LimitExceeded) {
        match refusal.limit {
            "series_per_metric" => self.series_per_metric += 1,
            _ => self.tag_keys += 1,
        }
        if self.first.is_none() {
            self.first = Some(refusal.message.clone());
        }
    }
}

/// Hashes series keys for [`SeriesTable::intern`]. Writers hash their batches with the
/// table's hasher before queueing them ([`HashedBatch`]), so that the WAL thread, which
/// interns every write in turn under the state lock, does not.
#[derive(Debug, Clone, Default)]
pub struct SeriesHasher(ahash::RandomState);

impl SeriesHasher {
    /// The hash of one key.
    pub fn hash(&self, key: &SeriesKey) -> u64 {
        self.0.hash_one(key)
    }
}

/// A batch with the hash of each of its series: what [`Buffer::insert`] takes.
#[derive(Debug)]
pub struct HashedBatch {
    batch: Batch,
    hashes: Vec<u64>,
}

impl HashedBatch {
    /// Hashes each series of `batch`.
    pub fn new(batch: Batch, hasher: &SeriesHasher) -> Self {
        let hashes = batch.series().iter().map(|key| hasher.hash(key)).collect();
        Self { batch, hashes }
    }

    /// The batch.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }
}

/// Every series seen, by dense id, and the tag keys (columns) in order of first appearance
/// (EXAMON's own tags in topic order).
#[derive(Debug, Default)]
pub struct SeriesTable {
    /// Series ids, found by their key's hash.
    ids: hashbrown::HashTable<u32>,
    /// Each series' key hash, by id.
    hashes: Vec<u64>,
    keys: Vec<Arc<SeriesKey>>,
    hasher: SeriesHasher,
    tag_columns: Vec<String>,
    /// Live series per metric.
    series_per_metric: HashMap<String, usize>,
    /// Each series' last write, in minutes of [`SeriesTable::expire_idle`]'s clock.
    written_minute: Vec<u32>,
    /// Whether each series counts in `series_per_metric`.
    live: Vec<bool>,
    /// The clock's minute now.
    minute: u32,
    limits: Limits,
}

impl SeriesTable {
    /// A table that already knows these tag columns (from the catalog), in this order.
    pub fn new(tag_columns: Vec<String>, limits: Limits) -> Self {
        Self {
            tag_columns,
            limits,
            ..Self::default()
        }
    }

    /// This (empty) table with `hasher`, so that batches hashed for another table fit it.
    pub(crate) fn with_hasher(self, hasher: SeriesHasher) -> Self {
        debug_assert!(
            self.keys.is_empty(),
            "only an empty table changes its hasher"
        );
        Self { hasher, ..self }
    }

    /// The hasher [`SeriesTable::intern`] expects keys hashed with.
    pub fn hasher(&self) -> &SeriesHasher {
        &self.hasher
    }

    /// The id of the series (`hash` from [`SeriesTable::hasher`]), registering the key (shared)
    /// and any new tag column if it is new and within the limits.
    pub fn intern(&mut self, key: &Arc<SeriesKey>, hash: u64) -> Result<u32, LimitExceeded> {
        let found = self.ids.find(hash, |&id| {
            // `Arc`s of an `Eq` type compare their pointers first: a key from the line-protocol
            // cache is the table's own.
            self.hashes[id as usize] == hash && self.keys[id as usize] == *key
        });
        if let Some(&id) = found {
            let index = id as usize;
            if !self.live[index] {
                self.within_series_limit(&key.metric)?;
                self.live[index] = true;
                *self
                    .series_per_metric
                    .entry(key.metric.clone())
                    .or_insert(0) += 1;
            }
            self.written_minute[index] = self.minute;
            return Ok(id);
        }
        self.within_series_limit(&key.metric)?;
        let mut new: Vec<&String> = key
            .tags
            .iter()
            .map(|(tag, _)| tag)
            .filter(|tag| !self.tag_columns.contains(tag))
            .collect();
        if self.tag_columns.len() + new.len() > self.limits.max_tag_keys {
            return Err(LimitExceeded {
                limit: "tag_keys",
                message: format!(
                    "tag key {:?} would pass the limit of {} tag keys (store.max_tag_keys)",
                    new[0], self.limits.max_tag_keys
                ),
            });
        }
        new.sort_by_key(|tag| {
            let rank = EXAMON_TAG_ORDER.iter().position(|t| t == tag);
            (rank.unwrap_or(usize::MAX), tag.as_str())
        });
        self.tag_columns.extend(new.into_iter().cloned());
        *self
            .series_per_metric
            .entry(key.metric.clone())
            .or_insert(0) += 1;
        let id = self.keys.len() as u32;
        self.keys.push(Arc::clone(key));
        self.hashes.push(hash);
        self.written_minute.push(self.minute);
        self.live.push(true);
        self.ids
            .insert_unique(hash, id, |&id| self.hashes[id as usize]);
        Ok(id)
    }

    /// Ok while `metric` has fewer live series than its limit.
    fn within_series_limit(&self, metric: &str) -> Result<(), LimitExceeded> {
        let series = self.series_per_metric.get(metric).copied().unwrap_or(0);
        if series >= self.limits.max_series_per_metric {
            return Err(LimitExceeded {
                limit: "series_per_metric",
                message: format!(
                    "metric {metric:?} has {series} series written in the last {LIVE_MINUTES} minutes, its limit (store.max_series_per_metric)"
                ),
            });
        }
        Ok(())
    }

    /// Sets the clock to `minute` (minutes since some start, never decreasing) and stops
    /// counting the series not written in the last [`LIVE_MINUTES`] of it.
    pub fn expire_idle(&mut self, minute: u32) {
        self.minute = minute;
        for (index, live) in self.live.iter_mut().enumerate() {
            if *live && minute.saturating_sub(self.written_minute[index]) >= LIVE_MINUTES {
                *live = false;
                if let Some(count) = self.series_per_metric.get_mut(&self.keys[index].metric) {
                    *count -= 1;
                }
            }
        }
    }

    /// The minute [`SeriesTable::expire_idle`] last set.
    pub fn minute(&self) -> u32 {
        self.minute
    }

    /// The key of series `id`.
    pub fn key(&self, id: u32) -> &SeriesKey {
        &self.keys[id as usize]
    }

    /// Every series' key, by id.
    pub fn keys(&self) -> &[Arc<SeriesKey>] {
        &self.keys
    }

    /// The keys of the series of `chunks`, to sort them without holding the table.
    pub fn keys_of(&self, chunks: &[Arc<Chunk>]) -> HashMap<u32, Arc<SeriesKey>> {
        chunks
            .iter()
            .flat_map(|c| c.series.iter())
            .map(|&id| (id, Arc::clone(&self.keys[id as usize])))
            .collect()
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no series was seen yet.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds the tag columns of `columns` the table lacks, in their order.
    pub fn add_tag_columns(&mut self, columns: &[String]) {
        for column in columns {
            if !self.tag_columns.contains(column) {
                self.tag_columns.push(column.clone());
            }
        }
    }

    /// Tag keys in order of first appearance.
    pub fn tag_columns(&self) -> &[String] {
        &self.tag_columns
    }

    /// The `samples` table schema: `time, metric, value, text`, then one column per tag key.
    pub fn schema(&self) -> SchemaRef {
        let mut fields = base_fields();
        fields.extend(self.tag_columns.iter().map(|t| tag_field(t)));
        Arc::new(Schema::new(fields))
    }
}

/// The type of the `time` column.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// The type of the `metric` column and of every tag column.
pub fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn base_fields() -> Vec<Field> {
    vec![
        Field::new("time", time_type(), false),
        Field::new("metric", dictionary_type(), false),
        Field::new("value", DataType::Float64, true),
        Field::new("text", DataType::Utf8, true),
    ]
}

fn tag_field(name: &str) -> Field {
    Field::new(name, dictionary_type(), true)
}

/// An immutable block of buffered rows: one series id, time and value per row. Its label
/// columns (metric and tags) are built only when a SQL query first reads the chunk: a
/// chunk names thousands of series, and most chunks go to a file without ever being read
/// that way.
#[derive(Debug)]
pub struct Chunk {
    /// Global series ids of the chunk's local series, by local index.
    pub series: Vec<u32>,
    /// Local series index of each row.
    pub keys: Int32Array,
    /// The `time` of each row.
    pub time: TimestampNanosecondArray,
    /// The `value` of each row (NULL for a text sample).
    pub value: Float64Array,
    /// The `text` of each row (NULL for a numeric sample); `None` when no row has one (most
    /// chunks: a text column of nulls costs 4 to 8 bytes per buffered row).
    pub text: Option<StringArray>,
    /// Smallest timestamp in the chunk.
    pub min_time: i64,
    /// Largest timestamp in the chunk.
    pub max_time: i64,
    batch: OnceLock<RecordBatch>,
}

impl Chunk {
    /// The rows as a `samples` record batch (time, metric, value, text, and the tag columns
    /// of the chunk's series), built on first use. `keys` are the series table's keys by id
    /// ([`SeriesTable::keys`]), `tag_columns` its tag columns.
    pub fn batch(
        &self,
        keys: &[Arc<SeriesKey>],
        tag_columns: &[String],
    ) -> Result<&RecordBatch, ArrowError> {
        if let Some(batch) = self.batch.get() {
            return Ok(batch);
        }
        let keyed: Vec<&SeriesKey> = self.series.iter().map(|&id| &*keys[id as usize]).collect();
        let text: ArrayRef = match &self.text {
            Some(text) => Arc::new(text.clone()),
            None => new_null_array(&DataType::Utf8, self.len()),
        };
        let batch = series_batch(
            &keyed,
            &self.keys,
            Arc::new(self.time.clone()),
            value_columns(Arc::new(self.value.clone()), text),
            tag_columns,
        )?;
        Ok(self.batch.get_or_init(|| batch))
    }

    /// Rows in the chunk.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the chunk has no rows.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The rows from `offset` on (no copy); the time bounds stay the whole chunk's.
    pub fn tail(&self, offset: usize) -> Chunk {
        let rows = self.len().saturating_sub(offset);
        let offset = offset.min(self.len());
        Chunk {
            series: self.series.clone(),
            keys: self.keys.slice(offset, rows),
            time: self.time.slice(offset, rows),
            value: self.value.slice(offset, rows),
            text: self.text.as_ref().map(|text| text.slice(offset, rows)),
            min_time: self.min_time,
            max_time: self.max_time,
            batch: OnceLock::new(),
        }
    }
}

/// The chunk being filled.
#[derive(Debug)]
pub struct ActiveChunk {
    local: HashMap<u32, i32>,
    series: Vec<u32>,
    keys: Vec<i32>,
    time: TimestampNanosecondBuilder,
    value: Float64Builder,
    /// Started at the first text sample, with a null for each row before it.
    text: Option<StringBuilder>,
    min_time: i64,
    max_time: i64,
}

impl Default for ActiveChunk {
    fn default() -> Self {
        Self {
            local: HashMap::default(),
            series: Vec::new(),
            keys: Vec::with_capacity(CHUNK_ROWS),
            time: TimestampNanosecondBuilder::with_capacity(CHUNK_ROWS).with_timezone("UTC"),
            value: Float64Builder::with_capacity(CHUNK_ROWS),
            text: None,
            min_time: i64::MAX,
            max_time: i64::MIN,
        }
    }
}

impl ActiveChunk {
    /// Rows in the chunk.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the chunk has no rows.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn push(&mut self, series: u32, time_ns: i64, value: &Value) {
        let next = self.series.len() as i32;
        let local = *self.local.entry(series).or_insert(next);
        if local == next {
            self.series.push(series);
        }
        self.keys.push(local);
        self.time.append_value(time_ns);
        match value {
            Value::Float(v) => {
                self.value.append_value(*v);
                if let Some(text) = &mut self.text {
                    text.append_null();
                }
            }
            Value::Text(t) => {
                self.value.append_null();
                let rows = self.keys.len() - 1;
                let text = self.text.get_or_insert_with(|| {
                    let mut text = StringBuilder::new();
                    text.append_nulls(rows);
                    text
                });
                text.append_value(t);
            }
        }
        self.min_time = self.min_time.min(time_ns);
        self.max_time = self.max_time.max(time_ns);
    }

    /// A sealed copy of the rows so far (the active chunk keeps filling).
    fn snapshot(&self) -> Chunk {
        Chunk {
            series: self.series.clone(),
            keys: Int32Array::from(self.keys.clone()),
            time: self.time.finish_cloned(),
            value: self.value.finish_cloned(),
            text: self.text.as_ref().map(StringBuilder::finish_cloned),
            min_time: self.min_time,
            max_time: self.max_time,
            batch: OnceLock::new(),
        }
    }

    fn seal(mut self) -> Chunk {
        Chunk {
            series: self.series,
            keys: Int32Array::from(self.keys),
            time: self.time.finish(),
            value: self.value.finish(),
            text: self.text.as_mut().map(StringBuilder::finish),
            min_time: self.min_time,
            max_time: self.max_time,
            batch: OnceLock::new(),
        }
    }
}

/// The `value` and `text` columns of the `samples` table.
fn value_columns(value: ArrayRef, text: ArrayRef) -> Vec<(Field, ArrayRef)> {
    let fields = base_fields();
    vec![(fields[2].clone(), value), (fields[3].clone(), text)]
}

/// Builds a record batch from rows that reference `series` by index (`keys`): `time`,
/// `metric`, then `values`, then each tag column present among `series`; metric and tags are
/// dictionaries over the series list.
pub fn series_batch(
    series: &[&SeriesKey],
    keys: &Int32Array,
    time: ArrayRef,
    values: Vec<(Field, ArrayRef)>,
    tag_columns: &[String],
) -> Result<RecordBatch, ArrowError> {
    SeriesLabels::new(series, tag_columns).batch(keys, time, values)
}

/// The metric and tag values of a list of series, as dictionary values for record batches
/// whose rows refer to the series by index.
#[derive(Debug)]
pub(crate) struct SeriesLabels {
    metrics: ArrayRef,
    /// Per tag column some series has: its field, its value per series, and whether every
    /// series has it.
    tags: Vec<(Field, ArrayRef, bool)>,
}

impl SeriesLabels {
    /// The labels of `series` for the tag columns `tag_columns`.
    pub(crate) fn new(series: &[&SeriesKey], tag_columns: &[String]) -> Self {
        let metrics = Arc::new(StringArray::from_iter_values(
            series.iter().map(|s| s.metric.as_str()),
        ));
        let columns = TagColumns::new(tag_columns);
        let mut by_column: Vec<Vec<Option<&str>>> =
            vec![Vec::with_capacity(series.len()); tag_columns.len()];
        for key in series {
            for (column, value) in by_column.iter_mut().zip(columns.values(key)) {
                column.push(value);
            }
        }
        let tags = tag_columns
            .iter()
            .zip(by_column)
            .filter_map(|(column, values)| {
                let values = StringArray::from(values);
                let missing = values.null_count();
                (missing < values.len()).then(|| {
                    (
                        tag_field(column),
                        Arc::new(values) as ArrayRef,
                        missing == 0,
                    )
                })
            })
            .collect();
        Self { metrics, tags }
    }

    /// A record batch of rows referring to the series by index (`keys`): `time`, `metric`,
    /// then `values`, then the tag columns.
    pub(crate) fn batch(
        &self,
        keys: &Int32Array,
        time: ArrayRef,
        values: Vec<(Field, ArrayRef)>,
    ) -> Result<RecordBatch, ArrowError> {
        let base = base_fields();
        let mut fields = vec![base[0].clone(), base[1].clone()];
        let mut columns: Vec<ArrayRef> = vec![
            time,
            Arc::new(DictionaryArray::<Int32Type>::try_new(
                keys.clone(),
                Arc::clone(&self.metrics),
            )?),
        ];
        for (field, column) in values {
            fields.push(field);
            columns.push(column);
        }
        for (field, values, everywhere) in &self.tags {
            let column_keys = if *everywhere {
                keys.clone()
            } else {
                keys.iter()
                    .map(|k| k.filter(|&k| values.is_valid(k as usize)))
                    .collect()
            };
            fields.push(field.clone());
            columns.push(Arc::new(DictionaryArray::<Int32Type>::try_new(
                column_keys,
                Arc::clone(values),
            )?));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
    }
}

/// Reshapes a batch to `schema`: columns by name, null columns for tags the batch lacks.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => Arc::clone(column),
            None => new_null_array(field.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// The buffered rows: sealed chunks and the active one.
#[derive(Debug, Default)]
pub struct Buffer {
    sealed: Vec<Arc<Chunk>>,
    active: ActiveChunk,
    rows: usize,
}

impl Buffer {
    /// Adds a batch's points, interning each series they refer to once.
    pub fn insert(
        &mut self,
        hashed: &HashedBatch,
        table: &mut SeriesTable,
    ) -> Result<Rejections, ArrowError> {
        let keys = hashed.batch.series();
        // What interning each series of the batch gave, once a point refers to it.
        let mut ids: Vec<Option<Result<u32, LimitExceeded>>> = vec![None; keys.len()];
        let mut rejections = Rejections::default();
        for point in hashed.batch.points() {
            let i = point.series as usize;
            let id = match ids[i].get_or_insert_with(|| table.intern(&keys[i], hashed.hashes[i])) {
                Ok(id) => *id,
                Err(refusal) => {
                    rejections.add(refusal);
                    continue;
                }
            };
            self.active.push(id, point.time_ns, &point.value);
            self.rows += 1;
            if self.active.len() >= CHUNK_ROWS {
                let full = std::mem::take(&mut self.active);
                self.sealed.push(Arc::new(full.seal()));
            }
        }
        Ok(rejections)
    }

    /// Rows buffered.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The chunks a query reads now: the sealed ones and a copy of the active one.
    pub fn chunks(&self) -> Vec<Arc<Chunk>> {
        let mut chunks = self.sealed.clone();
        if !self.active.is_empty() {
            chunks.push(Arc::new(self.active.snapshot()));
        }
        chunks
    }

    /// Seals everything and empties the buffer, returning its chunks.
    pub fn take(&mut self) -> Vec<Arc<Chunk>> {
        let mut chunks = std::mem::take(&mut self.sealed);
        let active = std::mem::take(&mut self.active);
        if !active.is_empty() {
            chunks.push(Arc::new(active.seal()));
        }
        self.rows = 0;
        chunks
    }
}

/// Finds a series' values of given tag columns in one pass over its tags, not a search per
/// column: a flush of 100,000 series spent most of its time in those searches.
struct TagColumns<'a> {
    column_of: HashMap<&'a str, usize>,
}

impl<'a> TagColumns<'a> {
    fn new(tag_columns: &'a [String]) -> Self {
        let column_of = tag_columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        Self { column_of }
    }

    /// The value of each column for `key` (`None` where it lacks the tag).
    fn values<'k>(&self, key: &'k SeriesKey) -> Vec<Option<&'k str>> {
        let mut values = vec![None; self.column_of.len()];
        for (name, value) in &key.tags {
            if let Some(&column) = self.column_of.get(name.as_str()) {
                values[column] = Some(value.as_str());
            }
        }
        values
    }
}

/// Sorts the rows of `chunks` into one record batch for a file, in the table's sort order:
/// `metric`, then each tag column in `tag_columns` order (a missing tag sorts first), then
/// `time` — the order [`sort_order`] declares. Of rows with the same series and time only the
/// last written is kept. `keys` holds the key of every series in `chunks`
/// ([`SeriesTable::keys_of`]).
///
/// The series are ranked once; rows go to their series' place by a counting sort that keeps
/// arrival order, so only a series whose rows arrived out of time order is sorted further.
pub fn sorted_batch(
    chunks: &[Arc<Chunk>],
    keys: &HashMap<u32, Arc<SeriesKey>>,
    tag_columns: &[String],
) -> Result<SortedRows, ArrowError> {
    // Rank the distinct series column by column, comparing each column's value ranks, not
    // strings: with 100,000 series the string comparisons took a good part of a flush.
    let columns = TagColumns::new(tag_columns);
    let width = tag_columns.len() + 1;
    let unsorted: Vec<u32> = keys.keys().copied().collect();
    let mut labels: Vec<Option<&str>> = Vec::with_capacity(unsorted.len() * width);
    for id in &unsorted {
        let key = &keys[id];
        labels.push(Some(key.metric.as_str()));
        labels.extend(columns.values(key));
    }
    let ranks = value_ranks(&labels, width);
    let ranks_of = |i: usize| &ranks[i * width..(i + 1) * width];
    let mut positions: Vec<usize> = (0..unsorted.len()).collect();
    positions.sort_by(|&a, &b| ranks_of(a).cmp(ranks_of(b)));
    let ids: Vec<u32> = positions.iter().map(|&i| unsorted[i]).collect();
    let rank: HashMap<u32, u32> = ids
        .iter()
        .enumerate()
        .map(|(r, &id)| (id, r as u32))
        .collect();
    // Each chunk's local series → rank.
    let local_ranks: Vec<Vec<u32>> = chunks
        .iter()
        .map(|c| c.series.iter().map(|id| rank[id]).collect())
        .collect();

    // Counting sort into rows packed as chunk << ROW_BITS | row, in arrival order per series.
    let mut starts = vec![0usize; ids.len() + 1];
    for (chunk, ranks) in chunks.iter().zip(&local_ranks) {
        for &local in chunk.keys.values() {
            starts[ranks[local as usize] as usize + 1] += 1;
        }
    }
    for r in 1..starts.len() {
        starts[r] += starts[r - 1];
    }
    let mut next = starts.clone();
    let mut order = vec![0u32; starts[ids.len()]];
    for (c, (chunk, ranks)) in chunks.iter().zip(&local_ranks).enumerate() {
        for (row, &local) in chunk.keys.values().iter().enumerate() {
            let slot = &mut next[ranks[local as usize] as usize];
            order[*slot] = pack(c, row);
            *slot += 1;
        }
    }
    let time_of = |packed: u32| {
        let (c, row) = unpack(packed);
        chunks[c].time.value(row)
    };

    // Per series: time order (stable: the later write of a time stays later), then only the
    // last row of each time. Kept rows move to the front of `order`.
    let mut kept = 0;
    let mut row_keys: Vec<i32> = Vec::with_capacity(order.len());
    for r in 0..ids.len() {
        let run = &mut order[starts[r]..starts[r + 1]];
        if !run.is_sorted_by_key(|&p| time_of(p)) {
            run.sort_by_key(|&p| time_of(p));
        }
        for i in starts[r]..starts[r + 1] {
            let packed = order[i];
            let duplicate = i + 1 < starts[r + 1] && time_of(order[i + 1]) == time_of(packed);
            if !duplicate {
                order[kept] = packed;
                kept += 1;
                row_keys.push(r as i32);
            }
        }
    }
    order.truncate(kept);

    let times = TimestampNanosecondArray::from_iter_values(order.iter().map(|&p| time_of(p)))
        .with_timezone("UTC");
    let has_text = chunks.iter().any(|c| c.text.is_some());
    let series: Vec<Arc<SeriesKey>> = ids.iter().map(|id| Arc::clone(&keys[id])).collect();
    let keyed: Vec<&SeriesKey> = series.iter().map(AsRef::as_ref).collect();
    let labels = SeriesLabels::new(&keyed, tag_columns);
    Ok(SortedRows {
        keys: Int32Array::from(row_keys),
        series,
        times,
        values: gather_values(chunks, &order),
        texts: has_text.then(|| gather_texts(chunks, &order)),
        labels,
    })
}

/// For `labels`, rows of `width` columns, each value's rank among the distinct values of its
/// column (from 1, in string order; 0 for a missing one).
fn value_ranks(labels: &[Option<&str>], width: usize) -> Vec<u32> {
    let mut ranks = vec![0; labels.len()];
    for column in 0..width {
        let cells = || labels.iter().enumerate().skip(column).step_by(width);
        let mut rank_of: HashMap<&str, u32> = HashMap::default();
        for (_, value) in cells() {
            if let Some(value) = value {
                rank_of.entry(value).or_default();
            }
        }
        let mut distinct: Vec<&str> = rank_of.keys().copied().collect();
        distinct.sort_unstable();
        for (rank, value) in distinct.into_iter().enumerate() {
            rank_of.insert(value, rank as u32 + 1);
        }
        for (i, value) in cells() {
            if let Some(value) = value {
                ranks[i] = rank_of[value];
            }
        }
    }
    ranks
}

/// Bits of a packed row reference that hold the row within its chunk.
const ROW_BITS: u32 = CHUNK_ROWS.trailing_zeros();

/// A row of `chunks[chunk]` as one `u32`: sorting moves 4 bytes per row.
fn pack(chunk: usize, row: usize) -> u32 {
    debug_assert!(row < CHUNK_ROWS && chunk < 1 << (32 - ROW_BITS));
    ((chunk as u32) << ROW_BITS) | row as u32
}

fn unpack(packed: u32) -> (usize, usize) {
    (
        (packed >> ROW_BITS) as usize,
        (packed & ((1 << ROW_BITS) - 1)) as usize,
    )
}

/// The `value` of each packed row.
fn gather_values(chunks: &[Arc<Chunk>], order: &[u32]) -> Float64Array {
    let all_valid = chunks.iter().all(|c| c.value.null_count() == 0);
    if all_valid {
        return Float64Array::from_iter_values(order.iter().map(|&p| {
            let (c, row) = unpack(p);
            chunks[c].value.value(row)
        }));
    }
    order
        .iter()
        .map(|&p| {
            let (c, row) = unpack(p);
            chunks[c]
                .value
                .is_valid(row)
                .then(|| chunks[c].value.value(row))
        })
        .collect()
}

/// The `text` of each packed row.
fn gather_texts(chunks: &[Arc<Chunk>], order: &[u32]) -> StringArray {
    order
        .iter()
        .map(|&p| {
            let (c, row) = unpack(p);
            let text = chunks[c].text.as_ref()?;
            text.is_valid(row).then(|| text.value(row))
        })
        .collect()
}

/// Rows in file order, with the series of each row: time and value gathered, label columns
/// built per slice by [`SortedRows::batch`], so that a flush never holds them for every row.
#[derive(Debug)]
pub struct SortedRows {
    /// Index into `series` of each row; ascending.
    pub keys: Int32Array,
    /// The series, in sort order.
    pub series: Vec<Arc<SeriesKey>>,
    /// The `time` of each row.
    pub times: TimestampNanosecondArray,
    /// The `value` of each row (NULL for a text sample).
    pub values: Float64Array,
    /// The `text` of each row, if any row has one.
    texts: Option<StringArray>,
    labels: SeriesLabels,
}

impl SortedRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The metric and tag values of [`SortedRows::series`].
    pub(crate) fn labels(&self) -> &SeriesLabels {
        &self.labels
    }

    /// Rows `rows` as a `samples` record batch: time, metric, value, text, then every tag
    /// column some series has (the same columns for any slice).
    pub fn batch(&self, rows: Range<usize>) -> Result<RecordBatch, ArrowError> {
        let (offset, len) = (rows.start, rows.len());
        let texts: ArrayRef = match &self.texts {
            Some(texts) => Arc::new(texts.slice(offset, len)),
            None => new_null_array(&DataType::Utf8, len),
        };
        self.labels.batch(
            &self.keys.slice(offset, len),
            Arc::new(self.times.slice(offset, len)),
            value_columns(Arc::new(self.values.slice(offset, len)), texts),
        )
    }
}

/// The sort order of every file: `metric`, the tag columns (nulls first), `time`, all
/// ascending. Appending a tag column keeps older files sorted (the column is null there).
pub fn sort_order(tag_columns: &[String]) -> Vec<String> {
    std::iter::once("metric".to_owned())
        .chain(tag_columns.iter().cloned())
        .chain(std::iter::once("time".to_owned()))
        .collect()
}
