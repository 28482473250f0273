//! `blockmirror._native.FileMirror`: the Python face of the file backend.
//!
//! Every method that may block (I/O, waits, joins) runs with the GIL released
//! (`py.detach`). The friendly `blockmirror.Mirror` / `blockmirror.mirror` are written in
//! Python on top of this class (`blockmirror/_mirror.py`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use blockmirror_core::job::{CopyMode, JobError};

use blockmirror_engine::engine::{FileMirror as Engine, GuestIoError, MirrorSetup, Snapshot, StartError, VerbError, WaitOutcome};
use blockmirror_engine::faults::{InjectedFault, PanicAt};
use blockmirror_engine::files::OpenError;
use blockmirror_engine::image::ImageFormat;
use blockmirror_engine::nbd::NbdUri;
use blockmirror_engine::target::MirrorTarget;
use blockmirror_engine::locks::LockError;
use blockmirror_engine::EventRecord;
use crate::convert::{PyEvent, UInt};
use crate::errors::{invalid_argument, io_error, job_state_error};

fn job_error(e: JobError) -> PyErr {
    match e {
        JobError::VerbNotAllowed { .. } | JobError::CancelRequested => job_state_error(e),
        JobError::Config(_) | JobError::OutOfRange { .. } | JobError::ZeroLength { .. } => invalid_argument(e),
        other => job_state_error(other),
    }
}

fn verb_error(e: VerbError) -> PyErr {
    match e {
        VerbError::Job(e) => job_error(e),
        VerbError::Broken(_) => job_state_error(e),
    }
}

/// Whether `target` names an NBD export rather than a local path (the engine's rule).
#[pyfunction]
pub fn is_nbd_uri(target: &str) -> bool {
    NbdUri::looks_like_uri(target)
}

/// The target: an NBD URI (`nbd://host[:port]/export`, `nbd+unix:///export?socket=PATH`)
/// names a remote export; anything else is a local path.
fn mirror_target(target: PathBuf) -> PyResult<MirrorTarget> {
    match target.to_str() {
        Some(text) if NbdUri::looks_like_uri(text) => NbdUri::parse(text)
            .map(MirrorTarget::Nbd)
            .map_err(|e| invalid_argument(format!("target {text:?} is not a valid NBD URI: {e}"))),
        _ => Ok(MirrorTarget::Path(target)),
    }
}

fn start_error(e: StartError) -> PyErr {
    match e {
        StartError::Open(OpenError::Invalid(msg)) => invalid_argument(msg),
        StartError::Open(OpenError::Image(e)) => crate::errors::image_error(e),
        // `FileMirror::start` reports lock refusals as `StartError::Locked`.
        StartError::Open(OpenError::Locked(e)) => io_error(libc::EAGAIN, "lock", None, e.to_string()),
        StartError::Open(OpenError::Os { path, source }) => io_error(
            source.raw_os_error().unwrap_or(libc::EIO),
            "open",
            None,
            format!("cannot open {}: {source}", path.display()),
        ),
        // Another program uses an image: EAGAIN, as the refused lock call reports it.
        StartError::Locked(LockError::Os { source, .. }) => {
            io_error(source.raw_os_error().unwrap_or(libc::EIO), "lock", None, source.to_string())
        }
        StartError::Locked(e) => io_error(libc::EAGAIN, "lock", None, e.to_string()),
        StartError::Job(e) => job_error(e),
        StartError::Bitmap(e) => crate::persist::persist_error(e),
        StartError::Os { what, source } => {
            io_error(source.raw_os_error().unwrap_or(libc::EIO), "open", None, format!("{what}: {source}"))
        }
    }
}

fn guest_error(e: GuestIoError, operation: &str, offset: u64) -> PyErr {
    match e {
        GuestIoError::OutOfRange { .. } | GuestIoError::TooLong { .. } => invalid_argument(e),
        GuestIoError::Closed => job_state_error("the mirror is closed"),
        GuestIoError::Os { source } => {
            io_error(source.raw_os_error().unwrap_or(libc::EIO), operation, Some(offset), source.to_string())
        }
    }
}

