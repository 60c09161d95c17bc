//! Detectors: each learns what normal rows look like from training data, gives every new row
//! a score (higher = more unusual) with a per-feature contribution (the explanation), and
//! learns a threshold for a target false-positive rate.
//!
//! Every detector works on rows normalised by a [`Scaler`] (robust z-scores from the
//! training data). The default, [`forecast::Forecast`], scores each feature's distance from
//! two forecasts made from the entity's own past (a recent mean and, when the training data
//! have a period, the same phase in the last periods). Per series, against each entity's own
//! recent past: [`robust::Mad`]
//! (median/MAD z-score over a moving window) and [`robust::Ewma`] (exponentially weighted
//! mean and variance). Multivariate: [`linear::Pca`]
//! (reconstruction error), [`mixture::Gmm`] (negative log-likelihood), [`mixture::KMeans`]
//! (distance to the nearest centroid), with linfa (PCA, k-means; the mixture's EM starts
//! from linfa's k-means), and [`iforest::IsolationForest`]
//! (written here: the dimension is only known at run time). [`Ensemble`] averages the
//! forecast, PCA and isolation-forest scores, each divided by its own threshold, and smooths
//! the mean as the forecast detector does.
//!
//! Rows carry a *step*: the index of their window in time (window start ÷ window length
//! live, the row number in `eval`), so a seasonal forecast knows each row's phase.

pub mod forecast;
pub mod iforest;
pub mod linear;
pub mod mixture;
pub mod robust;
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use snafu::ensure;

use crate::matrix::{Matrix, quantile};
use crate::{EmptyTrainingSnafu, Result, SpecSnafu, UnknownDetectorSnafu};

/// Normalised values are clipped to ±`Z_CAP` before the multivariate detectors see them, so
/// one absurd reading cannot dominate a fit or overflow a likelihood.
pub const Z_CAP: f64 = 50.0;

/// The detector the live system and `exawatch train` use unless told otherwise.
pub const DEFAULT_DETECTOR: DetectorKind = DetectorKind::Forecast;

/// The kinds of detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// Distance of each feature from a recent and a seasonal forecast, calibrated on
    /// training, smoothed over recent rows; stateful per entity. The default.
    Forecast,
    /// Per feature: |x − median| / MAD over the entity's recent rows; stateful per entity.
    Mad,
    /// Per feature: distance from an exponentially weighted moving mean, in moving standard
    /// deviations; stateful per entity.
    Ewma,
    /// Squared reconstruction error from the principal components (linfa PCA).
    Pca,
    /// Negative log-likelihood under a Gaussian mixture (linfa GMM).
    Gmm,
    /// Distance to the nearest k-means centroid (linfa KMeans).
    Kmeans,
    /// Isolation forest: rows that random splits isolate quickly.
    Iforest,
    /// Mean of the members' scores (forecast, pca, iforest), each divided by its threshold,
    /// smoothed over recent rows.
    Ensemble,
}

impl DetectorKind {
    /// Every kind, in display order.
    pub const ALL: [Self; 8] = [
        Self::Forecast,
        Self::Mad,
        Self::Ewma,
        Self::Pca,
        Self::Gmm,
        Self::Kmeans,
        Self::Iforest,
        Self::Ensemble,
    ];

    /// The name used on the command line and in model files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Forecast => "forecast",
            Self::Mad => "mad",
            Self::Ewma => "ewma",
            Self::Pca => "pca",
            Self::Gmm => "gmm",
            Self::Kmeans => "kmeans",
            Self::Iforest => "iforest",
            Self::Ensemble => "ensemble",
        }
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DetectorKind {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownDetectorSnafu { name: s }.build())
    }
}

/// Settings of a fit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// Share of training rows allowed above the threshold.
    pub target_fpr: f64,
    /// Seed of every random choice (k-means and GMM initialisation, isolation forest).
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            target_fpr: 0.001,
            seed: 42,
        }
    }
}

/// Robust per-feature normalisation learned from training data: `(x − median) / scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    /// Median of each feature.
    pub median: Vec<f64>,
    /// Scale of each feature: 1.4826 × MAD, else the standard deviation, else (a feature
    /// constant in training) 5 % of the median's magnitude but at least 1, so that a change
    /// of one unit or 5 % counts as one scale (a smaller fallback made any flicker of a
    /// feature that was always 0 in training the most unusual row possible).
    pub scale: Vec<f64>,
}

