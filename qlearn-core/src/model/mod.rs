//! The engine: action selection and the learning rules.
//!
//! This module holds the vocabulary (what `predict` and `update` take and
//! return) and [`Model`]; `learner` holds [`Learner`] and the general path,
//! `select` action selection, `rules` the learning rules and `fast` the short
//! paths of [`Model::predict`] and [`Model::update`].
//!
//! A [`Model`] is a [`Learner`] (configuration, current epsilon, counters, the
//! random generator) plus its in-memory [`QTable`]. The learner's methods are
//! generic over [`QRows`](crate::table::QRows), so a storage backend can run
//! the very same rules over rows it keeps elsewhere. Every method validates
//! its whole input before it changes anything: a failed call leaves the model
//! as it was.
//!
//! [`Model::predict`] and [`Model::update`] serve the common case (no mask,
//! no `state_bins`, one table, epsilon-greedy, Q-learning, no episode end) on
//! a short path that remembers the last row it used; everything else goes
//! through the general [`Learner`] methods. Both give the same results.

mod fast;
mod learner;
mod rules;
mod select;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::state::{StateKey, StateRef};
use crate::table::QTable;

pub use learner::Learner;

/// The limits the learner checks, re-exported where they were first defined.
pub use crate::limits::{MAX_REWARD, RECENT_RETURNS};

/// Counters of a model, saved with it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Predictions served.
    pub predictions: u64,
    /// Updates applied.
    pub updates: u64,
    /// Episodes ended (terminated or truncated).
    pub episodes: u64,
    /// Distinct states stored.
    pub states: u64,
    /// Sum of all rewards seen by `update` (for the running mean).
    pub reward_sum: f64,
    /// Return of the episode in progress.
    pub episode_return: f64,
    /// Returns of the last [`RECENT_RETURNS`] episodes, oldest first.
    pub recent_returns: VecDeque<f64>,
}

/// A model's statistics, as reported to users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Predictions served.
    pub predictions: u64,
    /// Updates applied.
    pub updates: u64,
    /// Episodes ended.
    pub episodes: u64,
    /// Distinct states stored.
    pub states: u64,
    /// Current exploration rate.
    pub epsilon: f64,
    /// Mean reward over all updates (0 before the first).
    pub mean_reward: f64,
    /// Returns of the most recent episodes, oldest first.
    pub recent_returns: Vec<f64>,
}

/// What `predict` decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// The chosen action index.
    pub action: usize,
    /// Whether the choice was exploratory: the action is not one of the
    /// greedy (highest-valued) allowed actions. Always `false` when
    /// `explore` is `false`.
    pub explored: bool,
    /// The epsilon in force.
    pub epsilon: f64,
}

/// A decision together with the state's Q-values (what the HTTP API returns).
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The chosen action index.
    pub action: usize,
    /// Whether the choice was exploratory (see [`Decision::explored`]).
    pub explored: bool,
    /// The epsilon in force.
    pub epsilon: f64,
    /// The probability with which the behaviour policy chose `action` (what
    /// offline evaluation needs; see [`Learner::action_probabilities`]).
    pub probability: f64,
    /// The state's Q-values (`initial_q` everywhere for an unseen state; the
    /// mean of both tables for double Q-learning).
    pub q_values: Vec<f64>,
}

/// One transition to learn from.
#[derive(Clone, Copy, Debug)]
pub struct Experience<'a> {
    /// The state the action was taken in.
    pub state: StateRef<'a>,
    /// The action taken.
    pub action: usize,
    /// The reward observed.
    pub reward: f64,
    /// The state reached.
    pub next_state: StateRef<'a>,
    /// The episode terminated: no bootstrap from `next_state`.
    pub done: bool,
    /// The episode was cut short (e.g. a time limit): it ends, but the
    /// target still bootstraps from `next_state`.
    pub truncated: bool,
    /// The action taken in `next_state` (required by SARSA unless `done`).
    pub next_action: Option<usize>,
    /// Actions allowed in `next_state` (restricts the max or expectation).
    pub next_allowed_actions: Option<&'a [usize]>,
}

impl<'a> Experience<'a> {
    /// A non-terminal transition with no next action or mask.
    pub fn new(
        state: impl Into<StateRef<'a>>,
        action: usize,
        reward: f64,
        next_state: impl Into<StateRef<'a>>,
    ) -> Self {
        Experience {
            state: state.into(),
            action,
            reward,
            next_state: next_state.into(),
            done: false,
            truncated: false,
            next_action: None,
            next_allowed_actions: None,
        }
    }

