//! [`NbdTarget`]: an NBD export as the mirror's target, behind a connection that is made
//! afresh after it failed.
//!
//! Connection rule: every operation takes the current connection, or connects once if
//! there is none. An operation whose connection turned out dead
//! ([`NbdClientError::Disconnected`]) drops that connection (unless another thread already
//! replaced it) and fails with an I/O error, so the job's `on_target_error` policy acts:
//! `report` fails the job, `stop` pauses it until `resume`, `ignore` retries after the
//! job's back-off. The next operation, whoever runs it, connects again. One operation makes
//! at most one connection attempt and never loops, so a dead server costs one refused
//! connect per retry the job itself paces. Connecting happens under a lock: the threads
//! that need a connection meanwhile wait for that one attempt and share its outcome (the
//! new connection, or the failure) rather than each trying in turn.
//!
//! A server that stops answering is found out by the client's time limits
//! ([`ClientConfig`]): the request fails with [`NbdClientError::TimedOut`], which drops the
//! connection like `Disconnected` (so the policy acts and the next operation reconnects),
//! and a connect or handshake that hangs fails as an unreachable server does.
//!
//! A fresh connection must show the export as at the start (same size, writable); else it
//! is refused like a dead server. Errors become `io::Error`s: a server's error reply keeps
//! its errno (NBD errnos are Linux's: `NBD_EIO` is EIO, `NBD_ENOSPC` is ENOSPC); a lost
//! connection, a timed-out request, a failed connect or handshake carry no errno, which the
//! job counts as a plain I/O error (EIO).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::nbd::NbdUri;
use crate::net::{ClientConfig, NbdClient, NbdClientError};

/// Why an NBD export cannot be the target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NbdTargetError {
    /// Connecting or the handshake failed.
    #[error("cannot connect to the NBD export {uri}: {source}")]
    Connect {
        /// The export's URI.
        uri: String,
        /// The client's error.
        source: NbdClientError,
    },
    /// The export's size is not the source's.
    #[error(
        "Source and target image have different sizes: the source is {source_size} bytes, \
         the NBD export {uri} is {target_size} bytes"
    )]
    SizeMismatch {
        /// The export's URI.
        uri: String,
        /// The source's size.
        source_size: u64,
        /// The export's size.
        target_size: u64,
    },
    /// The server offers the export read-only.
    #[error("the NBD export {uri} is read-only")]
    ReadOnly {
        /// The export's URI.
        uri: String,
    },
    /// The job's chunks would not be aligned to what the export accepts.
    #[error(
        "the job's granularity of {granularity} bytes is not a multiple of the NBD export \
         {uri}'s minimum block size of {minimum} bytes"
    )]
    BlockSize {
        /// The export's URI.
        uri: String,
        /// The job's granularity.
        granularity: u64,
        /// The export's minimum block size.
        minimum: u32,
    },
}

/// Bytes of one written zero buffer when the server cannot `NBD_CMD_WRITE_ZEROES` (a
/// multiple of every valid minimum block size, which is at most 64 KiB).
const ZERO_BUFFER_BYTES: usize = 1 << 20;

/// An NBD export the mirror writes to; shared by the mirror's threads and by whoever
/// serves the disk after the switch-over ([`FileMirror::nbd_target`]).
///
/// [`FileMirror::nbd_target`]: crate::FileMirror::nbd_target
pub struct NbdTarget {
    uri: NbdUri,
    size: u64,
    /// The time limits of every connection, the first and those made again.
    config: ClientConfig,
    /// The current connection; `None` after one failed, until the next operation.
    connection: Mutex<Option<Arc<NbdClient>>>,
    /// Connections made after the first.
    reconnects: AtomicU64,
    /// Failed connection attempts (see `client`: an operation that waited for one fails too).
    failed_attempts: AtomicU64,
}