impl Scaler {
    /// Learns the statistics of each column of `train`.
    pub fn fit(train: &Matrix) -> Self {
        let (mut median, mut scale) = (Vec::new(), Vec::new());
        for j in 0..train.cols() {
            let column = train.column(j);
            let med = quantile(&column, 0.5).unwrap_or(0.0);
            let deviations: Vec<f64> = column.iter().map(|v| (v - med).abs()).collect();
            let mad = 1.4826 * quantile(&deviations, 0.5).unwrap_or(0.0);
            let (_, std) = crate::matrix::mean_std(&column);
            let floor = 1e-3 * med.abs().max(1e-3);
            let s = if mad > floor {
                mad
            } else if std > floor {
                std
            } else {
                (0.05 * med.abs()).max(1.0)
            };
            median.push(med);
            scale.push(s);
        }
        Self { median, scale }
    }

    /// The normalised row; a missing (NaN) value stays NaN.
    pub fn transform(&self, row: &[f64], out: &mut Vec<f64>) {
        out.clear();
        out.extend(
            row.iter()
                .zip(self.median.iter().zip(&self.scale))
                .map(|(x, (m, s))| ((x - m) / s).clamp(-1e12, 1e12)),
        );
    }

    /// Every row of `m` normalised.
    pub(crate) fn transform_all(&self, m: &Matrix) -> Matrix {
        let mut out = Matrix::new(m.cols());
        let mut row = Vec::new();
        for r in m.iter_rows() {
            self.transform(r, &mut row);
            out.push(&row);
        }
        out
    }
}

/// A row's score and how much each feature contributed to it (non-negative, same order as
/// the features).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Higher is more unusual.
    pub score: f64,
    /// Contribution of each feature.
    pub contributions: Vec<f64>,
}

/// What a stateful detector remembers about one entity (node) between rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityState {
    /// The forecast detector's state.
    pub(crate) forecast: forecast::State,
    /// The ensemble's moving mean of its raw score.
    pub(crate) ensemble: Option<f64>,
    /// EWMA mean and variance per feature (empty until the first row).
    pub(crate) ewma: Vec<(f64, f64)>,
    /// The entity's most recent normalised rows, oldest first (moving median/MAD).
    pub(crate) recent: std::collections::VecDeque<Vec<f64>>,
}

/// A fitted detector of any kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Detector {
    /// See [`forecast::Forecast`] (boxed: it is the largest by far).
    Forecast(Box<forecast::Forecast>),
    /// See [`robust::Mad`].
    Mad(robust::Mad),
    /// See [`robust::Ewma`].
    Ewma(robust::Ewma),
    /// See [`linear::Pca`].
    Pca(linear::Pca),
    /// See [`mixture::Gmm`].
    Gmm(mixture::Gmm),
    /// See [`mixture::KMeans`].
    Kmeans(mixture::KMeans),
    /// See [`iforest::IsolationForest`].
    Iforest(iforest::IsolationForest),
    /// See [`Ensemble`].
    Ensemble(Ensemble),
}

impl Detector {
    /// The kind of this detector.
    pub fn kind(&self) -> DetectorKind {
        match self {
            Self::Forecast(_) => DetectorKind::Forecast,
            Self::Mad(_) => DetectorKind::Mad,
            Self::Ewma(_) => DetectorKind::Ewma,
            Self::Pca(_) => DetectorKind::Pca,
            Self::Gmm(_) => DetectorKind::Gmm,
            Self::Kmeans(_) => DetectorKind::Kmeans,
            Self::Iforest(_) => DetectorKind::Iforest,
            Self::Ensemble(_) => DetectorKind::Ensemble,
        }
    }

    /// Fits a detector of `kind` on normalised training rows (`z`, NaN missing) grouped in
    /// per-entity sequences (`sequences` are row ranges of `z`, each in time order), row `i`
    /// taken at step `steps[i]`.
    fn fit(
        kind: DetectorKind,
        z: &Matrix,
        sequences: &[Range<usize>],
        steps: &[i64],
        options: &FitOptions,
    ) -> Result<Self> {
        let imputed = || map_matrix(z, |v| if v.is_nan() { 0.0 } else { v });
        let capped = || {
            map_matrix(z, |v| {
                if v.is_nan() {
                    0.0
                } else {
                    v.clamp(-Z_CAP, Z_CAP)
                }
            })
        };
        Ok(match kind {
            DetectorKind::Forecast => Self::Forecast(Box::new(forecast::Forecast::fit(
                &map_matrix(z, |v| v.clamp(-Z_CAP, Z_CAP)),
                sequences,
                steps,
            ))),
            DetectorKind::Mad => {
                Self::Mad(robust::Mad::fit(&imputed(), sequences, options.target_fpr))
            }
            DetectorKind::Ewma => {
                Self::Ewma(robust::Ewma::fit(&imputed(), sequences, options.target_fpr))
            }
            DetectorKind::Pca => Self::Pca(linear::Pca::fit(&capped())?),
            DetectorKind::Gmm => Self::Gmm(mixture::Gmm::fit(&capped(), options.seed)?),
            DetectorKind::Kmeans => Self::Kmeans(mixture::KMeans::fit(&capped(), options.seed)?),
            DetectorKind::Iforest => {
                Self::Iforest(iforest::IsolationForest::fit(&capped(), options.seed))
            }
            DetectorKind::Ensemble => Self::Ensemble(Ensemble::fit(z, sequences, steps, options)?),
        })
    }

