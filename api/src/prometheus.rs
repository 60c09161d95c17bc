//! Prometheus' HTTP API (<https://prometheus.io/docs/prometheus/latest/querying/api/>), so
//! that Grafana's stock Prometheus datasource works against exawatch: `query`,
//! `query_range`, `labels`, `label/{name}/values`, `series`, `metadata`, `status/buildinfo`
//! (and an always-empty `query_exemplars`), in Prometheus' JSON shapes and error envelope.
//!
//! Handlers are thin: they read the parameters (query string, and the form-encoded body of
//! a POST, as Grafana sends), run the query through [`exawatch_promql::Engine`] over the
//! store (bounded by the API's timeout, memory and sample limits) and encode the result.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use exawatch_promql::{
    Engine, EngineOptions, Error as PromError, QueryResult, QueryValue, SeriesSource, StoreSource,
    matcher_sets, parse, write_time, write_value,
};
use exawatch_protocol::time::{days_from_civil, now_ms};
use promql_parser::label::Matcher;
use promql_parser::parser::Expr;

use crate::{ApiState, paths};

/// The routes of the Prometheus API (GET and form-encoded POST for each).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route(paths::PROM_QUERY, get(query).post(query))
        .route(paths::PROM_QUERY_RANGE, get(query_range).post(query_range))
        .route(paths::PROM_LABELS, get(labels).post(labels))
        .route(paths::PROM_LABEL_VALUES, get(label_values))
        .route(paths::PROM_SERIES, get(series).post(series))
        .route(paths::PROM_METADATA, get(metadata))
        .route(paths::PROM_BUILDINFO, get(buildinfo))
        .route(paths::PROM_EXEMPLARS, get(exemplars).post(exemplars))
}

/// An error in Prometheus' envelope: `{"status":"error","errorType":…,"error":…}`.
#[derive(Debug)]
pub(crate) struct PromApiError {
    kind: &'static str,
    message: String,
}

impl PromApiError {
    fn bad_data(message: impl Into<String>) -> Self {
        Self {
            kind: "bad_data",
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self.kind {
            "bad_data" => StatusCode::BAD_REQUEST,
            "execution" => StatusCode::UNPROCESSABLE_ENTITY,
            "timeout" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn label(&self) -> &'static str {
        match self.kind {
            "bad_data" => "bad_request",
            "execution" => "limit_exceeded",
            "timeout" => "timeout",
            "unavailable" => "unavailable",
            _ => "error",
        }
    }
}

impl From<PromError> for PromApiError {
    fn from(error: PromError) -> Self {
        let kind = match &error {
            PromError::Parse { .. } | PromError::BadQuery { .. } => "bad_data",
            PromError::Execution { .. } | PromError::Limit { .. } => "execution",
            PromError::Timeout => "timeout",
            PromError::Unavailable { .. } => "unavailable",
            PromError::Source { .. } => "internal",
        };
        Self {
            kind,
            message: error.to_string(),
        }
    }
}

impl IntoResponse for PromApiError {
    fn into_response(self) -> Response {
        if self.kind == "internal" {
            tracing::warn!(error = %self.message, "Prometheus API request failed.");
        }
        let body = serde_json::json!({
            "status": "error",
            "errorType": self.kind,
            "error": self.message,
        });
        (self.status(), axum::Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, PromApiError>;

/// Request parameters: the query string, plus a form-encoded body.
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    fn read(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut pairs: Vec<(String, String)> =
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let is_form = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Self(pairs)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn time(&self, name: &str) -> ApiResult<Option<i64>> {
        self.get(name)
            .map(|v| {
                parse_time(v).ok_or_else(|| {
                    PromApiError::bad_data(format!(
                        "invalid parameter \"{name}\": cannot parse \"{v}\" to a valid timestamp"
                    ))
                })
            })
            .transpose()
    }
}

/// The smallest and largest times the label and series endpoints accept by default.
const MIN_TIME: i64 = i64::MIN / 4;
const MAX_TIME: i64 = i64::MAX / 4;

/// A time as Prometheus accepts it: Unix seconds (fractions allowed) or RFC 3339.
pub(crate) fn parse_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() {
            return Some(if seconds > 0.0 { MAX_TIME } else { MIN_TIME });
        }
        return Some((seconds * 1000.0).round() as i64);
    }
    parse_rfc3339(text)
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num =
        |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse::<i64>().ok() };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = text.get(start..i)?;
        let padded: String = digits.chars().chain("000".chars()).take(3).collect();
        millis = padded.parse().ok()?;
    }
    let offset_minutes = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() => {
            let minutes = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let days = days_from_civil(year, month as u32, day as u32);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// A duration as Prometheus accepts it: float seconds or `1h30m`-style.
pub(crate) fn parse_duration(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds
            .is_finite()
            .then(|| (seconds * 1000.0).round() as i64);
    }
    let mut total = 0i64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[unit_len..];
    }
    (!text.is_empty()).then_some(total)
}

fn engine(state: &ApiState, params: &Params) -> ApiResult<Engine> {
    let source = StoreSource::new(state.store.clone(), state.config.query_memory_bytes);
    Ok(Engine::new(
        Arc::new(source),
        EngineOptions {
            max_samples: state.config.promql_max_samples,
            timeout: Some(time_limit(state, params)?),
            ..EngineOptions::default()
        },
    ))
}

/// The time a request may take: the request's `timeout`, capped by the server's.
fn time_limit(state: &ApiState, params: &Params) -> ApiResult<Duration> {
    let mut limit = Duration::from_secs_f64(state.config.query_timeout_secs);
    if let Some(text) = params.get("timeout") {
        let ms = parse_duration(text).filter(|ms| *ms > 0).ok_or_else(|| {
            PromApiError::bad_data(format!("invalid parameter \"timeout\": {text:?}"))
        })?;
        limit = limit.min(Duration::from_millis(ms as u64));
    }
    Ok(limit)
}

/// Runs `work` within the request's time limit.
async fn bounded<T>(
    state: &ApiState,
    params: &Params,
    work: impl std::future::Future<Output = ApiResult<T>>,
) -> ApiResult<T> {
    let limit = time_limit(state, params)?;
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| timed_out(limit))?
}

