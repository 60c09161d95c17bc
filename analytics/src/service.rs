//! The analytics handle the server holds: what the HTTP API asks of analytics, behind the
//! [`AnalyticsHandler`] trait (the API depends on the trait, the binary plugs [`Analytics`]
//! in), plus the background tasks of `exawatch up`.

use std::sync::Arc;

use async_trait::async_trait;
use exawatch_store::Store;
use tokio::sync::Notify;

use crate::Result;
use crate::anomalies::{self, Anomaly, AnomalyQuery};
use crate::config::AnalyticsConfig;
use crate::model::{self, ModelInfo};
use crate::report::{self, ReportInfo};
use crate::schedule::Schedule;
use crate::score::Scorer;
use crate::train::{self, TrainRequest};

/// What the HTTP API needs from analytics.
#[async_trait]
pub trait AnalyticsHandler: std::fmt::Debug + Send + Sync {
    /// Anomaly events matching `query`, newest first.
    async fn anomalies(&self, query: &AnomalyQuery) -> Result<Vec<Anomaly>>;
    /// Every version of every model.
    async fn models(&self) -> Result<Vec<ModelInfo>>;
    /// Trains and saves a model; live scoring picks up a new version of a configured model.
    async fn train(&self, request: &TrainRequest) -> Result<ModelInfo>;
    /// Stored reports, newest first.
    async fn reports(&self) -> Result<Vec<ReportInfo>>;
    /// The HTML of a report, or `None`.
    async fn report_html(&self, id: &str) -> Result<Option<Vec<u8>>>;
    /// Makes (or remakes) the report of `[from_ns, to_ns)`.
    async fn make_report(&self, from_ns: i64, to_ns: i64) -> Result<ReportInfo>;
}

/// Shared handle of the analytics API, as the HTTP layer holds it.
pub type AnalyticsHandlerRef = Arc<dyn AnalyticsHandler>;

/// Analytics over a [`Store`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Analytics {
    store: Store,
    config: Arc<AnalyticsConfig>,
    reload: Arc<Notify>,
}

impl Analytics {
    /// Analytics for `store`; checks the report schedule.
    pub fn new(store: Store, config: AnalyticsConfig) -> Result<Self> {
        if !config.report_schedule.trim().is_empty() {
            Schedule::parse(&config.report_schedule)?;
        }
        for name in &config.models {
            model::check_name(name)?;
        }
        Ok(Self {
            store,
            config: Arc::new(config),
            reload: Arc::new(Notify::new()),
        })
    }

    /// Scores the configured models' windows until `shutdown` resolves.
    pub async fn run_scoring(&self, shutdown: impl std::future::Future<Output = ()>) {
        Scorer::new(
            self.store.clone(),
            (*self.config).clone(),
            Arc::clone(&self.reload),
        )
        .run(shutdown)
        .await;
    }

    /// Makes the scheduled reports until `shutdown` resolves (at once if there is no schedule).
    pub async fn run_reports(&self, shutdown: impl std::future::Future<Output = ()>) {
        let Ok(schedule) = Schedule::parse(&self.config.report_schedule) else {
            return;
        };
        report::run_schedule(
            self.store.clone(),
            schedule,
            self.config.report_lookback_secs,
            self.config.report_webhook.clone(),
            self.config.query_memory_bytes,
            shutdown,
        )
        .await;
    }
}

#[async_trait]
impl AnalyticsHandler for Analytics {
    async fn anomalies(&self, query: &AnomalyQuery) -> Result<Vec<Anomaly>> {
        anomalies::query(&self.store, query, self.config.query_memory_bytes).await
    }

    async fn models(&self) -> Result<Vec<ModelInfo>> {
        model::list(&self.store).await
    }

    async fn train(&self, request: &TrainRequest) -> Result<ModelInfo> {
        let info = train::train(&self.store, request, self.config.query_memory_bytes).await?;
        self.reload.notify_one();
        Ok(info)
    }

    async fn reports(&self) -> Result<Vec<ReportInfo>> {
        report::list(&self.store).await
    }

    async fn report_html(&self, id: &str) -> Result<Option<Vec<u8>>> {
        report::html(&self.store, id).await
    }

    async fn make_report(&self, from_ns: i64, to_ns: i64) -> Result<ReportInfo> {
        snafu::ensure!(
            from_ns < to_ns,
            crate::SpecSnafu {
                message: "the report range is empty"
            }
        );
        report::generate(&self.store, from_ns, to_ns, self.config.query_memory_bytes).await
    }
}
