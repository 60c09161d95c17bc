//! Per-series detectors on normalised rows: the score of a row is its largest per-feature
//! deviation, and each feature's deviation is its contribution.

use serde::{Deserialize, Serialize};

use super::{EntityState, Scored};
use crate::matrix::{Matrix, quantile};

/// Median/MAD z-score: the row is already `(x − median) / (1.4826 · MAD)` of the training
/// data, so the score is the largest |z|.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mad;

impl Mad {
    pub(crate) fn score(&self, z: &[f64]) -> Scored {
        let contributions: Vec<f64> = z.iter().map(|v| v.abs()).collect();
        Scored {
            score: contributions.iter().copied().fold(0.0, f64::max),
            contributions,
        }
    }
}

/// Exponentially weighted moving mean and variance per feature and entity. A feature's
/// deviation is |x − mean| / sqrt(variance), divided by that feature's 99th percentile
/// deviation in training (so a naturally spiky metric does not drown the others) and
/// capped; the score is the mean over features, which rewards departures that many metrics
/// share. Updates are clipped at `clip` standard deviations so an anomaly is not absorbed
/// into the baseline at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    /// Weight of the newest row (0..1).
    pub alpha: f64,
    /// Smallest standard deviation, in training scales, so a quiet spell does not make
    /// every small change look huge.
    pub min_std: f64,
    /// Largest deviation (in standard deviations) one row may move the baseline by.
    pub clip: f64,
    /// Per feature: its 99th percentile deviation in training (at least 1).
    pub calibration: Vec<f64>,
    /// Largest calibrated deviation one feature may add.
    pub cap: f64,
}

/// Quantile of training deviations a feature is calibrated by.
const CALIBRATION_QUANTILE: f64 = 0.99;

impl Ewma {
    pub(crate) fn fit(z: &Matrix, sequences: &[std::ops::Range<usize>]) -> Self {
        let mut ewma = Self {
            alpha: 0.05,
            min_std: 0.5,
            clip: 3.0,
            calibration: Vec::new(),
            cap: 30.0,
        };
        let mut deviations = vec![Vec::with_capacity(z.rows()); z.cols()];
        for range in sequences {
            let mut state = EntityState::default();
            for i in range.clone() {
                for (j, d) in ewma
                    .deviations(z.row(i), &mut state)
                    .into_iter()
                    .enumerate()
                {
                    deviations[j].push(d);
                }
            }
        }
        ewma.calibration = deviations
            .iter()
            .map(|d| quantile(d, CALIBRATION_QUANTILE).unwrap_or(1.0).max(1.0))
            .collect();
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
        let contributions: Vec<f64> = self
            .deviations(z, state)
            .into_iter()
            .zip(self.calibration.iter().chain(std::iter::repeat(&1.0)))
            .map(|(d, c)| (d / c).min(self.cap))
            .collect();
        Scored {
            score: contributions.iter().sum::<f64>() / contributions.len().max(1) as f64,
            contributions,
        }
    }
}
