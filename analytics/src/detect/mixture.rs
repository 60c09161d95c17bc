//! Density and cluster detectors: a Gaussian mixture (score = negative log-likelihood) and
//! k-means (score = distance to the nearest centroid), both started from linfa-clustering's
//! k-means.
//!
//! The mixture's EM is written here rather than taken from linfa: linfa 0.8's E-step sums
//! `exp(log p)` without subtracting the largest term first, so a training row far from every
//! component (routine in real telemetry: one metric 30 scales out) underflows to `ln 0`, the
//! responsibilities become NaN and the fit fails ("Undefined ordering"). Here the E-step is a
//! proper log-sum-exp, so such rows simply belong to their nearest component.

use linfa::DatasetBase;
use linfa::traits::{Fit, Predict};
use linfa_clustering::KMeans as LinfaKMeans;
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use super::Scored;
use crate::matrix::Matrix;
use crate::{KMeansSnafu, Result, SpecSnafu};

/// Most mixture components; fewer when there are few training rows.
const GMM_COMPONENTS: usize = 4;
/// Most k-means clusters; fewer when there are few training rows.
const KMEANS_CLUSTERS: usize = 8;
/// Added to the covariance diagonal (normalised units), so a feature that is constant in
/// training does not make the covariance singular.
const REG_COVARIANCE: f64 = 1e-2;
/// EM stops when the mean log-likelihood improves by less than this.
const EM_TOLERANCE: f64 = 1e-3;
/// EM stops after this many iterations at the latest.
const EM_MAX_ITERATIONS: usize = 200;
/// A component whose responsibilities sum to fewer rows than this is dropped.
const MIN_COMPONENT_ROWS: f64 = 1.0;

/// One Gaussian component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// Mixture weight.
    pub weight: f64,
    /// Mean.
    pub mean: Vec<f64>,
    /// Precision matrix (inverse covariance), row-major.
    pub precision: Vec<f64>,
    /// log det of the covariance.
    pub log_det: f64,
}

impl Component {
    /// The component with weight `weight`, mean `mean` and covariance `covariance`
    /// (row-major, `d`×`d`, positive definite); `None` if it is not.
    fn new(weight: f64, mean: Vec<f64>, covariance: &[f64]) -> Option<Self> {
        let d = mean.len();
        let l = cholesky(covariance, d)?;
        let log_det = (0..d).map(|i| 2.0 * l[i * d + i].ln()).sum();
        Some(Self {
            weight,
            mean,
            precision: inverse_from_cholesky(&l, d),
            log_det,
        })
    }

    /// ln(weight · N(z; mean, covariance)), and each feature's term of the Mahalanobis
    /// distance (`diff_i · (P · diff)_i`).
    fn log_density(&self, z: &[f64], terms: &mut Vec<f64>) -> f64 {
        let d = z.len();
        terms.clear();
        let diff: Vec<f64> = z.iter().zip(&self.mean).map(|(x, m)| x - m).collect();
        let mut mahalanobis = 0.0;
        for i in 0..d {
            let p_diff: f64 = (0..d).map(|j| self.precision[i * d + j] * diff[j]).sum();
            terms.push(diff[i] * p_diff);
            mahalanobis += diff[i] * p_diff;
        }
        self.weight.max(1e-300).ln()
            - 0.5 * (d as f64 * (2.0 * std::f64::consts::PI).ln() + self.log_det + mahalanobis)
    }
}

/// A Gaussian mixture with full covariances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gmm {
    /// The components.
    pub components: Vec<Component>,
}

impl Gmm {
    /// Fits by EM, starting from linfa's k-means partition of the rows.
    pub(crate) fn fit(z: &Matrix, seed: u64) -> Result<Self> {
        let (n, d) = (z.rows(), z.cols());
        let k = GMM_COMPONENTS.min(n / 20).max(1);
        let dataset = DatasetBase::from(z.to_array());
        let kmeans = LinfaKMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(seed))
            .max_n_iterations(100)
            .tolerance(1e-4)
            .fit(&dataset)
            .context(KMeansSnafu)?;
        let assigned = kmeans.predict(dataset.records());
        // Responsibilities, row-major n × k.
        let mut resp = vec![0.0; n * k];
        for (i, c) in assigned.iter().enumerate() {
            resp[i * k + c] = 1.0;
        }
        let mut components = m_step(z, &resp, k);
        snafu::ensure!(
            !components.is_empty(),
            SpecSnafu {
                message: "Gaussian mixture: no component could be fitted (non-finite training data)"
            }
        );
        let mut previous = f64::NEG_INFINITY;
        let mut terms = Vec::with_capacity(d);
        for _ in 0..EM_MAX_ITERATIONS {
            // E-step: responsibilities by log-sum-exp.
            let k = components.len();
            resp.clear();
            resp.resize(n * k, 0.0);
            let mut log_likelihood = 0.0;
            for (i, row) in z.iter_rows().enumerate() {
                let logs = &mut resp[i * k..(i + 1) * k];
                for (c, component) in components.iter().enumerate() {
                    logs[c] = component.log_density(row, &mut terms);
                }
                let total = log_sum_exp(logs);
                log_likelihood += total;
                for l in logs.iter_mut() {
                    *l = (*l - total).exp();
                }
            }
            log_likelihood /= n.max(1) as f64;
            let next = m_step(z, &resp, k);
            if next.is_empty() {
                break;
            }
            components = next;
            if (log_likelihood - previous).abs() < EM_TOLERANCE {
                break;
            }
            previous = log_likelihood;
        }
        Ok(Self { components })
    }

    pub(crate) fn score(&self, z: &[f64]) -> Scored {
        let mut best = (f64::NEG_INFINITY, Vec::new());
        let mut log_terms = Vec::with_capacity(self.components.len());
        let mut terms = Vec::with_capacity(z.len());
        for c in &self.components {
            let log_p = c.log_density(z, &mut terms);
            if log_p > best.0 {
                best = (log_p, terms.clone());
            }
            log_terms.push(log_p);
        }
        Scored {
            score: -log_sum_exp(&log_terms),
            contributions: best.1.into_iter().map(|t| t.max(0.0)).collect(),
        }
    }
}

