//! One NBD client connection: its protocol session, the thread that reads its socket, and
//! the hand-off of its requests to the server's I/O pool.
//!
//! Invariants:
//! - Bytes leave in the order the session produced them: output is taken from the session
//!   and written to the socket under the writer lock, taken before the session lock.
//! - The reader stops reading while the session is at its in-flight bound (backpressure), so
//!   a client that sends faster than the disk answers holds a bounded amount of memory.
//! - A reply is handed to the session exactly once per request, even when the disk failed.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crossbeam_channel::Sender;

use super::budget::PayloadBudget;
use super::disk::ServedDisk;
use super::output::{lock, send_output};
use crate::nbd::{Command, ReplyPayload, Request, ServerEvent, ServerSession};
use crate::net::Stream;

/// A request waiting for an I/O thread, with the connection to answer on.
pub(super) struct Work {
    pub(super) connection: Arc<Connection>,
    pub(super) request: Request,
    /// Payload bytes taken from the server's budget for it.
    pub(super) cost: u64,
}

/// The payload bytes a request holds while in flight: its write data, or the data a read
/// will send back.
fn payload_cost(command: &Command) -> u64 {
    match command {
        Command::Write { data, .. } => data.len() as u64,
        Command::Read { length, .. } => u64::from(*length),
        _ => 0,
    }
}

/// A client connection shared by its reader thread and the I/O threads.
pub(super) struct Connection {
    session: Mutex<ServerSession>,
    /// Signalled when a reply frees room in the session (see `wants_input`).
    room: Condvar,
    writer: Mutex<Stream>,
    disk: Arc<ServedDisk>,
    budget: Arc<PayloadBudget>,
    /// Requests handed to the pool and not yet answered (changed under the session lock).
    pending: std::sync::atomic::AtomicUsize,
}

impl Connection {
    pub(super) fn new(
        session: ServerSession,
        writer: Stream,
        disk: Arc<ServedDisk>,
        budget: Arc<PayloadBudget>,
    ) -> Arc<Self> {
        Arc::new(Self {
            session: Mutex::new(session),
            room: Condvar::new(),
            writer: Mutex::new(writer),
            disk,
            budget,
            pending: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn flush_output(&self) {
        send_output(&self.writer, &self.session);
        // Output that left frees room too (the session counts unsent bytes against its
        // bound): a reader waiting for room must look again.
        self.room.notify_all();
    }

    /// Reads the socket until the client leaves, the session closes or the server stops,
    /// handing each request to the I/O pool.
    pub(super) fn run_reader(self: &Arc<Self>, mut reader: Stream, pool: &Sender<Work>) {
        self.flush_output(); // the greeting
        let mut buf = vec![0u8; 256 << 10];
        loop {
            // Requests can appear without new input: room that comes back (a reply, output
            // sent) lets the session parse input it held back. So events are drained, under the session
            // lock, before every decision to wait or to read; a reply (always made under
            // that lock) notifies `room`, so none is missed.
            let mut requests = Vec::new();
            let mut closed = false;
            let reading = {
                let mut session = lock(&self.session);
                loop {
                    // Room may have come back since the input was given (a reply, or output
                    // that left): let the session parse what it held back.
                    session.handle_input(&[]);
                    while let Some(event) = session.poll_event() {
                        match event {
                            ServerEvent::Request(request) => {
                                self.pending.fetch_add(1, Ordering::SeqCst);
                                requests.push(request);
                            }
                            ServerEvent::Closed(_) => closed = true,
                            _ => {}
                        }
                    }
                    closed |= session.is_closed();
                    if closed || !requests.is_empty() || session.wants_input() {
                        break;
                    }
                    session = self
                        .room
                        .wait(session)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                !closed && requests.is_empty()
            };
            for request in requests {
                let cost = payload_cost(&request.command);
                self.budget.acquire(cost);
                let work = Work {
                    connection: Arc::clone(self),
                    request,
                    cost,
                };
                // The pool is gone only while the server stops: answer here instead.
                if let Err(crossbeam_channel::SendError(work)) = pool.send(work) {
                    work.connection.execute(work.request, work.cost);
                }
            }
            self.flush_output();
            if closed {
                break;
            }
            if !reading {
                continue; // look again: the session may want input now, or hold more
            }
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            lock(&self.session).handle_input(&buf[..n]);
        }
        // Answer what is in flight before hanging up (a stopping server drains).
        {
            let mut session = lock(&self.session);
            while self.pending.load(Ordering::SeqCst) > 0 {
                session = self
                    .room
                    .wait(session)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        self.flush_output();
        let _ = lock(&self.writer).shutdown(std::net::Shutdown::Both);
    }

    /// Runs one request on the disk and hands its reply to the session (I/O pool threads).
    pub(super) fn execute(&self, request: Request, cost: u64) {
        let result = run_command(&self.disk, request.command);
        {
            let mut session = lock(&self.session);
            session.handle_reply(request.handle, result);
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
        self.room.notify_all();
        self.flush_output();
        self.budget.release(cost);
    }
}

fn run_command(disk: &ServedDisk, command: Command) -> Result<ReplyPayload, crate::nbd::NbdError> {
    match command {
        Command::Read { offset, length } => disk.read(offset, length).map(ReplyPayload::Data),
        Command::Write { offset, data, fua } => {
            disk.write(offset, data, fua).map(|()| ReplyPayload::None)
        }
        Command::Flush => disk.flush().map(|()| ReplyPayload::None),
        // A trimmed range reads as zeroes afterwards here, so that the target (which gets
        // the same treatment while mirroring) and the source agree.
        Command::Trim {
            offset,
            length,
            fua,
        } => disk
            .write_zeroes(offset, u64::from(length), true, fua)
            .map(|()| ReplyPayload::None),
        Command::WriteZeroes {
            offset,
            length,
            fua,
            no_hole,
            fast_zero,
        } => if fast_zero {
            disk.fast_zeroes(offset, u64::from(length), !no_hole, fua)
        } else {
            disk.write_zeroes(offset, u64::from(length), !no_hole, fua)
        }
        .map(|()| ReplyPayload::None),
        Command::BlockStatus {
            offset,
            length,
            req_one,
        } => disk.block_status(offset, length).map(|mut extents| {
            if req_one {
                extents.truncate(1);
            }
            ReplyPayload::Extents(extents)
        }),
    }
}
