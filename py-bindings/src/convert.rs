//! Python values to engine inputs: states, action lists and numpy batches.
//!
//! This module owns the mapping from Python objects to the engine's
//! [`StateRef`]s. A state is
//!
//! * an `int` (also `bool`, numpy integer and bool scalars, anything with
//!   `__index__`) — an integer state;
//! * a `str` (also `numpy.str_`) — a string state;
//! * a `list` or `tuple` of numbers, or a 1-D numpy array of any integer,
//!   bool or float dtype — an array state. `[1, 2]`, `(1, 2)`,
//!   `np.array([1, 2])` and `[1.0, 2.0]` are the same state (the engine keys
//!   arrays by their float values).
//!
//! `bool` is treated as the integer it is in Python (`True == 1`), both as a
//! scalar state and inside arrays. A `float` on its own is not a state (the
//! engine has no scalar float states; wrap it in a list), so it raises
//! `TypeError`, as does every other type.
//!
//! Single states never allocate: ints and strings are borrowed as they are,
//! array states are copied into a 64-slot stack buffer ([`ArrayBuf`]). Batch
//! inputs ([`Batch`], [`int_batch`], ...) are copied once into Rust vectors
//! (a `memcpy` for contiguous arrays of the right dtype), so that the batch
//! loop can run with the GIL released without any Python object being
//! touched, or mutated under it, meanwhile.

use std::mem::MaybeUninit;

use numpy::{
    PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use qlearn_core::limits::{MAX_REWARD, MAX_STATE_DIMS};
use qlearn_core::{Error, State, StateRef};

use crate::error::{type_error, value_error};

/// A stack buffer for one array state: up to [`MAX_STATE_DIMS`] values,
/// never zero-filled (only the written prefix is ever read).
pub(crate) struct ArrayBuf {
    data: [MaybeUninit<f64>; MAX_STATE_DIMS],
    len: usize,
}

impl ArrayBuf {
    /// An empty buffer.
    #[inline]
    pub(crate) fn new() -> Self {
        ArrayBuf {
            data: [const { MaybeUninit::uninit() }; MAX_STATE_DIMS],
            len: 0,
        }
    }

    /// Appends `x`; `false` when the buffer is full.
    #[inline]
    fn push(&mut self, x: f64) -> bool {
        match self.data.get_mut(self.len) {
            Some(slot) => {
                slot.write(x);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The values written so far.
    #[inline]
    fn as_slice(&self) -> &[f64] {
        // SAFETY: the first `len` slots were written by `push` (and `len`
        // never exceeds the array's length); `MaybeUninit<f64>` has the
        // layout of `f64`.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().cast::<f64>(), self.len) }
    }
}

/// The engine's message for an array of the wrong length.
fn bad_len(what: &str, n: usize) -> PyErr {
    value_error(Error::state(
        what,
        format!("{what}: an array state must have 1 to {MAX_STATE_DIMS} numbers, got {n}"),
    ))
}

/// The name of `obj`'s type, for error messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn numpy_generic(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static GENERIC: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    GENERIC.import(py, "numpy", "generic")
}

fn numpy_fn<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("numpy")?.getattr(name)?.unbind())
    })
    .map(|f| f.bind(py))
}

/// `numpy.ascontiguousarray(obj, dtype=dtype)`.
fn contiguous<'py>(obj: &Bound<'py, PyAny>, dtype: &str) -> PyResult<Bound<'py, PyAny>> {
    static F: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = obj.py();
    numpy_fn(py, &F, "ascontiguousarray")?.call1((obj, dtype))
}

/// `numpy.asarray(obj)`.
fn asarray<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    static F: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = obj.py();
    numpy_fn(py, &F, "asarray")?.call1((obj,))
}

/// An integer out of the 64-bit range, as a `ValueError` naming `what`.
fn int_range(what: &str) -> PyErr {
    value_error(Error::state(
        what,
        format!("{what}: integer states must fit in a signed 64-bit integer"),
    ))
}

