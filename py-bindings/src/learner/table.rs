//! Views of the Q-table of `qlearn.QLearner`: `items` (and iteration),
//! `greedy_policy`, `state_values` and `to_numpy`. The rows are copied out
//! under the lock and turned into Python objects after it is released;
//! states read back in the form of the server's JSON.

use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyIterator, PyList, PyTuple};
use pyo3::IntoPyObjectExt;
use qlearn_core::{StateKey, StateRef};

use super::QLearner;

impl QLearner {
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

#[pymethods]
impl QLearner {
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
}
