//! PromQL functions (<https://prometheus.io/docs/prometheus/latest/querying/functions/>),
//! one file per family; this file dispatches and holds the small ones (`vector`, `scalar`,
//! `time`, `timestamp`, `absent`, `sort`, …).

mod histogram;
mod labels;
mod math;
mod over_time;
mod rate;
mod sliding;
mod time;

use exawatch_parallel::in_parallel;
use promql_parser::parser::{Call, Expr, VectorSelector};

use crate::eval::{ESeries, Evaluator, Grid, RangeArg, Value};
use crate::value::{Labels, METRIC_NAME, Point};
use crate::{BadQuerySnafu, Error, Result};

/// What a range function sees at one step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    /// Index of the step on the grid.
    pub(crate) index: usize,
    /// Evaluation time (what Prometheus calls `enh.Ts`).
    pub(crate) ts: i64,
    /// Start of the window (exclusive).
    pub(crate) range_start: i64,
    /// End of the window (inclusive).
    pub(crate) range_end: i64,
    /// Length of the window in milliseconds.
    pub(crate) range: i64,
}

impl Step {
    /// Step `i` of `grid` for a range argument.
    pub(crate) fn new(arg: &RangeArg, grid: &Grid, i: usize) -> Self {
        let ts = grid.ts(i);
        let end = arg.window_end(ts);
        Self {
            index: i,
            ts: if arg.at.is_some() { grid.start } else { ts },
            range_start: end - arg.range,
            range_end: end,
            range: arg.range,
        }
    }
}

/// Evaluates a function call over `grid`.
pub(crate) fn call(ev: &mut Evaluator<'_>, call: &Call, grid: &Grid) -> Result<Value> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
    if let Some(value) = over_time::call(ev, name, &args, grid)? {
        return Ok(value);
    }
    if let Some(value) = rate::call(ev, name, &args, grid)? {
        return Ok(value);
    }
    if let Some(value) = math::call(ev, name, &args, grid)? {
        return Ok(value);
    }
    if let Some(value) = time::call(ev, name, &args, grid)? {
        return Ok(value);
    }
    if let Some(value) = labels::call(ev, name, &args, grid)? {
        return Ok(value);
    }
    if let Some(value) = histogram::call(ev, name, &args, grid)? {
        return Ok(value);
    }
    let n = grid.len();
    Ok(match name {
        "time" => Value::Scalar((0..n).map(|i| grid.ts(i) as f64 / 1000.0).collect()),
        "pi" => Value::Scalar(vec![std::f64::consts::PI; n]),
        "step" => Value::Scalar(vec![ev.settings.query_step as f64 / 1000.0; n]),
        "range" => Value::Scalar(vec![
            (ev.settings.query_end - ev.settings.query_start) as f64
                / 1000.0;
            n
        ]),
        "start" => Value::Scalar(vec![ev.settings.query_start as f64 / 1000.0; n]),
        "end" => Value::Scalar(vec![ev.settings.query_end as f64 / 1000.0; n]),
        "min_of" | "max_of" => {
            let a = ev.eval_scalar(args[0], grid)?;
            let b = ev.eval_scalar(args[1], grid)?;
            let f = if name == "min_of" {
                crate::stats::go_min
            } else {
                crate::stats::go_max
            };
            Value::Scalar(a.iter().zip(&b).map(|(&a, &b)| f(a, b)).collect())
        }
        "vector" => {
            let values = ev.eval_scalar(args[0], grid)?;
            Value::Vector(vec![ESeries {
                labels: Labels::default(),
                drop_name: false,
                points: values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| Point { t: grid.ts(i), v })
                    .collect(),
            }])
        }
        "scalar" => {
            let series = ev.eval_vector(args[0], grid)?;
            let mut values = vec![f64::NAN; n];
            let mut counts = vec![0u32; n];
            for s in &series {
                for p in &s.points {
                    let i = grid.index(p.t);
                    counts[i] += 1;
                    values[i] = p.v;
                }
            }
            for (v, c) in values.iter_mut().zip(counts) {
                if c != 1 {
                    *v = f64::NAN;
                }
            }
            Value::Scalar(values)
        }
        "timestamp" => Value::Vector(timestamp(ev, args[0], grid)?),
        "absent" => {
            let series = ev.eval_vector(args[0], grid)?;
            let mut present = vec![false; n];
            for s in &series {
                for p in &s.points {
                    present[grid.index(p.t)] = true;
                }
            }
            let labels = match unparen(args[0]) {
                Expr::VectorSelector(vs) => absent_labels(vs),
                _ => Labels::default(),
            };
            Value::Vector(constant_where(labels, grid, |i| !present[i]))
        }
        "sort" | "sort_desc" => {
            let mut series = ev.eval_vector(args[0], grid)?;
            if grid.len() == 1 {
                let desc = name == "sort_desc";
                series.sort_by(|a, b| {
                    let (x, y) = (a.points[0].v, b.points[0].v);
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if desc => y.partial_cmp(&x).expect("not NaN"),
                        _ => x.partial_cmp(&y).expect("not NaN"),
                    }
                });
            }
            Value::Vector(series)
        }
        _ => {
            return BadQuerySnafu {
                message: format!("function {name:?} is not supported"),
            }
            .fail();
        }
    })
}

