//! Events: what the job tells its user.

use super::action::IoErrorKind;
use super::config::ConfigError;
use super::status::JobStatus;
use crate::names::names;
use std::borrow::Cow;

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

names!(
    Operation,
    "operation",
    ConfigError,
    Read = "read",
    Write = "write"
);
names!(
    ErrorAction,
    "error action",
    ConfigError,
    Report = "report",
    Ignore = "ignore",
    Stop = "stop"
);

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
    /// [`Event::AutoConverge`].
    AutoConverge,
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
    AutoConverge = "BLOCK_JOB_AUTO_CONVERGE",
);

/// Which rule made auto-converge switch to write-blocking (see
/// [`MirrorConfig::auto_converge`](super::MirrorConfig::auto_converge)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AutoConvergeTrigger {
    /// The job's own `BLOCK_JOB_NOT_CONVERGING`.
    NotConverging,
    /// The guest dirtied at least 90 % of the copy rate for a whole window.
    DirtyRate,
}

names!(
    AutoConvergeTrigger,
    "auto-converge trigger",
    ConfigError,
    NotConverging = "not_converging",
    DirtyRate = "dirty_rate"
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
    /// configured window (the stall), or, while running, the time to ready forecast from
    /// the rates over the last window exceeds
    /// [`NOT_CONVERGING_ETA_WINDOWS`](super::NOT_CONVERGING_ETA_WINDOWS) windows with the
    /// guest dirtying at least half as fast as the job copies (a backlog that shrinks too
    /// slowly, or a noisy equilibrium). Emitted once per episode of either rule (a stall
    /// ends when dirty bytes shrink to a new low, a forecast with a window that is fast
    /// enough again).
    NotConverging {
        /// Dirty bytes now.
        dirty_bytes: u64,
        /// Estimated guest dirtying rate, bytes/s: over the last 2 s for a stall, over the
        /// forecast's window for a forecast.
        dirty_bytes_per_sec: u64,
        /// Estimated copy rate, bytes/s, over the same span.
        copy_bytes_per_sec: u64,
    },
    /// `BLOCK_JOB_AUTO_CONVERGE` (beyond QEMU): with `auto_converge`, background copying
    /// lost the race and the job switched itself to write-blocking (the copy mode is
    /// `write-blocking` from this event on). Emitted once per switch.
    AutoConverge {
        /// Which rule fired.
        trigger: AutoConvergeTrigger,
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
            Event::AutoConverge { .. } => EventType::AutoConverge,
        }
    }

    /// The shared event type name, e.g. `BLOCK_JOB_READY`.
    pub fn type_name(&self) -> &'static str {
        self.event_type().as_str()
    }

    /// The event's fields as `(name, value)` pairs, in a fixed order, without `type`: the
    /// schema every face shows (Python's `Event`, the page's event objects). An event type
    /// always has the same names; a field with nothing to say (`error` of a completion that
    /// succeeded) is [`FieldValue::None`]. Names and values are the shared names
    /// (`error` is `nospace`, never the human message).
    pub fn fields(&self) -> Vec<(&'static str, FieldValue)> {
        use FieldValue::{Bool, Str, U64};
        match *self {
            Event::StatusChange { status } => vec![("status", Str(status.as_str().into()))],
            Event::Ready { current, total } | Event::Cancelled { current, total } => {
                vec![("current", U64(current)), ("total", U64(total))]
            }
            Event::Completed {
                current,
                total,
                error,
                pivoted,
            } => vec![
                ("current", U64(current)),
                ("total", U64(total)),
                (
                    "error",
                    error.map_or(FieldValue::None, |e| Str(e.name().into())),
                ),
                ("pivoted", Bool(pivoted)),
            ],
            Event::Error {
                operation,
                action,
                offset,
                length,
                error,
            } => vec![
                ("operation", Str(operation.as_str().into())),
                ("action", Str(action.as_str().into())),
                ("offset", U64(offset)),
                ("length", U64(length)),
                ("error", Str(error.name().into())),
            ],
            Event::NotConverging {
                dirty_bytes,
                dirty_bytes_per_sec,
                copy_bytes_per_sec,
            } => vec![
                ("dirty_bytes", U64(dirty_bytes)),
                ("dirty_bytes_per_sec", U64(dirty_bytes_per_sec)),
                ("copy_bytes_per_sec", U64(copy_bytes_per_sec)),
            ],
            Event::AutoConverge {
                trigger,
                dirty_bytes,
                dirty_bytes_per_sec,
                copy_bytes_per_sec,
            } => vec![
                ("trigger", Str(trigger.as_str().into())),
                ("dirty_bytes", U64(dirty_bytes)),
                ("dirty_bytes_per_sec", U64(dirty_bytes_per_sec)),
                ("copy_bytes_per_sec", U64(copy_bytes_per_sec)),
            ],
        }
    }
}

/// The value of one event field (see [`Event::fields`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FieldValue {
    /// Bytes, rates: an unsigned integer.
    U64(u64),
    /// A flag.
    Bool(bool),
    /// A shared name (status, operation, action, error kind).
    Str(Cow<'static, str>),
    /// Nothing to say (Python `None`, JavaScript `null`).
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_use_names_not_messages() {
        let e = Event::Error {
            operation: Operation::Write,
            action: ErrorAction::Stop,
            offset: 65536,
            length: 4096,
            error: IoErrorKind::NoSpace,
        };
        assert_eq!(e.fields()[4], ("error", FieldValue::Str("nospace".into())));
        let done = Event::Completed {
            current: 1,
            total: 1,
            error: None,
            pivoted: true,
        };
        let names: Vec<_> = done.fields().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["current", "total", "error", "pivoted"],
            "a fixed schema, error None"
        );
        assert_eq!(done.fields()[2].1, FieldValue::None);
    }
}
