//! The in-memory write buffer: interned series, and rows in column chunks that queries read
//! as Arrow record batches at once.
//!
//! Rows go into the active chunk; at [`CHUNK_ROWS`] rows it is sealed into an immutable
//! [`Chunk`] whose record batch is built once. Tag and metric columns of a chunk are
//! dictionaries over the chunk's own series list, all sharing one key buffer (row → series),
//! so a buffered row costs about 24 bytes whatever the number of tags.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, DictionaryArray, Float64Builder, Int32Array, StringArray, StringBuilder,
    TimestampNanosecondArray, TimestampNanosecondBuilder, new_null_array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use exawatch_protocol::{Sample, Value};

#[cfg(test)]
mod tests;

/// Rows per sealed chunk.
pub const CHUNK_ROWS: usize = 8192;

/// A hash map for per-sample lookups: aHash instead of the standard SipHash, which took ~10 %
/// of ingest CPU (perf).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// EXAMON's topic tags, in topic order: new tag columns with these names come first.
const EXAMON_TAG_ORDER: [&str; 5] = ["org", "cluster", "node", "plugin", "chnl"];

/// The identity of a series: metric name and sorted tags.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SeriesKey {
    /// Metric name.
    pub metric: String,
    /// Tags sorted by key.
    pub tags: Vec<(String, String)>,
}

impl SeriesKey {
    /// The value of tag `key`, if the series has it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.tags[i].1.as_str())
    }
}

/// Cardinality limits: what a new series may not exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Series of one metric (counted since the process started).
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

    fn add(&mut self, refusal: LimitExceeded) {
        match refusal.limit {
            "series_per_metric" => self.series_per_metric += 1,
            _ => self.tag_keys += 1,
        }
        self.first.get_or_insert(refusal.message);
    }
}

/// Every series seen, by dense id, and the tag keys (columns) in order of first appearance
/// (EXAMON's own tags in topic order).
#[derive(Debug, Default)]
pub struct SeriesTable {
    ids: HashMap<Arc<SeriesKey>, u32>,
    keys: Vec<Arc<SeriesKey>>,
    tag_columns: Vec<String>,
    series_per_metric: HashMap<String, usize>,
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

    /// The id of the series, registering it (and any new tag column) if it is new and within
    /// the limits.
    pub fn intern(&mut self, key: SeriesKey) -> Result<u32, LimitExceeded> {
        if let Some(&id) = self.ids.get(&key) {
            return Ok(id);
        }
        let series = self
            .series_per_metric
            .get(&key.metric)
            .copied()
            .unwrap_or(0);
        if series >= self.limits.max_series_per_metric {
            return Err(LimitExceeded {
                limit: "series_per_metric",
                message: format!(
                    "metric {:?} has {series} series, its limit (store.max_series_per_metric)",
                    key.metric
                ),
            });
        }
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
        let key = Arc::new(key);
        self.keys.push(Arc::clone(&key));
        self.ids.insert(key, id);
        Ok(id)
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

/// An immutable block of buffered rows.
#[derive(Debug)]
pub struct Chunk {
    /// Global series ids of the chunk's local series, by local index.
    pub series: Vec<u32>,
    /// Local series index of each row.
    pub keys: Int32Array,
    /// The rows as a record batch (time, metric, value, text, and the chunk's tag columns).
    pub batch: RecordBatch,
    /// Smallest timestamp in the chunk.
    pub min_time: i64,
    /// Largest timestamp in the chunk.
    pub max_time: i64,
}

/// The chunk being filled.
#[derive(Debug)]
pub struct ActiveChunk {
    local: HashMap<u32, i32>,
    series: Vec<u32>,
    keys: Vec<i32>,
    time: TimestampNanosecondBuilder,
    value: Float64Builder,
    text: StringBuilder,
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
            text: StringBuilder::new(),
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
                self.text.append_null();
            }
            Value::Text(t) => {
                self.value.append_null();
                self.text.append_value(t);
            }
        }
        self.min_time = self.min_time.min(time_ns);
        self.max_time = self.max_time.max(time_ns);
    }

    /// A sealed copy of the rows so far (the active chunk keeps filling).
    fn snapshot(&self, table: &SeriesTable) -> Result<Chunk, ArrowError> {
        build_chunk(
            self.series.clone(),
            Int32Array::from(self.keys.clone()),
            self.time.finish_cloned(),
            self.value.finish_cloned(),
            self.text.finish_cloned(),
            (self.min_time, self.max_time),
            table,
        )
    }

    fn seal(mut self, table: &SeriesTable) -> Result<Chunk, ArrowError> {
        build_chunk(
            self.series,
            Int32Array::from(self.keys),
            self.time.finish(),
            self.value.finish(),
            self.text.finish(),
            (self.min_time, self.max_time),
            table,
        )
    }
}

