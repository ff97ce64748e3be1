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

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, TryLockError};

use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyMemoryView, PyTuple, PyType};
use pyo3::IntoPyObjectExt;
use qlearn_core::model::at_index;
use qlearn_core::{Bin, Error, Experience, Model, ModelConfig, StateKey, StateRef};

use crate::convert::{self, ArrayBuf, Batch};
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
    /// Cached: `n_actions` never changes on a model.
    n_actions: usize,
}

impl QLearner {
    fn wrap(model: Model) -> Self {
        let n_actions = model.config().n_actions;
        QLearner {
            model: Mutex::new(model),
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

    /// Changes the configuration through the engine's `reconfigure` (which
    /// validates the new value and refuses what cannot change).
    fn reconfigure(&self, py: Python<'_>, change: impl FnOnce(&mut ModelConfig)) -> PyResult<()> {
        let mut m = self.lock(py)?;
        let mut config = m.config().clone();
        change(&mut config);
        m.reconfigure(config).map_err(to_py)
    }

    fn config(&self, py: Python<'_>) -> PyResult<ModelConfig> {
        Ok(self.lock(py)?.config().clone())
    }

    /// Every row of the table, copied out under the lock (Python objects
    /// are built after it is released).
    fn table_rows(&self, py: Python<'_>) -> PyResult<Vec<(StateKey, Vec<f64>)>> {
        let m = self.lock(py)?;
        Ok(m.rows(0, m.len()))
    }

    /// A dict state -> `f(q_values)` over every stored state.
    fn per_state<'py, T: IntoPyObject<'py>>(
        &self,
        py: Python<'py>,
        f: impl Fn(&[f64]) -> T,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (key, q) in self.table_rows(py)? {
            d.set_item(state_to_py(py, key.as_ref())?, f(&q))?;
        }
        Ok(d)
    }

    fn bytes(&self, py: Python<'_>) -> PyResult<Vec<u8>> {
        py.detach(|| self.lock_detached()?.to_bytes())
            .map_err(to_py)
    }
}

/// Reads `bytes`, `bytearray` or `memoryview` contents.
fn read_bytes(data: &Bound<'_, PyAny>) -> PyResult<PyBackedBytes> {
    if let Ok(b) = data.extract::<PyBackedBytes>() {
        return Ok(b);
    }
    if data.is_instance_of::<PyMemoryView>() {
        return Ok(data.call_method0("tobytes")?.extract::<PyBackedBytes>()?);
    }
    Err(type_error(format!(
        "expected bytes, bytearray or memoryview, got {}",
        convert::type_name(data)
    )))
}

fn decode(py: Python<'_>, data: &[u8]) -> PyResult<QLearner> {
    py.detach(|| Model::from_bytes(data))
        .map(QLearner::wrap)
        .map_err(to_py)
}

/// One state_bins entry: a `(low, high, bins)` tuple or a dict.
fn bin(obj: &Bound<'_, PyAny>, i: usize) -> PyResult<Bin> {
    let bad = || {
        type_error(format!(
            "state_bins[{i}] must be a (low, high, bins) tuple or a dict with keys low, high, bins"
        ))
    };
    if let Ok(d) = obj.cast::<PyDict>() {
        if d.len() != 3 {
            return Err(bad());
        }
        let get = |k: &str| d.get_item(k).ok().flatten().ok_or_else(bad);
        return Ok(Bin {
            low: get("low")?.extract().map_err(|_| bad())?,
            high: get("high")?.extract().map_err(|_| bad())?,
            bins: bins_count(&get("bins")?, i)?,
        });
    }
    let (low, high, bins): (f64, f64, Bound<'_, PyAny>) = obj.extract().map_err(|_| bad())?;
    Ok(Bin {
        low,
        high,
        bins: bins_count(&bins, i)?,
    })
}

fn bins_count(obj: &Bound<'_, PyAny>, i: usize) -> PyResult<u32> {
    let n = convert::int_arg(obj, &format!("state_bins[{i}].bins"))?;
    u32::try_from(n).map_err(|_| {
        value_error(Error::field(
            format!("state_bins[{i}].bins"),
            format!("must be in 1..={}, got {n}", qlearn_core::limits::MAX_BINS),
        ))
    })
}

fn bins_to_py<'py>(py: Python<'py>, bins: &Option<Vec<Bin>>) -> PyResult<Bound<'py, PyAny>> {
    match bins {
        None => Ok(py.None().into_bound(py)),
        Some(b) => {
            let list = PyList::empty(py);
            for x in b {
                let d = PyDict::new(py);
                d.set_item("low", x.low)?;
                d.set_item("high", x.high)?;
                d.set_item("bins", x.bins)?;
                list.append(d)?;
            }
            Ok(list.into_any())
        }
    }
}

/// Largest integer magnitude an f64 holds exactly (2^53).
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// A stored state as Python sees it: an int, a str, or a tuple of numbers
/// with integral values as ints, the form of the server's JSON (the core's
/// `State` serializer prints `[1, 2]` for `[1.0, 2.0]`), so local and remote
/// tables compare equal.
fn state_to_py<'py>(py: Python<'py>, state: StateRef<'_>) -> PyResult<Bound<'py, PyAny>> {
    match state {
        StateRef::Int(i) => i.into_bound_py_any(py),
        StateRef::Str(s) => s.into_bound_py_any(py),
        StateRef::Array(a) => {
            let items = a
                .iter()
                .map(|&x| {
                    if x.fract() == 0.0 && x.abs() < EXACT_INT {
                        (x as i64).into_bound_py_any(py)
                    } else {
                        x.into_bound_py_any(py)
                    }
                })
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyTuple::new(py, items)?.into_any())
        }
    }
}

