//! Building responses: the body type every response carries (a buffer, or
//! a stream of server-sent events) and the JSON and bytes builders. It
//! depends on no other module of the crate: reading requests (`http`) and
//! error bodies (`error`) are built on it.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
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
    // Room for the headers every answer gets (security headers, rate
    // limits, CORS): one allocation, no regrowing.
    *r.headers_mut() = hyper::HeaderMap::with_capacity(RESPONSE_HEADERS);
    r.headers_mut().insert(CONTENT_TYPE, content_type);
    r
}

/// How many headers a response is given room for up front.
pub const RESPONSE_HEADERS: usize = 16;

/// 204 No Content.
pub fn no_content() -> Resp {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}
