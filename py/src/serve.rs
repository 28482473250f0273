//! `blockmirror._native.NbdServer`: the Python face of the engine's `serve` (a live disk
//! exported over NBD, jobs driven over QMP). `blockmirror.serve` (Python) wraps it.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;

use blockmirror_engine::serve::disk::DiskError;
use blockmirror_engine::serve::{ListenAddress, ServeConfig, ServeError, Server};

use crate::convert::UInt;
use crate::errors::{invalid_argument, io_error};

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
        ServeError::Os { what, source } => {
            io_error(source.raw_os_error().unwrap_or(libc::EIO), "open", None, format!("{what}: {source}"))
        }
    }
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
        max_clients=UInt(64), direct=false),
        text_signature = "(source, *, socket=None, listen=None, export='disk', qmp=None, read_only=False, \
        max_clients=64, direct=False)")]
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
    ) -> PyResult<Self> {
        let mut config = ServeConfig::new(source, export.to_owned(), listen_address(socket, listen)?);
        config.qmp = qmp;
        config.read_only = read_only;
        config.max_clients = usize::try_from(max_clients.0).unwrap_or(usize::MAX);
        config.mirror.direct = direct;
        let server = py.detach(|| Server::start(config)).map_err(serve_error)?;
        let uri = server.uri();
        let address = server.address().to_string();
        Ok(Self { server: Mutex::new(Some(server)), uri, address })
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
            let quit = py.detach(|| self.with(|s| s.wait_quit(Some(wait))).unwrap_or(true));
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
