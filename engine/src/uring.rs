//! io_uring for O_DIRECT copies: one thread submits the copy path's reads and writes and
//! reaps their completions in batches, instead of one blocked worker thread per I/O that
//! must be woken for every completion (which costs most on a busy CPU).
//!
//! Only copy reads and writes come here (with `direct=True`); zero writes, flushes and
//! guest writes stay on the worker pool. If the kernel refuses io_uring (old kernel,
//! seccomp), `spawn` fails and the driver keeps using the worker pool for everything.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use blockmirror_core::job::{IoErrorKind, OpId};
use crossbeam_channel::TryRecvError;
use io_uring::{opcode, types, IoUring};

use crate::buffers::{is_all_zero, AlignedBuf};
use crate::faults::{FaultOp, FaultSide};
use crate::shared::Shared;
use crate::task::{ReadDone, Task, TaskOutcome, TaskReceiver};

/// One I/O in the ring.
struct InFlight {
    op: OpId,
    offset: u64,
    buf: AlignedBuf,
    /// Bytes done so far (short transfers are resubmitted for the rest).
    done: usize,
    is_read: bool,
}

struct Ring {
    ring: IoUring,
    in_flight: HashMap<u64, InFlight>,
    next_id: u64,
}

impl Ring {
    fn push(&mut self, shared: &Shared, io: InFlight) {
        let files = &shared.files;
        let len = io.buf.as_slice().len();
        let addr = io.buf.as_slice().as_ptr() as usize;
        let pos = io.offset + io.done as u64;
        let rest = (len - io.done) as u32;
        // The rest of a short transfer may no longer be aligned: `handle_for` then picks the
        // buffered handle.
        let rest_addr = addr + io.done;
        let entry = if io.is_read {
            let fd = files.source.handle_for(pos, rest as usize, rest_addr).as_raw_fd();
            // The buffer lives in `in_flight` until its completion is reaped.
            opcode::Read::new(types::Fd(fd), rest_addr as *mut u8, rest).offset(pos).build()
        } else {
            let fd = files.target.handle_for(pos, rest as usize, rest_addr).as_raw_fd();
            opcode::Write::new(types::Fd(fd), rest_addr as *const u8, rest).offset(pos).build()
        };
        let id = self.next_id;
        self.next_id += 1;
        let entry = entry.user_data(id);
        self.in_flight.insert(id, io);
        loop {
            // SAFETY: the entry's buffer stays valid and untouched until its completion.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // The submission queue is full: hand it to the kernel and retry.
            let _ = self.ring.submit();
        }
    }
}

fn finish(shared: &Shared, io: InFlight, result: Result<(), IoErrorKind>) {
    let outcome = if io.is_read {
        TaskOutcome::Read {
            op: io.op,
            result: result.map(|()| {
                let zero = is_all_zero(io.buf.as_slice());
                ReadDone { buf: io.buf, zero, offloaded: false }
            }),
        }
    } else {
        TaskOutcome::Write { op: io.op, buf: io.buf, offloaded: false, result }
    };
    // Whatever this completion causes goes through `State::send`, which routes copy I/O
    // back to this ring's queue: nothing is kept for this thread.
    shared.finish_task_routed(outcome);
}

/// Takes one task from the queue into the ring (or finishes it at once on an injected fault).
fn intake(shared: &Shared, ring: &mut Ring, task: Task) {
    let (op, offset, buf, is_read) = match task {
        Task::Read { op, offset, buf } => (op, offset, buf, true),
        Task::Write { op, offset, buf, .. } => (op, offset, buf, false),
        _ => unreachable!("only copy reads and writes are routed to the ring"),
    };
    let (side, fault_op) = if is_read { (FaultSide::Source, FaultOp::Read) } else { (FaultSide::Target, FaultOp::Write) };
    let io = InFlight { op, offset, buf, done: 0, is_read };
    match shared.faults.check(side, fault_op) {
        Some(kind) => finish(shared, io, Err(kind)),
        None => ring.push(shared, io),
    }
}

/// Starts the ring thread (the ring is made first, so an unsupported kernel is an error here).
pub fn spawn(shared: &Arc<Shared>, tasks: TaskReceiver, depth: u32) -> io::Result<JoinHandle<()>> {
    let ring = IoUring::new(depth.next_power_of_two().max(8))?;
    let shared = Arc::clone(shared);
    std::thread::Builder::new().name("blockmirror-uring".into()).spawn(move || crate::shared::guarded(&shared, "io_uring", || {
        let mut ring = Ring { ring, in_flight: HashMap::new(), next_id: 0 };
        loop {
            if ring.in_flight.is_empty() {
                match tasks.recv() {
                    Ok(task) => intake(&shared, &mut ring, task),
                    Err(_) => return,
                }
            }
            loop {
                match tasks.try_recv() {
                    Ok(task) => intake(&shared, &mut ring, task),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if ring.in_flight.is_empty() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            if ring.in_flight.is_empty() {
                continue;
            }
            match ring.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    // The ring itself broke: fail everything in it; the job's policies act.
                    let kind = crate::io_ops::error_kind(&e);
                    for (_, io) in ring.in_flight.drain() {
                        finish(&shared, io, Err(kind));
                    }
                    continue;
                }
            }
            let reaped: Vec<(u64, i32)> = ring.ring.completion().map(|c| (c.user_data(), c.result())).collect();
            for (id, res) in reaped {
                let mut io = ring.in_flight.remove(&id).expect("every completion belongs to a submitted I/O");
                let len = io.buf.as_slice().len();
                if res < 0 {
                    finish(&shared, io, Err(IoErrorKind::from_errno(-res)));
                } else if res == 0 {
                    // End of file before the range's end: the source shrank (or a zero-byte write).
                    finish(&shared, io, Err(IoErrorKind::Io));
                } else {
                    io.done += res as usize;
                    if io.done < len {
                        ring.push(&shared, io);
                    } else {
                        finish(&shared, io, Ok(()));
                    }
                }
            }
        }
    }))
}
