//! The default detector: how far each feature is from two forecasts of it, scored so that
//! the score ranks unusual rows above usual ones on data it was not tuned on.
//!
//! For every row of an entity (normalised by the model's [`super::Scaler`], capped at
//! ±[`super::Z_CAP`]):
//! 1. Two forecasts per feature, from the entity's own past: the *recent* one, an
//!    exponentially weighted mean of its previous rows (weight [`RECENT_WEIGHT`]); and, when
//!    the training data repeat with a period (see [`season`]), the *seasonal* one, the median
//!    of the same phase in the last [`season::SEASONS`] periods.
//! 2. Each forecast's residual is normalised per feature by the median and scale of that
//!    residual in training (the same robust rule as the [`super::Scaler`]), capped, and
//!    divided by its [`CALIBRATION`] quantile in training (at least 1), so a feature that is
//!    naturally jumpy does not drown the others.
//! 3. A forecast's score is the mean of the [`TOP_FEATURES`] largest calibrated deviations,
//!    divided by its [`MEMBER_LEVEL`] quantile in training; the row's raw score is the mean
//!    over the forecasts.
//! 4. The score is half the raw score and half its exponentially weighted mean over the
//!    entity's recent rows (half-life [`HALF_LIFE`] rows): a lasting departure keeps scoring,
//!    a lone spike still shows.
//!
//! Every statistic is taken from training rows whose forecasts have settled
//! ([`RECENT_WARM_UP`] rows into a sequence, and `SEASONS` periods for the seasonal one).
//! Until an entity's forecasts have settled (its first rows when scoring starts, a phase it
//! does not remember yet) each is replaced by what training knows: the training median for
//! the recent forecast, the training profile of the phase for the seasonal one, each judged
//! by its own training residuals, so a node already unusual when scoring starts is seen as
//! such and a usual one is not.
//! How each constant was chosen is stated in the README ("Anomaly detection and reports").
//! A feature's contribution is its calibrated deviation, averaged over the forecasts.

pub mod season;
#[cfg(test)]
mod tests;

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::{Scaler, Scored, Z_CAP};
use crate::matrix::{Matrix, quantile};
use season::{Memory, SEASONS, Season};

/// Weight of the newest row in the recent forecast (it remembers about the last 10 rows).
pub const RECENT_WEIGHT: f64 = 0.1;
/// Rows into a sequence before the recent forecast counts as settled.
pub const RECENT_WARM_UP: i64 = 10;
/// Quantile of a feature's deviations in training that calibrates it to 1.
pub const CALIBRATION: f64 = 0.99;
/// Features whose deviations make a forecast's score (fewer if the model has fewer).
pub const TOP_FEATURES: usize = 3;
/// Quantile of a forecast's training scores that scales it to 1 before the forecasts are
/// averaged.
pub const MEMBER_LEVEL: f64 = 0.999;
/// Half-life, in rows, of the score's moving mean.
pub const HALF_LIFE: f64 = 24.0;

/// How one forecast's residuals are judged: per-feature robust normalisation and calibration
/// from training, and the scale of its scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Residuals {
    /// Median and scale of each feature's residual in training.
    pub scaler: Scaler,
    /// Per feature, the [`CALIBRATION`] quantile of its normalised residual (at least 1).
    pub calibration: Vec<f64>,
    /// The [`MEMBER_LEVEL`] quantile of this forecast's training scores.
    pub level: f64,
}

impl Residuals {
    /// Learns the judgement from training residuals (rows of `residuals`).
    fn fit(residuals: &Matrix) -> Self {
        let mut judged = Self {
            scaler: Scaler::fit(residuals),
            calibration: vec![1.0; residuals.cols()],
            level: 1.0,
        };
        let deviations: Vec<Vec<f64>> = residuals
            .iter_rows()
            .map(|r| judged.deviations(r))
            .collect();
        judged.calibration = (0..residuals.cols())
            .map(|j| {
                let column: Vec<f64> = deviations.iter().map(|d| d[j]).collect();
                quantile(&column, CALIBRATION).unwrap_or(1.0).max(1.0)
            })
            .collect();
        let scores: Vec<f64> = residuals
            .iter_rows()
            .map(|r| top_mean(&judged.deviations(r)))
            .collect();
        judged.level = quantile(&scores, MEMBER_LEVEL)
            .filter(|l| *l > 0.0)
            .unwrap_or(1.0);
        judged
    }

