//! Features: the `samples` table turned into one row per (window, entity) and one column per
//! feature, by DataFusion SQL (filter, window with `date_bin`, aggregate per series, then per
//! entity) and a pivot here.
//!
//! A feature is a metric, split by the values of `split_by` tags (default: `plugin`, so
//! `procfs/util` and `nvml/util` differ), averaged over the entity's series in the window;
//! a counter (a metric whose values never fall in training) becomes its rate per second,
//! summed over the entity's series (`procfs/rx_bytes:rate`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use exawatch_store::Store;
use serde::{Deserialize, Serialize};
use snafu::{ResultExt, ensure};

use crate::anomalies::{ANOMALY_METRIC, SCORE_METRIC};
use crate::matrix::Matrix;
use crate::{QuerySnafu, Result, SelectorSnafu, SpecSnafu, StoreSnafu};

/// Which series feed a model, and how they become rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureSpec {
    /// Series selectors: `metric`, `metric{tag="v", tag=~"regex", tag!="v"}` or
    /// `{plugin="ipmi"}`; a series is used if any selector matches. Empty: every metric.
    pub select: Vec<String>,
    /// The tag whose values are the entities scored (one row per value and window).
    pub group_by: String,
    /// Tags whose values split a metric into several features.
    pub split_by: Vec<String>,
    /// Window length in seconds.
    pub window_secs: f64,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        Self {
            select: Vec::new(),
            group_by: "node".to_owned(),
            split_by: vec!["plugin".to_owned()],
            window_secs: 10.0,
        }
    }
}

/// One column of the feature matrix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Column {
    /// Metric name.
    pub metric: String,
    /// Values of the `split_by` tags (empty string: tag absent).
    pub split: Vec<String>,
    /// True for a counter: the column is its rate per second.
    pub rate: bool,
}

impl Column {
    /// Display name: `plugin/metric`, with `:rate` for counters.
    pub fn name(&self) -> String {
        let mut name = String::new();
        for s in self.split.iter().filter(|s| !s.is_empty()) {
            name.push_str(s);
            name.push('/');
        }
        name.push_str(&self.metric);
        if self.rate {
            name.push_str(":rate");
        }
        name
    }
}

/// One aggregate row from the store: a metric (split) of an entity in a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Window start, ns since the epoch.
    pub window_ns: i64,
    /// Entity (value of `group_by`).
    pub entity: String,
    /// Metric name.
    pub metric: String,
    /// Values of the `split_by` tags.
    pub split: Vec<String>,
    /// Mean of the entity's series means.
    pub mean: f64,
    /// Sum over the entity's series of their rate per second in the window (NaN if no
    /// series had two samples).
    pub rate: f64,
}

/// Rows of features: `keys[i]` = (window start ns, entity) of row `i` of `matrix`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The columns.
    pub columns: Vec<Column>,
    /// Window start and entity of each row; sorted by entity, then window.
    pub keys: Vec<(i64, String)>,
    /// The values; NaN where an entity had no data for a feature.
    pub matrix: Matrix,
}

impl Frame {
    /// The step of each row: its window's index in time (window start ÷ `window_ns`).
    pub fn steps(&self, window_ns: i64) -> Vec<i64> {
        self.keys
            .iter()
            .map(|(w, _)| w.div_euclid(window_ns.max(1)))
            .collect()
    }

