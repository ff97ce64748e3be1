//! `qlearn.QLearner`: a [`Model`] of `qlearn-core` behind a mutex, and
//! `qlearn.Stats`, its statistics.
//!
//! Every method converts its Python arguments first (see
//! [`crate::convert`]), then locks the model, calls the engine and unlocks
//! before any Python object is built, so no Python code (a `__float__`, a
//! destructor) ever runs while the model is locked. The lock is taken with
//! [`MutexExt::lock_py_attached`], which detaches from the interpreter while
//! it waits: threads sharing one agent queue up instead of deadlocking with
//! the GIL. Batch calls (`update_many`, `predict_many`), serialization and
//! file IO run with the GIL released.
//!
//! There is no Q-learning here: every decision, update, statistic and byte
//! of the file format is the core's.
//!
//! This file holds the class, its lock and the single-step engine calls
//! (constructor, `predict`, `q_values`, `update`, `stats`); the other
//! methods are in one `#[pymethods]` block per concept (pyo3's
//! `multiple-pymethods` feature): [`batch`] (`predict_many`,
//! `update_many`), [`params`] (the hyperparameter properties), [`table`]
//! (views of the Q-table), [`io`] (bytes, files, JSON, pickle, copy) and
//! [`decisions`] (logged decisions and delayed rewards over the core's
//! `DecisionLog`), [`evaluation`] (offline evaluation on that log and on
//! the NDJSON export, over `qlearn_core::evaluation`).

mod batch;
mod decisions;
mod evaluation;
mod io;
mod params;
mod table;

pub use decisions::{LoggedDecision, RewardOutcome};
pub use evaluation::evaluate_export;

use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::PyDict;
use qlearn_core::decisions::DecisionLog;
use qlearn_core::{Error, Experience, Model, ModelConfig};

use crate::convert::{self, ArrayBuf};
use crate::error::{poisoned, to_py, type_error, value_error};

/// A tabular Q-learning agent (Q-learning, SARSA, expected SARSA or double
/// Q-learning) running the qlearn engine in-process.
///
/// Args:
///     n_actions: number of discrete actions, 1 to 4096.
///     learning_rate: alpha in (0, 1].
///     discount_factor: gamma in [0, 1].
///     epsilon: initial exploration rate in [0, 1].
///     epsilon_decay: factor applied to epsilon at each episode end, in (0, 1]
///         (1.0: no decay).
///     min_epsilon: floor of the decayed epsilon, in [0, 1].
///     initial_q: Q-value of every unseen state-action pair (finite;
///         positive values explore optimistically).
///     algorithm: "q_learning", "sarsa", "expected_sarsa" or
///         "double_q_learning".
///     seed: seed of the random generator (exploration and tie-breaking);
///         None seeds from the OS.
///     exploration: "epsilon_greedy" or "softmax".
///     temperature: softmax temperature (> 0).
///     action_names: optional unique names, one per action.
///     state_bins: optional discretization of array states: one
///         (low, high, bins) tuple or {"low", "high", "bins"} dict per dimension.
///
/// States are ints, strs, lists/tuples of numbers or 1-d numpy arrays;
/// [1, 2], (1, 2), np.array([1, 2]) and [1.0, 2.0] are one state. A bool
/// counts as the int it equals. A float alone is not a state (use [x]).
///
/// Raises:
///     ValueError: a hyperparameter is out of range (the message names it).
///     TypeError: an argument has the wrong type.
#[pyclass(module = "qlearn", name = "QLearner", frozen)]
pub struct QLearner {
    model: Mutex<Model>,
    /// The decision log (`None`: decisions off). Locked before `model`
    /// when both are needed.
    log: Mutex<Option<DecisionLog>>,
    /// Cached: `n_actions` never changes on a model.
    n_actions: usize,
}

impl QLearner {
    fn wrap(model: Model) -> Self {
        Self::wrap_with(model, None)
    }

    /// A QLearner over `model` with decision log `log` (`None`: off).
    fn wrap_with(model: Model, log: Option<DecisionLog>) -> Self {
        let n_actions = model.config().n_actions;
        QLearner {
            model: Mutex::new(model),
            log: Mutex::new(log),
            n_actions,
        }
    }

