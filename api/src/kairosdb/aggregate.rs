//! KairosDB's aggregators over the time-ordered points of one result group, as KairosDB 1.2/1.3
//! defines them (`org.kairosdb.core.aggregator`):
//!
//! - range aggregators (`avg`, `min`, `max`, `sum`, `count`, `first`, `last`, `dev`,
//!   `percentile`) cut the points into [`Ranges`] of `sampling` from the query's start (or the
//!   aligned start) and return one point per range that holds data; its time is the first
//!   point's (the last point's for `last`), the range start with `align_start_time`, the range
//!   end with `align_end_time`;
//! - `min`/`max` propagate NaN like Java's `Math.min`/`Math.max`; `dev` is the sample standard
//!   deviation by KairosDB's running formula, 0 for a single point; `percentile` interpolates
//!   at `p·(n+1)` over the sorted values (KairosDB's reservoir holds every value up to 1028
//!   per range; exawatch always uses them all);
//! - `rate` is `(v₁ − v₀)/(t₁ − t₀)` × the length of its `sampling` unit, at `t₁`, and refuses
//!   two points with the same time in one group (precede it with a range aggregator); `diff`
//!   is `v₁ − v₀` at `t₁`;
//! - text groups only go through `count` and `first`; other aggregators leave them as they are.

use chrono_tz::Tz;

use super::time::{Ranges, Span, span_ms};

/// The values of one result group, ordered by time (milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Values {
    Numbers(Vec<(i64, f64)>),
    Texts(Vec<(i64, String)>),
}

impl Values {
    /// Keeps the first `n` points, or the last `n` when `from_end`.
    pub(crate) fn limit(&mut self, n: usize, from_end: bool) {
        fn keep<T>(v: &mut Vec<T>, n: usize, from_end: bool) {
            if v.len() > n {
                if from_end {
                    v.drain(..v.len() - n);
                } else {
                    v.truncate(n);
                }
            }
        }
        match self {
            Self::Numbers(v) => keep(v, n, from_end),
            Self::Texts(v) => keep(v, n, from_end),
        }
    }

    pub(crate) fn reverse(&mut self) {
        match self {
            Self::Numbers(v) => v.reverse(),
            Self::Texts(v) => v.reverse(),
        }
    }
}

/// Which time a range aggregator gives its point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// The time of the first point in the range (of the last one for `last`).
    Point,
    /// `align_start_time`: the range's start.
    Start,
    /// `align_end_time`: the range's end.
    End,
}

/// What a range aggregator computes over the points of one range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RangeKind {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    First,
    Last,
    Dev,
    Percentile(f64),
}

/// One aggregator of a metric query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Aggregator {
    /// A range aggregator.
    Range {
        kind: RangeKind,
        sampling: Span,
        align_sampling: bool,
        align: Align,
        /// The query's `time_zone`, or the aggregator's own.
        tz: Tz,
    },
    /// `rate`, per `sampling` (1 millisecond by default).
    Rate { sampling: Span, tz: Tz },
    /// `diff`.
    Diff,
}

/// An aggregator that cannot compute its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AggregateError(pub(crate) String);

impl Aggregator {
    /// Applies the aggregator to one group's values; `start` is the query's start (ms).
    pub(crate) fn apply(&self, values: Values, start: i64) -> Result<Values, AggregateError> {
        match (self, values) {
            (
                Self::Range {
                    kind,
                    sampling,
                    align_sampling,
                    align,
                    tz,
                },
                values,
            ) => {
                let ranges = Ranges::new(start, *sampling, *tz, *align_sampling);
                Ok(match (kind, values) {
                    (_, Values::Numbers(points)) => {
                        Values::Numbers(by_range(&points, &ranges, *align, *kind, reduce))
                    }
                    (RangeKind::Count, Values::Texts(points)) => {
                        Values::Numbers(by_range(&points, &ranges, *align, *kind, |_, range| {
                            range.len() as f64
                        }))
                    }
                    (RangeKind::First, Values::Texts(points)) => {
                        Values::Texts(by_range(&points, &ranges, *align, *kind, |_, range| {
                            range[0].1.clone()
                        }))
                    }
                    (_, texts) => texts,
                })
            }
            (Self::Rate { sampling, tz }, Values::Numbers(points)) => {
                let mut out = Vec::with_capacity(points.len().saturating_sub(1));
                for pair in points.windows(2) {
                    let ((t0, v0), (t1, v1)) = (pair[0], pair[1]);
                    if t0 == t1 {
                        return Err(AggregateError(
                            "The rate aggregator cannot compute rate for data points with the \
                             same time stamp. You must precede rate with another aggregator."
                                .into(),
                        ));
                    }
                    out.push((
                        t1,
                        (v1 - v0) / (t1 - t0) as f64 * span_ms(*sampling, t0, *tz),
                    ));
                }
                Ok(Values::Numbers(out))
            }
            (Self::Diff, Values::Numbers(points)) => Ok(Values::Numbers(
                points
                    .windows(2)
                    .map(|pair| (pair[1].0, pair[1].1 - pair[0].1))
                    .collect(),
            )),
            (Self::Rate { .. } | Self::Diff, texts) => Ok(texts),
        }
    }
}

