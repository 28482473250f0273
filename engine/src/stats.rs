//! What a mirror reports besides the job's own views: byte and operation counters, and why
//! it failed.

use blockmirror_core::job::{IoErrorKind, Operation};

/// Why the job failed: the error of the `report` that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The error kind.
    pub error: IoErrorKind,
    /// `read` (source) or `write` (target), when an error event named it.
    pub operation: Option<Operation>,
    /// First byte of the failed range, when known.
    pub offset: Option<u64>,
}

/// Byte and operation counters (plain facts, for results and benchmarks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Bytes read from the source by the copy path.
    pub bytes_read: u64,
    /// Bytes written to the target by copies.
    pub bytes_written: u64,
    /// Of those, bytes copied inside the kernel (`copy_file_range`).
    pub bytes_offloaded: u64,
    /// Bytes made zero on the target (zero writes and discards).
    pub bytes_zeroed: u64,
    /// Of those, bytes deallocated by punching holes.
    pub bytes_punched: u64,
    /// Copy reads that returned only zeroes.
    pub zero_reads: u64,
    /// Bytes the guest wrote through the mirror.
    pub guest_bytes_written: u64,
    /// Bytes of guest writes also written to the target (write-blocking mode).
    pub guest_bytes_mirrored: u64,
    /// Target flushes performed.
    pub flushes: u64,
    /// Operations that failed (injected or real).
    pub failed_ops: u64,
    /// Copy buffers a failed io_uring ring kept from reuse (the kernel might still have
    /// read or written them); freed only if their completion came later, else leaked.
    pub buffers_withheld: u64,
    /// Progress total right after the start: the bytes the sync mode selected.
    pub initial_total: u64,
    /// Nanoseconds from the start to `BLOCK_JOB_READY`.
    pub ready_ns: Option<u64>,
    /// Nanoseconds from the start to the end of the job.
    pub end_ns: Option<u64>,
}
