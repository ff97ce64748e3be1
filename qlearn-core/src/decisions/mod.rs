//! Decisions and delayed rewards: the engine remembers what it decided and
//! learns when the rewards arrive.
//!
//! A model with a [`DecisionsConfig`] logs each decision (a state, the
//! allowed actions, the chosen action and the probability with which the
//! behaviour policy chose it). Rewards for a decision arrive later (several,
//! late, or never) and are combined by the configured [`Aggregation`] until
//! the decision's window closes: by a `final` reward, by the first reward
//! with `first`, or by the deadline (with the default reward, or teaching
//! nothing when it is `null`). A closed decision becomes a [`Transition`]:
//!
//! - without an episode, a one-step episode: a terminal transition;
//! - as step k of an episode, `(s_k, a_k, R_k, s_k+1, a_k+1, allowed_k+1)`
//!   once step k+1 is logged, or terminal / truncated once the episode is
//!   ended.
//!
//! Each transition is produced exactly once, whatever order the pieces
//! arrive in, and applied by the same rule as `update`.
//!
//! This module owns that bookkeeping and nothing else: no IO, no clock
//! (every call takes `now_ms`, Unix milliseconds), no threads.
//! [`DecisionLog`] holds the state as plain data (serde, so it can be saved
//! next to a model) and has two layers:
//!
//! - `record_decision`, `record_reward`, `record_end` and `expire` change
//!   the log and return the transitions that became ready, for a store to
//!   apply with [`Learner::update`](crate::Learner::update) in the
//!   transaction that records them;
//! - `decide`, `reward`, `end_episode` and `settle` do the same on an
//!   in-memory [`Model`](crate::Model): they predict through it and apply
//!   the transitions with [`Model::update`](crate::Model::update).
//!
//! One log belongs to one model; decision and episode ids are scoped to it.
//!
//! ```
//! use qlearn_core::decisions::{Decide, DecisionLog, DecisionsConfig, EpisodeEnd, RewardStatus};
//! use qlearn_core::{Model, ModelConfig};
//!
//! let mut model = Model::new(ModelConfig::new(3))?;
//! let config = DecisionsConfig { reward_wait_seconds: 3600, ..Default::default() };
//! let mut log = DecisionLog::new(config)?;
//! let now = 1_700_000_000_000; // Unix milliseconds, from the caller's clock
//! let d = log.decide(&mut model, &Decide::new("home").episode("visit-1"), now)?;
//! assert!(d.probability > 0.0 && d.step == 0);
//! // A minute later, a final reward: the window closes at once, and the
//! // transition waits for the episode's next decision or its end.
//! let r = log.reward(&mut model, &d.decision_id, 1.0, Some("click"), true, now + 60_000)?;
//! assert_eq!(r.status, RewardStatus::Closed);
//! log.end_episode(&mut model, "visit-1", EpisodeEnd::terminated())?;
//! assert_eq!(model.stats().updates, 1);
//! // Deadlines pass only when the caller says what time it is.
//! assert_eq!(log.settle(&mut model, now + 3_600_000)?, 0);
//! # Ok::<(), qlearn_core::Error>(())
//! ```

mod apply;
mod config;
mod log;
mod partial;

use serde::{Deserialize, Serialize};

use crate::model::Experience;
use crate::state::State;

pub use apply::{check_baseline, check_end, Decide};
pub use config::{Aggregation, DecisionsConfig, MAX_RETENTION_DAYS, MAX_REWARD_WAIT_SECONDS};
pub use log::{
    check_id, DecisionLog, DecisionRecord, EpisodeRecord, LogParts, NewDecision, MAX_ID_BYTES,
};
pub use partial::{
    generated_number, Changes, Missing, Saved, GENERATED_LIMIT, HELD_DECISION_BYTES,
    HELD_EPISODE_BYTES,
};

/// What a logged decision tells its client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedDecision {
    /// The decision's id (the client's, or one the log made up).
    pub decision_id: String,
    /// The episode the decision belongs to, if any.
    pub episode_id: Option<String>,
    /// Its step in the episode, from 0 (0 without an episode).
    pub step: u64,
    /// The chosen action.
    pub action: usize,
    /// The probability with which the behaviour policy chose `action`.
    pub probability: f64,
    /// When the reward window closes (Unix milliseconds).
    pub closes_at_ms: i64,
    /// This is a retry of an already logged decision (the stored one is
    /// returned; the service meters it once).
    pub replayed: bool,
}

