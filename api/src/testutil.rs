//! The API on a real store in a temporary directory, driven through the router (no socket):
//! what the handler tests of every protocol start from.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use exawatch_protocol::{Sample, Value};
use exawatch_store::{Store, StoreConfig};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::Value as Json;
use tower::ServiceExt;

use crate::{ApiConfig, ApiMetrics, ApiState};

/// A router over a fresh store; the store's directory lives as long as it does.
pub(crate) struct TestApi {
    pub(crate) store: Store,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

impl TestApi {
    /// With the default configuration.
    pub(crate) async fn new() -> Self {
        Self::with_config(ApiConfig::default()).await
    }

    /// With `config` (limits, users, …).
    pub(crate) async fn with_config(config: ApiConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        let store = Store::open(dir.path(), StoreConfig::test_config(), &mut registry)
            .await
            .unwrap();
        let metrics = ApiMetrics::new(&mut registry, &config);
        let state = ApiState::new(store.clone(), Arc::new(registry), metrics, config);
        Self {
            store,
            router: crate::router(state),
            _dir: dir,
        }
    }

    /// The answer to `request`: status, headers and body.
    pub(crate) async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body.to_vec())
    }

    /// POSTs `body` as JSON; the answer as JSON (`Null` when empty).
    pub(crate) async fn post(&self, path: &str, body: impl Into<Body>) -> (StatusCode, Json) {
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        let (status, _, body) = self.send(request).await;
        let json = if body.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
        };
        (status, json)
    }

    /// GETs `path`; the answer as JSON (`Null` when it is not JSON).
    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Json) {
        let (status, _, body) = self
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        let json = serde_json::from_slice(&body).unwrap_or(Json::Null);
        (status, json)
    }
}

/// A sample at `ms` milliseconds.
pub(crate) fn sample(metric: &str, tags: &[(&str, &str)], ms: i64, value: Value) -> Sample {
    Sample::new(
        metric,
        tags.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ms * 1_000_000,
        value,
    )
}
