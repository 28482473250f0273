//! Conversions shared by the job and simulator bindings: names, numbers, errors, events.

use crate::errors::{invalid_argument, job_state_error};
use blockmirror_core::job::{ConfigError, Event, FieldValue, IoErrorKind, JobError};
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

/// A job event as a frozen Python object; `time_ns` is the virtual time when known. The
/// attributes and `as_dict` come from the core's `Event::fields`, so they are the names and
/// values every face shows.
#[pyclass(frozen, module = "blockmirror", name = "Event")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PyEvent {
    /// The shared event name, e.g. `BLOCK_JOB_READY`.
    #[pyo3(get, name = "type")]
    pub type_: &'static str,
    /// When it happened (simulations), or None (a bare MirrorJob has no clock).
    #[pyo3(get)]
    pub time_ns: Option<u64>,
    /// JOB_STATUS_CHANGE: the new status.
    #[pyo3(get)]
    pub status: Option<String>,
    /// READY / COMPLETED / CANCELLED: progress current.
    #[pyo3(get)]
    pub current: Option<u64>,
    /// READY / COMPLETED / CANCELLED: progress total.
    #[pyo3(get)]
    pub total: Option<u64>,
    /// COMPLETED: the error that failed the job; ERROR: what failed (a shared error name).
    #[pyo3(get)]
    pub error: Option<String>,
    /// COMPLETED: whether the guest was switched to the target.
    #[pyo3(get)]
    pub pivoted: Option<bool>,
    /// ERROR: `read` (source) or `write` (target).
    #[pyo3(get)]
    pub operation: Option<String>,
    /// ERROR: `report`, `ignore` or `stop`.
    #[pyo3(get)]
    pub action: Option<String>,
    /// ERROR: first byte of the failed range.
    #[pyo3(get)]
    pub offset: Option<u64>,
    /// ERROR: bytes in the failed range.
    #[pyo3(get)]
    pub length: Option<u64>,
    /// NOT_CONVERGING: dirty bytes.
    #[pyo3(get)]
    pub dirty_bytes: Option<u64>,
    /// NOT_CONVERGING: estimated dirtying rate.
    #[pyo3(get)]
    pub dirty_bytes_per_sec: Option<u64>,
    /// NOT_CONVERGING: estimated copy rate.
    #[pyo3(get)]
    pub copy_bytes_per_sec: Option<u64>,
    /// The core's fields of this event, in its order (what `as_dict` shows after `type` and
    /// `time_ns`).
    fields: Vec<(&'static str, FieldValue)>,
}

fn field_u64(v: &FieldValue) -> Option<u64> {
    match v {
        FieldValue::U64(n) => Some(*n),
        _ => None,
    }
}

fn field_bool(v: &FieldValue) -> Option<bool> {
    match v {
        FieldValue::Bool(b) => Some(*b),
        _ => None,
    }
}

fn field_str(v: &FieldValue) -> Option<String> {
    match v {
        FieldValue::Str(s) => Some(s.to_string()),
        _ => None,
    }
}

/// One core field value as a Python object.
pub fn field_to_py<'py>(py: Python<'py>, value: &FieldValue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        FieldValue::U64(n) => n.into_pyobject(py)?.into_any(),
        FieldValue::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        FieldValue::Str(s) => s.as_ref().into_pyobject(py)?.into_any(),
        _ => py.None().into_bound(py),
    })
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
            fields: event.fields(),
        };
        for (name, v) in &e.fields {
            match *name {
                "status" => e.status = field_str(v),
                "current" => e.current = field_u64(v),
                "total" => e.total = field_u64(v),
                "error" => e.error = field_str(v),
                "pivoted" => e.pivoted = field_bool(v),
                "operation" => e.operation = field_str(v),
                "action" => e.action = field_str(v),
                "offset" => e.offset = field_u64(v),
                "length" => e.length = field_u64(v),
                "dirty_bytes" => e.dirty_bytes = field_u64(v),
                "dirty_bytes_per_sec" => e.dirty_bytes_per_sec = field_u64(v),
                "copy_bytes_per_sec" => e.copy_bytes_per_sec = field_u64(v),
                // A field the core added later still shows in `as_dict`.
                _ => {}
            }
        }
        e
    }

    /// `type`, `time_ns` when known, then the core's fields, as (name, value) pairs.
    fn dict_items<'py>(&self, py: Python<'py>) -> PyResult<Vec<(&'static str, Bound<'py, PyAny>)>> {
        let mut out = vec![("type", self.type_.into_pyobject(py)?.into_any())];
        if let Some(t) = self.time_ns {
            out.push(("time_ns", t.into_pyobject(py)?.into_any()));
        }
        for (name, value) in &self.fields {
            out.push((name, field_to_py(py, value)?));
        }
        Ok(out)
    }
}

#[pymethods]
impl PyEvent {
    /// `type`, `time_ns` (when known) and every field of this event type (None where it has
    /// nothing to say), as a plain dict (for JSON and data frames).
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let d = pyo3::types::PyDict::new(py);
        for (k, v) in self.dict_items(py)? {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let parts: PyResult<Vec<String>> =
            self.dict_items(py)?.into_iter().map(|(k, v)| Ok(format!("{k}={}", v.repr()?))).collect();
        Ok(format!("Event({})", parts?.join(", ")))
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyEvent>().is_ok_and(|o| *o.get() == *self)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}
