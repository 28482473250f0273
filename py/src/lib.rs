//! The `blockmirror._native` Python extension: bindings over blockmirror-core, and over
//! blockmirror-engine's file backend that mirrors real images (bound in `mirror`) and its
//! NBD server of a live disk (bound in `serve`).

use pyo3::prelude::*;

mod bitmap;
mod constants;
mod convert;
mod errors;
mod faults;
mod mirror;
mod nbd_client;
mod persist;
mod serve;
mod job;
mod sim;
mod sim_params;
mod verify;

/// The native module. Every export is listed here.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", blockmirror_core::VERSION)?;
    errors::register(m)?;
    constants::register(m)?;
    bitmap::register(m)?;
    m.add_class::<mirror::FileMirror>()?;
    m.add_function(wrap_pyfunction!(mirror::is_nbd_uri, m)?)?;
    m.add_class::<serve::NbdServer>()?;
    m.add_class::<serve::EventSubscription>()?;
    m.add("QmpError", m.py().get_type::<serve::QmpError>())?;
    m.add_class::<nbd_client::NbdClient>()?;
    m.add_function(wrap_pyfunction!(verify::verify, m)?)?;
    persist::register(m)?;
    job::register(m)?;
    sim::register(m)?;
    Ok(())
}
