//! The hyperparameters of `qlearn.QLearner` as Python properties
//! (`epsilon`, `learning_rate`, ..., `action_names`, `state_bins`,
//! `config`), and the conversion of `state_bins` between Python (tuples or
//! dicts) and the core's [`Bin`]. A setter changes the configuration through
//! the engine's `reconfigure`, which validates the new value.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use qlearn_core::{Bin, Error, ModelConfig};

use super::QLearner;
use crate::convert;
use crate::error::{to_py, type_error, value_error};

impl QLearner {
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
}

/// One state_bins entry: a `(low, high, bins)` tuple or a dict.
pub(super) fn bin(obj: &Bound<'_, PyAny>, i: usize) -> PyResult<Bin> {
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

#[pymethods]
impl QLearner {
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
}
