//! The batch calls of `qlearn.QLearner`: `predict_many` and `update_many`
//! take whole arrays (or lists) of states and transitions, convert them
//! before locking, and run the engine with the GIL released. Either call
//! checks every item first, so a bad item changes nothing.

use numpy::PyArray1;
use pyo3::prelude::*;
use qlearn_core::model::at_index;
use qlearn_core::{Error, Experience};

use super::QLearner;
use crate::convert::{self, Batch};
use crate::error::{to_py, value_error};

/// Prefixes a predict_many error with the index of the offending state.
fn at_state(i: usize, e: Error) -> Error {
    match e {
        Error::InvalidState { field, message } => Error::InvalidState {
            field: format!("states[{i}].{field}"),
            message: format!("states[{i}]: {message}"),
        },
        other => other,
    }
}

#[pymethods]
impl QLearner {
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
                return Err(value_error(Error::action(
                    format!("{what}[{i}]"),
                    format!("{what}[{i}]: action {a} is outside 0..{n_actions}"),
                )));
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
}
