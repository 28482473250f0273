//! `blockmirror._native.NbdServer`: the Python face of the engine's `serve` (a live disk
//! exported over NBD, jobs driven over QMP). `blockmirror.serve` (Python) wraps it.
//!
//! In-process control: `execute` runs a QMP command as the monitor does (the same parser,
//! the same job controller, the same answers and error classes), without a socket;
//! `next_event` hands out the job events a monitor client would receive, from a
//! subscription taken when the server starts (so none is missed, however late the first
//! call). Those events wait in an unbounded queue until taken: a job sends a handful
//! (status changes, ready, completed), not one per request.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use pyo3::create_exception;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::{json, Map, Value};

use blockmirror_engine::qmp::commands::{command_names, parse_command, ArgReader};
use blockmirror_engine::qmp::{Command, Greeting, QmpError as EngineQmpError, QmpEvent};
use blockmirror_engine::serve::disk::DiskError;
use blockmirror_engine::serve::{ListenAddress, ServeConfig, ServeError, Server};

use crate::convert::UInt;
use crate::errors::{invalid_argument, io_error, job_state_error, BlockMirrorError};

create_exception!(
    blockmirror,
    QmpError,
    BlockMirrorError,
    "A QMP command was refused; .error_class is QEMU's class (GenericError, CommandNotFound, \
     DeviceNotFound, DeviceNotActive), .desc its description."
);

/// The `QmpError` for a refusal, with its class and description as attributes.
fn qmp_error(e: &EngineQmpError) -> PyErr {
    Python::attach(|py| {
        let make = || -> PyResult<PyErr> {
            let exc = py.get_type::<QmpError>().call1((e.to_string(),))?;
            exc.setattr("error_class", e.class.as_str())?;
            exc.setattr("desc", e.desc.as_str())?;
            Ok(PyErr::from_value(exc))
        };
        make().unwrap_or_else(|err| err)
    })
}

/// Answers the commands the monitor's session answers itself (the driver never sees
/// them); `None` for a name QMP does not know.
fn session_command(name: &str, arguments: &Map<String, Value>) -> Option<Result<Value, EngineQmpError>> {
    let no_arguments = || ArgReader::new(arguments).finish();
    match name {
        // The in-process caller is negotiated from the start, as a monitor client is after
        // `qmp_capabilities`: QEMU refuses a second negotiation with this class.
        "qmp_capabilities" => Some(Err(EngineQmpError::command_not_found(
            "Capabilities negotiation is already complete, command ignored",
        ))),
        "query-version" => Some(no_arguments().map(|()| Greeting::blockmirror().version_info())),
        "query-commands" => Some(
            no_arguments().map(|()| Value::Array(command_names().map(|name| json!({"name": name})).collect())),
        ),
        _ => None,
    }
}

/// A Python value as JSON (through the `json` module: dicts, lists, str, int, float,
/// bool, None), or `InvalidArgument` naming what does not convert.
fn to_json(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    let text: String = value
        .py()
        .import("json")?
        .call_method1("dumps", (value,))
        .and_then(|t| t.extract())
        .map_err(|e| invalid_argument(format!("{what} must be JSON-like (dict, list, str, int, float, bool, None): {e}")))?;
    serde_json::from_str(&text).map_err(|e| invalid_argument(format!("{what}: {e}")))
}

/// A JSON value as the Python value `json.loads` makes of it.
fn from_json<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (value.to_string(),))
}

fn serve_error(e: ServeError) -> PyErr {
    match e {
        ServeError::Invalid(msg) => invalid_argument(msg),
        ServeError::Disk(DiskError::Invalid(msg)) => invalid_argument(msg),
        ServeError::Disk(DiskError::Open { path, source }) => io_error(
            source.raw_os_error().unwrap_or(libc::EIO),
            "open",
            None,
            format!("cannot open {}: {source}", path.display()),
        ),
        ServeError::Disk(e @ DiskError::Locked(_)) => io_error(libc::EAGAIN, "open", None, e.to_string()),
        ServeError::Disk(DiskError::Bitmap { path, source }) => {
            let message = format!("bitmap file {}: {source}", path.display());
            crate::persist::persist_error_saying(source, message)
        }
        ServeError::Os { what, source } => {
            io_error(source.raw_os_error().unwrap_or(libc::EIO), "open", None, format!("{what}: {source}"))
        }
    }
}