    /// Scores one normalised row (NaN missing) of an entity at `step` whose state is
    /// `state`. The forecast detector sees missing values as such; the others see them as 0
    /// (the training median), and the multivariate ones see the row clipped to ±[`Z_CAP`], as
    /// in training.
    fn score(&self, step: i64, z: &[f64], state: &mut EntityState) -> Scored {
        let imputed = || -> Vec<f64> {
            z.iter()
                .map(|v| if v.is_nan() { 0.0 } else { *v })
                .collect()
        };
        let capped = || -> Vec<f64> {
            z.iter()
                .map(|v| {
                    if v.is_nan() {
                        0.0
                    } else {
                        v.clamp(-Z_CAP, Z_CAP)
                    }
                })
                .collect()
        };
        match self {
            Self::Forecast(d) => {
                let capped: Vec<f64> = z.iter().map(|v| v.clamp(-Z_CAP, Z_CAP)).collect();
                d.score(step, &capped, &mut state.forecast)
            }
            Self::Mad(d) => d.score(&imputed(), state),
            Self::Ewma(d) => d.score(&imputed(), state),
            Self::Pca(d) => d.score(&capped()),
            Self::Gmm(d) => d.score(&capped()),
            Self::Kmeans(d) => d.score(&capped()),
            Self::Iforest(d) => d.score(&capped()),
            Self::Ensemble(d) => d.score(step, z, state),
        }
    }

    /// Steps into a sequence before the detector's state has settled; training scores
    /// before then do not set thresholds.
    fn warm_up(&self) -> i64 {
        match self {
            Self::Forecast(d) => d.warm_up(),
            Self::Ensemble(d) => d
                .members
                .iter()
                .map(|(m, _)| m.warm_up())
                .max()
                .unwrap_or(0),
            _ => 0,
        }
    }
}

/// `z` with `f` applied to every value.
fn map_matrix(z: &Matrix, f: impl Fn(f64) -> f64) -> Matrix {
    let mut out = Matrix::new(z.cols());
    let mut row = Vec::with_capacity(z.cols());
    for r in z.iter_rows() {
        row.clear();
        row.extend(r.iter().map(|v| f(*v)));
        out.push(&row);
    }
    out
}

/// Scores every sequence of `z` with a fresh state per sequence, in order; returns the scores
/// of the rows past the detector's warm-up (every score if no row is).
fn settled_scores(
    detector: &Detector,
    z: &Matrix,
    sequences: &[Range<usize>],
    steps: &[i64],
) -> Vec<f64> {
    let warm_up = detector.warm_up();
    let (mut settled, mut all) = (Vec::new(), Vec::new());
    for range in sequences {
        let mut state = EntityState::default();
        let first = steps[range.start];
        for i in range.clone() {
            let score = detector.score(steps[i], z.row(i), &mut state).score;
            if steps[i] - first >= warm_up {
                settled.push(score);
            }
            all.push(score);
        }
    }
    if settled.is_empty() { all } else { settled }
}

/// The threshold that `target_fpr` of `scores` exceed; never below the smallest positive
/// score seen, so a constant training score does not flag every row.
fn learn_threshold(scores: &[f64], target_fpr: f64) -> f64 {
    let q = quantile(scores, 1.0 - target_fpr.clamp(0.0, 0.5)).unwrap_or(0.0);
    if q > 0.0 { q } else { f64::MIN_POSITIVE }
}

/// Members of the ensemble: the temporal default, one linear and one tree-based detector; each
/// sees a different kind of departure (a break from the entity's own past, from the training
/// data's correlations, from the training data's range), and their errors are not the same.
const ENSEMBLE_MEMBERS: [DetectorKind; 3] = [
    DetectorKind::Forecast,
    DetectorKind::Pca,
    DetectorKind::Iforest,
];

/// Largest multiple of its threshold one ensemble member counts as, so a member whose
/// training scores were all 0 (threshold ~0) keeps the ensemble's score finite.
const MEMBER_RATIO_CAP: f64 = 1e6;

/// The mean of its members' scores, each divided by the member's own threshold (so 1 is
/// "at that member's threshold"), smoothed over the entity's recent rows as the forecast
/// detector's score is ([`forecast::HALF_LIFE`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    /// Fitted members and their thresholds.
    pub members: Vec<(Detector, f64)>,
}

