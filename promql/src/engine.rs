//! [`Engine`]: parses a query, works out which series and time range every selector needs,
//! reads each once from the [`SeriesSource`], and evaluates in memory.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::label::Matcher;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, VectorSelector};
use snafu::ensure;

use crate::eval::{
    Annotations, Evaluator, Grid, Settings, Value, at_ms, finish, offset_ms, range_series_all,
    selector_key,
};
use crate::source::{SeriesSource, Steps};
use crate::value::{Labels, METRIC_NAME, QueryValue, Series};
use crate::{BadQuerySnafu, Error, Result};

/// Engine settings; the defaults are Prometheus'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (Prometheus: 5 m).
    pub lookback_ms: i64,
    /// The step of a subquery written without one (Prometheus: the global evaluation
    /// interval, 1 m by default).
    pub subquery_step_ms: i64,
    /// Samples one query may hold in memory (Prometheus' `query.max-samples`: 50 M).
    pub max_samples: usize,
    /// Points per series a range query may return (Prometheus: 11 000).
    pub max_points_per_series: i64,
    /// How long a query may run (reading and evaluating); `None`: unbounded.
    pub timeout: Option<std::time::Duration>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            lookback_ms: 5 * 60 * 1000,
            subquery_step_ms: 60 * 1000,
            max_samples: 50_000_000,
            max_points_per_series: 11_000,
            timeout: None,
        }
    }
}

/// A query's result and the annotations (warnings, infos) its evaluation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The value.
    pub value: QueryValue,
    /// Warnings and infos.
    pub annotations: Annotations,
}

/// The PromQL engine over a [`SeriesSource`].
#[derive(Debug, Clone)]
pub struct Engine {
    source: Arc<dyn SeriesSource>,
    options: EngineOptions,
}

/// What one selector needs from the source.
#[derive(Debug)]
struct Need {
    selector: VectorSelector,
    start: i64,
    end: i64,
    /// When every use is an instant selector at the query's own steps: those steps.
    steps: Option<Steps>,
    /// Whether any use is an instant selector (else all are range selectors).
    instant: bool,
}

impl Engine {
    /// An engine reading from `source`.
    pub fn new(source: Arc<dyn SeriesSource>, options: EngineOptions) -> Self {
        Self { source, options }
    }

    /// Evaluates `query` at `time_ms`.
    pub async fn instant(&self, query: &str, time_ms: i64) -> Result<QueryResult> {
        let expr = parse(query)?;
        let grid = Grid {
            start: time_ms,
            end: time_ms,
            interval: 1,
        };
        let (value, annotations) = self.evaluate(query, &expr, grid, 0).await?;
        let value = match value {
            Value::Scalar(v) => QueryValue::Scalar {
                t: time_ms,
                v: v[0],
            },
            Value::String(v) => QueryValue::String { t: time_ms, v },
            Value::Vector(series) => QueryValue::Vector(finish(series)?),
            Value::Matrix(series) => QueryValue::Matrix(finish(series)?),
        };
        Ok(QueryResult { value, annotations })
    }

