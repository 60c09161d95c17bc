//! API errors and the one place that decides their HTTP status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use datafusion::error::DataFusionError;

/// An error answered to an API client.
#[derive(Debug)]
pub enum ApiError {
    /// The request itself is wrong (bad SQL, unknown column, refused statement, …).
    BadRequest(String),
    /// The query needs more than a configured limit allows.
    LimitExceeded(String),
    /// The query ran past its time limit.
    Timeout(String),
    /// Something failed on the server's side.
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::LimitExceeded(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short label for meters.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::LimitExceeded(_) => "limit_exceeded",
            Self::Timeout(_) => "timeout",
            Self::Internal(_) => "error",
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::BadRequest(m) | Self::LimitExceeded(m) | Self::Timeout(m) | Self::Internal(m) => {
                m
            }
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, Self::Internal(_)) {
            tracing::warn!(error = self.message(), "Request failed.");
        }
        (
            self.status(),
            Json(serde_json::json!({ "error": self.message() })),
        )
            .into_response()
    }
}
