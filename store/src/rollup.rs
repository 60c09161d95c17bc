//! Rollups: per series, per minute and per hour, the min, max, sum, count and last value,
//! written at each flush next to the raw file and merged by compaction. Queries over long
//! ranges at coarse resolution read them: SQL as the tables `samples_1m` and `samples_1h`.
//!
//! A flush sees only part of a bucket at its edges, so a rollup file may hold partial rows of
//! a bucket that another file completes; the query view (and compaction) combine them:
//! min of mins, max of maxes, sums of sums and counts, the last by `last_time`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int32Array, Int64Array, Int64Builder,
    TimestampNanosecondArray,
};
use arrow::compute::SortOptions;
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimestampNanosecondType,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};

use crate::buffer::{SeriesKey, SortedRows, dictionary_type, series_batch, time_type};

/// A rollup resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// One-minute buckets.
    Minute,
    /// One-hour buckets.
    Hour,
}

impl Resolution {
    /// Both, finest first.
    pub const ALL: [Self; 2] = [Self::Minute, Self::Hour];

    /// Bucket width.
    pub fn width_ns(self) -> i64 {
        match self {
            Self::Minute => 60_000_000_000,
            Self::Hour => 3_600_000_000_000,
        }
    }

    /// Short name: `1m`, `1h` (the catalog key and the directory name).
    pub fn name(self) -> &'static str {
        match self {
            Self::Minute => "1m",
            Self::Hour => "1h",
        }
    }

    /// The SQL table: `samples_1m`, `samples_1h`.
    pub fn table(self) -> &'static str {
        match self {
            Self::Minute => "samples_1m",
            Self::Hour => "samples_1h",
        }
    }

    /// Object-store path of the rollup file that goes with file `id`.
    pub fn file_path(self, id: u64) -> object_store::path::Path {
        object_store::path::Path::from(format!("rollups/{}/{id:020}.parquet", self.name()))
    }
}

/// The aggregate columns of a rollup row, after `time` and `metric`.
fn aggregate_fields() -> Vec<Field> {
    vec![
        Field::new("min", DataType::Float64, false),
        Field::new("max", DataType::Float64, false),
        Field::new("sum", DataType::Float64, false),
        Field::new("count", DataType::Int64, false),
        Field::new("last", DataType::Float64, false),
        Field::new("last_time", time_type(), false),
    ]
}

/// The schema of (partial) rollup rows: `time` (bucket start), `metric`, the aggregates, then
/// one column per tag key.
pub fn schema(tag_columns: &[String]) -> SchemaRef {
    let mut fields = vec![
        Field::new("time", time_type(), false),
        Field::new("metric", dictionary_type(), false),
    ];
    fields.extend(aggregate_fields());
    fields.extend(
        tag_columns
            .iter()
            .map(|t| Field::new(t, dictionary_type(), true)),
    );
    Arc::new(Schema::new(fields))
}

/// Running aggregates of one bucket.
#[derive(Debug)]
struct Bucket {
    min: f64,
    max: f64,
    sum: f64,
    count: i64,
    last: f64,
    last_time: i64,
}

impl Bucket {
    fn new(value: f64, time: i64) -> Self {
        Self {
            min: value,
            max: value,
            sum: value,
            count: 1,
            last: value,
            last_time: time,
        }
    }

    fn add(&mut self, other: &Bucket) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.count += other.count;
        if other.last_time >= self.last_time {
            self.last = other.last;
            self.last_time = other.last_time;
        }
    }
}

/// Collects finished buckets as columns.
#[derive(Default)]
struct Output {
    keys: Vec<i32>,
    time: Vec<i64>,
    min: Float64Builder,
    max: Float64Builder,
    sum: Float64Builder,
    count: Int64Builder,
    last: Float64Builder,
    last_time: Vec<i64>,
}

impl Output {
    fn push(&mut self, key: i32, bucket_time: i64, b: &Bucket) {
        self.keys.push(key);
        self.time.push(bucket_time);
        self.min.append_value(b.min);
        self.max.append_value(b.max);
        self.sum.append_value(b.sum);
        self.count.append_value(b.count);
        self.last.append_value(b.last);
        self.last_time.push(b.last_time);
    }

    fn finish(
        mut self,
        series: &[&SeriesKey],
        tag_columns: &[String],
    ) -> Result<RecordBatch, ArrowError> {
        let timestamps = |v: Vec<i64>| -> ArrayRef {
            Arc::new(TimestampNanosecondArray::from(v).with_timezone("UTC"))
        };
        let fields = aggregate_fields();
        let values: Vec<ArrayRef> = vec![
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.last.finish()),
            timestamps(self.last_time),
        ];
        series_batch(
            series,
            &Int32Array::from(self.keys),
            timestamps(self.time),
            fields.into_iter().zip(values).collect(),
            tag_columns,
        )
    }
}

