//! Rollups: per series, per minute and per hour, the min, max, sum, count and last value,
//! written at each flush next to the raw file and merged by compaction. Queries over long
//! ranges at coarse resolution read them: SQL as the tables `samples_1m` and `samples_1h`.
//!
//! A flush sees only part of a bucket at its edges, so a rollup file may hold partial rows of
//! a bucket that another file completes; the query view (and compaction) combine them:
//! min of mins, max of maxes, sums of sums and counts, the last by `last_time`.
//!
//! In files a row's aggregates are decimals where they can be ([`decimal`]): a scale, the
//! mantissa of `min`, and the others as offsets from it (`max - min`, `last - min`,
//! `sum - count × min`), small non-negative integers that delta-pack into a few bits (11 bytes
//! a row on the benchmark workload against 15 for ZSTD'd doubles). Rows that have no such form
//! keep their aggregates in the float columns, which are null where the decimals hold them.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int8Array, Int8Builder, Int32Array,
    Int64Array, Int64Builder, TimestampNanosecondArray,
};
use arrow::compute::SortOptions;
use arrow::datatypes::{
    DataType, Field, Float64Type, Int8Type, Int64Type, Schema, SchemaRef, TimestampNanosecondType,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};

use datafusion::common::{Column, Result as DfResult, exec_err};
use datafusion::logical_expr::{Expr, ScalarUDF, lit};

use crate::buffer::{SeriesLabels, SortedRows, dictionary_type, time_type};
use crate::decimal;

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
        Field::new("min", DataType::Float64, true),
        Field::new("max", DataType::Float64, true),
        Field::new("sum", DataType::Float64, true),
        Field::new("count", DataType::Int64, false),
        Field::new("last", DataType::Float64, true),
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

/// The scale of a file row's decimals.
const SCALE: &str = "scale";
/// The mantissa of a file row's `min`.
const MIN_MANTISSA: &str = "min_mantissa";
/// `max - min` in mantissa units.
const MAX_OFFSET: &str = "max_offset";
/// `last - min` in mantissa units.
const LAST_OFFSET: &str = "last_offset";
/// `sum - count × min` in mantissa units.
const SUM_OFFSET: &str = "sum_offset";

/// The integer columns of a file row's decimals (delta-packed in files).
pub(crate) const MANTISSA_COLUMNS: [&str; 4] = [MIN_MANTISSA, MAX_OFFSET, LAST_OFFSET, SUM_OFFSET];

/// The float aggregates, which files may hold as decimals.
pub(crate) const DECIMAL_AGGREGATES: [&str; 4] = ["min", "max", "sum", "last"];

/// How the file gives an aggregate back: `(offset + multiplier × min_mantissa) / 10^scale`,
/// with the file columns of the offset (none: 0) and the multiplier (none: 1).
fn decoding(aggregate: &str) -> Option<(Option<&'static str>, Option<&'static str>)> {
    match aggregate {
        "min" => Some((None, None)),
        "max" => Some((Some(MAX_OFFSET), None)),
        "last" => Some((Some(LAST_OFFSET), None)),
        "sum" => Some((Some(SUM_OFFSET), Some("count"))),
        _ => None,
    }
}

/// The schema of rollup files for a table schema: the decimal columns follow `last_time`.
pub(crate) fn file_schema(table: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::with_capacity(table.fields().len() + 5);
    for field in table.fields() {
        fields.push(field.as_ref().clone());
        if field.name() == "last_time" {
            fields.push(Field::new(SCALE, DataType::Int8, true));
            for name in MANTISSA_COLUMNS {
                fields.push(Field::new(name, DataType::Int64, true));
            }
        }
    }
    Arc::new(Schema::new(fields))
}

/// True for the file columns that hold the decimals of a row.
pub(crate) fn is_decimal_column(name: &str) -> bool {
    matches!(
        name,
        SCALE | MIN_MANTISSA | MAX_OFFSET | LAST_OFFSET | SUM_OFFSET
    )
}

