//! Density and cluster detectors fitted with linfa-clustering: a Gaussian mixture (score =
//! negative log-likelihood) and k-means (score = distance to the nearest centroid).

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::{GaussianMixtureModel, KMeans as LinfaKMeans};
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use super::Scored;
use crate::matrix::Matrix;
use crate::{GmmSnafu, KMeansSnafu, Result};

/// Most mixture components; fewer when there are few training rows.
const GMM_COMPONENTS: usize = 4;
/// Most k-means clusters; fewer when there are few training rows.
const KMEANS_CLUSTERS: usize = 8;
/// Added to the covariance diagonal (normalised units), so a feature that is constant in
/// training does not make the covariance singular.
const REG_COVARIANCE: f64 = 1e-2;

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

/// A Gaussian mixture with full covariances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gmm {
    /// The components.
    pub components: Vec<Component>,
}

impl Gmm {
    pub(crate) fn fit(z: &Matrix, seed: u64) -> Result<Self> {
        let dataset = DatasetBase::from(z.to_array());
        // linfa's EM can break down (an empty component gives NaN); fewer components then.
        let mut k = GMM_COMPONENTS.min(z.rows() / 20).max(1);
        let gmm = loop {
            let fit = GaussianMixtureModel::params(k)
                .n_runs(1)
                .tolerance(1e-3)
                .max_n_iterations(200)
                .reg_covariance(REG_COVARIANCE)
                .with_rng(Xoshiro256Plus::seed_from_u64(seed))
                .fit(&dataset);
            match fit {
                Ok(gmm) if gmm.weights().iter().all(|w| w.is_finite()) => break gmm,
                Err(_) | Ok(_) if k > 1 => k -= 1,
                other => break other.context(GmmSnafu)?,
            }
        };
        let d = z.cols();
        let mut components = Vec::new();
        for c in 0..k {
            let covariance: Vec<f64> = gmm
                .covariances()
                .slice(ndarray::s![c, .., ..])
                .iter()
                .copied()
                .collect();
            let log_det = cholesky_log_det(&covariance, d).unwrap_or(0.0);
            components.push(Component {
                weight: gmm.weights()[c],
                mean: gmm.means().row(c).to_vec(),
                precision: gmm
                    .precisions()
                    .slice(ndarray::s![c, .., ..])
                    .iter()
                    .copied()
                    .collect(),
                log_det,
            });
        }
        Ok(Self { components })
    }

    pub(crate) fn score(&self, z: &[f64]) -> Scored {
        let d = z.len();
        let mut best = (f64::NEG_INFINITY, Vec::new());
        let mut log_terms = Vec::with_capacity(self.components.len());
        for c in &self.components {
            let diff: Vec<f64> = z.iter().zip(&c.mean).map(|(x, m)| x - m).collect();
            let mut terms = vec![0.0; d];
            let mut mahalanobis = 0.0;
            for i in 0..d {
                let p_diff: f64 = (0..d).map(|j| c.precision[i * d + j] * diff[j]).sum();
                terms[i] = diff[i] * p_diff;
                mahalanobis += terms[i];
            }
            let log_p = c.weight.max(1e-300).ln()
                - 0.5 * (d as f64 * (2.0 * std::f64::consts::PI).ln() + c.log_det + mahalanobis);
            if log_p > best.0 {
                best = (log_p, terms);
            }
            log_terms.push(log_p);
        }
        let max = log_terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_likelihood = max + log_terms.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        Scored {
            score: -log_likelihood,
            contributions: best.1.into_iter().map(|t| t.max(0.0)).collect(),
        }
    }
}

/// log det of a symmetric positive definite `d`×`d` matrix, by Cholesky.
fn cholesky_log_det(a: &[f64], d: usize) -> Option<f64> {
    let mut l = vec![0.0; d * d];
    let mut log_det = 0.0;
    for i in 0..d {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - sum;
                if v <= 0.0 {
                    return None;
                }
                l[i * d + i] = v.sqrt();
                log_det += 2.0 * v.sqrt().ln();
            } else {
                l[i * d + j] = (a[i * d + j] - sum) / l[j * d + j];
            }
        }
    }
    Some(log_det)
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
