//! The seasonal part of [`super::Forecast`]: finding a period in the training data, and each
//! entity's memory of its last [`SEASONS`] periods.
//!
//! The period is found in one signal: the features averaged over the entities at each step,
//! each standardised, projected on their first principal component (what most features do
//! together, whatever their signs: a load cycle raises power and lowers idle time). It is the
//! lag with the highest autocorrelation of that signal, searched beyond the first lag where
//! the autocorrelation turns negative (so the slow decay of a smooth series is no period),
//! among lags the training data cover at least `SEASONS + 1` times, and kept only if that
//! autocorrelation reaches [`MIN_AUTOCORRELATION`]. A period is divided into at most [`MAX_BINS`] phase bins; an
//! entity remembers, per bin, the mean of its rows in each of its last [`SEASONS`] periods,
//! and the forecast for a row is the per-feature median of those means.

use serde::{Deserialize, Serialize};

use crate::matrix::Matrix;

/// Periods remembered: the forecast is the median of the same phase in the last three
/// periods, so one unusual period (an incident yesterday) does not move it.
pub const SEASONS: usize = 3;
/// Most phase bins per period (a day of 5-minute steps); a longer period is binned, which
/// bounds an entity's memory to `SEASONS × MAX_BINS` rows.
pub const MAX_BINS: usize = 288;
/// Smallest autocorrelation at the period for the period to be used.
pub const MIN_AUTOCORRELATION: f64 = 0.3;
/// Longest period searched, in steps (a week of minutes), which bounds the search's cost.
pub const MAX_PERIOD: usize = 10_080;
/// Longest span of training steps, the latest ones, that a period is searched in (twice what
/// the longest period needs), which bounds the search's memory and time.
const MAX_SPAN: i64 = 2 * (SEASONS as i64 + 1) * MAX_PERIOD as i64;
/// Power iterations for the first principal component.
const POWER_ITERATIONS: usize = 100;

/// A period found in the training data, with the training rows' median per phase bin (the
/// forecast of an entity that has no memory of that bin yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Season {
    /// Length in steps.
    pub period: i64,
    /// Phase bins per period.
    pub bins: usize,
    /// Per bin, the median normalised value of each feature in training.
    pub profile: Vec<Vec<f64>>,
}

impl Season {
    /// The period of the training rows `z` (capped normalised values; NaN missing) whose
    /// steps are `steps`, if they show one; see the module doc.
    pub(crate) fn detect(z: &Matrix, steps: &[i64]) -> Option<Self> {
        let series = fleet_signal(z, steps)?;
        let period = find_period(&series)?;
        Some(Self::profile(z, steps, period as i64))
    }

    /// The season of `period` steps with the per-bin medians of `z`.
    fn profile(z: &Matrix, steps: &[i64], period: i64) -> Self {
        let bins = (period as usize).min(MAX_BINS);
        let mut season = Self {
            period,
            bins,
            profile: Vec::new(),
        };
        let mut values = vec![vec![Vec::new(); z.cols()]; bins];
        for (row, &step) in z.iter_rows().zip(steps) {
            for (column, v) in values[season.bin(step)].iter_mut().zip(row) {
                if v.is_finite() {
                    column.push(*v);
                }
            }
        }
        season.profile = values
            .iter_mut()
            .map(|columns| {
                columns
                    .iter_mut()
                    .map(|c| median(c).unwrap_or(0.0))
                    .collect()
            })
            .collect();
        season
    }

    /// The phase bin of `step`.
    pub(crate) fn bin(&self, step: i64) -> usize {
        (step.rem_euclid(self.period) as usize * self.bins) / self.period as usize
    }
}

/// The signal a period is searched in (see the module doc), over the latest [`MAX_SPAN`]
/// steps; `None` if no feature varies.
fn fleet_signal(z: &Matrix, steps: &[i64]) -> Option<Vec<f64>> {
    let last = *steps.iter().max()?;
    let first = steps.iter().copied().min()?.max(last - MAX_SPAN + 1);
    let (span, features) = ((last - first + 1) as usize, z.cols());
    // Per step and feature, the mean over entities (NaN: no value).
    let mut sum = vec![0.0; span * features];
    let mut count = vec![0u32; span * features];
    for (row, &step) in z.iter_rows().zip(steps) {
        if step < first {
            continue;
        }
        let at = (step - first) as usize * features;
        for (j, v) in row.iter().enumerate() {
            if v.is_finite() {
                sum[at + j] += v;
                count[at + j] += 1;
            }
        }
    }
    // Standardised per feature; a step without a value sits at the feature's mean.
    let mut columns: Vec<Vec<f64>> = Vec::new();
    for j in 0..features {
        let values: Vec<Option<f64>> = (0..span)
            .map(|t| {
                let k = t * features + j;
                (count[k] > 0).then(|| sum[k] / f64::from(count[k]))
            })
            .collect();
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        let mean = present.iter().sum::<f64>() / present.len().max(1) as f64;
        let std = (present.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
            / present.len().max(1) as f64)
            .sqrt();
        if std > 0.0 {
            columns.push(
                values
                    .iter()
                    .map(|v| v.map_or(0.0, |v| (v - mean) / std))
                    .collect(),
            );
        }
    }
    if columns.is_empty() {
        return None;
    }
    let component = first_component(&columns);
    Some(
        (0..span)
            .map(|t| columns.iter().zip(&component).map(|(c, w)| c[t] * w).sum())
            .collect(),
    )
}

