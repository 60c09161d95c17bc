//! Write endpoints: Influx line protocol (`/api/v2/write`, `/write`, as Telegraf sends it)
//! and Prometheus remote write (`/api/v1/write`). Each answers only once the samples are in
//! the WAL: 204 on success, 400 for bad input (good lines of a line-protocol body are still
//! stored), 429/503 when the store is behind (clients retry).

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_ENCODING;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use exawatch_protocol::Batch;
use exawatch_protocol::compression::{GunzipError, gunzip};
use exawatch_protocol::line_protocol::Precision;
use exawatch_protocol::remote_write;
use exawatch_protocol::time::now_ns;
use serde::Deserialize;

use crate::{ApiError, ApiState};

/// Query parameters of the line-protocol endpoints (`db`, `bucket`, `org` are accepted and
/// ignored: exawatch has one table).
#[derive(Debug, Deserialize)]
pub(crate) struct LineParams {
    precision: Option<String>,
}

pub(crate) async fn line_protocol(
    State(state): State<ApiState>,
    Query(params): Query<LineParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match write_lines(&state, params, &headers, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn write_lines(
    state: &ApiState,
    params: LineParams,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let precision = match params.precision.as_deref() {
        None => Precision::Nanoseconds,
        Some(text) => Precision::parse(text).ok_or_else(|| {
            ApiError::BadRequest(format!("unknown precision {text:?} (ns, us, ms, s)"))
        })?,
    };
    let body = inflate(headers, body)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
    let mut samples = Batch::new();
    let errors = state
        .line_series
        .parse_lines(text, precision, now_ns(), &mut samples);
    let stored = samples.len();
    state.store.write(samples).await?;
    match errors.first() {
        None => Ok(()),
        Some(first) => Err(ApiError::BadRequest(format!(
            "partial write: {} bad lines dropped, {stored} samples stored; first error: {first}",
            errors.len()
        ))),
    }
}

pub(crate) async fn remote_write(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let body = if headers.get(CONTENT_ENCODING).is_some_and(|v| v != "snappy") {
            inflate(&headers, &body)?
        } else {
            Cow::Borrowed(&body[..])
        };
        let samples = remote_write::decode(&body).map_err(ApiError::BadRequest)?;
        state.store.write(samples).await.map_err(ApiError::from)
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

/// The body, gunzipped if `Content-Encoding: gzip`.
fn inflate<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Cow<'a, [u8]>, ApiError> {
    match headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        None | Some("identity") => Ok(Cow::Borrowed(body)),
        Some("gzip") => gunzip(body).map(Cow::Owned).map_err(|e| match e {
            GunzipError::Corrupt { .. } => ApiError::BadRequest(format!("the gzip body {e}")),
            GunzipError::TooLarge { .. } => ApiError::LimitExceeded(format!("the body {e}")),
        }),
        Some(other) => Err(ApiError::BadRequest(format!(
            "unsupported Content-Encoding {other:?} (gzip)"
        ))),
    }
}