/// One number inside an array state.
#[inline]
fn element(item: &Bound<'_, PyAny>, what: &str, i: usize) -> PyResult<f64> {
    if let Ok(f) = item.cast_exact::<PyFloat>() {
        return Ok(f.value());
    }
    if let Ok(n) = item.cast_exact::<PyInt>() {
        if let Ok(v) = n.extract::<i64>() {
            return Ok(v as f64);
        }
    }
    if item.is_instance_of::<PyString>()
        || item.is_instance_of::<PyList>()
        || item.is_instance_of::<PyTuple>()
        || item.is_instance_of::<PyUntypedArray>()
    {
        return Err(type_error(format!(
            "{what}: element {i} of an array state must be a number, got {}",
            type_name(item)
        )));
    }
    item.extract::<f64>().map_err(|_| {
        type_error(format!(
            "{what}: element {i} of an array state must be a number, got {}",
            type_name(item)
        ))
    })
}

/// Converts `obj` to a state, borrowing strings and writing array states
/// into `buf`. `what` names the argument in error messages.
#[inline]
pub(crate) fn state<'a>(
    obj: &'a Bound<'_, PyAny>,
    buf: &'a mut ArrayBuf,
    what: &str,
) -> PyResult<StateRef<'a>> {
    // The hot path: a plain int.
    if let Ok(n) = obj.cast_exact::<PyInt>() {
        return n
            .extract::<i64>()
            .map(StateRef::Int)
            .map_err(|_| int_range(what));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_str().map(StateRef::Str);
    }
    if let Ok(l) = obj.cast_exact::<PyList>() {
        let n = l.len();
        if n == 0 || n > MAX_STATE_DIMS {
            return Err(bad_len(what, n));
        }
        for (i, item) in l.iter().enumerate() {
            let x = element(&item, what, i)?;
            if !buf.push(x) {
                return Err(bad_len(what, l.len()));
            }
        }
        return Ok(StateRef::Array(buf.as_slice()));
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        let n = t.len();
        if n == 0 || n > MAX_STATE_DIMS {
            return Err(bad_len(what, n));
        }
        for (i, item) in t.iter().enumerate() {
            buf.push(element(&item, what, i)?);
        }
        return Ok(StateRef::Array(buf.as_slice()));
    }
    if let Ok(n) = obj.cast::<PyInt>() {
        // bool and int subclasses (IntEnum, ...).
        return n
            .extract::<i64>()
            .map(StateRef::Int)
            .map_err(|_| int_range(what));
    }
    if obj.is_instance_of::<PyFloat>() {
        return Err(type_error(format!(
            "{what}: a float is not a state (the engine has no scalar float states); \
             pass an int, or a list such as [x] for continuous values"
        )));
    }
    if let Ok(arr) = obj.cast::<PyUntypedArray>() {
        return array_state(arr, buf, what);
    }
    let py = obj.py();
    if obj.is_instance(numpy_generic(py)?)? {
        // A numpy scalar (np.int64, np.bool_, ...): its Python value is a state.
        let item = obj.call_method0("item")?;
        if item.is_instance_of::<PyInt>() {
            return item
                .extract::<i64>()
                .map(StateRef::Int)
                .map_err(|_| int_range(what));
        }
        return Err(type_error(format!(
            "{what}: a numpy {} scalar is not a state; pass an integer, a string or an array",
            type_name(obj)
        )));
    }
    if let Ok(i) = obj.extract::<i64>() {
        // Anything else with __index__.
        if !obj.is_instance_of::<PyBool>() {
            return Ok(StateRef::Int(i));
        }
    }
    Err(type_error(format!(
        "{what} must be an int, a str, a list or tuple of numbers, or a numpy array; got {}",
        type_name(obj)
    )))
}

/// A numpy array as one state: 0-d arrays are scalars, 1-d arrays of
/// numbers are array states.
fn array_state<'a>(
    arr: &'a Bound<'_, PyUntypedArray>,
    buf: &'a mut ArrayBuf,
    what: &str,
) -> PyResult<StateRef<'a>> {
    let kind = arr.dtype().kind();
    match arr.ndim() {
        0 => {
            let item = arr.call_method0("item")?;
            if item.is_instance_of::<PyInt>() {
                item.extract::<i64>()
                    .map(StateRef::Int)
                    .map_err(|_| int_range(what))
            } else {
                Err(type_error(format!(
                    "{what}: a 0-d array of dtype {} is not a state; pass an integer, a string or a 1-d array",
                    arr.dtype()
                )))
            }
        }
        1 if matches!(kind, b'f' | b'i' | b'u' | b'b') => {
            let n = arr.len();
            if n == 0 || n > MAX_STATE_DIMS {
                return Err(bad_len(what, n));
            }
            let values = if let Ok(a) = arr.cast::<PyArray1<f64>>() {
                a.clone()
            } else {
                contiguous(arr, "float64")?.cast_into::<PyArray1<f64>>()?
            };
            let ro = values
                .try_readonly()
                .map_err(|e| type_error(format!("{what}: the array is being written: {e}")))?;
            for &x in ro.as_array().iter() {
                if !buf.push(x) {
                    return Err(bad_len(what, n));
                }
            }
            Ok(StateRef::Array(buf.as_slice()))
        }
        1 => Err(type_error(format!(
            "{what}: an array state must hold numbers, got dtype {}",
            arr.dtype()
        ))),
        d => Err(type_error(format!(
            "{what}: an array state must be 1-dimensional, got a {d}-d array"
        ))),
    }
}

