//! exawatch's PromQL: queries parsed with `promql-parser` and evaluated with Prometheus 3
//! semantics over any [`SeriesSource`]; [`StoreSource`] reads the exawatch store.
//!
//! Data flow: [`Engine::instant`] / [`Engine::range`] parse the query, walk it once to find
//! every selector and the time range it needs (lookback, ranges, offsets, `@`, subqueries),
//! read each selector once from the source (the store picks the matching series from its
//! files' series indexes and reads only their rows in the time range), then evaluate the expression
//! in memory over the grid of evaluation times (`eval`): selectors, `binary` operators,
//! `aggregate`ions and `functions`. [`promqltest`] runs Prometheus' own test files against
//! this engine over a real store.
//!
//! Semantics follow <https://prometheus.io/docs/prometheus/latest/querying/basics/>: 5 m
//! lookback, staleness markers, left-open range windows, delayed `__name__` removal.

mod aggregate;
mod binary;
mod engine;
mod eval;
mod functions;
#[cfg(feature = "store")]
pub mod promqltest;
mod source;
mod stats;
#[cfg(feature = "store")]
mod store_source;
mod value;

use snafu::Snafu;

pub use engine::{Engine, EngineOptions, QueryResult, matcher_sets, parse};
pub use eval::Annotations;
pub use source::{SeriesSource, SourceError, SourceLimit, SourceUnavailable, Steps};
pub use stats::almost_equal;
#[cfg(feature = "store")]
pub use store_source::StoreSource;
pub use value::{
    Labels, METRIC_NAME, Point, QueryValue, STALE_NAN_BITS, Series, format_value, is_stale,
    stale_nan, write_time, write_value,
};

/// Query errors, classified as Prometheus' API classifies them.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// The query does not parse.
    #[snafu(display("{message}"))]
    Parse {
        /// The parser's message.
        message: String,
    },
    /// The query parses but cannot be evaluated as asked (wrong types, bad arguments).
    #[snafu(display("{message}"))]
    BadQuery {
        /// What is wrong.
        message: String,
    },
    /// Evaluation failed on the data (duplicate label sets, many-to-many matching).
    #[snafu(display("{message}"))]
    Execution {
        /// What failed.
        message: String,
    },
    /// Reading series failed.
    #[snafu(display("reading series: {message}"))]
    Source {
        /// The source's error.
        message: String,
    },
    /// The source cannot answer for now (a [`SourceUnavailable`]); retry later.
    #[snafu(display("{message}"))]
    Unavailable {
        /// Why, and what to do about it.
        message: String,
    },
    /// The query ran past its time limit.
    #[snafu(display("query timed out in expression evaluation"))]
    Timeout,
    /// The query needs more than a limit allows.
    #[snafu(display("{message}"))]
    Limit {
        /// Which limit.
        message: String,
    },
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
