//! Anomaly events in the store, and the `anomalies` SQL view over them.
//!
//! Scoring writes, per model, entity and window, the series `anomaly_score{model,<group>}`
//! (the score divided by the model's threshold, so above 1 is anomalous, whatever the
//! detector) and, when the score passes the threshold, one sample of the metric `anomaly`
//! with the same tags whose text is `model|entity|score|threshold|feature=share,...`. Events
//! are ordinary samples, so they are durable (WAL) and flushed like everything else; the
//! `anomalies` view splits the text into columns with plain SQL.

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;
use exawatch_store::Store;
use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use crate::features::rfc3339;
use crate::{QuerySnafu, Result, StoreSnafu};

/// Metric of the per-window score series (score / threshold).
pub const SCORE_METRIC: &str = "anomaly_score";
/// Metric of anomaly events (text samples).
pub const ANOMALY_METRIC: &str = "anomaly";
/// Name of the SQL view.
pub const VIEW: &str = "anomalies";

/// The view: one row per anomaly event. Columns: `time`, `model`, `node` (the model's group
/// tag value; the node by default), `score`, `threshold`, `top_metrics`.
const VIEW_SQL: &str = "CREATE VIEW anomalies AS SELECT time, \
    split_part(text, '|', 1) AS model, \
    split_part(text, '|', 2) AS node, \
    CAST(split_part(text, '|', 3) AS DOUBLE) AS score, \
    CAST(split_part(text, '|', 4) AS DOUBLE) AS threshold, \
    split_part(text, '|', 5) AS top_metrics \
    FROM samples WHERE metric = 'anomaly' AND text IS NOT NULL";

/// One anomaly: a window of an entity whose score passed the model's threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Start of the window, ns since the epoch.
    pub time_ns: i64,
    /// The same as RFC 3339.
    pub time: String,
    /// Model name.
    pub model: String,
    /// Entity (node).
    pub node: String,
    /// The detector's score.
    pub score: f64,
    /// The model's threshold.
    pub threshold: f64,
    /// Features that contributed most, with their share of the score.
    pub top_metrics: Vec<(String, f64)>,
}

/// Replaces the characters the event text uses as separators.
fn clean(text: &str) -> String {
    text.replace(['|', ',', '='], "_")
}

impl Anomaly {
    /// The event text: `model|entity|score|threshold|feature=share,...`.
    pub fn encode(&self) -> String {
        let top: Vec<String> = self
            .top_metrics
            .iter()
            .map(|(f, s)| format!("{}={s:.3}", clean(f)))
            .collect();
        format!(
            "{}|{}|{}|{}|{}",
            clean(&self.model),
            clean(&self.node),
            self.score,
            self.threshold,
            top.join(",")
        )
    }

    /// Parses an event text written by [`Anomaly::encode`]; `None` if it is not one.
    pub fn decode(time_ns: i64, text: &str) -> Option<Self> {
        let mut parts = text.splitn(5, '|');
        let model = parts.next()?.to_owned();
        let node = parts.next()?.to_owned();
        let score = parts.next()?.parse().ok()?;
        let threshold = parts.next()?.parse().ok()?;
        let top_metrics = parts
            .next()?
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (name, share) = p.rsplit_once('=')?;
                Some((name.to_owned(), share.parse().ok()?))
            })
            .collect();
        Some(Self {
            time_ns,
            time: rfc3339(time_ns),
            model,
            node,
            score,
            threshold,
            top_metrics,
        })
    }
}

/// Registers the `anomalies` view in a session that has the `samples` table.
pub async fn register_view(ctx: &SessionContext) -> Result<()> {
    ctx.sql(VIEW_SQL).await.context(QuerySnafu)?;
    Ok(())
}

/// Which anomalies to read.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AnomalyQuery {
    /// From (inclusive), ns.
    pub from_ns: i64,
    /// To (exclusive), ns.
    pub to_ns: i64,
    /// Only this model.
    pub model: Option<String>,
    /// Only this entity.
    pub node: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// The anomaly events matching `query`, newest first.
pub async fn query(
    store: &Store,
    query: &AnomalyQuery,
    memory_bytes: usize,
) -> Result<Vec<Anomaly>> {
    let ctx = store.query_context(memory_bytes).context(StoreSnafu)?;
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut sql = format!(
        "SELECT CAST(time AS BIGINT) AS t, text FROM samples WHERE metric = '{ANOMALY_METRIC}' AND text IS NOT NULL \
         AND time >= {} AND time < {}",
        quote(&rfc3339(query.from_ns)),
        quote(&rfc3339(query.to_ns))
    );
    if let Some(model) = &query.model {
        sql.push_str(&format!(" AND split_part(text, '|', 1) = {}", quote(model)));
    }
    if let Some(node) = &query.node {
        sql.push_str(&format!(" AND split_part(text, '|', 2) = {}", quote(node)));
    }
    sql.push_str(&format!(" ORDER BY t DESC LIMIT {}", query.limit.max(1)));
    let batches = ctx
        .sql(&sql)
        .await
        .context(QuerySnafu)?
        .collect()
        .await
        .context(QuerySnafu)?;
    let mut out = Vec::new();
    for batch in batches {
        let times = batch.column(0).as_primitive::<Int64Type>();
        let text = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Utf8)
            .context(crate::ArrowSnafu)?;
        let text = text.as_string::<i32>();
        for i in 0..batch.num_rows() {
            if !text.is_null(i)
                && let Some(anomaly) = Anomaly::decode(times.value(i), text.value(i))
            {
                out.push(anomaly);
            }
        }
    }
    Ok(out)
}
