//! The `[analytics]` section of the configuration.

use serde::{Deserialize, Serialize};

/// Analytics settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Models that score the live stream (the newest version of each).
    pub models: Vec<String>,
    /// Seconds a window waits after its end before it is scored, for late samples.
    pub lateness_secs: f64,
    /// Top contributing features kept per anomaly.
    pub top_metrics: usize,
    /// Memory one feature or report query may use.
    pub query_memory_bytes: usize,
    /// Cron schedule of reports, UTC: 5 fields (minute hour day month weekday) or 6 with
    /// seconds first; empty: no scheduled reports.
    pub report_schedule: String,
    /// Seconds before its run that a scheduled report covers.
    pub report_lookback_secs: f64,
    /// URL that gets a JSON POST when a scheduled report is ready; empty: none.
    pub report_webhook: String,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            lateness_secs: 5.0,
            top_metrics: 3,
            query_memory_bytes: 256 << 20,
            report_schedule: "0 6 * * *".to_owned(),
            report_lookback_secs: 86400.0,
            report_webhook: String::new(),
        }
    }
}
