//! HTTP basic authentication, when `[api] basic_auth_users` names any user (as KairosDB's
//! `kairosdb.jetty.basic_auth.*`): a request without matching credentials gets 401 with a
//! `WWW-Authenticate: Basic` challenge, which is what clients such as Python's
//! `HTTPBasicAuthHandler` (ExamonQL) wait for before sending their credentials.

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::ApiState;

/// User name → password; empty means no authentication.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BasicAuthUsers(BTreeMap<String, String>);

impl std::fmt::Debug for BasicAuthUsers {
    /// Names the users, never their passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl BasicAuthUsers {
    /// The given users and passwords.
    pub fn new(users: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(users.into_iter().collect())
    }

    /// True when no user is configured (authentication is off).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True if `authorization` (an `Authorization` header) carries a configured user's
    /// credentials.
    fn allows(&self, authorization: &[u8]) -> bool {
        let Some(token) = authorization.strip_prefix(b"Basic ") else {
            return false;
        };
        let token = token.trim_ascii();
        // Compare every user, whatever matches, so that timing tells nothing.
        self.0.iter().fold(false, |found, (user, password)| {
            let expected = base64(format!("{user}:{password}").as_bytes());
            constant_time_eq(expected.as_bytes(), token) | found
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Standard base64 with padding (RFC 4648), as HTTP basic authentication uses it.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Middleware: lets the request through when authentication is off or the credentials match.
pub(crate) async fn require(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let users = &state.config.basic_auth_users;
    let allowed = users.is_empty()
        || request
            .headers()
            .get(AUTHORIZATION)
            .is_some_and(|h| users.allows(h.as_bytes()));
    if allowed {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({ "errors": ["authentication required"] })),
    )
        .into_response();
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"exawatch\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn credentials() {
        let users = BasicAuthUsers::new([("Aladdin".into(), "open sesame".into())]);
        assert!(users.allows(b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
        assert!(!users.allows(b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZA=="));
        assert!(!users.allows(b"Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
        assert!(!users.allows(b""));
        assert!(!BasicAuthUsers::default().allows(b"Basic Og=="));
        assert_eq!(format!("{users:?}"), "{\"Aladdin\"}");
    }
}
