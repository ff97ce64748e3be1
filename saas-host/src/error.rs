//! The HTTP edge of errors: every failure a handler can produce, and the one
//! function ([`ApiError::into_response`]) that turns it into a status code,
//! headers and the JSON body `{"error": {"code", "message", "field"?}}`
//! (`field`: the JSON path of the offending member, where one applies).
//!
//! Handlers return `Result<_, ApiError>` and never build error bodies
//! themselves. Core errors convert with `?` (`From<qlearn_core::Error>`).
//! Faults of the environment (storage, internal) are logged here and reach
//! the client as a 500/503 with a generic message; bad input never does.

use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::StatusCode;
use qlearn_core::Error as CoreError;

use crate::response::{json_response, Resp};

/// A request that failed, with what the client needs to know.
#[derive(Debug)]
pub enum ApiError {
    /// A core error (validation, not found, quota, storage, ...).
    Core(CoreError),
    /// The body is not valid JSON (syntax error or truncated).
    MalformedJson(String),
    /// A JSON body is well-formed but a member is missing or has the wrong
    /// type: its JSON path (absent when the body itself is of the wrong
    /// type) and the message.
    InvalidField {
        /// The member's JSON path, e.g. `experiences[3].reward`.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// No, malformed, expired or revoked credentials.
    Unauthorized,
    /// Authenticated but not allowed (e.g. admin routes).
    Forbidden,
    /// An API key whose scope does not cover the route: the scope needed.
    InsufficientScope(qlearn_core::store::KeyScope),
    /// A long-lived credential in the URL (`?access_token=`), refused: URLs
    /// end up in proxy and server logs.
    CredentialInUrl,
    /// An event stream over a cap: the message says which.
    TooManyStreams(String),
    /// No such route.
    RouteNotFound,
    /// The route exists but not for this method.
    MethodNotAllowed(&'static str),
    /// The body exceeds the route's limit (bytes).
    PayloadTooLarge(usize),
    /// The request did not arrive in full within the server's
    /// `request_timeout` (the configured duration).
    RequestTimeout(std::time::Duration),
    /// The route wants JSON (or the model formats) and got another type.
    UnsupportedMediaType(&'static str),
    /// Too many failed logins or registrations from this account or address.
    TooManyAttempts(u64),
    /// The email is already registered.
    EmailTaken,
    /// The server is shutting down or overloaded.
    Unavailable,
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        ApiError::Core(e)
    }
}

impl ApiError {
    /// Status, machine-readable code and human message.
    fn parts(&self) -> (StatusCode, &'static str, String, Option<u64>) {
        use ApiError as A;
        match self {
            A::Core(e) => core_parts(e),
            A::MalformedJson(m) => (
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {m}"),
                None,
            ),
            A::InvalidField { message, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                message.clone(),
                None,
            ),
            A::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing, invalid, expired or revoked credentials; send Authorization: Bearer <token or API key>".into(),
                None,
            ),
            A::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this action needs the admin role".into(),
                None,
            ),
            A::InsufficientScope(needed) => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!(
                    "this API key's scope does not allow this route; it needs the `{needed}` scope \
                     (or a wider one)"
                ),
                None,
            ),
            A::CredentialInUrl => (
                StatusCode::BAD_REQUEST,
                "credential_in_url",
                "access_token in the URL is not accepted (URLs are logged); send Authorization: \
                 Bearer <token>, or POST /models/{id}/events/ticket and open the stream with \
                 ?ticket=<ticket>"
                    .into(),
                None,
            ),
            A::TooManyStreams(m) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                m.clone(),
                Some(5),
            ),
            A::RouteNotFound => (StatusCode::NOT_FOUND, "not_found", "no such route".into(), None),
            A::MethodNotAllowed(allow) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("this route allows {allow}"),
                None,
            ),
            A::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than this route's limit of {limit} bytes"),
                None,
            ),
            A::RequestTimeout(limit) => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request did not arrive in full within {} s",
                    limit.as_secs_f64()
                ),
                None,
            ),
            A::UnsupportedMediaType(want) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("send the body with Content-Type: {want}"),
                None,
            ),
            A::TooManyAttempts(secs) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many attempts; retry in {secs} s"),
                Some(*secs),
            ),
            A::EmailTaken => (
                StatusCode::CONFLICT,
                "email_taken",
                "this email is already registered".into(),
                None,
            ),
            A::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is busy or shutting down; retry shortly".into(),
                Some(1),
            ),
        }
    }

    /// The JSON path of the offending member of the request (a body's
    /// member, or a query parameter's name), where one applies.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::InvalidField { field, .. } => field.as_deref(),
            ApiError::Core(e) => core_field(e),
            _ => None,
        }
    }

    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The JSON error response (with `Retry-After` on 429/503 and `Allow` on 405).
    pub fn into_response(self) -> Resp {
        let (status, code, message, retry_after) = self.parts();
        if status.is_server_error() {
            match &self {
                ApiError::Core(e) => tracing::error!(code, error = %e, "request failed"),
                _ => tracing::warn!(code, "request refused"),
            }
        }
        let error = crate::wire::ErrorDetail {
            code: code.to_owned(),
            message,
            field: self.field().map(str::to_owned),
        };
        let body = crate::wire::ErrorBody { error };
        let mut resp = json_response(status, &body);
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::MethodNotAllowed(allow) = self {
            resp.headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

/// The code and message of a core error, as [`ApiError::into_response`]
/// would answer it: what a batch reports for one of its items.
pub fn error_detail(e: CoreError) -> crate::wire::ErrorDetail {
    let (_, code, message, _) = core_parts(&e);
    crate::wire::ErrorDetail {
        code: code.to_owned(),
        message,
        field: core_field(&e).map(str::to_owned),
    }
}

/// The field a core error names (validation errors name theirs).
fn core_field(e: &CoreError) -> Option<&str> {
    e.field_name()
}

/// The mapping of core errors (see docs/http-api.md for the codes).
/// `Retry-After` of a refusal for jobs queued or running at once (when
/// one finishes is not known; a few seconds is a polite poll).
const EVALUATION_RETRY_SECS: u64 = 5;

fn core_parts(e: &CoreError) -> (StatusCode, &'static str, String, Option<u64>) {
    use CoreError as E;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    match e {
        E::InvalidField { .. } => (unprocessable, "invalid_field", e.to_string(), None),
        E::InvalidState { .. } => (unprocessable, "invalid_state", e.to_string(), None),
        E::InvalidAction { .. } => (unprocessable, "invalid_action", e.to_string(), None),
        E::Decode(_) => (unprocessable, "invalid_model", e.to_string(), None),
        E::NotFound(what) => (
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
            None,
        ),
        E::Conflict(_) => (StatusCode::CONFLICT, "conflict", e.to_string(), None),
        E::ModelLimitReached { .. } => (
            StatusCode::FORBIDDEN,
            "model_limit_reached",
            e.to_string(),
            None,
        ),
        E::PlanRequired { .. } => (StatusCode::FORBIDDEN, "plan_required", e.to_string(), None),
        E::ModelReadOnly { .. } => (
            StatusCode::FORBIDDEN,
            "model_read_only",
            e.to_string(),
            None,
        ),
        E::InvalidSignature(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_signature",
            e.to_string(),
            None,
        ),
        E::StateLimitReached { .. } => (
            StatusCode::FORBIDDEN,
            "state_limit_reached",
            e.to_string(),
            None,
        ),
        E::QuotaExceeded {
            limit,
            retry_after_secs,
        } => {
            let resets =
                qlearn_core::tenancy::rfc3339(crate::now_unix() + *retry_after_secs as i64);
            (
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!("monthly quota of {limit} calls reached; resets {resets}"),
                Some(*retry_after_secs),
            )
        }
        E::EvaluationLimit {
            limit,
            retry_after_secs,
            ..
        } => (
            StatusCode::TOO_MANY_REQUESTS,
            if *limit == "evaluations_per_day" {
                "evaluations_per_day_reached"
            } else {
                "evaluations_at_once_reached"
            },
            e.to_string(),
            Some(retry_after_secs.unwrap_or(EVALUATION_RETRY_SECS)),
        ),
        E::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("rate limit exceeded; retry in {retry_after_secs} s"),
            Some((*retry_after_secs).max(1)),
        ),
        E::InvalidCredentials => (
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "invalid email or password".into(),
            None,
        ),
        E::Storage { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "storage is unavailable; retry shortly".into(),
            Some(1),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged".into(),
            None,
        ),
    }
}