fn timed_out(limit: Duration) -> PromApiError {
    PromApiError {
        kind: "timeout",
        message: format!(
            "query timed out in expression evaluation (after {:.3} s)",
            limit.as_secs_f64()
        ),
    }
}

/// Records the outcome in the API meters and turns it into a response.
fn respond(
    state: &ApiState,
    api: &'static str,
    started: Instant,
    result: ApiResult<String>,
) -> Response {
    let status = result.as_ref().map_or_else(PromApiError::label, |_| "ok");
    state
        .metrics
        .observe(api, status, started.elapsed().as_secs_f64());
    match result {
        Ok(body) => ([(CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => error.into_response(),
    }
}

#[tracing::instrument(skip_all, fields(protocol = "prometheus", request_type = "query"))]
async fn query(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let params = Params::read(raw.as_deref(), &headers, &body);
    let result = async {
        let query = params
            .get("query")
            .ok_or_else(|| PromApiError::bad_data("invalid parameter \"query\": missing"))?;
        let time = params.time("time")?.unwrap_or_else(now_ms);
        let result = bounded(&state, &params, async {
            Ok(engine(&state, &params)?.instant(query, time).await?)
        })
        .await?;
        Ok(encode_result(&result))
    }
    .await;
    respond(&state, "promql", started, result)
}

#[tracing::instrument(
    skip_all,
    fields(protocol = "prometheus", request_type = "query_range")
)]
async fn query_range(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let params = Params::read(raw.as_deref(), &headers, &body);
    let result = async {
        let query = params
            .get("query")
            .ok_or_else(|| PromApiError::bad_data("invalid parameter \"query\": missing"))?;
        let start = params
            .time("start")?
            .ok_or_else(|| PromApiError::bad_data("invalid parameter \"start\": missing"))?;
        let end = params
            .time("end")?
            .ok_or_else(|| PromApiError::bad_data("invalid parameter \"end\": missing"))?;
        let step_text = params
            .get("step")
            .ok_or_else(|| PromApiError::bad_data("invalid parameter \"step\": missing"))?;
        let step = parse_duration(step_text).ok_or_else(|| {
            PromApiError::bad_data(format!(
                "invalid parameter \"step\": cannot parse \"{step_text}\" to a valid duration"
            ))
        })?;
        if end < start {
            return Err(PromApiError::bad_data(
                "invalid parameter \"end\": end timestamp must not be before start time",
            ));
        }
        let result = bounded(&state, &params, async {
            Ok(engine(&state, &params)?
                .range(query, start, end, step)
                .await?)
        })
        .await?;
        Ok(encode_result(&result))
    }
    .await;
    respond(&state, "promql", started, result)
}

/// The matcher lists of the `match[]` parameters (none: everything).
fn selectors(params: &Params) -> ApiResult<Vec<Vec<Matcher>>> {
    let mut out = Vec::new();
    for text in params.all("match[]") {
        let expr = parse(text)
            .map_err(|e| PromApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
        let Expr::VectorSelector(vs) = expr else {
            return Err(PromApiError::bad_data(format!(
                "invalid parameter \"match[]\": {text:?} is not a series selector"
            )));
        };
        out.extend(matcher_sets(&vs));
    }
    Ok(out)
}

fn limit(params: &Params) -> ApiResult<usize> {
    match params.get("limit") {
        None => Ok(usize::MAX),
        Some(text) => match text.parse::<usize>() {
            Ok(0) => Ok(usize::MAX),
            Ok(n) => Ok(n),
            Err(_) => Err(PromApiError::bad_data(format!(
                "invalid parameter \"limit\": {text:?}"
            ))),
        },
    }
}

fn success(data: &str, warnings: &[String]) -> String {
    let mut out = format!("{{\"status\":\"success\",\"data\":{data}");
    if !warnings.is_empty() {
        out.push_str(",\"warnings\":");
        out.push_str(&serde_json::to_string(warnings).expect("strings serialize"));
    }
    out.push('}');
    out
}

#[tracing::instrument(skip_all, fields(protocol = "prometheus", request_type = "series"))]
async fn series(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let params = Params::read(raw.as_deref(), &headers, &body);
    let result = async {
        let selectors = selectors(&params)?;
        if selectors.is_empty() {
            return Err(PromApiError::bad_data("no match[] parameter provided"));
        }
        let start = params.time("start")?.unwrap_or(MIN_TIME);
        let end = params.time("end")?.unwrap_or(MAX_TIME);
        let limit = limit(&params)?;
        let source = StoreSource::new(state.store.clone(), state.config.query_memory_bytes);
        let found = bounded(&state, &params, async {
            let mut all = Vec::new();
            for matchers in &selectors {
                all.extend(
                    source
                        .series(matchers, start, end)
                        .await
                        .map_err(source_error)?,
                );
            }
            Ok(all)
        })
        .await?;
        let mut found = found;
        found.sort();
        found.dedup();
        let mut warnings = Vec::new();
        if found.len() > limit {
            found.truncate(limit);
            warnings.push("results truncated due to limit".to_owned());
        }
        let mut data = String::from("[");
        for (i, labels) in found.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            write_labels(&mut data, labels);
        }
        data.push(']');
        Ok(success(&data, &warnings))
    }
    .await;
    respond(&state, "prometheus_series", started, result)
}

/// A source's error, classified as the engine classifies it (a limit is the query's fault).
fn source_error(error: exawatch_promql::SourceError) -> PromApiError {
    PromError::from(error).into()
}

#[tracing::instrument(skip_all, fields(protocol = "prometheus", request_type = "labels"))]
async fn labels(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let params = Params::read(raw.as_deref(), &headers, &body);
    let result = async {
        let mut selectors = selectors(&params)?;
        if selectors.is_empty() {
            selectors.push(Vec::new());
        }
        let start = params.time("start")?.unwrap_or(MIN_TIME);
        let end = params.time("end")?.unwrap_or(MAX_TIME);
        let limit = limit(&params)?;
        let source = StoreSource::new(state.store.clone(), state.config.query_memory_bytes);
        let mut names = bounded(&state, &params, async {
            let mut names = std::collections::BTreeSet::new();
            for matchers in &selectors {
                for labels in source
                    .series(matchers, start, end)
                    .await
                    .map_err(source_error)?
                {
                    names.extend(labels.iter().map(|(n, _)| n.to_owned()));
                }
            }
            Ok(names.into_iter().collect::<Vec<_>>())
        })
        .await?;
        names.truncate(limit);
        Ok(success(
            &serde_json::to_string(&names).expect("strings serialize"),
            &[],
        ))
    }
    .await;
    respond(&state, "prometheus_labels", started, result)
}

#[tracing::instrument(
    skip_all,
    fields(protocol = "prometheus", request_type = "label_values")
)]
async fn label_values(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let params = Params::read(raw.as_deref(), &headers, &[]);
    let result = async {
        let mut selectors = selectors(&params)?;
        if selectors.is_empty() {
            selectors.push(Vec::new());
        }
        let start = params.time("start")?.unwrap_or(MIN_TIME);
        let end = params.time("end")?.unwrap_or(MAX_TIME);
        let limit = limit(&params)?;
        let source = StoreSource::new(state.store.clone(), state.config.query_memory_bytes);
        let mut values = bounded(&state, &params, async {
            let mut values = std::collections::BTreeSet::new();
            for matchers in &selectors {
                values.extend(
                    source
                        .label_values(&name, matchers, start, end)
                        .await
                        .map_err(source_error)?,
                );
            }
            Ok(values.into_iter().collect::<Vec<_>>())
        })
        .await?;
        values.truncate(limit);
        Ok(success(
            &serde_json::to_string(&values).expect("strings serialize"),
            &[],
        ))
    }
    .await;
    respond(&state, "prometheus_labels", started, result)
}

