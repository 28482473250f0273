//! Module-level constants read from the core's tables, so the Python package restates none.

use blockmirror_core::job::IoErrorKind;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Adds `ERRNO_BY_NAME` (the core's named I/O error kinds and their errnos) to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let errnos = PyDict::new(m.py());
    for kind in IoErrorKind::NAMED {
        errnos.set_item(kind.name(), kind.errno())?;
    }
    m.add("ERRNO_BY_NAME", errnos)?;
    Ok(())
}