/// Where a decision stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionStatus {
    /// The reward window is open.
    Open,
    /// The reward is known; the transition waits for the episode's next
    /// decision or its end.
    Closed,
    /// The transition has been learned.
    Applied,
    /// The window closed with no reward and no default reward: nothing is
    /// learned from this decision (its episode goes on).
    Expired,
}

/// What a reward did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardStatus {
    /// Counted; the window is still open.
    Open,
    /// Counted and the window closed; the transition waits for the
    /// episode's next decision or its end.
    Closed,
    /// Counted, and the decision's transition has been learned.
    Applied,
    /// After the window closed (deadline, `final` or `first`): recorded,
    /// not learned.
    Late,
    /// A repeat of a `reward_id` with the same value: no effect.
    Duplicate,
}

/// The answer to a reward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewardReceipt {
    /// What the reward did.
    pub status: RewardStatus,
    /// The decision's aggregated reward so far (`None`: no reward counted).
    pub reward: Option<f64>,
    /// How many rewards have been counted for the decision.
    pub rewards: u32,
    /// When the decision's window closes (Unix milliseconds).
    pub closes_at_ms: i64,
    /// Transitions that became ready (to apply, in order).
    pub transitions: Vec<Transition>,
}

impl RewardReceipt {
    /// Whether the reward is metered (counted: not late, not a duplicate).
    pub fn metered(&self) -> bool {
        !matches!(self.status, RewardStatus::Late | RewardStatus::Duplicate)
    }
}

/// How an episode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A terminal state was reached: the last step does not bootstrap.
    Terminated,
    /// Cut short (a time limit): the last step bootstraps from the given
    /// next state.
    Truncated,
}

/// The end of an episode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeEnd {
    /// Terminated or truncated.
    pub outcome: Outcome,
    /// The state reached after the last decision (required when truncated).
    pub next_state: Option<State>,
    /// The actions allowed in `next_state` (restricts the bootstrap).
    pub next_allowed_actions: Option<Vec<usize>>,
}

impl EpisodeEnd {
    /// A terminated episode.
    pub fn terminated() -> Self {
        EpisodeEnd {
            outcome: Outcome::Terminated,
            next_state: None,
            next_allowed_actions: None,
        }
    }

    /// A truncated episode bootstrapping from `next_state`.
    pub fn truncated(next_state: State) -> Self {
        EpisodeEnd {
            outcome: Outcome::Truncated,
            next_state: Some(next_state),
            next_allowed_actions: None,
        }
    }
}

/// A transition assembled from decisions and rewards, ready for the
/// learning rule (owned, so a store can apply it after reading).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The decision it teaches from.
    pub decision_id: String,
    /// The decision's state.
    pub state: State,
    /// The decision's action.
    pub action: usize,
    /// The decision's aggregated (or default) reward.
    pub reward: f64,
    /// The next decision's state, or the state an episode was truncated
    /// in; `None` for a terminal transition.
    pub next_state: Option<State>,
    /// The next decision's action (SARSA's a').
    pub next_action: Option<usize>,
    /// The actions allowed in the next state.
    pub next_allowed_actions: Option<Vec<usize>>,
    /// Terminal: no bootstrap.
    pub done: bool,
    /// The episode was truncated after this step (bootstraps).
    pub truncated: bool,
}

impl Transition {
    /// The experience `update` takes (a terminal transition without a next
    /// state names its own state, which the rule ignores).
    pub fn experience(&self) -> Experience<'_> {
        Experience {
            state: self.state.as_ref(),
            action: self.action,
            reward: self.reward,
            next_state: self.next_state.as_ref().unwrap_or(&self.state).as_ref(),
            done: self.done,
            truncated: self.truncated,
            next_action: self.next_action,
            next_allowed_actions: self.next_allowed_actions.as_deref(),
        }
    }
}

/// Counts of a decision log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionStats {
    /// Decisions logged (retries not counted).
    pub decisions: u64,
    /// Rewards counted (late ones and duplicates not).
    pub rewards: u64,
    /// Decisions not yet applied or expired.
    pub pending: u64,
    /// Rewards that arrived after their window closed.
    pub late: u64,
    /// Decisions whose window closed without any reward (learned with the
    /// default reward, or expired when it is `null`).
    pub defaulted: u64,
    /// Transitions produced.
    pub applied: u64,
}

/// Whether an open decision (deadline `at`, id `id`) comes after the bound
/// (`closes_ms`, `bound`) in the order windows close in: deadline, then id
/// (bytewise; `None` takes every id of that deadline).
pub(crate) fn past(at: i64, id: &str, closes_ms: i64, bound: Option<&str>) -> bool {
    at > closes_ms || (at == closes_ms && bound.is_some_and(|b| id > b))
}