    /// Evaluates `query` at `start_ms`, `start_ms + step_ms`, … up to `end_ms`; the result is
    /// always a matrix, sorted by labels.
    pub async fn range(
        &self,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult> {
        ensure!(
            step_ms > 0,
            BadQuerySnafu {
                message: "zero or negative query resolution step widths are not accepted. Try a positive integer"
            }
        );
        ensure!(
            end_ms >= start_ms,
            BadQuerySnafu {
                message: "end timestamp must not be before start time"
            }
        );
        ensure!(
            (end_ms - start_ms) / step_ms < self.options.max_points_per_series,
            BadQuerySnafu {
                message: format!(
                    "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
                    self.options.max_points_per_series
                )
            }
        );
        let expr = parse(query)?;
        let kind = expr.value_type();
        ensure!(
            matches!(kind, ValueType::Scalar | ValueType::Vector),
            BadQuerySnafu {
                message: format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    value_type_name(kind)
                )
            }
        );
        let grid = Grid {
            start: start_ms,
            end: end_ms,
            interval: step_ms,
        };
        let (value, annotations) = self.evaluate(query, &expr, grid, step_ms).await?;
        let mut series = match value {
            Value::Scalar(values) => vec![Series {
                labels: Labels::default(),
                points: values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| crate::value::Point { t: grid.ts(i), v })
                    .collect(),
            }],
            Value::Vector(series) => finish(series)?,
            Value::String(_) | Value::Matrix(_) => {
                return BadQuerySnafu {
                    message: "a range query must give a scalar or an instant vector",
                }
                .fail();
            }
        };
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(QueryResult {
            value: QueryValue::Matrix(series),
            annotations,
        })
    }

    async fn evaluate(
        &self,
        query: &str,
        expr: &Expr,
        grid: Grid,
        step_ms: i64,
    ) -> Result<(Value, Annotations)> {
        let deadline = self.options.timeout.map(|t| std::time::Instant::now() + t);
        let settings = Settings {
            query_start: grid.start,
            query_end: grid.end,
            query_step: step_ms,
            lookback: self.options.lookback_ms,
            subquery_step: self.options.subquery_step_ms,
            max_samples: self.options.max_samples,
            deadline,
        };
        let mut needs = HashMap::new();
        plan(
            expr,
            grid.start,
            grid.end,
            Some(&grid),
            &settings,
            &mut needs,
        );
        let mut data = HashMap::with_capacity(needs.len());
        let mut ranges = HashMap::new();
        let (mut fetched, mut fetched_series) = (0usize, 0usize);
        for (key, need) in needs {
            let series = self.fetch(&need).await?;
            fetched += series.iter().map(|s| s.points.len()).sum::<usize>();
            fetched_series += series.len();
            ensure!(
                fetched <= self.options.max_samples,
                crate::LimitSnafu {
                    message: format!(
                        "query processing would load too many samples into memory in query execution (more than {})",
                        self.options.max_samples
                    )
                }
            );
            // A selector used only for ranges is kept as range arguments take it.
            if need.instant {
                data.insert(key, series);
            } else {
                ranges.insert(key, range_series_all(series));
            }
        }
        // Evaluation is CPU work: keep it off the async workers, but for small work (a
        // dashboard's panel of a few series), where handing it to another thread and back
        // would cost more than the work.
        let small = fetched <= INLINE_SAMPLES
            && fetched_series.max(1) * grid.len() <= INLINE_SAMPLES
            && !has_subquery(expr);
        let evaluate = move |expr: &Expr, query: &str| {
            let mut evaluator = Evaluator::new(&data, &ranges, query, settings);
            let value = evaluator.eval(expr, &grid)?;
            Ok((value, evaluator.annotations))
        };
        if small {
            return evaluate(expr, query);
        }
        let (expr, query) = (expr.clone(), query.to_owned());
        tokio::task::spawn_blocking(move || evaluate(&expr, &query))
            .await
            .map_err(|e| Error::Execution {
                message: format!("evaluation failed: {e}"),
            })?
    }

    /// Reads one selector's series (the union over its `or` groups), sorted by labels.
    async fn fetch(&self, need: &Need) -> Result<Vec<Series>> {
        let mut merged: Vec<Series> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for matchers in matcher_sets(&need.selector) {
            let series = self
                .source
                .select(&matchers, need.start, need.end, need.steps)
                .await?;
            for s in series {
                if seen.insert(s.labels.clone()) {
                    merged.push(s);
                }
            }
        }
        merged.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(merged)
    }
}

/// The matcher lists a selector stands for: one, or one per `or` group.
pub fn matcher_sets(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let mut base: Vec<Matcher> = vs.matchers.matchers.clone();
    if let Some(name) = &vs.name {
        base.push(Matcher::new(
            promql_parser::label::MatchOp::Equal,
            METRIC_NAME,
            name,
        ));
    }
    if vs.matchers.or_matchers.is_empty() {
        return vec![base];
    }
    vs.matchers
        .or_matchers
        .iter()
        .map(|group| base.iter().chain(group).cloned().collect())
        .collect()
}

