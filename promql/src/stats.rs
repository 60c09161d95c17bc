//! Numeric helpers shared by aggregations and functions, matching Prometheus' arithmetic
//! (Kahan–Neumaier summation, quantiles, Go's `math.Min`/`math.Max` NaN rules).

/// One step of Kahan–Neumaier summation: `(sum + inc, compensation)`
/// (Prometheus' `kahanSumInc`).
pub(crate) fn kahan_sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    // Selects rather than branches: which operand is larger is a coin toss on real data.
    let sum_larger = sum.abs() >= inc.abs();
    let (larger, smaller) = if sum_larger { (sum, inc) } else { (inc, sum) };
    let c = if t.is_infinite() {
        0.0
    } else {
        c + ((larger - t) + smaller)
    };
    (t, c)
}

/// The `q` quantile of `values` with linear interpolation (Prometheus' `quantile`); sorts
/// `values`. NaN for no values or a NaN `q`, ∓Inf for `q` outside `[0, 1]`.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    sort_nan_first(values);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Ascending, NaN first (Prometheus' `vectorByValueHeap` order).
pub(crate) fn sort_nan_first(values: &mut [f64]) {
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).expect("not NaN"),
    });
}

/// Go's `math.Max`: NaN if either is NaN.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN if either is NaN.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Relative comparison with NaN equal to NaN (Prometheus' `almost.Equal`).
pub fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < epsilon * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}
