//! The evaluator: one expression over a grid of evaluation times, as Prometheus' engine does
//! it (<https://github.com/prometheus/prometheus/blob/main/promql/engine.go>).
//!
//! Every node is evaluated over all steps at once: a scalar is one value per step, an instant
//! vector is a set of series whose points sit on step times. Range arguments (matrix
//! selectors and subqueries) are cut into windows per step. Metric names are removed late
//! (Prometheus 3's delayed `__name__` removal): a series carries a `drop_name` flag that
//! [`finish`] applies at the end.

use std::borrow::Cow;
use std::collections::HashMap;

use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};
use snafu::ensure;

use crate::value::{Labels, Point, Series, is_stale};
use crate::{BadQuerySnafu, Error, ExecutionSnafu, Result};

/// The evaluation times of a node: `start`, `start + interval`, …, up to `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grid {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) interval: i64,
}

impl Grid {
    /// Number of steps.
    pub(crate) fn len(&self) -> usize {
        ((self.end - self.start) / self.interval) as usize + 1
    }

    /// Time of step `i`.
    pub(crate) fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.interval
    }

    /// Step of time `t` (which must be on the grid).
    pub(crate) fn index(&self, t: i64) -> usize {
        ((t - self.start) / self.interval) as usize
    }
}

/// A series during evaluation: points on step times, and whether `__name__` goes at the end.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ESeries {
    pub(crate) labels: Labels,
    pub(crate) drop_name: bool,
    pub(crate) points: Vec<Point>,
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// One value per step.
    Scalar(Vec<f64>),
    /// A string literal.
    String(String),
    /// An instant vector over the steps.
    Vector(Vec<ESeries>),
    /// A range vector at one evaluation time (only as a query's result).
    Matrix(Vec<ESeries>),
}

/// Warnings and infos collected while evaluating, in Prometheus' wording.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Annotations {
    /// `PromQL warning: …` messages.
    pub warnings: Vec<String>,
    /// `PromQL info: …` messages.
    pub infos: Vec<String>,
}

impl Annotations {
    pub(crate) fn warn(&mut self, message: String) {
        let message = format!("PromQL warning: {message}");
        if !self.warnings.contains(&message) {
            self.warnings.push(message);
        }
    }

    pub(crate) fn info(&mut self, message: String) {
        let message = format!("PromQL info: {message}");
        if !self.infos.contains(&message) {
            self.infos.push(message);
        }
    }
}

/// A range argument: series (staleness markers removed) and how to window them per step.
#[derive(Debug)]
pub(crate) struct RangeArg<'a> {
    /// Borrowed from the fetched data where a selector is only used for ranges.
    pub(crate) series: Cow<'a, [ESeries]>,
    pub(crate) range: i64,
    pub(crate) offset: i64,
    pub(crate) at: Option<i64>,
    /// The selector, when the argument is a matrix selector (for `absent_over_time`).
    pub(crate) selector: Option<VectorSelector>,
}

impl RangeArg<'_> {
    /// The end of the window at evaluation time `ts`.
    pub(crate) fn window_end(&self, ts: i64) -> i64 {
        self.at.unwrap_or(ts) - self.offset
    }
}

/// The points of `points` in `(end - range, end]`.
pub(crate) fn window(points: &[Point], end: i64, range: i64) -> &[Point] {
    let lo = points.partition_point(|p| p.t <= end - range);
    let hi = points.partition_point(|p| p.t <= end);
    &points[lo..hi.max(lo)]
}

/// Collects outputs per step into series keyed by label set, refusing two samples with the
/// same labels at one time.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    index: HashMap<Labels, usize>,
    series: Vec<ESeries>,
}

impl Builder {
    pub(crate) fn push(&mut self, labels: Labels, drop_name: bool, t: i64, v: f64) -> Result<()> {
        let i = match self.index.get(&labels) {
            Some(&i) => i,
            None => {
                self.index.insert(labels.clone(), self.series.len());
                self.series.push(ESeries {
                    labels,
                    drop_name,
                    points: Vec::new(),
                });
                self.series.len() - 1
            }
        };
        let series = &mut self.series[i];
        ensure!(
            series.points.last().is_none_or(|p| p.t != t),
            ExecutionSnafu {
                message: "vector cannot contain metrics with the same labelset"
            }
        );
        series.points.push(Point { t, v });
        Ok(())
    }

