//! [`StoreSource`]: the [`SeriesSource`] over the exawatch store's `samples` table.
//!
//! Each selector becomes one DataFusion query on `samples` (through
//! [`Store::query_context`]): the metric name and every label matcher become SQL predicates
//! on the `metric` and tag columns, and the time range becomes predicates on `time`, which
//! the table uses to skip buffers and Parquet files outside it. A tag column's NULL is an
//! absent label, which Prometheus matches as the empty string.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, cast as cast_expr};
use datafusion::prelude::{DataFrame, ident, lit};
use exawatch_protocol::RESERVED_COLUMNS;
use exawatch_store::Store;
use promql_parser::label::{MatchOp, Matcher};

use crate::source::{SeriesSource, SourceError};
use crate::value::{Labels, METRIC_NAME, Point, Series};

/// Reads series from a [`Store`], one bounded DataFusion session per call.
#[derive(Debug, Clone)]
pub struct StoreSource {
    store: Store,
    memory_bytes: usize,
}

impl StoreSource {
    /// A source over `store` whose queries may use up to `memory_bytes` each.
    pub fn new(store: Store, memory_bytes: usize) -> Self {
        Self {
            store,
            memory_bytes,
        }
    }

    /// The `samples` table filtered by `matchers` and the time range, or `None` when a
    /// matcher can match nothing. Also returns the tag columns.
    async fn filtered(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Option<(DataFrame, Vec<String>)>, SourceError> {
        let ctx = self.store.query_context(self.memory_bytes)?;
        let frame = ctx.table("samples").await?;
        let tags: Vec<String> = frame
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| !RESERVED_COLUMNS.contains(&n.as_str()))
            .collect();
        let mut predicates = vec![
            ident("time").gt_eq(time_literal(start_ms.saturating_mul(1_000_000))),
            ident("time").lt_eq(time_literal(
                end_ms.saturating_mul(1_000_000).saturating_add(999_999),
            )),
            ident("value").is_not_null(),
        ];
        for matcher in matchers {
            let column = if matcher.name == METRIC_NAME {
                Some("metric")
            } else {
                tags.iter()
                    .find(|t| **t == matcher.name)
                    .map(String::as_str)
            };
            match column {
                Some(column) => predicates.push(predicate(column, matcher)),
                // No such column: the label is absent everywhere, i.e. empty.
                None if matcher.is_match("") => {}
                None => return Ok(None),
            }
        }
        let filter = predicates.into_iter().reduce(Expr::and).expect("not empty");
        Ok(Some((frame.filter(filter)?, tags)))
    }
}

fn time_literal(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

/// The SQL predicate of one matcher on `column`, with NULL as the empty string: when the
/// matcher accepts `""`, rows without the label (NULL) match too.
fn predicate(column: &str, matcher: &Matcher) -> Expr {
    let c = || ident(column);
    let regex = |re: &regex::Regex, op: Operator| {
        Expr::BinaryExpr(BinaryExpr::new(
            Box::new(cast_expr(c(), DataType::Utf8)),
            op,
            Box::new(lit(re.as_str().to_owned())),
        ))
    };
    let value = matcher.value.as_str();
    let compare = match &matcher.op {
        MatchOp::Equal => c().eq(lit(value)),
        MatchOp::NotEqual => c().not_eq(lit(value)),
        MatchOp::Re(re) => regex(re, Operator::RegexMatch),
        MatchOp::NotRe(re) => regex(re, Operator::RegexNotMatch),
    };
    if matcher.is_match("") {
        c().is_null().or(compare)
    } else {
        // NULL compares as NULL, which the filter drops.
        compare
    }
}

/// Metric and tag columns of a batch as strings.
fn label_columns(batch: &RecordBatch, tags: &[String]) -> Result<Vec<Arc<dyn Array>>, SourceError> {
    let mut columns = Vec::with_capacity(tags.len() + 1);
    for name in std::iter::once("metric").chain(tags.iter().map(String::as_str)) {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| format!("column {name} missing from the result"))?;
        columns.push(cast(column, &DataType::Utf8)?);
    }
    Ok(columns)
}