    /// Row ranges of each entity (rows are sorted by entity, then window).
    pub fn sequences(&self) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        for i in 1..=self.keys.len() {
            if i == self.keys.len() || self.keys[i].1 != self.keys[start].1 {
                out.push(start..i);
                start = i;
            }
        }
        out
    }
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq)]
struct Selector {
    metric: Option<String>,
    matchers: Vec<(String, Op, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Re,
    NotRe,
}

fn parse_selector(text: &str) -> Result<Selector> {
    let bad = |why: &str| {
        SelectorSnafu {
            selector: text,
            message: why.to_owned(),
        }
        .fail()
    };
    let text_trim = text.trim();
    let (metric, rest) = match text_trim.find('{') {
        Some(i) => (text_trim[..i].trim(), Some(&text_trim[i..])),
        None => (text_trim, None),
    };
    if !metric.is_empty()
        && !metric
            .chars()
            .all(|c| c.is_alphanumeric() || "_:.-".contains(c))
    {
        return bad("a metric name has letters, digits and _ : . - only");
    }
    let mut matchers = Vec::new();
    if let Some(rest) = rest {
        let Some(inner) = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else {
            return bad("expected `{tag=\"value\", ...}` after the metric");
        };
        let mut chars = inner.trim();
        while !chars.is_empty() {
            let name_end = chars
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(chars.len());
            let name = &chars[..name_end];
            if name.is_empty() {
                return bad("expected a tag name");
            }
            let after = chars[name_end..].trim_start();
            let (op, after) = if let Some(a) = after.strip_prefix("=~") {
                (Op::Re, a)
            } else if let Some(a) = after.strip_prefix("!~") {
                (Op::NotRe, a)
            } else if let Some(a) = after.strip_prefix("!=") {
                (Op::Ne, a)
            } else if let Some(a) = after.strip_prefix('=') {
                (Op::Eq, a)
            } else {
                return bad("expected =, !=, =~ or !~ after a tag name");
            };
            let after = after.trim_start();
            let Some(quoted) = after.strip_prefix('"') else {
                return bad("tag values are in double quotes");
            };
            let Some(end) = quoted.find('"') else {
                return bad("unterminated tag value");
            };
            matchers.push((name.to_owned(), op, quoted[..end].to_owned()));
            chars = quoted[end + 1..].trim_start();
            chars = chars.strip_prefix(',').unwrap_or(chars).trim_start();
        }
    }
    if metric.is_empty() && matchers.is_empty() {
        return bad("empty selector");
    }
    Ok(Selector {
        metric: (!metric.is_empty()).then(|| metric.to_owned()),
        matchers,
    })
}

/// `'text'` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"name"` as an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The SQL predicate of the selectors; tags that are no column of the table match only as
/// absent (NULL).
fn predicate(selectors: &[Selector], columns: &BTreeSet<String>) -> String {
    if selectors.is_empty() {
        return "TRUE".to_owned();
    }
    let parts: Vec<String> = selectors
        .iter()
        .map(|s| {
            let mut terms = Vec::new();
            if let Some(metric) = &s.metric {
                terms.push(format!("metric = {}", literal(metric)));
            }
            for (tag, op, value) in &s.matchers {
                let column = if tag == "__name__" {
                    "metric".to_owned()
                } else if columns.contains(tag) {
                    ident(tag)
                } else {
                    "CAST(NULL AS VARCHAR)".to_owned()
                };
                let coalesced = format!("coalesce({column}, '')");
                terms.push(match op {
                    Op::Eq => format!("{coalesced} = {}", literal(value)),
                    Op::Ne => format!("{coalesced} <> {}", literal(value)),
                    Op::Re => format!(
                        "regexp_like({coalesced}, {})",
                        literal(&format!("^(?:{value})$"))
                    ),
                    Op::NotRe => format!(
                        "NOT regexp_like({coalesced}, {})",
                        literal(&format!("^(?:{value})$"))
                    ),
                });
            }
            format!("({})", terms.join(" AND "))
        })
        .collect();
    format!("({})", parts.join(" OR "))
}

/// RFC 3339 text of `ns`, for SQL time bounds the store can prune on.
pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl FeatureSpec {
    /// Checks the spec: a group tag, a positive window, selectors that parse.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            !self.group_by.trim().is_empty(),
            SpecSnafu {
                message: "group_by is empty"
            }
        );
        ensure!(
            self.window_secs.is_finite() && self.window_secs >= 0.001,
            SpecSnafu {
                message: format!(
                    "window_secs {} is not a positive number of seconds",
                    self.window_secs
                )
            }
        );
        for s in &self.select {
            parse_selector(s)?;
        }
        Ok(())
    }

    /// Window length in ns.
    pub fn window_ns(&self) -> i64 {
        (self.window_secs * 1e9).round() as i64
    }

    /// The aggregate query over `[from_ns, to_ns)`, given the table's columns.
    fn sql(&self, from_ns: i64, to_ns: i64, columns: &BTreeSet<String>) -> Result<String> {
        let selectors = self
            .select
            .iter()
            .map(|s| parse_selector(s))
            .collect::<Result<Vec<_>>>()?;
        let tag_columns: Vec<&String> = columns
            .iter()
            .filter(|c| !["time", "metric", "value", "text"].contains(&c.as_str()))
            .collect();
        ensure!(
            columns.contains(&self.group_by),
            SpecSnafu {
                message: format!("no series has the tag {:?} (group_by)", self.group_by)
            }
        );
        let group = ident(&self.group_by);
        let split_exprs: Vec<String> = self
            .split_by
            .iter()
            .map(|t| {
                if columns.contains(t) {
                    format!("coalesce({}, '')", ident(t))
                } else {
                    "''".to_owned()
                }
            })
            .collect();
        let mut inner_select = String::new();
        let mut outer_split = String::new();
        for (i, e) in split_exprs.iter().enumerate() {
            let _ = write!(inner_select, ", {e} AS s{i}");
            let _ = write!(outer_split, ", s{i}");
        }
        let series_keys: String = tag_columns
            .iter()
            .map(|c| format!(", {}", ident(c)))
            .collect();
        Ok(format!(
            "WITH series AS (\
               SELECT date_bin(INTERVAL '{window} nanoseconds', time, TIMESTAMP '1970-01-01T00:00:00Z') AS w, \
                      {group} AS entity, metric{inner_select}, avg(value) AS mean, \
                      (max(value) - min(value)) * 1e9 / CAST(NULLIF(max(CAST(time AS BIGINT)) - min(CAST(time AS BIGINT)), 0) AS DOUBLE) AS rate \
               FROM samples \
               WHERE time >= {from} AND time < {to} AND value IS NOT NULL AND {group} IS NOT NULL \
                 AND metric NOT IN ({score}, {anomaly}) AND {predicate} \
               GROUP BY w, metric{series_keys}) \
             SELECT CAST(w AS BIGINT) AS w, entity, metric{outer_split}, avg(mean) AS mean, sum(rate) AS rate \
             FROM series GROUP BY w, entity, metric{outer_split}",
            window = self.window_ns(),
            from = literal(&rfc3339(from_ns)),
            to = literal(&rfc3339(to_ns)),
            score = literal(SCORE_METRIC),
            anomaly = literal(ANOMALY_METRIC),
            predicate = predicate(&selectors, columns),
        ))
    }
}