fn build_chunk(
    series: Vec<u32>,
    keys: Int32Array,
    time: TimestampNanosecondArray,
    value: arrow::array::Float64Array,
    text: StringArray,
    (min_time, max_time): (i64, i64),
    table: &SeriesTable,
) -> Result<Chunk, ArrowError> {
    let keyed: Vec<&SeriesKey> = series.iter().map(|&id| table.key(id)).collect();
    let batch = series_batch(
        &keyed,
        &keys,
        Arc::new(time),
        value_columns(Arc::new(value), Arc::new(text)),
        table.tag_columns(),
    )?;
    Ok(Chunk {
        series,
        keys,
        batch,
        min_time,
        max_time,
    })
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
    let base = base_fields();
    let mut fields = vec![base[0].clone(), base[1].clone()];
    let metrics = StringArray::from_iter_values(series.iter().map(|s| s.metric.as_str()));
    let mut columns: Vec<ArrayRef> = vec![
        time,
        Arc::new(DictionaryArray::<Int32Type>::try_new(
            keys.clone(),
            Arc::new(metrics),
        )?),
    ];
    for (field, column) in values {
        fields.push(field);
        columns.push(column);
    }
    for column in tag_columns {
        let values: Vec<Option<&str>> = series.iter().map(|s| s.tag(column)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let column_keys = if values.iter().all(Option::is_some) {
            keys.clone()
        } else {
            keys.iter()
                .map(|k| k.filter(|&k| values[k as usize].is_some()))
                .collect()
        };
        let values = StringArray::from(values);
        fields.push(tag_field(column));
        columns.push(Arc::new(DictionaryArray::<Int32Type>::try_new(
            column_keys,
            Arc::new(values),
        )?));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
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
    /// Adds samples, interning their series.
    pub fn insert(
        &mut self,
        samples: Vec<Sample>,
        table: &mut SeriesTable,
    ) -> Result<Rejections, ArrowError> {
        let mut rejections = Rejections::default();
        for sample in samples {
            let key = SeriesKey {
                metric: sample.metric,
                tags: sample.tags,
            };
            let id = match table.intern(key) {
                Ok(id) => id,
                Err(refusal) => {
                    rejections.add(refusal);
                    continue;
                }
            };
            self.active.push(id, sample.time_ns, &sample.value);
            self.rows += 1;
            if self.active.len() >= CHUNK_ROWS {
                let full = std::mem::take(&mut self.active);
                self.sealed.push(Arc::new(full.seal(table)?));
            }
        }
        Ok(rejections)
    }

    /// Rows buffered.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The chunks a query reads now: the sealed ones and a copy of the active one.
    pub fn chunks(&self, table: &SeriesTable) -> Result<Vec<Arc<Chunk>>, ArrowError> {
        let mut chunks = self.sealed.clone();
        if !self.active.is_empty() {
            chunks.push(Arc::new(self.active.snapshot(table)?));
        }
        Ok(chunks)
    }

    /// Seals everything and empties the buffer, returning its chunks.
    pub fn take(&mut self, table: &SeriesTable) -> Result<Vec<Arc<Chunk>>, ArrowError> {
        let mut chunks = std::mem::take(&mut self.sealed);
        let active = std::mem::take(&mut self.active);
        if !active.is_empty() {
            chunks.push(Arc::new(active.seal(table)?));
        }
        self.rows = 0;
        Ok(chunks)
    }
}

/// Sorts the rows of `chunks` into one record batch for a file, in the table's sort order:
/// `metric`, then each tag column in `tag_columns` order (a missing tag sorts first), then
/// `time` — the order [`sort_order`] declares. Of rows with the same series and time only the
/// last written is kept. `keys` holds the key of every series in `chunks`
/// ([`SeriesTable::keys_of`]).
pub fn sorted_batch(
    chunks: &[Arc<Chunk>],
    keys: &HashMap<u32, Arc<SeriesKey>>,
    tag_columns: &[String],
) -> Result<SortedRows, ArrowError> {
    // Rank the distinct series column by column.
    let columns_of = |id: &u32| -> (&str, Vec<Option<&str>>) {
        let key = &keys[id];
        let tags = tag_columns.iter().map(|c| key.tag(c)).collect();
        (key.metric.as_str(), tags)
    };
    let mut ids: Vec<u32> = keys.keys().copied().collect();
    ids.sort_by_cached_key(columns_of);
    let rank: HashMap<u32, u32> = ids
        .iter()
        .enumerate()
        .map(|(r, &id)| (id, r as u32))
        .collect();

    let total: usize = chunks.iter().map(|c| c.keys.len()).sum();
    let mut rows: Vec<(u32, i64, u32, u32)> = Vec::with_capacity(total);
    for (c, chunk) in chunks.iter().enumerate() {
        let times = chunk
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .expect("time column");
        for (row, (key, time)) in chunk.keys.values().iter().zip(times.values()).enumerate() {
            let series = chunk.series[*key as usize];
            rows.push((rank[&series], *time, c as u32, row as u32));
        }
    }
    // Arrival order (chunk, row) breaks ties, so the last of a duplicate comes last.
    rows.sort_unstable();
    rows.dedup_by(|later, earlier| {
        let duplicate = later.0 == earlier.0 && later.1 == earlier.1;
        if duplicate {
            *earlier = *later;
        }
        duplicate
    });
    let indices: Vec<(usize, usize)> = rows.iter().map(|r| (r.2 as usize, r.3 as usize)).collect();
    let gather = |column: usize| -> Result<ArrayRef, ArrowError> {
        let arrays: Vec<&dyn Array> = chunks
            .iter()
            .map(|c| c.batch.column(column).as_ref())
            .collect();
        arrow::compute::interleave(&arrays, &indices)
    };
    let row_keys = Int32Array::from_iter_values(rows.iter().map(|r| r.0 as i32));
    let series: Vec<Arc<SeriesKey>> = ids.iter().map(|id| Arc::clone(&keys[id])).collect();
    let keyed: Vec<&SeriesKey> = series.iter().map(AsRef::as_ref).collect();
    let batch = series_batch(
        &keyed,
        &row_keys,
        gather(0)?,
        value_columns(gather(2)?, gather(3)?),
        tag_columns,
    )?;
    Ok(SortedRows {
        batch,
        keys: row_keys,
        series,
    })
}

/// Rows in file order, with the series of each row.
#[derive(Debug)]
pub struct SortedRows {
    /// The rows (`samples` columns with the tag columns present).
    pub batch: RecordBatch,
    /// Index into `series` of each row; ascending.
    pub keys: Int32Array,
    /// The series, in sort order.
    pub series: Vec<Arc<SeriesKey>>,
}

/// The sort order of every file: `metric`, the tag columns (nulls first), `time`, all
/// ascending. Appending a tag column keeps older files sorted (the column is null there).
pub fn sort_order(tag_columns: &[String]) -> Vec<String> {
    std::iter::once("metric".to_owned())
        .chain(tag_columns.iter().cloned())
        .chain(std::iter::once("time".to_owned()))
        .collect()
}