    /// Locks the model, detaching from the interpreter while waiting.
    #[inline]
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Model>> {
        // The uncontended case inline (one atomic); waiting detaches.
        match self.model.try_lock() {
            Ok(guard) => Ok(guard),
            Err(TryLockError::WouldBlock) => {
                self.model.lock_py_attached(py).map_err(|_| poisoned())
            }
            Err(TryLockError::Poisoned(_)) => Err(poisoned()),
        }
    }

    /// Locks the model from a thread that is detached from the interpreter.
    fn lock_detached(&self) -> Result<MutexGuard<'_, Model>, Error> {
        self.model.lock().map_err(|_| {
            Error::Internal("the model's lock was poisoned by an earlier panic".into())
        })
    }
}

#[pymethods]
impl QLearner {
    #[new]
    #[pyo3(
        signature = (n_actions, learning_rate=0.1, discount_factor=0.95, epsilon=0.1,
                     epsilon_decay=1.0, min_epsilon=0.01, initial_q=0.0,
                     algorithm="q_learning", seed=None, *, exploration="epsilon_greedy",
                     temperature=1.0, action_names=None, state_bins=None),
        text_signature = "(n_actions, learning_rate=0.1, discount_factor=0.95, epsilon=0.1, \
                          epsilon_decay=1.0, min_epsilon=0.01, initial_q=0.0, \
                          algorithm='q_learning', seed=None, *, exploration='epsilon_greedy', \
                          temperature=1.0, action_names=None, state_bins=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        n_actions: &Bound<'_, PyAny>,
        learning_rate: f64,
        discount_factor: f64,
        epsilon: f64,
        epsilon_decay: f64,
        min_epsilon: f64,
        initial_q: f64,
        algorithm: &str,
        seed: Option<&Bound<'_, PyAny>>,
        exploration: &str,
        temperature: f64,
        action_names: Option<Vec<String>>,
        state_bins: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let max = qlearn_core::limits::MAX_ACTIONS;
        let n_actions = convert::int_arg(n_actions, "n_actions")?;
        let n = usize::try_from(n_actions).map_err(|_| {
            value_error(Error::field(
                "n_actions",
                format!("must be in 1..={max}, got {n_actions}"),
            ))
        })?;
        let seed = match seed {
            None => None,
            Some(s) if s.is_none() => None,
            Some(s) => Some(s.extract::<u64>().map_err(|_| {
                if s.extract::<i128>().is_ok() {
                    value_error(Error::field("seed", "must be an int in 0..2**64"))
                } else {
                    type_error(format!(
                        "seed must be an int, got {}",
                        convert::type_name(s)
                    ))
                }
            })?),
        };
        let state_bins = match state_bins {
            None => None,
            Some(b) if b.is_none() => None,
            Some(b) => {
                let items: Vec<Bound<'_, PyAny>> = b.extract().map_err(|_| {
                    type_error("state_bins must be a list of (low, high, bins) tuples or dicts")
                })?;
                Some(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, x)| params::bin(x, i))
                        .collect::<PyResult<Vec<_>>>()?,
                )
            }
        };
        let mut config = ModelConfig::new(n);
        config.learning_rate = learning_rate;
        config.discount_factor = discount_factor;
        config.epsilon = epsilon;
        config.epsilon_decay = epsilon_decay;
        config.min_epsilon = min_epsilon;
        config.initial_q = initial_q;
        config.algorithm = algorithm.parse().map_err(to_py)?;
        config.exploration = exploration.parse().map_err(to_py)?;
        config.temperature = temperature;
        config.seed = seed;
        config.action_names = action_names;
        config.state_bins = state_bins;
        Model::new(config).map(QLearner::wrap).map_err(to_py)
    }

    /// Chooses an action for `state`.
    ///
    /// With `explore=True` the configured exploration applies (epsilon-greedy
    /// or softmax); with `explore=False` the greedy action. Ties among the
    /// best actions are broken uniformly at random. An unseen state reads as
    /// `initial_q` everywhere and is not stored.
    ///
    /// Args:
    ///     state: int, str, sequence of numbers or 1-d numpy array.
    ///     explore: whether to explore.
    ///     allowed_actions: optional sequence of allowed action indices, or a
    ///         numpy bool mask of length n_actions; restricts both the greedy
    ///         and the exploratory choice.
    ///
    /// Returns:
    ///     The action index (an int).
    ///
    /// Raises:
    ///     ValueError: invalid state or allowed_actions.
    ///     TypeError: state or allowed_actions of a wrong type.
    #[pyo3(
        signature = (state, explore=true, allowed_actions=None),
        text_signature = "($self, state, explore=True, allowed_actions=None)"
    )]
    fn predict(
        &self,
        py: Python<'_>,
        state: &Bound<'_, PyAny>,
        explore: bool,
        allowed_actions: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let mut buf = ArrayBuf::new();
        let s = convert::state(state, &mut buf, "state")?;
        let mask = convert::opt_allowed(allowed_actions, self.n_actions, "allowed_actions")?;
        let decision = self.lock(py)?.predict(s, explore, mask.as_deref());
        decision.map(|d| d.action).map_err(to_py)
    }

    /// The Q-values of `state` (initial_q everywhere for an unseen state; the
    /// mean of both tables for double Q-learning). Changes nothing.
    ///
    /// Args:
    ///     state: int, str, sequence of numbers or 1-d numpy array.
    ///
    /// Returns:
    ///     A list of n_actions floats.
    #[pyo3(text_signature = "($self, state)")]
    fn q_values(&self, py: Python<'_>, state: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
        let mut buf = ArrayBuf::new();
        let s = convert::state(state, &mut buf, "state")?;
        let q = self.lock(py)?.q_values(s);
        q.map_err(to_py)
    }

    /// The behaviour policy's probability of each action in `state`: what
    /// predict() chooses with (epsilon-greedy with ties split evenly,
    /// softmax, or greedy with explore=False), restricted to
    /// allowed_actions. The probability decide() logs is one of these.
    /// Changes nothing.
    ///
    /// Args:
    ///     state: int, str, sequence of numbers or 1-d numpy array.
    ///     allowed_actions: optional action indices or numpy bool mask.
    ///     explore: whether exploration applies.
    ///
    /// Returns:
    ///     A list of n_actions floats summing to 1 (0 for disallowed actions).
    #[pyo3(
        signature = (state, allowed_actions=None, explore=true),
        text_signature = "($self, state, allowed_actions=None, explore=True)"
    )]
    fn action_probabilities(
        &self,
        py: Python<'_>,
        state: &Bound<'_, PyAny>,
        allowed_actions: Option<&Bound<'_, PyAny>>,
        explore: bool,
    ) -> PyResult<Vec<f64>> {
        let mut buf = ArrayBuf::new();
        let s = convert::state(state, &mut buf, "state")?;
        let mask = convert::opt_allowed(allowed_actions, self.n_actions, "allowed_actions")?;
        let p = self
            .lock(py)?
            .action_probabilities(s, mask.as_deref(), explore);
        p.map_err(to_py)
    }

    /// Learns from one transition with the configured rule, e.g. for
    /// Q-learning Q(s,a) += alpha * (r + gamma * (1 - done) * max Q(s',.) - Q(s,a)).
    ///
    /// `done` (terminated) stops the bootstrap from next_state; `truncated`
    /// (a time limit) ends the episode but still bootstraps. Either ending
    /// counts an episode, records its return and decays epsilon.
    ///
    /// Args:
    ///     state: the state the action was taken in.
    ///     action: the action taken (0 <= action < n_actions).
    ///     reward: the reward observed (finite).
    ///     next_state: the state reached.
    ///     done: the episode terminated.
    ///     truncated: the episode was cut short.
    ///     next_action: the action taken in next_state (required by sarsa
    ///         unless done; ignored by the other algorithms).
    ///     next_allowed_actions: actions allowed in next_state (restricts the
    ///         max or expectation over next_state).
    ///
    /// Returns:
    ///     The TD error (target minus the old Q(s, a)).
    ///
    /// Raises:
    ///     ValueError: invalid state, action or reward; nothing is changed.
    #[pyo3(
        signature = (state, action, reward, next_state, done=false, truncated=false,
                     next_action=None, next_allowed_actions=None),
        text_signature = "($self, state, action, reward, next_state, done=False, truncated=False, \
                          next_action=None, next_allowed_actions=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        py: Python<'_>,
        state: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        reward: &Bound<'_, PyAny>,
        next_state: &Bound<'_, PyAny>,
        done: bool,
        truncated: bool,
        next_action: Option<&Bound<'_, PyAny>>,
        next_allowed_actions: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<f64> {
        let n = self.n_actions;
        let mut buf = ArrayBuf::new();
        let mut next_buf = ArrayBuf::new();
        let s = convert::state(state, &mut buf, "state")?;
        let s2 = convert::state(next_state, &mut next_buf, "next_state")?;
        let mask = convert::opt_allowed(next_allowed_actions, n, "next_allowed_actions")?;
        let exp = Experience {
            state: s,
            action: convert::action(convert::int_arg(action, "action")?, n, "action")?,
            reward: convert::float_arg(reward, "reward")?,
            next_state: s2,
            done,
            truncated,
            next_action: match next_action {
                Some(a) if !a.is_none() => Some(convert::action(
                    convert::int_arg(a, "next_action")?,
                    n,
                    "next_action",
                )?),
                _ => None,
            },
            next_allowed_actions: mask.as_deref(),
        };
        let outcome = self.lock(py)?.update(&exp);
        outcome.map(|o| o.td_error).map_err(to_py)
    }
    /// The model's statistics (a snapshot): predictions, updates, episodes,
    /// states, epsilon, mean_reward and recent_returns.
    #[getter]
    fn stats(&self, py: Python<'_>) -> PyResult<Stats> {
        let s = self.lock(py)?.stats();
        Ok(Stats {
            predictions: s.predictions,
            updates: s.updates,
            episodes: s.episodes,
            states: s.states,
            epsilon: s.epsilon,
            mean_reward: s.mean_reward,
            recent_returns: s.recent_returns,
        })
    }
    /// Number of distinct states stored.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.len())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let m = self.lock(py)?;
        let c = m.config();
        Ok(format!(
            "QLearner(n_actions={}, algorithm='{}', learning_rate={:?}, discount_factor={:?}, epsilon={:?}, states={})",
            c.n_actions,
            c.algorithm.as_str(),
            c.learning_rate,
            c.discount_factor,
            m.epsilon(),
            m.len()
        ))
    }
}

