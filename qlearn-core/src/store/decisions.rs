//! Decisions and delayed rewards in the stores (issue 14): what the
//! [`Store`](super::Store) decision methods take and return, and the steps
//! every backend runs on a model's [`DecisionLog`] under the model's lock or
//! transaction, written once so no backend re-implements the join, the
//! metering of decision calls or the learning rule.
//!
//! A backend's decision call is: lock the model, have its log hold what
//! the call reads, `plan` the call (the pure join, debiting the quota
//! exactly once, before anything changes), `apply` the transitions that
//! became ready with [`Learner::update`] over its own [`QRows`], and write
//! the Q-rows, the learner and what changed in the log back in one atomic
//! step (a transition is applied in the same step that marks its decision
//! applied).
//!
//! # How the log is kept
//!
//! The memory store keeps each model's whole [`DecisionLog`]. The SQL
//! stores keep a row per decision and a row per episode
//! (`decision_rows.rs`) and load into a partly loaded log only the rows a
//! call reads: the decision, its episode's length and end, its next step
//! (see `decisions/partial.rs`); a call writes only the rows it changed.
//! Its cost does not grow with the decisions kept.

use serde::{Deserialize, Serialize};

use crate::decisions::{
    check_baseline, check_end, Decide, DecisionLog, DecisionRecord, DecisionStats, DecisionStatus,
    DecisionsConfig, EpisodeEnd, LoggedDecision, NewDecision, Outcome, RewardReceipt, Transition,
};
use crate::error::{Error, Result};
use crate::model::{Experience, Learner, Prediction};
use crate::state::{canonical_key, StateKey, StateRef};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use crate::store::due_models::FULL_SCAN_EVERY_SECS;
use crate::store::rules::{check_state_room, check_writable};
pub use crate::store::settle::SETTLE_CHUNK;
use crate::store::settle::{due_through, DueKey};
use crate::store::CallKind;
use crate::table::QRows;
use crate::tenancy::TierLimits;

/// One reward for a logged decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewardIn {
    /// The decision it rewards.
    pub decision_id: String,
    /// The reward.
    pub value: f64,
    /// The client's id for this reward (an idempotency key, scoped to the
    /// decision).
    pub reward_id: Option<String>,
    /// The last reward: the decision's window closes at once.
    pub is_final: bool,
}

/// What a logging predict answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    /// The prediction (a retry of a logged decision answers its stored
    /// action and probability, `explored: false`, and the state's current
    /// Q-values).
    pub prediction: Prediction,
    /// The logged decision; `None` when the model logs no decisions (the
    /// call was a plain predict).
    pub decision: Option<LoggedDecision>,
}

/// Which decisions [`Store::decisions`](super::Store::decisions) lists.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecisionQuery {
    /// Only decisions in this status.
    pub status: Option<DecisionStatus>,
    /// Only decisions logged at or after this time (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// Only decisions logged before this time (Unix milliseconds).
    pub until_ms: Option<i64>,
    /// Decisions to skip (in the listing's order).
    pub offset: u64,
    /// Decisions to return at most.
    pub limit: u64,
    /// Newest first (by time, then id, both descending) instead of oldest
    /// first: the latest page without skipping the whole log (an offset is
    /// a scan of the decisions it skips).
    pub newest_first: bool,
    /// Leave [`DecisionPage::total`] uncounted (`None`): counting is a
    /// scan of every matching decision, which a caller that only shows
    /// the latest page need not pay.
    pub without_total: bool,
    /// Only decisions after this `(time_ms, decision_id)` in the listing's
    /// order (the last of the previous page): the next page found in the
    /// index, where an offset reads every decision it skips. Not applied
    /// to [`DecisionPage::total`].
    pub after: Option<(i64, String)>,
}

/// A page of a model's decision log, in the query's order (by time, then
/// id: oldest first unless [`DecisionQuery::newest_first`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionPage {
    /// Decisions matching the query (before offset and limit); `None`
    /// when the query asked for no count
    /// ([`DecisionQuery::without_total`]).
    pub total: Option<u64>,
    /// The page.
    pub decisions: Vec<DecisionRecord>,
    /// The log's counts.
    pub stats: DecisionStats,
}