/// A window in seconds as nanoseconds: 0 is off, negative or NaN refused, beyond u64
/// nanoseconds (infinity included) saturates, so it never passes rather than wrapping.
fn window_ns(seconds: f64) -> PyResult<u64> {
    if seconds.is_nan() || seconds < 0.0 {
        return Err(invalid_argument(format!(
            "not_converging_window must be a non-negative number of seconds, not {seconds}"
        )));
    }
    let ns = seconds * 1e9;
    // `as` saturates a float beyond the range (and infinity) at u64::MAX.
    Ok(ns as u64)
}

/// Where to listen: a unix socket path, or `HOST:PORT` for TCP.
fn listen_address(socket: Option<PathBuf>, listen: Option<&str>) -> PyResult<ListenAddress> {
    match (socket, listen) {
        (Some(_), Some(_)) => Err(invalid_argument("give socket= or listen=, not both")),
        (Some(path), None) => Ok(ListenAddress::Unix(path)),
        (None, Some(hostport)) => {
            let addr = hostport
                .to_socket_addrs()
                .map_err(|e| invalid_argument(format!("listen={hostport:?} is not HOST:PORT: {e}")))?
                .next()
                .ok_or_else(|| invalid_argument(format!("listen={hostport:?} names no address")))?;
            Ok(ListenAddress::Tcp(addr))
        }
        (None, None) => Err(invalid_argument("give socket= (a unix socket path) or listen= (HOST:PORT)")),
    }
}

/// A running NBD server of one disk (see `blockmirror.serve`).
#[pyclass(frozen, module = "blockmirror._native")]
pub struct NbdServer {
    server: Mutex<Option<Server>>,
    uri: String,
    address: String,
    export: String,
    /// Every job event since the server started (see the module doc).
    events: Receiver<QmpEvent>,
    /// `quit` was run through `execute` (the monitor's own `quit` ends `wait_quit` itself).
    quit_asked: AtomicBool,
}

impl NbdServer {
    fn with<T>(&self, f: impl FnOnce(&Server) -> T) -> Option<T> {
        self.server.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(f)
    }
}

