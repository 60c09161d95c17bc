//! Route paths, named once.

/// SQL queries.
pub const SQL: &str = "/api/v1/sql";
/// Influx line protocol, InfluxDB 2 style (Telegraf's `outputs.influxdb_v2`).
pub const INFLUX_V2_WRITE: &str = "/api/v2/write";
/// Influx line protocol, InfluxDB 1 style (Telegraf's `outputs.influxdb`).
pub const INFLUX_V1_WRITE: &str = "/write";
/// Prometheus remote write.
pub const REMOTE_WRITE: &str = "/api/v1/write";
/// Prometheus text exposition of the server's own meters.
pub const METRICS: &str = "/metrics";
/// Liveness and a few figures.
pub const HEALTH: &str = "/health";
/// Anomaly events (analytics).
pub const ANOMALIES: &str = "/api/v1/anomalies";
/// Models: list (GET) and train (POST).
pub const MODELS: &str = "/api/v1/models";
/// Reports: list (GET) and make one (POST).
pub const REPORTS: &str = "/api/v1/reports";
/// One report's HTML: `/reports/<id>.html`.
pub const REPORT_PAGE: &str = "/reports/{file}";
