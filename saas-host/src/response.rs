//! Building responses: the body type every response carries (a buffer, or
//! a stream of server-sent events), the JSON and bytes builders, and the
//! security headers every answer gets. It depends on no other module of
//! the crate: reading requests (`http`) and error bodies (`error`) are
//! built on it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::header::{
    HeaderValue, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use hyper::{HeaderMap, Response, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

/// Every response of the service.
pub type Resp = Response<Body>;

/// A response body: a complete buffer, or a stream of chunks (server-sent
/// events) fed by a task through a channel.
#[derive(Debug)]
pub enum Body {
    /// The whole body (possibly empty).
    Full(Option<Bytes>),
    /// Chunks as they come; ends when the sender is dropped.
    Stream(mpsc::Receiver<Bytes>),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Body::Full(None)
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Full(Some(b))
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Self {
        Body::Full(Some(Bytes::from(b)))
    }
}

impl From<&'static [u8]> for Body {
    fn from(b: &'static [u8]) -> Self {
        Body::Full(Some(Bytes::from_static(b)))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// `application/json`.
pub const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A response with `body` serialized as JSON.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Resp {
    // Room for a typical answer up front (no regrowing while writing).
    let mut bytes = Vec::with_capacity(256);
    match serde_json::to_writer(&mut bytes, body) {
        Ok(()) => bytes_response(status, JSON, bytes),
        Err(e) => {
            tracing::error!(error = %e, "response serialization failed");
            bytes_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                JSON,
                br#"{"error":{"code":"internal","message":"internal error; it has been logged"}}"#
                    .to_vec(),
            )
        }
    }
}

/// A 200 JSON response.
pub fn ok_json<T: Serialize + ?Sized>(body: &T) -> Resp {
    json_response(StatusCode::OK, body)
}

/// A response with a body of the given content type.
pub fn bytes_response(
    status: StatusCode,
    content_type: HeaderValue,
    body: impl Into<Body>,
) -> Resp {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    if content_type == JSON {
        // Most answers: the prebuilt headers, copied in one go instead of
        // five inserts (each hashing its name and probing the table).
        *r.headers_mut() = JSON_HEADERS.clone();
    } else {
        // Room for the headers every answer gets (security headers, rate
        // limits, CORS): one allocation, no regrowing.
        *r.headers_mut() = HeaderMap::with_capacity(RESPONSE_HEADERS);
        r.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    r
}

/// How many headers a response is given room for up front.
pub const RESPONSE_HEADERS: usize = 16;

/// The headers a JSON answer starts with: its content type and the
/// security headers ([`secure`]) for a JSON document, with room for the
/// rest (rate limits, CORS).
static JSON_HEADERS: LazyLock<HeaderMap> = LazyLock::new(|| {
    let mut h = HeaderMap::with_capacity(RESPONSE_HEADERS);
    h.insert(CONTENT_TYPE, JSON);
    secure(&mut h);
    h
});

/// The Content-Security-Policy of the dashboard, the API viewer and every
/// other response that is not JSON: scripts and styles only from our own
/// files (no inline script, so an injected `<script>` cannot run), images
/// also as `data:` URIs (the API viewer's icons), requests only to
/// ourselves, and no framing (`frame-ancestors 'none'`, with
/// `X-Frame-Options: DENY` for old browsers) against click-jacking.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The Content-Security-Policy of a JSON response (OWASP's for REST APIs):
/// a JSON document opened in a browser may load nothing and be framed
/// nowhere. Stricter than the pages' policy, and a sixth of its bytes on
/// every API answer.
const JSON_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// The policy for a response with these headers (see [`CSP`], [`JSON_CSP`]).
fn csp_for(headers: &HeaderMap) -> &'static str {
    if says_json(headers) {
        JSON_CSP
    } else {
        CSP
    }
}

/// Whether `headers` (a request's or a response's) say the body is JSON
/// (`application/json` or a `+json` type).
pub fn says_json(headers: &HeaderMap) -> bool {
    // Most bodies are `application/json` exactly: compared whole before
    // the media type is parsed.
    let Some(ct) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    ct.as_bytes() == JSON.as_bytes() || media_type_in(ct).is_some_and(is_json_type)
}

/// The media type in `headers` (a request's or a response's): parameters
/// stripped; compare it case-insensitively.
pub fn media_type_of(headers: &HeaderMap) -> Option<&str> {
    media_type_in(headers.get(CONTENT_TYPE)?)
}

/// The media type of a `Content-Type` value, as [`media_type_of`] gives it.
fn media_type_in(value: &HeaderValue) -> Option<&str> {
    let ct = value.to_str().ok()?;
    // Up to the first parameter (a byte loop: the value is ASCII, and this
    // runs on every request with a body).
    let end = ct.bytes().position(|b| b == b';').unwrap_or(ct.len());
    Some(ct[..end].trim())
}

/// Whether media type `m` (as [`media_type_of`] gives it) is JSON.
fn is_json_type(m: &str) -> bool {
    let m = m.as_bytes();
    m.eq_ignore_ascii_case(b"application/json")
        || m.len() >= 5 && m[m.len() - 5..].eq_ignore_ascii_case(b"+json")
}

/// Adds the security headers every answer gets: `X-Content-Type-Options:
/// nosniff`, the Content-Security-Policy for its content type (a strict
/// one for JSON, the pages' one otherwise), `X-Frame-Options: DENY` and
/// `Referrer-Policy: no-referrer`. Headers that already have them (a JSON
/// answer built from the prebuilt set, which has them all) are left as
/// they are.
pub fn secure(h: &mut HeaderMap) {
    if h.contains_key(X_CONTENT_TYPE_OPTIONS) {
        return;
    }
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let csp = csp_for(h);
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// 204 No Content.
pub fn no_content() -> Resp {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types_in_any_case() {
        for m in [
            "application/json",
            "Application/JSON",
            "application/problem+json",
            "x+JSON",
        ] {
            assert!(is_json_type(m), "{m}");
        }
        for m in [
            "",
            "json",
            "+jso",
            "text/plain",
            "application/jsonx",
            "application/json+xml",
        ] {
            assert!(!is_json_type(m), "{m}");
        }
    }

    #[test]
    fn json_gets_the_strict_policy_and_everything_else_the_pages_one() {
        let with = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            csp_for(&h)
        };
        for json in [
            "application/json",
            "application/json; charset=utf-8",
            "application/problem+json",
        ] {
            assert_eq!(with(json), JSON_CSP, "{json}");
        }
        for other in ["text/html; charset=utf-8", "text/event-stream", "text/csv"] {
            assert_eq!(with(other), CSP, "{other}");
        }
        assert_eq!(csp_for(&HeaderMap::new()), CSP);
        assert!(
            JSON_CSP.contains("default-src 'none'") && JSON_CSP.contains("frame-ancestors 'none'")
        );
    }

    #[test]
    fn every_answer_gets_each_security_header_once_with_its_policy() {
        for (ct, csp) in [
            (JSON, JSON_CSP),
            (
                HeaderValue::from_static("application/json; charset=utf-8"),
                JSON_CSP,
            ),
            (HeaderValue::from_static("text/html; charset=utf-8"), CSP),
        ] {
            let mut r = bytes_response(StatusCode::OK, ct.clone(), Bytes::new());
            secure(r.headers_mut());
            let h = r.headers();
            assert_eq!(h[CONTENT_TYPE], ct);
            for (name, value) in [
                (X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (CONTENT_SECURITY_POLICY, csp),
                (X_FRAME_OPTIONS, "DENY"),
                (REFERRER_POLICY, "no-referrer"),
            ] {
                let all: Vec<_> = h.get_all(&name).iter().collect();
                assert_eq!(all, [value], "{name} of {ct:?}");
            }
            assert_eq!(h.len(), 5, "{ct:?}");
        }
        // The JSON error answers are built the same way.
        let mut r = json_response(StatusCode::NOT_FOUND, &serde_json::json!({"error": {}}));
        secure(r.headers_mut());
        assert_eq!(r.headers()[CONTENT_SECURITY_POLICY], JSON_CSP);
        assert_eq!(r.headers().len(), 5);
    }
}
