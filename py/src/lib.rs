//! The `blockmirror._native` Python extension: bindings over blockmirror-core.

use pyo3::prelude::*;

mod bitmap;
mod errors;

/// The native module. Every export is listed here.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", blockmirror_core::VERSION)?;
    errors::register(m)?;
    bitmap::register(m)?;
    Ok(())
}
