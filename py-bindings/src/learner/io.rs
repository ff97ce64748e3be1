//! Serialization of `qlearn.QLearner`: the core's binary format
//! (`to_bytes`/`from_bytes`, `save`/`load`: the model and, when decisions
//! are on, its decision log, format version 2), its JSON export
//! (`to_json`/`from_json`: the model), pickling (`__reduce__`) and copying.
//! Encoding, decoding and file IO run with the GIL released; the format is
//! the core's (`qlearn_core::codec`).

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyMemoryView, PyType};
use qlearn_core::codec::{decode_with_decisions, encode_with_decisions};
use qlearn_core::Model;

use super::QLearner;
use crate::convert;
use crate::error::{poisoned, to_py, type_error};
use pyo3::sync::MutexExt;

impl QLearner {
    /// The binary format of the model and its decision log (locked in
    /// that order, as every decision call does).
    fn bytes(&self, py: Python<'_>) -> PyResult<Vec<u8>> {
        py.detach(|| {
            let log = self.log.lock().map_err(|_| {
                qlearn_core::Error::Internal(
                    "the decision log's lock was poisoned by an earlier panic".into(),
                )
            })?;
            let model = self.lock_detached()?;
            encode_with_decisions(&model, log.as_ref())
        })
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

/// A QLearner from the binary format, with its decision log if the bytes
/// carry one.
fn decode(py: Python<'_>, data: &[u8]) -> PyResult<QLearner> {
    let (model, log) = py.detach(|| decode_with_decisions(data)).map_err(to_py)?;
    Ok(QLearner::wrap_with(model, log))
}

#[pymethods]
impl QLearner {
    /// The model in qlearn's binary format: the bytes the server's
    /// GET /models/{id}/export returns and POST /models/import takes.
    /// Includes the hyperparameters, epsilon, counters and the random
    /// generator's state, so a reloaded model continues exactly. With
    /// decisions on, also the decision log (setting, pending decisions and
    /// their rewards, episodes, counts) in format version 2, so a
    /// researcher can stop and resume (the server's import reads the model
    /// and leaves the log out).
    ///
    /// Returns:
    ///     bytes.
    #[pyo3(text_signature = "($self)")]
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.bytes(py)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Rebuilds a model from to_bytes() output (or a server export), with
    /// its decision log if the bytes carry one.
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

    /// Writes the model to `path` in the binary format, with its decision
    /// log when decisions are on (see to_bytes()), atomically: a temporary
    /// file in the same folder, then a rename.
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

    /// Reads a model written by save() (or a server export saved to a
    /// file, or a file of an earlier version), with its decision log if the
    /// file carries one.
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

    /// Pickle support: a QLearner pickles as its to_bytes() (the model and
    /// its decision log).
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let py = slf.py();
        let ctor = slf.get_type().getattr("from_bytes")?;
        let bytes = slf.get().to_bytes(py)?;
        Ok((ctor, (bytes,)))
    }

    /// Restores a decision log kept beside the bytes by pickles of earlier
    /// versions (None: decisions off).
    fn __setstate__(&self, py: Python<'_>, state: Option<&str>) -> PyResult<()> {
        let log = state.map(|t| self.decode_log(py, t)).transpose()?;
        *self.log.lock_py_attached(py).map_err(|_| poisoned())? = log;
        Ok(())
    }

    /// An independent copy (same table, epsilon, counters, random state and
    /// decision log).
    fn __copy__(&self, py: Python<'_>) -> PyResult<Self> {
        let log = self.log.lock_py_attached(py).map_err(|_| poisoned())?;
        let model = self.lock(py)?.clone();
        let copy = QLearner::wrap(model);
        *copy.log.lock_py_attached(py).map_err(|_| poisoned())? = log.clone();
        Ok(copy)
    }

    /// An independent copy (same table, epsilon, counters, random state and
    /// decision log).
    #[pyo3(signature = (memo=None))]
    fn __deepcopy__(&self, py: Python<'_>, memo: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let _ = memo;
        self.__copy__(py)
    }
}
