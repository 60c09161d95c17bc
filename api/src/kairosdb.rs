//! KairosDB's REST API (1.2/1.3), so that EXAMON's tools (the ExamonQL Python client,
//! `examon-common`'s `KairosDB` writer, Grafana's KairosDB datasource) work against exawatch.
//!
//! | route | |
//! |---|---|
//! | `POST /api/v1/datapoints/query` | data points, grouped and aggregated ([`query`], [`execute`], [`response`]) |
//! | `POST /api/v1/datapoints/query/tags` | the tags (and their values) of the matching series |
//! | `POST /api/v1/datapoints` | write; answered 204 once the samples are in the WAL |
//! | `GET /api/v1/metricnames[?prefix=]`, `/tagnames`, `/tagvalues` | `{"results": [...]}` |
//! | `GET /api/v1/version`, `/health/check` (204), `/health/status` | |
//!
//! EXAMON topic tags (`org`, `cluster`, `node`, `plugin`, `chnl`, `core`, …) are the tags, the
//! EXAMON metric name is the metric name. Request bodies may be gzipped (`Content-Encoding:
//! gzip` or `Content-Type: application/gzip`), answers are gzipped when the client accepts it,
//! errors are `{"errors": [...]}` (400 for a bad query). With `api.users` configured, every
//! route but the health checks needs credentials ([`crate::auth`]; writes the `write` role).

mod aggregate;
mod execute;
mod query;
mod response;
mod time;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use datafusion::prelude::{SessionContext, ident};
use exawatch_protocol::compression::gunzip;
use exawatch_protocol::kairosdb as codec;
use exawatch_protocol::time::now_ms;
use serde::Deserialize;

use crate::{ApiError, ApiState, paths};
use execute::Limits;

/// The version KairosDB clients see.
const VERSION: &str = concat!(
    "KairosDB 1.3.0 compatible (exawatch ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

/// Answers larger than this are compressed off the async runtime.
const BLOCKING_GZIP_BYTES: usize = 1 << 20;

/// The KairosDB routes, with their gzip layer.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route(paths::KAIROSDB_QUERY, post(datapoints_query))
        .route(paths::KAIROSDB_QUERY_TAGS, post(datapoints_query_tags))
        .route(paths::KAIROSDB_DATAPOINTS, post(datapoints_write))
        .route(paths::KAIROSDB_METRIC_NAMES, get(metric_names))
        .route(paths::KAIROSDB_TAG_NAMES, get(tag_names))
        .route(paths::KAIROSDB_TAG_VALUES, get(tag_values))
        .route(paths::KAIROSDB_VERSION, get(version))
        .route(paths::KAIROSDB_HEALTH_CHECK, get(health_check))
        .route(paths::KAIROSDB_HEALTH_STATUS, get(health_status))
        .layer(middleware::from_fn(gzip_response))
}

