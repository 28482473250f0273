//! The connection's life: connecting under `connect_timeout`, the handshake on the
//! calling thread, the reader thread that routes each reply to its waiter, and closing.
//! Whichever way the connection ends (the server closes, breaks the protocol, or
//! `close` runs), the state is declared dead, so no waiter is left behind.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use crate::nbd::{ClientError, ClientEvent, ClientOptions, ClientSession, ExportInfo, NbdUri};
use crate::net::stream::{connect_timeout, Stream};

use super::{lock, ClientConfig, NbdClient, NbdClientError, Shared, State};

/// Bytes the reader thread reads at once.
const READ_BUFFER: usize = 256 << 10;

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
