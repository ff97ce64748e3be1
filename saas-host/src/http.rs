//! Reading requests, shared by every handler: the media type, bodies (size
//! limit, content type) and JSON with errors that name the offending field,
//! and query parameters. Responses are built with [`crate::response`].

use std::future::Future;

use bytes::Bytes;
use futures_util::future::{Either, FutureExt as _};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::Request;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::response::{media_type_of, says_json};

/// The media type of a request as sent (parameters stripped; compare it
/// case-insensitively), if any.
pub fn media_type(req: &Request<Incoming>) -> Option<&str> {
    media_type_of(req.headers())
}

/// Whether the request says its body is JSON (`application/json` or a
/// `+json` type).
pub fn is_json(req: &Request<Incoming>) -> bool {
    says_json(req.headers())
}

/// How many bytes past a body limit the server still reads (and discards)
/// before it answers 413. A client that is still sending when the server
/// closes the connection gets a reset, and a reset can destroy the 413 before
/// the client reads it; draining a moderately oversized body lets the answer
/// arrive (and keeps the connection usable). Larger bodies are cut off.
const DRAIN_PAST_LIMIT: u64 = 1 << 20;

/// When the request being served must have arrived in full (headers and
/// body). The server sets one for every request and hands it down with the
/// request (in [`crate::ctx::Ctx`] for the authenticated routes) to
/// [`read_body`], which answers 408 once it has passed. Declared here, where
/// it is read, so the body reader does not depend on the server.
#[derive(Clone, Copy, Debug)]
pub struct RequestDeadline {
    /// The instant the whole request must have been read by.
    pub at: tokio::time::Instant,
    /// The configured `request_timeout` (for the error message).
    pub limit: std::time::Duration,
}

/// Reads the whole body, refusing more than `limit` bytes: first by
/// `Content-Length`, then while reading (for chunked bodies). An oversized
/// body of up to `DRAIN_PAST_LIMIT` (1 MiB) more bytes is read to its end before
/// the 413, so that the client sees the answer. Past the request's
/// `deadline` (set by the server) it gives up with 408, however slowly
/// bytes still arrive.
pub fn read_body(
    req: Request<Incoming>,
    limit: usize,
    deadline: RequestDeadline,
) -> impl Future<Output = Result<Bytes, ApiError>> + Send {
    match body_reader(req, limit, deadline) {
        Ok(read) => Either::Left(read),
        Err(e) => Either::Right(std::future::ready(Err(e))),
    }
}

/// What [`read_body`] awaits: the reading of the body, or the error known
/// before anything is read (an invalid `Content-Length`). Only the body is
/// kept across the reads (the head is dropped here): every handler future
/// that awaits this one is that much smaller, and moved at each await.
fn body_reader(
    req: Request<Incoming>,
    limit: usize,
    deadline: RequestDeadline,
) -> Result<impl Future<Output = Result<Bytes, ApiError>> + Send, ApiError> {
    let declared = declared_length(req.headers())?;
    let body = req.into_body();
    Ok(async move {
        tokio::time::timeout_at(deadline.at, read_whole_body(body, declared, limit))
            .await
            .map_err(|_| ApiError::RequestTimeout(deadline.limit))?
    })
}

/// The body length `Content-Length` declares, if it is there.
fn declared_length(headers: &hyper::HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(CONTENT_LENGTH)
        .map(|len| {
            len.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::MalformedJson("invalid Content-Length".into()))
        })
        .transpose()
}