    /// Calibrated absolute deviations of a residual row (a missing residual deviates by 0).
    fn deviations(&self, residual: &[f64]) -> Vec<f64> {
        residual
            .iter()
            .zip(&self.scaler.median)
            .zip(&self.scaler.scale)
            .zip(&self.calibration)
            .map(|(((r, m), s), c)| {
                if r.is_finite() {
                    ((r - m) / s).abs().min(Z_CAP) / c
                } else {
                    0.0
                }
            })
            .collect()
    }
}

/// The mean of the [`TOP_FEATURES`] largest values.
fn top_mean(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let k = TOP_FEATURES.min(sorted.len()).max(1);
    sorted.iter().take(k).sum::<f64>() / k as f64
}

/// The seasonal forecast: its period and how its residuals are judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seasonal {
    /// The period found in training.
    pub season: Season,
    /// Judgement of its residuals once the entity remembers the phase.
    pub residuals: Residuals,
    /// Judgement of the residuals from the training profile, the forecast of a phase the
    /// entity does not remember yet.
    pub profile: Residuals,
}

/// The fitted detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Judgement of an entity's first [`RECENT_WARM_UP`] rows, before its recent forecast
    /// has settled: their distance from the training median.
    pub cold: Residuals,
    /// Judgement of the recent forecast's residuals.
    pub recent: Residuals,
    /// The seasonal forecast, if the training data have a period.
    pub seasonal: Option<Seasonal>,
}

/// What the detector remembers about one entity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// Rows seen (up to [`RECENT_WARM_UP`]).
    rows: i64,
    /// The recent forecast of each feature (empty before the first row).
    recent: Vec<f64>,
    /// The last periods, for the seasonal forecast.
    memory: Memory,
    /// The moving mean of the raw score (`None` before the first row).
    smoothed: Option<f64>,
}

/// A row's residual against one forecast, and whether the forecast came from the entity's
/// own past (settled) or from training (its first rows, a phase it does not remember).
struct Residual {
    values: Vec<f64>,
    settled: bool,
}

impl Forecast {
    /// Fits on capped normalised training rows `z` (NaN missing), grouped in per-entity
    /// `sequences`, row `i` taken at step `steps[i]`.
    pub(crate) fn fit(z: &Matrix, sequences: &[Range<usize>], steps: &[i64]) -> Self {
        let season = Season::detect(z, steps);
        // Each forecast's residuals on the training rows where it comes from the entity's
        // past and has settled (all rows if none has), and the seasonal residuals from the
        // training profile.
        let mut recent = (Matrix::new(z.cols()), Matrix::new(z.cols()));
        let mut seasonal = (Matrix::new(z.cols()), Matrix::new(z.cols()));
        let mut profile = Matrix::new(z.cols());
        for range in sequences {
            let mut state = State::default();
            let first = steps[range.start];
            for i in range.clone() {
                let (step, row) = (steps[i], z.row(i));
                let offset = step - first;
                let residual = recent_residual(row, &mut state);
                push(&mut recent, residual.settled, &residual.values);
                if let Some(season) = &season {
                    let from_profile: Vec<f64> = row
                        .iter()
                        .zip(&season.profile[season.bin(step)])
                        .map(|(x, f)| x - f)
                        .collect();
                    profile.push(&from_profile);
                    let residual = seasonal_residual(season, step, row, &mut state);
                    let settled = residual.settled && offset >= SEASONS as i64 * season.period;
                    push(&mut seasonal, settled, &residual.values);
                }
            }
        }
        Self {
            cold: Residuals::fit(z),
            recent: Residuals::fit(settled_or_all(&recent)),
            seasonal: season.map(|season| Seasonal {
                season,
                residuals: Residuals::fit(settled_or_all(&seasonal)),
                profile: Residuals::fit(&profile),
            }),
        }
    }

