//! Windows of a range argument without re-reading them: a range query at a 15 s step over
//! `[5m]` windows sees every sample in 20 windows, so reading each window whole costs 20
//! times the data. Window bounds move forward with two pointers, sums come from running
//! totals taken at the window bounds, extremes from a monotonic queue.
//!
//! Sums from running totals are not the bits of Prometheus' per-window Kahan sum: each is
//! the difference of two running totals kept as unevaluated pairs `hi + lo`, which is within
//! about one unit in the last place of the exact window sum, as Kahan's is, so the two agree
//! to about 1e-15 relative. A series with a non-finite value (or a running total that
//! overflows) is summed window by window instead, with Prometheus' arithmetic.

use std::collections::VecDeque;
use std::ops::Range;

use crate::eval::{Grid, RangeArg};
use crate::value::Point;

/// Every step with a non-empty window of `points`: (step index, the window's points as a
/// range of `points`). Window ends never decrease along the grid (or stay put with `@`), so
/// both bounds only move forward.
pub(crate) fn windows(
    points: &[Point],
    arg: &RangeArg,
    grid: &Grid,
) -> impl Iterator<Item = (usize, Range<usize>)> {
    let (mut lo, mut hi) = (0, 0);
    (0..grid.len()).filter_map(move |i| {
        let end = arg.window_end(grid.ts(i));
        let start = end - arg.range;
        // With `@` every end is the same; otherwise ends grow with the step.
        if hi > 0 && points[hi - 1].t > end || lo > 0 && points[lo - 1].t > start {
            (lo, hi) = (0, 0);
        }
        // Linear, not galloping: the bounds move through memory not read yet, which a
        // sequential scan has prefetched and a search would wait for.
        while lo < points.len() && points[lo].t <= start {
            lo += 1;
        }
        hi = hi.max(lo);
        while hi < points.len() && points[hi].t <= end {
            hi += 1;
        }
        (lo < hi).then_some((i, lo..hi))
    })
}

/// `a + b` and its rounding error: `a + b = s + e` exactly (Knuth's two-sum).
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let b_virtual = s - a;
    let a_virtual = s - b_virtual;
    (s, (a - a_virtual) + (b - b_virtual))
}

/// The sum of `value(k)` over each of `windows` (ranges of indexes whose bounds never
/// decrease), as the difference of running totals taken at the window bounds, each total
/// kept as `hi + lo`; `None` if a value or a total is not finite or bounds go back (then
/// windows are summed one by one, as Prometheus does). Each value is read once; values
/// outside every window are not read.
pub(crate) fn window_sums(
    value: impl Fn(usize) -> f64,
    windows: &[Range<usize>],
) -> Option<Vec<f64>> {
    if windows
        .windows(2)
        .any(|w| w[1].start < w[0].start || w[1].end < w[0].end)
    {
        return None;
    }
    let n = windows.len();
    let mut at_start = Vec::with_capacity(n);
    let mut at_end = Vec::with_capacity(n);
    let (mut at, mut hi, mut lo) = (0, 0.0, 0.0);
    // Bounds in increasing order: window i's start or window j's end (j <= i).
    let mut i = 0;
    while at_end.len() < n {
        let j = at_end.len();
        let start = (i < n && windows[i].start <= windows[j].end).then(|| windows[i].start);
        let bound = start.unwrap_or(windows[j].end);
        if start.is_some() && i == j {
            // No window is open: the total starts afresh at this one's start.
            (at, hi, lo) = (bound, 0.0, 0.0);
        }
        for k in at..bound {
            let (s, e) = two_sum(hi, value(k));
            (hi, lo) = (s, lo + e);
        }
        at = bound;
        // Once a total is not finite, none after it is (until afresh): checking each is enough.
        if !(hi.is_finite() && lo.is_finite()) {
            return None;
        }
        match start {
            Some(_) => {
                at_start.push((hi, lo));
                i += 1;
            }
            None => at_end.push((hi, lo)),
        }
    }
    Some(
        at_start
            .into_iter()
            .zip(at_end)
            .map(|((start_hi, start_lo), (end_hi, end_lo))| {
                let (d, e) = two_sum(end_hi, -start_hi);
                d + (e + (end_lo - start_lo))
            })
            .collect(),
    )
}

/// The largest (`max`) or smallest value of each window, NaN ignored unless a window holds
/// nothing else (Prometheus' `max_over_time` and `min_over_time`), for windows given in
/// order by [`windows`].
#[derive(Debug, Default)]
pub(crate) struct Extremes {
    /// Indexes of the window's candidates, their values in decreasing (max) or increasing
    /// order.
    queue: VecDeque<usize>,
    /// Next point not yet offered to the queue.
    next: usize,
    /// Start of the last window.
    start: usize,
    /// End of the last window.
    end: usize,
    /// The last window was scanned: the queue does not hold it.
    scanned: bool,
}

impl Extremes {
    /// The extreme of `points[range]` (fastest when windows come in order).
    pub(crate) fn of(&mut self, points: &[Point], range: Range<usize>, max: bool) -> f64 {
        // Strictly better only: of equal values the first stays in front, as Prometheus
        // keeps the first of equal extremes (-0.0 and 0.0 among them).
        let better = |a: f64, b: f64| if max { a > b } else { a < b };
        if range.start < self.start || range.end < self.end {
            *self = Self::default();
        }
        // Windows that share little with the last (steps longer than a quarter of the
        // range) are cheaper to scan than to queue.
        let fresh = range.end - self.end.max(range.start);
        (self.start, self.end) = (range.start, range.end);
        if range.len() < 4 * fresh {
            self.scanned = true;
            return scan(&points[range], max);
        }
        if std::mem::take(&mut self.scanned) {
            self.queue.clear();
            self.next = range.start;
        }
        self.next = self.next.max(range.start);
        while self.next < range.end {
            let v = points[self.next].v;
            if !v.is_nan() {
                while self.queue.back().is_some_and(|&i| better(v, points[i].v)) {
                    self.queue.pop_back();
                }
                self.queue.push_back(self.next);
            }
            self.next += 1;
        }
        while self.queue.front().is_some_and(|&i| i < range.start) {
            self.queue.pop_front();
        }
        self.queue.front().map_or(f64::NAN, |&i| points[i].v)
    }
}