/// An owned copy of a state (for batches given as Python lists).
fn owned_state(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<State> {
    let mut buf = ArrayBuf::new();
    Ok(match state(obj, &mut buf, what)? {
        StateRef::Int(i) => State::Int(i),
        StateRef::Str(s) => State::Str(s.to_owned()),
        StateRef::Array(a) => State::Array(a.to_vec()),
    })
}

/// A batch of states, owned by Rust so that it can be read with the GIL
/// released.
pub(crate) enum Batch {
    /// Integer states (from a 1-d integer or bool array).
    Ints(Vec<i64>),
    /// Array states: `n` rows of `dim` values (from a 2-d numeric array).
    Rows {
        /// All values, row after row.
        data: Vec<f64>,
        /// Values per row.
        dim: usize,
        /// Number of rows.
        n: usize,
    },
    /// Anything else (lists of strings, of mixed states, object arrays).
    Owned(Vec<State>),
}

impl Batch {
    /// Number of states.
    pub(crate) fn len(&self) -> usize {
        match self {
            Batch::Ints(v) => v.len(),
            Batch::Rows { n, .. } => *n,
            Batch::Owned(v) => v.len(),
        }
    }

    /// The states in order.
    pub(crate) fn iter(&self) -> BatchIter<'_> {
        match self {
            Batch::Ints(v) => BatchIter::Ints(v.iter()),
            Batch::Rows { data, dim, n } => BatchIter::Rows {
                data,
                dim: *dim,
                left: *n,
            },
            Batch::Owned(v) => BatchIter::Owned(v.iter()),
        }
    }
}

/// Iterator over a [`Batch`]'s states.
pub(crate) enum BatchIter<'a> {
    Ints(std::slice::Iter<'a, i64>),
    Rows {
        data: &'a [f64],
        dim: usize,
        left: usize,
    },
    Owned(std::slice::Iter<'a, State>),
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = StateRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<StateRef<'a>> {
        match self {
            BatchIter::Ints(it) => it.next().map(|&x| StateRef::Int(x)),
            BatchIter::Rows { data, dim, left } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                // `dim` may be 0 (an (n, 0) array): every row is then the
                // empty array, which the engine refuses with its message.
                let (row, rest) = data.split_at_checked(*dim).unwrap_or((&[], &[]));
                *data = rest;
                Some(StateRef::Array(row))
            }
            BatchIter::Owned(it) => it.next().map(State::as_ref),
        }
    }
}