/// `expr` without enclosing parentheses.
pub(crate) fn unparen(mut expr: &Expr) -> &Expr {
    while let Expr::Paren(p) = expr {
        expr = &p.expr;
    }
    expr
}

/// A series with labels `labels` and value 1 at the steps where `when` holds.
pub(crate) fn constant_where(
    labels: Labels,
    grid: &Grid,
    when: impl Fn(usize) -> bool,
) -> Vec<ESeries> {
    let points: Vec<Point> = (0..grid.len())
        .filter(|&i| when(i))
        .map(|i| Point {
            t: grid.ts(i),
            v: 1.0,
        })
        .collect();
    if points.is_empty() {
        Vec::new()
    } else {
        vec![ESeries {
            labels,
            drop_name: false,
            points,
        }]
    }
}

/// The labels `absent` gives: the selector's equality matchers, except labels matched more
/// than once (Prometheus' `createLabelsForAbsentFunction`).
pub(crate) fn absent_labels(vs: &VectorSelector) -> Labels {
    let mut labels = Labels::default();
    let mut has = std::collections::HashSet::new();
    for m in vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten())
    {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, promql_parser::label::MatchOp::Equal) && !has.contains(&m.name) {
            labels.set(&m.name, &m.value);
            has.insert(m.name.clone());
        } else {
            labels.remove(&m.name);
        }
    }
    labels
}

/// `timestamp(v)`: the time of each sample, in seconds; for a plain selector the time the
/// sample was taken, otherwise the evaluation time.
fn timestamp(ev: &mut Evaluator<'_>, arg: &Expr, grid: &Grid) -> Result<Vec<ESeries>> {
    if let Expr::VectorSelector(vs) = unparen(arg) {
        let offset = crate::eval::offset_ms(&vs.offset);
        let at = crate::eval::at_ms(&vs.at, &ev.settings);
        let lookback = ev.settings.lookback;
        let mut out = Vec::new();
        for s in ev.raw(vs) {
            let points: Vec<Point> = (0..grid.len())
                .filter_map(|i| {
                    let ts = grid.ts(i);
                    crate::eval::latest(&s.points, at.unwrap_or(ts) - offset, lookback).map(|p| {
                        Point {
                            t: ts,
                            v: p.t as f64 / 1000.0,
                        }
                    })
                })
                .collect();
            if !points.is_empty() {
                out.push(ESeries {
                    labels: s.labels.clone(),
                    drop_name: true,
                    points,
                });
            }
        }
        return Ok(out);
    }
    let mut series = ev.eval_vector(arg, grid)?;
    for s in &mut series {
        s.drop_name = true;
        for p in &mut s.points {
            p.v = p.t as f64 / 1000.0;
        }
    }
    Ok(series)
}