/// Runs `f` over each non-empty range of `points`, giving each result its time.
fn by_range<T, R>(
    points: &[(i64, T)],
    ranges: &Ranges,
    align: Align,
    kind: RangeKind,
    f: impl Fn(RangeKind, &[(i64, T)]) -> R,
) -> Vec<(i64, R)> {
    let mut out = Vec::new();
    let mut begin = 0;
    while begin < points.len() {
        let k = ranges.index(points[begin].0);
        let (range_start, range_end) = ranges.bounds(k);
        let end = begin + points[begin..].partition_point(|(t, _)| *t < range_end);
        // A point is always in its own range; guard against a calendar oddity looping.
        let end = end.max(begin + 1);
        let range = &points[begin..end];
        let time = match (align, kind) {
            (Align::Start, _) => range_start,
            (Align::End, _) => range_end,
            (Align::Point, RangeKind::Last) => range[range.len() - 1].0,
            (Align::Point, _) => range[0].0,
        };
        out.push((time, f(kind, range)));
        begin = end;
    }
    out
}

/// One range's numbers reduced as KairosDB does.
fn reduce(kind: RangeKind, range: &[(i64, f64)]) -> f64 {
    let values = range.iter().map(|(_, v)| *v);
    match kind {
        RangeKind::Avg => values.sum::<f64>() / range.len() as f64,
        RangeKind::Sum => values.sum(),
        RangeKind::Min => values.fold(f64::MAX, java_min),
        RangeKind::Max => values.fold(-f64::MAX, java_max),
        RangeKind::Count => range.len() as f64,
        RangeKind::First => range[0].1,
        RangeKind::Last => range[range.len() - 1].1,
        RangeKind::Dev => dev(values),
        RangeKind::Percentile(p) => {
            let mut sorted: Vec<f64> = values.collect();
            sorted.sort_unstable_by(f64::total_cmp);
            percentile(&sorted, p)
        }
    }
}

/// Java's `Math.min`: NaN if either is NaN.
fn java_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Java's `Math.max`: NaN if either is NaN.
fn java_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// KairosDB's `StdAggregator`: Welford-style running mean and mean of squares, the sample
/// standard deviation from them, 0 when that is NaN (one point).
fn dev(values: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut average, mut pwr_sum_avg, mut std_dev) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for v in values {
        count += 1.0;
        average += (v - average) / count;
        pwr_sum_avg += (v * v - pwr_sum_avg) / count;
        std_dev = ((pwr_sum_avg * count - count * average * average) / (count - 1.0)).sqrt();
    }
    if std_dev.is_nan() { 0.0 } else { std_dev }
}