/// The per-window aggregates of `spec` over `[from_ns, to_ns)`, read from `store` with a
/// query bounded to `memory_bytes`.
pub async fn aggregate(
    store: &Store,
    spec: &FeatureSpec,
    from_ns: i64,
    to_ns: i64,
    memory_bytes: usize,
) -> Result<Vec<Aggregate>> {
    spec.validate()?;
    let ctx = store.query_context(memory_bytes).context(StoreSnafu)?;
    let schema = ctx
        .table_provider("samples")
        .await
        .context(QuerySnafu)?
        .schema();
    let columns: BTreeSet<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    if !columns.contains(&spec.group_by) {
        // No series carries the group tag yet: nothing to aggregate.
        return Ok(Vec::new());
    }
    let sql = spec.sql(from_ns, to_ns, &columns)?;
    let batches = ctx
        .sql(&sql)
        .await
        .context(QuerySnafu)?
        .collect()
        .await
        .context(QuerySnafu)?;
    let mut out = Vec::new();
    let splits = spec.split_by.len();
    for batch in batches {
        let w = batch.column(0).as_primitive::<Int64Type>();
        let entity = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Utf8)
            .context(crate::ArrowSnafu)?;
        let entity = entity.as_string::<i32>();
        let metric = arrow::compute::cast(batch.column(2), &arrow::datatypes::DataType::Utf8)
            .context(crate::ArrowSnafu)?;
        let metric = metric.as_string::<i32>();
        let split_columns: Vec<_> = (0..splits)
            .map(|i| arrow::compute::cast(batch.column(3 + i), &arrow::datatypes::DataType::Utf8))
            .collect::<std::result::Result<_, _>>()
            .context(crate::ArrowSnafu)?;
        let mean = batch.column(3 + splits).as_primitive::<Float64Type>();
        let rate = batch.column(4 + splits).as_primitive::<Float64Type>();
        for i in 0..batch.num_rows() {
            out.push(Aggregate {
                window_ns: w.value(i),
                entity: entity.value(i).to_owned(),
                metric: metric.value(i).to_owned(),
                split: split_columns
                    .iter()
                    .map(|c| c.as_string::<i32>().value(i).to_owned())
                    .collect(),
                mean: if mean.is_null(i) {
                    f64::NAN
                } else {
                    mean.value(i)
                },
                rate: if rate.is_null(i) {
                    f64::NAN
                } else {
                    rate.value(i)
                },
            });
        }
    }
    Ok(out)
}