    /// Steps into a sequence before every forecast has settled (training scores before
    /// then do not set the threshold).
    pub(crate) fn warm_up(&self) -> i64 {
        self.seasonal.as_ref().map_or(RECENT_WARM_UP, |s| {
            RECENT_WARM_UP.max(SEASONS as i64 * s.season.period)
        })
    }

    /// Scores the capped normalised row `z` (NaN missing) of an entity at `step`.
    pub(crate) fn score(&self, step: i64, z: &[f64], state: &mut State) -> Scored {
        let recent = recent_residual(z, state);
        let mut members = vec![(
            if recent.settled {
                &self.recent
            } else {
                &self.cold
            },
            recent.values,
        )];
        if let Some(seasonal) = &self.seasonal {
            let residual = seasonal_residual(&seasonal.season, step, z, state);
            let judge = if residual.settled {
                &seasonal.residuals
            } else {
                &seasonal.profile
            };
            members.push((judge, residual.values));
        }
        let share = 1.0 / members.len() as f64;
        let mut raw = 0.0;
        let mut contributions = vec![0.0; z.len()];
        for (judge, residual) in members {
            let deviations = judge.deviations(&residual);
            raw += share * top_mean(&deviations) / judge.level;
            for (c, d) in contributions.iter_mut().zip(&deviations) {
                *c += share * d / judge.level;
            }
        }
        Scored {
            score: smooth(raw, &mut state.smoothed),
            contributions,
        }
    }
}

/// Half `raw` and half its exponentially weighted mean over the entity's rows so far
/// (half-life [`HALF_LIFE`] rows), whose running value is `mean` (`None` before the first
/// row).
pub(crate) fn smooth(raw: f64, mean: &mut Option<f64>) -> f64 {
    let weight = 1.0 - 0.5f64.powf(1.0 / HALF_LIFE);
    let updated = mean.map_or(raw, |m| m + weight * (raw - m));
    *mean = Some(updated);
    0.5 * raw + 0.5 * updated
}

/// The row's residual against the recent forecast, then the row goes into it. During the
/// entity's first [`RECENT_WARM_UP`] rows the forecast is still settling: the residual is
/// then the row's distance from the training median (unsettled).
fn recent_residual(z: &[f64], state: &mut State) -> Residual {
    if state.recent.len() != z.len() {
        // First row of this entity: the forecast starts at the row itself.
        state.recent = z
            .iter()
            .map(|v| if v.is_finite() { *v } else { 0.0 })
            .collect();
        state.rows = 0;
    }
    let settled = state.rows >= RECENT_WARM_UP;
    let values = if settled {
        z.iter().zip(&state.recent).map(|(x, f)| x - f).collect()
    } else {
        z.to_vec()
    };
    for (forecast, x) in state.recent.iter_mut().zip(z) {
        if x.is_finite() {
            *forecast += RECENT_WEIGHT * (x - *forecast);
        }
    }
    state.rows = (state.rows + 1).min(RECENT_WARM_UP);
    Residual { values, settled }
}

/// The row's residual against the seasonal forecast, then the row goes into the entity's
/// memory; unsettled if the forecast is the training profile (a phase not remembered).
fn seasonal_residual(season: &Season, step: i64, z: &[f64], state: &mut State) -> Residual {
    let mut forecast = Vec::with_capacity(z.len());
    let settled = state.memory.forecast(season, step, &mut forecast);
    state.memory.remember(season, step, z);
    Residual {
        values: z.iter().zip(&forecast).map(|(x, f)| x - f).collect(),
        settled,
    }
}

/// Adds `row` to the settled or the unsettled residuals.
fn push(residuals: &mut (Matrix, Matrix), settled: bool, row: &[f64]) {
    if settled {
        residuals.0.push(row);
    } else {
        residuals.1.push(row);
    }
}

/// The settled residuals, or every residual if no row settled (short training data).
fn settled_or_all(residuals: &(Matrix, Matrix)) -> &Matrix {
    if residuals.0.rows() > 0 {
        &residuals.0
    } else {
        &residuals.1
    }
}
