//! `blockmirror._native.NbdClient`: the engine's blocking NBD client, for Python.
//!
//! One connection that many Python threads may share: every call releases the GIL while it
//! waits for the server, so requests of several threads are in flight together (the engine
//! client matches replies to requests by cookie).
//!
//! Errors:
//! - a malformed URI, or a range the client can tell is wrong before sending (past the end
//!   of the export, misaligned, a read longer than [`MAX_READ`]) → `InvalidArgument`, as
//!   `Mirror.read` / `Mirror.write` refuse a range outside the disk;
//! - the connection or handshake failing, the server's error replies, a request to a
//!   read-only export (`EPERM`, the server's own answer) or one the export does not offer
//!   (`ENOTSUP`), the connection gone (`ENOTCONN`) → `IoError`, whose `errno` is the NBD
//!   error (its values are the Linux errno values: `EPERM`, `EIO`, `ENOSPC`, `EINVAL`...),
//!   `operation` one of "connect", "read", "write", "flush", "trim", "zero",
//!   "block_status", and `offset` the request's first byte.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use blockmirror_engine::nbd::{ClientError, ExportInfo, NbdUri};
use blockmirror_engine::net::{NbdClient as Engine, NbdClientError};

use crate::convert::UInt;
use crate::errors::{invalid_argument, io_error};

/// The longest read one call may ask for: the bytes object is allocated before the reply
/// comes, so a length from untrusted input must not reserve unbounded memory.
const MAX_READ: u64 = 64 << 20;

/// The `IoError` errno of a handshake failure.
fn handshake_errno(e: &ClientError) -> i32 {
    match e {
        ClientError::UnknownExport(_) => libc::ENOENT,
        ClientError::ServerShutdown => libc::ESHUTDOWN,
        _ => libc::EPROTO,
    }
}

/// The Python exception for an engine client error of `operation` at `offset`.
fn client_error(e: NbdClientError, operation: &str, offset: Option<u64>) -> PyErr {
    let msg = e.to_string();
    match e {
        NbdClientError::Connect { source, .. } => {
            io_error(source.raw_os_error().unwrap_or(libc::ECONNREFUSED), "connect", None, msg)
        }
        NbdClientError::Handshake(error) => io_error(handshake_errno(&error), "connect", None, msg),
        NbdClientError::Server { errno, .. } => {
            let errno = i32::try_from(errno.to_wire()).unwrap_or(libc::EINVAL);
            io_error(errno, operation, offset, msg)
        }
        NbdClientError::Disconnected => io_error(libc::ENOTCONN, operation, offset, msg),
        NbdClientError::OutOfRange { .. } => invalid_argument(msg),
        NbdClientError::Refused(ClientError::ReadOnly) => io_error(libc::EPERM, operation, offset, msg),
        NbdClientError::Refused(ClientError::Unsupported(_)) => io_error(libc::ENOTSUP, operation, offset, msg),
        NbdClientError::Refused(ClientError::Closed | ClientError::NotReady) => {
            io_error(libc::ENOTCONN, operation, offset, msg)
        }
        NbdClientError::Refused(_) => invalid_argument(msg),
        // A kind the engine adds later: an I/O failure of this request.
        _ => io_error(libc::EIO, operation, offset, msg),
    }
}

/// The bytes of `data`: a bytes object as is, anything else through `bytes(data)`
/// (bytearray, memoryview, array...).
fn data_arg(data: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    match data.cast::<PyBytes>() {
        Ok(b) => Ok(b.as_bytes().to_vec()),
        Err(_) => {
            let bytes = data.py().import("builtins")?.getattr("bytes")?.call1((data,))?;
            Ok(bytes.cast::<PyBytes>()?.as_bytes().to_vec())
        }
    }
}

/// A connection to one NBD export (see `blockmirror.NbdClient`).
#[pyclass(frozen, module = "blockmirror._native")]
pub struct NbdClient {
    client: Engine,
    info: ExportInfo,
    uri: String,
}

impl NbdClient {
    /// `EPERM` for a change to a read-only export, whatever else the export lacks (a
    /// read-only export often does not offer trim or zeroes either: the refusal that
    /// explains is that it cannot be written).
    fn writable(&self, operation: &str, offset: u64) -> PyResult<()> {
        if self.info.read_only {
            return Err(io_error(libc::EPERM, operation, Some(offset), format!("{}: the export is read-only", self.uri)));
        }
        Ok(())
    }
}

#[pymethods]
impl NbdClient {
    /// Connects to `uri` (`nbd://HOST[:PORT]/EXPORT` or `nbd+unix:///EXPORT?socket=PATH`)
    /// and negotiates.
    #[new]
    fn new(py: Python<'_>, uri: &str) -> PyResult<Self> {
        let parsed = NbdUri::parse(uri).map_err(|e| invalid_argument(format!("{uri:?}: {e}")))?;
        let client = py.detach(|| Engine::connect(&parsed)).map_err(|e| client_error(e, "connect", None))?;
        let info = client.info().clone();
        Ok(Self { client, info, uri: uri.to_owned() })
    }

