//! Decisions and delayed rewards in-process (issue 14): `QLearner`'s
//! `enable_decisions`, `decide`, `reward`, `end_episode`, `settle` and the
//! log's counts, over `qlearn_core::decisions::DecisionLog` and its
//! `decide`/`reward`/`end_episode`/`settle` on the in-memory `Model`.
//!
//! The join of decisions and rewards, the aggregation, the deadlines and the
//! learning rule are the core's; this file converts arguments, takes the
//! clock (`now`, Unix seconds, default `time.time()`) and builds results.
//! Lock order: the log, then the model (every method here takes both).

use std::sync::MutexGuard;

use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::PyDict;
use qlearn_core::decisions::{
    Decide, DecisionLog, DecisionStatus, DecisionsConfig, EpisodeEnd, Outcome, RewardStatus,
};
use qlearn_core::{Error, Model};

use super::QLearner;
use crate::convert::{self, ArrayBuf};
use crate::error::{poisoned, to_py, value_error};

/// Largest `now` accepted, in seconds (year 9999; keeps milliseconds far
/// inside i64).
const MAX_NOW_SECONDS: f64 = 253_402_300_799.0;

impl QLearner {
    /// Locks the decision log (detaching while waiting), then the model.
    fn lock_both(
        &self,
        py: Python<'_>,
    ) -> PyResult<(MutexGuard<'_, Option<DecisionLog>>, MutexGuard<'_, Model>)> {
        let log = self.log.lock_py_attached(py).map_err(|_| poisoned())?;
        let model = self.lock(py)?;
        Ok((log, model))
    }

    /// The decision log as JSON (`None`: decisions off).
    pub(super) fn decisions_json(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let log = self.log.lock_py_attached(py).map_err(|_| poisoned())?;
        log.as_ref()
            .map(|l| {
                serde_json::to_string(l)
                    .map_err(|e| to_py(Error::Internal(format!("decision log to JSON: {e}"))))
            })
            .transpose()
    }
}

/// The log of a guard, or the error saying decisions are off.
pub(super) fn enabled(log: &mut Option<DecisionLog>) -> PyResult<&mut DecisionLog> {
    log.as_mut().ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err(
            "decisions are not enabled on this QLearner: call enable_decisions() first",
        )
    })
}

/// `now` (Unix seconds, `None`: the system clock) in Unix milliseconds.
fn now_ms(py: Python<'_>, now: Option<&Bound<'_, PyAny>>) -> PyResult<i64> {
    let secs = match now {
        Some(n) if !n.is_none() => {
            if n.is_instance_of::<pyo3::types::PyBool>() {
                return Err(crate::error::type_error("now must be a number, got bool"));
            }
            convert::float_arg(n, "now")?
        }
        _ => py.import("time")?.call_method0("time")?.extract::<f64>()?,
    };
    if !(secs.is_finite() && (0.0..=MAX_NOW_SECONDS).contains(&secs)) {
        return Err(value_error(Error::field(
            "now",
            format!("must be Unix seconds in 0..={MAX_NOW_SECONDS}, got {secs}"),
        )));
    }
    // In range: the product fits an i64 exactly enough (milliseconds).
    Ok((secs * 1000.0).round() as i64)
}

/// A core error of a decision call as a Python exception: unknown ids and
/// conflicts (a reused id with another value or state, an ended episode)
/// are the caller's input, so `ValueError`s; the rest as everywhere.
fn to_py_decision(e: Error, what: &str, id: &str) -> PyErr {
    match e {
        Error::NotFound(_) => pyo3::exceptions::PyValueError::new_err(format!(
            "{what} {id:?} not found (never logged, or pruned)"
        )),
        Error::Conflict(m) => pyo3::exceptions::PyValueError::new_err(m),
        other => to_py(other),
    }
}

fn ms_to_secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn status_name(s: DecisionStatus) -> &'static str {
    match s {
        DecisionStatus::Open => "open",
        DecisionStatus::Closed => "closed",
        DecisionStatus::Applied => "applied",
        DecisionStatus::Expired => "expired",
    }
}

fn reward_status_name(s: RewardStatus) -> &'static str {
    match s {
        RewardStatus::Open => "open",
        RewardStatus::Closed => "closed",
        RewardStatus::Applied => "applied",
        RewardStatus::Late => "late",
        RewardStatus::Duplicate => "duplicate",
    }
}

