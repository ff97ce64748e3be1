//! Request handlers, one module per area of the API. Each handler parses
//! its input with [`crate::http`], calls the store on a blocking thread and
//! answers with a [`crate::wire`] type; errors go back as
//! [`crate::error::ApiError`].

pub mod accounts;
pub mod billing;
pub mod decisions;
pub mod engine;
pub mod models;
pub mod service;

use crate::error::ApiError;
use crate::wire::MAX_NAME_CHARS;
use qlearn_core::Error;

/// Checks a display name (model, API key): 1 to [`MAX_NAME_CHARS`]
/// characters, no control characters, not only whitespace (the rule
/// `wire::name_schema` states); returns it trimmed.
pub fn check_name(field: &str, name: &str) -> Result<String, ApiError> {
    let n = name.trim();
    let chars = name.chars().count();
    if n.is_empty() || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::field(
            field,
            format!(
                "must be 1 to {MAX_NAME_CHARS} characters, without control characters, not only \
                 whitespace"
            ),
        )
        .into());
    }
    Ok(n.to_owned())
}
