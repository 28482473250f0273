//! The I/O worker pool: each worker takes one task at a time, performs its system calls
//! (blocking, no lock held), then reports the result to the shared state, which feeds it
//! to the job and dispatches whatever the job asks for next.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use blockmirror_core::job::{IoErrorKind, OpId};

use crate::buffers::{is_all_zero, AlignedBuf};
use crate::faults::{FaultOp, FaultSide};
use crate::io_ops;
use crate::shared::{guarded, Shared};

/// One unit of I/O for a worker.
pub enum Task {
    /// Read the source into `buf` (its length is the range's length).
    Read {
        /// The operation.
        op: OpId,
        /// First byte.
        offset: u64,
        /// Destination.
        buf: AlignedBuf,
    },
    /// Write `buf` (what this op's read returned) to the target.
    Write {
        /// The operation.
        op: OpId,
        /// First byte.
        offset: u64,
        /// The data (only its first block when `offloaded`).
        buf: AlignedBuf,
        /// The read only probed the first block: copy the range inside the kernel now.
        offloaded: bool,
    },
    /// Write the guest's data to the target (write-blocking mode).
    GuestWrite {
        /// The operation.
        op: OpId,
        /// First byte.
        offset: u64,
        /// The guest's data, shared with the waiting guest call.
        data: Arc<Vec<u8>>,
    },
    /// Make a target range read as zeroes (`discard`: the job asked for a discard).
    Zero {
        /// The operation.
        op: OpId,
        /// First byte.
        offset: u64,
        /// Bytes.
        length: u64,
        /// Whether this was a discard action.
        discard: bool,
    },
    /// fdatasync the target.
    Flush {
        /// The operation.
        op: OpId,
    },
}

/// A successful read.
pub struct ReadDone {
    /// The data (only the first block when `offloaded`).
    pub buf: AlignedBuf,
    /// Every byte of the range was zero.
    pub zero: bool,
    /// Only the first block was read (it held data): the write copies in the kernel.
    pub offloaded: bool,
}

/// Bytes a read probes before deciding to offload the copy: all-zero ranges are still found
/// exactly (a range whose first block is zero is read in full and checked).
const OFFLOAD_PROBE_BYTES: usize = 4096;

/// How a task ended, handed back to the shared state.
pub enum TaskOutcome {
    /// A read, or the error.
    Read { op: OpId, result: Result<ReadDone, IoErrorKind> },
    /// A copy write: the buffer goes back to the pool; `offloaded` when the kernel copied.
    Write { op: OpId, buf: AlignedBuf, offloaded: bool, result: Result<(), IoErrorKind> },
    /// A write-blocking guest write.
    GuestWrite { op: OpId, length: u64, result: Result<(), IoErrorKind> },
    /// A zero write or discard; `punched` when it deallocated the range.
    Zero { op: OpId, length: u64, result: Result<bool, IoErrorKind> },
    /// A flush.
    Flush { op: OpId, result: Result<(), IoErrorKind> },
}

fn io_result<T>(r: std::io::Result<T>) -> Result<T, IoErrorKind> {
    r.map_err(|e| io_ops::error_kind(&e))
}

/// Reads a copy range. With offload on, reads only the first block when it holds data (the
/// write will copy in the kernel); otherwise reads everything and checks for zeroes.
fn read_or_probe(shared: &Shared, offset: u64, mut buf: AlignedBuf) -> Result<ReadDone, IoErrorKind> {
    let files = &shared.files;
    let len = buf.as_slice().len();
    if shared.offload && len > OFFLOAD_PROBE_BYTES {
        let probe = &mut buf.as_mut_slice()[..OFFLOAD_PROBE_BYTES];
        io_result(io_ops::read_exact(&files.source.copy, probe, offset))?;
        if !is_all_zero(probe) {
            return Ok(ReadDone { buf, zero: false, offloaded: true });
        }
    }
    let addr = buf.as_slice().as_ptr() as usize;
    let file = files.source.handle_for(offset, len, addr);
    io_result(io_ops::read_exact(file, buf.as_mut_slice(), offset))?;
    let zero = is_all_zero(buf.as_slice());
    Ok(ReadDone { buf, zero, offloaded: false })
}

