//! Rules every backend applies the same way, written once (batch
//! validation is the engine's own, `Learner::validate_batch`): the tier's states
//! per model, when an API key's `last_used_at` is touched, and the clock the
//! stores read.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::{Experience, Learner};
use crate::state::{canonical_key, StateKey};
use crate::table::QRows;
use crate::tenancy::{features, TierLimits};

use super::ModelInfo;

/// An API key's `last_used_at` is written at most this often (seconds), so
/// authenticating does not turn every request into a write.
pub const KEY_TOUCH_INTERVAL_SECS: i64 = 60;

/// Whether authenticating with a key last used at `last_used_at` should
/// record `now` (never used, or not within [`KEY_TOUCH_INTERVAL_SECS`]).
pub(crate) fn touch_key(last_used_at: Option<i64>, now: i64) -> bool {
    last_used_at.is_none_or(|t| now - t >= KEY_TOUCH_INTERVAL_SECS)
}

/// Why a model (configuration `config`, a decision log when `decisions`,
/// `held` states) is read-only on a plan with `limits`, or `None` when it
/// may be taught: after a downgrade a model that uses a feature the plan
/// lacks or holds more states than the plan's states per model answers
/// predictions and exports and keeps every Q-value, but is not taught until
/// its owner changes it back within the plan (or upgrades).
pub(crate) fn read_only_reason(
    limits: &TierLimits,
    config: &ModelConfig,
    decisions: bool,
    held: u64,
) -> Option<String> {
    let needed = features::needed_by_model(config, decisions);
    if let Some(f) = features::missing(&limits.features, &needed) {
        return Some(format!(
            "it uses {f}, which your plan does not include (change the model or upgrade)"
        ));
    }
    let max = limits.max_states.filter(|&m| held > m)?;
    Some(format!(
        "it holds {held} states, more than the {max} per model your plan allows \
         (export it, delete it, or upgrade)"
    ))
}

/// [`read_only_reason`] as the stores check it before teaching a model:
/// [`Error::ModelReadOnly`] when there is one.
pub(crate) fn check_writable(
    limits: &TierLimits,
    learner: &Learner,
    held: usize,
    decisions: bool,
) -> Result<()> {
    match read_only_reason(limits, learner.config(), decisions, held as u64) {
        None => Ok(()),
        Some(reason) => Err(Error::ModelReadOnly { reason }),
    }
}

/// The models of one owner (`models`, oldest first, as
/// [`super::Store::models`] lists them) that are read-only on a plan with
/// `limits`, each with why: those using a feature the plan lacks or holding
/// more states than it allows per model, and every
/// model past the plan's `max_models` (the oldest ones stay writable).
/// The host refuses to teach them ([`Error::ModelReadOnly`]) and the
/// dashboard says why.
pub fn read_only_models(models: &[ModelInfo], limits: &TierLimits) -> Vec<(String, String)> {
    let keep = limits
        .max_models
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    models
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let reason = if i >= keep {
                Some(format!(
                    "your plan allows {keep} models and this is a newer one \
                     (delete models, or upgrade)"
                ))
            } else {
                read_only_reason(limits, &m.config, m.decisions.is_some(), m.stats.states)
            };
            reason.map(|r| (m.id.clone(), r))
        })
        .collect()
}

/// Checks that applying `exps` to a model holding `held` states, whose
/// stored rows `rows` can tell, stays within the tier's states per model
/// ([`TierLimits::max_states`]): refused whole with
/// [`Error::StateLimitReached`] otherwise, before the quota is debited.
/// Only an experience's `state` gets a row (the next state is read, not
/// stored). Free when the call cannot reach the limit (no key is built).
/// A model read-only on the plan ([`check_writable`]) is refused first.
pub(crate) fn check_state_room<'e>(
    limits: &TierLimits,
    learner: &Learner,
    held: usize,
    rows: &impl QRows,
    exps: impl ExactSizeIterator<Item = Experience<'e>>,
) -> Result<()> {
    check_writable(limits, learner, held, false)?;
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
