//! Analytics routes: anomalies, models (list, train), reports (list, make, serve).
//!
//! `GET /api/v1/anomalies?from=&to=&model=&node=&limit=` answers a JSON array of anomaly
//! events, newest first (times: RFC 3339, Unix seconds, `now` or `-1h`-style; default the
//! last hour). `GET /api/v1/models` lists models, `POST /api/v1/models` trains one (body:
//! [`TrainRequest`] as JSON). `GET /api/v1/reports` lists reports, `POST /api/v1/reports`
//! with `{"from": …, "to": …}` makes one, `GET /reports/<id>.html` serves it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use exawatch_analytics::AnalyticsHandlerRef;
use exawatch_analytics::anomalies::AnomalyQuery;
use exawatch_analytics::time::parse_time;
use exawatch_analytics::train::TrainRequest;
use exawatch_protocol::time::now_ns;
use serde::Deserialize;

use crate::{ApiError, ApiState};

/// Most anomalies one request returns.
const MAX_LIMIT: usize = 10_000;

impl From<exawatch_analytics::Error> for ApiError {
    fn from(error: exawatch_analytics::Error) -> Self {
        if error.is_user_error() {
            return Self::BadRequest(error.to_string());
        }
        match error {
            exawatch_analytics::Error::Store { source } => source.into(),
            exawatch_analytics::Error::Query { source } => source.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

fn handler(state: &ApiState) -> Result<&AnalyticsHandlerRef, ApiError> {
    state
        .analytics
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("analytics is not running in this server".into()))
}

fn time(text: Option<&str>, default: &str, now: i64) -> Result<i64, ApiError> {
    Ok(parse_time(text.unwrap_or(default), now)?)
}

/// Query parameters of `GET /api/v1/anomalies`.
#[derive(Debug, Deserialize)]
pub(crate) struct AnomalyParams {
    from: Option<String>,
    to: Option<String>,
    model: Option<String>,
    node: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn list_anomalies(
    State(state): State<ApiState>,
    Query(params): Query<AnomalyParams>,
) -> Response {
    let answer = async {
        let now = now_ns();
        let query = AnomalyQuery {
            from_ns: time(params.from.as_deref(), "-1h", now)?,
            to_ns: time(params.to.as_deref(), "now", now)?,
            model: params.model,
            node: params.node,
            limit: params.limit.unwrap_or(1000).clamp(1, MAX_LIMIT),
        };
        Ok::<_, ApiError>(Json(handler(&state)?.anomalies(&query).await?))
    };
    answer.await.into_response()
}

pub(crate) async fn list_models(State(state): State<ApiState>) -> Response {
    let answer = async { Ok::<_, ApiError>(Json(handler(&state)?.models().await?)) };
    answer.await.into_response()
}

pub(crate) async fn train(State(state): State<ApiState>, body: Bytes) -> Response {
    let answer = async {
        let request: TrainRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("body is not a training request: {e}")))?;
        Ok::<_, ApiError>(Json(handler(&state)?.train(&request).await?))
    };
    answer.await.into_response()
}

pub(crate) async fn list_reports(State(state): State<ApiState>) -> Response {
    let answer = async { Ok::<_, ApiError>(Json(handler(&state)?.reports().await?)) };
    answer.await.into_response()
}

/// Body of `POST /api/v1/reports`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportRequest {
    from: String,
    #[serde(default)]
    to: Option<String>,
}

pub(crate) async fn make_report(State(state): State<ApiState>, body: Bytes) -> Response {
    let answer = async {
        let request: ReportRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("body is not {{\"from\": …, \"to\": …}}: {e}"))
        })?;
        let now = now_ns();
        let from = time(Some(&request.from), "", now)?;
        let to = time(request.to.as_deref(), "now", now)?;
        Ok::<_, ApiError>(Json(handler(&state)?.make_report(from, to).await?))
    };
    answer.await.into_response()
}

pub(crate) async fn report_page(
    State(state): State<ApiState>,
    Path(file): Path<String>,
) -> Response {
    let answer = async {
        let not_found = || ApiError::NotFound(format!("no report {file:?}"));
        let id = file.strip_suffix(".html").ok_or_else(not_found)?;
        let html = handler(&state)?
            .report_html(id)
            .await?
            .ok_or_else(not_found)?;
        Ok::<_, ApiError>(([(CONTENT_TYPE, "text/html; charset=utf-8")], html))
    };
    answer.await.into_response()
}
