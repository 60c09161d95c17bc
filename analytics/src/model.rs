//! Trained models, versioned in the store's object store: `models/<name>/<version>.json`
//! holds the whole model (feature columns, normalisation, detector, threshold) and
//! `models/<name>/<version>.meta.json` its metadata alone, so listing stays cheap.

use exawatch_store::Store;
use serde::{Deserialize, Serialize};
use snafu::{ResultExt, ensure};

use crate::detect::{DetectorKind, Fitted};
use crate::features::{Column, FeatureSpec};
use crate::{FormatSnafu, NameSnafu, Result, StoreSnafu};

/// Object-store directory of models.
pub const MODELS_DIR: &str = "models";

/// What a model is and how it was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Name (letters, digits, `_`, `-`).
    pub name: String,
    /// Version, from 1, one more per training under the same name.
    pub version: u32,
    /// Detector kind.
    pub detector: DetectorKind,
    /// When it was trained, ns since the epoch.
    pub created_ns: i64,
    /// Which series, grouped how, in which windows.
    pub spec: FeatureSpec,
    /// Feature names, in column order.
    pub features: Vec<String>,
    /// Scores above this are anomalies.
    pub threshold: f64,
    /// Target false-positive rate the threshold was learned for.
    pub target_fpr: f64,
    /// Training data: start (ns, inclusive).
    pub from_ns: i64,
    /// Training data: end (ns, exclusive).
    pub to_ns: i64,
    /// Training rows (windows × entities).
    pub rows: usize,
    /// Distinct entities in the training data.
    pub entities: usize,
}

/// A trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Metadata.
    pub info: ModelInfo,
    /// Feature columns.
    pub columns: Vec<Column>,
    /// The fitted detector.
    pub fitted: Fitted,
}

/// Checks a model name.
pub fn check_name(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        NameSnafu { name }
    );
    Ok(())
}

fn model_path(name: &str, version: u32) -> String {
    format!("{MODELS_DIR}/{name}/{version:06}.json")
}

fn meta_path(name: &str, version: u32) -> String {
    format!("{MODELS_DIR}/{name}/{version:06}.meta.json")
}

/// Versions of `name` in the store, ascending.
async fn versions(store: &Store, name: &str) -> Result<Vec<u32>> {
    let prefix = format!("{MODELS_DIR}/{name}/");
    let mut versions: Vec<u32> = store
        .list_objects(&prefix)
        .await
        .context(StoreSnafu)?
        .iter()
        .filter_map(|o| {
            o.path
                .strip_prefix(&prefix)?
                .strip_suffix(".meta.json")?
                .parse()
                .ok()
        })
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// Saves `model` as the next version of its name (setting `model.info.version`); the model
/// file is written before its metadata, so a listed version can always be loaded.
pub async fn save(store: &Store, model: &mut Model) -> Result<()> {
    check_name(&model.info.name)?;
    let version = versions(store, &model.info.name)
        .await?
        .last()
        .copied()
        .unwrap_or(0)
        + 1;
    model.info.version = version;
    let body = serde_json::to_vec(model).context(FormatSnafu)?;
    store
        .put_object(&model_path(&model.info.name, version), body)
        .await
        .context(StoreSnafu)?;
    let meta = serde_json::to_vec_pretty(&model.info).context(FormatSnafu)?;
    store
        .put_object(&meta_path(&model.info.name, version), meta)
        .await
        .context(StoreSnafu)?;
    Ok(())
}

/// The newest version of model `name`, or `None`.
pub async fn load_latest(store: &Store, name: &str) -> Result<Option<Model>> {
    check_name(name)?;
    let Some(version) = versions(store, name).await?.last().copied() else {
        return Ok(None);
    };
    load(store, name, version).await
}

/// Version `version` of model `name`, or `None`.
pub async fn load(store: &Store, name: &str, version: u32) -> Result<Option<Model>> {
    let Some(bytes) = store
        .get_object(&model_path(name, version))
        .await
        .context(StoreSnafu)?
    else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_slice(&bytes).context(FormatSnafu)?))
}

/// Every version of every model, by name then version.
pub async fn list(store: &Store) -> Result<Vec<ModelInfo>> {
    let mut out = Vec::new();
    for object in store
        .list_objects(&format!("{MODELS_DIR}/"))
        .await
        .context(StoreSnafu)?
    {
        if !object.path.ends_with(".meta.json") {
            continue;
        }
        if let Some(bytes) = store.get_object(&object.path).await.context(StoreSnafu)? {
            match serde_json::from_slice::<ModelInfo>(&bytes) {
                Ok(info) => out.push(info),
                Err(error) => {
                    tracing::warn!(path = %object.path, %error, "Skipping unreadable model metadata.")
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    Ok(out)
}
