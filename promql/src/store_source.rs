//! [`StoreSource`]: the [`SeriesSource`] over the exawatch store's `samples` table.
//!
//! A selector is one [`Store::select_series`]: the matchers pick series by their keys (from
//! each file's series index and the buffer's series table) and only those series' `time`
//! and `value` in the time range are read. Label queries (`series`, `label_values`) are
//! DataFusion queries on `samples` (through [`Store::query_context`]) with the matchers and
//! the time range as predicates. A missing tag (NULL) is an absent label, which Prometheus
//! matches as the empty string.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int32Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, cast as cast_expr};
use datafusion::prelude::{DataFrame, ident, lit};
use exawatch_protocol::RESERVED_COLUMNS;
use exawatch_store::buffer::SeriesKey;
use exawatch_store::{SampleSink, Store};
use promql_parser::label::{MatchOp, Matcher};

use crate::source::{SeriesSource, SourceError, SourceLimit, SourceUnavailable, Steps};
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

/// A selected series as PromQL sees it: times in milliseconds, one sample per millisecond
/// (the last written), built straight from the store's blocks.
struct PromSeries(Series);

impl SampleSink for PromSeries {
    fn with_capacity(key: Arc<SeriesKey>, samples: usize) -> Self {
        let labels = Labels::new(
            std::iter::once((METRIC_NAME.to_owned(), key.metric.clone()))
                .chain(key.tags.iter().cloned()),
        );
        Self(Series {
            labels,
            points: Vec::with_capacity(samples),
        })
    }

    fn extend(&mut self, times: &[i64], values: &[f64]) {
        let points = &mut self.0.points;
        let start = points.len().saturating_sub(1);
        points.extend(times.iter().zip(values).map(|(&t, &v)| Point {
            t: t.div_euclid(1_000_000),
            v,
        }));
        // Of samples in the same millisecond, the last written (last) is kept.
        if points[start..].windows(2).any(|w| w[0].t == w[1].t) {
            points.dedup_by(|later, earlier| {
                let same = later.t == earlier.t;
                if same {
                    earlier.v = later.v;
                }
                same
            });
        }
    }
}

/// One label column of a result batch: the store's dictionary-encoded columns are read
/// through their keys without casting the column to strings.
enum LabelColumn {
    /// Dictionary keys and their string values.
    Dictionary {
        keys: Int32Array,
        values: StringArray,
    },
    /// Any other string column, cast to `Utf8`.
    Plain(StringArray),
}

impl LabelColumn {
    fn new(column: &Arc<dyn Array>) -> Result<Self, SourceError> {
        if let Some(dictionary) = column.as_dictionary_opt::<Int32Type>()
            && let Some(values) = dictionary.values().as_string_opt::<i32>()
        {
            return Ok(Self::Dictionary {
                keys: dictionary.keys().clone(),
                values: values.clone(),
            });
        }
        Ok(Self::Plain(
            cast(column, &DataType::Utf8)?.as_string().clone(),
        ))
    }

    /// The value at `row`, `None` for NULL.
    fn value(&self, row: usize) -> Option<&str> {
        match self {
            Self::Dictionary { keys, values } => keys
                .is_valid(row)
                .then(|| values.value(keys.value(row) as usize)),
            Self::Plain(strings) => strings.is_valid(row).then(|| strings.value(row)),
        }
    }
}

/// The `metric` and tag columns of `batch`, in that order.
fn label_columns(batch: &RecordBatch, tags: &[String]) -> Result<Vec<LabelColumn>, SourceError> {
    std::iter::once("metric")
        .chain(tags.iter().map(String::as_str))
        .map(|name| {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| format!("column {name} missing from the result"))?;
            LabelColumn::new(column)
        })
        .collect()
}

fn labels_of(columns: &[LabelColumn], tags: &[String], row: usize) -> Labels {
    let mut pairs = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let Some(value) = column.value(row) else {
            continue;
        };
        let name = if i == 0 { METRIC_NAME } else { &tags[i - 1] };
        pairs.push((name.to_owned(), value.to_owned()));
    }
    Labels::new(pairs)
}

#[async_trait]
impl SeriesSource for StoreSource {
    async fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        steps: Option<Steps>,
    ) -> Result<Vec<Series>, SourceError> {
        // The metric name first: it is cheap to compare and rules out most series.
        let mut ordered: Vec<&Matcher> = matchers.iter().collect();
        ordered.sort_by_key(|m| m.name != METRIC_NAME);
        let wanted = |key: &SeriesKey| {
            ordered.iter().all(|m| {
                let value = if m.name == METRIC_NAME {
                    key.metric.as_str()
                } else {
                    key.tag(&m.name).unwrap_or("")
                };
                m.is_match(value)
            })
        };
        let min_ns = start_ms.saturating_mul(1_000_000);
        let max_ns = end_ms.saturating_mul(1_000_000).saturating_add(999_999);
        // Sample times are truncated to milliseconds: a sample is at or before step `t` if its
        // time is at most `t` ms + 999 999 ns, and newer than `t - lookback` if it is at least
        // `t - lookback + 1` ms.
        let steps = steps.map(|s| exawatch_store::Steps {
            first_ns: s.first_ms.saturating_mul(1_000_000).saturating_add(999_999),
            interval_ns: s.interval_ms.saturating_mul(1_000_000),
            lookback_ns: s.lookback_ms.saturating_mul(1_000_000).saturating_sub(1),
            whole_windows: s.whole_windows,
        });
        // A sample costs 16 bytes read and 16 bytes as a point.
        let max_samples = self.memory_bytes / 32;
        let metric = matchers
            .iter()
            .find(|m| m.name == METRIC_NAME && m.op == MatchOp::Equal)
            .map(|m| m.value.as_str());
        let selected: Vec<PromSeries> = self
            .store
            .select_series_into(metric, &wanted, min_ns, max_ns, steps, max_samples)
            .await
            .map_err(|e| -> SourceError {
                match e {
                    exawatch_store::Error::TooManySamples { .. } => Box::new(SourceLimit {
                        message: e.to_string(),
                    }),
                    exawatch_store::Error::HistoryUnavailable => Box::new(SourceUnavailable {
                        message: e.to_string(),
                    }),
                    e => e.into(),
                }
            })?;
        Ok(selected.into_iter().map(|s| s.0).collect())
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