    pub(crate) fn finish(self) -> Vec<ESeries> {
        self.series
    }
}

/// Per step, the `(series index, value)` pairs of a vector.
pub(crate) fn by_step(series: &[ESeries], grid: &Grid) -> Vec<Vec<(usize, f64)>> {
    let mut steps = vec![Vec::new(); grid.len()];
    for (i, s) in series.iter().enumerate() {
        for p in &s.points {
            steps[grid.index(p.t)].push((i, p.v));
        }
    }
    steps
}

/// Fetched series as range arguments take them (see [`range_series`]), the markers looked
/// for on several threads when there are many points.
pub(crate) fn range_series_all(series: Vec<Series>) -> Vec<ESeries> {
    let work = series.iter().map(|s| s.points.len()).sum();
    exawatch_parallel::in_parallel(series, work, range_series)
}

/// A fetched series as a range argument's: without staleness markers.
pub(crate) fn range_series(mut s: Series) -> ESeries {
    s.points.retain(|p| !is_stale(p.v));
    ESeries {
        labels: s.labels,
        drop_name: false,
        points: s.points,
    }
}

/// Settings of one evaluation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) query_start: i64,
    pub(crate) query_end: i64,
    pub(crate) query_step: i64,
    pub(crate) lookback: i64,
    pub(crate) subquery_step: i64,
    pub(crate) max_samples: usize,
    /// Evaluation stops with [`Error::Timeout`] past this instant.
    pub(crate) deadline: Option<std::time::Instant>,
}

/// Evaluates expressions against data fetched up front.
#[derive(Debug)]
pub(crate) struct Evaluator<'a> {
    pub(crate) data: &'a HashMap<String, Vec<Series>>,
    /// The data of selectors used only for ranges, without staleness markers.
    ranges: &'a HashMap<String, Vec<ESeries>>,
    /// The query text, to point annotations at the expression they concern.
    query: &'a str,
    pub(crate) settings: Settings,
    pub(crate) annotations: Annotations,
    samples: usize,
}

/// The key under which a selector's data is fetched: the selector without offset and `@`.
pub(crate) fn selector_key(vs: &VectorSelector) -> String {
    let mut plain = vs.clone();
    plain.offset = None;
    plain.at = None;
    plain.to_string()
}

/// An offset in milliseconds (negative for `offset -5m`).
pub(crate) fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

/// The time of an `@` modifier in milliseconds.
pub(crate) fn at_ms(at: &Option<AtModifier>, settings: &Settings) -> Option<i64> {
    match at {
        None => None,
        Some(AtModifier::Start) => Some(settings.query_start),
        Some(AtModifier::End) => Some(settings.query_end),
        Some(AtModifier::At(t)) => Some(system_time_ms(*t)),
    }
}

