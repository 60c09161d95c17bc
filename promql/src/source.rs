//! Where the engine reads series from: the [`SeriesSource`] trait.

use async_trait::async_trait;
use promql_parser::label::Matcher;

use crate::value::{Labels, Series};

/// A boxed error from a source, kept as text for the query's error. A [`SourceLimit`] in it
/// is the query's fault, any other error the server's.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// A source's refusal to read more than one of its limits allows: the query gets
/// [`Error::Limit`](crate::Error::Limit), as for the engine's own sample limit (the client
/// asked for too much; nothing failed on the server).
#[derive(Debug)]
pub struct SourceLimit {
    /// Which limit, and what to do about it.
    pub message: String,
}

impl std::fmt::Display for SourceLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SourceLimit {}

/// A source that cannot answer for now (its stored history is not loaded): the query gets
/// [`Error::Unavailable`](crate::Error::Unavailable), to retry later.
#[derive(Debug)]
pub struct SourceUnavailable {
    /// Why.
    pub message: String,
}

impl std::fmt::Display for SourceUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SourceUnavailable {}

impl From<SourceError> for crate::Error {
    fn from(error: SourceError) -> Self {
        let error = match error.downcast::<SourceLimit>() {
            Ok(limit) => {
                return Self::Limit {
                    message: limit.message,
                };
            }
            Err(error) => error,
        };
        match error.downcast::<SourceUnavailable>() {
            Ok(unavailable) => Self::Unavailable {
                message: unavailable.message,
            },
            Err(error) => Self::Source {
                message: error.to_string(),
            },
        }
    }
}

/// The evaluation times of an instant-vector selector: `first_ms + k * interval_ms`. At each,
/// only the latest sample at or before it, and newer than `lookback_ms` before it, is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    /// The first evaluation time (ms).
    pub first_ms: i64,
    /// Between evaluation times (ms, > 0).
    pub interval_ms: i64,
    /// Prometheus' lookback delta (ms), or the range of a range selector.
    pub lookback_ms: i64,
    /// A range selector: every sample in `(t - lookback_ms, t]` is used, not only the latest.
    pub whole_windows: bool,
}

/// A store of series that the engine selects from.
///
/// One call per selector and query: the engine asks for everything a selector needs over the
/// whole query (lookback, ranges, offsets and `@` included) and evaluates in memory.
#[async_trait]
pub trait SeriesSource: Send + Sync + std::fmt::Debug {
    /// The series that match all `matchers` (`__name__` is the metric name; a label that a
    /// series lacks matches as the empty string, as in Prometheus), each with its float samples
    /// in `[start_ms, end_ms]` (inclusive, milliseconds), ascending, one per timestamp.
    /// Staleness markers are returned as stored. Series without samples in the range may be
    /// left out. With `steps` (an instant-vector selector) the samples no step uses may be
    /// left out too.
    async fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        steps: Option<Steps>,
    ) -> Result<Vec<Series>, SourceError>;

    /// The label sets of the series that match all `matchers` and have a sample in
    /// `[start_ms, end_ms]`, unique, in no particular order. An empty `matchers` selects every
    /// series.
    async fn series(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, SourceError>;

    /// The values of label `name` (`__name__` for metric names) over the series that match
    /// all `matchers` and have a sample in `[start_ms, end_ms]`, sorted, unique, without
    /// the empty value. The default derives them from [`SeriesSource::series`].
    async fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, SourceError> {
        let mut values: Vec<String> = self
            .series(matchers, start_ms, end_ms)
            .await?
            .iter()
            .filter_map(|labels| labels.get(name).map(str::to_owned))
            .collect();
        values.sort();
        values.dedup();
        Ok(values)
    }
}
