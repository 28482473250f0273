//! Conversions shared by the job and simulator bindings: names, numbers, errors, events.

use crate::errors::{invalid_argument, job_state_error};
use blockmirror_core::job::{ConfigError, Event, FieldValue, IoErrorKind, JobError};
use pyo3::prelude::*;
use std::borrow::Cow;
use std::str::FromStr;

/// A non-negative Python int as `u64`, or `InvalidArgument` naming the parameter.
pub fn non_negative(value: i64, what: &str) -> PyResult<u64> {
    u64::try_from(value).map_err(|_| invalid_argument(format!("{what} must not be negative, got {value}")))
}

/// An int argument in `0..2**64` (a Python int, or anything with `__index__`). Anything
/// else (negative, too large, a float, a str) is `InvalidArgument` naming the parameter:
/// the one integer convention of the package.
pub fn int_arg(value: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    value.extract::<u64>().map_err(|_| int_error(value, what))
}

/// The `InvalidArgument` for a value that is not an int in `0..2**64`.
pub fn int_error(value: &Bound<'_, PyAny>, what: &str) -> PyErr {
    let shown = value.repr().map(|r| r.to_string()).unwrap_or_default();
    if !value.hasattr("__index__").unwrap_or(false) {
        let ty = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        invalid_argument(format!("{what} must be an int, not {ty} ({shown})"))
    } else if value.lt(0).unwrap_or(false) {
        invalid_argument(format!("{what} must not be negative, got {shown}"))
    } else {
        invalid_argument(format!("{what} must be at most 2**64 - 1, got {shown}"))
    }
}

/// An int in `0..2**64` as a function parameter's type: anything else is `InvalidArgument`,
/// as [`int_arg`] (PyO3 adds a note naming the parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UInt(pub u64);

impl<'a, 'py> FromPyObject<'a, 'py> for UInt {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        int_arg(&obj, "value").map(UInt)
    }
}

/// An optional int argument (None stays None), as [`int_arg`].
pub fn opt_int_arg(value: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<u64>> {
    value.filter(|v| !v.is_none()).map(|v| int_arg(v, what)).transpose()
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

/// A job event as a frozen Python object: the one event class of every face (`MirrorJob`,
/// `Simulation`, `Mirror` and the CLI's `--json`). The attributes and `to_dict` come from the
/// core's `Event::fields`, so they are the names and values every face shows; the schema is
/// in docs/events.md.
#[pyclass(frozen, module = "blockmirror", name = "Event")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PyEvent {
    /// The shared event name, e.g. `BLOCK_JOB_READY`.
    type_: Cow<'static, str>,
    /// Nanoseconds: virtual time (simulations), since the mirror started (`Mirror`), or None
    /// (a bare MirrorJob has no clock).
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
    /// AUTO_CONVERGE: what set off the switch (`not_converging` or `dirty_rate`).
    #[pyo3(get)]
    pub trigger: Option<String>,
    /// ERROR from the file backend: how many identical consecutive errors this event stands
    /// for (the engine folds them); None elsewhere (MirrorJob and Simulation never fold).
    #[pyo3(get)]
    pub count: Option<u64>,
    /// The core's fields of this event, in its order (what `to_dict` shows after `type` and
    /// `time_ns`).
    fields: Vec<(&'static str, FieldValue)>,
}

/// Every field name `Event::fields` gives, for events built from Python.
const FIELD_NAMES: [&str; 13] = [
    "status",
    "current",
    "total",
    "error",
    "pivoted",
    "operation",
    "action",
    "offset",
    "length",
    "dirty_bytes",
    "dirty_bytes_per_sec",
    "copy_bytes_per_sec",
    "trigger",
];

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
        Self::from_fields(Cow::Borrowed(event.type_name()), time_ns, event.fields(), None)
    }

    /// An event from its parts; the typed attributes are filled from `fields`.
    fn from_fields(
        type_: Cow<'static, str>,
        time_ns: Option<u64>,
        fields: Vec<(&'static str, FieldValue)>,
        count: Option<u64>,
    ) -> Self {
        let mut e = PyEvent {
            type_,
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
            trigger: None,
            count,
            fields,
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
                "trigger" => e.trigger = field_str(v),
                // A field the core added later still shows in `as_dict`.
                _ => {}
            }
        }
        e
    }

    /// A file-backend event: the engine's time since start and, for errors, its count.
    pub fn from_record(record: &blockmirror_engine::EventRecord) -> Self {
        let mut e = Self::from_core(&record.event, Some(record.time_ns));
        if matches!(record.event, Event::Error { .. }) {
            e.count = Some(record.count);
        }
        e
    }

    /// `type`, `time_ns` when known, the core's fields, then `count` when set, as (name,
    /// value) pairs.
    fn dict_items<'py>(&self, py: Python<'py>) -> PyResult<Vec<(&'static str, Bound<'py, PyAny>)>> {
        let mut out = vec![("type", self.type_.as_ref().into_pyobject(py)?.into_any())];
        if let Some(t) = self.time_ns {
            out.push(("time_ns", t.into_pyobject(py)?.into_any()));
        }
        for (name, value) in &self.fields {
            out.push((name, field_to_py(py, value)?));
        }
        if let Some(n) = self.count {
            out.push(("count", n.into_pyobject(py)?.into_any()));
        }
        Ok(out)
    }
}

#[pymethods]
impl PyEvent {
    /// An event from plain values (tests, replays): `type`, `time_ns`, `count`, and any of
    /// the core's field names as keywords.
    #[new]
    #[pyo3(signature = (r#type, time_ns=None, count=None, **fields))]
    fn new(
        r#type: String,
        time_ns: Option<&Bound<'_, PyAny>>,
        count: Option<&Bound<'_, PyAny>>,
        fields: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Self> {
        let time_ns = opt_int_arg(time_ns, "time_ns")?;
        let count = opt_int_arg(count, "count")?;
        let mut out = Vec::new();
        for (k, v) in fields.into_iter().flat_map(|d| d.iter()) {
            let key: String = k.extract()?;
            let Some(name) = FIELD_NAMES.iter().find(|n| **n == key) else {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "Event() got an unexpected keyword argument {key:?}"
                )));
            };
            let value = if v.is_none() {
                FieldValue::None
            } else if let Ok(b) = v.cast::<pyo3::types::PyBool>() {
                FieldValue::Bool(b.is_true())
            } else if let Ok(s) = v.extract::<String>() {
                FieldValue::Str(s.into())
            } else {
                FieldValue::U64(int_arg(&v, name)?)
            };
            out.push((*name, value));
        }
        Ok(Self::from_fields(Cow::Owned(r#type), time_ns, out, count))
    }

    /// The shared event name, e.g. `BLOCK_JOB_READY`.
    #[getter]
    #[pyo3(name = "type")]
    fn type_name(&self) -> &str {
        &self.type_
    }

    /// The fields that are set (`type`, `time_ns`, the event's fields that are not None,
    /// `count`), as a plain dict: what `blockmirror mirror --json` prints per line.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let d = pyo3::types::PyDict::new(py);
        for (k, v) in self.dict_items(py)? {
            if !v.is_none() {
                d.set_item(k, v)?;
            }
        }
        Ok(d)
    }

    /// `type`, `time_ns` (when known), every field of this event type's schema (None where
    /// it has nothing to say) and `count` (when set), as a plain dict: the same keys for
    /// every event of a type (data frames, comparing faces).
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
