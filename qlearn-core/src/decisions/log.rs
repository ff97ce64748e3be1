//! [`DecisionLog`]: decisions, their rewards and episodes as plain data, and
//! the join that turns them into transitions exactly once.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::MAX_REWARD;
use crate::state::{State, StateRef};

use super::partial::{generated_number, Tracking};
use super::{
    Aggregation, DecisionStats, DecisionStatus, DecisionsConfig, EpisodeEnd, LoggedDecision,
    Outcome, RewardReceipt, RewardStatus, Transition,
};

/// Longest decision, episode or reward id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// One logged decision and what is known of its rewards (what a store
/// keeps per decision, and what the export lists).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Its id.
    pub decision_id: String,
    /// Its episode, if any.
    pub episode_id: Option<String>,
    /// Its step in the episode (0 without one).
    pub step: u64,
    /// When it was logged (Unix milliseconds).
    pub time_ms: i64,
    /// When its reward window closes (Unix milliseconds; half-open).
    pub closes_at_ms: i64,
    /// The state, as the client sent it.
    pub state: State,
    /// The allowed actions, if restricted.
    pub allowed_actions: Option<Vec<usize>>,
    /// The chosen action.
    pub action: usize,
    /// The probability with which it was chosen.
    pub probability: f64,
    /// Where it stands.
    pub status: DecisionStatus,
    /// The rewards folded by the aggregation (`None` before the first;
    /// the sum for `mean`): see [`DecisionRecord::reward`].
    pub acc: Option<f64>,
    /// Rewards counted.
    pub rewards: u32,
    /// The values of the rewards that came with a `reward_id` (counted or
    /// late), for idempotent retries.
    pub reward_ids: BTreeMap<String, f64>,
    /// The reward the transition learns from, once closed (`None`:
    /// expired, or still open).
    pub learned_reward: Option<f64>,
    /// When its transition was applied: 1 for the model's first applied
    /// transition, then 2, 3... (`None`: not applied). Replaying the
    /// applied transitions in this order reproduces the Q-table.
    #[serde(default)]
    pub applied_seq: Option<u64>,
    /// The action the customer's existing rule would have taken, for the
    /// evaluation's `baseline` policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_action: Option<usize>,
}

impl DecisionRecord {
    /// The aggregated reward so far (`None`: no reward counted).
    pub fn reward(&self, aggregation: Aggregation) -> Option<f64> {
        aggregation.value(self.acc, self.rewards)
    }

    /// Whether nothing more can happen to it (applied or expired).
    pub fn is_finished(&self) -> bool {
        matches!(
            self.status,
            DecisionStatus::Applied | DecisionStatus::Expired
        )
    }

    fn logged(&self, replayed: bool) -> LoggedDecision {
        LoggedDecision {
            decision_id: self.decision_id.clone(),
            episode_id: self.episode_id.clone(),
            step: self.step,
            action: self.action,
            probability: self.probability,
            closes_at_ms: self.closes_at_ms,
            replayed,
        }
    }

    /// The terminal transition of this decision with reward `reward`.
    fn terminal(&self, reward: f64) -> Transition {
        Transition {
            decision_id: self.decision_id.clone(),
            state: self.state.clone(),
            action: self.action,
            reward,
            next_state: None,
            next_action: None,
            next_allowed_actions: None,
            done: true,
            truncated: false,
        }
    }
}

/// One episode: its decisions by step, and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    /// Decision ids, by step.
    pub steps: Vec<String>,
    /// How it ended (`None`: still going).
    pub end: Option<EpisodeEnd>,
    /// The sum of the rewards learned from its decisions so far (kept per
    /// episode, so concurrent episodes do not mix their returns).
    #[serde(default)]
    pub learned_return: f64,
}

/// A [`DecisionLog`] taken apart (what a store keeps in its own rows).
#[derive(Clone, Debug, PartialEq)]
pub struct LogParts {
    /// The configuration.
    pub config: DecisionsConfig,
    /// Decision records, in any order.
    pub decisions: Vec<DecisionRecord>,
    /// Episodes by id.
    pub episodes: Vec<(String, EpisodeRecord)>,
    /// The last number used for a generated decision id.
    pub last_id: u64,
    /// The counts.
    pub stats: DecisionStats,
}

