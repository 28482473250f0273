//! Conversions shared by the job and simulator bindings: names, numbers, errors, events.

use crate::errors::{invalid_argument, job_state_error};
use blockmirror_core::job::{ConfigError, Event, IoErrorKind, JobError};
use pyo3::prelude::*;
use std::str::FromStr;

/// A non-negative Python int as `u64`, or `InvalidArgument` naming the parameter.
pub fn non_negative(value: i64, what: &str) -> PyResult<u64> {
    u64::try_from(value).map_err(|_| invalid_argument(format!("{what} must not be negative, got {value}")))
}

/// Parse a shared lowercase name (sync mode, copy mode, policy, range state).
pub fn parse_name<T: FromStr<Err = ConfigError>>(name: &str) -> PyResult<T> {
    name.parse().map_err(invalid_argument)
}

/// An I/O error from its shared name (`nospace`, `io`, `readonly`: the core's table) or an
/// errno.
pub fn parse_error_kind(value: &Bound<'_, PyAny>) -> PyResult<IoErrorKind> {
    if let Ok(errno) = value.extract::<i64>() {
        return match i32::try_from(errno) {
            Ok(e) if e > 0 => Ok(IoErrorKind::from_errno(e)),
            _ => Err(invalid_argument(format!("errno must be a positive int, got {errno}"))),
        };
    }
    let names = IoErrorKind::NAMED.map(|k| format!("{:?}", k.name())).join(", ");
    let name: String =
        value.extract().map_err(|_| invalid_argument(format!("error must be None, {names} or an errno")))?;
    name.parse().map_err(|_| invalid_argument(format!("unknown error {name:?}: use {names} or an errno")))
}

/// A job error as the Python exception the contract names.
pub fn job_error(e: JobError) -> PyErr {
    match e {
        JobError::VerbNotAllowed { .. } | JobError::CancelRequested => job_state_error(e),
        other => invalid_argument(other),
    }
}

/// A job event as a frozen Python object; `time_ns` is the virtual time when known.
#[pyclass(frozen, module = "blockmirror", name = "Event", get_all)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyEvent {
    /// The shared event name, e.g. `BLOCK_JOB_READY`.
    #[pyo3(name = "type")]
    pub type_: &'static str,
    /// When it happened (simulations), or None (a bare MirrorJob has no clock).
    pub time_ns: Option<u64>,
    /// JOB_STATUS_CHANGE: the new status.
    pub status: Option<&'static str>,
    /// READY / COMPLETED / CANCELLED: progress current.
    pub current: Option<u64>,
    /// READY / COMPLETED / CANCELLED: progress total.
    pub total: Option<u64>,
    /// COMPLETED: the error that failed the job; ERROR: what failed.
    pub error: Option<String>,
    /// COMPLETED: whether the guest was switched to the target.
    pub pivoted: Option<bool>,
    /// ERROR: `read` (source) or `write` (target).
    pub operation: Option<&'static str>,
    /// ERROR: `report`, `ignore` or `stop`.
    pub action: Option<&'static str>,
    /// ERROR: first byte of the failed range.
    pub offset: Option<u64>,
    /// ERROR: bytes in the failed range.
    pub length: Option<u64>,
    /// NOT_CONVERGING: dirty bytes.
    pub dirty_bytes: Option<u64>,
    /// NOT_CONVERGING: estimated dirtying rate.
    pub dirty_bytes_per_sec: Option<u64>,
    /// NOT_CONVERGING: estimated copy rate.
    pub copy_bytes_per_sec: Option<u64>,
}

impl PyEvent {
    /// Convert a core event.
    pub fn from_core(event: &Event, time_ns: Option<u64>) -> Self {
        let mut e = PyEvent {
            type_: event.type_name(),
            time_ns,
            status: None,
            current: None,
            total: None,
            error: None,
            pivoted: None,
            operation: None,
            action: None,
            offset: None,
            length: None,
            dirty_bytes: None,
            dirty_bytes_per_sec: None,
            copy_bytes_per_sec: None,
        };
        match event {
            Event::StatusChange { status } => e.status = Some(status.as_str()),
            Event::Ready { current, total } | Event::Cancelled { current, total } => {
                (e.current, e.total) = (Some(*current), Some(*total));
            }
            Event::Completed { current, total, error, pivoted } => {
                (e.current, e.total) = (Some(*current), Some(*total));
                e.error = error.map(|k| k.name());
                e.pivoted = Some(*pivoted);
            }
            Event::Error { operation, action, offset, length, error } => {
                e.operation = Some(operation.as_str());
                e.action = Some(action.as_str());
                (e.offset, e.length) = (Some(*offset), Some(*length));
                e.error = Some(error.name());
            }
            Event::NotConverging { dirty_bytes, dirty_bytes_per_sec, copy_bytes_per_sec } => {
                e.dirty_bytes = Some(*dirty_bytes);
                e.dirty_bytes_per_sec = Some(*dirty_bytes_per_sec);
                e.copy_bytes_per_sec = Some(*copy_bytes_per_sec);
            }
            _ => {}
        }
        e
    }

    /// The fields that are set, as (name, value) pairs in a fixed order.
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Vec<(&'static str, Bound<'py, PyAny>)>> {
        let mut out = vec![("type", self.type_.into_pyobject(py)?.into_any())];
        macro_rules! put {
            ($($name:ident),*) => {$(
                if let Some(v) = &self.$name {
                    out.push((stringify!($name), v.clone().into_pyobject(py)?.to_owned().into_any()));
                }
            )*};
        }
        put!(time_ns, status, operation, action, offset, length, error, current, total, pivoted);
        put!(dirty_bytes, dirty_bytes_per_sec, copy_bytes_per_sec);
        Ok(out)
    }
}

#[pymethods]
impl PyEvent {
    /// The fields that are set, as a plain dict (for JSON and data frames).
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let d = pyo3::types::PyDict::new(py);
        for (k, v) in self.fields(py)? {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let parts: PyResult<Vec<String>> =
            self.fields(py)?.into_iter().map(|(k, v)| Ok(format!("{k}={}", v.repr()?))).collect();
        Ok(format!("Event({})", parts?.join(", ")))
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyEvent>().is_ok_and(|o| *o.get() == *self)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.type_, self.time_ns, self.status, self.current, self.total, &self.error, self.offset).hash(&mut h);
        h.finish()
    }
}
