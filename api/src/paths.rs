//! Route paths, named once.

/// SQL queries.
pub const SQL: &str = "/api/v1/sql";
/// Prometheus text exposition of the server's own meters.
pub const METRICS: &str = "/metrics";
/// Liveness and a few figures.
pub const HEALTH: &str = "/health";
