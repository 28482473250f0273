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

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::nbd::{
    ClientError, ClientEvent, ClientOptions, ClientSession, Command, ExportInfo, Extent, NbdError,
    NbdUri, ReplyPayload,
};

use super::stream::{connect_timeout, Stream};

/// Bytes the reader thread reads at once.
const READ_BUFFER: usize = 256 << 10;
/// The longest trim, write zeroes or block status request (before alignment): commands
/// without payload may exceed the maximum payload, but lengths are 32-bit.
const MAX_EFFECT_LENGTH: u64 = 1 << 30;
/// Pieces of one split read or write in flight at once.
const SPLIT_WINDOW: usize = 8;

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

/// Where one request's reply arrives.
type ReplyReceiver = Receiver<Result<ReplyPayload, NbdError>>;

/// A request sent and not yet answered: its reply arrives on `receiver` (dropped when the
/// connection dies), which is waited on until `deadline` (`None`: the timeout reaches past
/// what `Instant` holds, so no deadline).
struct Pending {
    receiver: ReplyReceiver,
    deadline: Option<Instant>,
    operation: &'static str,
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
    /// Connects and negotiates (structured replies and `base:allocation` when the server
    /// offers them), with the default time limits ([`ClientConfig::default`]).
    pub fn connect(uri: &NbdUri) -> Result<Self, NbdClientError> {
        Self::connect_with(uri, ClientConfig::default())
    }

