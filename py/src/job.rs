//! `MirrorJob`, `Action`: the sans-io job for custom drivers and experiments.

use crate::convert::{int_arg, job_error, parse_error_kind, parse_name, PyEvent, UInt};
use crate::errors::invalid_argument;
use blockmirror_core::job::{Action, GuestWrite, GuestWriteStart, MirrorConfig, MirrorJob, Nanos, OpId, OpResult, RangeState};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// One thing for the driver to do (frozen): `kind`, `op`, `offset`, `length`.
#[pyclass(frozen, module = "blockmirror", name = "Action", get_all)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PyAction {
    /// `read`, `write`, `write_zeroes`, `discard`, `admit`, `guest_write`, `flush`,
    /// `quiesce`, `unquiesce` or `pivot`.
    pub kind: &'static str,
    /// The operation id to complete.
    pub op: u64,
    /// First byte (0 for flush, quiesce, unquiesce, pivot).
    pub offset: u64,
    /// Bytes (0 for flush, quiesce, unquiesce, pivot).
    pub length: u64,
}

impl From<Action> for PyAction {
    fn from(a: Action) -> Self {
        Self { kind: a.kind.as_str(), op: a.op.0, offset: a.offset, length: a.length }
    }
}

#[pymethods]
impl PyAction {
    fn __repr__(&self) -> String {
        format!("Action(kind={:?}, op={}, offset={}, length={})", self.kind, self.op, self.offset, self.length)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyAction>().is_ok_and(|o| *o.get() == *self)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// The job options shared by `MirrorJob`, `Mirror`, `Simulation` and `sweep`, already checked.
#[allow(clippy::too_many_arguments)]
pub fn mirror_config(
    length: u64,
    granularity: u64,
    sync: &str,
    copy_mode: &str,
    on_source_error: &str,
    on_target_error: &str,
    speed: u64,
    buf_size: u64,
    max_in_flight: u64,
    max_io: u64,
) -> PyResult<MirrorConfig> {
    let mut config = MirrorConfig::new(length);
    config.granularity = granularity;
    config.sync = parse_name(sync)?;
    config.copy_mode = parse_name(copy_mode)?;
    config.on_source_error = parse_name(on_source_error)?;
    config.on_target_error = parse_name(on_target_error)?;
    config.speed_bytes_per_sec = speed;
    config.buf_size = buf_size;
    config.max_in_flight =
        usize::try_from(max_in_flight).map_err(|_| invalid_argument("max_in_flight is too large"))?;
    config.max_io = max_io;
    Ok(config)
}

/// The sans-io mirror job. Drive it: after every input or verb, drain `poll_action()` and
/// `poll_event()` until both return None, and call back at `poll_timeout()`.
#[pyclass(module = "blockmirror", name = "MirrorJob")]
pub struct PyMirrorJob {
    job: MirrorJob,
}

fn to_nanos(now: &Bound<'_, PyAny>) -> PyResult<Nanos> {
    Ok(Nanos(int_arg(now, "now")?))
}

#[pymethods]
impl PyMirrorJob {
    #[new]
    // The defaults are the core's (DEFAULT_*), written out so that Python's signature shows
    // numbers; tests/test_job_driver.py checks them against `_native.DEFAULTS`.
    #[pyo3(signature = (length, granularity=UInt(65536), sync="full", copy_mode="background",
        on_source_error="report", on_target_error="report", speed=UInt(0), buf_size=UInt(16777216),
        max_in_flight=UInt(16), max_io=UInt(4194304), discard_reads_zero=false),
        text_signature = "(length, granularity=65536, sync='full', copy_mode='background', \
        on_source_error='report', on_target_error='report', speed=0, buf_size=16777216, \
        max_in_flight=16, max_io=4194304, discard_reads_zero=False)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        length: UInt,
        granularity: UInt,
        sync: &str,
        copy_mode: &str,
        on_source_error: &str,
        on_target_error: &str,
        speed: UInt,
        buf_size: UInt,
        max_in_flight: UInt,
        max_io: UInt,
        discard_reads_zero: bool,
    ) -> PyResult<Self> {
        let mut config = mirror_config(
            length.0,
            granularity.0,
            sync,
            copy_mode,
            on_source_error,
            on_target_error,
            speed.0,
            buf_size.0,
            max_in_flight.0,
            max_io.0,
        )?;
        config.discard_reads_zero = discard_reads_zero;
        Ok(Self { job: MirrorJob::new(config).map_err(job_error)? })
    }