/// Converts a batch of states: a 1-d integer (or bool) numpy array of
/// integer states, a 2-d numeric array with one array state per row, a
/// 1-d object or string array, or a list/tuple of states.
pub(crate) fn batch(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Batch> {
    if let Ok(arr) = obj.cast::<PyUntypedArray>() {
        return array_batch(arr, what);
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return l
            .iter()
            .map(|s| owned_state(&s, what))
            .collect::<PyResult<Vec<_>>>()
            .map(Batch::Owned);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return t
            .iter()
            .map(|s| owned_state(&s, what))
            .collect::<PyResult<Vec<_>>>()
            .map(Batch::Owned);
    }
    if obj.hasattr("__array__")? {
        let arr = asarray(obj)?;
        if let Ok(arr) = arr.cast::<PyUntypedArray>() {
            return array_batch(arr, what);
        }
    }
    Err(type_error(format!(
        "{what} must be a numpy array or a list of states, got {}",
        type_name(obj)
    )))
}

fn array_batch(arr: &Bound<'_, PyUntypedArray>, what: &str) -> PyResult<Batch> {
    let kind = arr.dtype().kind();
    match (arr.ndim(), kind) {
        (1, b'i' | b'u' | b'b') => Ok(Batch::Ints(ints_from_array(arr, what)?)),
        (1, b'f' | b'c') => Err(type_error(format!(
            "{what}: a 1-d float array is not a batch of states (the engine has no scalar \
             float states); pass integers, or a 2-d array with one array state per row"
        ))),
        (1, _) => arr
            .try_iter()?
            .map(|s| owned_state(&s?, what))
            .collect::<PyResult<Vec<_>>>()
            .map(Batch::Owned),
        (2, b'f' | b'i' | b'u' | b'b') => {
            let &[n, dim] = arr.shape() else {
                return Err(type_error(format!("{what}: expected a 2-d array")));
            };
            let a = contiguous(arr, "float64")?.cast_into::<PyArray2<f64>>()?;
            let data = a.to_vec().map_err(|e| type_error(format!("{what}: {e}")))?;
            Ok(Batch::Rows { data, dim, n })
        }
        (2, _) => Err(type_error(format!(
            "{what}: a 2-d array of states must hold numbers, got dtype {}",
            arr.dtype()
        ))),
        (d, _) => Err(type_error(format!(
            "{what} must be a 1-d array of integer states or a 2-d array of array states, \
             got a {d}-d array"
        ))),
    }
}

/// A 1-d integer/bool array as `i64`s (refusing uint64 values past i64::MAX).
fn ints_from_array(arr: &Bound<'_, PyUntypedArray>, what: &str) -> PyResult<Vec<i64>> {
    let dtype = arr.dtype();
    if dtype.kind() == b'u' && dtype.itemsize() == 8 {
        let a = contiguous(arr, "uint64")?.cast_into::<PyArray1<u64>>()?;
        let v = a.to_vec().map_err(|e| type_error(format!("{what}: {e}")))?;
        return v
            .into_iter()
            .map(|x| {
                i64::try_from(x).map_err(|_| {
                    value_error(Error::field(
                        what,
                        format!("{x} does not fit in a signed 64-bit integer"),
                    ))
                })
            })
            .collect();
    }
    let a = if let Ok(a) = arr.cast::<PyArray1<i64>>() {
        if a.is_contiguous() {
            a.clone()
        } else {
            contiguous(arr, "int64")?.cast_into::<PyArray1<i64>>()?
        }
    } else {
        contiguous(arr, "int64")?.cast_into::<PyArray1<i64>>()?
    };
    a.to_vec().map_err(|e| type_error(format!("{what}: {e}")))
}

/// A 1-d array of integers (actions): numpy integer/bool arrays or any
/// sequence numpy turns into one. Floats are refused rather than truncated.
pub(crate) fn int_batch(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<i64>> {
    let arr = as_1d(obj, what)?;
    if arr.is_empty() {
        return Ok(Vec::new());
    }
    match arr.dtype().kind() {
        b'i' | b'u' | b'b' => ints_from_array(&arr, what),
        _ => Err(type_error(format!(
            "{what} must be integers, got dtype {}",
            arr.dtype()
        ))),
    }
}

/// A 1-d array of floats (rewards): any numeric dtype.
pub(crate) fn float_batch(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f64>> {
    let arr = as_1d(obj, what)?;
    if arr.is_empty() {
        return Ok(Vec::new());
    }
    match arr.dtype().kind() {
        b'f' | b'i' | b'u' | b'b' => {
            let a = contiguous(&arr, "float64")?.cast_into::<PyArray1<f64>>()?;
            a.to_vec().map_err(|e| type_error(format!("{what}: {e}")))
        }
        _ => Err(type_error(format!(
            "{what} must be numbers, got dtype {}",
            arr.dtype()
        ))),
    }
}

/// A 1-d array of flags (dones): bool or integer dtype, nonzero = true.
pub(crate) fn bool_batch(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<bool>> {
    let arr = as_1d(obj, what)?;
    if arr.is_empty() {
        return Ok(Vec::new());
    }
    match arr.dtype().kind() {
        b'b' | b'i' | b'u' => {
            let a = contiguous(&arr, "bool")?.cast_into::<PyArray1<bool>>()?;
            a.to_vec().map_err(|e| type_error(format!("{what}: {e}")))
        }
        _ => Err(type_error(format!(
            "{what} must be booleans (or 0/1 integers), got dtype {}",
            arr.dtype()
        ))),
    }
}

/// `obj` as a 1-d numpy array (converting lists with `numpy.asarray`).
fn as_1d<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyUntypedArray>> {
    let arr = match obj.cast::<PyUntypedArray>() {
        Ok(a) => a.clone(),
        Err(_) => asarray(obj)
            .map_err(|e| type_error(format!("{what}: cannot be read as an array: {e}")))?
            .cast_into::<PyUntypedArray>()?,
    };
    if arr.ndim() != 1 {
        return Err(type_error(format!(
            "{what} must be 1-dimensional, got {} dimensions",
            arr.ndim()
        )));
    }
    Ok(arr)
}

/// An integer argument (`int`, numpy integer, anything with `__index__`):
/// one too large for 64 bits is a `ValueError` (not an `OverflowError`), a
/// non-integer a `TypeError` naming the argument.
#[inline]
pub(crate) fn int_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    if let Ok(v) = obj.extract::<i64>() {
        return Ok(v);
    }
    if obj.is_instance_of::<PyInt>() || obj.extract::<i128>().is_ok() {
        return Err(value_error(Error::field(
            what,
            "integer out of the 64-bit signed range",
        )));
    }
    Err(type_error(format!(
        "{what} must be an int, got {}",
        type_name(obj)
    )))
}

/// A float argument (`float`, `int`, numpy scalars, anything with
/// `__float__`): an int too large for a float is a `ValueError`.
#[inline]
pub(crate) fn float_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    if let Ok(f) = obj.cast_exact::<PyFloat>() {
        return Ok(f.value());
    }
    if obj.is_instance_of::<PyString>() {
        return Err(type_error(format!("{what} must be a number, got str")));
    }
    match obj.extract::<f64>() {
        Ok(v) => Ok(v),
        Err(_) if obj.is_instance_of::<PyInt>() => Err(value_error(Error::field(
            what,
            format!("must be a finite number of magnitude at most {MAX_REWARD:e}"),
        ))),
        Err(_) => Err(type_error(format!(
            "{what} must be a number, got {}",
            type_name(obj)
        ))),
    }
}

/// An action index: negative values get the engine's out-of-range message.
#[inline]
pub(crate) fn action(a: i64, n_actions: usize, what: &str) -> PyResult<usize> {
    usize::try_from(a).map_err(|_| {
        value_error(Error::action(
            what,
            format!("{what} {a} is outside 0..{n_actions}"),
        ))
    })
}

/// An optional list of allowed actions (`None` or Python `None`: all); see
/// [`allowed`].
pub(crate) fn opt_allowed(
    obj: Option<&Bound<'_, PyAny>>,
    n_actions: usize,
    what: &str,
) -> PyResult<Option<Vec<usize>>> {
    match obj {
        Some(a) if !a.is_none() => allowed(a, n_actions, what).map(Some),
        _ => Ok(None),
    }
}

/// A list of allowed actions: a sequence of action indices, or a numpy bool
/// mask of length `n_actions` (Gymnasium's `action_mask` as `mask.astype(bool)`).
pub(crate) fn allowed(
    obj: &Bound<'_, PyAny>,
    n_actions: usize,
    what: &str,
) -> PyResult<Vec<usize>> {
    if let Ok(arr) = obj.cast::<PyUntypedArray>() {
        if arr.dtype().kind() == b'b' {
            if arr.ndim() != 1 || arr.len() != n_actions {
                return Err(value_error(Error::action(
                    what,
                    format!(
                        "{what}: a boolean mask must have n_actions ({n_actions}) entries, got shape {:?}",
                        arr.shape()
                    ),
                )));
            }
            let a = contiguous(arr, "bool")?.cast_into::<PyArray1<bool>>()?;
            let mask = a.to_vec().map_err(|e| type_error(format!("{what}: {e}")))?;
            return Ok(mask
                .iter()
                .enumerate()
                .filter_map(|(i, &m)| m.then_some(i))
                .collect());
        }
    }
    if obj.is_instance_of::<PyString>() {
        return Err(type_error(format!(
            "{what} must be a sequence of action indices, got str"
        )));
    }
    let ints = int_batch(obj, what)?;
    if n_actions > 2 && ints.len() == n_actions && ints.iter().all(|&a| a == 0 || a == 1) {
        // Gymnasium's action_mask is an int8 array of 0/1: as indices it
        // would list actions 0 and 1 again and again.
        return Err(value_error(Error::action(
            what,
            format!(
                "{what} looks like a 0/1 action mask; pass mask.astype(bool) for a mask, \
                 or the indices of the allowed actions"
            ),
        )));
    }
    ints.into_iter()
        .map(|a| action(a, n_actions, what))
        .collect()
}