/// A byte offset or length from Python: an int in `0..2**64`; anything else (negative, too
/// large, not an int) is `InvalidArgument`, the package's one integer convention.
fn byte_arg(value: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    crate::convert::int_arg(value, what)
}

/// Seconds beyond which a timeout means "no timeout": no wait lasts a century, and larger
/// values would overflow `Duration` or `Instant` arithmetic.
const FOREVER_S: f64 = 100.0 * 365.25 * 86_400.0;

/// A timeout in seconds: `None` or more than [`FOREVER_S`] (infinity included) is no
/// timeout; negative or NaN is refused.
pub(crate) fn timeout_arg(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    seconds_arg(timeout, "timeout")
}

fn seconds_arg(seconds: Option<f64>, what: &str) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(t) if t > FOREVER_S => Ok(None),
        Some(t) if t >= 0.0 => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(invalid_argument(format!("{what} must be a non-negative number of seconds, not {t}"))),
    }
}

fn fault_rules(faults: Option<&Bound<'_, PyList>>) -> PyResult<Vec<InjectedFault>> {
    let Some(faults) = faults else { return Ok(Vec::new()) };
    let mut rules = Vec::new();
    for item in faults.iter() {
        let d = item.cast::<PyDict>().map_err(|_| invalid_argument("each fault must be a dict"))?;
        // "panic" / "panic-locked": the worker panics (tests of surviving a broken thread).
        let (rule, special) = crate::faults::parse_rule(d, &["panic", "panic-locked"])?;
        let fault = InjectedFault::from(rule);
        rules.push(match special {
            Some("panic") => fault.panicking(PanicAt::Io),
            Some(_) => fault.panicking(PanicAt::UnderLock),
            None => fault,
        });
    }
    Ok(rules)
}

/// Converts an event record to the one event class (`blockmirror.Event`): `type`,
/// `time_ns` since the mirror started, the core's `Event::fields`, and for
/// `BLOCK_JOB_ERROR` the `count` of identical consecutive errors it stands for.
fn event_dict(record: &EventRecord) -> PyEvent {
    PyEvent::from_record(record)
}

/// A running mirror of a raw image file or block device onto another (see `blockmirror.Mirror`).
///
/// `close` drops the engine, which closes the files at once (not when Python collects this
/// object): a deleted target's space is freed then. What callers may still ask afterwards
/// (status, snapshot, the events not yet taken) is kept in `after_close`. Dropping this
/// object without `close` drops the engine too, which stops its threads first.
#[pyclass(frozen, module = "blockmirror._native")]
pub struct FileMirror {
    /// The running engine, `None` once closed. Calls clone the `Arc` and run unlocked, so a
    /// guest call still returning when `close` ends keeps the files only until it returns.
    live: Mutex<Option<Arc<Engine>>>,
    /// Serialises `close` (taken with the GIL released).
    closing: Mutex<()>,
    /// The final snapshot, set by `close` before `live` is emptied.
    after_close: OnceLock<Snapshot>,
    /// Events still untaken at `close`, delivered after the engine's own (filled while this
    /// lock is held, so a consumer that found the engine empty then finds them here).
    closed_events: Mutex<VecDeque<EventRecord>>,
    length: u64,
}

impl FileMirror {
    fn live(&self) -> Option<Arc<Engine>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn live_or_closed(&self) -> PyResult<Arc<Engine>> {
        self.live().ok_or_else(|| job_state_error("the mirror is closed"))
    }

    fn snapshot_now(&self) -> Snapshot {
        match self.live() {
            Some(engine) => engine.snapshot(),
            None => self.after_close.get().expect("close sets after_close before emptying live").clone(),
        }
    }

    fn pop_closed_event(&self) -> Option<EventRecord> {
        self.closed_events.lock().unwrap_or_else(PoisonError::into_inner).pop_front()
    }
}