impl Ensemble {
    fn fit(
        z: &Matrix,
        sequences: &[Range<usize>],
        steps: &[i64],
        options: &FitOptions,
    ) -> Result<Self> {
        let mut members = Vec::new();
        for kind in ENSEMBLE_MEMBERS {
            let detector = Detector::fit(kind, z, sequences, steps, options)?;
            let scores = settled_scores(&detector, z, sequences, steps);
            let threshold = learn_threshold(&scores, options.target_fpr);
            members.push((detector, threshold));
        }
        Ok(Self { members })
    }

    fn score(&self, step: i64, z: &[f64], state: &mut EntityState) -> Scored {
        let mut total = 0.0;
        let mut contributions = vec![0.0; z.len()];
        for (detector, threshold) in &self.members {
            let scored = detector.score(step, z, state);
            total += (scored.score / threshold).min(MEMBER_RATIO_CAP);
            let sum: f64 = scored.contributions.iter().sum();
            if sum > 0.0 {
                for (c, m) in contributions.iter_mut().zip(&scored.contributions) {
                    *c += m / sum;
                }
            }
        }
        Scored {
            score: forecast::smooth(
                total / self.members.len().max(1) as f64,
                &mut state.ensemble,
            ),
            contributions,
        }
    }
}

/// A detector with its normalisation, feature names and learned threshold: everything
/// needed to score raw rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fitted {
    /// Feature names, in column order.
    pub features: Vec<String>,
    /// Normalisation learned from the training rows.
    pub scaler: Scaler,
    /// The fitted detector.
    pub detector: Detector,
    /// Scores above this are anomalies.
    pub threshold: f64,
    /// The options of the fit.
    pub options: FitOptions,
}

impl Fitted {
    /// Fits a `kind` detector on `train`, whose rows are grouped in per-entity `sequences`
    /// (ranges of rows, each in time order; pass `[0..rows]` for one entity) and taken at
    /// `steps` (one per row: the window's index in time; `0..rows` for consecutive rows),
    /// and learns its threshold from the training scores past the detector's warm-up.
    ///
    /// Fewer than 2 rows or no feature is an [`crate::Error::EmptyTraining`]. A feature
    /// constant in training is judged in the scale of [`Scaler`]; if every training score is
    /// 0 (all features constant), any change scores above the threshold.
    pub fn fit(
        kind: DetectorKind,
        features: Vec<String>,
        train: &Matrix,
        sequences: &[Range<usize>],
        steps: &[i64],
        options: FitOptions,
    ) -> Result<Self> {
        ensure!(
            train.rows() >= 2 && train.cols() >= 1,
            EmptyTrainingSnafu {
                rows: train.rows(),
                cols: train.cols()
            }
        );
        ensure!(
            steps.len() == train.rows()
                && sequences
                    .iter()
                    .all(|r| r.start < r.end && r.end <= train.rows()),
            SpecSnafu {
                message: format!(
                    "{} steps and sequences {sequences:?} for {} training rows",
                    steps.len(),
                    train.rows()
                )
            }
        );
        let scaler = Scaler::fit(train);
        let z = scaler.transform_all(train);
        let detector = Detector::fit(kind, &z, sequences, steps, &options)?;
        let scores = settled_scores(&detector, &z, sequences, steps);
        let threshold = learn_threshold(&scores, options.target_fpr);
        Ok(Self {
            features,
            scaler,
            detector,
            threshold,
            options,
        })
    }

    /// Scores one raw row (NaN = missing) of the entity whose state is `state`, taken at
    /// `step` (counted as in training: see [`Fitted::fit`]).
    pub fn score(&self, step: i64, row: &[f64], state: &mut EntityState) -> Scored {
        let mut z = Vec::with_capacity(row.len());
        self.scaler.transform(row, &mut z);
        self.detector.score(step, &z, state)
    }

    /// The `k` features that contributed most to `scored`, largest first, with their share
    /// of the total contribution, rounded to three decimals (as stored in anomaly events, so
    /// an anomaly read back from the store equals the one scored).
    pub fn explain(&self, scored: &Scored, k: usize) -> Vec<(String, f64)> {
        let total: f64 = scored.contributions.iter().sum();
        let mut ranked: Vec<(usize, f64)> =
            scored.contributions.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked
            .into_iter()
            .take(k)
            .filter(|(_, c)| *c > 0.0)
            .map(|(j, c)| {
                let share = if total > 0.0 { c / total } else { 0.0 };
                (self.features[j].clone(), (share * 1000.0).round() / 1000.0)
            })
            .collect()
    }
}