/// A refused request, answered in KairosDB's shape `{"errors": [...]}`.
#[derive(Debug)]
enum Failure {
    /// The request is wrong: 400 with every reason.
    Invalid(Vec<String>),
    /// Anything else, classified by [`ApiError::status`].
    Api(ApiError),
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl From<datafusion::error::DataFusionError> for Failure {
    fn from(error: datafusion::error::DataFusionError) -> Self {
        Self::Api(error.into())
    }
}

impl Failure {
    fn label(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "bad_request",
            Self::Api(error) => error.label(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, errors) = match self {
            Self::Invalid(errors) => (StatusCode::BAD_REQUEST, errors),
            Self::Api(error) => {
                let status = error.status();
                let message = error.message().to_owned();
                if status.is_server_error() {
                    tracing::warn!(error = %message, "KairosDB request failed.");
                }
                (status, vec![message])
            }
        };
        (status, axum::Json(serde_json::json!({ "errors": errors }))).into_response()
    }
}

fn json(body: Vec<u8>) -> Response {
    ([(CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response()
}

/// The request body, inflated when it is gzip (by header, as examon-common sends it with
/// `Content-Type: application/gzip`, or by its magic bytes).
fn request_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Cow<'a, [u8]>, Failure> {
    let header_says = |name, prefix: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with(prefix))
    };
    let gzip = header_says(CONTENT_ENCODING, "gzip")
        || header_says(CONTENT_TYPE, "application/gzip")
        || body.starts_with(&[0x1f, 0x8b]);
    if gzip {
        gunzip(body)
            .map(Cow::Owned)
            .map_err(|e| Failure::Invalid(vec![format!("gzip body {e}")]))
    } else {
        Ok(Cow::Borrowed(body))
    }
}

/// A fresh query session within the API's memory limit.
fn session(state: &ApiState) -> Result<SessionContext, Failure> {
    state
        .store
        .query_context(state.config.query_memory_bytes)
        .map_err(|e| Failure::Api(e.into()))
}

/// Runs `work` within `api.query_timeout_secs`.
async fn bounded<T>(
    state: &ApiState,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    let limit = state.config.query_timeout_secs;
    tokio::time::timeout(Duration::from_secs_f64(limit), work)
        .await
        .map_err(|_| {
            Failure::Api(ApiError::Timeout(format!(
                "the query ran longer than {limit} s (api.query_timeout_secs) and was cancelled"
            )))
        })?
}

/// Answers, counts and times one request (`api` is the label of the meters).
fn finish(
    state: &ApiState,
    api: &'static str,
    started: Instant,
    result: Result<Response, Failure>,
) -> Response {
    let status = result.as_ref().map_or_else(Failure::label, |_| "ok");
    state
        .metrics
        .observe(api, status, started.elapsed().as_secs_f64());
    result.unwrap_or_else(IntoResponse::into_response)
}

#[tracing::instrument(skip_all, fields(protocol = "kairosdb", request_type = "query"))]
async fn datapoints_query(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let result = async {
        let body = request_body(&headers, &body)?;
        let query = query::parse(&body, now_ms()).map_err(|e| Failure::Invalid(e.0))?;
        let limits = Limits {
            max_rows: state.config.max_result_rows,
            pushdown: true,
        };
        let results = bounded(&state, async {
            let ctx = session(&state)?;
            let mut results = Vec::with_capacity(query.metrics.len());
            for metric in &query.metrics {
                let result = execute::run_metric(&ctx, &query, metric, limits).await?;
                results.push((metric, result));
            }
            Ok(response::query(&results))
        })
        .await?;
        Ok(json(results))
    }
    .await;
    finish(&state, "kairosdb", started, result)
}

#[tracing::instrument(skip_all, fields(protocol = "kairosdb", request_type = "query_tags"))]
async fn datapoints_query_tags(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let result = async {
        let body = request_body(&headers, &body)?;
        let query = query::parse(&body, now_ms()).map_err(|e| Failure::Invalid(e.0))?;
        let found = bounded(&state, async {
            let ctx = session(&state)?;
            let mut found = Vec::with_capacity(query.metrics.len());
            for metric in &query.metrics {
                let tags = execute::series_tags(&ctx, &query, metric, state.config.max_result_rows)
                    .await?;
                found.push((metric.name.as_str(), tags));
            }
            Ok(response::query_tags(&found))
        })
        .await?;
        Ok(json(found))
    }
    .await;
    finish(&state, "kairosdb", started, result)
}

/// `POST /api/v1/datapoints`: 204 once every sample is in the WAL, 400 (storing nothing)
/// if any data point is invalid.
#[tracing::instrument(skip_all, fields(protocol = "kairosdb", request_type = "write"))]
async fn datapoints_write(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let result = async {
        let body = request_body(&headers, &body)?;
        let samples =
            codec::decode_datapoints(&body).map_err(|e| Failure::Invalid(e.messages()))?;
        state.store.write(samples).await.map_err(|e| {
            let message = format!("the samples were not stored: {e}");
            Failure::Api(match e {
                exawatch_store::Error::Closed => ApiError::Timeout(message),
                exawatch_store::Error::ReadOnly => ApiError::Unavailable(message),
                _ => ApiError::Internal(message),
            })
        })?;
        Ok::<_, Failure>(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    finish(&state, "kairosdb_write", started, result)
}

/// `?prefix=` of `metricnames`.
#[derive(Debug, Deserialize)]
struct NamesParams {
    prefix: Option<String>,
}

async fn metric_names(
    State(state): State<ApiState>,
    Query(params): Query<NamesParams>,
) -> Response {
    let result = bounded(&state, async {
        let ctx = session(&state)?;
        let mut names = execute::distinct(&ctx, "metric", state.config.max_result_rows).await?;
        if let Some(prefix) = params.prefix.as_deref() {
            names.retain(|n| n.starts_with(prefix));
        }
        Ok(json(response::names(&names)))
    })
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn tag_names(State(state): State<ApiState>) -> Response {
    let result = bounded(&state, async {
        let ctx = session(&state)?;
        let mut names = execute::tag_columns(&ctx).await?;
        names.sort();
        Ok(json(response::names(&names)))
    })
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn tag_values(State(state): State<ApiState>) -> Response {
    let result = bounded(&state, async {
        let ctx = session(&state)?;
        let mut values = BTreeSet::new();
        for column in execute::tag_columns(&ctx).await? {
            values.extend(execute::distinct(&ctx, &column, state.config.max_result_rows).await?);
        }
        Ok(json(response::names(&values)))
    })
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn version() -> Response {
    json(serde_json::to_vec(&serde_json::json!({ "version": VERSION })).unwrap_or_default())
}

/// The store answers a query: what KairosDB's `Datastore-Query` check tests.
async fn store_answers(state: &ApiState) -> bool {
    let Ok(ctx) = session(state) else {
        return false;
    };
    let Ok(frame) = ctx.table("samples").await else {
        return false;
    };
    match frame
        .select(vec![ident("time")])
        .and_then(|f| f.limit(0, Some(0)))
    {
        Ok(frame) => frame.collect().await.is_ok(),
        Err(_) => false,
    }
}

async fn health_check(State(state): State<ApiState>) -> Response {
    if store_answers(&state).await {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }
}

async fn health_status(State(state): State<ApiState>) -> Response {
    let datastore = if store_answers(&state).await {
        "Datastore-Query: OK"
    } else {
        "Datastore-Query: FAIL"
    };
    json(serde_json::to_vec(&serde_json::json!([datastore])).unwrap_or_default())
}

/// True if an `Accept-Encoding` value accepts gzip (`gzip`, `x-gzip` or `*`, not at `q=0`).
fn accepts_gzip(accept: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        matches!(coding.as_str(), "gzip" | "x-gzip" | "*") && !refused
    })
}

fn gzip_bytes(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    encoder.finish()
}

/// Middleware: gzips an answer with a body when the request accepts gzip.
async fn gzip_response(request: Request, next: Next) -> Response {
    let wanted = request
        .headers()
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let response = next.run(request).await;
    if !wanted
        || response.status() == StatusCode::NO_CONTENT
        || response.headers().contains_key(CONTENT_ENCODING)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let compressed = if bytes.len() > BLOCKING_GZIP_BYTES {
        tokio::task::spawn_blocking(move || gzip_bytes(&bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    } else {
        gzip_bytes(&bytes)
    };
    let Ok(compressed) = compressed else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts
        .headers
        .append(VARY, HeaderValue::from_static("accept-encoding"));
    Response::from_parts(parts, Body::from(compressed))
}