/// A row's aggregates as decimals: scale, min mantissa, max, last and sum offsets.
fn encode_bucket(b: &Bucket) -> Option<(i8, [i64; 4])> {
    let mut scale = 0;
    for value in [b.min, b.max, b.last] {
        scale = scale.max(decimal::min_scale(value)?);
    }
    (scale..=decimal::MAX_SCALE).find_map(|scale| {
        let min = decimal::mantissa(b.min, scale)?;
        let max = decimal::mantissa(b.max, scale)?;
        let last = decimal::mantissa(b.last, scale)?;
        let sum = decimal::sum_mantissa(b.sum, scale)?;
        let sum_offset = sum.checked_sub(b.count.checked_mul(min)?)?;
        Some((scale as i8, [min, max - min, last - min, sum_offset]))
    })
}

/// Rewrites rollup rows of the table schema into the file schema.
pub(crate) fn encode(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let rows = batch.num_rows();
    let table = batch.schema();
    let column = |name: &str| -> Result<&ArrayRef, ArrowError> {
        batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("rollup batch without {name}")))
    };
    let [min, max, sum, last] = DECIMAL_AGGREGATES
        .map(|name| column(name).map(|c| c.as_primitive::<Float64Type>().clone()));
    let (min, max, sum, last) = (min?, max?, sum?, last?);
    let count = column("count")?.as_primitive::<Int64Type>().clone();
    let mut raw: [Float64Builder; 4] = Default::default();
    let mut scales = Int8Builder::with_capacity(rows);
    let mut decimals: [Int64Builder; 4] = Default::default();
    for i in 0..rows {
        let bucket = Bucket {
            min: min.value(i),
            max: max.value(i),
            sum: sum.value(i),
            count: count.value(i),
            last: last.value(i),
            last_time: 0,
        };
        let valid = [&min, &max, &sum, &last].iter().all(|a| a.is_valid(i));
        match encode_bucket(&bucket).filter(|_| valid) {
            Some((scale, values)) => {
                raw.iter_mut().for_each(Float64Builder::append_null);
                scales.append_value(scale);
                for (builder, value) in decimals.iter_mut().zip(values) {
                    builder.append_value(value);
                }
            }
            None => {
                for (builder, array) in raw.iter_mut().zip([&min, &max, &sum, &last]) {
                    builder.append_option(array.is_valid(i).then(|| array.value(i)));
                }
                scales.append_null();
                decimals.iter_mut().for_each(Int64Builder::append_null);
            }
        }
    }
    let [raw_min, raw_max, raw_sum, raw_last] = raw.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [min_m, max_off, last_off, sum_off] =
        decimals.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let scales: ArrayRef = Arc::new(scales.finish());
    let schema = file_schema(&table);
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            Ok(match field.name().as_str() {
                "min" => Arc::clone(&raw_min),
                "max" => Arc::clone(&raw_max),
                "sum" => Arc::clone(&raw_sum),
                "last" => Arc::clone(&raw_last),
                SCALE => Arc::clone(&scales),
                MIN_MANTISSA => Arc::clone(&min_m),
                MAX_OFFSET => Arc::clone(&max_off),
                LAST_OFFSET => Arc::clone(&last_off),
                SUM_OFFSET => Arc::clone(&sum_off),
                name => Arc::clone(column(name)?),
            })
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new(schema, columns)
}

/// An aggregate's values from the file columns that hold it (see [`decoding`]).
fn decode_aggregate(
    raw: &Float64Array,
    scale: &Int8Array,
    min: &Int64Array,
    offset: Option<&Int64Array>,
    multiplier: Option<&Int64Array>,
) -> Float64Array {
    (0..raw.len())
        .map(|i| {
            if min.is_valid(i) && scale.is_valid(i) {
                let offset = offset.map_or(0, |o| o.value(i));
                let multiplier = multiplier.map_or(1, |m| m.value(i));
                let mantissa = offset.wrapping_add(multiplier.wrapping_mul(min.value(i)));
                Some(decimal::decode(mantissa, scale.value(i)))
            } else {
                raw.is_valid(i).then(|| raw.value(i))
            }
        })
        .collect()
}

