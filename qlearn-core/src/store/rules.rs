//! Rules every backend applies the same way, written once: how a batch of
//! experiences is validated before anything is debited, when an API key's
//! `last_used_at` is touched, and the clock the stores read.

use crate::error::Result;
use crate::model::{at_index, Experience, Learner};

/// An API key's `last_used_at` is written at most this often (seconds), so
/// authenticating does not turn every request into a write.
pub const KEY_TOUCH_INTERVAL_SECS: i64 = 60;

/// Whether authenticating with a key last used at `last_used_at` should
/// record `now` (never used, or not within [`KEY_TOUCH_INTERVAL_SECS`]).
pub(crate) fn touch_key(last_used_at: Option<i64>, now: i64) -> bool {
    last_used_at.is_none_or(|t| now - t >= KEY_TOUCH_INTERVAL_SECS)
}

/// Checks every experience of one update call against `learner`, before
/// the quota is debited. A single experience's error is returned as is; in
/// a batch of more, the error names the experience's index
/// (`experiences[i].field`), as the HTTP API reports it.
pub(crate) fn validate_batch<'e>(
    learner: &Learner,
    exps: impl ExactSizeIterator<Item = Experience<'e>>,
) -> Result<()> {
    let batch = exps.len() > 1;
    for (i, x) in exps.enumerate() {
        learner
            .validate(&x)
            .map_err(|err| if batch { at_index(i, err) } else { err })?;
    }
    Ok(())
}

/// Now, in Unix seconds (UTC); 0 if the clock reads before 1970.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
