//! Write endpoints: Influx line protocol (`/api/v2/write`, `/write`, as Telegraf sends it),
//! Prometheus remote write (`/api/v1/write`) and OpenTelemetry metrics (`/v1/metrics`,
//! OTLP/HTTP). Each answers only once the samples are in the WAL: 204 on success (OTLP: 200
//! with an `ExportMetricsServiceResponse`), 400 for bad input (good lines of a line-protocol
//! body are still stored; refused OTLP points are a `partial_success` of a 200), 429/503 when
//! the store is behind (clients retry).

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use exawatch_protocol::Batch;
use exawatch_protocol::compression::{GunzipError, gunzip};
use exawatch_protocol::line_protocol::Precision;
use exawatch_protocol::otlp::{self, Format};
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

/// OTLP/HTTP metrics: protobuf or JSON (`Content-Type`), gzipped or not. Points the decoder
/// refuses are counted per reason and answered as `partial_success`; a body that is not a
/// request gets 400 with a `google.rpc.Status` in the request's format.
pub(crate) async fn otlp_metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(format) = Format::from_content_type(content_type) else {
        // No format to answer in: JSON, which a person reading the error can read.
        let message = format!(
            "unsupported Content-Type {content_type:?} (application/x-protobuf, application/json)"
        );
        return otlp_status(Format::Json, StatusCode::UNSUPPORTED_MEDIA_TYPE, &message);
    };
    let body = match inflate(&headers, &body) {
        Ok(body) => body,
        Err(error) => {
            state.store.count_dropped(otlp::DecodeError::REASON, 1);
            return otlp_error(format, &error);
        }
    };
    let export = match otlp::decode(&body, format, now_ns(), &state.otlp_deltas) {
        Ok(export) => export,
        Err(error) => {
            state.store.count_dropped(otlp::DecodeError::REASON, 1);
            return otlp_error(format, &ApiError::BadRequest(error.to_string()));
        }
    };
    let otlp::Export {
        batch,
        rejections,
        receipt,
    } = export;
    if let Err(error) = state.store.write(batch).await {
        // The client sends the request again: its delta points must count then, and its
        // refused points are counted then.
        state.otlp_deltas.revert(receipt);
        return otlp_error(format, &ApiError::from(error));
    }
    for (rejection, count) in rejections.counts() {
        state.store.count_dropped(rejection.reason(), count);
    }
    (
        [(CONTENT_TYPE, format.content_type())],
        otlp::encode_response(format, &rejections),
    )
        .into_response()
}

/// An OTLP error answer: the status `error` has, a `google.rpc.Status` body, and
/// `Retry-After` when the client should retry.
fn otlp_error(format: Format, error: &ApiError) -> Response {
    let status = error.status();
    let mut response = otlp_status(format, status, error.message());
    if matches!(
        error,
        ApiError::TooManyRequests(_) | ApiError::Unavailable(_)
    ) {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn otlp_status(format: Format, status: StatusCode, message: &str) -> Response {
    // google.rpc.Code: INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL.
    let code = match status.as_u16() {
        400 | 404 | 415 => 3,
        413 | 422 => 8,
        429 | 503 => 14,
        _ => 13,
    };
    (
        status,
        [(CONTENT_TYPE, format.content_type())],
        otlp::encode_status(format, code, message),
    )
        .into_response()
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
