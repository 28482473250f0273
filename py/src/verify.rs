//! `blockmirror._native.verify`: the offline comparison of two images (see
//! `blockmirror_engine::verify`), its report as a dict for `blockmirror.verify`.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use blockmirror_engine::verify::{verify as engine_verify, VerifyError, VerifyOptions, DEFAULT_VERIFY_GRANULARITY};
use blockmirror_engine::verify_online::OnlineVerifyReport;

use crate::convert::UInt;
use crate::errors::{invalid_argument, io_error};

/// The Python exception for a verify error.
pub fn verify_error(e: VerifyError) -> PyErr {
    let errno = |source: &std::io::Error| source.raw_os_error().unwrap_or(libc::EIO);
    match &e {
        VerifyError::SizeMismatch { .. } | VerifyError::Granularity(_) => invalid_argument(e),
        VerifyError::Open { source, .. } => io_error(errno(source), "open", None, e.to_string()),
        VerifyError::Read { source, offset, .. } => io_error(errno(source), "read", Some(*offset), e.to_string()),
        VerifyError::Repair { source, offset } => io_error(errno(source), "write", Some(*offset), e.to_string()),
        VerifyError::NotVerifiable(_) => crate::errors::job_state_error(e),
    }
}

/// Compares two images chunk by chunk; with `repair`, copies the differing chunks from the
/// source. Returns the report as a dict (ranges as `(start, end)` pairs).
#[pyfunction]
#[pyo3(
    signature = (source, target, granularity=UInt(DEFAULT_VERIFY_GRANULARITY), repair=false),
    text_signature = "(source, target, granularity=1048576, repair=False)"
)]
pub fn verify<'py>(
    py: Python<'py>,
    source: PathBuf,
    target: PathBuf,
    granularity: UInt,
    repair: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let options = VerifyOptions { granularity: granularity.0, repair };
    let report = py.detach(|| engine_verify(&source, &target, options)).map_err(verify_error)?;
    let pairs = |ranges: &[std::ops::Range<u64>]| ranges.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>();
    let d = PyDict::new(py);
    d.set_item("length", report.length)?;
    d.set_item("granularity", report.granularity)?;
    d.set_item("chunks", report.chunks)?;
    d.set_item("differing", pairs(&report.differing))?;
    d.set_item("differing_bytes", report.differing_bytes)?;
    d.set_item("bytes_read", report.bytes_read)?;
    d.set_item("repaired_bytes", report.repaired_bytes)?;
    d.set_item("still_differing", pairs(&report.still_differing))?;
    d.set_item("elapsed", report.elapsed_secs)?;
    d.set_item("equal", report.equal())?;
    Ok(d)
}

/// An online report as a dict (ranges as `(start, end)` pairs).
pub fn online_report<'py>(py: Python<'py>, report: &OnlineVerifyReport) -> PyResult<Bound<'py, PyDict>> {
    let pairs = |ranges: &[std::ops::Range<u64>]| ranges.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>();
    let d = PyDict::new(py);
    d.set_item("length", report.length)?;
    d.set_item("granularity", report.granularity)?;
    d.set_item("verified_bytes", report.verified_bytes)?;
    d.set_item("differing", pairs(&report.differing))?;
    d.set_item("skipped", pairs(&report.skipped))?;
    d.set_item("repaired", pairs(&report.repaired))?;
    d.set_item("elapsed", report.elapsed_secs)?;
    Ok(d)
}