    /// [`connect`](Self::connect) with the time limits of `config`. A zero timeout is
    /// refused (`Connect` with `InvalidInput`): the OS takes zero as "no limit".
    pub fn connect_with(uri: &NbdUri, config: ClientConfig) -> Result<Self, NbdClientError> {
        let connect_error = |source| NbdClientError::Connect {
            uri: uri.to_string(),
            source,
        };
        if config.connect_timeout.is_zero() || config.request_timeout.is_zero() {
            return Err(connect_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NBD client timeouts must not be zero",
            )));
        }
        let mut stream =
            connect_timeout(&uri.address, config.connect_timeout).map_err(connect_error)?;
        let mut session = ClientSession::new(&uri.export, ClientOptions::default());
        stream
            .set_read_timeout(Some(config.connect_timeout))
            .map_err(connect_error)?;
        stream
            .set_write_timeout(Some(config.connect_timeout))
            .map_err(connect_error)?;
        let info = handshake(&mut stream, &mut session).map_err(|e| match e {
            HandshakeError::Io(source) => connect_error(source),
            HandshakeError::Protocol(error) => NbdClientError::Handshake(error),
        })?;
        // The reader thread waits without limit (an idle connection is fine); requests
        // have their own deadlines. The socket's write timeout is shared by every handle.
        stream.set_read_timeout(None).map_err(connect_error)?;
        stream
            .set_write_timeout(Some(config.request_timeout))
            .map_err(connect_error)?;
        enlarge_send_buffer(&stream);
        let reader_stream = stream.try_clone().map_err(connect_error)?;
        let control = stream.try_clone().map_err(connect_error)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                session,
                waiters: HashMap::new(),
                dead: false,
            }),
            writer: Mutex::new(stream),
            control,
        });
        let reader_shared = Arc::clone(&shared);
        let reader = std::thread::Builder::new()
            .name("nbd-client-reader".into())
            .spawn(move || read_replies(reader_stream, &reader_shared))
            .map_err(connect_error)?;
        Ok(Self {
            info,
            config,
            shared,
            reader: Mutex::new(Some(reader)),
        })
    }

    /// The export as negotiated (its maximum payload capped at 32 MiB).
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    /// The time limits this client was connected with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Reads `buf.len()` bytes at `offset`, in pieces of at most the maximum payload.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), NbdClientError> {
        self.check_range(offset, buf.len() as u64)?;
        let piece = self.info.block_size.maximum as usize;
        let mut pieces = buf.chunks_mut(piece).enumerate().peekable();
        while pieces.peek().is_some() {
            let window: Vec<_> = pieces.by_ref().take(SPLIT_WINDOW).collect();
            let mut pending = Vec::with_capacity(window.len());
            for (i, chunk) in &window {
                let command = Command::Read {
                    offset: offset + (i * piece) as u64,
                    length: chunk.len() as u32,
                };
                pending.push(self.submit(command, "read"));
            }
            for ((_, chunk), request) in window.into_iter().zip(pending) {
                match self.wait(request?)? {
                    ReplyPayload::Data(data) if data.len() == chunk.len() => {
                        chunk.copy_from_slice(&data)
                    }
                    _ => return Err(NbdClientError::Disconnected),
                }
            }
        }
        Ok(())
    }

    /// Writes `data` at `offset` (`fua`: persisted before the call returns), in pieces of
    /// at most the maximum payload.
    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), NbdClientError> {
        self.check_range(offset, data.len() as u64)?;
        let piece = self.info.block_size.maximum as usize;
        let pieces: Vec<_> = data.chunks(piece).enumerate().collect();
        for window in pieces.chunks(SPLIT_WINDOW) {
            let pending: Vec<_> = window
                .iter()
                .map(|(i, chunk)| self.submit_write(offset + (i * piece) as u64, chunk, fua))
                .collect();
            for request in pending {
                self.wait(request?)?;
            }
        }
        Ok(())
    }

    /// Persists every write already completed.
    pub fn flush(&self) -> Result<(), NbdClientError> {
        self.wait(self.submit(Command::Flush, "flush")?).map(drop)
    }

    /// Tells the server `length` bytes at `offset` are no longer needed.
    pub fn trim(&self, offset: u64, length: u64) -> Result<(), NbdClientError> {
        self.split_effect(offset, length, "trim", |offset, length| Command::Trim {
            offset,
            length,
            fua: false,
        })
    }

    /// Makes `length` bytes at `offset` read as zeroes (`no_hole`: keep them allocated;
    /// `fast_zero`: fail with `NBD_ENOTSUP` rather than be slower than a write).
    pub fn write_zeroes(
        &self,
        offset: u64,
        length: u64,
        no_hole: bool,
        fast_zero: bool,
    ) -> Result<(), NbdClientError> {
        self.split_effect(offset, length, "write zeroes", |offset, length| {
            Command::WriteZeroes {
                offset,
                length,
                fua: false,
                no_hole,
                fast_zero,
            }
        })
    }

    /// The `base:allocation` extents of `length` bytes at `offset`: consecutive, covering
    /// exactly the range (the last one clipped to it).
    pub fn block_status(&self, offset: u64, length: u64) -> Result<Vec<Extent>, NbdClientError> {
        self.check_range(offset, length)?;
        let mut extents = Vec::new();
        let (mut at, end) = (offset, offset + length);
        while at < end {
            let ask = self.effect_piece(end - at);
            let command = Command::BlockStatus {
                offset: at,
                length: ask,
                req_one: false,
            };
            let request = self.submit(command, "block status")?;
            let ReplyPayload::Extents(answer) = self.wait(request)? else {
                return Err(NbdClientError::Disconnected);
            };
            for mut extent in answer {
                let left = end - at;
                if left == 0 {
                    break;
                }
                extent.length = extent.length.min(u32::try_from(left).unwrap_or(u32::MAX));
                at += u64::from(extent.length);
                extents.push(extent);
            }
        }
        Ok(extents)
    }

    /// Sends `NBD_CMD_DISC` and closes the socket; calls still waiting, and later ones,
    /// return [`NbdClientError::Disconnected`]. Also done on drop.
    ///
    /// Prompt whatever the server does: `NBD_CMD_DISC` is sent only on a live connection
    /// whose writer lock is free (a thread holding it may be stuck on a server that reads
    /// nothing; shutting the socket down is what frees it), and its write is bounded by
    /// the request timeout.
    pub fn close(&self) {
        let bytes: Vec<Vec<u8>> = {
            let mut state = lock(&self.shared.state);
            if state.dead {
                Vec::new()
            } else {
                state.session.disconnect();
                std::iter::from_fn(|| state.session.poll_output()).collect()
            }
        };
        let writer = match self.shared.writer.try_lock() {
            Ok(writer) => Some(writer),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(mut writer) = writer {
            for message in bytes {
                if writer.write_all(&message).is_err() {
                    break;
                }
            }
        }
        self.shared.declare_dead();
        if let Some(reader) = lock(&self.reader).take() {
            let _ = reader.join();
        }
    }

    fn check_range(&self, offset: u64, length: u64) -> Result<(), NbdClientError> {
        let size = self.info.size;
        match offset.checked_add(length) {
            Some(end) if end <= size => Ok(()),
            _ => Err(NbdClientError::OutOfRange {
                offset,
                length,
                size,
            }),
        }
    }

    /// A piece of a payload-free command: at most `MAX_EFFECT_LENGTH`, aligned down to the
    /// minimum block size when it is not the last.
    fn effect_piece(&self, left: u64) -> u32 {
        let minimum = u64::from(self.info.block_size.minimum);
        let piece = if left > MAX_EFFECT_LENGTH {
            MAX_EFFECT_LENGTH / minimum * minimum
        } else {
            left
        };
        u32::try_from(piece).expect("at most MAX_EFFECT_LENGTH")
    }

    fn split_effect(
        &self,
        offset: u64,
        length: u64,
        operation: &'static str,
        command: impl Fn(u64, u32) -> Command,
    ) -> Result<(), NbdClientError> {
        self.check_range(offset, length)?;
        let (mut at, end) = (offset, offset + length);
        let mut pending = Vec::new();
        while at < end {
            let piece = self.effect_piece(end - at);
            pending.push(self.submit(command(at, piece), operation)?);
            at += u64::from(piece);
        }
        for request in pending {
            self.wait(request)?;
        }
        Ok(())
    }

    /// Queues `command` and sends it; the reply is waited for with [`wait`](Self::wait).
    /// A failed or timed-out write ends the connection (a partly written message ruins
    /// the stream).
    fn submit(&self, command: Command, operation: &'static str) -> Result<Pending, NbdClientError> {
        let (receiver, (), queued) =
            self.enqueue(|session| session.send(command).map(|handle| (handle, ())))?;
        self.transmit(&queued, None, operation)?;
        Ok(self.pending(receiver, operation))
    }

    /// Sends an `NBD_CMD_WRITE` of `data` at `offset` straight from the caller's buffer:
    /// the session accounts the request and encodes its header, and header and payload go
    /// out together under the writer lock, so the payload is never copied in user space.
    fn submit_write(&self, offset: u64, data: &[u8], fua: bool) -> Result<Pending, NbdClientError> {
        let (receiver, header, queued) =
            self.enqueue(|session| session.send_write_header(offset, data.len(), fua))?;
        self.transmit(&queued, Some((&header, data)), "write")?;
        Ok(self.pending(receiver, "write"))
    }

    /// Under the state lock only: lets `queue` account one request in the session,
    /// registers its waiter, and takes whatever the session queued to send. The request
    /// is in flight (and its waiter registered) before any of its bytes can go out.
    fn enqueue<T>(
        &self,
        queue: impl FnOnce(&mut ClientSession) -> Result<(u64, T), ClientError>,
    ) -> Result<(ReplyReceiver, T, Vec<Vec<u8>>), NbdClientError> {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let mut state = lock(&self.shared.state);
        if state.dead {
            return Err(NbdClientError::Disconnected);
        }
        let (handle, extra) = queue(&mut state.session).map_err(|error| match error {
            ClientError::OutOfRange {
                offset,
                length,
                size,
            } => NbdClientError::OutOfRange {
                offset,
                length,
                size,
            },
            ClientError::Closed | ClientError::NotReady => NbdClientError::Disconnected,
            other => NbdClientError::Refused(other),
        })?;
        state.waiters.insert(handle, sender);
        let queued = std::iter::from_fn(|| state.session.poll_output()).collect();
        Ok((receiver, extra, queued))
    }

    /// Under the writer lock only (never the state lock, so the reader thread keeps
    /// taking replies while a large payload drains): writes `queued`, then the write's
    /// header and payload, if any, with as few system calls as the socket allows. Any
    /// failure declares the connection dead: under the writer lock, no other message can
    /// follow a partial one.
    fn transmit(
        &self,
        queued: &[Vec<u8>],
        write: Option<(&[u8], &[u8])>,
        operation: &'static str,
    ) -> Result<(), NbdClientError> {
        let mut writer = lock(&self.shared.writer);
        let mut result = queued
            .iter()
            .try_for_each(|message| writer.write_all(message));
        if let (Ok(()), Some((header, payload))) = (&result, write) {
            let mut slices = [IoSlice::new(header), IoSlice::new(payload)];
            result = match &mut *writer {
                Stream::Unix(s) => write_all_vectored(s, &mut slices),
                Stream::Tcp(s) => write_all_vectored(s, &mut slices),
            };
        }
        drop(writer);
        result.map_err(|error| {
            self.shared.declare_dead();
            match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NbdClientError::TimedOut {
                    operation,
                    after: self.config.request_timeout,
                },
                _ => NbdClientError::Disconnected,
            }
        })
    }

    /// A request written whole: its deadline starts now.
    fn pending(&self, receiver: ReplyReceiver, operation: &'static str) -> Pending {
        Pending {
            receiver,
            deadline: Instant::now().checked_add(self.config.request_timeout),
            operation,
        }
    }

    /// Waits for the reply to `request` until its deadline; past it, declares the
    /// connection dead (see the module's time limits) and returns `TimedOut`.
    fn wait(&self, request: Pending) -> Result<ReplyPayload, NbdClientError> {
        let Pending {
            receiver,
            deadline,
            operation,
        } = request;
        let outcome = match deadline {
            Some(deadline) => receiver.recv_deadline(deadline),
            None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match outcome {
            Ok(Ok(payload)) => Ok(payload),
            Ok(Err(errno)) => Err(NbdClientError::Server { errno, operation }),
            Err(RecvTimeoutError::Disconnected) => Err(NbdClientError::Disconnected),
            Err(RecvTimeoutError::Timeout) => {
                self.shared.declare_dead();
                Err(NbdClientError::TimedOut {
                    operation,
                    after: self.config.request_timeout,
                })
            }
        }
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        self.close();
    }
}