/// The columns for training data: every (metric, split) seen, as a rate if it is a
/// counter (its mean never falls from one window to the next for any entity, and rises).
pub fn training_columns(aggregates: &[Aggregate]) -> Vec<Column> {
    // (metric, split) → entity → (window, mean).
    type Points = BTreeMap<String, Vec<(i64, f64)>>;
    let mut series: BTreeMap<(String, Vec<String>), Points> = BTreeMap::new();
    for a in aggregates {
        series
            .entry((a.metric.clone(), a.split.clone()))
            .or_default()
            .entry(a.entity.clone())
            .or_default()
            .push((a.window_ns, a.mean));
    }
    series
        .into_iter()
        .map(|((metric, split), entities)| {
            let (mut rises, mut falls) = (0usize, 0usize);
            for mut points in entities.into_values() {
                points.sort_by_key(|p| p.0);
                for pair in points.windows(2) {
                    if pair[1].1 > pair[0].1 {
                        rises += 1;
                    } else if pair[1].1 < pair[0].1 {
                        falls += 1;
                    }
                }
            }
            Column {
                metric,
                split,
                rate: falls == 0 && rises >= 2,
            }
        })
        .collect()
}

/// Pivots aggregates into rows over `columns`; rows with fewer than half the columns
/// present are dropped (an entity that was barely reporting).
pub fn pivot(aggregates: &[Aggregate], columns: &[Column]) -> Frame {
    let index: HashMap<(&str, &[String]), (usize, bool)> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| ((c.metric.as_str(), c.split.as_slice()), (i, c.rate)))
        .collect();
    let mut rows: BTreeMap<(&str, i64), Vec<f64>> = BTreeMap::new();
    for a in aggregates {
        let Some(&(j, rate)) = index.get(&(a.metric.as_str(), a.split.as_slice())) else {
            continue;
        };
        let row = rows
            .entry((a.entity.as_str(), a.window_ns))
            .or_insert_with(|| vec![f64::NAN; columns.len()]);
        row[j] = if rate { a.rate } else { a.mean };
    }
    let mut matrix = Matrix::new(columns.len());
    let mut keys = Vec::new();
    for ((entity, window), row) in rows {
        let present = row.iter().filter(|v| !v.is_nan()).count();
        if present * 2 >= columns.len() && present > 0 {
            matrix.push(&row);
            keys.push((window, entity.to_owned()));
        }
    }
    Frame {
        columns: columns.to_vec(),
        keys,
        matrix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_reject() {
        let s = parse_selector(r#"temp{plugin="ipmi", node=~"n0.*"}"#).unwrap();
        assert_eq!(s.metric.as_deref(), Some("temp"));
        assert_eq!(s.matchers.len(), 2);
        assert_eq!(
            s.matchers[1],
            ("node".to_owned(), Op::Re, "n0.*".to_owned())
        );
        assert!(parse_selector(r#"{plugin!="nvml"}"#).is_ok());
        for bad in [
            "",
            "{}",
            "temp{plugin=ipmi}",
            "temp{plugin=\"x\"",
            "te mp",
            "temp{=\"x\"}",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
        let columns: BTreeSet<String> =
            ["metric", "plugin"].iter().map(|s| s.to_string()).collect();
        let p = predicate(
            &[parse_selector(r#"x{plugin="a'b", rack="r1"}"#).unwrap()],
            &columns,
        );
        assert!(
            p.contains("'a''b'") && p.contains("CAST(NULL AS VARCHAR)"),
            "{p}"
        );
    }
}
