//! The `[rules]` and `[alertmanager]` sections of the configuration.

use exawatch_protocol::settings::{InvalidSetting, Validate, at_least, within};
use serde::{Deserialize, Serialize};

/// `[rules]`: which rule files to evaluate, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Rule files in Prometheus' format; globs (`/etc/exawatch/rules/*.yml`) allowed.
    pub files: Vec<String>,
    /// Between evaluations of a group that sets no `interval`.
    pub evaluation_interval_secs: f64,
    /// Labels added to every alert sent to Alertmanager (`$externalLabels` in templates).
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// This server's URL as users reach it: alerts link back to it (`$externalURL`).
    pub external_url: String,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            evaluation_interval_secs: 60.0,
            external_labels: Default::default(),
            external_url: String::new(),
        }
    }
}

impl Validate for RulesConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        within(
            "evaluation_interval_secs",
            self.evaluation_interval_secs,
            0.001..=86_400.0,
        )
    }
}

/// `[alertmanager]`: where alerts are sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Alertmanager base URLs (`http://am:9093`); alerts go to `<url>/api/v2/alerts` of each.
    pub urls: Vec<String>,
    /// One request may take this long.
    pub timeout_secs: f64,
    /// A firing alert is sent again after this long (Prometheus' `rules.alert.resend-delay`).
    pub resend_delay_secs: f64,
    /// Attempts per batch and Alertmanager, waiting 0.5 s, 1 s, 2 s, … in between.
    pub max_attempts: u32,
    /// Alerts waiting to be sent; beyond it the oldest are dropped (and counted).
    pub queue_capacity: usize,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            timeout_secs: 10.0,
            resend_delay_secs: 60.0,
            max_attempts: 3,
            queue_capacity: 10_000,
        }
    }
}

impl Validate for AlertmanagerConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        within("timeout_secs", self.timeout_secs, 0.001..=3_600.0)?;
        within("resend_delay_secs", self.resend_delay_secs, 0.0..=86_400.0)?;
        within("max_attempts", self.max_attempts, 1..=20)?;
        at_least("queue_capacity", self.queue_capacity, 1)?;
        for url in &self.urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(InvalidSetting {
                    key: "urls".into(),
                    value: format!("{url:?}"),
                    allowed: "http:// or https:// URLs".into(),
                });
            }
        }
        Ok(())
    }
}
