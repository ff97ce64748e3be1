//! Python bindings of qlearn: the extension module `qlearn._qlearn`, which
//! the pure-Python package `qlearn` (python/qlearn) re-exports.
//!
//! A thin layer over `qlearn-core`: [`learner`] wraps the core's `Model` as
//! `qlearn.QLearner`, [`convert`] turns Python values (ints, strs,
//! sequences, numpy arrays) into the engine's states without allocating on
//! the hot path, and [`error`] maps the core's errors to `ValueError` (and
//! wrong types to `TypeError`). No Q-learning logic lives here.

mod convert;
mod error;
mod learner;

use pyo3::prelude::*;

/// qlearn's engine (tabular Q-learning, SARSA, expected SARSA, double
/// Q-learning), compiled from Rust. Use the `qlearn` package, which
/// re-exports QLearner and Stats.
#[pymodule]
fn _qlearn(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<learner::QLearner>()?;
    m.add_class::<learner::Stats>()?;
    m.add_class::<learner::LoggedDecision>()?;
    m.add_class::<learner::RewardOutcome>()?;
    m.add_function(wrap_pyfunction!(learner::evaluate_export, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MAX_ACTIONS", qlearn_core::limits::MAX_ACTIONS)?;
    m.add("MAX_STATE_DIMS", qlearn_core::limits::MAX_STATE_DIMS)?;
    m.add("FORMAT_VERSION", qlearn_core::codec::FORMAT_VERSION)?;
    Ok(())
}