/// The first principal component of centred `columns` (unit length), by power iteration
/// from the covariance column of largest norm (never orthogonal to it).
fn first_component(columns: &[Vec<f64>]) -> Vec<f64> {
    let d = columns.len();
    let covariance: Vec<f64> = (0..d * d)
        .map(|k| {
            let (a, b) = (&columns[k / d], &columns[k % d]);
            a.iter().zip(b).map(|(x, y)| x * y).sum()
        })
        .collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut vector = (0..d)
        .map(|i| covariance[i * d..(i + 1) * d].to_vec())
        .max_by(|a, b| norm(a).total_cmp(&norm(b)))
        .unwrap_or_default();
    for _ in 0..POWER_ITERATIONS {
        let length = norm(&vector);
        if length <= 0.0 {
            break;
        }
        vector.iter_mut().for_each(|x| *x /= length);
        vector = (0..d)
            .map(|i| {
                covariance[i * d..(i + 1) * d]
                    .iter()
                    .zip(&vector)
                    .map(|(c, v)| c * v)
                    .sum()
            })
            .collect();
    }
    let length = norm(&vector).max(f64::MIN_POSITIVE);
    vector.iter().map(|x| x / length).collect()
}

/// The lag with the highest autocorrelation of `series` (centred), beyond its first negative
/// autocorrelation, if it reaches [`MIN_AUTOCORRELATION`]; see the module doc.
fn find_period(series: &[f64]) -> Option<usize> {
    let n = series.len();
    let longest = (n / (SEASONS + 1)).min(MAX_PERIOD);
    let energy: f64 = series.iter().map(|x| x * x).sum();
    if longest < 2 || energy <= 0.0 {
        return None;
    }
    let autocorrelation = |lag: usize| -> f64 {
        series[..n - lag]
            .iter()
            .zip(&series[lag..])
            .map(|(a, b)| a * b)
            .sum::<f64>()
            / energy
    };
    let first_negative = (1..=longest).find(|&lag| autocorrelation(lag) < 0.0)?;
    let (lag, value) = (first_negative.max(2)..=longest)
        .map(|lag| (lag, autocorrelation(lag)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    (value >= MIN_AUTOCORRELATION).then_some(lag)
}

/// The median of the finite values in `values` (reordered); `None` if there are none.
pub(crate) fn median(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let (lower, upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    Some(if n % 2 == 1 {
        upper
    } else {
        (lower.iter().copied().fold(f64::NEG_INFINITY, f64::max) + upper) / 2.0
    })
}

/// One entity's memory of its last [`SEASONS`] periods: per phase bin and period, the mean of
/// each feature over the entity's rows in that bin (NaN: no value yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// Per slot (`bin × SEASONS + period mod SEASONS`), the period it holds (`None`: empty).
    periods: Vec<Option<i64>>,
    /// Per slot, the rows averaged into it.
    counts: Vec<u32>,
    /// Per slot, the mean of each feature (`f32`: an entity keeps up to
    /// `SEASONS × MAX_BINS` of these rows).
    means: Vec<f32>,
}

impl Memory {
    /// The remembered means (for measuring the memory's size).
    #[cfg(test)]
    pub(crate) fn means(&self) -> &[f32] {
        &self.means
    }

    /// The forecast for a row at `step`: per feature, the median of the entity's means for
    /// this phase bin in the previous [`SEASONS`] periods, the training profile standing in
    /// for each period it does not remember (so one remembered period is not trusted alone).
    /// True if it remembers all of them.
    pub(crate) fn forecast(&self, season: &Season, step: i64, out: &mut Vec<f64>) -> bool {
        let bin = season.bin(step);
        let period = step.div_euclid(season.period);
        out.clear();
        out.extend_from_slice(&season.profile[bin]);
        if self.periods.is_empty() {
            return false;
        }
        let features = out.len();
        let slots: Vec<usize> = (bin * SEASONS..(bin + 1) * SEASONS)
            .filter(|&s| {
                self.periods[s].is_some_and(|p| p < period && p >= period - SEASONS as i64)
            })
            .collect();
        let mut values = Vec::with_capacity(SEASONS);
        for (j, forecast) in out.iter_mut().enumerate() {
            values.clear();
            values.extend(
                slots
                    .iter()
                    .map(|&s| f64::from(self.means[s * features + j]))
                    .filter(|v| v.is_finite()),
            );
            values.resize(SEASONS, *forecast);
            *forecast = median(&mut values).unwrap_or(*forecast);
        }
        slots.len() == SEASONS
    }

    /// Adds the row `z` (NaN: missing) at `step` to the memory.
    pub(crate) fn remember(&mut self, season: &Season, step: i64, z: &[f64]) {
        let features = z.len();
        if self.periods.len() != season.bins * SEASONS
            || self.means.len() != self.periods.len() * features
        {
            self.periods = vec![None; season.bins * SEASONS];
            self.counts = vec![0; season.bins * SEASONS];
            self.means = vec![f32::NAN; season.bins * SEASONS * features];
        }
        let period = step.div_euclid(season.period);
        let slot = season.bin(step) * SEASONS + period.rem_euclid(SEASONS as i64) as usize;
        let means = &mut self.means[slot * features..(slot + 1) * features];
        if self.periods[slot] != Some(period) {
            self.periods[slot] = Some(period);
            self.counts[slot] = 0;
            means.fill(f32::NAN);
        }
        self.counts[slot] += 1;
        let n = self.counts[slot] as f32;
        for (mean, &x) in means.iter_mut().zip(z) {
            if x.is_finite() {
                let x = x as f32;
                *mean = if mean.is_nan() {
                    x
                } else {
                    *mean + (x - *mean) / n
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(n: usize, period: f64, noise: f64, seed: u64) -> Vec<f64> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|t| (t as f64 * std::f64::consts::TAU / period).sin() + noise * (rng.f64() - 0.5))
            .collect()
    }

    #[test]
    fn finds_the_period_of_a_noisy_cycle_and_none_in_noise_or_a_trend() {
        let series = sine(2000, 50.0, 1.0, 1);
        assert_eq!(find_period(&series), Some(50));
        let mut rng = fastrand::Rng::with_seed(2);
        let noise: Vec<f64> = (0..2000).map(|_| rng.f64() - 0.5).collect();
        assert_eq!(find_period(&noise), None);
        // A random walk decays slowly and never turns negative within the searched lags,
        // or turns negative without a repeat: no period either way.
        let mut level = 0.0;
        let walk: Vec<f64> = (0..2000)
            .map(|_| {
                level += rng.f64() - 0.5;
                level
            })
            .collect();
        let mean = walk.iter().sum::<f64>() / walk.len() as f64;
        let centred: Vec<f64> = walk.iter().map(|v| v - mean).collect();
        assert!(
            find_period(&centred).is_none_or(|p| p > 100),
            "{:?}",
            find_period(&centred)
        );
        // Too short to see the period four times.
        assert_eq!(find_period(&sine(150, 50.0, 0.0, 3)), None);
    }

    #[test]
    fn detects_the_period_over_several_entities_and_bins_long_ones() {
        // Two entities, the second one missing every 7th row, both with a 40-step cycle.
        let mut z = Matrix::new(2);
        let mut steps = Vec::new();
        for entity in 0..2 {
            let cycle = sine(400, 40.0, 0.2, entity);
            for (t, v) in cycle.iter().enumerate() {
                if entity == 1 && t % 7 == 0 {
                    continue;
                }
                z.push(&[*v, -*v]);
                steps.push(1000 + t as i64);
            }
        }
        let season = Season::detect(&z, &steps).unwrap();
        assert_eq!((season.period, season.bins), (40, 40));
        // Step 1010 is a quarter period in: the profile holds the peak of the sine.
        let peak = &season.profile[season.bin(1010)];
        assert!(peak[0] > 0.8 && peak[1] < -0.8, "{peak:?}");
        let long = Season::profile(&z, &steps, 1000);
        assert_eq!(long.bins, MAX_BINS);
        assert_eq!(long.bin(999), MAX_BINS - 1);
        assert_eq!(long.bin(-1), MAX_BINS - 1);
    }

    #[test]
    fn memory_forecasts_the_median_of_the_last_periods() {
        let season = Season {
            period: 4,
            bins: 4,
            profile: vec![vec![9.0]; 4],
        };
        let mut memory = Memory::default();
        let mut out = Vec::new();
        assert!(!memory.forecast(&season, 0, &mut out));
        assert_eq!(out, [9.0], "no memory: the training profile");
        // Phase 1 of periods 0..4 holds 1, 5, 2, 100; then period 4 asks.
        for (period, value) in [1.0, 5.0, 2.0, 100.0].into_iter().enumerate() {
            memory.remember(&season, period as i64 * 4 + 1, &[value]);
        }
        assert!(memory.forecast(&season, 17, &mut out));
        assert_eq!(out, [5.0], "median of 5, 2 and 100: period 0 is forgotten");
        // A missing value leaves no mean; the profile stands in for it, and for a period
        // long gone.
        memory.remember(&season, 17, &[f64::NAN]);
        assert!(memory.forecast(&season, 21, &mut out));
        assert_eq!(out, [9.0], "median of 2, 100 and the profile's 9");
        assert!(!memory.forecast(&season, 25, &mut out));
        assert_eq!(out, [9.0], "median of 100, 9 and 9");
        assert!(!memory.forecast(&season, 100, &mut out));
        assert_eq!(out, [9.0]);
    }
}
