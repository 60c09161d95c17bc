//! Aggregation operators with `by` and `without`.
//! <https://prometheus.io/docs/prometheus/latest/querying/operators/#aggregation-operators>

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use crate::eval::{Builder, ESeries, Evaluator, Grid, Value, by_step};
use crate::stats::{kahan_sum_inc, quantile};
use crate::value::{Labels, METRIC_NAME, format_value};
use crate::{BadQuerySnafu, Error, Result};

/// The running state of one group at one step.
#[derive(Debug, Default, Clone)]
struct Acc {
    count: f64,
    value: f64,
    kahan: f64,
    mean: f64,
    incremental_mean: bool,
    drop_name: bool,
}

/// Evaluates an aggregation over `grid`.
pub(crate) fn eval(ev: &mut Evaluator<'_>, agg: &AggregateExpr, grid: &Grid) -> Result<Value> {
    let op = agg.op.to_string();
    let input = ev.eval_vector(&agg.expr, grid)?;
    let group_of = |labels: &Labels| -> Labels {
        match &agg.modifier {
            Some(LabelModifier::Include(names)) => labels.keep(&names.labels),
            Some(LabelModifier::Exclude(names)) => {
                let mut names = names.labels.clone();
                names.push(METRIC_NAME.into());
                labels.drop_names(&names)
            }
            None => Labels::default(),
        }
    };
    // Group ids per input series, groups in order of first appearance.
    let mut group_ids: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<Labels> = Vec::new();
    let series_group: Vec<usize> = input
        .iter()
        .map(|s| {
            let g = group_of(&s.labels);
            *group_ids.entry(g.clone()).or_insert_with(|| {
                groups.push(g);
                groups.len() - 1
            })
        })
        .collect();
    let steps = by_step(&input, grid);
    match op.as_str() {
        "topk" | "bottomk" | "limitk" => {
            let param = agg.param.as_ref().ok_or_else(|| missing(&op))?;
            let k = ev.eval_scalar(param, grid)?;
            select_k(&op, &input, &series_group, groups.len(), &steps, &k, grid)
        }
        "quantile" => {
            let param = agg.param.as_ref().ok_or_else(|| missing(&op))?;
            let q = ev.eval_scalar(param, grid)?;
            let mut out = Builder::default();
            let mut values: Vec<Vec<f64>> = vec![Vec::new(); groups.len()];
            for (step, samples) in steps.iter().enumerate() {
                let q = q[step];
                if samples.is_empty() {
                    continue;
                }
                if !(0.0..=1.0).contains(&q) {
                    let position = ev.position(param);
                    ev.annotations.warn(format!(
                        "quantile value should be between 0 and 1, got {}{position}",
                        format_value(q)
                    ));
                }
                for v in &mut values {
                    v.clear();
                }
                for &(i, v) in samples {
                    values[series_group[i]].push(v);
                }
                for (g, v) in values.iter_mut().enumerate() {
                    if !v.is_empty() {
                        out.push(groups[g].clone(), false, grid.ts(step), quantile(q, v))?;
                    }
                }
            }
            Ok(Value::Vector(out.finish()))
        }
        "count_values" => {
            let param = agg.param.as_ref().ok_or_else(|| missing(&op))?;
            let label = ev.eval_string(param, grid)?;
            if label.is_empty() {
                return BadQuerySnafu {
                    message: format!("invalid label name {label:?}"),
                }
                .fail();
            }
            let mut out = Builder::default();
            for (step, samples) in steps.iter().enumerate() {
                let mut counts: Vec<(Labels, f64)> = Vec::new();
                let mut index: HashMap<Labels, usize> = HashMap::new();
                for &(i, v) in samples {
                    let mut labels = groups[series_group[i]].clone();
                    labels.set(&label, &format_value(v));
                    match index.get(&labels) {
                        Some(&j) => counts[j].1 += 1.0,
                        None => {
                            index.insert(labels.clone(), counts.len());
                            counts.push((labels, 1.0));
                        }
                    }
                }
                for (labels, n) in counts {
                    out.push(labels, false, grid.ts(step), n)?;
                }
            }
            Ok(Value::Vector(out.finish()))
        }
        "limit_ratio" => {
            let param = agg.param.as_ref().ok_or_else(|| missing(&op))?;
            let ratios = ev.eval_scalar(param, grid)?;
            let mut out = Builder::default();
            let offsets: Vec<f64> = input.iter().map(|s| ratio_offset(&s.labels)).collect();
            for (step, samples) in steps.iter().enumerate() {
                let mut ratio = ratios[step];
                if ratio.is_nan() {
                    return Err(Error::Execution {
                        message: "Ratio value is NaN".into(),
                    });
                }
                if !(-1.0..=1.0).contains(&ratio) {
                    let capped = ratio.clamp(-1.0, 1.0);
                    let position = ev.position(param);
                    ev.annotations.warn(format!(
                        "ratio value should be between -1 and 1, got {}, capping to {}{position}",
                        format_value(ratio),
                        format_value(capped)
                    ));
                    ratio = capped;
                }
                for &(i, v) in samples {
                    let offset = offsets[i];
                    if (ratio >= 0.0 && offset < ratio) || (ratio < 0.0 && offset >= 1.0 + ratio) {
                        out.push(
                            input[i].labels.clone(),
                            input[i].drop_name,
                            grid.ts(step),
                            v,
                        )?;
                    }
                }
            }
            Ok(Value::Vector(out.finish()))
        }
        "sum" | "avg" | "count" | "min" | "max" | "group" | "stddev" | "stdvar" => {
            let mut out = Builder::default();
            let mut accs: Vec<Option<Acc>> = vec![None; groups.len()];
            for (step, samples) in steps.iter().enumerate() {
                accs.iter_mut().for_each(|a| *a = None);
                for &(i, v) in samples {
                    let acc = &mut accs[series_group[i]];
                    let first = acc.is_none();
                    let acc = acc.get_or_insert_with(Acc::default);
                    acc.drop_name |= input[i].drop_name;
                    add(&op, acc, v, first);
                }
                for (g, acc) in accs.iter().enumerate() {
                    if let Some(acc) = acc {
                        out.push(
                            groups[g].clone(),
                            acc.drop_name,
                            grid.ts(step),
                            result(&op, acc),
                        )?;
                    }
                }
            }
            Ok(Value::Vector(out.finish()))
        }
        other => BadQuerySnafu {
            message: format!("unknown aggregation {other:?}"),
        }
        .fail(),
    }
}