/// Rollup rows of the file schema back in the table schema. Files written before rollups
/// had decimals read with null decimal columns, so their float columns are used.
pub(crate) fn decode(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let column = |name: &str| -> Result<&ArrayRef, ArrowError> {
        batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("rollup file batch without {name}")))
    };
    let int64 = |name: &str| column(name).map(|c| c.as_primitive::<Int64Type>());
    let (scale, min) = (
        column(SCALE)?.as_primitive::<Int8Type>(),
        int64(MIN_MANTISSA)?,
    );
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
        if is_decimal_column(field.name()) {
            continue;
        }
        let array = match decoding(field.name()) {
            Some((offset, multiplier)) => Arc::new(decode_aggregate(
                array.as_primitive::<Float64Type>(),
                scale,
                min,
                offset.map(int64).transpose()?,
                multiplier.map(int64).transpose()?,
            )) as ArrayRef,
            None => Arc::clone(array),
        };
        fields.push(Arc::clone(field));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// The SQL expression over file columns that gives a table column back, for the aggregates
/// files may hold as decimals.
pub(crate) fn decoded_column(name: &str) -> Option<Expr> {
    let (offset, multiplier) = decoding(name)?;
    let column = |name: &str| Expr::Column(Column::new_unqualified(name));
    Some(decode_udf().call(vec![
        column(name),
        column(SCALE),
        column(MIN_MANTISSA),
        offset.map_or_else(|| lit(0i64), column),
        multiplier.map_or_else(|| lit(1i64), column),
    ]))
}

/// `exawatch_rollup_value(raw, scale, min_mantissa, offset, multiplier)`.
fn decode_udf() -> Arc<ScalarUDF> {
    decimal::decoding_udf(
        "exawatch_rollup_value",
        vec![
            DataType::Float64,
            DataType::Int8,
            DataType::Int64,
            DataType::Int64,
            DataType::Int64,
        ],
        |arrays| {
            let [raw, scale, min, offset, multiplier] = arrays else {
                return exec_err!("exawatch_rollup_value takes 5 arguments");
            };
            let result: DfResult<Float64Array> = Ok(decode_aggregate(
                raw.as_primitive::<Float64Type>(),
                scale.as_primitive::<Int8Type>(),
                min.as_primitive::<Int64Type>(),
                Some(offset.as_primitive::<Int64Type>()),
                Some(multiplier.as_primitive::<Int64Type>()),
            ));
            result
        },
    )
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

    fn finish(mut self, labels: &SeriesLabels) -> Result<RecordBatch, ArrowError> {
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
        labels.batch(
            &Int32Array::from(self.keys),
            timestamps(self.time),
            fields.into_iter().zip(values).collect(),
        )
    }
}