#[pymethods]
impl NbdServer {
    #[new]
    #[pyo3(signature = (source, *, socket=None, listen=None, export="disk", qmp=None, read_only=false,
        max_clients=UInt(64), direct=false, not_converging_window=10.0, format=None, bitmap=None, bitmap_min_generation=0),
        text_signature = "(source, *, socket=None, listen=None, export='disk', qmp=None, read_only=False, \
        max_clients=64, direct=False, not_converging_window=10.0, format=None, bitmap=None, bitmap_min_generation=0)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        source: PathBuf,
        socket: Option<PathBuf>,
        listen: Option<&str>,
        export: &str,
        qmp: Option<PathBuf>,
        read_only: bool,
        max_clients: UInt,
        direct: bool,
        not_converging_window: f64,
        format: Option<&str>,
        bitmap: Option<PathBuf>,
        bitmap_min_generation: u64,
    ) -> PyResult<Self> {
        let export = export.to_owned();
        let mut config = ServeConfig::new(source, export.clone(), listen_address(socket, listen)?);
        config.qmp = qmp;
        config.read_only = read_only;
        config.bitmap = bitmap;
        config.bitmap_min_generation = bitmap_min_generation;
        config.max_clients = usize::try_from(max_clients.0).unwrap_or(usize::MAX);
        config.mirror.direct = direct;
        config.mirror.format = format
            .map(|name| blockmirror_engine::image::ImageFormat::parse(name).map_err(invalid_argument))
            .transpose()?;
        // Jobs started over QMP take this watch from the server (drive-mirror has no such
        // parameter): 0 turns it off, a window beyond a century never passes.
        config.mirror.config.not_converging_window_ns = window_ns(not_converging_window)?;
        let server = py.detach(|| Server::start(config)).map_err(serve_error)?;
        let uri = server.uri();
        let address = server.address().to_string();
        let events = server.jobs().subscribe();
        Ok(Self { server: Mutex::new(Some(server)), uri, address, export, events, quit_asked: AtomicBool::new(false) })
    }

    /// The export's name, also the QMP device name of its disk.
    #[getter]
    fn export(&self) -> String {
        self.export.clone()
    }

    /// Runs the QMP command `command` with `arguments` (QMP's names: `job-id`, `copy-mode`)
    /// as a monitor client would, and returns its `return` value. A refusal raises
    /// `QmpError` with QEMU's class and description.
    #[pyo3(signature = (command, arguments=None))]
    fn execute<'py>(
        &self,
        py: Python<'py>,
        command: &str,
        arguments: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let arguments = match arguments.filter(|a| !a.is_none()) {
            None => Map::new(),
            Some(a) if a.is_instance_of::<PyDict>() => match to_json(a, "arguments")? {
                Value::Object(map) => map,
                _ => return Err(invalid_argument("arguments must be a dict")),
            },
            Some(a) => {
                let ty = a.get_type().name().map(|n| n.to_string()).unwrap_or_default();
                return Err(invalid_argument(format!("arguments must be a dict or None, not {ty}")));
            }
        };
        let result = match parse_command(command, &arguments) {
            Err(e) => Err(e),
            Ok(Some(parsed)) => {
                let quit = parsed == Command::Quit;
                let jobs = self.with(|s| std::sync::Arc::clone(s.jobs()));
                let Some(jobs) = jobs else {
                    return Err(job_state_error("the server is closed"));
                };
                let result = py.detach(|| jobs.execute(parsed));
                if quit && result.is_ok() {
                    self.quit_asked.store(true, Ordering::SeqCst);
                }
                result
            }
            Ok(None) => session_command(command, &arguments).unwrap_or_else(|| {
                Err(EngineQmpError::command_not_found(format!("The command {command} has not been found")))
            }),
        };
        match result {
            Ok(value) => from_json(py, &value),
            Err(e) => Err(qmp_error(&e)),
        }
    }

    /// The next job event as a QMP event dict (`event`, `data`, `timestamp`), waiting up to
    /// `timeout` seconds (None: until one comes); None on timeout, or once the server is
    /// closed and every event has been taken.
    #[pyo3(signature = (timeout=None))]
    fn next_event<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<Bound<'py, PyAny>>> {
        next_from(py, &self.events, timeout, || self.closed())
    }

    /// A new, independent subscription to every job event from now on (the events
    /// `next_event` hands out are not taken from it, nor its events from `next_event`).
    fn subscribe(&self) -> PyResult<EventSubscription> {
        let events = self.with(|s| s.jobs().subscribe()).ok_or_else(|| job_state_error("the server is closed"))?;
        Ok(EventSubscription { events })
    }

    /// The running job as a live view draws it, or None when no job runs: a dict with
    /// `job` (its id), `status`, `current` and `total` (progress bytes), `length` (disk
    /// bytes), `granularity` (bytes per chunk), `chunks`, `dirty_bytes` and `bits` (the
    /// dirty bitmap, one bit per chunk: chunk k is bit k % 8 of byte k / 8) and `ops` (the
    /// operations that own or wait for chunks: `(id, kind, offset, length)` tuples, kind as
    /// `MirrorJob.ops` names it), read together under the job's lock.
    fn job_state<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some((id, mirror)) = self.with(|s| s.jobs().running_job()).flatten() else {
            return Ok(None);
        };
        let state = py.detach(|| {
            mirror.verb(|job| {
                let bitmap = job.bitmap();
                let bits = bitmap.serialize(0, bitmap.size()).ok();
                let ops = crate::job::ops_list(job);
                Ok((
                    job.status(),
                    job.progress(),
                    job.config().length,
                    job.config().granularity,
                    bitmap.granules(),
                    job.dirty_bytes(),
                    bits,
                    ops,
                ))
            })
        });
        // A job that broke or has just ended has no view to give: as if none ran.
        let Ok((status, progress, length, granularity, chunks, dirty_bytes, Some(bits), ops)) = state else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("job", id)?;
        d.set_item("status", status.as_str())?;
        d.set_item("current", progress.current)?;
        d.set_item("total", progress.total)?;
        d.set_item("length", length)?;
        d.set_item("granularity", granularity)?;
        d.set_item("chunks", chunks)?;
        d.set_item("dirty_bytes", dirty_bytes)?;
        d.set_item("bits", pyo3::types::PyBytes::new(py, &bits))?;
        d.set_item("ops", ops)?;
        Ok(Some(d))
    }

    /// The export's NBD URI.
    #[getter]
    fn uri(&self) -> String {
        self.uri.clone()
    }

    /// Where clients connect (`unix:PATH` or `tcp:HOST:PORT`).
    #[getter]
    fn address(&self) -> String {
        self.address.clone()
    }

    /// Whether a bitmap file left by an unfinished job is there (client writes are marked
    /// in it, and a `drive-mirror` with `resume` copies only what it marks).
    #[getter]
    fn resumable(&self) -> bool {
        self.with(|server| server.disk().has_left_behind_bitmap()).unwrap_or(false)
    }

    /// Clients connected now (0 once closed).
    #[getter]
    fn client_count(&self) -> usize {
        self.with(Server::client_count).unwrap_or(0)
    }

    /// Waits until `quit` is asked over QMP (True) or `timeout` seconds pass (False).
    #[pyo3(signature = (timeout=None))]
    fn wait_quit(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = crate::mirror::timeout_arg(timeout)?;
        // Wait in short steps with the GIL released, so Ctrl-C reaches Python promptly.
        let step = std::time::Duration::from_millis(100);
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            let wait = left.map_or(step, |l| l.min(step));
            let quit = self.quit_asked.load(Ordering::SeqCst)
                || py.detach(|| self.with(|s| s.wait_quit(Some(wait))).unwrap_or(true));
            if quit {
                return Ok(true);
            }
            if left.is_some_and(|l| l <= step) {
                return Ok(false);
            }
            py.check_signals()?;
        }
    }

    /// Stops serving: a running job is force-cancelled, requests in flight are answered, the
    /// disk is flushed, the sockets are removed. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let server = self.server.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(server) = server else { return Ok(()) };
        py.detach(|| {
            let r = server.shutdown();
            drop(server);
            r
        })
        .map_err(|e| io_error(e.raw_os_error().unwrap_or(libc::EIO), "flush", None, e.to_string()))
    }

    /// Whether `close` ran.
    #[getter]
    fn closed(&self) -> bool {
        self.server.lock().unwrap_or_else(PoisonError::into_inner).is_none()
    }
}

