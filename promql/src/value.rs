//! The values PromQL works with: label sets, samples, series, and query results.
//!
//! Times are milliseconds since the Unix epoch (Prometheus' resolution); values are `f64`.
//! A sample whose value has the bit pattern [`STALE_NAN_BITS`] is a staleness marker
//! (<https://prometheus.io/docs/prometheus/latest/querying/basics/#staleness>).

use std::fmt;

/// The metric name label.
pub const METRIC_NAME: &str = "__name__";

/// Prometheus' staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True if `v` is the staleness marker (not any NaN).
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A label set: pairs sorted by name, names unique, no empty values (an empty value means
/// the label is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// Builds a label set from pairs in any order; empty values are dropped and a later pair
    /// wins over an earlier one with the same name.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut labels = Self::default();
        for (name, value) in pairs {
            labels.set(&name, &value);
        }
        labels
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).ok().map(|i| self.0[i].1.as_str())
    }

    /// The value of `name`, or `""` when absent (Prometheus' view).
    pub fn get_or_empty(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.position(name) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => value.clone_into(&mut self.0[i].1),
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, (name.to_owned(), value.to_owned())),
        }
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.position(name) {
            self.0.remove(i);
        }
    }

    /// The metric name, if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// This label set without `__name__`.
    pub fn without_name(&self) -> Self {
        let mut labels = self.clone();
        labels.remove(METRIC_NAME);
        labels
    }

    /// Only the labels named in `names`.
    pub fn keep(&self, names: &[String]) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(n, _)| names.contains(n))
                .cloned()
                .collect(),
        )
    }

    /// All labels but those named in `names`.
    pub fn drop_names(&self, names: &[String]) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(n, _)| !names.contains(n))
                .cloned()
                .collect(),
        )
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no label.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }
}

impl fmt::Display for Labels {
    /// Prometheus' notation: `{__name__="up", job="api"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={value:?}")?;
        }
        f.write_str("}")
    }
}

/// One sample: time in milliseconds, value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// The value (may be the staleness marker in raw data).
    pub v: f64,
}

/// A series: its labels and its samples in ascending time order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Labels, `__name__` included.
    pub labels: Labels,
    /// Samples, ascending by time, at most one per timestamp.
    pub points: Vec<Point>,
}

/// The result of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    /// A scalar at a time (ms).
    Scalar {
        /// Evaluation time.
        t: i64,
        /// Value.
        v: f64,
    },
    /// A string at a time (ms).
    String {
        /// Evaluation time.
        t: i64,
        /// Value.
        v: String,
    },
    /// An instant vector: one point per series, at the evaluation time.
    Vector(Vec<Series>),
    /// A range vector (an instant query of a range selector or subquery) or the result of a
    /// range query.
    Matrix(Vec<Series>),
}

/// Formats a value the way Prometheus does in its JSON API (Go's
/// `strconv.FormatFloat(v, 'f', -1, 64)`): shortest round-trip digits, no exponent.
pub fn format_value(v: f64) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

/// Appends `v` to `out` as [`format_value`] formats it.
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let mut buffer = zmij::Buffer::new();
        let digits = buffer.format_finite(v);
        if digits.contains('e') {
            // Very large or small magnitudes, which zmij writes with an exponent.
            use std::fmt::Write;
            let _ = write!(out, "{v}");
        } else {
            out.push_str(digits.strip_suffix(".0").unwrap_or(digits));
        }
    }
}

/// Appends a time in milliseconds as seconds, as Prometheus writes sample times:
/// `1700000015`, `1700000015.5`.
pub fn write_time(out: &mut String, t_ms: i64) {
    use std::fmt::Write;
    if t_ms < 0 {
        out.push('-');
    }
    let t = t_ms.unsigned_abs();
    let (seconds, millis) = (t / 1000, t % 1000);
    let _ = write!(out, "{seconds}");
    if millis != 0 {
        let fraction = format!("{millis:03}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's `FormatFloat(v, 'f', -1, 64)` and Rust's `{}` agree: shortest round-trip digits,
    /// no exponent. The fast path gives the same text but where two shortest forms are
    /// equally near (`1658206780088562.25` as `…562.2` or `…562.3`).
    #[test]
    fn values_format_as_rust_and_go_do() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -2.0,
            0.1,
            0.3,
            1.5e-7,
            2.5e-5,
            123.456,
            1e15,
            1e16,
            1e17,
            1e21,
            1e22,
            1e300,
            5e-324,
            1.7976931348623157e308,
            52.667,
            4.56,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let random_bits = f64::from_bits(x);
            if random_bits.is_finite() {
                values.push(random_bits);
            }
            values.push((x % 1_000_000_000) as f64 / 1000.0);
            values.push((x % 100_000) as f64 * 1e-9);
        }
        for v in values {
            let (fast, std) = (format_value(v), format!("{v}"));
            if fast != std {
                assert_eq!(fast.len(), std.len(), "{v:e}");
                assert_eq!(fast.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{v:e}");
            }
        }
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn times_format_as_seconds() {
        for t in [
            0,
            1,
            10,
            999,
            1000,
            1500,
            -1,
            -1500,
            1_700_000_015_120,
            i64::MIN + 1,
        ] {
            let mut out = String::new();
            write_time(&mut out, t);
            if t.abs() < 1 << 53 {
                assert_eq!(out, format_value(t as f64 / 1000.0), "{t}");
            }
        }
        let mut out = String::new();
        write_time(&mut out, 1_700_000_015_120);
        assert_eq!(out, "1700000015.12");
    }
}
