//! The exception tree, defined once; every Rust error kind maps to one class.
//!
//! BlockMirrorError
//! ├── InvalidArgument (also ValueError)
//! ├── JobStateError
//! ├── IoError (also OSError): .errno, .operation, .offset
//! └── Timeout (also TimeoutError): a `timeout=` passed

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;

create_exception!(blockmirror, BlockMirrorError, PyException, "Base class of every blockmirror error.");
create_exception!(blockmirror, JobStateError, BlockMirrorError, "A verb the job's status does not allow.");

/// Builds the classes with two bases (Python allows it; `create_exception!` does not).
fn define_two_base(py: Python<'_>, name: &str, second: &Bound<'_, PyAny>, doc: &str) -> PyResult<Py<PyAny>> {
    let base = py.get_type::<BlockMirrorError>();
    let builtins = py.import("builtins")?;
    let type_fn = builtins.getattr("type")?;
    let bases = pyo3::types::PyTuple::new(py, [base.as_any(), second])?;
    let ns = pyo3::types::PyDict::new(py);
    ns.set_item("__doc__", doc)?;
    ns.set_item("__module__", "blockmirror")?;
    Ok(type_fn.call1((name, bases, ns))?.unbind())
}

/// The classes made at import time.
pub struct Classes {
    /// `InvalidArgument(BlockMirrorError, ValueError)`.
    pub invalid_argument: Py<PyAny>,
    /// `IoError(BlockMirrorError, OSError)`.
    pub io_error: Py<PyAny>,
    /// `Timeout(BlockMirrorError, TimeoutError)`.
    pub timeout: Py<PyAny>,
}

static CLASSES: std::sync::OnceLock<Classes> = std::sync::OnceLock::new();

/// The lazily-built two-base classes.
pub fn classes(py: Python<'_>) -> &'static Classes {
    CLASSES.get_or_init(|| Classes {
        invalid_argument: define_two_base(
            py,
            "InvalidArgument",
            py.get_type::<PyValueError>().as_any(),
            "An argument is out of range or malformed.",
        )
        .expect("type() with two exception bases cannot fail"),
        io_error: define_two_base(
            py,
            "IoError",
            py.get_type::<PyOSError>().as_any(),
            "An I/O operation failed; .errno, .operation and .offset say which.",
        )
        .expect("type() with two exception bases cannot fail"),
        timeout: define_two_base(
            py,
            "Timeout",
            py.get_type::<PyTimeoutError>().as_any(),
            "A wait given `timeout=` seconds did not end in time.",
        )
        .expect("type() with two exception bases cannot fail"),
    })
}

/// An `InvalidArgument` with this message.
pub fn invalid_argument(msg: impl std::fmt::Display) -> PyErr {
    Python::attach(|py| match classes(py).invalid_argument.bind(py).call1((msg.to_string(),)) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    })
}

/// A `JobStateError` with this message.
pub fn job_state_error(msg: impl std::fmt::Display) -> PyErr {
    JobStateError::new_err(msg.to_string())
}

/// An `IoError` carrying errno, operation ("read"/"write"/...) and offset.
pub fn io_error(errno: i32, operation: &str, offset: Option<u64>, msg: impl std::fmt::Display) -> PyErr {
    Python::attach(|py| {
        let make = || -> PyResult<PyErr> {
            let exc = classes(py).io_error.bind(py).call1((errno, msg.to_string()))?;
            exc.setattr("operation", operation)?;
            exc.setattr("offset", offset)?;
            Ok(PyErr::from_value(exc))
        };
        make().unwrap_or_else(|e| e)
    })
}

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("BlockMirrorError", py.get_type::<BlockMirrorError>())?;
    m.add("JobStateError", py.get_type::<JobStateError>())?;
    let c = classes(py);
    m.add("InvalidArgument", c.invalid_argument.bind(py))?;
    m.add("IoError", c.io_error.bind(py))?;
    m.add("Timeout", c.timeout.bind(py))?;
    Ok(())
}
