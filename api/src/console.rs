//! The built-in web console: `GET /` and `GET /console/<file>`.
//!
//! The console is plain HTML, CSS and JavaScript modules under `api/console/` (uPlot vendored
//! under `api/console/vendor/`), compiled into the binary with `include_bytes!`: no separate
//! web server, no CDN, no Node at build time. In the browser it calls the same HTTP API as any
//! other client (PromQL, SQL, `/metrics`, the analytics endpoints when they exist), sending the
//! `Authorization` header the user entered in its login form.
//!
//! Every asset is answered with its content type, a strong `ETag` (a hash of its bytes,
//! computed at compile time) and `Cache-Control: no-cache`, so a browser revalidates and gets
//! `304 Not Modified` until a new binary serves different bytes. The pages themselves hold no
//! data, so they are served without credentials: when authentication is configured, these
//! routes must stay open for the login form to load.

use axum::Router;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::paths;

/// One embedded file of the console.
#[derive(Debug)]
struct Asset {
    /// Path under `api/console/` and under [`paths::CONSOLE_ASSETS`].
    path: &'static str,
    body: &'static [u8],
    /// FNV-1a of `body`.
    hash: u64,
}

/// Embeds `api/console/<path>`.
macro_rules! asset {
    ($path:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!("../console/", $path));
        Asset {
            path: $path,
            body: BODY,
            hash: fnv1a(BODY),
        }
    }};
}

/// The page `GET /` answers.
const INDEX: &str = "index.html";

/// Every file the console serves.
static ASSETS: &[Asset] = &[
    asset!("index.html"),
    asset!("console.css"),
    asset!("app.js"),
    asset!("api.js"),
    asset!("ui.js"),
    asset!("chart.js"),
    asset!("overview.js"),
    asset!("node.js"),
    asset!("query.js"),
    asset!("anomalies.js"),
    asset!("status.js"),
    asset!("vendor/uPlot.iife.min.js"),
    asset!("vendor/uPlot.min.css"),
];

/// 64-bit FNV-1a: a cheap content hash for `ETag`s, evaluated at compile time.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The console's routes; they use no state.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(paths::CONSOLE, get(index))
        .route(paths::CONSOLE_ASSETS, get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve(INDEX, &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return (StatusCode::NOT_FOUND, format!("no console file {path:?}\n")).into_response();
    };
    let etag = format!("\"{:016x}\"", asset.hash);
    let cache = [
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            ETAG,
            HeaderValue::from_str(&etag).expect("hex digits in quotes are a valid header"),
        ),
    ];
    let matches = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    if matches {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    let content_type = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type(path))),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    (cache, content_type, asset.body).into_response()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(IF_NONE_MATCH, tag);
        }
        routes::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn text(response: Response) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn root_serves_the_page_with_cache_validation() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[CACHE_CONTROL], "no-cache");
        assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(text(response).await.contains("<title>exawatch</title>"));

        let etag = headers[ETAG].to_str().unwrap();
        let again = get("/", Some(etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[ETAG], etag);
        assert!(text(again).await.is_empty());
        let stale = get("/", Some("\"0000000000000000\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_content_type() {
        for asset in ASSETS {
            let response = get(&format!("/console/{}", asset.path), None).await;
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            let expected = match asset.path.rsplit_once('.').unwrap().1 {
                "html" => "text/html; charset=utf-8",
                "css" => "text/css; charset=utf-8",
                "js" => "text/javascript; charset=utf-8",
                other => panic!("{}: unexpected extension {other}", asset.path),
            };
            assert_eq!(response.headers()[CONTENT_TYPE], expected, "{}", asset.path);
            assert_eq!(text(response).await.as_bytes(), asset.body);
        }
        let missing = get("/console/nope.js", None).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let outside = get("/console/../Cargo.toml", None).await;
        assert_eq!(outside.status(), StatusCode::NOT_FOUND);
    }

    /// Every `/console/…` URL in the page and every module a script imports is embedded, so
    /// a file added to `api/console/` but not to [`ASSETS`] fails here, not in a browser.
    #[test]
    fn every_referenced_file_is_embedded() {
        let embedded = |path: &str| ASSETS.iter().any(|a| a.path == path);
        let mut checked = 0;
        for asset in ASSETS.iter().filter(|a| !a.path.starts_with("vendor/")) {
            let text = std::str::from_utf8(asset.body).unwrap();
            let mut references: Vec<&str> = text
                .split("/console/")
                .skip(1)
                .filter_map(|rest| rest.split(['"', '\'']).next())
                .collect();
            // Relative module imports: `from './api.js'`.
            references.extend(
                text.split("from './")
                    .skip(1)
                    .filter_map(|rest| rest.split('\'').next()),
            );
            for reference in references {
                assert!(
                    embedded(reference),
                    "{} refers to {reference}, which is not in ASSETS",
                    asset.path
                );
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} references found");
    }

    #[test]
    fn hashes_differ_between_files() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut hashes: Vec<u64> = ASSETS.iter().map(|a| a.hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), ASSETS.len());
    }
}
