//! The task protocol between the shared state and the threads that do I/O: what a task
//! asks for ([`Task`]), how it ended ([`TaskOutcome`]), and the queue that carries tasks.
//!
//! The shared state sends tasks (while it drains the job's actions, with the job's lock
//! held); the worker pool and the io_uring thread receive them and hand each outcome back
//! to the shared state. Neither side imports the other: both import this module.

use std::sync::Arc;

use blockmirror_core::job::{IoErrorKind, OpId};

use crate::buffers::AlignedBuf;

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
        /// The data (only its first block when `offloaded`).
        buf: AlignedBuf,
        /// The read only probed the first block: copy the range inside the kernel now.
        offloaded: bool,
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
    /// The data (only the first block when `offloaded`).
    pub buf: AlignedBuf,
    /// Every byte of the range was zero.
    pub zero: bool,
    /// Only the first block was read (it held data): the write copies in the kernel.
    pub offloaded: bool,
}

/// How a task ended, handed back to the shared state. A buffer a task carried comes back
/// in its outcome (or with its [`ReadDone`]) once nothing else can touch it, and the shared
/// state alone returns it to the pool; a buffer the kernel may still use never comes back.
pub enum TaskOutcome {
    /// A read, or the error.
    Read { op: OpId, result: Result<ReadDone, IoErrorKind> },
    /// A copy write: the buffer goes back to the pool; `offloaded` when the kernel copied.
    /// No buffer only for a failed write whose buffer the kernel may still use (a failed
    /// io_uring ring withholds it): it must not be reused.
    Write { op: OpId, buf: Option<AlignedBuf>, offloaded: bool, result: Result<(), IoErrorKind> },
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