/// Applies `f` to every window of a range argument: one output point per series and step
/// where `f` gives a value. Keeps the metric name only if `keep_name`; stops past
/// `deadline`.
pub(crate) fn over_windows(
    arg: &RangeArg,
    grid: &Grid,
    keep_name: bool,
    deadline: Option<std::time::Instant>,
    mut f: impl FnMut(&[Point], &Step, &ESeries) -> Result<Option<f64>>,
) -> Result<Vec<ESeries>> {
    let mut out = Vec::with_capacity(arg.series.len());
    for s in arg.series.iter() {
        if deadline.is_some_and(|d| std::time::Instant::now() > d) {
            return crate::TimeoutSnafu.fail();
        }
        if let Some(series) = series_over_windows(arg, grid, keep_name, s, &mut f)? {
            out.push(series);
        }
    }
    Ok(out)
}

/// [`over_windows`] for a pure `f`, with the series shared out between threads when there
/// is enough work: a query's windows are most of its CPU time.
pub(crate) fn over_windows_parallel(
    arg: &RangeArg,
    grid: &Grid,
    keep_name: bool,
    deadline: Option<std::time::Instant>,
    f: impl Fn(&[Point], &Step, &ESeries) -> Option<f64> + Sync,
) -> Result<Vec<ESeries>> {
    map_series_parallel(arg, grid, deadline, |s| {
        series_over_windows(arg, grid, keep_name, s, |w, step, s| Ok(f(w, step, s)))
    })
}

/// `per_series` of every series of `arg` that gives an output, in order, with the series
/// shared out between threads when there is enough work; stops past `deadline`.
pub(crate) fn map_series_parallel<T: Send>(
    arg: &RangeArg,
    grid: &Grid,
    deadline: Option<std::time::Instant>,
    per_series: impl Fn(&ESeries) -> Result<Option<T>> + Sync,
) -> Result<Vec<T>> {
    let work = arg.series.iter().map(|s| s.points.len() + grid.len()).sum();
    let outputs = in_parallel(arg.series.iter().collect(), work, |s| {
        if deadline.is_some_and(|d| std::time::Instant::now() > d) {
            return crate::TimeoutSnafu.fail();
        }
        per_series(s)
    });
    let mut out = Vec::with_capacity(outputs.len());
    for output in outputs {
        out.extend(output?);
    }
    Ok(out)
}

/// One series' output of [`over_windows`], if it has any point.
pub(crate) fn series_over_windows(
    arg: &RangeArg,
    grid: &Grid,
    keep_name: bool,
    s: &ESeries,
    mut f: impl FnMut(&[Point], &Step, &ESeries) -> Result<Option<f64>>,
) -> Result<Option<ESeries>> {
    let mut points = Vec::new();
    for (i, range) in sliding::windows(&s.points, arg, grid) {
        if let Some(v) = f(&s.points[range], &Step::new(arg, grid, i), s)? {
            points.push(Point { t: grid.ts(i), v });
        }
    }
    Ok((!points.is_empty()).then(|| ESeries {
        labels: s.labels.clone(),
        drop_name: s.drop_name || !keep_name,
        points,
    }))
}

/// True if some step's window of `s` holds a point.
pub(crate) fn has_window(arg: &RangeArg, grid: &Grid, s: &ESeries) -> bool {
    sliding::windows(&s.points, arg, grid).next().is_some()
}

/// Maps the values of an instant vector, dropping the metric name.
pub(crate) fn map_values(
    mut series: Vec<ESeries>,
    grid: &Grid,
    f: impl Fn(f64, usize) -> Option<f64>,
) -> Vec<ESeries> {
    for s in &mut series {
        s.drop_name = true;
        s.points.retain_mut(|p| match f(p.v, grid.index(p.t)) {
            Some(v) => {
                p.v = v;
                true
            }
            None => false,
        });
    }
    series.retain(|s| !s.points.is_empty());
    series
}

/// The scalar argument `i`, or `default` on every step when it is absent.
pub(crate) fn scalar_arg(
    ev: &mut Evaluator<'_>,
    args: &[&Expr],
    i: usize,
    default: f64,
    grid: &Grid,
) -> Result<Vec<f64>> {
    match args.get(i) {
        Some(arg) => ev.eval_scalar(arg, grid),
        None => Ok(vec![default; grid.len()]),
    }
}

/// An error for a bad function argument.
pub(crate) fn bad_arg(message: String) -> Error {
    Error::BadQuery { message }
}
