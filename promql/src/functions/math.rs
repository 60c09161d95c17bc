//! Element-wise math on instant vectors: `abs`, `ceil`, `floor`, `round`, `exp`, `ln`,
//! `log2`, `log10`, `sqrt`, `sgn`, trigonometry, `deg`, `rad`, `clamp`, `clamp_min`,
//! `clamp_max`. All drop the metric name.
//!
//! <https://prometheus.io/docs/prometheus/latest/querying/functions/#abs>

use promql_parser::parser::Expr;

use super::{map_values, scalar_arg};
use crate::Result;
use crate::eval::{Evaluator, Grid, Value};
use crate::stats::{go_max, go_min};

/// Evaluates the function if it belongs to this family.
pub(super) fn call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    grid: &Grid,
) -> Result<Option<Value>> {
    let unary: fn(f64) -> f64 = match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => f64::to_degrees,
        "rad" => f64::to_radians,
        "round" => {
            let to_nearest = scalar_arg(ev, args, 1, 1.0, grid)?;
            let series = ev.eval_vector(args[0], grid)?;
            return Ok(Some(Value::Vector(map_values(series, grid, |v, i| {
                // Half rounds up, as Prometheus does: floor(v / n + 0.5) * n.
                let inverse = 1.0 / to_nearest[i];
                Some((v * inverse + 0.5).floor() / inverse)
            }))));
        }
        "clamp" => {
            let min = ev.eval_scalar(args[1], grid)?;
            let max = ev.eval_scalar(args[2], grid)?;
            let series = ev.eval_vector(args[0], grid)?;
            return Ok(Some(Value::Vector(map_values(series, grid, |v, i| {
                (max[i] >= min[i] || min[i].is_nan() || max[i].is_nan())
                    .then(|| go_max(min[i], go_min(max[i], v)))
            }))));
        }
        "clamp_min" | "clamp_max" => {
            let bound = ev.eval_scalar(args[1], grid)?;
            let series = ev.eval_vector(args[0], grid)?;
            let is_min = name == "clamp_min";
            return Ok(Some(Value::Vector(map_values(series, grid, |v, i| {
                Some(if is_min {
                    go_max(bound[i], v)
                } else {
                    go_min(bound[i], v)
                })
            }))));
        }
        _ => return Ok(None),
    };
    let series = ev.eval_vector(args[0], grid)?;
    Ok(Some(Value::Vector(map_values(series, grid, |v, _| {
        Some(unary(v))
    }))))
}
