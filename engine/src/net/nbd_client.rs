//! `NbdClient`: a blocking NBD client that many threads share.
//!
//! Threads: one reader thread owns the socket's read half, feeds the bytes to the
//! [`ClientSession`] and hands each reply to the caller waiting on its cookie (a one-slot
//! channel per request). Callers send under a writer lock, so several requests are in
//! flight at once and replies may come in any order.
//!
//! Locks: `state` (the session and the waiters) is held only to encode a request or to
//! parse input, never across socket I/O; the writer lock is held only while writing. A
//! server slow to read therefore never keeps the reader thread from taking replies (which
//! would deadlock both sides).
//!
//! Failure: when the connection drops or the server breaks the protocol, the reader
//! marks the state dead and drops every waiter's channel: every waiting call and every
//! later one returns [`NbdClientError::Disconnected`]. A waiter is registered under the
//! same lock that marks the state dead, so none can be left behind.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::nbd::{
    ClientError, ClientEvent, ClientOptions, ClientSession, Command, ExportInfo, Extent, NbdError,
    NbdUri, ReplyPayload,
};

use super::stream::{connect, Stream};

/// How long the handshake may wait for the server.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes the reader thread reads at once.
const READ_BUFFER: usize = 256 << 10;
/// The longest trim, write zeroes or block status request (before alignment): commands
/// without payload may exceed the maximum payload, but lengths are 32-bit.
const MAX_EFFECT_LENGTH: u64 = 1 << 30;
/// Pieces of one split read or write in flight at once.
const SPLIT_WINDOW: usize = 8;

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
    /// The connection is gone (closed, dropped by the server, or broken by it).
    #[error("the NBD connection is closed")]
    Disconnected,
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves them consistent (every update is a single
    // call into the session or the map), so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connected NBD client; `&self` methods may be called from many threads at once.
pub struct NbdClient {
    info: ExportInfo,
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
    /// offers them).
    pub fn connect(uri: &NbdUri) -> Result<Self, NbdClientError> {
        let connect_error = |source| NbdClientError::Connect {
            uri: uri.to_string(),
            source,
        };
        let mut stream = connect(&uri.address).map_err(connect_error)?;
        let mut session = ClientSession::new(&uri.export, ClientOptions::default());
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(connect_error)?;
        let info = handshake(&mut stream, &mut session).map_err(|e| match e {
            HandshakeError::Io(source) => connect_error(source),
            HandshakeError::Protocol(error) => NbdClientError::Handshake(error),
        })?;
        stream.set_read_timeout(None).map_err(connect_error)?;
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
            shared,
            reader: Mutex::new(Some(reader)),
        })
    }

    /// The export as negotiated (its maximum payload capped at 32 MiB).
    pub fn info(&self) -> &ExportInfo {
        &self.info
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
                pending.push(self.submit(command));
            }
            for ((_, chunk), receiver) in window.into_iter().zip(pending) {
                match wait(receiver?, "read")? {
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
                .map(|(i, chunk)| {
                    self.submit(Command::Write {
                        offset: offset + (i * piece) as u64,
                        data: chunk.to_vec(),
                        fua,
                    })
                })
                .collect();
            for receiver in pending {
                wait(receiver?, "write")?;
            }
        }
        Ok(())
    }

    /// Persists every write already completed.
    pub fn flush(&self) -> Result<(), NbdClientError> {
        wait(self.submit(Command::Flush)?, "flush").map(drop)
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
            let receiver = self.submit(Command::BlockStatus {
                offset: at,
                length: ask,
                req_one: false,
            })?;
            let ReplyPayload::Extents(answer) = wait(receiver, "block status")? else {
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
    pub fn close(&self) {
        let bytes: Vec<Vec<u8>> = {
            let mut state = lock(&self.shared.state);
            state.session.disconnect();
            std::iter::from_fn(|| state.session.poll_output()).collect()
        };
        {
            let mut writer = lock(&self.shared.writer);
            for message in bytes {
                if writer.write_all(&message).is_err() {
                    break;
                }
            }
        }
        let _ = self.shared.control.shutdown(Shutdown::Both);
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
            pending.push(self.submit(command(at, piece))?);
            at += u64::from(piece);
        }
        for receiver in pending {
            wait(receiver, operation)?;
        }
        Ok(())
    }

    /// Queues `command` and sends it; the receiver gets its reply (or is dropped when
    /// the connection dies).
    fn submit(
        &self,
        command: Command,
    ) -> Result<Receiver<Result<ReplyPayload, NbdError>>, NbdClientError> {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let bytes: Vec<Vec<u8>> = {
            let mut state = lock(&self.shared.state);
            if state.dead {
                return Err(NbdClientError::Disconnected);
            }
            let handle = state.session.send(command).map_err(|error| match error {
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
            std::iter::from_fn(|| state.session.poll_output()).collect()
        };
        let mut writer = lock(&self.shared.writer);
        for message in bytes {
            if writer.write_all(&message).is_err() {
                // A partly written message ruins the stream: end the connection, which
                // wakes the reader thread and through it every waiter.
                let _ = self.shared.control.shutdown(Shutdown::Both);
                break;
            }
        }
        Ok(receiver)
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        self.close();
    }
}

fn wait(
    receiver: Receiver<Result<ReplyPayload, NbdError>>,
    operation: &'static str,
) -> Result<ReplyPayload, NbdClientError> {
    match receiver.recv() {
        Ok(Ok(payload)) => Ok(payload),
        Ok(Err(errno)) => Err(NbdClientError::Server { errno, operation }),
        Err(_) => Err(NbdClientError::Disconnected),
    }
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
            stream.write_all(&bytes).map_err(HandshakeError::Io)?;
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
    let mut state = lock(&shared.state);
    state.dead = true;
    state.waiters.clear();
    drop(state);
    let _ = shared.control.shutdown(Shutdown::Both);
}
