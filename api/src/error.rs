//! API errors and the one place that decides their HTTP status.

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use datafusion::error::DataFusionError;

/// An error answered to an API client.
#[derive(Debug)]
pub enum ApiError {
    /// The request itself is wrong (bad SQL, unknown column, refused statement, …).
    BadRequest(String),
    /// What was asked for does not exist.
    NotFound(String),
    /// The query needs more than a configured limit allows.
    LimitExceeded(String),
    /// The query ran past its time limit.
    Timeout(String),
    /// The server is behind (write queue full); retry soon.
    TooManyRequests(String),
    /// The server cannot take this now (memory at its limit, shutting down); retry later.
    Unavailable(String),
    /// Something failed on the server's side.
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::LimitExceeded(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Timeout(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short label for meters.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::LimitExceeded(_) => "limit_exceeded",
            Self::Timeout(_) => "timeout",
            Self::TooManyRequests(_) => "too_many_requests",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "error",
        }
    }

    /// The reason, for the client.
    pub(crate) fn message(&self) -> &str {
        match self {
            Self::BadRequest(m)
            | Self::NotFound(m)
            | Self::LimitExceeded(m)
            | Self::Timeout(m)
            | Self::TooManyRequests(m)
            | Self::Unavailable(m)
            | Self::Internal(m) => m,
        }
    }
}

impl From<DataFusionError> for ApiError {
    fn from(error: DataFusionError) -> Self {
        let message = error.to_string();
        match error.find_root() {
            DataFusionError::Plan(_)
            | DataFusionError::SQL(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => Self::BadRequest(message),
            DataFusionError::ArrowError(arrow_error, _)
                if matches!(
                    arrow_error.as_ref(),
                    arrow::error::ArrowError::DivideByZero
                        | arrow::error::ArrowError::CastError(_)
                        | arrow::error::ArrowError::ParseError(_)
                        | arrow::error::ArrowError::ComputeError(_)
                        | arrow::error::ArrowError::InvalidArgumentError(_)
                ) =>
            {
                Self::BadRequest(message)
            }
            DataFusionError::ResourcesExhausted(_) => Self::LimitExceeded(message),
            _ => Self::Internal(message),
        }
    }
}

impl From<exawatch_store::Error> for ApiError {
    fn from(error: exawatch_store::Error) -> Self {
        use exawatch_store::Error as E;
        let message = error.to_string();
        match error {
            E::QueueFull => Self::TooManyRequests(message),
            E::LimitExceeded { .. } => Self::BadRequest(message),
            // A WAL write that failed (disk full, I/O error): nothing was stored, retry later;
            // a querier stores nothing: a load balancer tries an ingester.
            // The object store has been unreachable since start: answers would lack history.
            E::Overloaded { .. }
            | E::Closed
            | E::WriteFailed { .. }
            | E::ReadOnly
            | E::HistoryUnavailable => Self::Unavailable(message),
            _ => Self::Internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, Self::Internal(_)) {
            tracing::warn!(error = self.message(), "Request failed.");
        }
        let retry = matches!(self, Self::TooManyRequests(_) | Self::Unavailable(_));
        let body = Json(serde_json::json!({ "error": self.message() }));
        let mut response = (self.status(), body).into_response();
        if retry {
            let headers = response.headers_mut();
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
