//! One metric query against the `samples` table, in DataFusion and then in Rust.
//!
//! 1. The metric name, the tag filters and the time range become one filter on `samples`
//!    (pruned by time in the table provider), built as expressions, never as SQL text.
//! 2. A series query (`GROUP BY` every tag column and number/text) gives `sample_size`, the
//!    result groups (type, then the `group_by` tags) and the tags seen in each group.
//! 3. The values: when the first aggregator is a range aggregator that DataFusion computes as
//!    KairosDB does (`avg`, `sum`, `min`, `max`, `count`, `first`, `last` over ranges of a fixed
//!    length, no `limit`), DataFusion aggregates the numbers per group and `date_bin` range
//!    ([`Pushdown`]); otherwise the points are read and every aggregator runs in Rust
//!    ([`super::aggregate`]). Both ways give the same answer (tested against each other).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, IntervalMonthDayNano};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions::expr_fn::date_bin;
use datafusion::functions_aggregate::expr_fn::{
    avg, count, first_value, last_value, max, min, sum,
};
use datafusion::logical_expr::{Expr, SortExpr, when};
use datafusion::prelude::{SessionContext, ident, lit};
use futures::StreamExt;

use super::aggregate::{AggregateError, Aggregator, Align, RangeKind, Values};
use super::query::{MetricQuery, Order, Query};
use super::time::Ranges;
use crate::ApiError;

/// Columns of `samples` that are not tags.
const BASE_COLUMNS: [&str; 4] = ["time", "metric", "value", "text"];

// Names of computed columns, apart from any tag name.
const IS_TEXT: &str = "__kairosdb_is_text";
const POINTS: &str = "__kairosdb_points";
const BUCKET: &str = "__kairosdb_bucket";
const T_FIRST: &str = "__kairosdb_t_first";
const T_LAST: &str = "__kairosdb_t_last";
const VALUE: &str = "__kairosdb_value";
const NAN_PROBE: &str = "__kairosdb_nan_probe";

/// Longest range DataFusion's `date_bin` is given (about 300 years, in ms).
const MAX_PUSHDOWN_RANGE_MS: i64 = 10_000_000_000_000;

/// How one result group is identified: number or text, then the values of the `group_by`
/// tags (absent when the series do not have the tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct GroupKey {
    pub(crate) text: bool,
    pub(crate) tags: Vec<Option<String>>,
}

/// One result of a metric query.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) key: GroupKey,
    /// Every tag of every series in the group, with the values seen.
    pub(crate) tags: BTreeMap<String, BTreeSet<String>>,
    pub(crate) values: Values,
}

/// What a metric query found.
#[derive(Debug)]
pub(crate) struct MetricResult {
    /// Points read from the store (before `limit` and aggregators), as KairosDB counts them.
    pub(crate) sample_size: u64,
    /// The groups in KairosDB's order: numbers before text, then by tag values; empty when
    /// nothing matched.
    pub(crate) groups: Vec<Group>,
}

/// Bounds on one query's work.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Rows one query may read into memory (`api.max_result_rows`).
    pub(crate) max_rows: usize,
    /// Let DataFusion compute the first aggregator when it can (off only to test both ways).
    pub(crate) pushdown: bool,
}

/// The tag columns of the `samples` table as of now.
pub(crate) async fn tag_columns(ctx: &SessionContext) -> Result<Vec<String>, ApiError> {
    let table = ctx.table("samples").await?;
    Ok(table
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|name| !BASE_COLUMNS.contains(&name.as_str()))
        .collect())
}

