//! Route paths, named once.

/// SQL queries.
pub const SQL: &str = "/api/v1/sql";
/// Influx line protocol, InfluxDB 2 style (Telegraf's `outputs.influxdb_v2`).
pub const INFLUX_V2_WRITE: &str = "/api/v2/write";
/// Influx line protocol, InfluxDB 1 style (Telegraf's `outputs.influxdb`).
pub const INFLUX_V1_WRITE: &str = "/write";
/// Prometheus remote write.
pub const REMOTE_WRITE: &str = "/api/v1/write";
/// OpenTelemetry metrics over HTTP (OTLP/HTTP's default path).
pub const OTLP_METRICS: &str = "/v1/metrics";
/// Prometheus text exposition of the server's own meters.
pub const METRICS: &str = "/metrics";
/// Liveness and a few figures.
pub const HEALTH: &str = "/health";
/// An ingester's rows in memory and its catalog, for queriers.
pub const INTERNAL_UNFLUSHED: &str = "/api/v1/internal/unflushed";
/// PromQL instant query.
pub const PROM_QUERY: &str = "/api/v1/query";
/// PromQL range query.
pub const PROM_QUERY_RANGE: &str = "/api/v1/query_range";
/// Label names.
pub const PROM_LABELS: &str = "/api/v1/labels";
/// Values of one label.
pub const PROM_LABEL_VALUES: &str = "/api/v1/label/{name}/values";
/// Series matching selectors.
pub const PROM_SERIES: &str = "/api/v1/series";
/// Metric metadata.
pub const PROM_METADATA: &str = "/api/v1/metadata";
/// Build information (Grafana reads the version).
pub const PROM_BUILDINFO: &str = "/api/v1/status/buildinfo";
/// Rule groups with their rules' state (Prometheus' `/api/v1/rules`).
pub const PROM_RULES: &str = "/api/v1/rules";
/// Pending and firing alerts.
pub const PROM_ALERTS: &str = "/api/v1/alerts";
/// Re-reads the rule files (Prometheus' lifecycle endpoint).
pub const RELOAD: &str = "/-/reload";
/// Exemplars (exawatch stores none).
pub const PROM_EXEMPLARS: &str = "/api/v1/query_exemplars";
/// Job records (`?from=&to=&user=&node=&state=&cluster=&limit=`).
pub const JOBS: &str = "/api/v1/jobs";
/// One job with its summary.
pub const JOB: &str = "/api/v1/jobs/{id}";
/// Anomaly events (analytics).
pub const ANOMALIES: &str = "/api/v1/anomalies";
/// Models: list (GET) and train (POST).
pub const MODELS: &str = "/api/v1/models";
/// Reports: list (GET) and make one (POST).
pub const REPORTS: &str = "/api/v1/reports";
/// One report's HTML: `/reports/<id>.html`.
pub const REPORT_PAGE: &str = "/reports/{file}";
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
/// The web console's page.
pub const CONSOLE: &str = "/";
/// The web console's scripts, styles and vendored libraries.
pub const CONSOLE_ASSETS: &str = "/console/{*file}";
