//! Route paths, named once.

/// SQL queries.
pub const SQL: &str = "/api/v1/sql";
/// Prometheus text exposition of the server's own meters.
pub const METRICS: &str = "/metrics";
/// Liveness and a few figures.
pub const HEALTH: &str = "/health";
/// KairosDB: query data points.
pub const KAIROSDB_QUERY: &str = "/api/v1/datapoints/query";
/// KairosDB: the tags of the series a query matches.
pub const KAIROSDB_QUERY_TAGS: &str = "/api/v1/datapoints/query/tags";
/// KairosDB: write data points.
pub const KAIROSDB_DATAPOINTS: &str = "/api/v1/datapoints";
/// KairosDB: metric names (`?prefix=`).
pub const KAIROSDB_METRIC_NAMES: &str = "/api/v1/metricnames";
/// KairosDB: tag names.
pub const KAIROSDB_TAG_NAMES: &str = "/api/v1/tagnames";
/// KairosDB: tag values.
pub const KAIROSDB_TAG_VALUES: &str = "/api/v1/tagvalues";
/// KairosDB: version.
pub const KAIROSDB_VERSION: &str = "/api/v1/version";
/// KairosDB: 204 when healthy.
pub const KAIROSDB_HEALTH_CHECK: &str = "/api/v1/health/check";
/// KairosDB: the health checks and their state.
pub const KAIROSDB_HEALTH_STATUS: &str = "/api/v1/health/status";
