//! The exawatch HTTP API (axum): `POST /api/v1/sql`, Prometheus' query API (`/api/v1/query`,
//! `/api/v1/query_range`, labels, series, metadata), KairosDB's REST API ([`kairosdb`]),
//! the write endpoints (line protocol, remote write, OTLP), HPC jobs ([`jobs`]), analytics
//! (anomalies, models, reports), rules and alerts ([`rules`]: `/api/v1/rules`,
//! `/api/v1/alerts`, `/-/reload`), `/metrics`, `/health`, and
//! the web console at `/` ([`console`]).
//!
//! Data flow: a handler parses the request once, runs it against the [`Store`] through a
//! fresh, read-only, memory- and time-bounded DataFusion session ([`sql`]), and encodes the
//! result; every error is classified once ([`ApiError`]) into an HTTP status and a JSON body.

mod anomalies;
mod auth;
mod console;
mod error;
mod jobs;
mod kairosdb;
mod metrics;
pub mod paths;
mod prometheus;
mod rules;
mod sql;
#[cfg(test)]
mod testutil;
mod write;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use exawatch_alerting::RulesHandlerRef;
use exawatch_analytics::AnalyticsHandlerRef;
use exawatch_protocol::line_protocol::SeriesCache;
use exawatch_protocol::otlp::DeltaTotals;
use exawatch_protocol::settings::{InvalidSetting, Validate, at_least, within};
use exawatch_store::Store;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use auth::{ApiUser, Role};
pub use error::ApiError;
pub use metrics::ApiMetrics;

/// The `[api]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the HTTP listener.
    pub listen: String,
    /// A query running longer than this is cancelled.
    pub query_timeout_secs: f64,
    /// Memory one query may use (sorts, joins, aggregations) before it is refused.
    pub query_memory_bytes: usize,
    /// Rows one query may return.
    pub max_result_rows: usize,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Samples one PromQL query may hold in memory (Prometheus' `query.max-samples`).
    pub promql_max_samples: usize,
    /// Users; when any is configured every request but `/health` needs credentials.
    pub users: Vec<ApiUser>,
    /// PEM certificate chain for HTTPS (with `tls_key`); none: plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (with `tls_cert`).
    pub tls_key: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            query_timeout_secs: 30.0,
            query_memory_bytes: 1 << 30,
            max_result_rows: 1_000_000,
            max_body_bytes: 16 << 20,
            promql_max_samples: 50_000_000,
            users: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Validate for ApiConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        // Up to a day: longer than any query should run.
        within(
            "query_timeout_secs",
            self.query_timeout_secs,
            0.001..=86_400.0,
        )?;
        at_least("query_memory_bytes", self.query_memory_bytes, 1)?;
        at_least("max_body_bytes", self.max_body_bytes, 1)?;
        at_least("promql_max_samples", self.promql_max_samples, 1)?;
        let missing = |key: &str, allowed: &str| InvalidSetting {
            key: key.to_owned(),
            value: "none".to_owned(),
            allowed: allowed.to_owned(),
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => Err(missing("tls_key", "a PEM key file when tls_cert is set")),
            (None, Some(_)) => Err(missing(
                "tls_cert",
                "a PEM certificate file when tls_key is set",
            )),
            _ => Ok(()),
        }
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct ApiState {
    store: Store,
    registry: Arc<Registry>,
    metrics: ApiMetrics,
    config: Arc<ApiConfig>,
    analytics: Option<AnalyticsHandlerRef>,
    /// Alerting and recording rules, where this server evaluates them.
    rules: Option<RulesHandlerRef>,
    /// Series keys of the line-protocol texts writers sent before.
    line_series: Arc<SeriesCache>,
    /// Running totals of OTLP delta series.
    otlp_deltas: Arc<DeltaTotals>,
}

impl ApiState {
    /// `metrics` must have been registered in `registry` (see [`ApiMetrics::new`]).
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        metrics: ApiMetrics,
        config: ApiConfig,
    ) -> Self {
        Self {
            store,
            registry,
            metrics,
            config: Arc::new(config),
            analytics: None,
            rules: None,
            line_series: Arc::default(),
            otlp_deltas: Arc::default(),
        }
    }

    /// Serves the rules' routes (rules, alerts, reload) with `handler`.
    pub fn with_rules(mut self, handler: RulesHandlerRef) -> Self {
        self.rules = Some(handler);
        self
    }

    /// Serves the analytics routes (anomalies, models, reports) with `handler`.
    pub fn with_analytics(mut self, handler: AnalyticsHandlerRef) -> Self {
        self.analytics = Some(handler);
        self
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let auth = state.metrics.auth.clone();
    let router = Router::new()
        .route(paths::SQL, post(sql::handle))
        .route(paths::INFLUX_V2_WRITE, post(write::line_protocol))
        .route(paths::INFLUX_V1_WRITE, post(write::line_protocol))
        .route(paths::REMOTE_WRITE, post(write::remote_write))
        .route(paths::OTLP_METRICS, post(write::otlp_metrics))
        .route(paths::JOBS, get(jobs::list_jobs))
        .route(paths::JOB, get(jobs::get_job))
        .route(paths::ANOMALIES, get(anomalies::list_anomalies))
        .route(
            paths::MODELS,
            get(anomalies::list_models).post(anomalies::train),
        )
        .route(
            paths::REPORTS,
            get(anomalies::list_reports).post(anomalies::make_report),
        )
        .route(paths::REPORT_PAGE, get(anomalies::report_page))
        .route(paths::METRICS, get(metrics_text))
        .route(paths::HEALTH, get(health))
        .route(paths::INTERNAL_UNFLUSHED, get(unflushed))
        .merge(prometheus::routes())
        .merge(rules::routes())
        .merge(kairosdb::routes())
        .merge(console::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state);
    match auth {
        Some(auth) => router.layer(axum::middleware::from_fn_with_state(auth, auth::authorize)),
        None => router,
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves; connections already open
/// finish on their own. A handshake must complete within 10 s.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "Cannot accept an HTTPS connection.");
                    continue;
                }
            },
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return tracing::debug!(%error, %peer, "TLS handshake failed."),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out."),
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "HTTPS connection ended with an error.");
            }
        });
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_text(State(state): State<ApiState>) -> impl IntoResponse {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &state.registry)
        .expect("writing to a String cannot fail");
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// An ingester's rows in memory after those a querier holds, and its catalog
/// ([`exawatch_store::Store::unflushed`]); 503 on a store that holds none of its own.
async fn unflushed(
    State(state): State<ApiState>,
    axum::extract::Query(request): axum::extract::Query<exawatch_store::UnflushedRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let store = state.store.clone();
    let body = tokio::task::spawn_blocking(move || store.unflushed(request))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(([(CONTENT_TYPE, "application/octet-stream")], body))
}

async fn health(State(state): State<ApiState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "buffered_rows": state.store.buffered_rows(),
        "files": state.store.catalog().files.len(),
    }))
}
