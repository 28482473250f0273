//! Why a mirror's calls fail: [`StartError`] (starting), [`GuestIoError`] (guest reads,
//! writes and flushes), [`VerbError`] (verbs on the job); and how a refused NBD target
//! becomes a `StartError`.

use blockmirror_core::job::JobError;

use crate::files::OpenError;
use crate::locks::LockError;
use crate::net::NbdClientError;
use crate::target::NbdTargetError;

/// Why a mirror could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Opening or checking the files failed.
    #[error(transparent)]
    Open(OpenError),
    /// Another program uses one of the images in a way the mirror's lock refuses (or the
    /// mirror's use would break what that program's lock protects).
    #[error(transparent)]
    Locked(LockError),
    /// The job rejected its configuration.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The persistent bitmap file was refused, or could not be created or read.
    #[error(transparent)]
    Bitmap(#[from] crate::persist::PersistError),
    /// The source's allocation could not be read, or a thread could not start.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// How a refused NBD target is reported: an export that cannot be the target (another
/// size, read-only, coarser blocks) is invalid input, as a wrong local target is
/// ([`OpenError::Invalid`]); an export that could not be reached is an OS error opening the
/// URI ([`OpenError::Os`], with the socket's errno when there is one). The existing variants
/// keep every caller's match on `StartError` whole.
pub(super) fn nbd_start_error(error: NbdTargetError) -> StartError {
    let (uri, source) = match error {
        NbdTargetError::Connect { uri, source: NbdClientError::Connect { source, .. } } => (uri, source),
        NbdTargetError::Connect { uri, source } => (uri, std::io::Error::other(source)),
        refused => return StartError::Open(OpenError::Invalid(refused.to_string())),
    };
    StartError::Open(OpenError::Os { path: uri.into(), source })
}

impl From<OpenError> for StartError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Locked(e) => StartError::Locked(e),
            other => StartError::Open(other),
        }
    }
}

/// Why a guest I/O call failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestIoError {
    /// The range does not lie within the disk.
    #[error("range {offset}+{length} lies outside the disk of {disk_length} bytes")]
    OutOfRange {
        /// First byte.
        offset: u64,
        /// Bytes.
        length: u64,
        /// Disk length.
        disk_length: u64,
    },
    /// The mirror was closed.
    #[error("the mirror is closed")]
    Closed,
    /// A read longer than one call may allocate.
    #[error("a read of {length} bytes is longer than the limit of {limit} bytes per call; read in pieces")]
    TooLong {
        /// Bytes asked for.
        length: u64,
        /// [`MAX_GUEST_READ_BYTES`](super::MAX_GUEST_READ_BYTES).
        limit: u64,
    },
    /// The OS refused the read or write.
    #[error("{source}")]
    Os {
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why a verb was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerbError {
    /// The job refused it.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A thread of the mirror panicked; the job is no longer touched (see `State::broken`).
    #[error("the mirror failed internally and takes no more verbs: {0}")]
    Broken(String),
}
