//! The API's meters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ApiConfig;
use crate::auth::Auth;
use std::sync::Arc;

/// Labels of a finished query.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueryLabels {
    pub(crate) api: &'static str,
    pub(crate) status: &'static str,
}

/// Query counts and latencies, per API and outcome; authentication refusals.
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    pub(crate) queries: Family<QueryLabels, Counter>,
    pub(crate) query_seconds: Family<QueryLabels, Histogram>,
    /// The configured users, `None` when the API is open.
    pub(crate) auth: Option<Arc<Auth>>,
}

impl ApiMetrics {
    /// Creates the meters (and the user table of `config`) and registers them.
    pub fn new(registry: &mut Registry, config: &ApiConfig) -> Self {
        let metrics = Self {
            auth: Auth::new(&config.users, registry),
            queries: Family::default(),
            query_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
        };
        let r = registry.sub_registry_with_prefix("exawatch");
        r.register(
            "queries",
            "Queries answered, by API and outcome",
            metrics.queries.clone(),
        );
        r.register(
            "query_duration_seconds",
            "Query latency, by API and outcome",
            metrics.query_seconds.clone(),
        );
        metrics
    }

    pub(crate) fn observe(&self, api: &'static str, status: &'static str, seconds: f64) {
        let labels = QueryLabels { api, status };
        self.queries.get_or_create(&labels).inc();
        self.query_seconds.get_or_create(&labels).observe(seconds);
    }
}