/// `/api/v1/metadata`: exawatch keeps no metric types or help texts, so every metric is
/// listed with type `unknown` (Grafana uses this for hints only).
async fn metadata(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let params = Params::read(raw.as_deref(), &headers, &[]);
    let result = async {
        let limit = limit(&params)?;
        let source = StoreSource::new(state.store.clone(), state.config.query_memory_bytes);
        let mut matchers = Vec::new();
        if let Some(metric) = params.get("metric") {
            matchers.push(Matcher::new(
                promql_parser::label::MatchOp::Equal,
                exawatch_promql::METRIC_NAME,
                metric,
            ));
        }
        let names = bounded(&state, &params, async {
            source
                .label_values(exawatch_promql::METRIC_NAME, &matchers, MIN_TIME, MAX_TIME)
                .await
                .map_err(source_error)
        })
        .await?;
        let data: serde_json::Map<String, serde_json::Value> = names
            .into_iter()
            .take(limit)
            .map(|name| {
                (
                    name,
                    serde_json::json!([{"type": "unknown", "help": "", "unit": ""}]),
                )
            })
            .collect();
        Ok(success(&serde_json::Value::Object(data).to_string(), &[]))
    }
    .await;
    respond(&state, "prometheus_metadata", started, result)
}

/// `/api/v1/query_exemplars`: exawatch keeps no exemplars, so the answer is always empty
/// (Grafana asks when a panel has exemplars switched on).
async fn exemplars() -> Response {
    axum::Json(serde_json::json!({"status": "success", "data": []})).into_response()
}

