//! [`OwnedExperience`]: an [`Experience`] that owns its states and mask, for
//! a call's input that outlives the caller's borrow (PostgreSQL hands
//! queued calls to another thread that runs them).

use crate::model::Experience;
use crate::state::State;

/// An owned copy of an [`Experience`]; [`OwnedExperience::as_experience`]
/// borrows it back.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedExperience {
    /// The state the action was taken in, as the client sent it.
    pub state: State,
    /// The action taken.
    pub action: usize,
    /// The reward observed.
    pub reward: f64,
    /// The state reached.
    pub next_state: State,
    /// The episode terminated.
    pub done: bool,
    /// The episode was cut short.
    pub truncated: bool,
    /// The action taken in `next_state` (SARSA).
    pub next_action: Option<usize>,
    /// Actions allowed in `next_state`.
    pub next_allowed_actions: Option<Vec<usize>>,
}

impl OwnedExperience {
    /// The experience borrowed as the engine takes it.
    pub fn as_experience(&self) -> Experience<'_> {
        Experience {
            state: self.state.as_ref(),
            action: self.action,
            reward: self.reward,
            next_state: self.next_state.as_ref(),
            done: self.done,
            truncated: self.truncated,
            next_action: self.next_action,
            next_allowed_actions: self.next_allowed_actions.as_deref(),
        }
    }
}

impl From<&Experience<'_>> for OwnedExperience {
    fn from(e: &Experience<'_>) -> Self {
        OwnedExperience {
            state: e.state.to_state(),
            action: e.action,
            reward: e.reward,
            next_state: e.next_state.to_state(),
            done: e.done,
            truncated: e.truncated,
            next_action: e.next_action,
            next_allowed_actions: e.next_allowed_actions.map(<[usize]>::to_vec),
        }
    }
}
