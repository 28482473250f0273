//! One request's way out and back: accounted in the session and its waiter registered
//! under the state lock, written under the writer lock (never both at once), then waited
//! for until its deadline. A failed or timed-out write, or a passed deadline, declares
//! the connection dead.

use std::io::{self, IoSlice, Write};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::nbd::{ClientError, ClientSession, Command, NbdError, ReplyPayload};
use crate::net::stream::Stream;

use super::{lock, NbdClient, NbdClientError};

/// Where one request's reply arrives.
type ReplyReceiver = Receiver<Result<ReplyPayload, NbdError>>;

/// A request sent and not yet answered: its reply arrives on `receiver` (dropped when the
/// connection dies), which is waited on until `deadline` (`None`: the timeout reaches past
/// what `Instant` holds, so no deadline).
pub(super) struct Pending {
    receiver: ReplyReceiver,
    deadline: Option<Instant>,
    operation: &'static str,
}

impl NbdClient {
    /// Queues `command` and sends it; the reply is waited for with [`wait`](Self::wait).
    /// A failed or timed-out write ends the connection (a partly written message ruins
    /// the stream).
    pub(super) fn submit(
        &self,
        command: Command,
        operation: &'static str,
    ) -> Result<Pending, NbdClientError> {
        let (receiver, (), queued) =
            self.enqueue(|session| session.send(command).map(|handle| (handle, ())))?;
        self.transmit(&queued, None, operation)?;
        Ok(self.pending(receiver, operation))
    }

    /// Sends an `NBD_CMD_WRITE` of `data` at `offset` straight from the caller's buffer:
    /// the session accounts the request and encodes its header, and header and payload go
    /// out together under the writer lock, so the payload is never copied in user space.
    pub(super) fn submit_write(
        &self,
        offset: u64,
        data: &[u8],
        fua: bool,
    ) -> Result<Pending, NbdClientError> {
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
    pub(super) fn wait(&self, request: Pending) -> Result<ReplyPayload, NbdClientError> {
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
