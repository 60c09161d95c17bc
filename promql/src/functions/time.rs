//! Calendar functions in UTC: `minute`, `hour`, `day_of_week`, `day_of_month`,
//! `day_of_year`, `days_in_month`, `month`, `year`. Each takes an instant vector of Unix
//! times in seconds (default `vector(time())`).
//!
//! <https://prometheus.io/docs/prometheus/latest/querying/functions/#day_of_month>

use exawatch_protocol::time::{civil_from_days, days_from_civil};
use promql_parser::parser::Expr;

use super::map_values;
use crate::Result;
use crate::eval::{ESeries, Evaluator, Grid, Value};
use crate::value::{Labels, Point};

/// Evaluates the function if it belongs to this family.
pub(super) fn call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    grid: &Grid,
) -> Result<Option<Value>> {
    if !matches!(
        name,
        "minute"
            | "hour"
            | "day_of_week"
            | "day_of_month"
            | "day_of_year"
            | "days_in_month"
            | "month"
            | "year"
    ) {
        return Ok(None);
    }
    let series = match args.first() {
        Some(arg) => ev.eval_vector(arg, grid)?,
        None => vec![ESeries {
            labels: Labels::default(),
            drop_name: false,
            points: (0..grid.len())
                .map(|i| Point {
                    t: grid.ts(i),
                    v: grid.ts(i) as f64 / 1000.0,
                })
                .collect(),
        }],
    };
    Ok(Some(Value::Vector(map_values(series, grid, |v, _| {
        if v.is_nan() || v.is_infinite() {
            return Some(v);
        }
        let secs = v as i64;
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        Some(match name {
            "minute" => ((of_day / 60) % 60) as f64,
            "hour" => (of_day / 3600) as f64,
            "day_of_week" => (days + 4).rem_euclid(7) as f64,
            "day_of_month" => d as f64,
            "day_of_year" => (days - days_from_civil(y, 1, 1) + 1) as f64,
            "days_in_month" => days_in_month(y, m) as f64,
            "month" => m as f64,
            _ => y as f64,
        })
    }))))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}
