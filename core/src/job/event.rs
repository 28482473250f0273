//! Events: what the job tells its user.

use super::action::IoErrorKind;
use super::status::JobStatus;
use std::fmt;

/// Which side an error happened on: `read` is the source, `write` the target (flushes too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// A source read.
    Read,
    /// A target write, zero-write, discard or flush.
    Write,
}

/// What the policy did about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorAction {
    /// The job fails.
    Report,
    /// The chunk stays dirty and is retried.
    Ignore,
    /// The job pauses until `resume`.
    Stop,
}

impl Operation {
    /// The shared lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

impl ErrorAction {
    /// The shared lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorAction::Report => "report",
            ErrorAction::Ignore => "ignore",
            ErrorAction::Stop => "stop",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ErrorAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the user should know. Names match QEMU's QMP events.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `JOB_STATUS_CHANGE`: the status changed (every change is reported).
    StatusChange {
        /// The new status.
        status: JobStatus,
    },
    /// `BLOCK_JOB_READY`: the target caught up for the first time. Emitted exactly once.
    Ready {
        /// Progress at that moment.
        current: u64,
        /// Progress total at that moment.
        total: u64,
    },
    /// `BLOCK_JOB_COMPLETED`: the job ended; `error` is set when a `report` error ended it.
    Completed {
        /// Bytes copied.
        current: u64,
        /// Progress total.
        total: u64,
        /// The error that failed the job, if any.
        error: Option<IoErrorKind>,
        /// Whether the guest was switched over to the target.
        pivoted: bool,
    },
    /// `BLOCK_JOB_CANCELLED`: the job stopped early; the target may be inconsistent.
    Cancelled {
        /// Bytes copied.
        current: u64,
        /// Progress total.
        total: u64,
    },
    /// `BLOCK_JOB_ERROR`: an operation failed and a policy acted.
    Error {
        /// Which side.
        operation: Operation,
        /// What the policy did.
        action: ErrorAction,
        /// First byte of the failed range.
        offset: u64,
        /// Bytes in the failed range.
        length: u64,
        /// Why it failed.
        error: IoErrorKind,
    },
    /// `BLOCK_JOB_NOT_CONVERGING`: in background mode, dirty bytes did not shrink over the
    /// configured window. Emitted once per episode (again only after dirty bytes shrink).
    NotConverging {
        /// Dirty bytes now.
        dirty_bytes: u64,
        /// Estimated guest dirtying rate, bytes/s.
        dirty_bytes_per_sec: u64,
        /// Estimated copy rate, bytes/s.
        copy_bytes_per_sec: u64,
    },
}

impl Event {
    /// The shared event type name, e.g. `BLOCK_JOB_READY`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::StatusChange { .. } => "JOB_STATUS_CHANGE",
            Event::Ready { .. } => "BLOCK_JOB_READY",
            Event::Completed { .. } => "BLOCK_JOB_COMPLETED",
            Event::Cancelled { .. } => "BLOCK_JOB_CANCELLED",
            Event::Error { .. } => "BLOCK_JOB_ERROR",
            Event::NotConverging { .. } => "BLOCK_JOB_NOT_CONVERGING",
        }
    }
}
