//! Module-level constants read from the core's tables, so the Python package restates none.

use blockmirror_core::job::{CopyMode, ErrorPolicy, IoErrorKind, MirrorConfig, SyncMode};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Adds `ERRNO_BY_NAME` (the core's named I/O error kinds and their errnos) and `DEFAULTS`
/// (the core's job defaults, keyed by the Python option names) and `OPTION_NAMES` (the
/// names each string option accepts, from the core's `names!` tables; the stubs' `Literal`
/// types in `blockmirror/_types.py` are checked against it) to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let d = MirrorConfig::new(0);
    let defaults = PyDict::new(m.py());
    defaults.set_item("granularity", d.granularity)?;
    defaults.set_item("buf_size", d.buf_size)?;
    defaults.set_item("max_io", d.max_io)?;
    defaults.set_item("max_in_flight", d.max_in_flight)?;
    defaults.set_item("speed", d.speed_bytes_per_sec)?;
    defaults.set_item("sync", d.sync.as_str())?;
    defaults.set_item("copy_mode", d.copy_mode.as_str())?;
    defaults.set_item("on_source_error", d.on_source_error.as_str())?;
    defaults.set_item("on_target_error", d.on_target_error.as_str())?;
    defaults.set_item("discard_reads_zero", d.discard_reads_zero)?;
    defaults.set_item("not_converging_window_ns", d.not_converging_window_ns)?;
    m.add("DEFAULTS", defaults)?;

    let names = PyDict::new(m.py());
    names.set_item("sync", SyncMode::NAMES.to_vec())?;
    names.set_item("copy_mode", CopyMode::NAMES.to_vec())?;
    names.set_item("error_policy", ErrorPolicy::NAMES.to_vec())?;
    m.add("OPTION_NAMES", names)?;

    let errnos = PyDict::new(m.py());
    for kind in IoErrorKind::NAMED {
        errnos.set_item(kind.name(), kind.errno())?;
    }
    m.add("ERRNO_BY_NAME", errnos)?;
    Ok(())
}