/// Milliseconds since the epoch of a `SystemTime` (negative before it).
pub(crate) fn system_time_ms(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The grid a subquery evaluates its inner expression on, for an outer grid.
pub(crate) fn subquery_grid(sq: &SubqueryExpr, outer: &Grid, settings: &Settings) -> Grid {
    let offset = offset_ms(&sq.offset);
    let range = sq.range.as_millis() as i64;
    let interval = sq
        .step
        .map(|s| s.as_millis() as i64)
        .filter(|s| *s > 0)
        .unwrap_or(settings.subquery_step);
    let (base_start, base_end) = match at_ms(&sq.at, settings) {
        Some(t) => (t, t),
        None => (outer.start, outer.end),
    };
    let first = base_start - offset - range;
    let mut start = interval * (first / interval);
    if start <= first {
        start += interval;
    }
    Grid {
        start,
        end: base_end - offset,
        interval,
    }
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(
        data: &'a HashMap<String, Vec<Series>>,
        ranges: &'a HashMap<String, Vec<ESeries>>,
        query: &'a str,
        settings: Settings,
    ) -> Self {
        Self {
            data,
            ranges,
            query,
            settings,
            annotations: Annotations::default(),
            samples: 0,
        }
    }

    /// Where `expr` is in the query, as Prometheus appends it to annotations: ` (line:column)`.
    /// The parser keeps no positions, so this finds the expression's text in the query (its
    /// first occurrence); empty when the text was written differently.
    pub(crate) fn position(&self, expr: &Expr) -> String {
        let text = expr.to_string();
        let Some(offset) = self.query.find(&text).or_else(|| {
            self.query
                .to_ascii_lowercase()
                .find(&text.to_ascii_lowercase())
        }) else {
            return String::new();
        };
        let before = &self.query[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        format!(" ({line}:{column})")
    }

    /// Counts `n` more samples held in memory and refuses when past the limit.
    pub(crate) fn account(&mut self, n: usize) -> Result<()> {
        self.check_deadline()?;
        self.samples += n;
        ensure!(
            self.samples <= self.settings.max_samples,
            crate::LimitSnafu {
                message: format!(
                    "query processing would load too many samples into memory in query execution (more than {})",
                    self.settings.max_samples
                )
            }
        );
        Ok(())
    }

    /// Fails once the query's deadline has passed.
    pub(crate) fn check_deadline(&self) -> Result<()> {
        match self.settings.deadline {
            Some(deadline) if std::time::Instant::now() > deadline => crate::TimeoutSnafu.fail(),
            _ => Ok(()),
        }
    }

    /// Evaluates `expr` over `grid`.
    pub(crate) fn eval(&mut self, expr: &Expr, grid: &Grid) -> Result<Value> {
        self.check_deadline()?;
        let value = match expr {
            Expr::NumberLiteral(n) => Value::Scalar(vec![n.val; grid.len()]),
            Expr::StringLiteral(s) => Value::String(s.val.clone()),
            Expr::Paren(p) => self.eval(&p.expr, grid)?,
            Expr::Unary(u) => match self.eval(&u.expr, grid)? {
                Value::Scalar(values) => Value::Scalar(values.into_iter().map(|v| -v).collect()),
                Value::Vector(mut series) => {
                    for s in &mut series {
                        s.drop_name = true;
                        for p in &mut s.points {
                            p.v = -p.v;
                        }
                    }
                    Value::Vector(series)
                }
                _ => {
                    return BadQuerySnafu {
                        message: "unary minus needs a scalar or an instant vector",
                    }
                    .fail();
                }
            },
            Expr::Binary(b) => crate::binary::eval(self, b, grid)?,
            Expr::VectorSelector(vs) => Value::Vector(self.select(vs, grid)?),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                let arg = self.range_arg(expr, grid)?;
                let mut out = Vec::new();
                let end = arg.window_end(grid.start);
                for s in arg.series.into_owned() {
                    let points = window(&s.points, end, arg.range).to_vec();
                    if !points.is_empty() {
                        out.push(ESeries { points, ..s });
                    }
                }
                Value::Matrix(out)
            }
            Expr::Call(call) => crate::functions::call(self, call, grid)?,
            Expr::Aggregate(agg) => crate::aggregate::eval(self, agg, grid)?,
            Expr::Extension(_) => {
                return BadQuerySnafu {
                    message: "extension expressions are not supported",
                }
                .fail();
            }
        };
        if let Value::Vector(series) | Value::Matrix(series) = &value {
            self.account(series.iter().map(|s| s.points.len()).sum())?;
        }
        Ok(value)
    }

    /// Evaluates `expr` and requires an instant vector.
    pub(crate) fn eval_vector(&mut self, expr: &Expr, grid: &Grid) -> Result<Vec<ESeries>> {
        match self.eval(expr, grid)? {
            Value::Vector(series) => Ok(series),
            other => BadQuerySnafu {
                message: format!("expected an instant vector, got {}", type_name(&other)),
            }
            .fail(),
        }
    }

    /// Evaluates `expr` and requires a scalar.
    pub(crate) fn eval_scalar(&mut self, expr: &Expr, grid: &Grid) -> Result<Vec<f64>> {
        match self.eval(expr, grid)? {
            Value::Scalar(values) => Ok(values),
            other => BadQuerySnafu {
                message: format!("expected a scalar, got {}", type_name(&other)),
            }
            .fail(),
        }
    }

    /// Evaluates `expr` and requires a string.
    pub(crate) fn eval_string(&mut self, expr: &Expr, grid: &Grid) -> Result<String> {
        match self.eval(expr, grid)? {
            Value::String(s) => Ok(s),
            other => BadQuerySnafu {
                message: format!("expected a string, got {}", type_name(&other)),
            }
            .fail(),
        }
    }

    /// The fetched series of a selector (raw, staleness markers included).
    pub(crate) fn raw(&self, vs: &VectorSelector) -> &'a [Series] {
        self.data
            .get(&selector_key(vs))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// An instant vector selector: per step the latest sample in `(t - lookback, t]` of each
    /// series, unless it is a staleness marker.
    pub(crate) fn select(&mut self, vs: &VectorSelector, grid: &Grid) -> Result<Vec<ESeries>> {
        let offset = offset_ms(&vs.offset);
        let at = at_ms(&vs.at, &self.settings);
        let lookback = self.settings.lookback;
        let mut out = Vec::new();
        for s in self.raw(vs) {
            let mut points = Vec::with_capacity(grid.len());
            // The points at or before the step; step times ascend, so the scan for the
            // next step goes on from where this one ended (the source left out most points
            // no step uses: usually a step or two ahead).
            let mut seen = 0;
            for i in 0..grid.len() {
                let ts = grid.ts(i);
                let t = at.unwrap_or(ts) - offset;
                while seen < s.points.len() && s.points[seen].t <= t {
                    seen += 1;
                }
                if let Some(p) = latest(&s.points[..seen], t, lookback) {
                    points.push(Point { t: ts, v: p.v });
                }
            }
            if !points.is_empty() {
                out.push(ESeries {
                    labels: s.labels.clone(),
                    drop_name: false,
                    points,
                });
            }
        }
        Ok(out)
    }

    /// A matrix selector or subquery as a range argument.
    pub(crate) fn range_arg(&mut self, expr: &Expr, grid: &Grid) -> Result<RangeArg<'a>> {
        match expr {
            Expr::Paren(p) => self.range_arg(&p.expr, grid),
            Expr::MatrixSelector(ms) => {
                let series = match self.ranges.get(&selector_key(&ms.vs)) {
                    Some(series) => Cow::Borrowed(series.as_slice()),
                    None => Cow::Owned(
                        self.raw(&ms.vs)
                            .iter()
                            .map(|s| range_series(s.clone()))
                            .collect(),
                    ),
                };
                Ok(RangeArg {
                    series,
                    range: ms.range.as_millis() as i64,
                    offset: offset_ms(&ms.vs.offset),
                    at: at_ms(&ms.vs.at, &self.settings),
                    selector: Some(ms.vs.clone()),
                })
            }
            Expr::Subquery(sq) => {
                let inner = subquery_grid(sq, grid, &self.settings);
                let series = if inner.start > inner.end {
                    Cow::Owned(Vec::new())
                } else {
                    Cow::Owned(self.eval_vector(&sq.expr, &inner)?)
                };
                Ok(RangeArg {
                    series,
                    range: sq.range.as_millis() as i64,
                    offset: offset_ms(&sq.offset),
                    at: at_ms(&sq.at, &self.settings),
                    selector: None,
                })
            }
            _ => BadQuerySnafu {
                message: "expected a range vector (a matrix selector or a subquery)",
            }
            .fail(),
        }
    }
}

