//! Service routes: health, metrics, the OpenAPI document's viewer, and the
//! embedded web dashboard. (The document itself is the `openapi` module's,
//! which lists these handlers.)

use bytes::Bytes;
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, ETAG, IF_NONE_MATCH,
    VARY,
};
use hyper::StatusCode;

use crate::app::App;
use crate::assets::{Asset, DOCS_ASSETS, DOCS_PAGE, STATIC_FILES};
use crate::branding::{Brand, Rendered};
use crate::error::ApiError;
use crate::response::{bytes_response, ok_json, Resp};
use crate::routes::Route;
use crate::wire::Health;

/// The ETag of the gzip form: a strong ETag names one representation.
fn gzip_etag(etag: &str) -> String {
    format!("{}-gzip\"", etag.trim_end_matches('"'))
}

/// Whether the request's `If-None-Match` lists `etag` (or `*`); the
/// comparison is weak (`W/` ignored), as RFC 9110 asks for this header.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(IF_NONE_MATCH).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').map(str::trim).any(|t| {
                let t = t.strip_prefix("W/").unwrap_or(t);
                t == "*" || t == etag
            })
        })
    })
}

/// Whether the request's `Accept-Encoding` accepts gzip (not with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT_ENCODING).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|item| {
                let mut parts = item.split(';').map(str::trim);
                let coding = parts.next().unwrap_or("");
                let q = parts
                    .find_map(|p| p.strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
            })
        })
    })
}

/// Serves `name` of `files`: its gzip form when the client accepts it,
/// `304 Not Modified` when the client's `If-None-Match` holds its ETag;
/// always with `ETag`, `Vary: Accept-Encoding` and `Cache-Control:
/// no-cache` (revalidate every time: the files change with the binary).
fn asset(files: &[Asset], name: &str, headers: &HeaderMap) -> Result<Resp, ApiError> {
    let a = files
        .iter()
        .find(|a| a.path == name)
        .ok_or(ApiError::RouteNotFound)?;
    let gzip = a.gzip.filter(|_| accepts_gzip(headers));
    let body = match gzip {
        Some(gz) => Bytes::from_static(gz),
        None => Bytes::from_static(a.bytes),
    };
    Ok(serve(a.content_type, body, a.etag, gzip.is_some(), headers))
}

/// A file rendered at start (the brand's, [`crate::branding`]): served as
/// [`asset`] serves an embedded one, without a gzip form.
fn rendered(r: &Rendered, headers: &HeaderMap) -> Resp {
    serve(r.content_type, r.bytes.clone(), &r.etag, false, headers)
}

/// The response for a file's `body` (gzip-encoded when `gzipped`), or 304.
fn serve(
    content_type: &'static str,
    body: Bytes,
    etag: &str,
    gzipped: bool,
    headers: &HeaderMap,
) -> Resp {
    let etag = if gzipped {
        gzip_etag(etag)
    } else {
        etag.to_owned()
    };
    let mut r = if none_match(headers, &etag) {
        let mut r = Resp::new(crate::response::Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = bytes_response(StatusCode::OK, HeaderValue::from_static(content_type), body);
        if gzipped {
            r.headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let h = r.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    r
}

/// `GET /`: the dashboard's index.html (with the brand applied).
pub fn index(brand: &Brand, headers: &HeaderMap) -> Result<Resp, ApiError> {
    match &brand.index {
        Some(r) => Ok(rendered(r, headers)),
        None => asset(STATIC_FILES, "index.html", headers),
    }
}

/// `GET /static/{file}`: the dashboard's files and the brand's
/// (`brand.css`, `brand.json`, `brand-logo`).
pub fn static_file(brand: &Brand, name: &str, headers: &HeaderMap) -> Result<Resp, ApiError> {
    match brand.static_file(name) {
        Some(r) => Ok(rendered(r, headers)),
        None => asset(STATIC_FILES, name, headers),
    }
}

/// `GET /docs`: the API viewer's page (with the brand's title).
pub fn docs(brand: &Brand, headers: &HeaderMap) -> Result<Resp, ApiError> {
    match &brand.docs {
        Some(r) => Ok(rendered(r, headers)),
        None => asset(DOCS_PAGE, "index.html", headers),
    }
}

/// `GET /docs/{file}`.
pub fn docs_asset(name: &str, headers: &HeaderMap) -> Result<Resp, ApiError> {
    asset(DOCS_ASSETS, name, headers)
}

/// Liveness.
#[utoipa::path(get, path = Route::Health.label(), tag = "service",
    responses((status = 200, description = "Alive", body = Health)))]
pub fn health(app: &App) -> Resp {
    ok_json(&Health {
        status: "ok",
        storage: app.store.backend(),
    })
}

/// Prometheus metrics.
#[utoipa::path(get, path = Route::Metrics.label(), tag = "service",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub fn metrics(app: &App) -> Resp {
    bytes_response(
        StatusCode::OK,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        app.metrics.render().into_bytes(),
    )
}