    /// Sets `done`.
    pub fn done(mut self, done: bool) -> Self {
        self.done = done;
        self
    }

    /// Sets `truncated`.
    pub fn truncated(mut self, truncated: bool) -> Self {
        self.truncated = truncated;
        self
    }

    /// Sets `next_action`.
    pub fn next_action(mut self, a: usize) -> Self {
        self.next_action = Some(a);
        self
    }

    /// Sets `next_allowed_actions`.
    pub fn next_allowed(mut self, allowed: &'a [usize]) -> Self {
        self.next_allowed_actions = Some(allowed);
        self
    }
}

/// What `update` did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateOutcome {
    /// The new Q(s, a) (mean of both tables for double Q-learning).
    pub q_value: f64,
    /// The TD error: target − old Q (of the table that was updated).
    pub td_error: f64,
    /// Epsilon after the update (decayed if the episode ended).
    pub epsilon: f64,
    /// The finished episode's return, when this update ended one.
    pub episode_return: Option<f64>,
}

/// A complete model: a [`Learner`] and its in-memory [`QTable`]. `Clone`,
/// `Send` and `Sync`; share it behind a lock to serve several threads.
#[derive(Clone, Debug)]
pub struct Model {
    learner: Learner,
    table: QTable,
    /// The row the fast path used last (see [`QTable::hinted`]): in an
    /// agent's loop, `update`'s state is the state just predicted and the
    /// next `predict`'s is `update`'s next state, so one key comparison
    /// replaces a hash and a probe. Any value is safe (it is checked).
    hint: usize,
}

impl Model {
    /// A new, empty model. Errors name the invalid field.
    pub fn new(config: ModelConfig) -> Result<Self> {
        let learner = Learner::new(config)?;
        let table = QTable::new(learner.width());
        Ok(Model {
            learner,
            table,
            hint: usize::MAX,
        })
    }

    /// Assembles a model from a learner and a table of the right width. The
    /// table is the truth for the number of stored states: the learner's
    /// `states` counter is set to its length.
    pub fn from_parts(mut learner: Learner, table: QTable) -> Result<Self> {
        if table.width() != learner.width() {
            return Err(Error::Decode(format!(
                "Q-table rows have {} values, the configuration needs {}",
                table.width(),
                learner.width()
            )));
        }
        learner.set_state_count(table.len() as u64);
        Ok(Model {
            learner,
            table,
            hint: usize::MAX,
        })
    }

    /// Runs `f` on the learner and the table borrowed apart (what a store's
    /// decision-log step needs), then sets the learner's `states` counter to
    /// the table's length, as [`Model::from_parts`] does.
    #[cfg(feature = "tenancy")]
    pub(crate) fn with_parts<R>(&mut self, f: impl FnOnce(&mut Learner, &mut QTable) -> R) -> R {
        let r = f(&mut self.learner, &mut self.table);
        self.learner.set_state_count(self.table.len() as u64);
        r
    }

    /// Splits into learner and table (what storage backends keep apart).
    pub fn into_parts(self) -> (Learner, QTable) {
        (self.learner, self.table)
    }

    /// The learner (configuration, epsilon, counters).
    pub fn learner(&self) -> &Learner {
        &self.learner
    }

    /// The Q-table.
    pub fn table(&self) -> &QTable {
        &self.table
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        self.learner.config()
    }

    /// Current exploration rate.
    pub fn epsilon(&self) -> f64 {
        self.learner.epsilon()
    }

    /// Sets the current exploration rate, in [0, 1].
    pub fn set_epsilon(&mut self, epsilon: f64) -> Result<()> {
        self.learner.set_epsilon(epsilon)
    }

    /// Number of distinct states stored.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no state is stored yet.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// User-facing statistics.
    pub fn stats(&self) -> Stats {
        self.learner.stats()
    }

