//! Counter and gauge change functions over a range: `rate`, `increase`, `delta` (with
//! Prometheus' extrapolation), `irate`, `idelta`, `deriv`, `predict_linear`, `resets`,
//! `changes`. Mirrors `extrapolatedRate`, `instantValue` and `linearRegression` in
//! <https://github.com/prometheus/prometheus/blob/main/promql/functions.go>.
//!
//! <https://prometheus.io/docs/prometheus/latest/querying/functions/#rate>

use std::ops::Range;

use promql_parser::parser::Expr;

use super::sliding::{window_sums, windows};
use super::{Step, has_window, map_series_parallel, over_windows_parallel};
use crate::Result;
use crate::eval::{ESeries, Evaluator, Grid, RangeArg, Value};
use crate::stats::kahan_sum_inc;
use crate::value::Point;

/// Evaluates the function if it belongs to this family.
pub(super) fn call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    grid: &Grid,
) -> Result<Option<Value>> {
    if !matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "deriv"
            | "predict_linear"
            | "resets"
            | "changes"
    ) {
        return Ok(None);
    }
    let arg = ev.range_arg(args[0], grid)?;
    let duration = if name == "predict_linear" {
        ev.eval_scalar(args[1], grid)?
    } else {
        Vec::new()
    };
    let out = if matches!(name, "rate" | "increase") {
        map_series_parallel(&arg, grid, ev.settings.deadline, |s| {
            Ok(counter_rates(&arg, grid, s, name == "rate"))
        })?
    } else {
        over_windows_parallel(
            &arg,
            grid,
            false,
            ev.settings.deadline,
            |w, step, _| match name {
                "delta" => extrapolated_rate(w, step, false, false),
                "irate" => instant_value(w, true),
                "idelta" => instant_value(w, false),
                "deriv" => (w.len() >= 2).then(|| linear_regression(w, w[0].t).0),
                "predict_linear" => (w.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(w, step.ts);
                    slope * duration[step.index] + intercept
                }),
                "resets" => Some(w.windows(2).filter(|p| p[1].v < p[0].v).count() as f64),
                // changes
                _ => Some(
                    w.windows(2)
                        .filter(|p| !(p[1].v == p[0].v || (p[1].v.is_nan() && p[0].v.is_nan())))
                        .count() as f64,
                ),
            },
        )?
    };
    // Prometheus' note on rate/increase of a selector whose metric does not look like a
    // counter, once per metric that had a window.
    let mut non_counters: Vec<&str> = Vec::new();
    if arg.selector.is_some() && matches!(name, "rate" | "increase") {
        for s in arg.series.iter() {
            if let Some(metric) = s.labels.metric_name()
                && !["_total", "_sum", "_count", "_bucket"]
                    .iter()
                    .any(|suffix| metric.ends_with(suffix))
                && !non_counters.contains(&metric)
                && has_window(&arg, grid, s)
            {
                non_counters.push(metric);
            }
        }
    }
    let position = ev.position(args[0]);
    for metric in non_counters {
        ev.annotations.info(format!(
            "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}{position}"
        ));
    }
    Ok(Some(Value::Vector(out)))
}

