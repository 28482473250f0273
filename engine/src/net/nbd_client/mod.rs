//! `NbdClient`: a blocking NBD client that many threads share.
//!
//! Threads: one reader thread owns the socket's read half, feeds the bytes to the
//! [`ClientSession`] and hands each reply to the caller waiting on its cookie (a one-slot
//! channel per request). Callers send under a writer lock, so several requests are in
//! flight at once and replies may come in any order.
//!
//! Locks: `state` (the session and the waiters) is held only to account a request and
//! encode its header, or to parse input, never across socket I/O or a payload copy; the
//! writer lock is held only while writing. A write's payload goes from the caller's slice
//! to the socket in one vectored write after its header: no copy in user space. A
//! server slow to read therefore never keeps the reader thread from taking replies (which
//! would deadlock both sides).
//!
//! Failure: when the connection drops or the server breaks the protocol, the reader
//! marks the state dead and drops every waiter's channel: every waiting call and every
//! later one returns [`NbdClientError::Disconnected`]. A waiter is registered under the
//! same lock that marks the state dead, so none can be left behind.
//!
//! Time limits ([`ClientConfig`]): a server that accepts requests and never answers, or a
//! TCP peer gone without a reset, would otherwise hold its callers forever. So every
//! request has a deadline, `request_timeout` after it was written whole; the caller that
//! sees its deadline pass declares the connection dead exactly as the reader does when the
//! connection drops (state dead, every waiter's channel dropped, socket shut down), and
//! returns [`NbdClientError::TimedOut`]; every other caller returns `Disconnected` at once.
//! Writes to the socket carry the same limit (a write that moves no byte for that long
//! fails and kills the connection), so no caller waits on the writer lock without bound
//! either. Connecting and each step of the handshake are bounded by `connect_timeout`.
//! An idle connection (no request outstanding) never times out.
//!
//! Submodules, one job each:
//! - `connection`: connecting, the handshake, the reader thread and closing.
//! - `requests`: the blocking request API, each call split into pieces the export takes.
//! - `submission`: one request's way out and back: accounted, written, waited for.

mod connection;
mod requests;
mod submission;

use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::nbd::{ClientError, ClientSession, ExportInfo, NbdError, ReplyPayload};

use super::stream::Stream;

/// How long a client waits on its server before it gives the connection up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// The longest wait for the connection itself (a TCP connect, or a Unix listener
    /// that accepts nothing) and, separately, for each read or write of the handshake.
    pub connect_timeout: Duration,
    /// The longest a request may go unanswered, counted from when it was written whole,
    /// before the connection is declared dead; also the longest a write to the socket may
    /// move no byte. A server that is merely slow must answer within it: a request cannot
    /// be abandoned alone (its reply would still come), so a missed deadline costs the
    /// whole connection and the requests in flight on it.
    pub request_timeout: Duration,
}

impl Default for ClientConfig {
    /// 30 s to connect and for each handshake step; 60 s per request.
    ///
    /// A healthy server answers a handshake step at once, so 30 s only absorbs a loaded
    /// host. Requests get more: the slowest healthy answers are a flush that writes back a
    /// large dirty page cache to slow storage, or a full-size write queued behind others on
    /// a disk that is busy; both can take tens of seconds. Giving up too early is the worse
    /// error: with the mirror's default `report` policy it fails a job that would have
    /// succeeded, while waiting 60 s rather than 30 s for a dead server only delays a
    /// retry or a failure that comes anyway.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NbdClientError {
    /// The socket could not be opened, or failed during the handshake.
    #[error("connecting to {uri}: {source}")]
    Connect {
        /// The URI.
        uri: String,
        /// The OS error.
        source: io::Error,
    },
    /// The handshake failed.
    #[error("NBD handshake: {0}")]
    Handshake(ClientError),
    /// The server answered with an error.
    #[error("{operation} failed on the server: {errno}")]
    Server {
        /// The server's error.
        errno: NbdError,
        /// The command (`"read"`, `"write"`...).
        operation: &'static str,
    },
    /// The connection is gone (closed, dropped by the server, or broken by it, or
    /// declared dead after another request timed out).
    #[error("the NBD connection is closed")]
    Disconnected,
    /// The server did not answer this request (or take its bytes) within the request
    /// timeout; the connection was declared dead and every other call on it fails with
    /// [`Disconnected`](Self::Disconnected).
    #[error(
        "the NBD server did not answer a {operation} within {after:?}; the connection was closed"
    )]
    TimedOut {
        /// The command (`"read"`, `"write"`...).
        operation: &'static str,
        /// The request timeout.
        after: Duration,
    },
    /// The range does not lie within the export.
    #[error("range {offset}+{length} lies outside the export of {size} bytes")]
    OutOfRange {
        /// First byte.
        offset: u64,
        /// Bytes.
        length: u64,
        /// The export's size.
        size: u64,
    },
    /// The request does not fit the export (read-only, unsupported, misaligned).
    #[error("request refused before sending: {0}")]
    Refused(ClientError),
}

struct State {
    session: ClientSession,
    waiters: HashMap<u64, Sender<Result<ReplyPayload, NbdError>>>,
    dead: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The write half; messages are written whole under this lock.
    writer: Mutex<Stream>,
    /// A handle for `shutdown` that needs no lock (a writer may be blocked).
    control: Stream,
}

impl Shared {
    /// Ends the connection: later calls fail at once, every waiter's channel is dropped
    /// (its caller returns `Disconnected`), and the socket is shut down, which wakes the
    /// reader thread and any blocked writer. Idempotent. Takes the state lock: callers may
    /// hold the writer lock, never the state lock.
    fn declare_dead(&self) {
        let mut state = lock(&self.state);
        state.dead = true;
        state.waiters.clear();
        drop(state);
        let _ = self.control.shutdown(Shutdown::Both);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves them consistent (every update is a single
    // call into the session or the map), so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connected NBD client; `&self` methods may be called from many threads at once.
pub struct NbdClient {
    info: ExportInfo,
    config: ClientConfig,
    shared: Arc<Shared>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for NbdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdClient")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl NbdClient {
    /// The export as negotiated (its maximum payload capped at 32 MiB).
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    /// The time limits this client was connected with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        self.close();
    }
}
