//! The exception tree, defined once; every Rust error kind maps to one class.
//!
//! BlockMirrorError
//! ├── InvalidArgument (also ValueError)
//! │   └── ImageError: .kind (an image or backing chain cannot be used)
//! ├── JobStateError
//! ├── IoError (also OSError): .errno, .operation, .offset
//! └── Timeout (also TimeoutError): a `timeout=` passed

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;

create_exception!(
    blockmirror,
    BlockMirrorError,
    PyException,
    "Base class of every blockmirror error."
);
create_exception!(
    blockmirror,
    JobStateError,
    BlockMirrorError,
    "A verb the job's status does not allow."
);

/// Builds the classes with two bases (Python allows it; `create_exception!` does not).
fn define_two_base(
    py: Python<'_>,
    name: &str,
    second: &Bound<'_, PyAny>,
    doc: &str,
) -> PyResult<Py<PyAny>> {
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
    /// `ImageError(InvalidArgument)`.
    pub image_error: Py<PyAny>,
}

static CLASSES: std::sync::OnceLock<Classes> = std::sync::OnceLock::new();

/// The lazily-built two-base classes.
pub fn classes(py: Python<'_>) -> &'static Classes {
    CLASSES.get_or_init(|| {
        let invalid_argument = define_two_base(
            py,
            "InvalidArgument",
            py.get_type::<PyValueError>().as_any(),
            "An argument is out of range or malformed.",
        )
        .expect("type() with two exception bases cannot fail");
        let image_error = define_subclass(
            py,
            "ImageError",
            invalid_argument.bind(py),
            "A disk image or its backing chain cannot be used; .kind says why \
             (missing_backing, unreadable_backing, format_mismatch, corrupt, backing_loop, \
             target_in_chain, wrong_backing, needs_backing_target, size_mismatch, ...).",
        )
        .expect("type() with one exception base cannot fail");
        Classes {
            invalid_argument,
            image_error,
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
        }
    })
}

/// A subclass of `base` (a class made at import time).
fn define_subclass(
    py: Python<'_>,
    name: &str,
    base: &Bound<'_, PyAny>,
    doc: &str,
) -> PyResult<Py<PyAny>> {
    let type_fn = py.import("builtins")?.getattr("type")?;
    let bases = pyo3::types::PyTuple::new(py, [base])?;
    let ns = pyo3::types::PyDict::new(py);
    ns.set_item("__doc__", doc)?;
    ns.set_item("__module__", "blockmirror")?;
    Ok(type_fn.call1((name, bases, ns))?.unbind())
}

/// An `ImageError` for this engine error, with its `.kind`.
pub fn image_error(e: blockmirror_engine::image::ImageError) -> PyErr {
    Python::attach(|py| {
        let make = || -> PyResult<PyErr> {
            let exc = classes(py).image_error.bind(py).call1((e.to_string(),))?;
            exc.setattr("kind", e.kind())?;
            Ok(PyErr::from_value(exc))
        };
        make().unwrap_or_else(|err| err)
    })
}

/// An `InvalidArgument` with this message.
pub fn invalid_argument(msg: impl std::fmt::Display) -> PyErr {
    Python::attach(|py| {
        match classes(py)
            .invalid_argument
            .bind(py)
            .call1((msg.to_string(),))
        {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    })
}

/// A `JobStateError` with this message.
pub fn job_state_error(msg: impl std::fmt::Display) -> PyErr {
    JobStateError::new_err(msg.to_string())
}

/// An `IoError` carrying errno, operation ("read"/"write"/...) and offset.
pub fn io_error(
    errno: i32,
    operation: &str,
    offset: Option<u64>,
    msg: impl std::fmt::Display,
) -> PyErr {
    Python::attach(|py| {
        let make = || -> PyResult<PyErr> {
            let exc = classes(py)
                .io_error
                .bind(py)
                .call1((errno, msg.to_string()))?;
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
    m.add("ImageError", c.image_error.bind(py))?;
    Ok(())
}