/// `rate` (if `is_rate`) or `increase` of every window of one series. A counter reset adds
/// the value before it to the change; the additions of each window come from running totals
/// of them ([`sliding`]) rather than a pass over the window.
fn counter_rates(arg: &RangeArg, grid: &Grid, s: &ESeries, is_rate: bool) -> Option<ESeries> {
    let all = &s.points;
    let (steps, ranges): (Vec<usize>, Vec<Range<usize>>) = windows(all, arg, grid).unzip();
    // Sums of the reset additions between each window's own samples (`Some(None)`: no
    // reset, nothing to add; `None`: windows are read one by one).
    let resets = if all.windows(2).any(|p| p[1].v < p[0].v) {
        let between: Vec<Range<usize>> = ranges
            .iter()
            .map(|r| (r.start + 1).min(r.end)..r.end)
            .collect();
        let addition = |j: usize| {
            if j > 0 && all[j].v < all[j - 1].v {
                all[j - 1].v
            } else {
                0.0
            }
        };
        window_sums(addition, &between).map(Some)
    } else {
        Some(None)
    };
    let points: Vec<Point> = steps
        .into_iter()
        .zip(ranges)
        .enumerate()
        .filter_map(|(n, (i, range))| {
            let w = &all[range];
            let step = Step::new(arg, grid, i);
            let v = match &resets {
                _ if w.len() < 2 => return None,
                Some(resets) => {
                    let added = resets.as_ref().map_or(0.0, |r| r[n]);
                    let change = w[w.len() - 1].v - w[0].v + added;
                    extrapolate(w, &step, change, true, is_rate)
                }
                None => extrapolated_rate(w, &step, true, is_rate)?,
            };
            Some(Point { t: grid.ts(i), v })
        })
        .collect();
    (!points.is_empty()).then(|| ESeries {
        labels: s.labels.clone(),
        drop_name: true,
        points,
    })
}

/// `rate`, `increase` and `delta`: the change over the window, extrapolated towards its
/// boundaries (Prometheus' `extrapolatedRate`).
fn extrapolated_rate(w: &[Point], step: &Step, is_counter: bool, is_rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let mut result = w[w.len() - 1].v - w[0].v;
    if is_counter {
        let mut previous = 0.0;
        for p in w {
            if p.v < previous {
                result += previous;
            }
            previous = p.v;
        }
    }
    Some(extrapolate(w, step, result, is_counter, is_rate))
}

/// A window's change `result` (of two or more samples) extrapolated towards the window's
/// boundaries, per second if `is_rate`.
fn extrapolate(w: &[Point], step: &Step, result: f64, is_counter: bool, is_rate: bool) -> f64 {
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut duration_to_start = (first.t - step.range_start) as f64 / 1000.0;
    let mut duration_to_end = (step.range_end - last.t) as f64 / 1000.0;
    let sampled_interval = (last.t - first.t) as f64 / 1000.0;
    let average_between = sampled_interval / (w.len() - 1) as f64;
    let threshold = average_between * 1.1;
    if duration_to_start >= threshold {
        duration_to_start = average_between / 2.0;
    }
    if is_counter {
        // Counters cannot go below zero: stop extrapolating where the line hits zero.
        let mut duration_to_zero = duration_to_start;
        if result > 0.0 && first.v >= 0.0 {
            duration_to_zero = sampled_interval * (first.v / result);
        }
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    if duration_to_end >= threshold {
        duration_to_end = average_between / 2.0;
    }
    let mut factor = (sampled_interval + duration_to_start + duration_to_end) / sampled_interval;
    if is_rate {
        factor /= step.range as f64 / 1000.0;
    }
    result * factor
}

/// `irate` and `idelta`: from the last two samples (Prometheus' `instantValue`).
fn instant_value(w: &[Point], is_rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let last = w[w.len() - 1];
    let previous = w[w.len() - 2];
    let mut result = if is_rate && last.v < previous.v {
        last.v
    } else {
        last.v - previous.v
    };
    let interval = last.t - previous.t;
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares slope (per second) and intercept at `intercept_time`, with Kahan sums
/// (Prometheus' `linearRegression`).
pub(crate) fn linear_regression(w: &[Point], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = w[0].v;
    let mut const_y = true;
    for (i, p) in w.iter().enumerate() {
        if const_y && i > 0 && p.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (p.t - intercept_time) as f64 / 1e3;
        (sum_x, c_x) = kahan_sum_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_sum_inc(p.v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_sum_inc(x * p.v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_sum_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += c_x;
    sum_y += c_y;
    sum_xy += c_xy;
    sum_x2 += c_x2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}