/// What [`Store::episodes`](crate::store::Store::episodes) lists: a
/// model's episodes in id order (bytewise).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpisodeQuery {
    /// Only ended (`Some(true)`) or going-on (`Some(false)`) episodes.
    pub ended: Option<bool>,
    /// Only episodes whose id comes after this one (keyset paging: the
    /// last id of the previous page).
    pub after: Option<String>,
    /// Episodes to return at most.
    pub limit: u64,
}

/// One episode of a model's decision log.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeSummary {
    /// The client's episode id.
    pub episode_id: String,
    /// Its decisions (steps) so far.
    pub steps: u64,
    /// The sum of the rewards learned from its decisions so far.
    pub learned_return: f64,
    /// How it ended (`None`: going on).
    pub outcome: Option<Outcome>,
    /// When its first decision was logged (Unix milliseconds; `None` once
    /// pruned by the retention).
    pub started_ms: Option<i64>,
    /// When its last decision was logged (Unix milliseconds; `None` once
    /// pruned).
    pub last_ms: Option<i64>,
}

/// A page of a model's episodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpisodePage {
    /// The episodes, in id order.
    pub episodes: Vec<EpisodeSummary>,
    /// Whether more episodes match after the page's last.
    pub more: bool,
}

/// The page of `log`'s episodes for `q` (a store holding the whole log).
pub(crate) fn episode_page(log: &DecisionLog, q: &EpisodeQuery) -> EpisodePage {
    let lim = usize::try_from(q.limit).unwrap_or(usize::MAX);
    let time = |steps: &[String], k: Option<usize>| {
        let id = steps.get(k?)?;
        log.get(id).map(|r| r.time_ms)
    };
    let mut page = EpisodePage::default();
    let matching = log
        .episodes()
        .filter(|(id, _)| q.after.as_deref().is_none_or(|a| *id > a))
        .filter(|(_, e)| q.ended.is_none_or(|ended| ended == e.end.is_some()));
    for (id, e) in matching {
        if page.episodes.len() == lim {
            page.more = true;
            break;
        }
        page.episodes.push(EpisodeSummary {
            episode_id: id.to_owned(),
            steps: e.steps.len() as u64,
            learned_return: e.learned_return,
            outcome: e.end.as_ref().map(|end| end.outcome),
            started_ms: time(&e.steps, Some(0)),
            last_ms: time(&e.steps, e.steps.len().checked_sub(1)),
        });
    }
    page
}

/// A decision call, as `plan` runs it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Call<'a> {
    /// A logging predict.
    Decide(&'a Decide<'a>),
    /// Rewards, in order.
    Rewards(&'a [RewardIn]),
    /// An episode's end.
    End {
        episode_id: &'a str,
        end: &'a EpisodeEnd,
    },
    /// Closing the windows due through a decision, in the order windows
    /// close in (deadline, then id; see [`DecisionLog::expire_through`]):
    /// the pass's clock, or a chunk's last decision (see
    /// [`settle_in_chunks`](crate::store::settle::settle_in_chunks)).
    Settle {
        /// The last deadline (ms) this call closes (at most the clock).
        through_ms: i64,
        /// The last id of that deadline this call closes (`None`: all).
        through_id: Option<&'a str>,
    },
}

impl<'a> Call<'a> {
    /// The settle pass's call at `now` (Unix s) through a chunk's last
    /// decision (`None`: through the clock).
    pub(crate) fn settle(through: Option<&'a DueKey>, now: i64) -> Call<'a> {
        Call::Settle {
            through_ms: through.map_or(millis(now), |t| t.0),
            through_id: through.map(|t| t.1.as_str()),
        }
    }
}

/// What a call answers.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A logging predict's answer.
    Decided(Decided),
    /// One result per reward.
    Rewarded(Vec<Result<RewardReceipt>>),
    /// Transitions learned by an episode end or a settlement.
    Learned(usize),
}

impl Reply {
    /// A logging predict's answer (any other answer is an internal error).
    pub(crate) fn decided(self) -> Result<Decided> {
        match self {
            Reply::Decided(d) => Ok(d),
            _ => Err(mismatch()),
        }
    }