/// The latest sample in `(t - lookback, t]`, unless it is a staleness marker.
pub(crate) fn latest(points: &[Point], t: i64, lookback: i64) -> Option<Point> {
    // Most often the last point is the one (points cut at `t`).
    let hi = match points.last() {
        Some(p) if p.t <= t => points.len(),
        _ => points.partition_point(|p| p.t <= t),
    };
    let p = *points[..hi].last()?;
    (p.t > t - lookback && !is_stale(p.v)).then_some(p)
}

/// The name of a value's type, as Prometheus spells it.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Scalar(_) => "scalar",
        Value::String(_) => "string",
        Value::Vector(_) => "instant vector",
        Value::Matrix(_) => "range vector",
    }
}

/// Applies delayed `__name__` removal, merging series that end up with the same labels;
/// refuses two samples with the same labels at one time.
pub(crate) fn finish(series: Vec<ESeries>) -> Result<Vec<Series>> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<Series> = Vec::with_capacity(series.len());
    for s in series {
        let labels = if s.drop_name {
            s.labels.without_name()
        } else {
            s.labels
        };
        match index.get(&labels) {
            None => {
                index.insert(labels.clone(), out.len());
                out.push(Series {
                    labels,
                    points: s.points,
                });
            }
            Some(&i) => {
                let merged = &mut out[i].points;
                merged.extend(s.points);
                merged.sort_by_key(|p| p.t);
                if merged.windows(2).any(|w| w[0].t == w[1].t) {
                    return Err(Error::Execution {
                        message: "vector cannot contain metrics with the same labelset".into(),
                    });
                }
            }
        }
    }
    Ok(out)
}