// A plain fn returning an async block, not an `async fn`: the block uses
// its captured body in place, where an `async fn` would hold a second copy.
#[allow(clippy::manual_async_fn)]
fn read_whole_body(
    mut body: Incoming,
    declared: Option<u64>,
    limit: usize,
) -> impl Future<Output = Result<Bytes, ApiError>> + Send {
    async move {
        if let Some(len) = declared {
            if len > limit as u64 {
                if len <= limit as u64 + DRAIN_PAST_LIMIT {
                    drain(body, len).await;
                }
                return Err(ApiError::PayloadTooLarge(limit));
            }
        }
        // A body in one frame (the usual small JSON body) is returned as it
        // came, without a copy; only a second frame starts a buffer.
        let mut first: Option<Bytes> = None;
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|_| ApiError::MalformedJson("the body could not be read".into()))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let read = first.as_ref().map_or(0, Bytes::len) + buf.len() + data.len();
            if read > limit {
                drain(
                    body,
                    (limit as u64 + DRAIN_PAST_LIMIT).saturating_sub(read as u64),
                )
                .await;
                return Err(ApiError::PayloadTooLarge(limit));
            }
            if first.is_none() && buf.is_empty() {
                first = Some(data);
                continue;
            }
            if let Some(f) = first.take() {
                buf.extend_from_slice(&f);
            }
            buf.extend_from_slice(&data);
        }
        Ok(match first {
            Some(f) => f,
            None => buf.freeze(),
        })
    }
}

/// Reads and discards up to `max` more bytes of `body` (stops at its end, at
/// `max`, or at a read error).
async fn drain(mut body: Incoming, max: u64) {
    let mut read = 0u64;
    while read < max {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len() as u64;
                }
            }
            _ => return,
        }
    }
}

/// Reads a JSON body into `T`: 415 unless the content type is JSON, 413 over
/// `limit`, 400 for invalid JSON, 422 naming the field for a missing field
/// or a value of the wrong type.
pub fn read_json<T: DeserializeOwned>(
    req: Request<Incoming>,
    limit: usize,
    deadline: RequestDeadline,
) -> impl Future<Output = Result<T, ApiError>> + Send {
    // Not read (nothing polled) unless the body is JSON. Combinators, not
    // an async block: a block awaiting the body reader it captured would
    // hold that future twice (as captured and as awaited).
    let read = if is_json(&req) {
        body_reader(req, limit, deadline)
    } else {
        Err(ApiError::UnsupportedMediaType("application/json"))
    };
    match read {
        Ok(read) => Either::Left(read.map(|bytes| parse_json(&bytes?))),
        Err(e) => Either::Right(std::future::ready(e).map(Err)),
    }
}

/// Parses JSON bytes into `T` with the error mapping of [`read_json`].
///
/// JSON (and JSON Schema) does not tell `3` from `3.0`: an integer field
/// sent as a number with a zero fraction is an integer. serde refuses it,
/// so when a body fails with a type error and holds such numbers, it is
/// parsed again with them written as integers (only on that error path; a
/// body of integers is parsed once, straight into `T`).
///
/// A valid body is parsed once, without tracking the path (that costs
/// about as much as the parse); only a refused one is parsed again with the
/// path, to name the field. A body is checked as UTF-8 once, whole (JSON
/// is UTF-8): parsed from a `str`, serde_json does not check each string
/// again (seven strings in an update body).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(v) = serde_json::from_str::<T>(text) {
            return Ok(v);
        }
    }
    let first = parse_typed(&mut serde_json::Deserializer::from_slice(bytes), bytes);
    let Err(ApiError::InvalidField { .. }) = &first else {
        return first;
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return first;
    };
    if !integral_floats_to_integers(&mut value) {
        return first;
    }
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Ok(v),
        Err(_) => first,
    }
}

/// Rewrites every number with a zero fraction (and a magnitude an `f64`
/// holds exactly, below 2^53) as an integer; whether any was.
fn integral_floats_to_integers(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < EXACT => {
                *v = Value::from(f as i64);
                true
            }
            _ => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, x| integral_floats_to_integers(x) | any),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |any, x| integral_floats_to_integers(x) | any),
        _ => false,
    }
}

fn parse_typed<T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
    bytes: &[u8],
) -> Result<T, ApiError> {
    match serde_path_to_error::deserialize::<_, T>(&mut *de) {
        Ok(v) => {
            // Trailing garbage after the value is a syntax error.
            de.end()
                .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
            Ok(v)
        }
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            use serde_json::error::Category;
            match inner.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    Err(ApiError::MalformedJson(inner.to_string()))
                }
                Category::Data => {
                    // A body that is not JSON at all is a 400 even when the
                    // typed parse stopped at a missing field first.
                    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                        return Err(ApiError::MalformedJson(e.to_string()));
                    }
                    Err(invalid_field(&path, &inner))
                }
            }
        }
    }
}

