//! Mapping of `qlearn_core::Error` to Python exceptions.
//!
//! Everything the caller can fix (a field out of range, a bad state or
//! action, bytes that are not a model) is a `ValueError` carrying the core's
//! own message; faults that are nobody's input (an internal invariant) are a
//! `RuntimeError`. Wrong Python *types* are `TypeError`s raised where the
//! arguments are extracted (see [`crate::convert`]).

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::PyErr;
use qlearn_core::Error;

/// The Python exception for a core error.
pub(crate) fn to_py(e: Error) -> PyErr {
    match e {
        Error::InvalidField { .. }
        | Error::InvalidState { .. }
        | Error::InvalidAction { .. }
        | Error::Decode(_) => PyValueError::new_err(e.to_string()),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// A `ValueError` built from a core error variant the bindings detect
/// themselves (so messages read exactly like the engine's).
pub(crate) fn value_error(e: Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A `TypeError` with `message`.
pub(crate) fn type_error(message: impl Into<String>) -> PyErr {
    PyTypeError::new_err(message.into())
}

/// The error a poisoned model lock turns into (only after a panic, which
/// the bindings never trigger on purpose).
pub(crate) fn poisoned() -> PyErr {
    PyRuntimeError::new_err("internal error: the model's lock was poisoned by an earlier panic")
}
