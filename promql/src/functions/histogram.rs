//! `histogram_quantile` over classic histograms (`le` buckets), mirroring `BucketQuantile`
//! in <https://github.com/prometheus/prometheus/blob/main/promql/quantile.go>. The native
//! histogram functions (`histogram_count`, `histogram_sum`, …) ignore float samples, so over
//! exawatch's float-only data they return nothing.
//!
//! <https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile>

use std::collections::HashMap;

use promql_parser::parser::Expr;

use crate::eval::ESeries;
use crate::eval::{Builder, Evaluator, Grid, Value, by_step};
use crate::stats::almost_equal;
use crate::value::{Labels, format_value};
use crate::{BadQuerySnafu, Result};

/// Counts this close (relatively) are treated as equal when checking monotonicity.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// Evaluates the function if it belongs to this family.
pub(super) fn call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    grid: &Grid,
) -> Result<Option<Value>> {
    match name {
        "histogram_quantile" => {
            let q = ev.eval_scalar(args[0], grid)?;
            let series = ev.eval_vector(args[1], grid)?;
            let positions = (ev.position(args[0]), ev.position(args[1]));
            Ok(Some(Value::Vector(quantiles(
                ev,
                &series,
                &[(q, None)],
                &positions,
                grid,
            )?)))
        }
        "histogram_quantiles" => {
            let series = ev.eval_vector(args[0], grid)?;
            let label = ev.eval_string(args[1], grid)?;
            if label.is_empty() || series.iter().any(|s| s.labels.get(&label).is_some()) {
                return BadQuerySnafu {
                    message: format!(
                        "histogram_quantiles: label {label:?} is empty or already present in the input"
                    ),
                }
                .fail();
            }
            let positions = (ev.position(args[2]), ev.position(args[0]));
            let mut qs = Vec::new();
            for arg in &args[2..] {
                let q = ev.eval_scalar(arg, grid)?;
                let name = quantile_label(q[0]);
                qs.push((q, Some((label.clone(), name))));
            }
            Ok(Some(Value::Vector(quantiles(
                ev, &series, &qs, &positions, grid,
            )?)))
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            ev.eval_vector(args[0], grid)?;
            Ok(Some(Value::Vector(Vec::new())))
        }
        "histogram_fraction" => {
            ev.eval_vector(args[2], grid)?;
            Ok(Some(Value::Vector(Vec::new())))
        }
        _ => Ok(None),
    }
}

/// A quantile as `histogram_quantiles` labels it: shortest form, with a `.0` on integers.
fn quantile_label(q: f64) -> String {
    let text = format_value(q);
    if text.contains(['.', 'e', 'I', 'N']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// A quantile per step, and the label `(name, value)` its outputs get, if any.
type QuantileSpec = (Vec<f64>, Option<(String, String)>);

/// Quantiles of the classic histograms in `series` (grouped by labels without `le`), one
/// output per quantile given; a quantile may add a label `(name, value)` to its outputs.
fn quantiles(
    ev: &mut Evaluator<'_>,
    series: &[ESeries],
    qs: &[QuantileSpec],
    (q_position, vector_position): &(String, String),
    grid: &Grid,
) -> Result<Vec<ESeries>> {
    let steps = by_step(series, grid);
    // Bucket upper bounds and group of each series, once.
    let mut group_ids: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<Labels> = Vec::new();
    let mut buckets_of: Vec<Option<(f64, usize)>> = Vec::with_capacity(series.len());
    for s in series {
        let le = s.labels.get_or_empty("le");
        let Ok(upper) = parse_go_float(le) else {
            ev.annotations.warn(format!(
                "bucket label \"le\" is missing or has a malformed value of {le:?} for metric name {:?}{vector_position}",
                s.labels.get_or_empty("__name__")
            ));
            buckets_of.push(None);
            continue;
        };
        let mut key = s.labels.clone();
        key.remove("le");
        let next = groups.len();
        let g = *group_ids.entry(key.clone()).or_insert_with(|| {
            groups.push(key);
            next
        });
        buckets_of.push(Some((upper, g)));
    }
    for (q, _) in qs {
        if let Some(bad) = q.iter().find(|q| !(0.0..=1.0).contains(*q)) {
            ev.annotations.warn(format!(
                "quantile value should be between 0 and 1, got {}{q_position}",
                format_value(*bad)
            ));
        }
    }
    let mut out = Builder::default();
    let mut buckets: Vec<Vec<(f64, f64)>> = vec![Vec::new(); groups.len()];
    for (step, samples) in steps.iter().enumerate() {
        if samples.is_empty() {
            continue;
        }
        for (q, label) in qs {
            for b in &mut buckets {
                b.clear();
            }
            for &(i, v) in samples {
                if let Some((upper, g)) = buckets_of[i] {
                    buckets[g].push((upper, v));
                }
            }
            for (g, b) in buckets.iter_mut().enumerate() {
                if b.is_empty() {
                    continue;
                }
                let (value, forced) = bucket_quantile(q[step], b);
                if forced {
                    ev.annotations.info(format!(
                        "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}{vector_position}",
                        groups[g].get_or_empty("__name__")
                    ));
                }
                let mut labels = groups[g].clone();
                if let Some((name, value)) = label {
                    labels.set(name, value);
                }
                out.push(labels, true, grid.ts(step), value)?;
            }
        }
    }
    Ok(out.finish())
}

/// Parses a float the way Go's `strconv.ParseFloat` accepts it (close enough for `le`).
fn parse_go_float(s: &str) -> Result<f64, std::num::ParseFloatError> {
    s.trim_start_matches('+').parse::<f64>().or_else(|e| {
        if s.is_empty() {
            Err(e)
        } else {
            s.parse::<f64>()
        }
    })
}

/// The `q` quantile of cumulative buckets `(upper bound, count)`, and whether the counts had
/// to be made monotonic.
fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return (f64::NAN, false);
    }
    // Coalesce buckets with the same upper bound.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(upper, count) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == upper => last.1 += count,
            _ => merged.push((upper, count)),
        }
    }
    let forced = ensure_monotonic(&mut merged);
    if merged.len() < 2 {
        return (f64::NAN, forced);
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * observations;
    let b = merged[..merged.len() - 1]
        .iter()
        .position(|b| b.1 >= rank)
        .unwrap_or(merged.len() - 1);
    if b == merged.len() - 1 {
        return (merged[merged.len() - 2].0, forced);
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return (merged[0].0, forced);
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

/// Removes decreases between buckets and tiny float noise; true if a real decrease was
/// removed.
fn ensure_monotonic(buckets: &mut [(f64, f64)]) -> bool {
    let mut forced = false;
    let mut previous = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let current = b.1;
        if current == previous {
            continue;
        }
        if almost_equal(previous, current, SMALL_DELTA_TOLERANCE) {
            b.1 = previous;
            continue;
        }
        if current < previous {
            b.1 = previous;
            forced = true;
            continue;
        }
        previous = current;
    }
    forced
}
