//! Per-series detectors on normalised rows. Both compare each feature with the entity's own
//! recent past rather than with the training distribution, so a level that drifts slowly
//! (a new job mix, a workload that grows, a sensor recalibrated) is not flagged forever,
//! while a sudden departure is.
//!
//! Scoring is the same for both: a feature's raw deviation is divided by its calibration,
//! the `1 − target_fpr` quantile of that feature's deviations in training, so `1` means "as
//! unusual, on its own, as the false-positive rate allows" whether the feature is naturally
//! smooth or spiky; calibrated deviations are capped and combined as their root mean square.
//! The RMS lets one feature far beyond its own training extremes raise an alarm alone, and
//! lets many features that move together a little raise it jointly. A feature's contribution
//! is its share of the sum of squares.

use serde::{Deserialize, Serialize};

use super::{EntityState, Scored};
use crate::matrix::{Matrix, quantile};

/// Largest calibrated deviation one feature may add, so one broken sensor reading cannot
/// make a score meaningless (the score stays finite and comparable).
const CAP: f64 = 30.0;

/// Per feature: the `quantile` of `deviations` (at least 1, so a feature that never moved in
/// training is judged in training scales).
fn calibrate(deviations: &[Vec<f64>], quantile_level: f64) -> Vec<f64> {
    deviations
        .iter()
        .map(|d| quantile(d, quantile_level).unwrap_or(1.0).max(1.0))
        .collect()
}

/// The calibration quantile for a target false-positive rate.
fn calibration_level(target_fpr: f64) -> f64 {
    1.0 - target_fpr.clamp(1e-4, 0.5)
}

/// Raw deviations of every training row, per feature, each sequence scored from a fresh state.
fn training_deviations(
    z: &Matrix,
    sequences: &[std::ops::Range<usize>],
    mut deviations: impl FnMut(&[f64], &mut EntityState) -> Vec<f64>,
) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::with_capacity(z.rows()); z.cols()];
    for range in sequences {
        let mut state = EntityState::default();
        for i in range.clone() {
            for (j, d) in deviations(z.row(i), &mut state).into_iter().enumerate() {
                out[j].push(d);
            }
        }
    }
    out
}

/// Calibrated, capped deviations combined by their root mean square.
fn combine(deviations: Vec<f64>, calibration: &[f64]) -> Scored {
    let contributions: Vec<f64> = deviations
        .into_iter()
        .zip(calibration.iter().chain(std::iter::repeat(&1.0)))
        .map(|(d, c)| (d / c).min(CAP).powi(2))
        .collect();
    let mean_square = contributions.iter().sum::<f64>() / contributions.len().max(1) as f64;
    Scored {
        score: mean_square.sqrt(),
        contributions,
    }
}

/// Median/MAD z-score against a moving window: a feature's deviation is
/// |x − median| / (1.4826 · MAD) over the entity's last `window` rows (a Hampel filter).
/// Until an entity has `min_history` rows, its rows are compared with the training
/// distribution instead (the normalised value itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mad {
    /// Rows in the moving window. A departure that lasts more than half of it becomes the
    /// new median: the default, 30, is 5 minutes of 10 s windows.
    pub window: usize,
    /// Rows of history needed before the moving window is used.
    pub min_history: usize,
    /// Smallest scale, in training scales, so a quiet spell does not make every small
    /// change look huge.
    pub min_scale: f64,
    /// Per feature: its `1 − target_fpr` quantile deviation in training (at least 1).
    pub calibration: Vec<f64>,
}

impl Mad {
    pub(crate) fn fit(z: &Matrix, sequences: &[std::ops::Range<usize>], target_fpr: f64) -> Self {
        let mut mad = Self {
            window: 30,
            min_history: 5,
            min_scale: 0.5,
            calibration: Vec::new(),
        };
        let deviations = training_deviations(z, sequences, |row, state| mad.deviations(row, state));
        mad.calibration = calibrate(&deviations, calibration_level(target_fpr));
        mad
    }

