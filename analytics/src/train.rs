//! Training a model from the store: aggregate the training range into feature rows, fit
//! the detector (on a blocking thread), save it as the next version.

use std::collections::BTreeSet;

use exawatch_store::Store;
use serde::{Deserialize, Serialize};
use snafu::ensure;

use crate::detect::{DEFAULT_DETECTOR, DetectorKind, FitOptions, Fitted};
use crate::features::{self, FeatureSpec};
use crate::model::{self, Model, ModelInfo};
use crate::time::parse_time;
use crate::{EmptyTrainingSnafu, Result, SpecSnafu};
use exawatch_protocol::time::now_ns;

/// What to train: the body of `POST /api/v1/models` and the flags of `exawatch train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// Model name; a new version if it exists.
    pub name: String,
    /// Detector kind (default: the live default, [`DEFAULT_DETECTOR`]).
    #[serde(default = "default_detector")]
    pub detector: DetectorKind,
    /// Series, grouping and window.
    #[serde(default, flatten)]
    pub spec: FeatureSpec,
    /// Training range start: RFC 3339, Unix seconds, `now` or `-1h`-style.
    pub from: String,
    /// Training range end (default `now`).
    #[serde(default = "default_to")]
    pub to: String,
    /// Target false-positive rate of the threshold.
    #[serde(default = "default_fpr")]
    pub target_fpr: f64,
}

fn default_detector() -> DetectorKind {
    DEFAULT_DETECTOR
}

fn default_to() -> String {
    "now".to_owned()
}

fn default_fpr() -> f64 {
    FitOptions::default().target_fpr
}

/// Trains and saves a model; returns its metadata.
pub async fn train(
    store: &Store,
    request: &TrainRequest,
    memory_bytes: usize,
) -> Result<ModelInfo> {
    model::check_name(&request.name)?;
    request.spec.validate()?;
    let now = now_ns();
    let from_ns = parse_time(&request.from, now)?;
    let to_ns = parse_time(&request.to, now)?;
    ensure!(
        from_ns < to_ns,
        SpecSnafu {
            message: format!(
                "the training range is empty ({} to {})",
                request.from, request.to
            )
        }
    );
    ensure!(
        request.target_fpr > 0.0 && request.target_fpr < 0.5,
        SpecSnafu {
            message: format!("target_fpr {} is not between 0 and 0.5", request.target_fpr)
        }
    );
    let aggregates =
        features::aggregate(store, &request.spec, from_ns, to_ns, memory_bytes).await?;
    let columns = features::training_columns(&aggregates);
    let frame = features::pivot(&aggregates, &columns);
    ensure!(
        frame.matrix.rows() >= 2 && !columns.is_empty(),
        EmptyTrainingSnafu {
            rows: frame.matrix.rows(),
            cols: columns.len()
        }
    );
    let entities = frame
        .keys
        .iter()
        .map(|k| k.1.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    let names: Vec<String> = columns.iter().map(|c| c.name()).collect();
    let kind = request.detector;
    let options = FitOptions {
        target_fpr: request.target_fpr,
        ..FitOptions::default()
    };
    let window_ns = request.spec.window_ns();
    let fitted = tokio::task::spawn_blocking(move || {
        let sequences = frame.sequences();
        let steps = frame.steps(window_ns);
        Fitted::fit(kind, names, &frame.matrix, &sequences, &steps, options)
            .map(|f| (f, frame.matrix.rows()))
    })
    .await
    .map_err(|e| crate::Error::Task {
        message: e.to_string(),
    })??;
    let (fitted, rows) = fitted;
    let mut model = Model {
        info: ModelInfo {
            name: request.name.clone(),
            version: 0,
            detector: kind,
            created_ns: now,
            spec: request.spec.clone(),
            features: fitted.features.clone(),
            threshold: fitted.threshold,
            target_fpr: request.target_fpr,
            from_ns,
            to_ns,
            rows,
            entities,
        },
        columns,
        fitted,
    };
    model::save(store, &mut model).await?;
    tracing::info!(model = %model.info.name, version = model.info.version, detector = %kind, rows, entities, features = model.columns.len(), "Trained a model.");
    Ok(model.info)
}