    /// Reads `length` bytes at `offset` (at most 64 MiB per call).
    fn read<'py>(&self, py: Python<'py>, offset: UInt, length: UInt) -> PyResult<Bound<'py, PyBytes>> {
        let (offset, length) = (offset.0, length.0);
        if length > MAX_READ {
            return Err(invalid_argument(format!(
                "a read of {length} bytes is longer than the limit of {MAX_READ} bytes per call"
            )));
        }
        if offset.checked_add(length).is_none_or(|end| end > self.info.size) {
            return Err(invalid_argument(format!(
                "range {offset}+{length} lies outside the export of {} bytes",
                self.info.size
            )));
        }
        let len = usize::try_from(length).expect("at most MAX_READ");
        let data = py
            .detach(|| {
                let mut buf = vec![0u8; len];
                self.client.read(offset, &mut buf).map(|()| buf)
            })
            .map_err(|e| client_error(e, "read", Some(offset)))?;
        Ok(PyBytes::new(py, &data))
    }

    /// Writes `data` at `offset`; `fua`: on stable storage before the call returns.
    #[pyo3(signature = (offset, data, fua=false))]
    fn write(&self, py: Python<'_>, offset: UInt, data: &Bound<'_, PyAny>, fua: bool) -> PyResult<()> {
        let bytes = data_arg(data)?;
        self.writable("write", offset.0)?;
        py.detach(|| self.client.write(offset.0, &bytes, fua))
            .map_err(|e| client_error(e, "write", Some(offset.0)))
    }

    /// Makes every write already answered durable.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.client.flush()).map_err(|e| client_error(e, "flush", None))
    }

    /// Tells the server `length` bytes at `offset` are no longer needed.
    fn trim(&self, py: Python<'_>, offset: UInt, length: UInt) -> PyResult<()> {
        self.writable("trim", offset.0)?;
        py.detach(|| self.client.trim(offset.0, length.0))
            .map_err(|e| client_error(e, "trim", Some(offset.0)))
    }

    /// Makes `length` bytes at `offset` read as zeroes. `no_hole`: keep them allocated;
    /// `fast_zero`: fail with `ENOTSUP` rather than be slower than writing zeroes.
    #[pyo3(signature = (offset, length, no_hole=false, fast_zero=false))]
    fn write_zeroes(&self, py: Python<'_>, offset: UInt, length: UInt, no_hole: bool, fast_zero: bool) -> PyResult<()> {
        self.writable("zero", offset.0)?;
        py.detach(|| self.client.write_zeroes(offset.0, length.0, no_hole, fast_zero))
            .map_err(|e| client_error(e, "zero", Some(offset.0)))
    }

    /// The `base:allocation` extents of the range: `(offset, length, flags)` tuples that
    /// cover it exactly, in order (flags: 1 hole, 2 reads as zeroes).
    fn block_status(&self, py: Python<'_>, offset: UInt, length: UInt) -> PyResult<Vec<(u64, u64, u32)>> {
        let start = offset.0;
        let extents = py
            .detach(|| self.client.block_status(start, length.0))
            .map_err(|e| client_error(e, "block_status", Some(start)))?;
        let mut at = start;
        Ok(extents
            .into_iter()
            .map(|extent| {
                let row = (at, u64::from(extent.length), extent.flags);
                at += u64::from(extent.length);
                row
            })
            .collect())
    }

    /// Disconnects (politely: `NBD_CMD_DISC`). Calls still waiting, and later ones, raise
    /// `IoError` (`ENOTCONN`). Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.client.close());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    /// The URI this client connected to.
    #[getter]
    fn uri(&self) -> String {
        self.uri.clone()
    }

    /// The export's size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.info.size
    }

    /// The export's name.
    #[getter]
    fn export(&self) -> String {
        self.info.name.clone()
    }

    /// Writes, trims and zeroes are refused.
    #[getter]
    fn read_only(&self) -> bool {
        self.info.read_only
    }

    /// The server takes `trim`.
    #[getter]
    fn can_trim(&self) -> bool {
        self.info.can_trim
    }

    /// The server takes `write_zeroes`.
    #[getter]
    fn can_zero(&self) -> bool {
        self.info.can_write_zeroes
    }

    /// The server takes `write_zeroes(..., fast_zero=True)`.
    #[getter]
    fn can_fast_zero(&self) -> bool {
        self.info.can_fast_zero
    }

    /// The server takes `flush`.
    #[getter]
    fn can_flush(&self) -> bool {
        self.info.can_flush
    }

    /// The server takes `write(..., fua=True)`.
    #[getter]
    fn can_fua(&self) -> bool {
        self.info.can_fua
    }

    /// Several connections see one another's flushed writes.
    #[getter]
    fn can_multi_conn(&self) -> bool {
        self.info.can_multi_conn
    }

    /// `(minimum, preferred, maximum)` request sizes in bytes (maximum capped at 32 MiB;
    /// longer reads and writes are split).
    #[getter]
    fn block_size(&self) -> (u32, u32, u32) {
        let b = &self.info.block_size;
        (b.minimum, b.preferred, b.maximum)
    }

    fn __repr__(&self) -> String {
        format!("<blockmirror.NbdClient {} size={}>", self.uri, self.info.size)
    }
}