/// The socket send buffer asked for: room for several full-size writes, so a thread
/// hands the writer lock on once its request is queued in the kernel rather than once the
/// server has read most of it, and the server finds the next request already waiting.
const SEND_BUFFER: libc::c_int = 4 << 20;

/// Asks for [`SEND_BUFFER`] bytes of socket send buffer (the kernel caps it at its
/// `wmem_max`); best effort: a refusal leaves the default, which only costs speed.
fn enlarge_send_buffer(stream: &Stream) {
    use std::os::fd::AsRawFd;
    let fd = match stream {
        Stream::Unix(s) => s.as_raw_fd(),
        Stream::Tcp(s) => s.as_raw_fd(),
    };
    let size = SEND_BUFFER;
    // SAFETY: `fd` is an open socket owned by `stream` for the whole call, and the option
    // value is a live `c_int` whose size is passed with it.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Writes every byte of `slices`, in order, retrying after partial writes and
/// interruptions (`Write::write_all_vectored` is not stable).
fn write_all_vectored(writer: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match writer.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum HandshakeError {
    Io(io::Error),
    Protocol(ClientError),
}

/// Runs the session until it is ready, on the calling thread.
fn handshake(
    stream: &mut Stream,
    session: &mut ClientSession,
) -> Result<ExportInfo, HandshakeError> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        while let Some(bytes) = session.poll_output() {
            stream.write_all(&bytes).map_err(|e| {
                HandshakeError::Io(if e.kind() == io::ErrorKind::WouldBlock {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the server took nothing within the connect timeout during the handshake",
                    )
                } else {
                    e
                })
            })?;
        }
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::Ready(info) => return Ok(info),
                ClientEvent::Failed(error) => return Err(HandshakeError::Protocol(error)),
                ClientEvent::Reply { .. } => {}
            }
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                return Err(HandshakeError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the handshake",
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The read timeout passed (the OS reports it as "would block").
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(HandshakeError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the server sent nothing within the connect timeout during the handshake",
                )))
            }
            Err(e) => return Err(HandshakeError::Io(e)),
        };
        session.handle_input(&buf[..n]);
    }
}

/// The reader thread: routes replies until the connection ends, then fails every waiter.
fn read_replies(mut stream: Stream, shared: &Shared) {
    let mut buf = vec![0u8; READ_BUFFER];
    'connection: loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut state = lock(&shared.state);
        state.session.handle_input(&buf[..n]);
        while let Some(event) = state.session.poll_event() {
            match event {
                ClientEvent::Reply { handle, result } => {
                    if let Some(waiter) = state.waiters.remove(&handle) {
                        let _ = waiter.send(result);
                    }
                }
                ClientEvent::Failed(_) => break 'connection,
                _ => {}
            }
        }
    }
    shared.declare_dead();
}
