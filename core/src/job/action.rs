//! Actions: what the job asks its driver to do. Data never enters the core: an action names
//! an operation id and a byte range, and the driver owns the bytes.

use super::config::ConfigError;
use crate::names::names;
use std::fmt;
use std::str::FromStr;

/// Identifies one operation from the action that starts it to its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ActionKind {
    /// Read `[offset, offset+length)` of the source into a buffer kept for this op.
    Read,
    /// Write what this op's read returned to the target at the same range.
    Write,
    /// Write zeroes to the target range (the read returned all zeroes).
    WriteZeroes,
    /// Discard the target range (the read returned zeroes and a discard reads as zeroes).
    Discard,
    /// A guest write announced with `MirrorJob::handle_guest_write_start` (answered `Wait`)
    /// may now write the source: it owns its chunks. Not completed with `handle_completion`:
    /// report the source write with `MirrorJob::handle_guest_write_landed`.
    Admit,
    /// Write-blocking mode: write the guest's data for this range to the target, then
    /// complete; the guest's write is acknowledged after that.
    GuestWrite,
    /// Flush the target.
    Flush,
    /// Hold new guest writes; complete once writes already started have finished (for
    /// write-blocking writes: once acknowledged). The job always releases the guest later
    /// with `Unquiesce` or `Pivot`, even when it is cancelled or fails.
    Quiesce,
    /// Let guest writes flow again.
    Unquiesce,
    /// Switch the guest over to the target. It is issued with the guest held (after a
    /// successful `Quiesce`, the final recheck and flush); once it completes the guest's I/O
    /// goes to the target and flows again: no `Unquiesce` follows a successful pivot. If it
    /// fails, the job un-quiesces the guest (still on the source) and fails.
    Pivot,
}

names!(
    ActionKind,
    "action kind",
    ConfigError,
    Read = "read",
    Write = "write",
    WriteZeroes = "write_zeroes",
    Discard = "discard",
    Admit = "admit",
    GuestWrite = "guest_write",
    Flush = "flush",
    Quiesce = "quiesce",
    Unquiesce = "unquiesce",
    Pivot = "pivot",
);

/// One thing for the driver to do. Every action must be completed with
/// `MirrorJob::handle_completion(action.op, ..)`, exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Action {
    /// What to do.
    pub kind: ActionKind,
    /// The operation this action belongs to (a read and its write share one op id).
    pub op: OpId,
    /// First byte (0 for flush, quiesce, unquiesce and pivot).
    pub offset: u64,
    /// Bytes (0 for flush, quiesce, unquiesce and pivot).
    pub length: u64,
}

/// Why an I/O operation failed, as far as the policies care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoErrorKind {
    /// No space left on the device (ENOSPC): `enospc` stops on this.
    NoSpace,
    /// A generic I/O error (EIO).
    Io,
    /// The device is read-only (EROFS, EBADF).
    ReadOnly,
    /// Any other errno.
    Other(i32),
}

impl IoErrorKind {
    /// The Linux errno for this kind.
    pub fn errno(self) -> i32 {
        match self {
            IoErrorKind::NoSpace => 28,
            IoErrorKind::Io => 5,
            IoErrorKind::ReadOnly => 30,
            IoErrorKind::Other(e) => e,
        }
    }

    /// The kind for a Linux errno.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            28 => IoErrorKind::NoSpace,
            5 => IoErrorKind::Io,
            30 | 9 => IoErrorKind::ReadOnly,
            e => IoErrorKind::Other(e),
        }
    }

    /// The kinds with a name of their own, in table order; any other errno is named by
    /// its decimal number.
    pub const NAMED: [IoErrorKind; 3] =
        [IoErrorKind::NoSpace, IoErrorKind::Io, IoErrorKind::ReadOnly];

    /// The shared name of a named kind (`nospace`, `io`, `readonly`); None for `Other`.
    pub const fn as_str(self) -> Option<&'static str> {
        match self {
            IoErrorKind::NoSpace => Some("nospace"),
            IoErrorKind::Io => Some("io"),
            IoErrorKind::ReadOnly => Some("readonly"),
            IoErrorKind::Other(_) => None,
        }
    }

    /// The shared name: `nospace`, `io`, `readonly`, or the errno in decimal. This is what
    /// events carry in their `error` field on every face; [`FromStr`] reads it back.
    pub fn name(self) -> String {
        match self.as_str() {
            Some(name) => name.to_owned(),
            None => self.errno().to_string(),
        }
    }

    /// The human message, as `strerror` words it ("No space left on device"); also the
    /// `Display` form, for error messages. Never a name: faces show it, never parse it.
    pub fn message(self) -> String {
        match self {
            IoErrorKind::NoSpace => "No space left on device".into(),
            IoErrorKind::Io => "Input/output error".into(),
            IoErrorKind::ReadOnly => "Read-only file system".into(),
            IoErrorKind::Other(e) => format!("errno {e}"),
        }
    }
}

impl fmt::Display for IoErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl FromStr for IoErrorKind {
    type Err = ConfigError;
    /// A shared name (`nospace`, `io`, `readonly`) or a positive errno in decimal.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        if let Some(kind) = Self::NAMED.into_iter().find(|k| k.as_str() == Some(s)) {
            return Ok(kind);
        }
        match s.parse::<i32>() {
            Ok(errno) if errno > 0 => Ok(IoErrorKind::from_errno(errno)),
            _ => Err(ConfigError::UnknownName {
                what: "error kind",
                name: s.to_owned(),
            }),
        }
    }
}

/// How an operation ended, reported by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpResult {
    /// It succeeded.
    Ok,
    /// A read succeeded and every byte was zero (the job then asks for write_zeroes/discard).
    OkZeroes,
    /// It failed.
    Failed(IoErrorKind),
}
