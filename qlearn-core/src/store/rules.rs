//! Rules every backend applies the same way, written once (batch
//! validation is the engine's own, `Learner::validate_batch`): the tier's states
//! per model, when an API key's `last_used_at` is touched, and the clock the
//! stores read.

use crate::error::{Error, Result};
use crate::model::{Experience, Learner};
use crate::state::{canonical_key, StateKey};
use crate::table::QRows;
use crate::tenancy::TierLimits;

/// An API key's `last_used_at` is written at most this often (seconds), so
/// authenticating does not turn every request into a write.
pub const KEY_TOUCH_INTERVAL_SECS: i64 = 60;

/// Whether authenticating with a key last used at `last_used_at` should
/// record `now` (never used, or not within [`KEY_TOUCH_INTERVAL_SECS`]).
pub(crate) fn touch_key(last_used_at: Option<i64>, now: i64) -> bool {
    last_used_at.is_none_or(|t| now - t >= KEY_TOUCH_INTERVAL_SECS)
}

/// Checks that applying `exps` to a model holding `held` states, whose
/// stored rows `rows` can tell, stays within the tier's states per model
/// ([`TierLimits::max_states`]): refused whole with
/// [`Error::StateLimitReached`] otherwise, before the quota is debited.
/// Only an experience's `state` gets a row (the next state is read, not
/// stored). Free when the call cannot reach the limit (no key is built).
pub(crate) fn check_state_room<'e>(
    limits: &TierLimits,
    learner: &Learner,
    held: usize,
    rows: &impl QRows,
    exps: impl ExactSizeIterator<Item = Experience<'e>>,
) -> Result<()> {
    let Some(max) = limits.max_states else {
        return Ok(());
    };
    let held = held as u64;
    if held.saturating_add(exps.len() as u64) <= max {
        return Ok(());
    }
    let bins = learner.config().state_bins.as_deref();
    let mut new: Vec<StateKey> = Vec::new();
    for x in exps {
        let key = canonical_key(x.state, bins)?;
        if rows.row(key.as_ref()).is_none() && !new.contains(&key) {
            new.push(key);
        }
    }
    let new = new.len() as u64;
    if limits.may_add_states(held, new) {
        Ok(())
    } else {
        Err(Error::StateLimitReached {
            limit: max,
            states: held,
            new,
        })
    }
}

/// Now, in Unix seconds (UTC); 0 if the clock reads before 1970.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