/// The largest (`max`) or smallest value of `points`, as [`Extremes::of`] defines it, in
/// four interleaved lanes (four independent comparisons at a time instead of one chain).
fn scan(points: &[Point], max: bool) -> f64 {
    // Negated, the smallest is the largest; NaN is never greater, so it is passed over.
    let sign = if max { 1.0 } else { -1.0 };
    let mut lanes = [f64::NEG_INFINITY; 4];
    let mut quads = points.chunks_exact(4);
    for quad in &mut quads {
        for (lane, p) in lanes.iter_mut().zip(quad) {
            let v = sign * p.v;
            if v > *lane {
                *lane = v;
            }
        }
    }
    for p in quads.remainder() {
        let v = sign * p.v;
        if v > lanes[0] {
            lanes[0] = v;
        }
    }
    let best = lanes.into_iter().fold(f64::NEG_INFINITY, f64::max);
    // Lanes lose which of equal values came first, which shows only between 0.0 and -0.0;
    // -inf may also stand for "only NaN". Both are settled one by one, as Prometheus does.
    if best == 0.0 || best == f64::NEG_INFINITY {
        let better = |a: f64, b: f64| if max { a > b } else { a < b };
        let mut extreme = f64::NAN;
        for p in points {
            if better(p.v, extreme) || extreme.is_nan() {
                extreme = p.v;
            }
        }
        return extreme;
    }
    sign * best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 11
    }

    #[test]
    fn window_sums_are_within_an_ulp_of_the_exact_sum() {
        let mut state = 5;
        let values: Vec<f64> = (0..5000)
            .map(|i| match i % 3 {
                0 => (lcg(&mut state) % 1_000_000) as f64 / 1000.0,
                1 => 1e12 + (lcg(&mut state) % 1000) as f64,
                _ => -((lcg(&mut state) % 7) as f64) * 0.1,
            })
            .collect();
        // Windows whose bounds never decrease, overlapping or apart.
        let (mut start, mut end) = (0usize, 0usize);
        let mut ranges = Vec::new();
        while start < 4000 {
            end = end.max(start + (lcg(&mut state) % 900) as usize);
            ranges.push(start..end);
            start += (lcg(&mut state) % 150) as usize;
        }
        let sums = window_sums(|k| values[k], &ranges).unwrap();
        assert_eq!(sums.len(), ranges.len());
        for (range, got) in ranges.iter().zip(sums) {
            // The exact sum, as i128 micro-units (every value is a multiple of 1e-3 or 0.1).
            let exact: f64 = {
                let mut total = 0i128;
                for v in &values[range.clone()] {
                    total += (v * 1e3).round() as i128;
                }
                total as f64 / 1e3
            };
            assert!(
                (got - exact).abs() <= exact.abs() * 4.0 * f64::EPSILON + 1e-9,
                "{range:?}: {got} vs {exact}"
            );
        }
        let sum = |values: &[f64], ranges: &[Range<usize>]| window_sums(|k| values[k], ranges);
        assert!(sum(&[1.0, f64::NAN], &[0..1, 0..2]).is_none());
        assert!(sum(&[1e308, 1e308], &[0..1, 0..2]).is_none());
        // A value in no window is never read; bounds that go back are refused.
        assert_eq!(
            sum(&[1.0, f64::NAN, 2.0], &[0..1, 2..3]),
            Some(vec![1.0, 2.0])
        );
        assert!(sum(&[1.0, 2.0, 3.0], &[1..3, 0..3]).is_none());
    }

    #[test]
    fn extremes_follow_prometheus_on_every_window() {
        let mut state = 9;
        let points: Vec<Point> = (0..3000)
            .map(|t| Point {
                t,
                v: match lcg(&mut state) % 50 {
                    0 => f64::NAN,
                    1 => -0.0,
                    2 if t % 7 == 0 => f64::INFINITY,
                    3 if t % 7 == 0 => f64::NEG_INFINITY,
                    r if t > 2880 => f64::NAN * r as f64,
                    r => r as f64 - 25.0,
                },
            })
            .collect();
        let (mut max, mut min) = (Extremes::default(), Extremes::default());
        let mut start = 0;
        while start < 2900 {
            let end = (start + 1 + (lcg(&mut state) % 60) as usize).min(points.len());
            let w = &points[start..end];
            // Prometheus: start from the first value; a NaN is replaced, never chosen.
            let fold =
                |better: fn(f64, f64) -> bool| {
                    w.iter().skip(1).fold(w[0].v, |m, p| {
                        if better(p.v, m) || m.is_nan() { p.v } else { m }
                    })
                };
            let (want_max, want_min) = (fold(|a, b| a > b), fold(|a, b| a < b));
            assert_eq!(
                max.of(&points, start..end, true).to_bits(),
                want_max.to_bits()
            );
            assert_eq!(
                min.of(&points, start..end, false).to_bits(),
                want_min.to_bits()
            );
            start += (lcg(&mut state) % 20) as usize;
        }
    }
}