/// `/api/v1/status/buildinfo`: the Prometheus version whose query semantics exawatch follows.
async fn buildinfo() -> Response {
    let body = serde_json::json!({
        "status": "success",
        "data": {
            "version": "3.0.0",
            "revision": concat!("exawatch-", env!("CARGO_PKG_VERSION")),
            "branch": "exawatch",
            "buildUser": "exawatch",
            "buildDate": "",
            "goVersion": "none (exawatch is written in Rust)",
        }
    });
    axum::Json(body).into_response()
}

fn write_labels(out: &mut String, labels: &exawatch_promql::Labels) {
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(name).expect("strings serialize"));
        out.push(':');
        out.push_str(&serde_json::to_string(value).expect("strings serialize"));
    }
    out.push('}');
}

/// `[t, "v"]` with `t` in seconds, as Prometheus writes it.
fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_time(out, t);
    out.push_str(",\"");
    write_value(out, v);
    out.push_str("\"]");
}

/// The `data` of a query result, with warnings and infos.
fn encode_result(result: &QueryResult) -> String {
    let mut data = String::new();
    match &result.value {
        QueryValue::Scalar { t, v } => {
            data.push_str("{\"resultType\":\"scalar\",\"result\":");
            write_point(&mut data, *t, *v);
        }
        QueryValue::String { t, v } => {
            data.push_str("{\"resultType\":\"string\",\"result\":");
            let quoted = serde_json::to_string(v).expect("strings serialize");
            data.push('[');
            write_time(&mut data, *t);
            let _ = write!(data, ",{quoted}]");
        }
        QueryValue::Vector(series) => {
            data.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    data.push(',');
                }
                data.push_str("{\"metric\":");
                write_labels(&mut data, &s.labels);
                data.push_str(",\"value\":");
                let p = s.points[0];
                write_point(&mut data, p.t, p.v);
                data.push('}');
            }
            data.push(']');
        }
        QueryValue::Matrix(series) => {
            data.push_str("{\"resultType\":\"matrix\",\"result\":[");
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    data.push(',');
                }
                data.push_str("{\"metric\":");
                write_labels(&mut data, &s.labels);
                data.push_str(",\"values\":[");
                for (j, p) in s.points.iter().enumerate() {
                    if j > 0 {
                        data.push(',');
                    }
                    write_point(&mut data, p.t, p.v);
                }
                data.push_str("]}");
            }
            data.push(']');
        }
    }
    data.push('}');
    let mut out = success(&data, &result.annotations.warnings);
    if !result.annotations.infos.is_empty() {
        out.pop();
        out.push_str(",\"infos\":");
        out.push_str(&serde_json::to_string(&result.annotations.infos).expect("strings serialize"));
        out.push('}');
    }
    out
}

#[cfg(test)]
mod tests;