/// KairosDB's `PercentileAggregator.getValue` over sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let pos = p * (n as f64 + 1.0);
    if pos < 1.0 {
        return sorted[0];
    }
    if pos >= n as f64 {
        return sorted[n - 1];
    }
    let lower = sorted[pos as usize - 1];
    let upper = sorted[pos as usize];
    lower + (pos - pos.floor()) * (upper - lower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kairosdb::time::Unit;

    fn range(kind: RangeKind, value: i64, unit: Unit, align: Align) -> Aggregator {
        Aggregator::Range {
            kind,
            sampling: Span { value, unit },
            align_sampling: false,
            align,
            tz: Tz::UTC,
        }
    }

    fn numbers(points: &[(i64, f64)]) -> Values {
        Values::Numbers(points.to_vec())
    }

    /// KairosDB's LastAggregatorTest.test_alignStartOn/Off and test_alignEndOn: points at
    /// 0,1,2,3,5,6,7,8 ms with values 11,10,20,3,1,3,5,25 in 5 ms ranges.
    #[test]
    fn last_with_every_alignment() {
        let points = numbers(&[
            (0, 11.0),
            (1, 10.0),
            (2, 20.0),
            (3, 3.0),
            (5, 1.0),
            (6, 3.0),
            (7, 5.0),
            (8, 25.0),
        ]);
        for (align, expected) in [
            (Align::Start, [(0, 3.0), (5, 25.0)]),
            (Align::Point, [(3, 3.0), (8, 25.0)]),
            (Align::End, [(5, 3.0), (10, 25.0)]),
        ] {
            let last = range(RangeKind::Last, 5, Unit::Milliseconds, align);
            assert_eq!(
                last.apply(points.clone(), 0).unwrap(),
                numbers(&expected),
                "{align:?}"
            );
        }
    }

    /// The range aggregators on one set of points, against values worked out by hand.
    #[test]
    fn range_kinds() {
        // Two 10 ms ranges from 100: [100, 110) holds 3 points, [110, 120) is empty,
        // [120, 130) holds 1.
        let points = numbers(&[(101, 2.0), (104, 4.0), (109, 9.0), (125, -1.5)]);
        let cases = [
            (RangeKind::Avg, [5.0, -1.5]),
            (RangeKind::Sum, [15.0, -1.5]),
            (RangeKind::Min, [2.0, -1.5]),
            (RangeKind::Max, [9.0, -1.5]),
            (RangeKind::Count, [3.0, 1.0]),
            (RangeKind::First, [2.0, -1.5]),
            (RangeKind::Last, [9.0, -1.5]),
            // sqrt(((4+16+81) - 3·25) / 2) = sqrt(13), to the last bit of KairosDB's
            // running formula (3.605551275463989 exactly is the two-pass result).
            (RangeKind::Dev, [3.6055512754639905, 0.0]),
            // p = 0.5, n = 3: pos = 2 → the middle value.
            (RangeKind::Percentile(0.5), [4.0, -1.5]),
        ];
        for (kind, [a, b]) in cases {
            let out = range(kind, 10, Unit::Milliseconds, Align::Start)
                .apply(points.clone(), 100)
                .unwrap();
            assert_eq!(out, numbers(&[(100, a), (120, b)]), "{kind:?}");
            let out = range(kind, 10, Unit::Milliseconds, Align::Point)
                .apply(points.clone(), 100)
                .unwrap();
            let first_time = if kind == RangeKind::Last { 109 } else { 101 };
            assert_eq!(out, numbers(&[(first_time, a), (125, b)]), "{kind:?}");
        }
    }

    #[test]
    fn nan_like_java() {
        let points = numbers(&[(0, 1.0), (1, f64::NAN), (2, 3.0)]);
        for kind in [
            RangeKind::Min,
            RangeKind::Max,
            RangeKind::Avg,
            RangeKind::Sum,
        ] {
            let Values::Numbers(out) = range(kind, 1, Unit::Seconds, Align::Start)
                .apply(points.clone(), 0)
                .unwrap()
            else {
                panic!()
            };
            assert!(out[0].1.is_nan(), "{kind:?}");
        }
        // KairosDB's dev turns NaN into 0.
        let dev = range(RangeKind::Dev, 1, Unit::Seconds, Align::Start);
        assert_eq!(dev.apply(points, 0).unwrap(), numbers(&[(0, 0.0)]));
    }

    /// KairosDB's `getValue` at p·(n+1): below the first and above the last position it
    /// clamps, in between it interpolates.
    #[test]
    fn percentile_positions() {
        let sorted = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&sorted, 0.1), 1.0); // pos 0.5
        assert_eq!(percentile(&sorted, 0.5), 2.5); // pos 2.5
        assert_eq!(percentile(&sorted, 0.75), 3.75); // pos 3.75
        assert_eq!(percentile(&sorted, 0.9), 4.0); // pos 4.5
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn rate_and_diff() {
        let points = numbers(&[(1_000, 10.0), (3_000, 14.0), (4_000, 13.0)]);
        let per_second = Aggregator::Rate {
            sampling: Span {
                value: 1,
                unit: Unit::Seconds,
            },
            tz: Tz::UTC,
        };
        assert_eq!(
            per_second.apply(points.clone(), 0).unwrap(),
            numbers(&[(3_000, 2.0), (4_000, -1.0)])
        );
        assert_eq!(
            Aggregator::Diff.apply(points, 0).unwrap(),
            numbers(&[(3_000, 4.0), (4_000, -1.0)])
        );
        let same_time = numbers(&[(1, 1.0), (1, 2.0)]);
        assert!(per_second.apply(same_time.clone(), 0).is_err());
        assert_eq!(
            Aggregator::Diff.apply(numbers(&[(1, 1.0)]), 0).unwrap(),
            numbers(&[])
        );
    }

    #[test]
    fn text_groups() {
        let texts = Values::Texts(vec![
            (1, "OK".into()),
            (2, "WARN".into()),
            (70_000, "OK".into()),
        ]);
        let count = range(RangeKind::Count, 1, Unit::Minutes, Align::Start);
        assert_eq!(
            count.apply(texts.clone(), 0).unwrap(),
            numbers(&[(0, 2.0), (60_000, 1.0)])
        );
        let first = range(RangeKind::First, 1, Unit::Minutes, Align::Point);
        assert_eq!(
            first.apply(texts.clone(), 0).unwrap(),
            Values::Texts(vec![(1, "OK".into()), (70_000, "OK".into())])
        );
        for other in [
            range(RangeKind::Avg, 1, Unit::Minutes, Align::Start),
            Aggregator::Diff,
        ] {
            assert_eq!(other.apply(texts.clone(), 0).unwrap(), texts);
        }
    }

    #[test]
    fn limit_and_reverse() {
        let mut v = numbers(&[(1, 1.0), (2, 2.0), (3, 3.0)]);
        v.limit(2, true);
        assert_eq!(v, numbers(&[(2, 2.0), (3, 3.0)]));
        v.limit(1, false);
        v.reverse();
        assert_eq!(v, numbers(&[(2, 2.0)]));
    }
}
