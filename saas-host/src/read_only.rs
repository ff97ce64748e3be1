//! Which of a user's models are read-only on their plan, as the host
//! checks it before teaching a model (update, batch, rewards, episode
//! ends): after a downgrade, the models past the plan's `max_models` (the
//! newest) and those logging decisions on a plan without them
//! ([`qlearn_core::store::read_only_models`]; the stores themselves refuse
//! a model whose algorithm the plan lacks or that holds more states than it
//! allows, exactly, under their lock). Nothing is deleted: predictions and
//! exports still answer.
//!
//! The list is computed from the user's models (one store read) and kept
//! per user for `auth_cache_ttl`; this instance's own model and tier
//! changes drop it at once. A plan with neither a model limit nor a
//! missing decisions feature needs no list at all (no read).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use qlearn_core::store::{read_only_models, User};
use qlearn_core::Error;

use crate::app::App;
use crate::error::ApiError;

/// Model id → why it is read-only.
type Reasons = Arc<HashMap<String, String>>;

/// The per-user lists (see the module docs).
#[derive(Default)]
pub struct ReadOnly {
    users: RwLock<HashMap<String, (Instant, Reasons)>>,
}

/// Users cached at most (the cache is cleared past it).
const MAX_USERS: usize = 100_000;

impl ReadOnly {
    /// Drops `user_id`'s list (their models or tier changed).
    pub fn forget(&self, user_id: &str) {
        self.users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user_id);
    }

    /// Drops every list.
    pub fn forget_all(&self) {
        self.users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn cached(&self, user_id: &str, app: &App) -> Option<Reasons> {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        let (at, reasons) = users.get(user_id)?;
        (at.elapsed() < app.config.auth_cache_ttl).then(|| reasons.clone())
    }
}

/// `Ok` when `user` may teach model `model_id` as far as the host checks
/// (see the module docs); 403 `model_read_only` with the reason otherwise.
/// A model the user does not own passes (the store answers 404).
pub async fn check(app: &Arc<App>, user: &User, model_id: &str) -> Result<(), ApiError> {
    let limits = *app.limits(user);
    if limits.max_models.is_none() && limits.features.decisions {
        return Ok(());
    }
    let reasons = match app.read_only.cached(&user.id, app) {
        Some(r) => r,
        None => {
            let (a, uid) = (app.clone(), user.id.clone());
            let models = app.store_call(move || a.store.models(&uid)).await?;
            let reasons: Reasons =
                Arc::new(read_only_models(&models, &limits).into_iter().collect());
            let mut users = app
                .read_only
                .users
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if users.len() >= MAX_USERS {
                users.clear();
            }
            users.insert(user.id.clone(), (Instant::now(), reasons.clone()));
            reasons
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