/// An optional id argument: `None`, or a str (checked by the core).
fn opt_id(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<String>> {
    match obj {
        Some(o) if !o.is_none() => o.extract::<String>().map(Some).map_err(|_| {
            crate::error::type_error(format!(
                "{what} must be a str, got {}",
                convert::type_name(o)
            ))
        }),
        _ => Ok(None),
    }
}

/// A logged decision (QLearner.decide).
///
/// Attributes:
///     decision_id: its id (yours, or one the log made up): pass it to reward().
///     episode_id: its episode, if any.
///     step: its step in the episode, from 0 (0 without an episode).
///     action: the chosen action.
///     probability: the exact probability with which the behaviour policy
///         (epsilon-greedy with ties and allowed actions, softmax, or greedy
///         with explore=False) chose it.
///     q_values: the state's Q-values after the decision.
///     closes_at: when its reward window closes (Unix seconds; a reward at
///         exactly this time is late).
///     replayed: a retry of an already logged decision_id (the stored
///         decision is returned, nothing predicted again).
#[pyclass(module = "qlearn", name = "LoggedDecision", frozen, get_all)]
pub struct LoggedDecision {
    decision_id: String,
    episode_id: Option<String>,
    step: u64,
    action: usize,
    probability: f64,
    q_values: Vec<f64>,
    closes_at: f64,
    replayed: bool,
}

#[pymethods]
impl LoggedDecision {
    fn __repr__(&self) -> String {
        format!(
            "LoggedDecision(decision_id={:?}, episode_id={}, step={}, action={}, probability={:?}, closes_at={:?}, replayed={})",
            self.decision_id,
            self.episode_id.as_ref().map_or("None".to_owned(), |e| format!("{e:?}")),
            self.step,
            self.action,
            self.probability,
            self.closes_at,
            if self.replayed { "True" } else { "False" }
        )
    }
}

/// What a reward did (QLearner.reward).
///
/// Attributes:
///     status: "open" (counted, window open), "closed" (counted, window
///         closed, the transition waits for the episode's next decision or
///         its end), "applied" (learned), "late" (after the window:
///         recorded, not learned) or "duplicate" (a repeated reward_id with
///         the same value: no effect).
///     reward: the decision's aggregated reward so far (None: none counted).
///     rewards: how many rewards were counted for the decision.
///     closes_at: when the decision's window closes (Unix seconds).
///     learned: transitions learned by this call.
#[pyclass(module = "qlearn", name = "RewardOutcome", frozen, get_all)]
pub struct RewardOutcome {
    status: &'static str,
    reward: Option<f64>,
    rewards: u32,
    closes_at: f64,
    learned: usize,
}

#[pymethods]
impl RewardOutcome {
    fn __repr__(&self) -> String {
        format!(
            "RewardOutcome(status={:?}, reward={}, rewards={}, closes_at={:?}, learned={})",
            self.status,
            self.reward.map_or("None".to_owned(), |r| format!("{r:?}")),
            self.rewards,
            self.closes_at,
            self.learned
        )
    }
}

#[pymethods]
impl QLearner {
    /// Turns decision logging on (or changes its setting, keeping the
    /// decisions already logged: open windows keep their deadline).
    ///
    /// Then decide() logs each decision, reward() takes its rewards later,
    /// and the model learns each decision's transition exactly once, by the
    /// same rule as update(), when its reward window closes (a final
    /// reward, the first one with aggregation="first", or the deadline,
    /// seen by settle()) and its successor is known (the episode's next
    /// decision, or its end; a decision without an episode is a one-step
    /// episode). The same semantics as the service's POST /predict with
    /// decisions, /rewards and /episodes/end.
    ///
    /// Args:
    ///     reward_wait_seconds: how long rewards are accepted after a
    ///         decision, 0 to 2592000 (30 days).
    ///     default_reward: the reward of a decision whose window closes
    ///         without any; None: such a decision teaches nothing.
    ///     aggregation: how several rewards combine: "sum", "first",
    ///         "last", "mean", "min" or "max".
    ///     retention_days: how long a finished decision is kept, 1 to 3650:
    ///         settle() forgets those logged longer ago (a reward for one
    ///         is then an unknown decision).
    ///
    /// Raises:
    ///     ValueError: a value out of range (the message names it).
    #[pyo3(
        signature = (reward_wait_seconds=600, default_reward=None, aggregation="sum", retention_days=30),
        text_signature = "($self, reward_wait_seconds=600, default_reward=None, aggregation='sum', retention_days=30)"
    )]
    fn enable_decisions(
        &self,
        py: Python<'_>,
        reward_wait_seconds: i64,
        default_reward: Option<&Bound<'_, PyAny>>,
        aggregation: &str,
        retention_days: i64,
    ) -> PyResult<()> {
        let (wait, days) = (reward_wait_seconds, retention_days);
        let config = DecisionsConfig {
            reward_wait_seconds: u64::try_from(wait).map_err(|_| {
                value_error(Error::field(
                    "decisions.reward_wait_seconds",
                    format!("must be in 0..=2592000 (30 days), got {wait}"),
                ))
            })?,
            default_reward: match default_reward {
                Some(r) if !r.is_none() => Some(convert::float_arg(r, "default_reward")?),
                _ => None,
            },
            aggregation: aggregation.parse().map_err(to_py)?,
            retention_days: u32::try_from(days).map_err(|_| {
                value_error(Error::field(
                    "decisions.retention_days",
                    format!("must be in 1..=3650, got {days}"),
                ))
            })?,
        };
        let mut log = self.log.lock_py_attached(py).map_err(|_| poisoned())?;
        match log.as_mut() {
            Some(l) => l.set_config(config).map_err(to_py),
            None => {
                *log = Some(DecisionLog::new(config).map_err(to_py)?);
                Ok(())
            }
        }
    }

    /// Turns decision logging off and forgets the log (pending decisions
    /// are dropped unlearned).
    #[pyo3(text_signature = "($self)")]
    fn disable_decisions(&self, py: Python<'_>) -> PyResult<()> {
        *self.log.lock_py_attached(py).map_err(|_| poisoned())? = None;
        Ok(())
    }

    /// The decision-logging setting as a dict (reward_wait_seconds,
    /// default_reward, aggregation, retention_days), or None when off.
    #[getter]
    fn decisions_setting<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let config = match &*self.log.lock_py_attached(py).map_err(|_| poisoned())? {
            Some(l) => l.config().clone(),
            None => return Ok(None),
        };
        let d = PyDict::new(py);
        d.set_item("reward_wait_seconds", config.reward_wait_seconds)?;
        d.set_item("default_reward", config.default_reward)?;
        d.set_item("aggregation", config.aggregation.as_str())?;
        d.set_item("retention_days", config.retention_days)?;
        Ok(Some(d))
    }

    /// Chooses an action for `state` and logs the decision with its
    /// probability; learns the episode's previous step if it was waiting
    /// for this state. A retry with a logged decision_id returns the stored
    /// decision (replayed=True) without predicting again.
    ///
    /// Args:
    ///     state: int, str, sequence of numbers or 1-d numpy array.
    ///     allowed_actions: optional action indices or numpy bool mask.
    ///     explore: whether to explore (as predict()).
    ///     decision_id: your id for it (an idempotency key, 1 to 128 bytes);
    ///         None: one is made up.
    ///     episode_id: the episode it belongs to (None: a one-step episode).
    ///     baseline_action: the action your existing rule would have taken
    ///         here (an action index), recorded for evaluate("baseline").
    ///     now: the time of the decision, Unix seconds (default time.time()).
    ///
    /// Returns:
    ///     A LoggedDecision.
    ///
    /// Raises:
    ///     RuntimeError: decisions are not enabled.
    ///     ValueError: invalid state, allowed_actions, id or
    ///         baseline_action; decision_id reused for another state,
    ///         episode or baseline_action; the episode has ended.
    ///     TypeError: an argument of a wrong type.
    #[pyo3(
        signature = (state, *, allowed_actions=None, explore=true, decision_id=None, episode_id=None, baseline_action=None, now=None),
        text_signature = "($self, state, *, allowed_actions=None, explore=True, decision_id=None, episode_id=None, baseline_action=None, now=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        py: Python<'_>,
        state: &Bound<'_, PyAny>,
        allowed_actions: Option<&Bound<'_, PyAny>>,
        explore: bool,
        decision_id: Option<&Bound<'_, PyAny>>,
        episode_id: Option<&Bound<'_, PyAny>>,
        baseline_action: Option<&Bound<'_, PyAny>>,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<LoggedDecision> {
        let mut buf = ArrayBuf::new();
        let s = convert::state(state, &mut buf, "state")?;
        let mask = convert::opt_allowed(allowed_actions, self.n_actions, "allowed_actions")?;
        let decision_id = opt_id(decision_id, "decision_id")?;
        let episode_id = opt_id(episode_id, "episode_id")?;
        let now = now_ms(py, now)?;
        let mut request = Decide::new(s).explore(explore);
        if let Some(b) = baseline_action.filter(|b| !b.is_none()) {
            let a = convert::int_arg(b, "baseline_action")?;
            request = request.baseline(convert::action(a, self.n_actions, "baseline_action")?);
        }
        if let Some(m) = &mask {
            request = request.allowed(m);
        }
        if let Some(id) = &decision_id {
            request = request.id(id);
        }
        if let Some(ep) = &episode_id {
            request = request.episode(ep);
        }
        let (logged, q_values) = {
            let (mut log, mut model) = self.lock_both(py)?;
            let log = enabled(&mut log)?;
            let logged = log
                .decide(&mut model, &request, now)
                .map_err(|e| to_py_decision(e, "decision", decision_id.as_deref().unwrap_or("")))?;
            (logged, model.q_values(s).map_err(to_py)?)
        };
        Ok(LoggedDecision {
            decision_id: logged.decision_id,
            episode_id: logged.episode_id,
            step: logged.step,
            action: logged.action,
            probability: logged.probability,
            q_values,
            closes_at: ms_to_secs(logged.closes_at_ms),
            replayed: logged.replayed,
        })
    }

    /// Records a reward for a logged decision. On time it is folded into
    /// the decision's reward by the aggregation; final=True (or aggregation
    /// "first") closes the window at once. After the window (closed by the
    /// deadline, a final reward or "first") it is recorded as late and not
    /// learned. A repeated reward_id with the same value has no effect.
    ///
    /// Args:
    ///     decision_id: the decision's id (LoggedDecision.decision_id).
    ///     value: the reward (finite).
    ///     reward_id: an idempotency key for this reward (1 to 128 bytes).
    ///     final: no more rewards will come: close the window now.
    ///     now: the time of the reward, Unix seconds (default time.time()).
    ///
    /// Returns:
    ///     A RewardOutcome.
    ///
    /// Raises:
    ///     RuntimeError: decisions are not enabled.
    ///     ValueError: unknown decision; reward_id reused with another
    ///         value; a value that is not finite or too large.
    #[pyo3(
        signature = (decision_id, value, *, reward_id=None, r#final=false, now=None),
        text_signature = "($self, decision_id, value, *, reward_id=None, final=False, now=None)"
    )]
    fn reward(
        &self,
        py: Python<'_>,
        decision_id: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        reward_id: Option<&Bound<'_, PyAny>>,
        r#final: bool,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RewardOutcome> {
        let id = opt_id(Some(decision_id), "decision_id")?.unwrap_or_default();
        let value = convert::float_arg(value, "value")?;
        let reward_id = opt_id(reward_id, "reward_id")?;
        let now = now_ms(py, now)?;
        let receipt = {
            let (mut log, mut model) = self.lock_both(py)?;
            let log = enabled(&mut log)?;
            log.reward(&mut model, &id, value, reward_id.as_deref(), r#final, now)
                .map_err(|e| to_py_decision(e, "decision", &id))?
        };
        Ok(RewardOutcome {
            status: reward_status_name(receipt.status),
            reward: receipt.reward,
            rewards: receipt.rewards,
            closes_at: ms_to_secs(receipt.closes_at_ms),
            learned: receipt.transitions.len(),
        })
    }

    /// Ends an episode and learns its last step if it was waiting for the
    /// end. Ending it again the same way has no effect (returns 0).
    ///
    /// Args:
    ///     episode_id: the episode.
    ///     outcome: "terminated" (no bootstrap) or "truncated" (the last
    ///         step bootstraps from next_state; not for sarsa).
    ///     next_state: the state reached after the last decision (required
    ///         when truncated).
    ///     next_allowed_actions: the actions allowed in next_state.
    ///
    /// Returns:
    ///     How many transitions were learned (0 or 1).
    ///
    /// Raises:
    ///     RuntimeError: decisions are not enabled.
    ///     ValueError: unknown episode, a bad outcome or next_state, or the
    ///         episode already ended another way.
    #[pyo3(
        signature = (episode_id, outcome="terminated", *, next_state=None, next_allowed_actions=None),
        text_signature = "($self, episode_id, outcome='terminated', *, next_state=None, next_allowed_actions=None)"
    )]
    fn end_episode(
        &self,
        py: Python<'_>,
        episode_id: &Bound<'_, PyAny>,
        outcome: &str,
        next_state: Option<&Bound<'_, PyAny>>,
        next_allowed_actions: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let id = opt_id(Some(episode_id), "episode_id")?.unwrap_or_default();
        let outcome = match outcome {
            "terminated" => Outcome::Terminated,
            "truncated" => Outcome::Truncated,
            other => {
                return Err(value_error(Error::field(
                    "outcome",
                    format!("must be \"terminated\" or \"truncated\", got {other:?}"),
                )))
            }
        };
        let mut buf = ArrayBuf::new();
        let next_state = match next_state {
            Some(s) if !s.is_none() => Some(convert::state(s, &mut buf, "next_state")?.to_state()),
            _ => None,
        };
        let next_allowed_actions =
            convert::opt_allowed(next_allowed_actions, self.n_actions, "next_allowed_actions")?;
        let end = EpisodeEnd {
            outcome,
            next_state,
            next_allowed_actions,
        };
        let (mut log, mut model) = self.lock_both(py)?;
        let log = enabled(&mut log)?;
        log.end_episode(&mut model, &id, end)
            .map_err(|e| to_py_decision(e, "episode", &id))
    }

    /// Closes every reward window that has closed by `now` (with its
    /// aggregated reward, else the default reward, else nothing learned)
    /// and learns what became ready. Call it now and then (a service does
    /// it on a timer); a reward arriving after its deadline also closes
    /// its window first.
    ///
    /// Args:
    ///     now: Unix seconds (default time.time()).
    ///
    /// Returns:
    ///     How many transitions were learned.
    #[pyo3(signature = (now=None), text_signature = "($self, now=None)")]
    fn settle(&self, py: Python<'_>, now: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
        let now = now_ms(py, now)?;
        let (mut log, mut model) = self.lock_both(py)?;
        enabled(&mut log)?.settle(&mut model, now).map_err(to_py)
    }

    /// The decision log's counts: a qlearn.DecisionStats (decisions,
    /// rewards, pending, late, defaulted, applied), the type the service's
    /// decision pages carry; None when decisions are off.
    #[getter]
    fn decision_stats<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let stats = match &*self.log.lock_py_attached(py).map_err(|_| poisoned())? {
            Some(l) => l.stats(),
            None => return Ok(None),
        };
        let cls = py.import("qlearn.types")?.getattr("DecisionStats")?;
        let s = stats;
        cls.call1((
            s.decisions,
            s.rewards,
            s.pending,
            s.late,
            s.defaulted,
            s.applied,
        ))
        .map(Some)
    }

    /// Where a logged decision stands: "open", "closed", "applied" or
    /// "expired"; None if no such decision is logged.
    #[pyo3(text_signature = "($self, decision_id)")]
    fn decision_status(&self, py: Python<'_>, decision_id: &str) -> PyResult<Option<&'static str>> {
        let log = self.log.lock_py_attached(py).map_err(|_| poisoned())?;
        Ok(log
            .as_ref()
            .and_then(|l| l.get(decision_id))
            .map(|r| status_name(r.status)))
    }

    /// The decision log (setting, decisions, rewards, episodes, counts) as
    /// JSON, None when decisions are off, to inspect it or move it to
    /// another QLearner with load_decisions(). to_bytes(), save(),
    /// pickling and copying keep the log by themselves.
    #[pyo3(text_signature = "($self)")]
    fn decisions_to_json(&self, py: Python<'_>) -> PyResult<Option<String>> {
        self.decisions_json(py)
    }

    /// Replaces the decision log with one from decisions_to_json() (None:
    /// turns decisions off), enabling decisions with its setting.
    ///
    /// Raises:
    ///     ValueError: the text is not a decision log.
    #[pyo3(text_signature = "($self, text)")]
    fn load_decisions(&self, py: Python<'_>, text: Option<&str>) -> PyResult<()> {
        let parsed = match text {
            None => None,
            Some(t) => Some(self.decode_log(py, t)?),
        };
        *self.log.lock_py_attached(py).map_err(|_| poisoned())? = parsed;
        Ok(())
    }
}

impl QLearner {
    /// A decision log from its JSON, checked by the core against this
    /// model (as the binary format's version 2 is).
    pub(super) fn decode_log(&self, py: Python<'_>, text: &str) -> PyResult<DecisionLog> {
        let model = self.lock(py)?;
        qlearn_core::codec::decision_log_from_json(&model, text).map_err(to_py)
    }
}
