//! Serialization of `qlearn.QLearner`: the core's binary format
//! (`to_bytes`/`from_bytes`, `save`/`load`), its JSON export
//! (`to_json`/`from_json`), pickling (`__reduce__`) and copying. Encoding,
//! decoding and file IO run with the GIL released; the format is the core's.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyMemoryView, PyType};
use qlearn_core::Model;

use super::QLearner;
use crate::convert;
use crate::error::{poisoned, to_py, type_error};
use pyo3::sync::MutexExt;

impl QLearner {
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

#[pymethods]
impl QLearner {
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

    /// Pickle support: a QLearner pickles as its to_bytes() and, when
    /// decisions are on, its decision log's JSON (restored by __setstate__).
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,), Option<String>)> {
        let py = slf.py();
        let ctor = slf.get_type().getattr("from_bytes")?;
        let log = slf.get().decisions_json(py)?;
        let bytes = slf.get().to_bytes(py)?;
        Ok((ctor, (bytes,), log))
    }

    /// Restores the decision log kept by __reduce__ (None: decisions off).
    fn __setstate__(&self, py: Python<'_>, state: Option<&str>) -> PyResult<()> {
        let log = state.map(super::decisions::decode_log).transpose()?;
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