impl std::fmt::Debug for NbdTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdTarget")
            .field("uri", &self.uri.to_string())
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The slot is only ever replaced whole: a panic elsewhere cannot leave it half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `io::Error` for a client error (see the module's rule on errnos).
fn to_io(error: NbdClientError) -> io::Error {
    match error {
        NbdClientError::Server { errno, .. } => {
            io::Error::from_raw_os_error(errno.to_wire() as i32)
        }
        NbdClientError::OutOfRange { .. } | NbdClientError::Refused(_) => {
            io::Error::new(io::ErrorKind::InvalidInput, error.to_string())
        }
        NbdClientError::TimedOut { .. } => {
            io::Error::new(io::ErrorKind::TimedOut, error.to_string())
        }
        other => io::Error::new(io::ErrorKind::NotConnected, other.to_string()),
    }
}

impl NbdTarget {
    /// Connects to the export and checks that it can be the target of a source of `size`
    /// bytes mirrored in chunks of `granularity` bytes; the client's default time limits
    /// ([`ClientConfig::default`]).
    pub fn open(uri: &NbdUri, size: u64, granularity: u64) -> Result<Self, NbdTargetError> {
        Self::open_with(uri, size, granularity, ClientConfig::default())
    }

    /// [`open`](Self::open), every connection with the time limits of `config`.
    pub fn open_with(
        uri: &NbdUri,
        size: u64,
        granularity: u64,
        config: ClientConfig,
    ) -> Result<Self, NbdTargetError> {
        let client = Self::connect_checked(uri, size, config)?;
        let minimum = client.info().block_size.minimum;
        if granularity % u64::from(minimum) != 0 {
            return Err(NbdTargetError::BlockSize {
                uri: uri.to_string(),
                granularity,
                minimum,
            });
        }
        Ok(Self {
            uri: uri.clone(),
            size,
            config,
            connection: Mutex::new(Some(Arc::new(client))),
            reconnects: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
        })
    }

    fn connect_checked(
        uri: &NbdUri,
        size: u64,
        config: ClientConfig,
    ) -> Result<NbdClient, NbdTargetError> {
        let client =
            NbdClient::connect_with(uri, config).map_err(|source| NbdTargetError::Connect {
                uri: uri.to_string(),
                source,
            })?;
        let info = client.info();
        if info.size != size {
            return Err(NbdTargetError::SizeMismatch {
                uri: uri.to_string(),
                source_size: size,
                target_size: info.size,
            });
        }
        if info.read_only {
            return Err(NbdTargetError::ReadOnly {
                uri: uri.to_string(),
            });
        }
        Ok(client)
    }

    /// The export's URI.
    pub fn uri(&self) -> &NbdUri {
        &self.uri
    }

    /// The export's size in bytes (the source's).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many times a failed connection was replaced by a new one.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// The current connection, made now (one attempt) if there is none. For requests this
    /// type does not wrap (`block_status`); a caller that sees
    /// [`NbdClientError::Disconnected`] or [`NbdClientError::TimedOut`] on it calls
    /// [`forget`](Self::forget).
    pub fn client(&self) -> io::Result<Arc<NbdClient>> {
        let failures_before = self.failed_attempts.load(Ordering::Acquire);
        let mut slot = lock(&self.connection);
        if let Some(client) = slot.as_ref() {
            return Ok(Arc::clone(client));
        }
        if self.failed_attempts.load(Ordering::Acquire) != failures_before {
            // An attempt failed while this call waited for the lock: that was this call's try.
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("the NBD export {} is unreachable", self.uri),
            ));
        }
        let client = Self::connect_checked(&self.uri, self.size, self.config).map_err(|e| {
            self.failed_attempts.fetch_add(1, Ordering::AcqRel);
            io::Error::new(io::ErrorKind::NotConnected, e.to_string())
        })?;
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        Ok(client)
    }

    /// Drops `failed` as the current connection, unless it was already replaced.
    pub fn forget(&self, failed: &Arc<NbdClient>) {
        let mut slot = lock(&self.connection);
        if slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, failed))
        {
            *slot = None;
        }
    }

    /// Runs one request on the current connection (see the module's connection rule).
    fn call<T>(
        &self,
        request: impl FnOnce(&NbdClient) -> Result<T, NbdClientError>,
    ) -> io::Result<T> {
        let client = self.client()?;
        request(&client).map_err(|error| {
            if matches!(
                error,
                NbdClientError::Disconnected | NbdClientError::TimedOut { .. }
            ) {
                self.forget(&client);
            }
            to_io(error)
        })
    }

    /// Writes `data` at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.call(|client| client.write(offset, data, false))
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.call(|client| client.read(offset, buf))
    }

    /// Makes the range read as zeroes: `NBD_CMD_WRITE_ZEROES` when the server has it (with
    /// `NBD_CMD_FLAG_NO_HOLE` unless `unmap`, so the range stays allocated), else written
    /// zero buffers.
    pub fn write_zeroes(&self, offset: u64, length: u64, unmap: bool) -> io::Result<()> {
        self.call(|client| {
            if client.info().can_write_zeroes {
                return client.write_zeroes(offset, length, !unmap, false);
            }
            let zeroes = vec![0u8; length.min(ZERO_BUFFER_BYTES as u64) as usize];
            let mut done = 0;
            while done < length {
                let n = (length - done).min(zeroes.len() as u64) as usize;
                client.write(offset + done, &zeroes[..n], false)?;
                done += n as u64;
            }
            Ok(())
        })
    }

    /// Tells the server the range is no longer needed (`NBD_CMD_TRIM`, advisory: a server
    /// without it is left alone). What the range reads afterwards is unspecified.
    pub fn trim(&self, offset: u64, length: u64) -> io::Result<()> {
        self.call(|client| {
            if client.info().can_trim {
                client.trim(offset, length)
            } else {
                Ok(())
            }
        })
    }

    /// Makes every completed write durable (`NBD_CMD_FLUSH`; a server that does not offer
    /// it has nothing to flush).
    pub fn flush(&self) -> io::Result<()> {
        self.call(|client| {
            if client.info().can_flush {
                client.flush()
            } else {
                Ok(())
            }
        })
    }
}
