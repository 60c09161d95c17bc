//! Label functions: `label_replace`, `label_join`, `sort_by_label`, `sort_by_label_desc`.
//!
//! <https://prometheus.io/docs/prometheus/latest/querying/functions/#label_replace>

use std::cmp::Ordering;

use promql_parser::parser::Expr;
use regex::Regex;

use super::bad_arg;
use crate::Result;
use crate::eval::{Builder, ESeries, Evaluator, Grid, Value};
use crate::value::METRIC_NAME;

/// Evaluates the function if it belongs to this family.
pub(super) fn call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    grid: &Grid,
) -> Result<Option<Value>> {
    match name {
        "label_replace" => {
            let dst = ev.eval_string(args[1], grid)?;
            let replacement = ev.eval_string(args[2], grid)?;
            let src = ev.eval_string(args[3], grid)?;
            let pattern = ev.eval_string(args[4], grid)?;
            let regex = Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
                bad_arg(format!(
                    "invalid regular expression in label_replace(): {e}"
                ))
            })?;
            check_label_name(&dst, name)?;
            let series = ev.eval_vector(args[0], grid)?;
            let relabelled = series.into_iter().map(|mut s| {
                if let Some(captures) = regex.captures(s.labels.get_or_empty(&src)) {
                    let mut value = String::new();
                    captures.expand(&replacement, &mut value);
                    s.labels.set(&dst, &value);
                    if dst == METRIC_NAME {
                        s.drop_name = false;
                    }
                }
                s
            });
            Ok(Some(Value::Vector(rebuild(relabelled, grid)?)))
        }
        "label_join" => {
            let dst = ev.eval_string(args[1], grid)?;
            let separator = ev.eval_string(args[2], grid)?;
            let mut sources = Vec::new();
            for arg in &args[3..] {
                sources.push(ev.eval_string(arg, grid)?);
            }
            check_label_name(&dst, name)?;
            let series = ev.eval_vector(args[0], grid)?;
            let relabelled = series.into_iter().map(|mut s| {
                let value = sources
                    .iter()
                    .map(|src| s.labels.get_or_empty(src))
                    .collect::<Vec<_>>()
                    .join(&separator);
                s.labels.set(&dst, &value);
                if dst == METRIC_NAME {
                    s.drop_name = false;
                }
                s
            });
            Ok(Some(Value::Vector(rebuild(relabelled, grid)?)))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut names = Vec::new();
            for arg in &args[1..] {
                names.push(ev.eval_string(arg, grid)?);
            }
            let mut series = ev.eval_vector(args[0], grid)?;
            let desc = name == "sort_by_label_desc";
            series.sort_by(|a, b| {
                for label in &names {
                    let (x, y) = (a.labels.get_or_empty(label), b.labels.get_or_empty(label));
                    if x == y {
                        continue;
                    }
                    let order = natural_cmp(x, y);
                    return if desc { order.reverse() } else { order };
                }
                if desc {
                    b.labels.cmp(&a.labels)
                } else {
                    a.labels.cmp(&b.labels)
                }
            });
            Ok(Some(Value::Vector(series)))
        }
        _ => Ok(None),
    }
}

fn check_label_name(name: &str, function: &str) -> Result<()> {
    if name.is_empty() {
        return Err(bad_arg(format!(
            "invalid destination label name in {function}(): {name:?}"
        )));
    }
    Ok(())
}

/// Re-keys relabelled series, refusing two with the same labels at one step.
fn rebuild(series: impl Iterator<Item = ESeries>, grid: &Grid) -> Result<Vec<ESeries>> {
    let series: Vec<ESeries> = series.collect();
    let mut by_step = vec![Vec::new(); grid.len()];
    for (i, s) in series.iter().enumerate() {
        for p in &s.points {
            by_step[grid.index(p.t)].push((i, p.v));
        }
    }
    let mut out = Builder::default();
    for (step, samples) in by_step.into_iter().enumerate() {
        for (i, v) in samples {
            out.push(
                series[i].labels.clone(),
                series[i].drop_name,
                grid.ts(step),
                v,
            )?;
        }
    }
    Ok(out.finish())
}

/// Natural order: runs of digits compare as numbers, the rest as text.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    if a.is_empty() || b.is_empty() {
        return a.len().cmp(&b.len());
    }
    let chunk = |s: &str| {
        let digits = s.starts_with(|c: char| c.is_ascii_digit());
        let end = s
            .find(|c: char| c.is_ascii_digit() != digits)
            .unwrap_or(s.len());
        (digits, end)
    };
    let ((a_digits, a_end), (b_digits, b_end)) = (chunk(a), chunk(b));
    let (ca, cb) = (&a[..a_end], &b[..b_end]);
    let order = if a_digits && b_digits {
        let (ta, tb) = (ca.trim_start_matches('0'), cb.trim_start_matches('0'));
        ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
    } else {
        ca.cmp(cb)
    };
    order.then_with(|| natural_cmp(&a[a_end..], &b[b_end..]))
}
