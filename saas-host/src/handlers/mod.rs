//! Request handlers, one module per area of the API. Each handler parses
//! its input with [`crate::http`], calls the store on a blocking thread and
//! answers with a [`crate::wire`] type; errors go back as
//! [`crate::error::ApiError`].

pub mod accounts;
pub mod billing;
pub mod decisions;
pub mod engine;
pub mod evaluations;
pub mod models;
pub mod service;

use std::sync::Arc;

use crate::app::App;
use crate::error::ApiError;
use crate::wire::MAX_NAME_CHARS;
use qlearn_core::store::User;
use qlearn_core::Error;

/// `Ok` when `user` may teach model `model_id` as far as the host checks
/// ([`crate::read_only`]: models past the plan's `max_models`, decision
/// logs the plan lacks); 403 `model_read_only` with the reason otherwise.
/// A model the user does not own passes (the store answers 404).
pub async fn check_writable(app: &Arc<App>, user: &User, model_id: &str) -> Result<(), ApiError> {
    let limits = *app.limits(user);
    if limits.max_models.is_none() && limits.features.decisions {
        return Ok(());
    }
    let ttl = app.config.auth_cache_ttl;
    let reasons = match app.read_only.cached(&user.id, ttl) {
        Some(r) => r,
        None => {
            let (a, uid) = (app.clone(), user.id.clone());
            let models = app.store_call(move || a.store.models(&uid)).await?;
            app.read_only.insert(&user.id, &models, &limits)
        }
    };
    match reasons.get(model_id) {
        None => Ok(()),
        Some(reason) => Err(Error::ModelReadOnly {
            reason: reason.clone(),
        }
        .into()),
    }
}

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