/// The 422 of a member that is missing or of the wrong type, naming it:
/// `field` is its JSON path (`experiences[3].reward`; for a missing member,
/// the object's path and the member: `state`), the message as serde says it
/// (`invalid reward: invalid type: string "x", expected f64`).
fn invalid_field(path: &str, e: &serde_json::Error) -> ApiError {
    // serde_json appends " at line L column C"; the path says more.
    let text = e.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let path = if path == "." { "" } else { path };
    let missing = text
        .strip_prefix("missing field `")
        .and_then(|t| t.strip_suffix('`'));
    let field = match (path, missing) {
        ("", Some(m)) => Some(m.to_owned()),
        (p, Some(m)) => Some(format!("{p}.{m}")),
        ("", None) => None,
        (p, None) => Some(p.to_owned()),
    };
    let message = if path.is_empty() {
        text.to_owned()
    } else {
        format!("invalid {path}: {text}")
    };
    ApiError::InvalidField { field, message }
}

/// The value of query parameter `name` (percent-decoded), if present.
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let q = query?;
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+` (as space) of a query value.
pub fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::wire::{PredictIn, UpdateIn};

    fn err(bytes: &[u8]) -> ApiError {
        match parse_json::<PredictIn>(bytes) {
            Err(e) => e,
            Ok(_) => panic!("parsed"),
        }
    }

    #[test]
    fn syntax_errors_are_400_and_data_errors_422_naming_the_field() {
        assert!(
            matches!(err(b"{\"model_id\": "), ApiError::MalformedJson(_)),
            "{:?}",
            err(b"{\"model_id\": ")
        );
        assert!(matches!(err(b"{} x"), ApiError::MalformedJson(_)));
        assert!(matches!(err(b""), ApiError::MalformedJson(_)));
        match err(b"{\"model_id\": \"m\", \"state\": 1.5}") {
            ApiError::InvalidField { field, message } => {
                assert!(message.contains("state"), "{message}");
                assert_eq!(field.as_deref(), Some("state"));
            }
            other => panic!("{other:?}"),
        }
        match parse_json::<UpdateIn>(
            b"{\"model_id\":\"m\",\"state\":1,\"action\":1,\"reward\":\"x\",\"next_state\":2}",
        ) {
            Err(ApiError::InvalidField { field, message }) => {
                assert!(message.starts_with("invalid reward:"), "{message}");
                assert_eq!(field.as_deref(), Some("reward"));
            }
            _ => panic!(),
        }
        match parse_json::<crate::wire::BatchIn>(
            b"{\"model_id\":\"m\",\"experiences\":[{\"state\":1,\"action\":1,\"reward\":0,\"next_state\":2},{\"state\":1,\"reward\":0,\"next_state\":2}]}",
        ) {
            Err(ApiError::InvalidField { field, .. }) => {
                assert_eq!(field.as_deref(), Some("experiences[1].action"));
            }
            _ => panic!(),
        }
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        let p: PredictIn =
            parse_json(b"{\"model_id\":\"m\",\"state\":-915.0,\"allowed_actions\":[1.0, 2]}")
                .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.allowed_actions, Some(vec![1, 2]));
        assert_eq!(p.state, qlearn_core::State::Int(-915));
        assert!(matches!(
            parse_json::<PredictIn>(b"{\"model_id\":\"m\",\"state\":1,\"allowed_actions\":[1.5]}"),
            Err(ApiError::InvalidField { .. })
        ));
    }

    #[test]
    fn query_params_decode() {
        assert_eq!(
            query_param(Some("a=1&name=copy%20one"), "name").unwrap(),
            "copy one"
        );
        assert_eq!(query_param(Some("name=a+b"), "name").unwrap(), "a b");
        assert_eq!(query_param(Some("name=%zz"), "name").unwrap(), "%zz");
        assert_eq!(query_param(Some("name=%4"), "name").unwrap(), "%4");
        assert!(query_param(Some("x=1"), "name").is_none());
        assert!(query_param(None, "name").is_none());
    }
}
