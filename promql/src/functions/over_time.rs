//! Aggregations over time: `<aggregation>_over_time`, `quantile_over_time`,
//! `mad_over_time`, `ts_of_*_over_time`, `absent_over_time`, `present_over_time` and
//! `double_exponential_smoothing`.
//!
//! <https://prometheus.io/docs/prometheus/latest/querying/functions/#aggregation_over_time>

use std::ops::Range;

use promql_parser::parser::Expr;

use super::sliding::{Extremes, window_sums, windows};
use super::{
    absent_labels, constant_where, map_series_parallel, over_windows, over_windows_parallel,
};
use crate::eval::{ESeries, Evaluator, Grid, RangeArg, Value, window};
use crate::stats::{kahan_sum_inc, quantile};
use crate::value::{Labels, Point, format_value};
use crate::{BadQuerySnafu, Result};

/// Evaluates the function if it belongs to this family.
pub(super) fn call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    grid: &Grid,
) -> Result<Option<Value>> {
    match name {
        "avg_over_time" | "sum_over_time" | "count_over_time" | "min_over_time"
        | "max_over_time" => {
            let arg = ev.range_arg(args[0], grid)?;
            let out = map_series_parallel(&arg, grid, ev.settings.deadline, |s| {
                Ok(running_over_windows(&arg, grid, s, name))
            })?;
            Ok(Some(Value::Vector(out)))
        }
        "stddev_over_time"
        | "stdvar_over_time"
        | "last_over_time"
        | "first_over_time"
        | "present_over_time"
        | "mad_over_time"
        | "ts_of_max_over_time"
        | "ts_of_min_over_time"
        | "ts_of_last_over_time"
        | "ts_of_first_over_time" => {
            let arg = ev.range_arg(args[0], grid)?;
            let keep_name = matches!(name, "last_over_time" | "first_over_time");
            let out =
                over_windows_parallel(&arg, grid, keep_name, ev.settings.deadline, |w, _, _| {
                    Some(aggregate(name, w))
                })?;
            Ok(Some(Value::Vector(out)))
        }
        "quantile_over_time" => {
            let q = ev.eval_scalar(args[0], grid)?;
            let arg = ev.range_arg(args[1], grid)?;
            let mut warned = None;
            let mut values = Vec::new();
            let out = over_windows(&arg, grid, false, ev.settings.deadline, |w, step, _| {
                let q = q[step.index];
                if !(0.0..=1.0).contains(&q) {
                    warned = Some(q);
                }
                values.clear();
                values.extend(w.iter().map(|p| p.v));
                Ok(Some(quantile(q, &mut values)))
            })?;
            if let Some(q) = warned {
                let position = ev.position(args[0]);
                ev.annotations.warn(format!(
                    "quantile value should be between 0 and 1, got {}{position}",
                    format_value(q)
                ));
            }
            Ok(Some(Value::Vector(out)))
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let arg = ev.range_arg(args[0], grid)?;
            let sf = ev.eval_scalar(args[1], grid)?;
            let tf = ev.eval_scalar(args[2], grid)?;
            let out = over_windows(&arg, grid, false, ev.settings.deadline, |w, step, _| {
                let (sf, tf) = (sf[step.index], tf[step.index]);
                if !(sf > 0.0 && sf < 1.0) {
                    return BadQuerySnafu {
                        message: format!(
                            "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                        ),
                    }
                    .fail();
                }
                if !(tf > 0.0 && tf < 1.0) {
                    return BadQuerySnafu {
                        message: format!(
                            "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                        ),
                    }
                    .fail();
                }
                Ok(smooth(w, sf, tf))
            })?;
            Ok(Some(Value::Vector(out)))
        }
        "absent_over_time" => {
            let arg = ev.range_arg(args[0], grid)?;
            let mut present = vec![false; grid.len()];
            for s in arg.series.iter() {
                for (i, p) in present.iter_mut().enumerate() {
                    if !*p && !window(&s.points, arg.window_end(grid.ts(i)), arg.range).is_empty() {
                        *p = true;
                    }
                }
            }
            let labels = arg
                .selector
                .as_ref()
                .map(absent_labels)
                .unwrap_or_else(Labels::default);
            Ok(Some(Value::Vector(constant_where(labels, grid, |i| {
                !present[i]
            }))))
        }
        _ => Ok(None),
    }
}

/// One of the simple aggregations over a non-empty window.
fn aggregate(name: &str, w: &[Point]) -> f64 {
    match name {
        "stddev_over_time" => variance(w).sqrt(),
        "stdvar_over_time" => variance(w),
        "last_over_time" => w[w.len() - 1].v,
        "first_over_time" => w[0].v,
        "present_over_time" => 1.0,
        "mad_over_time" if w.iter().any(|p| p.v.is_nan()) => f64::NAN,
        "mad_over_time" => {
            let mut values: Vec<f64> = w.iter().map(|p| p.v).collect();
            let median = quantile(0.5, &mut values);
            let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
            quantile(0.5, &mut deviations)
        }
        "ts_of_last_over_time" => w[w.len() - 1].t as f64 / 1000.0,
        "ts_of_first_over_time" => w[0].t as f64 / 1000.0,
        "ts_of_max_over_time" => {
            let mut best = w[0];
            for p in &w[1..] {
                if p.v >= best.v || best.v.is_nan() {
                    best = *p;
                }
            }
            best.t as f64 / 1000.0
        }
        // ts_of_min_over_time
        _ => {
            let mut best = w[0];
            for p in &w[1..] {
                if p.v <= best.v || best.v.is_nan() {
                    best = *p;
                }
            }
            best.t as f64 / 1000.0
        }
    }
}

/// `avg`, `sum`, `count`, `max` or `min` `_over_time` of every window of one series, from
/// running totals and a monotonic queue ([`sliding`]) rather than window by window.
fn running_over_windows(arg: &RangeArg, grid: &Grid, s: &ESeries, name: &str) -> Option<ESeries> {
    let all = &s.points;
    let (steps, ranges): (Vec<usize>, Vec<Range<usize>>) = windows(all, arg, grid).unzip();
    let sums = matches!(name, "avg_over_time" | "sum_over_time")
        .then(|| window_sums(|k| all[k].v, &ranges))
        .flatten();
    let mut extremes = Extremes::default();
    let points: Vec<Point> = steps
        .into_iter()
        .zip(ranges)
        .enumerate()
        .map(|(n, (i, range))| {
            let w = &all[range.clone()];
            let v = match (name, &sums) {
                ("avg_over_time", Some(sums)) => sums[n] / w.len() as f64,
                ("avg_over_time", None) => avg(w),
                ("sum_over_time", Some(sums)) => sums[n],
                ("sum_over_time", None) => sum(w),
                ("count_over_time", _) => w.len() as f64,
                ("max_over_time", _) => extremes.of(all, range, true),
                _ => extremes.of(all, range, false),
            };
            Point { t: grid.ts(i), v }
        })
        .collect();
    (!points.is_empty()).then(|| ESeries {
        labels: s.labels.clone(),
        drop_name: true,
        points,
    })
}

/// Sum with Kahan summation (Prometheus' `funcSumOverTime`).
fn sum(w: &[Point]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for p in w {
        (sum, c) = kahan_sum_inc(p.v, sum, c);
    }
    if sum.is_infinite() { sum } else { sum + c }
}

/// Mean with Kahan summation, switching to an incremental mean if the sum would overflow
/// (Prometheus' `funcAvgOverTime`).
fn avg(w: &[Point]) -> f64 {
    let (mut sum, mut count) = (w[0].v, 1.0);
    let (mut mean, mut c) = (0.0, 0.0);
    let mut incremental = false;
    for (i, p) in w.iter().enumerate().skip(1) {
        count = (i + 1) as f64;
        if !incremental {
            let (new_sum, new_c) = kahan_sum_inc(p.v, sum, c);
            if !new_sum.is_infinite() {
                sum = new_sum;
                c = new_c;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_sum_inc(p.v / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

/// Population variance with Kahan-compensated Welford updates.
fn variance(w: &[Point]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in w {
        count += 1.0;
        let delta = p.v - (mean + c_mean);
        (mean, c_mean) = kahan_sum_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_sum_inc(delta * (p.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Holt's linear (double exponential) smoothing; the last smoothed value.
fn smooth(w: &[Point], sf: f64, tf: f64) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, w[0].v);
    let mut b = w[1].v - w[0].v;
    for (i, p) in w.iter().enumerate().skip(1) {
        let x = sf * p.v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}