    /// The results of rewards.
    pub(crate) fn rewarded(self) -> Result<Vec<Result<RewardReceipt>>> {
        match self {
            Reply::Rewarded(r) => Ok(r),
            _ => Err(mismatch()),
        }
    }

    /// How many transitions an end or a settlement taught.
    pub(crate) fn learned(self) -> Result<usize> {
        match self {
            Reply::Learned(n) => Ok(n),
            _ => Err(mismatch()),
        }
    }
}

fn mismatch() -> Error {
    Error::Internal("a decision call got another call's answer".into())
}

/// The answer of a call that always answers (only a logging predict on a
/// model without decisions answers `None`).
pub(crate) fn answered(reply: Option<Reply>) -> Result<Reply> {
    reply.ok_or_else(mismatch)
}

/// Refuses a plain predict (a model that logs no decisions) that carries a
/// baseline action: there is no decision to record it with.
pub(crate) fn check_plain(request: &Decide<'_>) -> Result<()> {
    if request.baseline_action.is_some() {
        return Err(Error::field(
            "baseline_action",
            "baseline_action is recorded with a logged decision: this model logs no decisions \
             (give it a decisions configuration)",
        ));
    }
    Ok(())
}

/// A logging predict's answer, or, on a model that logs no decisions
/// (`None`), a plain metered [`Store::predict`](super::Store::predict).
pub(crate) fn decided_or_plain<S: super::Store + ?Sized>(
    store: &S,
    reply: Option<Reply>,
    meter: &super::Meter<'_>,
    model_id: &str,
    request: &Decide<'_>,
) -> Result<Decided> {
    match reply {
        Some(r) => r.decided(),
        None => {
            check_plain(request)?;
            Ok(Decided {
                prediction: store.predict(
                    meter,
                    model_id,
                    request.state,
                    request.explore,
                    request.allowed_actions,
                )?,
                decision: None,
            })
        }
    }
}

impl DecisionPage {
    /// The page `q` finds on a model that logs no decisions.
    pub fn empty(q: &DecisionQuery) -> Self {
        DecisionPage {
            total: q.counted(0),
            decisions: Vec::new(),
            stats: DecisionStats::default(),
        }
    }
}

/// The tier's states per model as [`plan`] checks them: a logging
/// predict in a state the model does not store is refused
/// ([`Error::StateLimitReached`], free) when the model holds `held` states
/// and the limit leaves no room. (Decisions logged in new states before
/// their transitions are learned may pass the limit by that many.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct Room<'a> {
    pub(crate) limits: &'a TierLimits,
    pub(crate) held: usize,
}

/// A planned call: its answer and the transitions to apply, in order.
#[derive(Debug)]
pub(crate) struct Planned {
    pub(crate) reply: Reply,
    pub(crate) transitions: Vec<Transition>,
}