fn missing(op: &str) -> Error {
    Error::BadQuery {
        message: format!("{op} needs a parameter"),
    }
}

/// Adds one value to a group (Prometheus' `aggregation` loop).
fn add(op: &str, acc: &mut Acc, v: f64, first: bool) {
    match op {
        "sum" => {
            (acc.value, acc.kahan) = kahan_sum_inc(v, acc.value, acc.kahan);
        }
        "avg" => {
            acc.count += 1.0;
            if first {
                acc.value = v;
                return;
            }
            if !acc.incremental_mean {
                let (sum, c) = kahan_sum_inc(v, acc.value, acc.kahan);
                if !sum.is_infinite() {
                    acc.value = sum;
                    acc.kahan = c;
                    return;
                }
                acc.incremental_mean = true;
                acc.mean = acc.value / (acc.count - 1.0);
                acc.kahan /= acc.count - 1.0;
            }
            let q = (acc.count - 1.0) / acc.count;
            (acc.mean, acc.kahan) = kahan_sum_inc(v / acc.count, q * acc.mean, q * acc.kahan);
        }
        "count" | "group" => acc.count += 1.0,
        "min" => {
            if first || acc.value > v || acc.value.is_nan() {
                acc.value = v;
            }
        }
        "max" => {
            if first || acc.value < v || acc.value.is_nan() {
                acc.value = v;
            }
        }
        // stddev, stdvar
        _ => {
            acc.count += 1.0;
            let delta = v - (acc.mean + acc.kahan);
            (acc.mean, acc.kahan) = kahan_sum_inc(delta / acc.count, acc.mean, acc.kahan);
            acc.value += delta * (v - (acc.mean + acc.kahan));
        }
    }
}

fn result(op: &str, acc: &Acc) -> f64 {
    match op {
        "sum" => {
            if acc.value.is_infinite() {
                acc.value
            } else {
                acc.value + acc.kahan
            }
        }
        "avg" if acc.incremental_mean => acc.mean + acc.kahan,
        "avg" => acc.value / acc.count + acc.kahan / acc.count,
        "count" => acc.count,
        "group" => 1.0,
        "min" | "max" => acc.value,
        "stdvar" => acc.value / acc.count,
        _ => (acc.value / acc.count).sqrt(),
    }
}

/// `topk`, `bottomk` and `limitk`: up to `k` input samples per group and step, with their
/// own labels. Instant results come sorted (topk descending, bottomk ascending).
fn select_k(
    op: &str,
    input: &[ESeries],
    series_group: &[usize],
    groups: usize,
    steps: &[Vec<(usize, f64)>],
    k: &[f64],
    grid: &Grid,
) -> Result<Value> {
    let mut out = Builder::default();
    let mut chosen: Vec<Vec<(usize, f64)>> = vec![Vec::new(); groups];
    for (step, samples) in steps.iter().enumerate() {
        let k = k[step];
        if k.is_nan() {
            return Err(Error::Execution {
                message: "Parameter value is NaN".into(),
            });
        }
        if samples.is_empty() {
            continue;
        }
        if k < 1.0 {
            continue;
        }
        let k = if k >= samples.len() as f64 {
            samples.len()
        } else {
            k as usize
        };
        for c in &mut chosen {
            c.clear();
        }
        for &(i, v) in samples {
            chosen[series_group[i]].push((i, v));
        }
        for group in &mut chosen {
            // Stable sorts, so ties keep input order.
            match op {
                "topk" => group.sort_by(|a, b| order_desc(a.1, b.1)),
                "bottomk" => group.sort_by(|a, b| order_asc_nan_last(a.1, b.1)),
                _ => {}
            }
            group.truncate(k);
            for &(i, v) in group.iter() {
                out.push(
                    input[i].labels.clone(),
                    input[i].drop_name,
                    grid.ts(step),
                    v,
                )?;
            }
        }
    }
    Ok(Value::Vector(out.finish()))
}

fn order_desc(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => b.partial_cmp(&a).expect("not NaN"),
    }
}

fn order_asc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.partial_cmp(&b).expect("not NaN"),
    }
}

/// Where a series falls in `[0, 1)` for `limit_ratio`: a stable hash of its labels (FNV-1a;
/// Prometheus uses xxHash, so the selected series differ, the proportions do not).
fn ratio_offset(labels: &Labels) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, value) in labels.iter() {
        for byte in name
            .bytes()
            .chain([0xff])
            .chain(value.bytes())
            .chain([0xff])
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash as f64 / u64::MAX as f64
}
