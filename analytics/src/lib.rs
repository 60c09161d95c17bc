//! exawatch analytics: anomaly detection on the telemetry in the store, and reports.
//!
//! Data flow: [`features`] turns the `samples` table into one row per window and node
//! (DataFusion aggregates per window, metric and node, pivoted here); [`detect`] fits a
//! detector on such rows and learns its threshold; [`model`] saves it, versioned, in the
//! store's object store; [`score`] scores each completed window of the live stream and writes
//! `anomaly_score{model,node}` series and `anomaly` events back with `Store::write`;
//! [`anomalies`] reads those events back (API, SQL view `anomalies`); [`report`] renders them
//! as a self-contained HTML report, on demand or on a cron-like [`schedule`]. [`eval`]
//! measures detectors on labelled CSV data.

pub mod anomalies;
mod config;
pub mod detect;
pub mod eval;
pub mod features;
pub mod matrix;
pub mod model;
pub mod report;
pub mod schedule;
pub mod score;
mod service;
pub mod time;
pub mod train;

use std::path::PathBuf;

use snafu::Snafu;

pub use config::AnalyticsConfig;
pub use detect::{DEFAULT_DETECTOR, DetectorKind, FitOptions, Fitted};
pub use matrix::Matrix;
pub use service::{Analytics, AnalyticsHandler, AnalyticsHandlerRef};

/// Analytics errors.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// A detector name that does not exist.
    #[snafu(display(
        "unknown detector {name:?} (one of forecast, mad, ewma, pca, gmm, kmeans, iforest, ensemble)"
    ))]
    UnknownDetector {
        /// The name given.
        name: String,
    },
    /// Not enough training data to fit anything.
    #[snafu(display(
        "not enough training data: {rows} rows of {cols} features (need at least 2 rows and 1 feature)"
    ))]
    EmptyTraining {
        /// Rows available.
        rows: usize,
        /// Features available.
        cols: usize,
    },
    /// linfa's PCA failed.
    #[snafu(display("PCA fit failed: {source}"))]
    Pca {
        /// linfa's error.
        source: linfa_reduction::ReductionError,
    },
    /// linfa's k-means failed.
    #[snafu(display("k-means fit failed: {source}"))]
    KMeans {
        /// linfa's error.
        source: linfa_clustering::KMeansError,
    },
    /// A file could not be read or written.
    #[snafu(display("{}: {source}", path.display()))]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A CSV file is malformed.
    #[snafu(display("{}:{line}: {message}", path.display()))]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line (0: the whole file).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A series selector that does not parse.
    #[snafu(display("selector {selector:?}: {message}"))]
    Selector {
        /// The selector.
        selector: String,
        /// What is wrong.
        message: String,
    },
    /// A feature spec or request that makes no sense.
    #[snafu(display("{message}"))]
    Spec {
        /// What is wrong.
        message: String,
    },
    /// A model name with characters other than letters, digits, `_` and `-`, or too long.
    #[snafu(display("model name {name:?}: use 1 to 64 letters, digits, _ or -"))]
    Name {
        /// The name.
        name: String,
    },
    /// A time argument that does not parse.
    #[snafu(display("time {text:?}: expected RFC 3339, Unix seconds, `now` or `-<n>s|m|h|d`"))]
    Time {
        /// The text.
        text: String,
    },
    /// A report schedule that does not parse.
    #[snafu(display(
        "schedule {schedule:?}: bad field {field:?} (cron: minute hour day month weekday, optionally seconds first)"
    ))]
    Schedule {
        /// The schedule.
        schedule: String,
        /// The bad field.
        field: String,
    },
    /// The store failed.
    #[snafu(display("store: {source}"))]
    Store {
        /// The store's error.
        source: exawatch_store::Error,
    },
    /// A query failed.
    #[snafu(display("query: {source}"))]
    Query {
        /// DataFusion's error.
        source: datafusion::error::DataFusionError,
    },
    /// Arrow failed converting query results.
    #[snafu(display("reading query results: {source}"))]
    Arrow {
        /// Arrow's error.
        source: arrow::error::ArrowError,
    },
    /// A model or report could not be (de)serialised.
    #[snafu(display("model or report format: {source}"))]
    Format {
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// A background task failed.
    #[snafu(display("background task: {message}"))]
    Task {
        /// What happened.
        message: String,
    },
    /// Evaluation data that does not fit together.
    #[snafu(display("evaluation data: {message}"))]
    EvalData {
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// True if the request was wrong (bad name, selector, time, range…), not the server.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::UnknownDetector { .. }
                | Self::EmptyTraining { .. }
                | Self::Selector { .. }
                | Self::Spec { .. }
                | Self::Name { .. }
                | Self::Time { .. }
                | Self::Schedule { .. }
        )
    }
}

/// `Result` with the analytics [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
