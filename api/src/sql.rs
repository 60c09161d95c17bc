//! `POST /api/v1/sql`: read-only SQL over the `samples` table.
//!
//! The query comes as the JSON body `{"query": "..."}` or as a plain-text body; the result is
//! a JSON array of row objects, or CSV with `?format=csv` (or `Accept: text/csv`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::Deserialize;

use crate::{ApiError, ApiState};

/// Query-string parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct Params {
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Body {
    query: String,
    format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

pub(crate) async fn handle(
    State(state): State<ApiState>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let result = answer(&state, params, &headers, &body).await;
    let status = result.as_ref().map_or_else(ApiError::label, |_| "ok");
    state
        .metrics
        .observe("sql", status, started.elapsed().as_secs_f64());
    match result {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn answer(
    state: &ApiState,
    params: Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (query, body_format) = if is_json {
        let body: Body = serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("body is not {{\"query\": \"...\"}}: {e}"))
        })?;
        (body.query, body.format)
    } else {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::BadRequest("the query is not UTF-8".into()))?;
        (text.to_owned(), None)
    };
    if query.trim().is_empty() {
        return Err(ApiError::BadRequest("empty query".into()));
    }
    let format = match params.format.or(body_format).as_deref() {
        Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "unknown format {other:?} (json or csv)"
            )));
        }
        None if accepts_csv(headers) => Format::Csv,
        None => Format::Json,
    };
    let (schema, batches) = run(state, &query).await?;
    encode(format, &schema, &batches)
}

fn accepts_csv(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"))
}

/// Runs one read-only query in its own session, bounded in memory, time and result rows.
pub(crate) async fn run(
    state: &ApiState,
    query: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), ApiError> {
    let config = &state.config;
    let timeout = Duration::from_secs_f64(config.query_timeout_secs);
    let execution = async {
        let ctx = session(state)?;
        exawatch_analytics::anomalies::register_view(&ctx).await?;
        let frame = ctx
            .sql_with_options(query, exawatch_store::Store::read_only_sql())
            .await?;
        let schema: SchemaRef = Arc::clone(frame.schema().inner());
        let mut stream = frame.execute_stream().await?;
        let mut batches = Vec::new();
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            if rows > config.max_result_rows {
                return Err(ApiError::LimitExceeded(format!(
                    "the result has more than {} rows (api.max_result_rows); add a LIMIT or aggregate",
                    config.max_result_rows
                )));
            }
            batches.push(batch);
        }
        Ok((schema, batches))
    };
    tokio::time::timeout(timeout, execution)
        .await
        .map_err(|_| {
            ApiError::Timeout(format!(
                "the query ran longer than {} s (api.query_timeout_secs) and was cancelled",
                config.query_timeout_secs
            ))
        })?
}

fn session(state: &ApiState) -> Result<SessionContext, ApiError> {
    state
        .store
        .query_context(state.config.query_memory_bytes)
        .map_err(ApiError::from)
}

fn encode(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Response, ApiError> {
    let internal = |e: arrow::error::ArrowError| ApiError::Internal(e.to_string());
    let mut out = Vec::new();
    match format {
        Format::Json => {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(&mut out);
            for batch in batches {
                writer.write(batch).map_err(internal)?;
            }
            writer.finish().map_err(internal)?;
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
            Ok(([(CONTENT_TYPE, "application/json")], out).into_response())
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if batches.is_empty() {
                writer
                    .write(&RecordBatch::new_empty(Arc::clone(schema)))
                    .map_err(internal)?;
            }
            for batch in batches {
                writer.write(batch).map_err(internal)?;
            }
            drop(writer);
            Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response())
        }
    }
}