    /// Disk length in bytes.
    #[getter]
    fn length(&self) -> u64 {
        self.job.config().length
    }

    /// Bytes per chunk.
    #[getter]
    fn granularity(&self) -> u64 {
        self.job.config().granularity
    }

    /// The status name, e.g. `"running"`.
    #[getter]
    fn status(&self) -> &'static str {
        self.job.status().as_str()
    }

    /// `(current, total)` in bytes.
    #[getter]
    fn progress(&self) -> (u64, u64) {
        let p = self.job.progress();
        (p.current, p.total)
    }

    /// Rate estimates over the last 2 s: `dirty_bytes_per_sec`, `copy_bytes_per_sec`, and
    /// `eta_ready_ns` (0 once ready). Before ready, `eta_ready_ns` is None ("not at this
    /// rate") when the copy is not faster than the guest dirties, and throughout a
    /// `BLOCK_JOB_NOT_CONVERGING` episode, so the ETA never contradicts that event.
    #[getter]
    fn rates<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        rates_dict(py, &self.job)
    }

    /// The error that failed the job, if any (`"nospace"`, `"io"`, `"readonly"` or an errno).
    #[getter]
    fn error(&self) -> Option<String> {
        self.job.error().map(|e| e.name())
    }

    /// A copy of the dirty bitmap (an `HBitmap` over bytes).
    #[getter]
    fn bitmap(&self) -> crate::bitmap::PyHBitmap {
        crate::bitmap::PyHBitmap::from(self.job.bitmap().clone())
    }

    /// Operations that own chunks now: `(op, kind, offset, length)` with kind `reading`,
    /// `writing`, `guest_writing` or `waiting_guest_write`.
    fn ops(&self) -> Vec<(u64, &'static str, u64, u64)> {
        ops_list(&self.job)
    }

    /// Describe a range of the source: state `"allocated"`, `"unallocated"` or `"zero"`.
    fn declare(&mut self, offset: &Bound<'_, PyAny>, length: &Bound<'_, PyAny>, state: &str) -> PyResult<()> {
        let state: RangeState = parse_name(state)?;
        self.job
            .declare(int_arg(offset, "offset")?, int_arg(length, "length")?, state)
            .map_err(job_error)
    }

    /// Start copying at time `now` (ns).
    #[pyo3(signature = (now=UInt(0)), text_signature = "($self, now=0)")]
    fn start(&mut self, now: UInt) -> PyResult<()> {
        self.job.start(Nanos(now.0)).map_err(job_error)
    }

    /// The guest wrote this range of the source (after the write completed). Returns the op
    /// id of a `guest_write` action to perform before acknowledging the guest
    /// (write-blocking mode), or None: acknowledge now.
    fn handle_guest_write(&mut self, offset: &Bound<'_, PyAny>, length: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        let result = self
            .job
            .handle_guest_write(int_arg(offset, "offset")?, int_arg(length, "length")?)
            .map_err(job_error)?;
        Ok(match result {
            GuestWrite::Acknowledge => None,
            GuestWrite::Mirror(op) => Some(op.0),
        })
    }

    /// Announce a guest write before it touches the source (drivers whose guest writes run
    /// concurrently). Returns None when the job tracks no writes any more (write, then
    /// acknowledge), `(op, "proceed")` (write the source now) or `(op, "wait")` (write it
    /// after the `admit` action for `op`); then report with `handle_guest_write_landed`.
    fn handle_guest_write_start(&mut self, offset: &Bound<'_, PyAny>, length: &Bound<'_, PyAny>) -> PyResult<Option<(u64, &'static str)>> {
        let start = self
            .job
            .handle_guest_write_start(int_arg(offset, "offset")?, int_arg(length, "length")?)
            .map_err(job_error)?;
        Ok(match start {
            GuestWriteStart::Proceed(op) => Some((op.0, "proceed")),
            GuestWriteStart::Wait(op) => Some((op.0, "wait")),
            _ => None,
        })
    }

    /// The source write of a started guest write finished (`error` as for
    /// `handle_completion`). Returns the op id of a `guest_write` action to perform before
    /// acknowledging the guest, or None: acknowledge now.
    #[pyo3(signature = (op, error=None))]
    fn handle_guest_write_landed(&mut self, op: &Bound<'_, PyAny>, error: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
        let op = OpId(int_arg(op, "op")?);
        let result = match error {
            Some(e) if !e.is_none() => OpResult::Failed(parse_error_kind(e)?),
            _ => OpResult::Ok,
        };
        Ok(match self.job.handle_guest_write_landed(op, result).map_err(job_error)? {
            GuestWrite::Acknowledge => None,
            GuestWrite::Mirror(op) => Some(op.0),
        })
    }

    /// Report that operation `op` finished: `error` None, `"nospace"`, `"io"`, `"readonly"`
    /// or an errno; `zero=True` when a read returned only zeroes.
    #[pyo3(signature = (op, error=None, zero=false))]
    fn handle_completion(&mut self, op: &Bound<'_, PyAny>, error: Option<&Bound<'_, PyAny>>, zero: bool) -> PyResult<()> {
        let op = OpId(int_arg(op, "op")?);
        let result = match error {
            Some(e) if !e.is_none() => {
                if zero {
                    return Err(invalid_argument("zero=True cannot go with an error"));
                }
                OpResult::Failed(parse_error_kind(e)?)
            }
            _ if zero => OpResult::OkZeroes,
            _ => OpResult::Ok,
        };
        self.job.handle_completion(op, result).map_err(job_error)
    }

    /// The time is `now` (ns): let the speed limit and rate windows move on.
    fn handle_timeout(&mut self, now: &Bound<'_, PyAny>) -> PyResult<()> {
        self.job.handle_timeout(to_nanos(now)?);
        Ok(())
    }

    /// When to call `handle_timeout` next (ns), or None.
    fn poll_timeout(&self) -> Option<u64> {
        self.job.poll_timeout().map(|n| n.0)
    }

    /// The next action for the driver, or None.
    fn poll_action(&mut self) -> Option<PyAction> {
        self.job.poll_action().map(PyAction::from)
    }

    /// The next event, or None.
    fn poll_event(&mut self) -> Option<PyEvent> {
        self.job.poll_event().map(|e| PyEvent::from_core(&e, None))
    }

    /// Pause (takes effect once in-flight operations finish).
    fn pause(&mut self) -> PyResult<()> {
        self.job.pause().map_err(job_error)
    }

    /// Resume after a pause or a `stop` error.
    fn resume(&mut self) -> PyResult<()> {
        self.job.resume().map_err(job_error)
    }

    /// Change the speed limit (bytes/s, 0 = unlimited).
    fn set_speed(&mut self, bytes_per_sec: &Bound<'_, PyAny>) -> PyResult<()> {
        self.job.set_speed(int_arg(bytes_per_sec, "speed")?).map_err(job_error)
    }

    /// Change the copy mode while running (`"background"` or `"write-blocking"`).
    fn set_copy_mode(&mut self, mode: &str) -> PyResult<()> {
        self.job.set_copy_mode(parse_name(mode)?).map_err(job_error)
    }

    /// Switch over to the target (only when ready).
    fn complete(&mut self) -> PyResult<()> {
        self.job.complete().map_err(job_error)
    }

    /// Cancel: soft in ready (a consistent copy, no pivot), otherwise or with force a stop.
    #[pyo3(signature = (force=false))]
    fn cancel(&mut self, force: bool) -> PyResult<()> {
        self.job.cancel(force).map_err(job_error)
    }

    /// Remove a concluded job.
    fn dismiss(&mut self) -> PyResult<()> {
        self.job.dismiss().map_err(job_error)
    }

    fn __repr__(&self) -> String {
        let p = self.job.progress();
        format!("MirrorJob(status={:?}, progress=({}, {}))", self.job.status().as_str(), p.current, p.total)
    }
}

/// The job's rate estimates as a dict.
pub fn rates_dict<'py>(py: Python<'py>, job: &MirrorJob) -> PyResult<Bound<'py, PyDict>> {
    let r = job.rates();
    let d = PyDict::new(py);
    d.set_item("dirty_bytes_per_sec", r.dirty_bytes_per_sec)?;
    d.set_item("copy_bytes_per_sec", r.copy_bytes_per_sec)?;
    d.set_item("eta_ready_ns", r.eta_ready_ns)?;
    Ok(d)
}

/// The job's in-flight operations as plain tuples.
pub fn ops_list(job: &MirrorJob) -> Vec<(u64, &'static str, u64, u64)> {
    job.ops()
        .map(|v| {
            (v.op.0, v.kind.as_str(), v.offset, v.length)
        })
        .collect()
}

/// Adds `MirrorJob`, `Action` and `Event` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyMirrorJob>()?;
    m.add_class::<PyAction>()?;
    m.add_class::<PyEvent>()?;
    Ok(())
}