#[pymethods]
impl FileMirror {
    #[new]
    #[pyo3(signature = (source, target, *, granularity=UInt(65536), sync="full", copy_mode="background",
        on_source_error="report", on_target_error="report", speed=UInt(0), buf_size=UInt(16 << 20),
        max_in_flight=UInt(16), max_io=UInt(4 << 20), direct=false, reuse=false, unmap=true,
        guest_writes=true, offload=true, io_uring=true, auto_converge=false, not_converging_window=10.0, faults=None,
        lock=true, format=None, target_format=None, bitmap=None, resume=false, bitmap_interval=1.0,
        bitmap_granularity=None, bitmap_min_generation=None),
        text_signature = "(source, target, *, granularity=65536, sync='full', copy_mode='background', \
        on_source_error='report', on_target_error='report', speed=0, buf_size=16777216, max_in_flight=16, \
        max_io=4194304, direct=False, reuse=False, unmap=True, guest_writes=True, offload=True, io_uring=True, \
        auto_converge=False, not_converging_window=10.0, faults=None, lock=True, format=None, target_format=None, \
        bitmap=None, resume=False, bitmap_interval=1.0, bitmap_granularity=None, bitmap_min_generation=None)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        source: PathBuf,
        target: PathBuf,
        granularity: UInt,
        sync: &str,
        copy_mode: &str,
        on_source_error: &str,
        on_target_error: &str,
        speed: UInt,
        buf_size: UInt,
        max_in_flight: UInt,
        max_io: UInt,
        direct: bool,
        reuse: bool,
        unmap: bool,
        guest_writes: bool,
        offload: bool,
        io_uring: bool,
        auto_converge: bool,
        not_converging_window: f64,
        faults: Option<&Bound<'_, PyList>>,
        lock: bool,
        format: Option<&str>,
        target_format: Option<&str>,
        bitmap: Option<PathBuf>,
        resume: bool,
        bitmap_interval: f64,
        bitmap_granularity: Option<UInt>,
        bitmap_min_generation: Option<UInt>,
    ) -> PyResult<Self> {
        let format_arg = |name: Option<&str>| -> PyResult<Option<ImageFormat>> {
            name.map(|n| ImageFormat::parse(n).map_err(invalid_argument)).transpose()
        };
        let (format, target_format) = (format_arg(format)?, format_arg(target_format)?);
        // The length is set once the source is opened.
        let mut config = crate::job::mirror_config(
            0,
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
        // 0 turns the watch off; a window beyond a century (or beyond u64 nanoseconds) never
        // passes, so it saturates instead of wrapping to a short one.
        config.not_converging_window_ns = seconds_arg(Some(not_converging_window), "not_converging_window")?
            .map_or(u64::MAX, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        config.auto_converge = auto_converge;
        let setup = MirrorSetup {
            config,
            direct,
            reuse,
            unmap,
            guest_writes,
            offload,
            io_uring,
            faults: fault_rules(faults)?,
            lock_source: lock,
            lock_target: lock,
            format,
            target_format,
            bitmap: None,
        };
        let target = mirror_target(target)?;
        let setup = MirrorSetup { bitmap: crate::persist::bitmap_setup(
            bitmap,
            resume,
            bitmap_interval,
            bitmap_granularity.map(|g| g.0),
            bitmap_min_generation.map(|g| g.0),
        )?, ..setup };
        let engine = py.detach(|| Engine::start_to(&source, target, setup)).map_err(start_error)?;
        Ok(Self {
            length: engine.length(),
            live: Mutex::new(Some(Arc::new(engine))),
            closing: Mutex::new(()),
            after_close: OnceLock::new(),
            closed_events: Mutex::new(VecDeque::new()),
        })
    }

    /// The disk length in bytes.
    #[getter]
    fn length(&self) -> u64 {
        self.length
    }

    /// The generation of the bitmap file's newest slot (None without a bitmap, once the
    /// file was removed, or once the mirror is closed).
    #[getter]
    fn bitmap_generation(&self) -> Option<u64> {
        self.live().and_then(|engine| engine.bitmap_generation())
    }

    /// The guest writes `data` at `offset` (see `blockmirror.Mirror.write`).
    fn write(&self, py: Python<'_>, offset: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let offset = byte_arg(offset, "offset")?;
        let bytes: Vec<u8> = match data.cast::<PyBytes>() {
            Ok(b) => b.as_bytes().to_vec(),
            // bytearray, memoryview, array...: whatever bytes() accepts.
            Err(_) => py.import("builtins")?.getattr("bytes")?.call1((data,))?.cast::<PyBytes>()?.as_bytes().to_vec(),
        };
        let engine = self.live_or_closed()?;
        py.detach(|| engine.guest_write(offset, bytes)).map_err(|e| guest_error(e, "write", offset))
    }

    /// Compares the source and the target while the mirror runs (see
    /// `blockmirror.Mirror.verify`); the report as a dict.
    #[pyo3(signature = (granularity=UInt(1 << 20), repair=false), text_signature = "($self, granularity=1048576, repair=False)")]
    fn verify<'py>(&self, py: Python<'py>, granularity: UInt, repair: bool) -> PyResult<Bound<'py, PyDict>> {
        let engine = self.live_or_closed()?;
        let report =
            py.detach(|| engine.verify_online(granularity.0, repair)).map_err(crate::verify::verify_error)?;
        crate::verify::online_report(py, &report)
    }

    /// The guest reads `length` bytes at `offset`.
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: &Bound<'_, PyAny>,
        length: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (offset, length) = (byte_arg(offset, "offset")?, byte_arg(length, "length")?);
        let engine = self.live_or_closed()?;
        let data = py.detach(|| engine.guest_read(offset, length)).map_err(|e| guest_error(e, "read", offset))?;
        Ok(PyBytes::new(py, &data))
    }

    /// Waits for `BLOCK_JOB_READY`: returns "ready", "ended" (the job ended first) or "timeout".
    #[pyo3(signature = (timeout=None))]
    fn wait_ready(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<&'static str> {
        let timeout = timeout_arg(timeout)?;
        let outcome = match self.live() {
            Some(engine) => py.detach(|| engine.wait_ready(timeout)),
            None if self.snapshot_now().ready => WaitOutcome::Reached,
            None => WaitOutcome::Ended,
        };
        Ok(match outcome {
            WaitOutcome::Reached => "ready",
            WaitOutcome::Ended => "ended",
            WaitOutcome::TimedOut => "timeout",
        })
    }

    /// Waits until the job has ended and all I/O finished; False on timeout.
    #[pyo3(signature = (timeout=None))]
    fn wait_end(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = timeout_arg(timeout)?;
        Ok(match self.live() {
            Some(engine) => py.detach(|| engine.wait_end(timeout)) == WaitOutcome::Reached,
            None => true,
        })
    }

    /// The next event (a `blockmirror.Event`), waiting up to `timeout` seconds; None when
    /// none came or the job ended and every event was taken.
    #[pyo3(signature = (timeout=None))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyEvent>> {
        let timeout = timeout_arg(timeout)?;
        let next = match self.live() {
            Some(engine) => py.detach(|| engine.next_event(timeout)).or_else(|| self.pop_closed_event()),
            None => self.pop_closed_event(),
        };
        Ok(next.as_ref().map(event_dict))
    }

    /// Pauses the job.
    fn pause(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.live_or_closed()?;
        py.detach(|| engine.verb(|j| j.pause())).map_err(verb_error)
    }

    /// Resumes the job.
    fn resume(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.live_or_closed()?;
        py.detach(|| engine.verb(|j| j.resume())).map_err(verb_error)
    }

    /// Asks for completion (pivot); use `wait_end` to wait for it.
    fn complete(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.live_or_closed()?;
        py.detach(|| engine.verb(|j| j.complete())).map_err(verb_error)
    }

    /// Asks for a cancel; use `wait_end` to wait for it.
    #[pyo3(signature = (force=false))]
    fn cancel(&self, py: Python<'_>, force: bool) -> PyResult<()> {
        let engine = self.live_or_closed()?;
        py.detach(|| engine.verb(|j| j.cancel(force))).map_err(verb_error)
    }

    /// Changes the speed limit (bytes per second, 0 = unlimited).
    fn set_speed(&self, py: Python<'_>, bytes_per_sec: UInt) -> PyResult<()> {
        let engine = self.live_or_closed()?;
        py.detach(|| engine.verb(|j| j.set_speed(bytes_per_sec.0))).map_err(verb_error)
    }

    /// Changes the copy mode ("background" or "write-blocking").
    fn set_copy_mode(&self, py: Python<'_>, mode: &str) -> PyResult<()> {
        let mode = crate::convert::parse_name::<CopyMode>(mode)?;
        let engine = self.live_or_closed()?;
        py.detach(|| engine.verb(|j| j.set_copy_mode(mode))).map_err(verb_error)
    }

    /// The job's status name.
    #[getter]
    fn status(&self) -> &'static str {
        self.snapshot_now().status.as_str()
    }

    /// (current, total) bytes.
    #[getter]
    fn progress(&self) -> (u64, u64) {
        let p = self.snapshot_now().progress;
        (p.current, p.total)
    }

    /// Status, progress, counters and failure in one consistent dict.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.snapshot_now();
        let d = PyDict::new(py);
        d.set_item("status", s.status.as_str())?;
        d.set_item("current", s.progress.current)?;
        d.set_item("total", s.progress.total)?;
        d.set_item("copy_mode", s.copy_mode.as_str())?;
        d.set_item("finished", s.finished)?;
        d.set_item("ready", s.ready)?;
        d.set_item("pivoted", s.pivoted)?;
        let st = &s.stats;
        d.set_item("bytes_read", st.bytes_read)?;
        d.set_item("bytes_written", st.bytes_written)?;
        d.set_item("bytes_offloaded", st.bytes_offloaded)?;
        d.set_item("bytes_zeroed", st.bytes_zeroed)?;
        d.set_item("bytes_punched", st.bytes_punched)?;
        d.set_item("zero_reads", st.zero_reads)?;
        d.set_item("guest_bytes_written", st.guest_bytes_written)?;
        d.set_item("guest_bytes_mirrored", st.guest_bytes_mirrored)?;
        d.set_item("flushes", st.flushes)?;
        d.set_item("failed_ops", st.failed_ops)?;
        d.set_item("injected_faults", s.injected_faults)?;
        d.set_item("initial_total", st.initial_total)?;
        d.set_item("ready_ns", st.ready_ns)?;
        d.set_item("end_ns", st.end_ns)?;
        d.set_item("internal_error", s.internal_error)?;
        d.set_item("events_dropped", s.events_dropped)?;
        match s.failure {
            Some(f) => {
                let fd = PyDict::new(py);
                fd.set_item("errno", f.error.errno())?;
                fd.set_item("error", f.error.name())?;
                fd.set_item("message", f.error.to_string())?;
                fd.set_item("operation", f.operation.map(|o| o.as_str()))?;
                fd.set_item("offset", f.offset)?;
                d.set_item("failure", fd)?;
            }
            None => d.set_item("failure", py.None())?,
        }
        Ok(d)
    }

    /// Force-cancels a job that has not ended, waits, stops every thread and closes the
    /// files. Idempotent; status, snapshot and the untaken events stay readable.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            let _one_at_a_time = self.closing.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(engine) = self.live() else { return };
            engine.close();
            {
                let mut events = self.closed_events.lock().unwrap_or_else(PoisonError::into_inner);
                events.extend(engine.take_events());
            }
            let _ = self.after_close.set(engine.snapshot());
            *self.live.lock().unwrap_or_else(PoisonError::into_inner) = None;
            // Usually the last reference: the files close here.
            drop(engine);
        });
    }

    /// Whether `close` ran.
    #[getter]
    fn closed(&self) -> bool {
        self.live().is_none()
    }
}