    /// Raw deviations of a row from the entity's moving median, then adds the row to the
    /// window.
    fn deviations(&self, z: &[f64], state: &mut EntityState) -> Vec<f64> {
        let history = &mut state.recent;
        if history.front().is_some_and(|r| r.len() != z.len()) {
            history.clear();
        }
        let out = if history.len() < self.min_history {
            z.iter().map(|x| x.abs()).collect()
        } else {
            let mut column = Vec::with_capacity(history.len());
            let mut spread = Vec::with_capacity(history.len());
            z.iter()
                .enumerate()
                .map(|(j, x)| {
                    column.clear();
                    column.extend(history.iter().map(|r| r[j]));
                    let median = median(&mut column);
                    spread.clear();
                    spread.extend(column.iter().map(|v| (v - median).abs()));
                    let scale = (1.4826 * self::median(&mut spread)).max(self.min_scale);
                    (x - median).abs() / scale
                })
                .collect()
        };
        if history.len() >= self.window.max(1) {
            history.pop_front();
        }
        history.push_back(z.to_vec());
        out
    }

    pub(crate) fn score(&self, z: &[f64], state: &mut EntityState) -> Scored {
        combine(self.deviations(z, state), &self.calibration)
    }
}

/// The median of `values` (reordered in place); 0 when empty.
fn median(values: &mut [f64]) -> f64 {
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let (_, upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        upper
    } else {
        let lower = values[..n / 2]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

/// Exponentially weighted moving mean and variance per feature and entity; a feature's
/// deviation is |x − mean| / sqrt(variance). Updates are clipped at `clip` standard
/// deviations, so an anomaly is not absorbed into the baseline at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    /// Weight of the newest row (0..1): 0.05 remembers about the last 40 rows.
    pub alpha: f64,
    /// Smallest standard deviation, in training scales, so a quiet spell does not make
    /// every small change look huge.
    pub min_std: f64,
    /// Largest deviation (in standard deviations) one row may move the baseline by.
    pub clip: f64,
    /// Per feature: its `1 − target_fpr` quantile deviation in training (at least 1).
    pub calibration: Vec<f64>,
}

impl Ewma {
    pub(crate) fn fit(z: &Matrix, sequences: &[std::ops::Range<usize>], target_fpr: f64) -> Self {
        let mut ewma = Self {
            alpha: 0.05,
            min_std: 0.5,
            clip: 3.0,
            calibration: Vec::new(),
        };
        let deviations =
            training_deviations(z, sequences, |row, state| ewma.deviations(row, state));
        ewma.calibration = calibrate(&deviations, calibration_level(target_fpr));
        ewma
    }

    /// Raw deviations of a row from the entity's baseline, updating the baseline.
    fn deviations(&self, z: &[f64], state: &mut EntityState) -> Vec<f64> {
        if state.ewma.len() != z.len() {
            // First row of this entity: start from the training distribution.
            state.ewma = vec![(0.0, 1.0); z.len()];
        }
        let mut out = Vec::with_capacity(z.len());
        for (x, (mean, var)) in z.iter().zip(state.ewma.iter_mut()) {
            let std = var.sqrt().max(self.min_std);
            let deviation = (x - *mean) / std;
            out.push(deviation.abs());
            let step = deviation.clamp(-self.clip, self.clip) * std;
            *mean += self.alpha * step;
            *var = (1.0 - self.alpha) * (*var + self.alpha * step * step);
        }
        out
    }

    pub(crate) fn score(&self, z: &[f64], state: &mut EntityState) -> Scored {
        combine(self.deviations(z, state), &self.calibration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn moving_window_forgets_old_rows() {
        let mad = Mad {
            window: 4,
            min_history: 2,
            min_scale: 0.5,
            calibration: vec![1.0],
        };
        let mut state = EntityState::default();
        for _ in 0..10 {
            mad.score(&[0.0], &mut state);
        }
        assert!(mad.score(&[10.0], &mut state).score > 10.0);
        for _ in 0..3 {
            mad.score(&[10.0], &mut state);
        }
        // The window now holds 10, 10, 10, 10: the new level is normal.
        assert_eq!(state.recent.len(), 4);
        assert!(mad.score(&[10.0], &mut state).score < 1.0);
    }

    #[test]
    fn one_feature_far_out_alone_or_many_together_score_high() {
        let calibration = vec![1.0; 10];
        let one = combine([vec![20.0], vec![0.0; 9]].concat(), &calibration);
        let many = combine(vec![2.0; 10], &calibration);
        let quiet = combine(vec![0.5; 10], &calibration);
        assert!(one.score > 2.0 && many.score > 1.5 && quiet.score < 1.0);
        // Shares of the sum of squares: the lone feature explains everything.
        assert_eq!(one.contributions[0], 400.0);
        assert_eq!(one.contributions[1], 0.0);
    }
}
