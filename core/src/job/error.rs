//! Errors a caller can cause.

use super::action::OpId;
use super::config::ConfigError;
use super::status::{JobStatus, Verb};

/// Bad input to a job: the call changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The verb is not allowed in the current status.
    #[error("cannot {verb} a job in status {status}")]
    VerbNotAllowed {
        /// The verb refused.
        verb: Verb,
        /// The status it was refused in.
        status: JobStatus,
    },
    /// `complete` after a cancel was requested.
    #[error("cannot complete a job that is being cancelled")]
    CancelRequested,
    /// A completion for an operation that is not waiting for one.
    #[error("no operation {0} is waiting for a completion")]
    UnknownOp(OpId),
    /// `handle_completion` for a guest write's `admit` action: its source write is reported
    /// with `handle_guest_write_landed` instead.
    #[error("{0} is a guest write being admitted: report its source write with handle_guest_write_landed")]
    LandingExpected(OpId),
    /// A completion result that does not fit the action (e.g. zeroes for a write).
    #[error("result {result} does not fit the {kind} action of {op}")]
    BadResult {
        /// The operation.
        op: OpId,
        /// The action kind it was completing.
        kind: &'static str,
        /// The result given.
        result: &'static str,
    },
    /// A range that does not lie within the disk.
    #[error("range {offset}+{length} lies outside the disk of {disk_length} bytes")]
    OutOfRange {
        /// First byte.
        offset: u64,
        /// Bytes.
        length: u64,
        /// The disk length.
        disk_length: u64,
    },
    /// A zero-length range.
    #[error("zero-length range at {offset}")]
    ZeroLength {
        /// The offset given.
        offset: u64,
    },
}
