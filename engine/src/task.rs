//! The task protocol between the shared state and the threads that do I/O: what a task
//! asks for ([`Task`]), how it ended ([`TaskOutcome`]), and the queue that carries tasks.
//!
//! The shared state sends tasks (while it drains the job's actions, with the job's lock
//! held); the worker pool and the io_uring thread receive them and hand each outcome back
//! to the shared state. Neither side imports the other: both import this module.

use std::sync::Arc;

use blockmirror_core::job::{IoErrorKind, OpId};

use crate::buffers::AlignedBuf;
use crate::zero_runs::ZeroRuns;

/// One unit of I/O for a worker (or, for copy reads and writes, the io_uring thread).
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
        /// The data (with `offloaded`, only the probed blocks and the zero pieces).
        buf: AlignedBuf,
        /// The read only probed the data pieces: copy them inside the kernel now.
        offloaded: bool,
        /// The parts that read as zero: made zero on the target instead of written. A
        /// write with any is done by the worker pool (the ring writes whole buffers only).
        zero_runs: ZeroRuns,
    },
    /// Mirror a guest write to the target (write-blocking mode).
    GuestWrite {
        /// The operation.
        op: OpId,
        /// First byte.
        offset: u64,
        /// Bytes (the data's length for [`GuestPayload::Data`]).
        length: u64,
        /// What the guest wrote, shared with the waiting guest call.
        payload: GuestPayload,
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

/// What a guest write put on the source, kept until its mirrored target write is done.
#[derive(Debug, Clone)]
pub enum GuestPayload {
    /// These bytes.
    Data(Arc<Vec<u8>>),
    /// Zeroes, with no buffer: the target range is made to read zero (`unmap`: the guest
    /// allowed deallocating it; the target does so only if the mirror's setup allows too).
    Zeroes {
        /// The guest allows deallocation.
        unmap: bool,
    },
}

/// A successful read.
pub struct ReadDone {
    /// The data (with `offloaded`, only the probed blocks and the zero pieces).
    pub buf: AlignedBuf,
    /// Every byte of the range was zero.
    pub zero: bool,
    /// Data pieces were only probed (their first block held data): the write copies them
    /// in the kernel.
    pub offloaded: bool,
    /// The zero pieces of a range that is not all zero.
    pub zero_runs: ZeroRuns,
    /// Bytes read into user space (the whole range, or with `offloaded` the zero pieces:
    /// the probes are not counted).
    pub bytes_read: u64,
}

/// How a successful copy write put its range on the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyWritten {
    /// Bytes written from the buffer or copied in the kernel.
    pub data: u64,
    /// Of `data`, bytes the kernel copied (`copy_file_range`).
    pub in_kernel: u64,
    /// Bytes made zero instead (the zero pieces).
    pub zeroed: u64,
    /// Of `zeroed`, bytes deallocated.
    pub punched: u64,
}

/// How a task ended, handed back to the shared state. A buffer a task carried comes back
/// in its outcome (or with its [`ReadDone`]) once nothing else can touch it, and the shared
/// state alone returns it to the pool; a buffer the kernel may still use never comes back.
pub enum TaskOutcome {
    /// A read, or the error.
    Read { op: OpId, result: Result<ReadDone, IoErrorKind> },
    /// A copy write: the buffer goes back to the pool. No buffer only for a failed write
    /// whose buffer the kernel may still use (a failed io_uring ring withholds it): it
    /// must not be reused.
    Write { op: OpId, buf: Option<AlignedBuf>, result: Result<CopyWritten, IoErrorKind> },
    /// A write-blocking guest write.
    GuestWrite { op: OpId, length: u64, result: Result<(), IoErrorKind> },
    /// A zero write or discard; `punched` when it deallocated the range.
    Zero { op: OpId, length: u64, result: Result<bool, IoErrorKind> },
    /// A flush.
    Flush { op: OpId, result: Result<(), IoErrorKind> },
}

/// The sending half of a task queue, kept by the shared state.
pub type TaskSender = crossbeam_channel::Sender<Task>;

/// The receiving half; a worker pool clones it (one queue, many takers, no lock).
pub type TaskReceiver = crossbeam_channel::Receiver<Task>;

/// A new task queue. Unbounded, because the job already bounds what is in flight (its
/// buffer budget and `max_in_flight`); a bound here could only block the thread that holds
/// the job's lock while it dispatches.
pub fn queue() -> (TaskSender, TaskReceiver) {
    crossbeam_channel::unbounded()
}
