//! The decision log on an in-memory [`Model`]: predict through the model,
//! log, and apply the transitions that became ready with
//! [`Model::update`] (the engine rule `update` uses).

use crate::config::Algorithm;
use crate::error::{Error, Result};
use crate::model::{Learner, Model};
use crate::state::StateRef;

use super::{
    DecisionLog, EpisodeEnd, LoggedDecision, NewDecision, Outcome, RewardReceipt, Transition,
};

/// A request for a logged decision.
#[derive(Clone, Copy, Debug)]
pub struct Decide<'a> {
    /// The state to decide in.
    pub state: StateRef<'a>,
    /// The allowed actions (`None`: all).
    pub allowed_actions: Option<&'a [usize]>,
    /// Whether to explore (as `predict`'s flag).
    pub explore: bool,
    /// The client's id, an idempotency key (`None`: the log makes one up).
    pub decision_id: Option<&'a str>,
    /// The episode the decision belongs to (`None`: a one-step episode).
    pub episode_id: Option<&'a str>,
    /// The action the customer's existing rule would have taken, recorded
    /// with the decision for offline evaluation's `baseline` policy
    /// (`None`: none; must be below the model's action count).
    pub baseline_action: Option<usize>,
}

impl<'a> Decide<'a> {
    /// An exploring decision in `state` with every action allowed, no id
    /// and no episode.
    pub fn new(state: impl Into<StateRef<'a>>) -> Self {
        Decide {
            state: state.into(),
            allowed_actions: None,
            explore: true,
            decision_id: None,
            episode_id: None,
            baseline_action: None,
        }
    }

    /// Sets the allowed actions.
    pub fn allowed(mut self, allowed: &'a [usize]) -> Self {
        self.allowed_actions = Some(allowed);
        self
    }

    /// Sets the explore flag.
    pub fn explore(mut self, explore: bool) -> Self {
        self.explore = explore;
        self
    }

    /// Sets the client's decision id.
    pub fn id(mut self, decision_id: &'a str) -> Self {
        self.decision_id = Some(decision_id);
        self
    }

    /// Sets the episode.
    pub fn episode(mut self, episode_id: &'a str) -> Self {
        self.episode_id = Some(episode_id);
        self
    }

    /// Sets the baseline action (what the existing rule would have done).
    pub fn baseline(mut self, action: usize) -> Self {
        self.baseline_action = Some(action);
        self
    }
}

/// Checks a decision's baseline action against a model: an action index
/// below its action count ([`Error::InvalidField`] naming
/// `baseline_action`). It need not be among the allowed actions (the
/// evaluation then counts it as a decision the baseline could not take).
pub fn check_baseline(learner: &Learner, baseline_action: Option<usize>) -> Result<()> {
    let n = learner.config().n_actions;
    match baseline_action {
        Some(b) if b >= n => Err(Error::field(
            "baseline_action",
            format!("baseline_action {b} is not an action of this model (0..{n})"),
        )),
        _ => Ok(()),
    }
}

/// Checks an episode end against a model before it is recorded: the next
/// state and its allowed actions must be valid for the model, and SARSA
/// cannot bootstrap a truncated episode (it needs the action taken in the
/// next state, which no decision logged).
pub fn check_end(learner: &Learner, end: &EpisodeEnd) -> Result<()> {
    if end.outcome == Outcome::Truncated && learner.config().algorithm == Algorithm::Sarsa {
        return Err(Error::field(
            "outcome",
            "sarsa bootstraps from the next decision's action: log a decision for next_state \
             and end the episode after it, or end it as terminated",
        ));
    }
    if let Some(next) = &end.next_state {
        learner.validate_predict(next.as_ref(), end.next_allowed_actions.as_deref())?;
    }
    Ok(())
}

/// Applies transitions in order with [`Model::update`]. The log validated
/// every piece (states by the model's predict, rewards' range, actions), so
/// an update only fails with imported Q-values near `f64::MAX`; that error
/// is returned and the transitions after it are not applied.
fn apply(model: &mut Model, transitions: &[Transition]) -> Result<()> {
    for t in transitions {
        model.update(&t.experience())?;
    }
    Ok(())
}

impl DecisionLog {
    /// Chooses an action through `model` and logs the decision with its
    /// probability; learns the episode's previous step if it was waiting
    /// for this state. A retry of a logged `decision_id` returns the stored
    /// decision without predicting again.
    pub fn decide(
        &mut self,
        model: &mut Model,
        request: &Decide<'_>,
        now_ms: i64,
    ) -> Result<LoggedDecision> {
        let Decide {
            state,
            allowed_actions,
            explore,
            decision_id,
            episode_id,
            baseline_action,
        } = *request;
        check_baseline(model.learner(), baseline_action)?;
        if let Some(replayed) = self.prepare(decision_id, state, episode_id, baseline_action)? {
            return Ok(replayed);
        }
        let p = model.predict_full(state, explore, allowed_actions)?;
        let new = NewDecision {
            decision_id,
            episode_id,
            state: state.to_state(),
            allowed_actions: allowed_actions.map(<[usize]>::to_vec),
            action: p.action,
            probability: p.probability,
            baseline_action,
        };
        let (logged, ready) = self.record_decision(new, now_ms)?;
        apply(model, &ready)?;
        Ok(logged)
    }

    /// Records a reward (see [`DecisionLog::record_reward`]) and learns
    /// what became ready.
    pub fn reward(
        &mut self,
        model: &mut Model,
        decision_id: &str,
        value: f64,
        reward_id: Option<&str>,
        is_final: bool,
        now_ms: i64,
    ) -> Result<RewardReceipt> {
        let receipt = self.record_reward(decision_id, value, reward_id, is_final, now_ms)?;
        apply(model, &receipt.transitions)?;
        Ok(receipt)
    }

    /// Ends an episode (see [`DecisionLog::record_end`] and [`check_end`])
    /// and learns its last step if it was waiting for the end. Returns how
    /// many transitions were learned.
    pub fn end_episode(
        &mut self,
        model: &mut Model,
        episode_id: &str,
        end: EpisodeEnd,
    ) -> Result<usize> {
        check_end(model.learner(), &end)?;
        let ready = self.record_end(episode_id, end)?;
        apply(model, &ready)?;
        Ok(ready.len())
    }

    /// Closes the windows that have closed by `now_ms` (see
    /// [`DecisionLog::expire`]), learns what became ready, then forgets the
    /// finished decisions older than the retention (see
    /// [`DecisionLog::prune`]), so an in-process log that is settled now
    /// and then stays as small as the service's. Returns how many
    /// transitions were learned.
    pub fn settle(&mut self, model: &mut Model, now_ms: i64) -> Result<usize> {
        let ready = self.expire(now_ms);
        apply(model, &ready)?;
        self.prune(now_ms);
        Ok(ready.len())
    }
}