/// A decision to log: what the model chose and with which probability.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDecision<'a> {
    /// The client's id (an idempotency key), or `None` for a fresh one.
    pub decision_id: Option<&'a str>,
    /// The episode (created by its first decision), if any.
    pub episode_id: Option<&'a str>,
    /// The state (already validated by the model's predict).
    pub state: State,
    /// The allowed actions, if restricted.
    pub allowed_actions: Option<Vec<usize>>,
    /// The chosen action.
    pub action: usize,
    /// Its probability under the behaviour policy.
    pub probability: f64,
    /// The baseline action to record with it (see [`super::check_baseline`]).
    pub baseline_action: Option<usize>,
}

/// The decisions of one model, their rewards and episodes, in memory. Plain
/// data: serialize it (JSON) next to the model to keep pending decisions
/// across a save and load.
///
/// Every method validates its whole input before it changes anything; the
/// `record_*` methods and [`DecisionLog::expire`] return the transitions
/// that became ready, each exactly once, in the order to apply them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionLog {
    pub(super) config: DecisionsConfig,
    /// By id. Ordered maps, not hash maps: a hash map doubles its table
    /// at once when full, rehashing every record (139 ms under the model's
    /// lock at 114,688 pending decisions on a loaded server), while a
    /// B-tree grows a node at a time.
    pub(super) decisions: BTreeMap<String, DecisionRecord>,
    pub(super) episodes: BTreeMap<String, EpisodeRecord>,
    /// `(closes_at_ms, decision_id)` of the open decisions, earliest first.
    pub(super) open: BTreeSet<(i64, String)>,
    /// The last number used for a generated decision id.
    pub(super) last_id: u64,
    pub(super) stats: DecisionStats,
    /// What changed since a store last asked (off unless a store turns it
    /// on: see `partial.rs`); not part of the log's value.
    #[serde(skip)]
    pub(super) changes: Tracking,
}

