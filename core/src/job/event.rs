//! Events: what the job tells its user.

use super::action::IoErrorKind;
use super::status::JobStatus;
use super::config::ConfigError;
use crate::names::names;

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

names!(Operation, "operation", ConfigError, Read = "read", Write = "write");
names!(ErrorAction, "error action", ConfigError, Report = "report", Ignore = "ignore", Stop = "stop");

/// The type of an [`Event`], without its fields. Names match QEMU's QMP events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventType {
    /// [`Event::StatusChange`].
    StatusChange,
    /// [`Event::Ready`].
    Ready,
    /// [`Event::Completed`].
    Completed,
    /// [`Event::Cancelled`].
    Cancelled,
    /// [`Event::Error`].
    Error,
    /// [`Event::NotConverging`].
    NotConverging,
}

names!(
    EventType,
    "event type",
    ConfigError,
    StatusChange = "JOB_STATUS_CHANGE",
    Ready = "BLOCK_JOB_READY",
    Completed = "BLOCK_JOB_COMPLETED",
    Cancelled = "BLOCK_JOB_CANCELLED",
    Error = "BLOCK_JOB_ERROR",
    NotConverging = "BLOCK_JOB_NOT_CONVERGING",
);

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
    /// The event's type.
    pub fn event_type(&self) -> EventType {
        match self {
            Event::StatusChange { .. } => EventType::StatusChange,
            Event::Ready { .. } => EventType::Ready,
            Event::Completed { .. } => EventType::Completed,
            Event::Cancelled { .. } => EventType::Cancelled,
            Event::Error { .. } => EventType::Error,
            Event::NotConverging { .. } => EventType::NotConverging,
        }
    }

    /// The shared event type name, e.g. `BLOCK_JOB_READY`.
    pub fn type_name(&self) -> &'static str {
        self.event_type().as_str()
    }
}