/// Rolls sorted raw rows up into buckets of `resolution` (text samples are skipped).
pub fn from_sorted(
    rows: &SortedRows,
    resolution: Resolution,
    tag_columns: &[String],
) -> Result<RecordBatch, ArrowError> {
    let width = resolution.width_ns();
    let (times, values) = (&rows.times, &rows.values);
    let mut out = Output::default();
    let mut current: Option<(i32, i64, Bucket)> = None;
    for i in 0..rows.len() {
        if values.is_null(i) {
            continue;
        }
        let (key, time, value) = (rows.keys.value(i), times.value(i), values.value(i));
        let start = time - time.rem_euclid(width);
        match &mut current {
            Some((k, s, bucket)) if *k == key && *s == start => {
                bucket.add(&Bucket::new(value, time))
            }
            _ => {
                if let Some((k, s, bucket)) = current.take() {
                    out.push(k, s, &bucket);
                }
                current = Some((key, start, Bucket::new(value, time)));
            }
        }
    }
    if let Some((k, s, bucket)) = current {
        out.push(k, s, &bucket);
    }
    let series: Vec<&SeriesKey> = rows.series.iter().map(AsRef::as_ref).collect();
    out.finish(&series, tag_columns)
}

/// Combines partial rows of the same series and bucket in a batch sorted by the table's sort
/// order (`key_columns` then `time`), as compaction needs.
pub fn combine_sorted(
    batch: &RecordBatch,
    key_columns: &[String],
) -> Result<RecordBatch, ArrowError> {
    let n = batch.num_rows();
    if n == 0 {
        return Ok(batch.clone());
    }
    let mut group_columns: Vec<ArrayRef> = Vec::new();
    for name in key_columns.iter().map(String::as_str).chain(["time"]) {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("rollup batch without {name}")))?;
        group_columns.push(Arc::clone(column));
    }
    let converter = RowConverter::new(
        group_columns
            .iter()
            .map(|c| SortField::new_with_options(c.data_type().clone(), SortOptions::default()))
            .collect(),
    )?;
    let rows = converter.convert_columns(&group_columns)?;
    let f64s = |name: &str| {
        batch
            .column_by_name(name)
            .expect("aggregate column")
            .as_primitive::<Float64Type>()
            .clone()
    };
    let (min, max, sum, last) = (f64s("min"), f64s("max"), f64s("sum"), f64s("last"));
    let count = batch
        .column_by_name("count")
        .expect("count")
        .as_primitive::<Int64Type>()
        .clone();
    let last_time = batch
        .column_by_name("last_time")
        .expect("last_time")
        .as_primitive::<TimestampNanosecondType>()
        .clone();
    let bucket_at = |i: usize| Bucket {
        min: min.value(i),
        max: max.value(i),
        sum: sum.value(i),
        count: count.value(i),
        last: last.value(i),
        last_time: last_time.value(i),
    };
    let mut firsts: Vec<u32> = Vec::new();
    let mut combined: Vec<Bucket> = Vec::new();
    for i in 0..n {
        if i > 0 && rows.row(i) == rows.row(i - 1) {
            combined
                .last_mut()
                .expect("a group is open")
                .add(&bucket_at(i));
        } else {
            firsts.push(i as u32);
            combined.push(bucket_at(i));
        }
    }
    let take = arrow::array::UInt32Array::from(firsts);
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let values: ArrayRef = match field.name().as_str() {
            "min" => Arc::new(Float64Array::from_iter_values(
                combined.iter().map(|b| b.min),
            )),
            "max" => Arc::new(Float64Array::from_iter_values(
                combined.iter().map(|b| b.max),
            )),
            "sum" => Arc::new(Float64Array::from_iter_values(
                combined.iter().map(|b| b.sum),
            )),
            "count" => Arc::new(Int64Array::from_iter_values(
                combined.iter().map(|b| b.count),
            )),
            "last" => Arc::new(Float64Array::from_iter_values(
                combined.iter().map(|b| b.last),
            )),
            "last_time" => Arc::new(
                TimestampNanosecondArray::from_iter_values(combined.iter().map(|b| b.last_time))
                    .with_timezone("UTC"),
            ),
            _ => arrow::compute::take(column.as_ref(), &take, None)?,
        };
        columns.push(values);
    }
    RecordBatch::try_new(batch.schema(), columns)
}

/// The SQL view of a rollup: partial rows combined per series and bucket, with `avg`.
pub fn view(
    ctx: &datafusion::prelude::SessionContext,
    partial: Arc<dyn datafusion::datasource::TableProvider>,
) -> datafusion::error::Result<Arc<dyn datafusion::datasource::TableProvider>> {
    use datafusion::functions_aggregate::expr_fn::{last_value, max, min, sum};
    use datafusion::prelude::{Expr, col};

    let schema = partial.schema();
    let keys: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|name| !["min", "max", "sum", "count", "last", "last_time"].contains(name))
        .map(col)
        .collect();
    let aggregates = vec![
        min(col("min")).alias("min"),
        max(col("max")).alias("max"),
        sum(col("sum")).alias("sum"),
        sum(col("count")).alias("count"),
        last_value(col("last"), vec![col("last_time").sort(true, false)]).alias("last"),
    ];
    let frame = ctx
        .read_table(partial)?
        .aggregate(keys.clone(), aggregates)?;
    let mut projection = keys;
    projection.extend(["min", "max", "sum", "count", "last"].map(col));
    projection.push(
        (col("sum") / datafusion::logical_expr::cast(col("count"), DataType::Float64)).alias("avg"),
    );
    let plan = frame.select(projection)?.into_unoptimized_plan();
    Ok(Arc::new(datafusion::datasource::ViewTable::new(plan, None)))
}