/// Checks a client id: 1 to [`MAX_ID_BYTES`] bytes, no control characters.
pub fn check_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(Error::field(
            field,
            format!("must be 1 to {MAX_ID_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

impl DecisionLog {
    /// An empty log with a validated configuration.
    pub fn new(config: DecisionsConfig) -> Result<Self> {
        config.validate()?;
        Ok(DecisionLog {
            config,
            decisions: BTreeMap::new(),
            episodes: BTreeMap::new(),
            open: BTreeSet::new(),
            last_id: 0,
            stats: DecisionStats::default(),
            changes: Tracking::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DecisionsConfig {
        &self.config
    }

    /// Replaces the configuration. Open windows keep their deadline; the
    /// aggregation and default reward apply from now on.
    pub fn set_config(&mut self, config: DecisionsConfig) -> Result<()> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// A log over saved or partly loaded records: a store loads the rows a
    /// call touches (the decision, its episode with all its step ids, and
    /// the steps next to it), runs the call, and writes them back. The
    /// counts and `last_id` are taken as given (the counts then move from
    /// there, `pending` never below 0). Errors (`Decode`) when a
    /// record's episode or step does not match the episodes given.
    pub fn from_parts(parts: LogParts) -> Result<Self> {
        let LogParts {
            config,
            decisions,
            episodes,
            last_id,
            stats,
        } = parts;
        config.validate()?;
        let mut log = DecisionLog {
            config,
            decisions: BTreeMap::new(),
            episodes: episodes.into_iter().collect(),
            open: BTreeSet::new(),
            last_id,
            stats,
            changes: Tracking::default(),
        };
        for rec in decisions {
            if let Some(ep) = &rec.episode_id {
                let at = log
                    .episodes
                    .get(ep)
                    .and_then(|e| e.steps.get(rec.step as usize));
                if at != Some(&rec.decision_id) {
                    return Err(Error::Decode(format!(
                        "decision {:?} is not step {} of episode {ep:?}",
                        rec.decision_id, rec.step
                    )));
                }
            }
            if rec.status == DecisionStatus::Open {
                log.open.insert((rec.closes_at_ms, rec.decision_id.clone()));
            }
            log.decisions.insert(rec.decision_id.clone(), rec);
        }
        Ok(log)
    }

    /// The log as the parts [`DecisionLog::from_parts`] takes.
    pub fn into_parts(self) -> LogParts {
        LogParts {
            config: self.config,
            decisions: self.decisions.into_values().collect(),
            episodes: self.episodes.into_iter().collect(),
            last_id: self.last_id,
            stats: self.stats,
        }
    }

    /// The counts.
    pub fn stats(&self) -> DecisionStats {
        self.stats
    }

    /// The earliest deadline of an open decision (Unix milliseconds), if
    /// any: when [`DecisionLog::expire`] next has something to do (a store
    /// keeps it beside the log to find the logs to settle).
    pub fn next_deadline(&self) -> Option<i64> {
        self.open.first().map(|(at, _)| *at)
    }

    /// A decision by id.
    pub fn get(&self, decision_id: &str) -> Option<&DecisionRecord> {
        self.decisions.get(decision_id)
    }

    /// An episode by id.
    pub fn episode(&self, episode_id: &str) -> Option<&EpisodeRecord> {
        self.episodes.get(episode_id)
    }

    /// Every episode kept, by id.
    pub fn episodes(&self) -> impl Iterator<Item = (&str, &EpisodeRecord)> {
        self.episodes.iter().map(|(id, e)| (id.as_str(), e))
    }

    /// Every decision kept, in no particular order.
    pub fn decisions(&self) -> impl Iterator<Item = &DecisionRecord> {
        self.decisions.values()
    }

    /// What must happen before a decision is predicted: ids checked, a
    /// retry of a logged decision answered from the log (`Some`: do not
    /// predict again), a reused id with another state, episode or baseline
    /// action (exactly, as the state: none differs from one) refused
    /// (`Conflict`), and a decision in an ended episode refused.
    pub fn prepare(
        &self,
        decision_id: Option<&str>,
        state: StateRef<'_>,
        episode_id: Option<&str>,
        baseline_action: Option<usize>,
    ) -> Result<Option<LoggedDecision>> {
        if let Some(id) = decision_id {
            check_id("decision_id", id)?;
            if let Some(rec) = self.decisions.get(id) {
                if rec.state.as_ref() == state
                    && rec.episode_id.as_deref() == episode_id
                    && rec.baseline_action == baseline_action
                {
                    return Ok(Some(rec.logged(true)));
                }
                return Err(Error::Conflict(format!(
                    "decision_id {id:?} was logged for another state or episode \
                     (or baseline_action)"
                )));
            }
        }
        if let Some(ep) = episode_id {
            check_id("episode_id", ep)?;
            if self.episodes.get(ep).is_some_and(|e| e.end.is_some()) {
                return Err(Error::Conflict(format!("episode {ep:?} has ended")));
            }
        }
        Ok(None)
    }

    /// Logs a decision (or answers a retry, see [`DecisionLog::prepare`]).
    /// Returns it and the transition of the episode's previous step if that
    /// one was only waiting for this state.
    pub fn record_decision(
        &mut self,
        new: NewDecision<'_>,
        now_ms: i64,
    ) -> Result<(LoggedDecision, Vec<Transition>)> {
        let (id, state, ep) = (new.decision_id, new.state.as_ref(), new.episode_id);
        if let Some(d) = self.prepare(id, state, ep, new.baseline_action)? {
            return Ok((d, Vec::new()));
        }
        let id = match new.decision_id {
            Some(id) => {
                // Generated ids then never meet a client's id of their form.
                if let Some(n) = generated_number(id) {
                    self.last_id = self.last_id.max(n);
                }
                id.to_owned()
            }
            None => self.fresh_id()?,
        };
        self.changes.decision(&id);
        if let Some(ep) = new.episode_id {
            self.changes.episode(ep);
        }
        let step = match new.episode_id {
            Some(ep) => {
                let e = self.episodes.entry(ep.to_owned()).or_default();
                e.steps.push(id.clone());
                e.steps.len() as u64 - 1
            }
            None => 0,
        };
        let closes_at_ms = now_ms.saturating_add(self.config.wait_ms());
        let rec = DecisionRecord {
            decision_id: id.clone(),
            episode_id: new.episode_id.map(str::to_owned),
            step,
            time_ms: now_ms,
            closes_at_ms,
            state: new.state,
            allowed_actions: new.allowed_actions,
            action: new.action,
            probability: new.probability,
            status: DecisionStatus::Open,
            acc: None,
            rewards: 0,
            reward_ids: BTreeMap::new(),
            learned_reward: None,
            applied_seq: None,
            baseline_action: new.baseline_action,
        };
        let logged = rec.logged(false);
        self.decisions.insert(id.clone(), rec);
        self.open.insert((closes_at_ms, id));
        self.stats.decisions += 1;
        self.stats.pending += 1;
        let mut out = Vec::new();
        if let (Some(ep), Some(prev)) = (new.episode_id, step.checked_sub(1)) {
            let prev_id = self
                .episodes
                .get(ep)
                .and_then(|e| e.steps.get(prev as usize));
            if let Some(prev_id) = prev_id.cloned() {
                self.emit(&prev_id, &mut out);
            }
        }
        Ok((logged, out))
    }

    /// Records a reward for a decision at `now_ms`. On time, it is folded
    /// into the decision's reward; `is_final` (or the `first` aggregation)
    /// closes the window at once. After the window (which this call closes
    /// first if its deadline has passed) it is recorded as late and not
    /// learned. A repeated `reward_id` (scoped to the decision) with the
    /// same value has no effect; with another value it is a `Conflict`. An
    /// unknown decision is `NotFound`.
    pub fn record_reward(
        &mut self,
        decision_id: &str,
        value: f64,
        reward_id: Option<&str>,
        is_final: bool,
        now_ms: i64,
    ) -> Result<RewardReceipt> {
        if !(value.is_finite() && value.abs() <= MAX_REWARD) {
            return Err(Error::field(
                "value",
                format!("must be a finite number of magnitude at most {MAX_REWARD:e}"),
            ));
        }
        if let Some(rid) = reward_id {
            check_id("reward_id", rid)?;
        }
        let agg = self.config.aggregation;
        let rec = self
            .decisions
            .get(decision_id)
            .ok_or(Error::NotFound("decision"))?;
        if let Some(&seen) = reward_id.and_then(|rid| rec.reward_ids.get(rid)) {
            if seen == value {
                return Ok(self.receipt(decision_id, RewardStatus::Duplicate, Vec::new()));
            }
            return Err(Error::Conflict(format!(
                "reward_id {:?} was recorded with value {seen}",
                reward_id.unwrap_or_default()
            )));
        }
        // The new aggregate is checked before anything changes.
        let on_time = rec.status == DecisionStatus::Open && now_ms < rec.closes_at_ms;
        let acc = agg.fold(rec.acc, value);
        let count = rec.rewards.saturating_add(1);
        let shown = agg.value(Some(acc), count).unwrap_or(acc);
        if on_time && !(shown.is_finite() && shown.abs() <= MAX_REWARD) {
            return Err(Error::field(
                "value",
                format!("the aggregated reward would exceed {MAX_REWARD:e} in magnitude"),
            ));
        }
        let mut out = Vec::new();
        if rec.status == DecisionStatus::Open && !on_time {
            self.close_at_deadline(decision_id, &mut out);
        }
        let Some(rec) = self.decisions.get_mut(decision_id) else {
            return Err(Error::Internal("decision vanished while rewarded".into()));
        };
        if let Some(rid) = reward_id {
            rec.reward_ids.insert(rid.to_owned(), value);
        }
        self.changes.decision(decision_id);
        if !on_time {
            self.stats.late += 1;
            return Ok(self.receipt(decision_id, RewardStatus::Late, out));
        }
        rec.acc = Some(acc);
        rec.rewards = count;
        self.stats.rewards += 1;
        if is_final || agg == Aggregation::First {
            self.close(decision_id, Some(shown), &mut out);
        }
        let status = match self.decisions.get(decision_id).map(|r| r.status) {
            Some(DecisionStatus::Open) => RewardStatus::Open,
            Some(DecisionStatus::Closed) => RewardStatus::Closed,
            _ => RewardStatus::Applied,
        };
        Ok(self.receipt(decision_id, status, out))
    }

    /// Ends an episode. A truncated end needs `next_state` (checking it
    /// against the model is the caller's: see
    /// [`check_end`](super::apply::check_end)). Ending it again the same way
    /// has no effect; another way is a `Conflict`. An episode without a
    /// logged decision is `NotFound`. Returns the last step's transition if
    /// it was only waiting for the end.
    pub fn record_end(&mut self, episode_id: &str, end: EpisodeEnd) -> Result<Vec<Transition>> {
        check_id("episode_id", episode_id)?;
        if end.outcome == Outcome::Truncated && end.next_state.is_none() {
            return Err(Error::field(
                "next_state",
                "a truncated episode bootstraps from next_state: it is required",
            ));
        }
        let e = self
            .episodes
            .get_mut(episode_id)
            .ok_or(Error::NotFound("episode"))?;
        if let Some(prev) = &e.end {
            if *prev == end {
                return Ok(Vec::new());
            }
            return Err(Error::Conflict(format!(
                "episode {episode_id:?} has already ended differently"
            )));
        }
        e.end = Some(end);
        let last = e.steps.last().cloned();
        self.changes.episode(episode_id);
        let mut out = Vec::new();
        if let Some(last) = last {
            self.emit(&last, &mut out);
        }
        Ok(out)
    }

    /// Closes every decision whose window has closed by `now_ms` (with its
    /// aggregated reward, else the default reward, else nothing learned)
    /// and returns the transitions that became ready.
    pub fn expire(&mut self, now_ms: i64) -> Vec<Transition> {
        self.expire_through(now_ms, None)
    }

    /// [`DecisionLog::expire`] up to a decision: closes, in their order
    /// (deadline, then id), the decisions whose deadline is before
    /// `closes_ms`, and those whose deadline is `closes_ms` and whose id is
    /// at most `id` (`None`: all of them). A store settles a long backlog
    /// this way a bounded part at a time, in the order one call would.
    pub fn expire_through(&mut self, closes_ms: i64, id: Option<&str>) -> Vec<Transition> {
        let mut out = Vec::new();
        while let Some((closes_at, next)) = self.open.first().cloned() {
            if super::past(closes_at, &next, closes_ms, id) {
                break;
            }
            self.close_at_deadline(&next, &mut out);
        }
        out
    }

    /// Forgets finished decisions logged more than `retention_days` before
    /// `now_ms` (a decision the episode's previous, unfinished step still
    /// needs as its next state is kept), and ended episodes with no decision
    /// left. Returns how many decisions were removed; their ids are free
    /// again and rewards for them are `NotFound`.
    pub fn prune(&mut self, now_ms: i64) -> usize {
        let horizon = now_ms.saturating_sub(self.config.retention_ms());
        let unfinished = |log: &Self, ep: &str, step: u64| -> bool {
            let prev = step
                .checked_sub(1)
                .and_then(|k| log.episodes.get(ep)?.steps.get(k as usize))
                .and_then(|id| log.decisions.get(id));
            prev.is_some_and(|p| !p.is_finished())
        };
        let old: Vec<String> = self
            .decisions
            .values()
            .filter(|r| r.is_finished() && r.time_ms <= horizon)
            .filter(|r| match &r.episode_id {
                Some(ep) => !unfinished(self, ep, r.step),
                None => true,
            })
            .map(|r| r.decision_id.clone())
            .collect();
        for id in &old {
            self.decisions.remove(id);
        }
        let decisions = &self.decisions;
        self.episodes
            .retain(|_, e| e.end.is_none() || e.steps.iter().any(|id| decisions.contains_key(id)));
        old.len()
    }

    /// The receipt of a reward for `decision_id` with `status`.
    fn receipt(
        &self,
        decision_id: &str,
        status: RewardStatus,
        transitions: Vec<Transition>,
    ) -> RewardReceipt {
        let rec = self.decisions.get(decision_id);
        RewardReceipt {
            status,
            reward: rec.and_then(|r| r.reward(self.config.aggregation)),
            rewards: rec.map_or(0, |r| r.rewards),
            closes_at_ms: rec.map_or(0, |r| r.closes_at_ms),
            transitions,
        }
    }

    /// Closes an open decision at its deadline: with the aggregated reward,
    /// else the default reward, else nothing learned.
    fn close_at_deadline(&mut self, id: &str, out: &mut Vec<Transition>) {
        let Some(rec) = self.decisions.get(id) else {
            return;
        };
        let reward = match rec.reward(self.config.aggregation) {
            Some(r) => Some(r),
            None => {
                self.stats.defaulted += 1;
                self.config.default_reward
            }
        };
        self.close(id, reward, out);
    }

    /// Closes an open decision with `reward` (`None`: it expires) and emits
    /// its transition if it is ready.
    fn close(&mut self, id: &str, reward: Option<f64>, out: &mut Vec<Transition>) {
        let Some(rec) = self.decisions.get_mut(id) else {
            return;
        };
        if rec.status != DecisionStatus::Open {
            return;
        }
        self.open.remove(&(rec.closes_at_ms, id.to_owned()));
        rec.learned_reward = reward;
        self.changes.decision(id);
        if reward.is_some() {
            rec.status = DecisionStatus::Closed;
            self.emit(id, out);
        } else {
            rec.status = DecisionStatus::Expired;
            self.stats.pending = self.stats.pending.saturating_sub(1);
        }
    }

    /// Emits a closed decision's transition once it is ready: at once
    /// without an episode; in one, when the next step is logged or the
    /// episode has ended. Marks it applied, so it is emitted once.
    fn emit(&mut self, id: &str, out: &mut Vec<Transition>) {
        let Some(t) = self.ready(id) else {
            return;
        };
        self.stats.pending = self.stats.pending.saturating_sub(1);
        self.stats.applied += 1;
        if let Some(rec) = self.decisions.get_mut(id) {
            rec.status = DecisionStatus::Applied;
            rec.applied_seq = Some(self.stats.applied);
            self.changes.decision(id);
            if let Some(ep) = rec.episode_id.as_ref() {
                if let Some(e) = self.episodes.get_mut(ep) {
                    e.learned_return += t.reward;
                    self.changes.episode(ep);
                }
            }
        }
        out.push(t);
    }

    /// The transition of decision `id` if it is closed with a reward and
    /// its successor (next step or episode end) is known.
    fn ready(&self, id: &str) -> Option<Transition> {
        let rec = self.decisions.get(id)?;
        if rec.status != DecisionStatus::Closed {
            return None;
        }
        let reward = rec.learned_reward?;
        let Some(ep) = &rec.episode_id else {
            return Some(rec.terminal(reward));
        };
        let e = self.episodes.get(ep)?;
        if let Some(next_id) = e.steps.get(rec.step as usize + 1) {
            let next = self.decisions.get(next_id)?;
            return Some(Transition {
                next_state: Some(next.state.clone()),
                next_action: Some(next.action),
                next_allowed_actions: next.allowed_actions.clone(),
                done: false,
                ..rec.terminal(reward)
            });
        }
        let end = e.end.as_ref()?;
        Some(match end.outcome {
            Outcome::Terminated => rec.terminal(reward),
            Outcome::Truncated => Transition {
                next_state: end.next_state.clone(),
                next_allowed_actions: end.next_allowed_actions.clone(),
                done: false,
                truncated: true,
                ..rec.terminal(reward)
            },
        })
    }
}