/// ln Σ exp(xᵢ), computed without overflow or underflow; −∞ for no terms.
fn log_sum_exp(x: &[f64]) -> f64 {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// M-step: the components given responsibilities `resp` (n × k, row-major); components
/// with almost no rows, or whose covariance is not positive definite, are left out.
fn m_step(z: &Matrix, resp: &[f64], k: usize) -> Vec<Component> {
    let (n, d) = (z.rows(), z.cols());
    let mut components = Vec::with_capacity(k);
    for c in 0..k {
        let weight_sum: f64 = (0..n).map(|i| resp[i * k + c]).sum();
        if weight_sum.is_nan() || weight_sum < MIN_COMPONENT_ROWS {
            continue;
        }
        let mut mean = vec![0.0; d];
        for (i, row) in z.iter_rows().enumerate() {
            let r = resp[i * k + c];
            for (m, x) in mean.iter_mut().zip(row) {
                *m += r * x;
            }
        }
        mean.iter_mut().for_each(|m| *m /= weight_sum);
        let mut covariance = vec![0.0; d * d];
        let mut diff = vec![0.0; d];
        for (i, row) in z.iter_rows().enumerate() {
            let r = resp[i * k + c];
            if r == 0.0 {
                continue;
            }
            for ((t, x), m) in diff.iter_mut().zip(row).zip(&mean) {
                *t = x - m;
            }
            for a in 0..d {
                let ra = r * diff[a];
                for b in 0..=a {
                    covariance[a * d + b] += ra * diff[b];
                }
            }
        }
        for a in 0..d {
            for b in 0..=a {
                let v = covariance[a * d + b] / weight_sum;
                covariance[a * d + b] = v;
                covariance[b * d + a] = v;
            }
            covariance[a * d + a] += REG_COVARIANCE;
        }
        if let Some(component) = Component::new(weight_sum / n as f64, mean, &covariance) {
            components.push(component);
        }
    }
    components
}

/// The lower-triangular Cholesky factor `L` (row-major) of a symmetric positive definite
/// `d`×`d` matrix, `A = L·Lᵀ`; `None` if it is not positive definite.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - sum;
                if !v.is_finite() || v <= 0.0 {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - sum) / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// `A⁻¹ = L⁻ᵀ·L⁻¹` from the Cholesky factor `L` of `A` (row-major, `d`×`d`).
fn inverse_from_cholesky(l: &[f64], d: usize) -> Vec<f64> {
    // L⁻¹ by forward substitution, column by column.
    let mut inv_l = vec![0.0; d * d];
    for col in 0..d {
        for i in col..d {
            let sum: f64 = (col..i).map(|k| l[i * d + k] * inv_l[k * d + col]).sum();
            let rhs = if i == col { 1.0 } else { 0.0 };
            inv_l[i * d + col] = (rhs - sum) / l[i * d + i];
        }
    }
    let mut out = vec![0.0; d * d];
    for a in 0..d {
        for b in 0..=a {
            // (L⁻ᵀ L⁻¹)[a][b] = Σ_k L⁻¹[k][a] · L⁻¹[k][b], k ≥ max(a, b) = a.
            let v: f64 = (a..d).map(|k| inv_l[k * d + a] * inv_l[k * d + b]).sum();
            out[a * d + b] = v;
            out[b * d + a] = v;
        }
    }
    out
}

/// k-means centroids of the normalised training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KMeans {
    /// The centroids.
    pub centroids: Vec<Vec<f64>>,
}

impl KMeans {
    pub(crate) fn fit(z: &Matrix, seed: u64) -> Result<Self> {
        let k = KMEANS_CLUSTERS.min(z.rows() / 10).max(1);
        let dataset = DatasetBase::from(z.to_array());
        let model = LinfaKMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(seed))
            .max_n_iterations(100)
            .tolerance(1e-4)
            .fit(&dataset)
            .context(KMeansSnafu)?;
        Ok(Self {
            centroids: model
                .centroids()
                .rows()
                .into_iter()
                .map(|r| r.to_vec())
                .collect(),
        })
    }

    pub(crate) fn score(&self, z: &[f64]) -> Scored {
        let mut best = (f64::INFINITY, Vec::new());
        for c in &self.centroids {
            let terms: Vec<f64> = z.iter().zip(c).map(|(x, m)| (x - m).powi(2)).collect();
            let distance: f64 = terms.iter().sum();
            if distance < best.0 {
                best = (distance, terms);
            }
        }
        Scored {
            score: best.0.sqrt(),
            contributions: best.1,
        }
    }
}
