//! The persistent bitmap's Python face: the `bitmap=`/`resume=` arguments of `FileMirror`,
//! `BitmapError` (a refused bitmap file, with `.reason`), and `read_bitmap` (what a file
//! holds, for tools and tests).

use std::path::PathBuf;
use std::time::Duration;

use pyo3::create_exception;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use blockmirror_engine::persist::{inspect, BitmapSetup, PersistError};

use crate::errors::{invalid_argument, io_error, BlockMirrorError};

create_exception!(
    blockmirror,
    BitmapError,
    BlockMirrorError,
    "A persistent bitmap file was refused: damaged, torn, stale, made for another mirror, or \
     present when no resume was asked for. `.reason` names which."
);

/// The short name of a refusal (`BitmapError.reason`).
fn reason(e: &PersistError) -> &'static str {
    match e {
        PersistError::Truncated { .. } => "truncated",
        PersistError::BadMagic => "bad_magic",
        PersistError::UnsupportedVersion { .. } => "version",
        PersistError::HeaderChecksum => "header_checksum",
        PersistError::BodyChecksum => "body_checksum",
        PersistError::Malformed(_) => "malformed",
        PersistError::OtherLength { .. } => "other_length",
        PersistError::OtherGranularity { .. } => "other_granularity",
        PersistError::OtherSource { .. } => "other_source",
        PersistError::OtherTarget { .. } => "other_target",
        PersistError::StaleGeneration { .. } => "stale_generation",
        PersistError::Exists { .. } => "exists",
        PersistError::Missing { .. } => "missing",
        PersistError::ResumeNeedsReuse => "resume_needs_reuse",
        PersistError::ResumeWithSyncNone => "resume_with_sync_none",
        PersistError::NeedsPath => "needs_path",
        PersistError::Granularity { .. } => "granularity",
        PersistError::Io { .. } => "io",
    }
}

/// The Python exception for a bitmap error: bad arguments are `InvalidArgument`, OS errors
/// `IoError`, every refusal of a file `BitmapError` with its `.reason`.
pub fn persist_error(e: PersistError) -> PyErr {
    let message = e.to_string();
    persist_error_saying(e, message)
}

/// [`persist_error`] with the message `message` (which says more than the error alone).
pub fn persist_error_saying(e: PersistError, message: String) -> PyErr {
    match &e {
        PersistError::ResumeNeedsReuse
        | PersistError::ResumeWithSyncNone
        | PersistError::NeedsPath
        | PersistError::Granularity { .. } => invalid_argument(message),
        PersistError::Io { source, .. } => {
            io_error(source.raw_os_error().unwrap_or(libc::EIO), "bitmap", None, message)
        }
        _ => Python::attach(|py| {
            let err = BitmapError::new_err(message);
            if let Err(set) = err.value(py).setattr("reason", reason(&e)) {
                return set;
            }
            err
        }),
    }
}

/// The engine's bitmap setup from `FileMirror`'s arguments (`resume` needs a path).
pub fn bitmap_setup(
    path: Option<PathBuf>,
    resume: bool,
    interval: f64,
    granularity: Option<u64>,
    min_generation: Option<u64>,
) -> PyResult<Option<BitmapSetup>> {
    if !(interval.is_finite() && interval > 0.0 && interval < 1e6) {
        return Err(invalid_argument(format!("bitmap_interval must be positive seconds, not {interval}")));
    }
    match path {
        Some(path) => Ok(Some(BitmapSetup {
            clean_interval: Duration::from_secs_f64(interval),
            granularity,
            min_generation: min_generation.unwrap_or(0),
            ..BitmapSetup::new(path, resume)
        })),
        None if resume => Err(invalid_argument("resume=True needs bitmap=PATH")),
        None => Ok(None),
    }
}

/// What a bitmap file holds (its newest valid slot), without checking it against any
/// mirror: generation, length, granularity, dirty chunks and bytes, and the dirty ranges
/// (`(start, end)` pairs, ascending).
#[pyfunction]
pub fn read_bitmap(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let found = py.detach(|| inspect(&path)).map_err(persist_error)?;
    let d = PyDict::new(py);
    d.set_item("generation", found.generation)?;
    d.set_item("length", found.identity.length)?;
    d.set_item("granularity", found.identity.granularity)?;
    d.set_item("source", found.identity.source.to_string())?;
    d.set_item("target", found.identity.target.to_string())?;
    d.set_item("dirty_chunks", found.bitmap.dirty_granules())?;
    let tail = found.identity.length % found.identity.granularity;
    let mut dirty = found.bitmap.count();
    if tail != 0 && found.identity.length > 0 && found.bitmap.get(found.identity.length - 1) {
        dirty -= found.identity.granularity - tail;
    }
    d.set_item("dirty_bytes", dirty)?;
    let bitmap = &found.bitmap;
    let mut ranges = Vec::new();
    let mut position = 0;
    while let Some(run) = bitmap.next_dirty_area(position, bitmap.size(), u64::MAX) {
        position = run.end;
        ranges.push((run.start, run.end));
    }
    d.set_item("ranges", ranges)?;
    Ok(d)
}

/// Adds `BitmapError` and `read_bitmap` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BitmapError", m.py().get_type::<BitmapError>())?;
    m.add_function(wrap_pyfunction!(read_bitmap, m)?)?;
    Ok(())
}