/// Prefixes a predict_many error with the index of the offending state.
fn at_state(i: usize, e: Error) -> Error {
    match e {
        Error::InvalidState(m) => Error::InvalidState(format!("states[{i}]: {m}")),
        other => other,
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
                        .map(|(i, x)| bin(x, i))
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
        let mask = match allowed_actions {
            Some(a) if !a.is_none() => {
                Some(convert::allowed(a, self.n_actions, "allowed_actions")?)
            }
            _ => None,
        };
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
        let mask = match next_allowed_actions {
            Some(a) if !a.is_none() => Some(convert::allowed(a, n, "next_allowed_actions")?),
            _ => None,
        };
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

    /// Chooses an action for each state of a batch, with the GIL released.
    ///
    /// Args:
    ///     states: a 1-d integer numpy array (integer states), a 2-d numeric
    ///         array (one array state per row), or a list of states.
    ///     explore: whether to explore.
    ///
    /// Returns:
    ///     A numpy int64 array of actions.
    ///
    /// Raises:
    ///     ValueError: a state is invalid (the message gives its index);
    ///         nothing is counted then.
    #[pyo3(signature = (states, explore=true), text_signature = "($self, states, explore=True)")]
    fn predict_many<'py>(
        &self,
        py: Python<'py>,
        states: &Bound<'py, PyAny>,
        explore: bool,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let batch = convert::batch(states, "states")?;
        let actions = py
            .detach(|| -> Result<Vec<i64>, Error> {
                let mut m = self.lock_detached()?;
                for (i, s) in batch.iter().enumerate() {
                    m.validate_predict(s, None).map_err(|e| at_state(i, e))?;
                }
                let mut out = Vec::with_capacity(batch.len());
                for s in batch.iter() {
                    out.push(m.predict(s, explore, None)?.action as i64);
                }
                Ok(out)
            })
            .map_err(to_py)?;
        Ok(PyArray1::from_vec(py, actions))
    }

    /// Learns from a batch of transitions in one call, with the GIL released.
    /// Applied in order, exactly as the same calls to update() would be.
    /// Every transition is validated first: on error nothing is applied.
    ///
    /// Args:
    ///     states: a 1-d integer numpy array, a 2-d numeric array (one array
    ///         state per row) or a list of states.
    ///     actions: integer array.
    ///     rewards: numeric array.
    ///     next_states: like states.
    ///     dones: bool (or 0/1 integer) array.
    ///     truncateds: optional bool array (default all False).
    ///     next_actions: optional integer array (needed by sarsa).
    ///
    /// Returns:
    ///     A numpy float64 array of the TD errors.
    ///
    /// Raises:
    ///     ValueError: lengths differ, or a transition is invalid (the
    ///         message names experiences[i]).
    ///     TypeError: an argument is not array-like of the right kind.
    #[pyo3(
        signature = (states, actions, rewards, next_states, dones, truncateds=None, next_actions=None),
        text_signature = "($self, states, actions, rewards, next_states, dones, truncateds=None, \
                          next_actions=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn update_many<'py>(
        &self,
        py: Python<'py>,
        states: &Bound<'py, PyAny>,
        actions: &Bound<'py, PyAny>,
        rewards: &Bound<'py, PyAny>,
        next_states: &Bound<'py, PyAny>,
        dones: &Bound<'py, PyAny>,
        truncateds: Option<&Bound<'py, PyAny>>,
        next_actions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let n_actions = self.n_actions;
        let states: Batch = convert::batch(states, "states")?;
        let n = states.len();
        let check = |what: &str, len: usize| -> PyResult<()> {
            if len == n {
                Ok(())
            } else {
                Err(value_error(Error::field(
                    what,
                    format!("has {len} entries but states has {n}"),
                )))
            }
        };
        let to_actions = |v: Vec<i64>, what: &str| -> PyResult<Vec<usize>> {
            // Only the error path formats: the loop stays a compare per item.
            if let Some((i, &a)) = v.iter().enumerate().find(|&(_, &a)| a < 0) {
                return Err(value_error(Error::InvalidAction(format!(
                    "{what}[{i}]: action {a} is outside 0..{n_actions}"
                ))));
            }
            Ok(v.into_iter().map(|a| a as usize).collect())
        };
        let actions = to_actions(convert::int_batch(actions, "actions")?, "actions")?;
        check("actions", actions.len())?;
        let rewards = convert::float_batch(rewards, "rewards")?;
        check("rewards", rewards.len())?;
        let next_states = convert::batch(next_states, "next_states")?;
        check("next_states", next_states.len())?;
        let dones = convert::bool_batch(dones, "dones")?;
        check("dones", dones.len())?;
        let truncateds = match truncateds {
            Some(t) if !t.is_none() => {
                let t = convert::bool_batch(t, "truncateds")?;
                check("truncateds", t.len())?;
                Some(t)
            }
            _ => None,
        };
        let next_actions = match next_actions {
            Some(a) if !a.is_none() => {
                let a = to_actions(convert::int_batch(a, "next_actions")?, "next_actions")?;
                check("next_actions", a.len())?;
                Some(a)
            }
            _ => None,
        };
        // One pass over the columns, zipped (no per-item bounds checks);
        // every column has n entries (checked above).
        let experiences = || {
            let truncated = truncateds.as_deref().unwrap_or(&[]).iter().copied();
            let next_action = next_actions
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .map(|&a| Some(a));
            states
                .iter()
                .zip(&actions)
                .zip(&rewards)
                .zip(next_states.iter())
                .zip(&dones)
                .zip(truncated.chain(std::iter::repeat(false)))
                .zip(next_action.chain(std::iter::repeat(None)))
                .map(
                    |(
                        (((((state, &action), &reward), next_state), &done), truncated),
                        next_action,
                    )| {
                        Experience {
                            state,
                            action,
                            reward,
                            next_state,
                            done,
                            truncated,
                            next_action,
                            next_allowed_actions: None,
                        }
                    },
                )
        };
        let td = py
            .detach(|| -> Result<Vec<f64>, Error> {
                let mut m = self.lock_detached()?;
                let mut td = Vec::with_capacity(n);
                // A bad item must apply nothing. When the batch is large next
                // to the table, a copy of the model to fall back on costs less
                // than a validation pass over the batch (~20 ns an item);
                // otherwise everything is validated before anything applies.
                if m.len().saturating_mul(2) <= n {
                    let backup = m.clone();
                    for (i, e) in experiences().enumerate() {
                        match m.update(&e) {
                            Ok(o) => td.push(o.td_error),
                            Err(err) => {
                                *m = backup;
                                return Err(at_index(i, err));
                            }
                        }
                    }
                } else {
                    for (i, e) in experiences().enumerate() {
                        m.validate(&e).map_err(|err| at_index(i, err))?;
                    }
                    for (i, e) in experiences().enumerate() {
                        td.push(m.update(&e).map_err(|err| at_index(i, err))?.td_error);
                    }
                }
                Ok(td)
            })
            .map_err(to_py)?;
        Ok(PyArray1::from_vec(py, td))
    }

    /// The current exploration rate, in [0, 1]. Settable; decays by
    /// epsilon_decay at each episode end, down to min_epsilon.
    #[getter]
    fn epsilon(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.lock(py)?.epsilon())
    }

    #[setter]
    fn set_epsilon(&self, py: Python<'_>, value: f64) -> PyResult<()> {
        self.lock(py)?.set_epsilon(value).map_err(to_py)
    }

    /// Number of discrete actions (fixed for the model's life).
    #[getter]
    fn n_actions(&self) -> usize {
        self.n_actions
    }

    /// Learning rate alpha in (0, 1]. Settable.
    #[getter]
    fn learning_rate(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.lock(py)?.config().learning_rate)
    }

    #[setter]
    fn set_learning_rate(&self, py: Python<'_>, value: f64) -> PyResult<()> {
        self.reconfigure(py, |c| c.learning_rate = value)
    }

    /// Discount factor gamma in [0, 1]. Settable.
    #[getter]
    fn discount_factor(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.lock(py)?.config().discount_factor)
    }

    #[setter]
    fn set_discount_factor(&self, py: Python<'_>, value: f64) -> PyResult<()> {
        self.reconfigure(py, |c| c.discount_factor = value)
    }

    /// Factor applied to epsilon at each episode end, in (0, 1]. Settable.
    #[getter]
    fn epsilon_decay(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.lock(py)?.config().epsilon_decay)
    }

    #[setter]
    fn set_epsilon_decay(&self, py: Python<'_>, value: f64) -> PyResult<()> {
        self.reconfigure(py, |c| c.epsilon_decay = value)
    }

    /// Floor of the decayed epsilon, in [0, 1]. Settable.
    #[getter]
    fn min_epsilon(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.lock(py)?.config().min_epsilon)
    }

    #[setter]
    fn set_min_epsilon(&self, py: Python<'_>, value: f64) -> PyResult<()> {
        self.reconfigure(py, |c| c.min_epsilon = value)
    }

    /// Q-value of unseen state-action pairs. Settable (affects states not
    /// stored yet).
    #[getter]
    fn initial_q(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.lock(py)?.config().initial_q)
    }

    #[setter]
    fn set_initial_q(&self, py: Python<'_>, value: f64) -> PyResult<()> {
        self.reconfigure(py, |c| c.initial_q = value)
    }

    /// The learning rule: "q_learning", "sarsa", "expected_sarsa" or
    /// "double_q_learning". Settable (switching to or from double Q-learning
    /// reshapes the table: copies or averages the two tables).
    #[getter]
    fn algorithm(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(self.lock(py)?.config().algorithm.as_str())
    }

    #[setter]
    fn set_algorithm(&self, py: Python<'_>, value: &str) -> PyResult<()> {
        let algorithm = value.parse().map_err(to_py)?;
        self.reconfigure(py, |c| c.algorithm = algorithm)
    }

    /// The exploration strategy: "epsilon_greedy" or "softmax". Settable.
    #[getter]
    fn exploration(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(self.lock(py)?.config().exploration.as_str())
    }

    #[setter]
    fn set_exploration(&self, py: Python<'_>, value: &str) -> PyResult<()> {
        let exploration = value.parse().map_err(to_py)?;
        self.reconfigure(py, |c| c.exploration = exploration)
    }

    /// Softmax temperature (> 0). Settable.
    #[getter]
    fn temperature(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.lock(py)?.config().temperature)
    }

    #[setter]
    fn set_temperature(&self, py: Python<'_>, value: f64) -> PyResult<()> {
        self.reconfigure(py, |c| c.temperature = value)
    }

    /// The seed given at construction (None: seeded from the OS). Read-only.
    #[getter]
    fn seed(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        Ok(self.lock(py)?.config().seed)
    }

    /// The action names (None when the actions are unnamed). Settable
    /// (unique, one per action) or None.
    #[getter]
    fn action_names(&self, py: Python<'_>) -> PyResult<Option<Vec<String>>> {
        Ok(self.lock(py)?.config().action_names.clone())
    }

    #[setter]
    fn set_action_names(&self, py: Python<'_>, value: Option<Vec<String>>) -> PyResult<()> {
        self.reconfigure(py, |c| c.action_names = value)
    }

    /// The discretization of array states as a list of {"low", "high",
    /// "bins"} dicts, or None. Read-only (it defines the table's keys).
    #[getter]
    fn state_bins<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let bins = self.lock(py)?.config().state_bins.clone();
        bins_to_py(py, &bins)
    }

    /// Every constructor argument as a dict: QLearner(**agent.config) builds
    /// an untrained agent with the same configuration.
    #[getter(config)]
    fn config_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.config(py)?;
        let d = PyDict::new(py);
        d.set_item("n_actions", c.n_actions)?;
        d.set_item("learning_rate", c.learning_rate)?;
        d.set_item("discount_factor", c.discount_factor)?;
        d.set_item("epsilon", c.epsilon)?;
        d.set_item("epsilon_decay", c.epsilon_decay)?;
        d.set_item("min_epsilon", c.min_epsilon)?;
        d.set_item("initial_q", c.initial_q)?;
        d.set_item("algorithm", c.algorithm.as_str())?;
        d.set_item("seed", c.seed)?;
        d.set_item("exploration", c.exploration.as_str())?;
        d.set_item("temperature", c.temperature)?;
        d.set_item("action_names", c.action_names.clone())?;
        d.set_item("state_bins", bins_to_py(py, &c.state_bins)?)?;
        Ok(d)
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

    /// Every stored state with its Q-values, in the order the states were
    /// first seen: a list of `(state, q_values)` pairs (the mean of both
    /// tables for double Q-learning). A state reads back in the form the
    /// server's JSON gives it: an int, a str, or a tuple of numbers whose
    /// integral values are ints (`(1, 2)`, `(0.5, 3)`); with state_bins, the
    /// tuple of bin indices. A snapshot: later updates do not change it.
    ///
    /// Returns:
    ///     list[tuple[state, list[float]]].
    #[pyo3(text_signature = "($self)")]
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = self.table_rows(py)?;
        let list = PyList::empty(py);
        for (key, q) in rows {
            list.append((state_to_py(py, key.as_ref())?, q))?;
        }
        Ok(list)
    }

    /// Iterates over items(): `for state, q_values in agent`.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        self.items(py)?.try_iter()
    }

    /// The greedy action of every stored state (the lowest index among
    /// equal best Q-values), as a dict state -> action.
    ///
    /// Returns:
    ///     dict[state, int].
    #[pyo3(text_signature = "($self)")]
    fn greedy_policy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.per_state(py, |q| {
            q.iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |best, (a, &v)| {
                    if v > best.1 {
                        (a, v)
                    } else {
                        best
                    }
                })
                .0
        })
    }

    /// The value max_a Q(s, a) of every stored state, as a dict state -> float.
    ///
    /// Returns:
    ///     dict[state, float].
    #[pyo3(text_signature = "($self)")]
    fn state_values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.per_state(py, |q| q.iter().copied().fold(f64::NEG_INFINITY, f64::max))
    }

    /// The Q-table as arrays for analysis: the stored states (as in items())
    /// and a float64 matrix with one row per state and one column per
    /// action.
    ///
    /// Returns:
    ///     (list of states, numpy array of shape (len(agent), n_actions)).
    #[pyo3(text_signature = "($self)")]
    fn to_numpy<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyArray2<f64>>)> {
        let rows = self.table_rows(py)?;
        let states = PyList::empty(py);
        let mut flat = Vec::with_capacity(rows.len() * self.n_actions);
        for (key, q) in &rows {
            states.append(state_to_py(py, key.as_ref())?)?;
            flat.extend_from_slice(q);
        }
        let matrix = PyArray1::from_vec(py, flat).reshape([rows.len(), self.n_actions])?;
        Ok((states, matrix))
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

    /// The model in qlearn's binary format: the bytes the server's
    /// GET /models/{id}/export returns and POST /models/import takes.
    /// Includes the hyperparameters, epsilon, counters and the random
    /// generator's state, so a reloaded model continues exactly.
    ///
    /// Returns:
    ///     bytes.
    #[pyo3(text_signature = "($self)")]
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.bytes(py)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Rebuilds a model from to_bytes() output (or a server export).
    ///
    /// Args:
    ///     data: bytes, bytearray or memoryview.
    ///
    /// Raises:
    ///     ValueError: the data is not a qlearn model (truncated, corrupted
    ///         or from a newer format version).
    #[classmethod]
    #[pyo3(text_signature = "($cls, data)")]
    fn from_bytes(_cls: &Bound<'_, PyType>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = data.py();
        let bytes = read_bytes(data)?;
        decode(py, &bytes)
    }

    /// Writes the model to `path` in the binary format (atomically: a
    /// temporary file in the same folder, then a rename).
    ///
    /// Args:
    ///     path: str or os.PathLike.
    ///
    /// Raises:
    ///     OSError: the file cannot be written.
    #[pyo3(text_signature = "($self, path)")]
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let bytes = self.bytes(py)?;
        py.detach(|| -> std::io::Result<()> {
            let mut tmp = path.clone().into_os_string();
            tmp.push(format!(".tmp-{}", std::process::id()));
            let tmp = PathBuf::from(tmp);
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        })?;
        Ok(())
    }

    /// Reads a model written by save() (or a server export saved to a file).
    ///
    /// Args:
    ///     path: str or os.PathLike.
    ///
    /// Raises:
    ///     OSError: the file cannot be read.
    ///     ValueError: the file is not a qlearn model.
    #[classmethod]
    #[pyo3(text_signature = "($cls, path)")]
    fn load(cls: &Bound<'_, PyType>, path: PathBuf) -> PyResult<Self> {
        let py = cls.py();
        let bytes = py.detach(|| std::fs::read(&path))?;
        decode(py, &bytes)
    }

    /// The JSON export: configuration, epsilon, counters, generator state
    /// and every Q-table row with its state as it was given.
    ///
    /// Returns:
    ///     str.
    #[pyo3(text_signature = "($self)")]
    fn to_json(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.lock_detached()?.to_json()).map_err(to_py)
    }

    /// Rebuilds a model from to_json() output.
    ///
    /// Raises:
    ///     ValueError: the text is not a qlearn JSON export.
    #[classmethod]
    #[pyo3(text_signature = "($cls, text)")]
    fn from_json(cls: &Bound<'_, PyType>, text: &str) -> PyResult<Self> {
        cls.py()
            .detach(|| Model::from_json(text))
            .map(QLearner::wrap)
            .map_err(to_py)
    }

    /// Pickle support: a QLearner pickles as its to_bytes().
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let py = slf.py();
        let ctor = slf.get_type().getattr("from_bytes")?;
        let bytes = slf.get().to_bytes(py)?;
        Ok((ctor, (bytes,)))
    }

    /// An independent copy (same table, epsilon, counters and random state).
    fn __copy__(&self, py: Python<'_>) -> PyResult<Self> {
        let model = self.lock(py)?.clone();
        Ok(QLearner::wrap(model))
    }

    /// An independent copy (same table, epsilon, counters and random state).
    #[pyo3(signature = (memo=None))]
    fn __deepcopy__(&self, py: Python<'_>, memo: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let _ = memo;
        self.__copy__(py)
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
