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
//! missing decisions feature needs no list at all (no read). The check
//! itself is `handlers::check_writable`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use qlearn_core::store::{read_only_models, ModelInfo};
use qlearn_core::tenancy::TierLimits;

/// Model id → why it is read-only.
pub type Reasons = Arc<HashMap<String, String>>;

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

    /// `user_id`'s list, if computed less than `ttl` ago.
    pub fn cached(&self, user_id: &str, ttl: Duration) -> Option<Reasons> {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        let (at, reasons) = users.get(user_id)?;
        (at.elapsed() < ttl).then(|| reasons.clone())
    }

    /// Keeps `user_id`'s list, computed from their `models` (oldest first)
    /// on a plan with `limits`, and returns it.
    pub fn insert(&self, user_id: &str, models: &[ModelInfo], limits: &TierLimits) -> Reasons {
        let reasons: Reasons = Arc::new(read_only_models(models, limits).into_iter().collect());
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        if users.len() >= MAX_USERS {
            users.clear();
        }
        users.insert(user_id.to_owned(), (Instant::now(), reasons.clone()));
        reasons
    }
}