fn timestamp(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

/// `metric = name AND time in [start, end] AND tag IN (…) …`, or `None` when a filtered tag
/// does not exist at all (nothing can match).
fn filter(query: &Query, metric: &MetricQuery, tag_columns: &[String]) -> Option<Expr> {
    let start_ns = query.start_ms.saturating_mul(1_000_000);
    // KairosDB's end is inclusive to the millisecond.
    let end_ns = query.end_ms.saturating_add(1).saturating_mul(1_000_000);
    let mut expr = ident("metric")
        .eq(lit(metric.name.as_str()))
        .and(ident("time").gt_eq(timestamp(start_ns)))
        .and(ident("time").lt(timestamp(end_ns)));
    for (key, values) in &metric.tags {
        if !tag_columns.contains(key) {
            return None;
        }
        let list = values.iter().map(|v| lit(v.as_str())).collect();
        expr = expr.and(ident(key.as_str()).in_list(list, false));
    }
    Some(expr)
}

/// Runs `frame` and collects its batches, refusing more than `max_rows` rows.
async fn collect(frame: DataFrame, max_rows: usize) -> Result<Vec<RecordBatch>, ApiError> {
    let mut stream = frame.execute_stream().await?;
    let mut batches = Vec::new();
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        if rows > max_rows {
            return Err(ApiError::LimitExceeded(format!(
                "the query reads more than {max_rows} points (api.max_result_rows); narrow the \
                 time range or the tags, or sample with an aggregator"
            )));
        }
        batches.push(batch);
    }
    Ok(batches)
}

/// A string column of a result batch, as a dictionary (tag columns usually already are).
fn dictionary(array: &ArrayRef) -> Result<DictionaryArray<Int32Type>, ApiError> {
    let target = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let cast = arrow::compute::cast(array, &target)
        .map_err(|e| ApiError::Internal(format!("reading a tag column: {e}")))?;
    Ok(cast.as_dictionary::<Int32Type>().clone())
}

fn strings(dict: &DictionaryArray<Int32Type>) -> Result<StringArray, ApiError> {
    arrow::compute::cast(dict.values(), &DataType::Utf8)
        .map(|a| a.as_string::<i32>().clone())
        .map_err(|e| ApiError::Internal(format!("reading a tag column: {e}")))
}

/// The series matching a metric query: tag values, number or text, points.
#[derive(Debug)]
struct Series {
    tags: Vec<(String, String)>,
    text: bool,
    points: u64,
}