/// Parses a query, with Prometheus' wording for errors.
pub fn parse(query: &str) -> Result<Expr> {
    promql_parser::parser::parse(query).map_err(|message| Error::Parse { message })
}

fn value_type_name(kind: ValueType) -> &'static str {
    match kind {
        ValueType::Scalar => "scalar",
        ValueType::String => "string",
        ValueType::Vector => "vector",
        ValueType::Matrix => "range vector",
    }
}

/// Queries reading at most this many samples, and with at most this many series × steps,
/// are evaluated on the async worker that fetched them.
const INLINE_SAMPLES: usize = 20_000;

/// Whether `expr` holds a subquery (whose evaluation may cost far more than its samples).
fn has_subquery(expr: &Expr) -> bool {
    match expr {
        Expr::Subquery(_) => true,
        Expr::Paren(p) => has_subquery(&p.expr),
        Expr::Unary(u) => has_subquery(&u.expr),
        Expr::Binary(b) => has_subquery(&b.lhs) || has_subquery(&b.rhs),
        Expr::Aggregate(a) => has_subquery(&a.expr) || a.param.as_deref().is_some_and(has_subquery),
        Expr::Call(c) => c.args.args.iter().any(|arg| has_subquery(arg)),
        Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => false,
    }
}

/// Records, for every selector under `expr`, the time range it needs when `expr` is
/// evaluated at times in `[start, end]`: on `grid` (the query's steps), or anywhere in it
/// (`None`, under a subquery).
fn plan(
    expr: &Expr,
    start: i64,
    end: i64,
    grid: Option<&Grid>,
    settings: &Settings,
    needs: &mut HashMap<String, Need>,
) {
    let mut need = |vs: &VectorSelector, back: i64, range: bool| {
        let offset = offset_ms(&vs.offset);
        let at = at_ms(&vs.at, settings);
        let (s, e) = match at {
            Some(t) => (t - offset, t - offset),
            None => (start - offset, end - offset),
        };
        // Samples no step uses can be left out: of an instant selector all but the latest
        // before each step, of a range selector those between windows shorter than a step.
        let thinned = |g: &&Grid| at.is_none() && (!range || back < g.interval);
        let steps = grid.filter(thinned).map(|g| Steps {
            first_ms: g.start - offset,
            interval_ms: g.interval,
            lookback_ms: back,
            whole_windows: range,
        });
        let entry = needs.entry(selector_key(vs)).or_insert_with(|| Need {
            selector: vs.clone(),
            start: s - back,
            end: e,
            steps,
            instant: false,
        });
        entry.instant |= !range;
        entry.start = entry.start.min(s - back);
        entry.end = entry.end.max(e);
        if entry.steps != steps {
            entry.steps = None;
        }
    };
    match expr {
        Expr::VectorSelector(vs) => need(vs, settings.lookback, false),
        Expr::MatrixSelector(ms) => need(&ms.vs, ms.range.as_millis() as i64, true),
        Expr::Subquery(sq) => {
            let offset = offset_ms(&sq.offset);
            let (s, e) = match at_ms(&sq.at, settings) {
                Some(t) => (t, t),
                None => (start, end),
            };
            let range = sq.range.as_millis() as i64;
            plan(
                &sq.expr,
                s - offset - range,
                e - offset,
                None,
                settings,
                needs,
            );
        }
        Expr::Paren(p) => plan(&p.expr, start, end, grid, settings, needs),
        Expr::Unary(u) => plan(&u.expr, start, end, grid, settings, needs),
        Expr::Binary(b) => {
            plan(&b.lhs, start, end, grid, settings, needs);
            plan(&b.rhs, start, end, grid, settings, needs);
        }
        Expr::Aggregate(a) => {
            plan(&a.expr, start, end, grid, settings, needs);
            if let Some(param) = &a.param {
                plan(param, start, end, grid, settings, needs);
            }
        }
        Expr::Call(c) => {
            for arg in &c.args.args {
                plan(arg, start, end, grid, settings, needs);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}