    /// Chooses an action (see [`Learner::predict`]).
    #[inline(always)]
    pub fn predict<'a>(
        &mut self,
        state: impl Into<StateRef<'a>>,
        explore: bool,
        allowed: Option<&[usize]>,
    ) -> Result<Decision> {
        let state = state.into();
        if self.learner.fast.predict && allowed.is_none() {
            let fast = self
                .learner
                .predict_fast(&self.table, &mut self.hint, state, explore);
            if let Some(decision) = fast {
                return Ok(decision);
            }
        }
        self.predict_general(state, explore, allowed)
    }

    /// [`Model::predict`] for what the fast path does not serve.
    #[inline(never)]
    fn predict_general(
        &mut self,
        state: StateRef<'_>,
        explore: bool,
        allowed: Option<&[usize]>,
    ) -> Result<Decision> {
        self.learner.predict(&self.table, state, explore, allowed)
    }

    /// Chooses an action and returns the state's Q-values and the chosen
    /// action's probability too (always the general path).
    pub fn predict_full<'a>(
        &mut self,
        state: impl Into<StateRef<'a>>,
        explore: bool,
        allowed: Option<&[usize]>,
    ) -> Result<Prediction> {
        self.learner
            .predict_full(&self.table, state.into(), explore, allowed)
    }

    /// The probability of each action under the policy `predict` follows
    /// (see [`Learner::action_probabilities`]).
    pub fn action_probabilities<'a>(
        &self,
        state: impl Into<StateRef<'a>>,
        allowed: Option<&[usize]>,
        explore: bool,
    ) -> Result<Vec<f64>> {
        self.learner
            .action_probabilities(&self.table, state.into(), allowed, explore)
    }

    /// The Q-values of a state (`initial_q` everywhere if unseen).
    pub fn q_values<'a>(&self, state: impl Into<StateRef<'a>>) -> Result<Vec<f64>> {
        self.learner.q_values(&self.table, state.into())
    }

    /// Learns from one experience (see [`Learner::update`]).
    #[inline(always)]
    pub fn update(&mut self, exp: &Experience<'_>) -> Result<UpdateOutcome> {
        if self.learner.fast.update {
            let fast = self
                .learner
                .update_fast(&mut self.table, &mut self.hint, exp);
            if let Some(outcome) = fast {
                return Ok(outcome);
            }
        }
        self.update_general(exp)
    }

    /// [`Model::update`] for what the fast path does not serve.
    #[inline(never)]
    fn update_general(&mut self, exp: &Experience<'_>) -> Result<UpdateOutcome> {
        self.learner.update(&mut self.table, exp)
    }

    /// Learns from many experiences, validating all of them first: on error
    /// nothing is applied.
    pub fn update_batch(&mut self, exps: &[Experience<'_>]) -> Result<Vec<UpdateOutcome>> {
        self.learner.validate_batch(exps.iter().copied())?;
        exps.iter().map(|e| self.update(e)).collect()
    }

    /// Checks a prediction's input without serving it.
    pub fn validate_predict<'a>(
        &self,
        state: impl Into<StateRef<'a>>,
        allowed: Option<&[usize]>,
    ) -> Result<()> {
        self.learner.validate_predict(state.into(), allowed)
    }

    /// Validates one experience without applying it.
    pub fn validate(&self, exp: &Experience<'_>) -> Result<()> {
        self.learner.validate(exp)
    }

    /// Replaces the configuration (see [`Learner::reconfigure`]).
    pub fn reconfigure(&mut self, config: ModelConfig) -> Result<()> {
        if let Some((n, tables)) = self.learner.reconfigure(config)? {
            self.table.reshape(n, tables);
        }
        Ok(())
    }

    /// A page of the Q-table in insertion order: `(state, q_values)`.
    pub fn rows(&self, offset: usize, limit: usize) -> Vec<(StateKey, Vec<f64>)> {
        (offset..self.table.len().min(offset.saturating_add(limit)))
            .filter_map(|i| self.table.row_at(i))
            .map(|(k, r)| (StateKey::from_canonical(k), self.learner.visible_q(Some(r))))
            .collect()
    }
}

/// Prefixes an error's field with the index of the batch item it came from.
pub fn at_index(i: usize, err: Error) -> Error {
    match err {
        Error::InvalidField { field, message } => Error::InvalidField {
            field: format!("experiences[{i}].{field}"),
            message,
        },
        Error::InvalidState { field, message } => Error::InvalidState {
            field: format!("experiences[{i}].{field}"),
            message: format!("experiences[{i}]: {message}"),
        },
        Error::InvalidAction { field, message } => Error::InvalidAction {
            field: format!("experiences[{i}].{field}"),
            message: format!("experiences[{i}]: {message}"),
        },
        other => other,
    }
}