/// Rolls sorted raw rows up into buckets of `resolution` (text samples are skipped).
pub fn from_sorted(rows: &SortedRows, resolution: Resolution) -> Result<RecordBatch, ArrowError> {
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
    out.finish(rows.labels())
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
        // As named: `col` would read `modelName` as SQL and look for `modelname`.
        .map(|name| Expr::Column(datafusion::common::Column::new_unqualified(name)))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rollup rows of the table schema with one tag column, from `(min, max, sum, count, last)`.
    fn rows(aggregates: &[(f64, f64, f64, i64, f64)]) -> RecordBatch {
        let n = aggregates.len();
        let schema = schema(&["node".to_owned()]);
        let floats = |f: fn(&(f64, f64, f64, i64, f64)) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(aggregates.iter().map(f)))
        };
        let times = || -> ArrayRef {
            Arc::new(TimestampNanosecondArray::from_iter_values(0..n as i64).with_timezone("UTC"))
        };
        let dictionary = |value: &str| -> ArrayRef {
            Arc::new(
                std::iter::repeat_n(Some(value), n)
                    .collect::<arrow::array::DictionaryArray<arrow::datatypes::Int32Type>>(),
            )
        };
        RecordBatch::try_new(
            schema,
            vec![
                times(),
                dictionary("m"),
                floats(|a| a.0),
                floats(|a| a.1),
                floats(|a| a.2),
                Arc::new(Int64Array::from_iter_values(aggregates.iter().map(|a| a.3))),
                floats(|a| a.4),
                times(),
                dictionary("n1"),
            ],
        )
        .unwrap()
    }

    /// A tag named in capitals (DCGM exporter's `modelName`) is a key of the view as named:
    /// the view failed to build, and with it every SQL query (issue 26).
    #[test]
    fn tags_keep_their_capitals_in_the_view() {
        let ctx = datafusion::prelude::SessionContext::new();
        let schema = schema(&["modelName".to_owned()]);
        let partial =
            Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![vec![]]).unwrap());
        let view = view(&ctx, partial).unwrap();
        assert!(view.schema().field_with_name("modelName").is_ok());
    }

    #[test]
    fn aggregates_round_trip_through_the_file_columns() {
        let third = 1.0 / 3.0;
        let aggregates = [
            // Short decimals; a float sum a few ulps off its decimal value.
            (0.1, 0.2, 0.1 + 0.2, 2, 0.2),
            (0.0, 100.0, 5050.0, 101, 100.0),
            // A byte counter: large mantissas, a sum past 2^53 in mantissa units is not encoded.
            (2.2e15, 2.3e15, 2.25e15 * 60.0, 60, 2.3e15),
            (-7.5, -0.5, -12.0, 3, -4.0),
            // No decimal form: kept as floats, bit for bit.
            (third, 1.0, 2.0 + third, 3, 1.0),
            (f64::NAN, f64::NAN, f64::NAN, 2, f64::NAN),
            (-0.0, 0.0, 0.0, 2, -0.0),
            (f64::NEG_INFINITY, 1.0, f64::NEG_INFINITY, 2, 1.0),
        ];
        let batch = rows(&aggregates);
        let file = encode(&batch).unwrap();
        let scales = file.column_by_name(SCALE).unwrap();
        let encoded: Vec<bool> = (0..file.num_rows()).map(|i| scales.is_valid(i)).collect();
        assert_eq!(
            encoded,
            [true, true, false, true, false, false, false, false]
        );
        let raw_min = file.column_by_name("min").unwrap();
        assert!(raw_min.is_null(0), "decimal rows leave the floats null");
        let decoded = decode(&file).unwrap();
        assert_eq!(decoded.schema(), batch.schema());
        for name in ["min", "max", "last"] {
            let (got, want) = (
                decoded
                    .column_by_name(name)
                    .unwrap()
                    .as_primitive::<Float64Type>(),
                batch
                    .column_by_name(name)
                    .unwrap()
                    .as_primitive::<Float64Type>(),
            );
            for i in 0..batch.num_rows() {
                assert_eq!(
                    got.value(i).to_bits(),
                    want.value(i).to_bits(),
                    "{name} {i}"
                );
            }
        }
        let (got, want) = (
            decoded
                .column_by_name("sum")
                .unwrap()
                .as_primitive::<Float64Type>(),
            batch
                .column_by_name("sum")
                .unwrap()
                .as_primitive::<Float64Type>(),
        );
        // A decimal sum is the exact decimal sum; the float sum was within rounding of it.
        assert_eq!(got.value(0), 0.3);
        assert_ne!(want.value(0), 0.3);
        for i in 1..batch.num_rows() {
            assert_eq!(got.value(i).to_bits(), want.value(i).to_bits(), "sum {i}");
        }
    }
}