fn labels_of(columns: &[Arc<dyn Array>], tags: &[String], row: usize) -> Labels {
    let mut pairs = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let strings: &StringArray = column.as_string();
        if strings.is_null(row) {
            continue;
        }
        let name = if i == 0 { METRIC_NAME } else { &tags[i - 1] };
        pairs.push((name.to_owned(), strings.value(row).to_owned()));
    }
    Labels::new(pairs)
}

/// A key for the label values of a row (NULL and "" differ from any value).
fn row_key(columns: &[Arc<dyn Array>], row: usize, key: &mut String) {
    key.clear();
    for column in columns {
        let strings: &StringArray = column.as_string();
        if strings.is_valid(row) {
            key.push_str(strings.value(row));
        }
        key.push('\u{0}');
    }
}

#[async_trait]
impl SeriesSource for StoreSource {
    async fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, SourceError> {
        let Some((frame, tags)) = self.filtered(matchers, start_ms, end_ms).await? else {
            return Ok(Vec::new());
        };
        let columns: Vec<Expr> = ["time", "value", "metric"]
            .into_iter()
            .chain(tags.iter().map(String::as_str))
            .map(ident)
            .collect();
        let batches = frame.select(columns)?.collect().await?;
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut series: Vec<Series> = Vec::new();
        let mut key = String::new();
        for batch in &batches {
            let columns = label_columns(batch, &tags)?;
            let time = batch
                .column_by_name("time")
                .ok_or("no time column")?
                .as_primitive::<TimestampNanosecondType>();
            let value = batch
                .column_by_name("value")
                .ok_or("no value column")?
                .as_primitive::<Float64Type>();
            for row in 0..batch.num_rows() {
                if value.is_null(row) {
                    continue;
                }
                row_key(&columns, row, &mut key);
                let i = match index.get(&key) {
                    Some(&i) => i,
                    None => {
                        index.insert(key.clone(), series.len());
                        series.push(Series {
                            labels: labels_of(&columns, &tags, row),
                            points: Vec::new(),
                        });
                        series.len() - 1
                    }
                };
                series[i].points.push(Point {
                    t: time.value(row).div_euclid(1_000_000),
                    v: value.value(row),
                });
            }
        }
        for s in &mut series {
            s.points.sort_by_key(|p| p.t);
            // One sample per timestamp (times are truncated to milliseconds).
            let mut deduped: Vec<Point> = Vec::with_capacity(s.points.len());
            for p in s.points.drain(..) {
                match deduped.last_mut() {
                    Some(last) if last.t == p.t => *last = p,
                    _ => deduped.push(p),
                }
            }
            s.points = deduped;
        }
        Ok(series)
    }

    async fn series(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, SourceError> {
        let Some((frame, tags)) = self.filtered(matchers, start_ms, end_ms).await? else {
            return Ok(Vec::new());
        };
        let columns: Vec<Expr> = std::iter::once("metric")
            .chain(tags.iter().map(String::as_str))
            .map(ident)
            .collect();
        let batches = frame.select(columns)?.distinct()?.collect().await?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for batch in &batches {
            let columns = label_columns(batch, &tags)?;
            for row in 0..batch.num_rows() {
                let labels = labels_of(&columns, &tags, row);
                if seen.insert(labels.clone()) {
                    out.push(labels);
                }
            }
        }
        Ok(out)
    }

    async fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, SourceError> {
        let Some((frame, tags)) = self.filtered(matchers, start_ms, end_ms).await? else {
            return Ok(Vec::new());
        };
        let column = if name == METRIC_NAME {
            "metric"
        } else if let Some(tag) = tags.iter().find(|t| *t == name) {
            tag.as_str()
        } else {
            return Ok(Vec::new());
        };
        let batches = frame
            .filter(ident(column).is_not_null())?
            .select(vec![ident(column)])?
            .distinct()?
            .collect()
            .await?;
        let mut values = Vec::new();
        for batch in &batches {
            let strings = cast(batch.column(0), &DataType::Utf8)?;
            let strings: &StringArray = strings.as_string();
            values.extend(
                strings
                    .iter()
                    .flatten()
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
            );
        }
        values.sort();
        values.dedup();
        Ok(values)
    }
}

#[cfg(test)]
mod tests;