/// An independent receiver of every job event of one server, from its creation on (see
/// `NbdServer.subscribe`); unbounded, as the server's own queue is.
#[pyclass(frozen, module = "blockmirror._native")]
pub struct EventSubscription {
    events: Receiver<QmpEvent>,
}

#[pymethods]
impl EventSubscription {
    /// The next event as a QMP event dict, waiting up to `timeout` seconds (None: until one
    /// comes); None on timeout or once the server is closed and every event was taken.
    #[pyo3(signature = (timeout=None))]
    fn next<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<Bound<'py, PyAny>>> {
        next_from(py, &self.events, timeout, || false)
    }
}

/// The next event of `events` as a QMP event dict, waiting up to `timeout` seconds (None:
/// until one comes); None on timeout, when the sender is gone, or once `closed()` holds and
/// nothing is queued. Waits in short steps with the GIL released, so Ctrl-C reaches Python
/// promptly.
fn next_from<'py>(
    py: Python<'py>,
    events: &Receiver<QmpEvent>,
    timeout: Option<f64>,
    closed: impl Fn() -> bool,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let timeout = crate::mirror::timeout_arg(timeout)?;
    let step = Duration::from_millis(100);
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let wait = left.map_or(step, |l| l.min(step));
        match py.detach(|| events.recv_timeout(wait)) {
            Ok(event) => return from_json(py, &event.to_json()).map(Some),
            Err(RecvTimeoutError::Disconnected) => return Ok(None),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if closed() && events.is_empty() {
            return Ok(None);
        }
        if left.is_some_and(|l| l <= step) {
            return Ok(None);
        }
        py.check_signals()?;
    }
}