/// A snapshot of a model's statistics (see QLearner.stats).
///
/// Attributes:
///     predictions: predictions served.
///     updates: updates applied.
///     episodes: episodes ended (done or truncated).
///     states: distinct states stored.
///     epsilon: exploration rate at the time of the snapshot.
///     mean_reward: mean reward over all updates (0.0 before the first).
///     recent_returns: returns of the most recent episodes (up to 1000),
///         oldest first.
#[pyclass(module = "qlearn", name = "Stats", frozen, get_all)]
pub struct Stats {
    predictions: u64,
    updates: u64,
    episodes: u64,
    states: u64,
    epsilon: f64,
    mean_reward: f64,
    recent_returns: Vec<f64>,
}

#[pymethods]
impl Stats {
    /// The statistics as a dict.
    #[pyo3(text_signature = "($self)")]
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("predictions", self.predictions)?;
        d.set_item("updates", self.updates)?;
        d.set_item("episodes", self.episodes)?;
        d.set_item("states", self.states)?;
        d.set_item("epsilon", self.epsilon)?;
        d.set_item("mean_reward", self.mean_reward)?;
        d.set_item("recent_returns", self.recent_returns.clone())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Stats(predictions={}, updates={}, episodes={}, states={}, epsilon={:?}, mean_reward={:?}, recent_returns=[{} values])",
            self.predictions,
            self.updates,
            self.episodes,
            self.states,
            self.epsilon,
            self.mean_reward,
            self.recent_returns.len()
        )
    }
}