async fn series(
    ctx: &SessionContext,
    filter: Expr,
    tag_columns: &[String],
    max_rows: usize,
) -> Result<Vec<Series>, ApiError> {
    let mut keys: Vec<Expr> = tag_columns.iter().map(|c| ident(c.as_str())).collect();
    keys.push(ident("text").is_not_null().alias(IS_TEXT));
    let frame = ctx
        .table("samples")
        .await?
        .filter(filter)?
        .aggregate(keys, vec![count(lit(1)).alias(POINTS)])?;
    let mut out = Vec::new();
    for batch in collect(frame, max_rows).await? {
        let columns = tag_columns
            .iter()
            .map(|name| {
                let column = batch
                    .column_by_name(name)
                    .ok_or_else(|| ApiError::Internal(format!("series query: no column {name}")))?;
                let dict = dictionary(column)?;
                let values = strings(&dict)?;
                Ok((name, dict, values))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let is_text = batch
            .column_by_name(IS_TEXT)
            .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
            .ok_or_else(|| ApiError::Internal("series query: no is_text column".into()))?;
        let points = batch
            .column_by_name(POINTS)
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| ApiError::Internal("series query: no points column".into()))?;
        for row in 0..batch.num_rows() {
            let tags = columns
                .iter()
                .filter_map(|(name, dict, values)| {
                    dict.key(row)
                        .map(|k| ((*name).clone(), values.value(k).to_owned()))
                })
                .collect();
            out.push(Series {
                tags,
                text: is_text.value(row),
                points: u64::try_from(points.value(row)).unwrap_or(0),
            });
        }
    }
    Ok(out)
}

/// Every tag and its values over the series a metric query matches (`query/tags`).
pub(crate) async fn series_tags(
    ctx: &SessionContext,
    query: &Query,
    metric: &MetricQuery,
    max_rows: usize,
) -> Result<BTreeMap<String, BTreeSet<String>>, ApiError> {
    let tag_columns = tag_columns(ctx).await?;
    let mut tags: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let Some(filter) = filter(query, metric, &tag_columns) {
        for s in series(ctx, filter, &tag_columns, max_rows).await? {
            for (k, v) in s.tags {
                tags.entry(k).or_default().insert(v);
            }
        }
    }
    Ok(tags)
}

/// The distinct values of one string column (`metric` or a tag), sorted.
pub(crate) async fn distinct(
    ctx: &SessionContext,
    column: &str,
    max_rows: usize,
) -> Result<Vec<String>, ApiError> {
    let frame = ctx
        .table("samples")
        .await?
        .filter(ident(column).is_not_null())?
        .aggregate(vec![ident(column)], vec![])?;
    let mut out = Vec::new();
    for batch in collect(frame, max_rows).await? {
        let dict = dictionary(batch.column(0))?;
        let values = strings(&dict)?;
        out.extend(
            (0..batch.num_rows()).filter_map(|row| Some(values.value(dict.key(row)?).to_owned())),
        );
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Runs one metric query.
pub(crate) async fn run_metric(
    ctx: &SessionContext,
    query: &Query,
    metric: &MetricQuery,
    limits: Limits,
) -> Result<MetricResult, ApiError> {
    let tag_columns = tag_columns(ctx).await?;
    let empty = MetricResult {
        sample_size: 0,
        groups: Vec::new(),
    };
    let Some(filter) = filter(query, metric, &tag_columns) else {
        return Ok(empty);
    };
    let series = series(ctx, filter.clone(), &tag_columns, limits.max_rows).await?;
    if series.is_empty() {
        return Ok(empty);
    }
    let group_tags: Vec<String> = metric.group_by.clone().unwrap_or_default();
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    let mut sample_size = 0;
    for s in &series {
        sample_size += s.points;
        let key = GroupKey {
            text: s.text,
            tags: group_tags
                .iter()
                .map(|name| {
                    s.tags
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                })
                .collect(),
        };
        let i = *index.entry(key.clone()).or_insert_with(|| {
            groups.push(Group {
                values: if key.text {
                    Values::Texts(Vec::new())
                } else {
                    Values::Numbers(Vec::new())
                },
                key,
                tags: BTreeMap::new(),
            });
            groups.len() - 1
        });
        for (k, v) in &s.tags {
            groups[i]
                .tags
                .entry(k.clone())
                .or_default()
                .insert(v.clone());
        }
    }

    // Only the group_by tags that exist as columns can take values.
    let group_columns: Vec<(usize, String)> = group_tags
        .iter()
        .enumerate()
        .filter(|(_, name)| tag_columns.contains(name))
        .map(|(i, name)| (i, name.clone()))
        .collect();
    let mut grouping = Grouping {
        names: group_tags.clone(),
        columns: group_columns,
        index,
    };
    let has_text = series.iter().any(|s| s.text);
    let has_numbers = series.iter().any(|s| !s.text);
    let pushdown = Pushdown::plan(query, metric, limits);
    // With a pushdown, DataFusion aggregates the numbers and only text points are read.
    let pushed = pushdown.is_some() && has_numbers;
    if let (Some(pushdown), true) = (&pushdown, has_numbers) {
        pushdown
            .run(ctx, filter.clone(), &mut grouping, &mut groups, limits)
            .await?;
    }
    if pushdown.is_none() || has_text {
        let rows = if pushdown.is_some() {
            filter.and(ident("text").is_not_null())
        } else {
            filter
        };
        read_points(ctx, rows, &mut grouping, &mut groups, limits).await?;
    }

    for group in &mut groups {
        let mut values = std::mem::replace(&mut group.values, Values::Numbers(Vec::new()));
        let aggregated = pushed && !group.key.text;
        let skip = usize::from(aggregated);
        if !aggregated && let Some(limit) = metric.limit {
            values.limit(limit, metric.order == Order::Desc);
        }
        for aggregator in &metric.aggregators[skip.min(metric.aggregators.len())..] {
            values = aggregator
                .apply(values, query.start_ms)
                .map_err(|AggregateError(message)| ApiError::BadRequest(message))?;
        }
        if metric.order == Order::Desc {
            values.reverse();
        }
        group.values = values;
    }
    groups.sort_by_cached_key(|g| (g.key.text, sort_key(&group_tags, &g.key)));
    Ok(MetricResult {
        sample_size,
        groups,
    })
}

/// KairosDB sorts tag groups by the concatenation of tag name and value.
fn sort_key(names: &[String], key: &GroupKey) -> String {
    names
        .iter()
        .zip(&key.tags)
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}{v}")))
        .collect()
}

/// Finds the group of each result row from its type and `group_by` columns.
#[derive(Debug)]
struct Grouping {
    /// The `group_by` tags.
    names: Vec<String>,
    /// `group_by` tags that are columns, with their position among the `group_by` tags.
    columns: Vec<(usize, String)>,
    index: HashMap<GroupKey, usize>,
}

impl Grouping {
    fn projection(&self) -> Vec<Expr> {
        self.columns
            .iter()
            .map(|(_, name)| ident(name.as_str()))
            .collect()
    }

    /// The group of every row of `batch` (`text[row]` tells its type), adding groups that
    /// appeared since the series query (data written in between).
    fn rows(
        &mut self,
        batch: &RecordBatch,
        text: impl Fn(usize) -> bool,
        groups: &mut Vec<Group>,
    ) -> Result<Vec<usize>, ApiError> {
        let columns = self
            .columns
            .iter()
            .map(|(position, name)| {
                let column = batch
                    .column_by_name(name)
                    .ok_or_else(|| ApiError::Internal(format!("no column {name} in result")))?;
                let dict = dictionary(column)?;
                let values = strings(&dict)?;
                Ok((*position, dict, values))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        // Per batch, rows map to groups by their dictionary keys.
        let mut local: HashMap<Vec<i32>, usize> = HashMap::new();
        let mut key_buf: Vec<i32> = Vec::with_capacity(columns.len() + 1);
        let mut out = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            key_buf.clear();
            key_buf.push(i32::from(text(row)));
            for (_, dict, _) in &columns {
                key_buf.push(dict.key(row).map_or(-1, |k| k as i32));
            }
            if let Some(&g) = local.get(key_buf.as_slice()) {
                out.push(g);
                continue;
            }
            let mut tags = vec![None; self.names.len()];
            for (position, dict, values) in &columns {
                tags[*position] = dict.key(row).map(|k| values.value(k).to_owned());
            }
            let key = GroupKey {
                text: text(row),
                tags,
            };
            let g = *self.index.entry(key.clone()).or_insert_with(|| {
                groups.push(Group {
                    values: if key.text {
                        Values::Texts(Vec::new())
                    } else {
                        Values::Numbers(Vec::new())
                    },
                    // Only its group_by tags are known of a group first seen here.
                    tags: self
                        .names
                        .iter()
                        .zip(&key.tags)
                        .filter_map(|(name, value)| {
                            Some((name.clone(), BTreeSet::from([value.clone()?])))
                        })
                        .collect(),
                    key,
                });
                groups.len() - 1
            });
            local.insert(key_buf.clone(), g);
            out.push(g);
        }
        Ok(out)
    }
}

/// Reads the points of `filter` into their groups, time-ordered (ties by value), in
/// milliseconds.
async fn read_points(
    ctx: &SessionContext,
    filter: Expr,
    grouping: &mut Grouping,
    groups: &mut Vec<Group>,
    limits: Limits,
) -> Result<(), ApiError> {
    let mut columns = vec![ident("time"), ident("value"), ident("text")];
    columns.extend(grouping.projection());
    let frame = ctx
        .table("samples")
        .await?
        .filter(filter)?
        .select(columns)?;
    let mut numbers: HashMap<usize, Vec<(i64, f64)>> = HashMap::new();
    let mut texts: HashMap<usize, Vec<(i64, String)>> = HashMap::new();
    for batch in collect(frame, limits.max_rows).await? {
        let time = batch
            .column(0)
            .as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>()
            .ok_or_else(|| ApiError::Internal("time is not a nanosecond timestamp".into()))?
            .clone();
        let value = batch
            .column(1)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| ApiError::Internal("value is not Float64".into()))?
            .clone();
        let text = arrow::compute::cast(batch.column(2), &DataType::Utf8)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let text = text.as_string::<i32>();
        let rows = grouping.rows(&batch, |row| text.is_valid(row), groups)?;
        for (row, g) in rows.into_iter().enumerate() {
            let t = time.value(row);
            if text.is_valid(row) {
                texts
                    .entry(g)
                    .or_default()
                    .push((t, text.value(row).to_owned()));
            } else {
                numbers.entry(g).or_default().push((t, value.value(row)));
            }
        }
    }
    let to_ms = |ns: i64| ns.div_euclid(1_000_000);
    for (g, mut points) in numbers {
        points.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        if let Values::Numbers(values) = &mut groups[g].values {
            values.extend(points.into_iter().map(|(t, v)| (to_ms(t), v)));
        }
    }
    for (g, mut points) in texts {
        points.sort_unstable();
        if let Values::Texts(values) = &mut groups[g].values {
            values.extend(points.into_iter().map(|(t, v)| (to_ms(t), v)));
        }
    }
    Ok(())
}

/// The first aggregator, computed by DataFusion: one row per group and range.
#[derive(Debug)]
struct Pushdown {
    kind: RangeKind,
    align: Align,
    /// Start of the first range (ms), aligned if asked.
    origin_ms: i64,
    len_ms: i64,
}

impl Pushdown {
    fn plan(query: &Query, metric: &MetricQuery, limits: Limits) -> Option<Self> {
        if !limits.pushdown || metric.limit.is_some() {
            return None;
        }
        let Some(Aggregator::Range {
            kind,
            sampling,
            align_sampling,
            align,
            tz,
        }) = metric.aggregators.first()
        else {
            return None;
        };
        let pushable = matches!(
            kind,
            RangeKind::Avg
                | RangeKind::Sum
                | RangeKind::Min
                | RangeKind::Max
                | RangeKind::Count
                | RangeKind::First
                | RangeKind::Last
        );
        let ranges = Ranges::new(query.start_ms, *sampling, *tz, *align_sampling);
        let len_ms = ranges.fixed_ms()?;
        // Ranges longer than a few centuries are left to Rust, whose arithmetic saturates.
        (pushable && (1..=MAX_PUSHDOWN_RANGE_MS).contains(&len_ms)).then_some(Self {
            kind: *kind,
            align: *align,
            origin_ms: ranges.start(),
            len_ms,
        })
    }

    fn aggregates(&self) -> Vec<Expr> {
        let value = || ident("value");
        let by_time = || -> Vec<SortExpr> {
            vec![
                ident("time").sort(true, false),
                ident("value").sort(true, false),
            ]
        };
        let mut out = vec![
            min(ident("time")).alias(T_FIRST),
            max(ident("time")).alias(T_LAST),
        ];
        if matches!(self.kind, RangeKind::Min | RangeKind::Max) {
            // DataFusion's grouped min and max skip NaN; Java's Math.min and Math.max return
            // it. Count the NaNs: in Arrow's total order NaN is above +inf (and -NaN below
            // -inf), so these comparisons hold for NaN alone.
            let nan = value()
                .gt(lit(f64::INFINITY))
                .or(value().lt(lit(f64::NEG_INFINITY)));
            out.push(
                sum(when(nan, lit(1i64))
                    .otherwise(lit(0i64))
                    .expect("a CASE with an ELSE"))
                .alias(NAN_PROBE),
            );
        }
        match self.kind {
            RangeKind::Avg => out.push(avg(value()).alias(VALUE)),
            RangeKind::Sum => out.push(sum(value()).alias(VALUE)),
            RangeKind::Min => out.push(min(value()).alias(VALUE)),
            RangeKind::Max => out.push(max(value()).alias(VALUE)),
            RangeKind::Count => out.push(count(lit(1)).alias(VALUE)),
            RangeKind::First => out.push(first_value(value(), by_time()).alias(VALUE)),
            RangeKind::Last => out.push(last_value(value(), by_time()).alias(VALUE)),
            RangeKind::Dev | RangeKind::Percentile(_) => {}
        }
        out
    }

    async fn run(
        &self,
        ctx: &SessionContext,
        filter: Expr,
        grouping: &mut Grouping,
        groups: &mut Vec<Group>,
        limits: Limits,
    ) -> Result<(), ApiError> {
        let stride = lit(ScalarValue::IntervalMonthDayNano(Some(
            IntervalMonthDayNano::new(0, 0, self.len_ms.saturating_mul(1_000_000)),
        )));
        let origin = timestamp(self.origin_ms.saturating_mul(1_000_000));
        let mut keys = grouping.projection();
        keys.push(date_bin(stride, ident("time"), origin).alias(BUCKET));
        let frame = ctx
            .table("samples")
            .await?
            .filter(filter.and(ident("text").is_null()))?
            .aggregate(keys, self.aggregates())?;
        let mut points: HashMap<usize, Vec<(i64, f64)>> = HashMap::new();
        for batch in collect(frame, limits.max_rows).await? {
            let ns = |name: &str| -> Result<Vec<i64>, ApiError> {
                let column = batch
                    .column_by_name(name)
                    .ok_or_else(|| ApiError::Internal(format!("no {name} column")))?;
                let cast = arrow::compute::cast(column, &DataType::Int64)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                Ok(cast.as_primitive::<Int64Type>().values().to_vec())
            };
            let float = |name: &str| -> Result<Option<Vec<f64>>, ApiError> {
                let Some(column) = batch.column_by_name(name) else {
                    return Ok(None);
                };
                let cast = arrow::compute::cast(column, &DataType::Float64)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                let array = cast.as_primitive::<Float64Type>();
                Ok(Some(
                    (0..array.len())
                        .map(|i| {
                            if array.is_valid(i) {
                                array.value(i)
                            } else {
                                f64::NAN
                            }
                        })
                        .collect(),
                ))
            };
            let (bucket, first, last) = (ns(BUCKET)?, ns(T_FIRST)?, ns(T_LAST)?);
            let value = float(VALUE)?.unwrap_or_default();
            let nan_probe = float(NAN_PROBE)?;
            let rows = grouping.rows(&batch, |_| false, groups)?;
            for (row, g) in rows.into_iter().enumerate() {
                let range_start = bucket[row].div_euclid(1_000_000);
                let time = match (self.align, self.kind) {
                    (Align::Start, _) => range_start,
                    (Align::End, _) => range_start.saturating_add(self.len_ms),
                    (Align::Point, RangeKind::Last) => last[row].div_euclid(1_000_000),
                    (Align::Point, _) => first[row].div_euclid(1_000_000),
                };
                let mut v = value[row];
                if nan_probe.as_ref().is_some_and(|p| p[row] > 0.0) {
                    v = f64::NAN;
                }
                points.entry(g).or_default().push((time, v));
            }
        }
        for (g, mut series) in points {
            series.sort_unstable_by_key(|(t, _)| *t);
            groups[g].values = Values::Numbers(series);
        }
        Ok(())
    }
}
