//! Authentication and roles on the HTTP API, when `[[api.users]]` are configured: a bearer
//! token or HTTP basic auth identifies the user; the route decides the role it needs.
//!
//! | role | may |
//! |---|---|
//! | `read` | query (SQL, PromQL, KairosDB queries), `/metrics`, anomalies, models, reports |
//! | `write` | the above, write (line protocol, remote write, OTLP, KairosDB datapoints), make a report |
//! | `admin` | everything, e.g. train a model |
//!
//! `/health` and the console's static pages are public (the console asks for a token).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use exawatch_protocol::settings::redacted;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::paths;

/// What a user may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Queries.
    Read,
    /// Queries and writes.
    Write,
    /// Everything.
    Admin,
}

impl Role {
    /// The name used in the configuration: `read`, `write`, `admin`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

/// One API user (`[[api.users]]`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiUser {
    /// User name (the basic-auth user).
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// Bearer token (`Authorization: Bearer …`); empty: none.
    #[serde(default)]
    pub token: String,
    /// Basic-auth password; empty: none.
    #[serde(default)]
    pub password: String,
}

impl std::fmt::Debug for ApiUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token", &redacted(&self.token))
            .field("password", &redacted(&self.password))
            .finish()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The configured users and the refusal counter.
#[derive(Debug)]
pub(crate) struct Auth {
    users: Vec<ApiUser>,
    refused: Family<ReasonLabel, Counter>,
}

impl Auth {
    /// `None` when no user is configured (the API is open).
    pub(crate) fn new(users: &[ApiUser], registry: &mut Registry) -> Option<Arc<Self>> {
        if users.is_empty() {
            return None;
        }
        let refused = Family::default();
        registry.sub_registry_with_prefix("exawatch").register(
            "http_auth_refused",
            "HTTP requests refused: no or bad credentials (401), or too low a role (403)",
            refused.clone(),
        );
        Some(Arc::new(Self {
            users: users.to_vec(),
            refused,
        }))
    }

    fn user(&self, authorization: &str) -> Option<&ApiUser> {
        if let Some(token) = authorization.strip_prefix("Bearer ") {
            let token = token.trim().as_bytes();
            return self
                .users
                .iter()
                .find(|u| !u.token.is_empty() && equal(u.token.as_bytes(), token));
        }
        let encoded = authorization.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (name, password) = decoded.split_once(':')?;
        self.users.iter().find(|u| {
            u.name == name
                && !u.password.is_empty()
                && equal(u.password.as_bytes(), password.as_bytes())
        })
    }

    fn refuse(&self, status: StatusCode, reason: &'static str, message: &str) -> Response {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
        let mut response =
            (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"exawatch\""),
            );
        }
        response
    }
}

/// Compares in time independent of where the inputs differ.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The role a request needs, `None` for public routes.
pub(crate) fn required_role(method: &Method, path: &str) -> Option<Role> {
    let write_paths = [
        paths::INFLUX_V2_WRITE,
        paths::INFLUX_V1_WRITE,
        paths::REMOTE_WRITE,
        paths::OTLP_METRICS,
        paths::KAIROSDB_DATAPOINTS,
    ];
    let public = [
        paths::HEALTH,
        paths::KAIROSDB_HEALTH_CHECK,
        paths::KAIROSDB_HEALTH_STATUS,
        "/",
        "/favicon.ico",
    ];
    if public.contains(&path) || path.starts_with("/console") {
        None
    } else if *method == Method::DELETE
        || (*method == Method::POST && (path == paths::MODELS || path == paths::RELOAD))
    {
        // Training runs a long query and a fit, and changes what the live scoring uses; a
        // reload changes which rules run.
        Some(Role::Admin)
    } else if *method == Method::POST && (write_paths.contains(&path) || path == paths::REPORTS) {
        Some(Role::Write)
    } else {
        Some(Role::Read)
    }
}

/// The middleware: lets a request through only with credentials of a sufficient role.
pub(crate) async fn authorize(
    State(auth): State<Arc<Auth>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(needed) = required_role(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let user = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| auth.user(v));
    match user {
        None if request.headers().contains_key(AUTHORIZATION) => auth.refuse(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "unknown user, token or password",
        ),
        None => auth.refuse(
            StatusCode::UNAUTHORIZED,
            "no_credentials",
            "authentication required: a bearer token or basic auth",
        ),
        Some(user) if user.role < needed => auth.refuse(
            StatusCode::FORBIDDEN,
            "role",
            &format!(
                "user {:?} has the role {}; this needs {}",
                user.name,
                user.role.name(),
                needed.name()
            ),
        ),
        Some(_) => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_roles() {
        assert_eq!(required_role(&Method::GET, "/health"), None);
        assert_eq!(required_role(&Method::GET, "/"), None);
        assert_eq!(
            required_role(&Method::POST, "/api/v1/sql"),
            Some(Role::Read)
        );
        assert_eq!(required_role(&Method::GET, "/metrics"), Some(Role::Read));
        assert_eq!(
            required_role(&Method::POST, "/api/v1/query_range"),
            Some(Role::Read)
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/datapoints/query"),
            Some(Role::Read)
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/datapoints"),
            Some(Role::Write)
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v2/write"),
            Some(Role::Write)
        );
        assert_eq!(
            required_role(&Method::POST, "/v1/metrics"),
            Some(Role::Write)
        );
        assert_eq!(
            required_role(&Method::DELETE, "/api/v1/models/x"),
            Some(Role::Admin)
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/models"),
            Some(Role::Admin)
        );
        assert_eq!(
            required_role(&Method::GET, "/api/v1/models"),
            Some(Role::Read)
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/reports"),
            Some(Role::Write)
        );
        assert_eq!(
            required_role(&Method::GET, "/reports/r.html"),
            Some(Role::Read)
        );
        assert!(Role::Admin > Role::Write && Role::Write > Role::Read);
    }

    #[test]
    fn credentials() {
        let auth = Auth {
            users: vec![ApiUser {
                name: "grafana".into(),
                role: Role::Read,
                token: "t0k3n".into(),
                password: "pw".into(),
            }],
            refused: Family::default(),
        };
        assert_eq!(
            auth.user("Bearer t0k3n").map(|u| u.name.as_str()),
            Some("grafana")
        );
        assert!(auth.user("Bearer t0k3").is_none());
        let basic = base64::engine::general_purpose::STANDARD.encode("grafana:pw");
        assert!(auth.user(&format!("Basic {basic}")).is_some());
        let wrong = base64::engine::general_purpose::STANDARD.encode("grafana:px");
        assert!(auth.user(&format!("Basic {wrong}")).is_none());
        assert!(auth.user("Basic !!!").is_none());
        assert!(
            format!("{:?}", auth.users[0]).contains("…")
                && !format!("{:?}", auth.users[0]).contains("t0k3n")
        );
    }
}
