//! Job routes: `GET /api/v1/jobs?from=&to=&user=&node=&state=&cluster=&limit=` lists job
//! records (newest start first), `GET /api/v1/jobs/<id>[?cluster=]` answers one with its
//! summary ([`summary`]): energy per source, CPU utilisation and memory peak over the job's
//! nodes and time.

mod summary;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use exawatch_analytics::time::parse_time;
use exawatch_protocol::time::now_ns;
use exawatch_store::{JobFilter, StoredJob};
use serde::Deserialize;
use serde_json::Value;

use crate::{ApiError, ApiState};

/// Most jobs one request returns.
const MAX_LIMIT: usize = 100_000;

/// Query parameters of `GET /api/v1/jobs`.
#[derive(Debug, Deserialize)]
pub(crate) struct JobParams {
    from: Option<String>,
    to: Option<String>,
    user: Option<String>,
    node: Option<String>,
    state: Option<String>,
    cluster: Option<String>,
    limit: Option<usize>,
}

/// A stored job as JSON: the wire shape of its record plus `updated` (seconds).
fn job_json(job: &StoredJob) -> Value {
    let mut json = job.record.to_json();
    json["updated"] = (job.updated_ns as f64 / 1e9).into();
    json
}

pub(crate) async fn list_jobs(
    State(state): State<ApiState>,
    Query(params): Query<JobParams>,
) -> Response {
    let answer = async {
        let now = now_ns();
        let time = |text: Option<&str>| -> Result<Option<i64>, ApiError> {
            text.map(|t| parse_time(t, now).map_err(|e| ApiError::BadRequest(e.to_string())))
                .transpose()
        };
        let filter = JobFilter {
            from_ns: time(params.from.as_deref())?,
            to_ns: time(params.to.as_deref())?,
            user: params.user,
            node: params.node,
            state: params.state,
            cluster: params.cluster,
            id: None,
        };
        let mut jobs = state.store.jobs(&filter).await?;
        jobs.sort_by_key(|job| {
            std::cmp::Reverse(job.record.start_ns.or(job.record.submit_ns).unwrap_or(0))
        });
        jobs.truncate(params.limit.unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT));
        Ok::<_, ApiError>(Json(jobs.iter().map(job_json).collect::<Vec<_>>()))
    };
    answer.await.into_response()
}

/// Query parameters of `GET /api/v1/jobs/<id>`.
#[derive(Debug, Deserialize)]
pub(crate) struct OneJobParams {
    cluster: Option<String>,
}

pub(crate) async fn get_job(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Query<OneJobParams>,
) -> Response {
    let answer = async {
        let filter = JobFilter {
            id: Some(id.clone()),
            cluster: params.cluster,
            ..JobFilter::default()
        };
        let mut jobs = state.store.jobs(&filter).await?;
        let job = match jobs.len() {
            0 => return Err(ApiError::NotFound(format!("no job {id:?}"))),
            1 => jobs.remove(0),
            _ => {
                let clusters: Vec<&str> = jobs.iter().map(|j| j.record.cluster.as_str()).collect();
                return Err(ApiError::BadRequest(format!(
                    "job {id:?} exists in clusters {clusters:?}: add ?cluster="
                )));
            }
        };
        let mut json = job_json(&job);
        json["summary"] = summary::summarize(&state, &job.record, now_ns()).await?;
        Ok::<_, ApiError>(Json(json))
    };
    answer.await.into_response()
}
