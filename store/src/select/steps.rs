//! Evaluation steps of a selector ([`Steps`]) and the thinning of a series' samples to those
//! the steps use ([`Thinning`]): an instant selector keeps, per step, the latest sample
//! within lookback; a range selector whose range is shorter than the step keeps its windows.

use std::ops::Range;

use super::SeriesSamples;

/// Evaluation times of a selector: the times `first_ns + k * interval_ns`, at each of which
/// the samples at or before it and no older than `lookback_ns` before it are used: only the
/// latest of them (an instant selector), or all (`whole_windows`: a range selector, whose
/// windows are then shorter than the interval). A selection for them leaves out the samples
/// of files that no step uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    /// The first evaluation time (ns, inclusive bound).
    pub first_ns: i64,
    /// Between evaluation times (ns, > 0).
    pub interval_ns: i64,
    /// How far before an evaluation time a sample may be (ns, inclusive).
    pub lookback_ns: i64,
    /// Every sample within lookback of a step is used, not only the latest.
    pub whole_windows: bool,
}

impl Steps {
    /// The first evaluation time at or after `t`.
    fn next_at_or_after(&self, t: i64) -> i64 {
        if t <= self.first_ns {
            return self.first_ns;
        }
        let interval = self.interval_ns.max(1) as u64;
        let steps = t.abs_diff(self.first_ns).div_ceil(interval);
        let next = i128::from(self.first_ns) + i128::from(steps) * i128::from(interval);
        next.min(i128::from(i64::MAX)) as i64
    }
}

/// [`slice::partition_point`] of `times` for a point expected near the start: probes 1, 2,
/// 4, … ahead, then searches the last gap, so that a step's few samples cost a few nearby
/// reads rather than a search of the whole block.
fn gallop(times: &[i64], pred: impl Fn(i64) -> bool) -> usize {
    let mut low = 0;
    let mut ahead = 1;
    while low + ahead < times.len() && pred(times[low + ahead]) {
        low += ahead;
        ahead *= 2;
    }
    if low == 0 && !times.first().is_some_and(|&t| pred(t)) {
        return 0;
    }
    let high = (low + ahead).min(times.len());
    low + 1 + times[low + 1..high].partition_point(|&t| pred(t))
}

/// Keeps, of one series' samples arriving in time order, those some step uses. Holds back
/// the latest sample until the next one shows whether a step falls between them.
#[derive(Debug)]
pub(super) struct Thinning {
    steps: Steps,
    /// The held sample and the first step at or after it.
    pending: Option<(i64, f64, i64)>,
}

impl Thinning {
    pub(super) fn new(steps: Steps) -> Self {
        Self {
            steps,
            pending: None,
        }
    }

    /// Pushes samples at `times` (ascending) with their `values`.
    pub(super) fn push_sorted(&mut self, times: &[i64], values: &[f64], out: &mut SeriesSamples) {
        let mut i = 0;
        while i < times.len() {
            let step = match self.pending {
                Some((_, _, step)) if times[i] <= step => step,
                _ => {
                    self.flush(out);
                    self.steps.next_at_or_after(times[i])
                }
            };
            // Samples up to the step replace one another: the last stays.
            let end = i + gallop(&times[i..], |t| t <= step);
            self.pending = Some((times[end - 1], values[end - 1], step));
            i = end;
        }
    }

    /// The index ranges of `times` (ascending) within lookback of the first step at or
    /// after them (whole windows: lookback is shorter than the interval, so no other step's
    /// window holds them).
    pub(super) fn windows<'t>(&self, times: &'t [i64]) -> impl Iterator<Item = Range<usize>> + 't {
        let steps = self.steps;
        let mut i = 0;
        std::iter::from_fn(move || {
            while i < times.len() {
                let step = steps.next_at_or_after(times[i]);
                let window_start = step.saturating_sub(steps.lookback_ns);
                if times[i] < window_start {
                    i += gallop(&times[i..], |t| t < window_start);
                    continue;
                }
                let end = i + gallop(&times[i..], |t| t <= step);
                let window = i..end;
                i = end;
                return Some(window);
            }
            None
        })
    }

    /// Ends the series: the held sample is kept if its next step is within lookback.
    pub(super) fn flush(&mut self, out: &mut SeriesSamples) {
        if let Some((t, v, step)) = self.pending.take()
            && t >= step.saturating_sub(self.steps.lookback_ns)
        {
            out.times.push(t);
            out.values.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gallop_finds_what_partition_point_finds() {
        for len in 0..40 {
            let times: Vec<i64> = (0..len).map(|t| t * 3).collect();
            for bound in -1..len * 3 + 2 {
                assert_eq!(
                    gallop(&times, |t| t <= bound),
                    times.partition_point(|&t| t <= bound),
                    "{len} {bound}"
                );
            }
        }
    }
}
