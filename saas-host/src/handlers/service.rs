//! Service routes: health, metrics, the OpenAPI document and its viewer,
//! and the embedded web dashboard.

use std::sync::OnceLock;

use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::StatusCode;

use crate::app::App;
use crate::error::ApiError;
use crate::http::{bytes_response, ok_json, Resp};
use crate::wire::Health;

include!(concat!(env!("OUT_DIR"), "/static_files.rs"));

/// The vendored Swagger UI (swagger-ui-dist, see assets/swagger/VERSION).
static DOCS_ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/swagger/swagger-ui.css"),
    ),
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger/swagger-ui-bundle.js"),
    ),
    (
        "init.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger/init.js"),
    ),
    (
        "LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/swagger/LICENSE"),
    ),
];

const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>qlearn API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"#;

fn asset(files: &[(&str, &'static str, &'static [u8])], name: &str) -> Result<Resp, ApiError> {
    let (_, ct, bytes) = files
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or(ApiError::RouteNotFound)?;
    let mut r = bytes_response(StatusCode::OK, HeaderValue::from_static(ct), *bytes);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// `GET /`: the dashboard's index.html.
pub fn index() -> Result<Resp, ApiError> {
    asset(STATIC_FILES, "index.html")
}

/// `GET /static/{file}`.
pub fn static_file(name: &str) -> Result<Resp, ApiError> {
    asset(STATIC_FILES, name)
}

/// `GET /docs`.
pub fn docs() -> Resp {
    bytes_response(
        StatusCode::OK,
        HeaderValue::from_static("text/html; charset=utf-8"),
        DOCS_HTML.as_bytes(),
    )
}

/// `GET /docs/{file}`.
pub fn docs_asset(name: &str) -> Result<Resp, ApiError> {
    asset(DOCS_ASSETS, name)
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "Alive", body = Health)))]
pub fn health(app: &App) -> Resp {
    ok_json(&Health {
        status: "ok",
        storage: app.store.backend(),
    })
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub fn metrics(app: &App) -> Resp {
    bytes_response(
        StatusCode::OK,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        app.metrics.render().into_bytes(),
    )
}

/// `GET /openapi.json`.
pub fn openapi() -> Resp {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    let doc = DOC.get_or_init(|| crate::openapi::document().into_bytes());
    bytes_response(StatusCode::OK, crate::http::JSON, doc.clone())
}