/// Runs the log's part of `call` at `now_ms` on `log`: validates the whole
/// call first (errors change nothing and cost nothing), calls `debit` once
/// with the kind and number of calls to meter (a logging predict 1, a retried one 0, each
/// accepted reward 1, duplicates, late rewards, ends and settlements 0;
/// its error aborts the call with the log unchanged), then changes the log.
/// A logging predict chooses through `learner` over `rows`, which must hold
/// the state's row if the model has one. Returns the answer and the
/// transitions that became ready, for `apply`.
pub(crate) fn plan<T: QRows>(
    log: &mut DecisionLog,
    learner: &mut Learner,
    rows: &T,
    room: Room<'_>,
    call: Call<'_>,
    now_ms: i64,
    debit: impl FnOnce(CallKind, u64) -> Result<()>,
) -> Result<Planned> {
    match call {
        Call::Decide(d) => {
            learner.validate_predict(d.state, d.allowed_actions)?;
            check_baseline(learner, d.baseline_action)?;
            if let Some(logged) =
                log.prepare(d.decision_id, d.state, d.episode_id, d.baseline_action)?
            {
                debit(CallKind::Decide, 0)?;
                let prediction = replayed(learner, rows, d.state, &logged)?;
                return Ok(Planned {
                    reply: Reply::Decided(Decided {
                        prediction,
                        decision: Some(logged),
                    }),
                    transitions: Vec::new(),
                });
            }
            // The state a decision logs is the state its transition will
            // store: a new one must fit the tier's states per model.
            let stores = Experience::new(d.state, 0, 0.0, d.state);
            check_writable(room.limits, learner, room.held, true)?;
            check_state_room(
                room.limits,
                learner,
                room.held,
                rows,
                std::iter::once(stores),
            )?;
            debit(CallKind::Decide, 1)?;
            let p = learner.predict_full(rows, d.state, d.explore, d.allowed_actions)?;
            let new = NewDecision {
                decision_id: d.decision_id,
                episode_id: d.episode_id,
                state: d.state.to_state(),
                allowed_actions: d.allowed_actions.map(<[usize]>::to_vec),
                action: p.action,
                probability: p.probability,
                baseline_action: d.baseline_action,
            };
            let (logged, transitions) = log.record_decision(new, now_ms)?;
            Ok(Planned {
                reply: Reply::Decided(Decided {
                    prediction: p,
                    decision: Some(logged),
                }),
                transitions,
            })
        }
        Call::Rewards(rewards) => {
            check_writable(room.limits, learner, room.held, true)?;
            // The debit is known only once every reward ran: what they may
            // change is saved, and put back if the debit is refused.
            let saved = log.save(rewards.iter().map(|r| r.decision_id.as_str()));
            let mut results = Vec::with_capacity(rewards.len());
            let mut transitions = Vec::new();
            let mut metered = 0u64;
            for r in rewards {
                let res = log.record_reward(
                    &r.decision_id,
                    r.value,
                    r.reward_id.as_deref(),
                    r.is_final,
                    now_ms,
                );
                let res = res.map(|mut receipt| {
                    if receipt.metered() {
                        metered += 1;
                    }
                    transitions.append(&mut receipt.transitions);
                    receipt
                });
                results.push(res);
            }
            if let Err(e) = debit(CallKind::Reward, metered) {
                log.restore(saved);
                return Err(e);
            }
            Ok(Planned {
                reply: Reply::Rewarded(results),
                transitions,
            })
        }
        Call::End { episode_id, end } => {
            check_end(learner, end)?;
            check_writable(room.limits, learner, room.held, true)?;
            // Free; `record_end` checks everything before it changes
            // anything.
            debit(CallKind::Reward, 0)?;
            let transitions = log.record_end(episode_id, end.clone())?;
            Ok(Planned {
                reply: Reply::Learned(transitions.len()),
                transitions,
            })
        }
        Call::Settle {
            through_ms,
            through_id,
        } => {
            debit(CallKind::Reward, 0)?;
            let (ms, id) = due_through(through_ms, through_id, now_ms);
            let transitions = log.expire_through(ms, id);
            Ok(Planned {
                reply: Reply::Learned(transitions.len()),
                transitions,
            })
        }
    }
}

/// The answer to a retried decision: its stored action and probability,
/// with the state's Q-values as they are now.
fn replayed<T: QRows + ?Sized>(
    learner: &Learner,
    rows: &T,
    state: StateRef<'_>,
    logged: &LoggedDecision,
) -> Result<Prediction> {
    let key = canonical_key(state, learner.config().state_bins.as_deref())?;
    Ok(Prediction {
        action: logged.action,
        explored: false,
        epsilon: learner.epsilon(),
        probability: logged.probability,
        q_values: learner.visible_q(rows.row(key.as_ref())),
    })
}

/// Applies transitions in order with [`Learner::update`] (the rule
/// `update` uses). The log validated every piece, so this fails only with
/// imported Q-values near `f64::MAX`; what applied before is kept (and
/// written back) as with `update`.
pub(crate) fn apply<T: QRows + ?Sized>(
    learner: &mut Learner,
    rows: &mut T,
    transitions: &[Transition],
) -> Result<()> {
    for t in transitions {
        learner.update(rows, &t.experience())?;
    }
    Ok(())
}

