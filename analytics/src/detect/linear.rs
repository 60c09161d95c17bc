//! PCA reconstruction error (linfa-reduction): normal rows lie close to the subspace of the
//! training data's main components; the squared residual of each feature is its
//! contribution. At most `features − 1` components are kept, so a univariate model scores
//! the squared distance from the training mean.

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_reduction::Pca as LinfaPca;
use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use super::Scored;
use crate::matrix::Matrix;
use crate::{PcaSnafu, Result};

/// Share of the training variance the kept components explain.
const EXPLAINED: f64 = 0.9;

/// Principal components of normalised training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pca {
    /// Mean of each feature.
    pub mean: Vec<f64>,
    /// Kept components, each a unit vector over the features.
    pub components: Vec<Vec<f64>>,
}

impl Pca {
    pub(crate) fn fit(z: &Matrix) -> Result<Self> {
        let dims = z.cols().min(z.rows().saturating_sub(1)).max(1);
        let dataset = DatasetBase::from(z.to_array());
        let pca = LinfaPca::params(dims)
            .whiten(false)
            .fit(&dataset)
            .context(PcaSnafu)?;
        // explained_variance_ratio() is NaN with one component: compute the shares here.
        let variance = pca.explained_variance();
        let total: f64 = variance.iter().sum();
        let mut keep = variance.len();
        if total > 0.0 {
            let mut cumulative = 0.0;
            for (i, v) in variance.iter().enumerate() {
                cumulative += v / total;
                if cumulative >= EXPLAINED {
                    keep = i + 1;
                    break;
                }
            }
        }
        // Keep at least one residual dimension: with one feature no component is kept and the
        // score is the squared distance from the training mean (reconstructing a single
        // feature from itself would score every row 0).
        keep = keep.min(z.cols() - 1);
        let components = pca
            .components()
            .rows()
            .into_iter()
            .take(keep)
            .map(|r| r.to_vec())
            .collect();
        Ok(Self {
            mean: pca.mean().to_vec(),
            components,
        })
    }

    pub(crate) fn score(&self, z: &[f64]) -> Scored {
        let centred: Vec<f64> = z.iter().zip(&self.mean).map(|(x, m)| x - m).collect();
        let mut residual = centred.clone();
        for component in &self.components {
            let projection: f64 = centred.iter().zip(component).map(|(x, c)| x * c).sum();
            for (r, c) in residual.iter_mut().zip(component) {
                *r -= projection * c;
            }
        }
        let contributions: Vec<f64> = residual.iter().map(|r| r * r).collect();
        Scored {
            score: contributions.iter().sum(),
            contributions,
        }
    }
}