fn run(shared: &Shared, task: Task) -> TaskOutcome {
    let files = &shared.files;
    match task {
        Task::Read { op, offset, buf } => {
            let result = match shared.faults.check(FaultSide::Source, FaultOp::Read) {
                Some(kind) => Err(kind),
                None => read_or_probe(shared, offset, buf),
            };
            TaskOutcome::Read { op, result }
        }
        Task::Write { op, offset, mut buf, offloaded } => {
            let mut copied_in_kernel = false;
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Write) {
                Some(kind) => Err(kind),
                None if offloaded => {
                    let length = buf.as_slice().len() as u64;
                    // Offload runs only without O_DIRECT, so the copy handles are plain ones
                    // (the source's read-only).
                    match io_ops::copy_range(&files.source.copy, &files.target.copy, offset, length) {
                        Ok(true) => {
                            copied_in_kernel = true;
                            Ok(())
                        }
                        // Not possible for this pair of files: read the rest, then write.
                        Ok(false) => io_result(
                            io_ops::read_exact(&files.source.copy, buf.as_mut_slice(), offset)
                                .and_then(|()| io_ops::write_all(&files.target.copy, buf.as_slice(), offset)),
                        ),
                        // The job took the read as done: a failure now counts against the target.
                        Err(e) => Err(io_ops::error_kind(&e)),
                    }
                }
                None => {
                    let bytes = buf.as_slice();
                    let file = files.target.handle_for(offset, bytes.len(), bytes.as_ptr() as usize);
                    io_result(io_ops::write_all(file, bytes, offset))
                }
            };
            if result.is_ok() && !files.target.direct {
                // Let the disk work while copying goes on: the flush before READY then has
                // little left to write (measured: 1.4x faster to READY on 1 GiB, page cache).
                io_ops::start_writeback(&files.target.copy, offset, buf.as_slice().len() as u64);
            }
            TaskOutcome::Write { op, buf, offloaded: copied_in_kernel, result }
        }
        Task::GuestWrite { op, offset, data } => {
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Write) {
                Some(kind) => Err(kind),
                None => io_result(io_ops::write_all(&files.target.buffered, &data, offset)),
            };
            TaskOutcome::GuestWrite { op, length: data.len() as u64, result }
        }
        Task::Zero { op, offset, length, discard } => {
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Zero) {
                Some(kind) => Err(kind),
                None => {
                    // A discard is only asked for when punching holes works (discard_reads_zero).
                    let unmap = shared.unmap || discard;
                    io_result(io_ops::zero_range(&files.target.buffered, offset, length, unmap))
                        .map(|m| m == io_ops::ZeroMethod::PunchHole)
                }
            };
            TaskOutcome::Zero { op, length, result }
        }
        Task::Flush { op } => {
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Flush) {
                Some(kind) => Err(kind),
                None => io_result(io_ops::datasync(&files.target.copy)),
            };
            TaskOutcome::Flush { op, result }
        }
    }
}

/// Starts `count` workers taking tasks from `tasks`. They exit when every sender is gone.
pub fn spawn(shared: &Arc<Shared>, tasks: Receiver<Task>, count: usize) -> std::io::Result<Vec<JoinHandle<()>>> {
    let tasks = Arc::new(Mutex::new(tasks));
    (0..count.max(1))
        .map(|i| {
            let shared = Arc::clone(shared);
            let tasks = Arc::clone(&tasks);
            std::thread::Builder::new().name(format!("blockmirror-io-{i}")).spawn(move || {
                guarded(&shared, "I/O worker", || loop {
                    // Only the receive holds the queue lock; the I/O runs unlocked. A worker
                    // that panicked cannot have held it (it panics only in I/O or the job).
                    let next = tasks.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok(mut task) = next else { return };
                    // Run what this task's completion caused next (a read's write) right here.
                    while let Some(follow_up) = shared.finish_task(run(&shared, task)) {
                        task = follow_up;
                    }
                })
            })
        })
        .collect()
}

/// The sending half, kept by the shared state.
pub type TaskSender = Sender<Task>;