/// The canonical keys of the states `transitions` read or write (what a
/// store that loads only some Q-rows must fetch before `apply`).
pub(crate) fn transition_keys(
    learner: &Learner,
    transitions: &[Transition],
) -> Result<Vec<StateKey>> {
    let bins = learner.config().state_bins.as_deref();
    let mut keys = Vec::with_capacity(transitions.len() * 2);
    for t in transitions {
        keys.push(canonical_key(t.state.as_ref(), bins)?);
        if let Some(next) = &t.next_state {
            keys.push(canonical_key(next.as_ref(), bins)?);
        }
    }
    Ok(keys)
}

/// A model's decisions setting as stored (JSON text; `None`: off).
pub(crate) fn config_text(backend: &'static str, c: &DecisionsConfig) -> Result<String> {
    serde_json::to_string(c).map_err(|e| Error::storage(backend, format!("decisions setting: {e}")))
}

/// A stored decisions setting (`None`: off).
pub(crate) fn config_from_text(
    backend: &'static str,
    text: Option<&str>,
) -> Result<Option<DecisionsConfig>> {
    text.map(|t| {
        serde_json::from_str(t)
            .map_err(|e| Error::storage(backend, format!("unreadable decisions setting: {e}")))
    })
    .transpose()
}

/// A model's decisions setting as `patch` leaves it, its retention capped
/// at the tier's (`None`: off).
pub fn capped(config: Option<DecisionsConfig>, retention_days: u32) -> Option<DecisionsConfig> {
    config.map(|mut c| {
        c.retention_days = c.retention_days.min(retention_days.max(1));
        c
    })
}

impl DecisionQuery {
    /// `n` as the page's [`DecisionPage::total`]: `None` when the query
    /// asked for no count.
    pub fn counted(&self, n: u64) -> Option<u64> {
        (!self.without_total).then_some(n)
    }
}

/// The page of `log` that `q` asks for.
pub(crate) fn page(log: &DecisionLog, q: &DecisionQuery) -> DecisionPage {
    let mut hits: Vec<&DecisionRecord> = log
        .decisions()
        .filter(|r| q.status.is_none_or(|s| r.status == s))
        .filter(|r| q.since_ms.is_none_or(|t| r.time_ms >= t))
        .filter(|r| q.until_ms.is_none_or(|t| r.time_ms < t))
        .collect();
    hits.sort_by(|a, b| {
        a.time_ms
            .cmp(&b.time_ms)
            .then_with(|| a.decision_id.cmp(&b.decision_id))
    });
    if q.newest_first {
        hits.reverse();
    }
    let total = q.counted(hits.len() as u64);
    if let Some((t, id)) = &q.after {
        // Past the cursor in the listing's order.
        let past = |r: &&DecisionRecord| {
            let at = (r.time_ms, r.decision_id.as_str());
            if q.newest_first {
                at < (*t, id.as_str())
            } else {
                at > (*t, id.as_str())
            }
        };
        hits.retain(past);
    }
    let off = usize::try_from(q.offset).unwrap_or(usize::MAX);
    let lim = usize::try_from(q.limit).unwrap_or(usize::MAX);
    DecisionPage {
        total,
        decisions: hits.into_iter().skip(off).take(lim).cloned().collect(),
        stats: log.stats(),
    }
}

/// The answer to a call other than a logging predict on a model that logs
/// no decisions: it has no decision (404) and no episode (404); there is
/// nothing to settle.
pub(crate) fn without_log(call: Call<'_>) -> Result<Reply> {
    match call {
        Call::Decide(_) => Err(Error::Internal(
            "a logging predict on a model without decisions is a plain predict".into(),
        )),
        Call::Rewards(rewards) => Ok(Reply::Rewarded(
            rewards
                .iter()
                .map(|_| Err(Error::NotFound("decision")))
                .collect(),
        )),
        Call::End { .. } => Err(Error::NotFound("episode")),
        Call::Settle { .. } => Ok(Reply::Learned(0)),
    }
}

/// The milliseconds of `now` (Unix seconds), the clock of the decision log.
pub(crate) fn millis(now: i64) -> i64 {
    now.saturating_mul(1000)
}
