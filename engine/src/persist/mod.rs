//! The persistent write-intent bitmap: a file beside the target that records which chunks
//! may differ between the source and the target, kept crash-safe so that a mirror killed
//! at any moment resumes by copying only those chunks.
//!
//! The invariant, at every instant: every chunk whose target content may differ from the
//! source's is marked in the file (its newest valid slot). Two rules keep it:
//!
//! - **Mark before write.** A guest write's chunks are marked, and the mark synced, before
//!   the write reaches the source ([`WriteIntent::mark`]). Marks are batched (one sync
//!   covers every write waiting at that moment) and a chunk already marked in the file
//!   costs nothing.
//! - **Clear lazily.** A chunk is cleared only after the job no longer holds it dirty, no
//!   copy or guest write on it was in flight when that was observed, nothing marked it
//!   since, and the target was flushed afterwards (so the copy that made it clean is
//!   durable). Chunks written during the last few cleaning intervals stay marked (the activity
//!   window), so hot chunks are not cleared and re-marked over and over.
//!
//! Modules: `format` (a slot's bytes: header and body, checksums), `file` (the two
//! alternating slots), `intent` (marking, batching, clearing), `cleaner` (the thread that
//! clears, and what happens to the file when the mirror ends), `setup` (opening or
//! creating the file for a starting mirror).

use std::path::PathBuf;

mod cleaner;
mod file;
mod format;
mod intent;
mod setup;

pub(crate) use cleaner::spawn_cleaner;
pub use file::{inspect, BitmapFile};
pub use format::{BitmapIdentity, DecodedSlot, SideIdentity, MAGIC, VERSION};
pub use intent::IntentStats;
pub use intent::{IntentTicket, WriteIntent, ACTIVITY_ROUNDS};
pub(crate) use setup::{attach, open_left_behind};
pub use setup::{default_bitmap_path, BitmapSetup, DEFAULT_BITMAP_GRANULARITY, DEFAULT_CLEAN_INTERVAL};

/// Marks the chunks of a guest write of `[offset, offset+length)` in the mirror's bitmap
/// file, durably, before the write touches the source; `None` for a mirror without one.
/// Keep the ticket until the job has heard of the write's landing.
pub(crate) fn mark_guest_write(
    shared: &crate::shared::Shared,
    offset: u64,
    length: u64,
) -> std::io::Result<Option<IntentTicket>> {
    match shared.intent.get() {
        Some(intent) => intent.mark(offset, length).map(Some).map_err(std::io::Error::other),
        None => Ok(None),
    }
}

/// Why a bitmap file was refused, or could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The file is shorter than its slots need: a write was cut off, or it is no bitmap.
    #[error("bitmap file is truncated: {found} bytes where {needed} are needed")]
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes there.
        found: u64,
    },
    /// The file does not start like a bitmap file.
    #[error("not a blockmirror bitmap file (bad magic)")]
    BadMagic,
    /// Written by another layout version.
    #[error("bitmap file version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The file's version.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The header's checksum fails: the header is damaged (or torn by a crash).
    #[error("bitmap file header checksum mismatch (damaged or torn)")]
    HeaderChecksum,
    /// The body's checksum fails: the bitmap is damaged (or torn by a crash).
    #[error("bitmap file body checksum mismatch (damaged or torn)")]
    BodyChecksum,
    /// A field that passed its checksum still makes no sense.
    #[error("bitmap file is malformed: {0}")]
    Malformed(&'static str),
    /// The bitmap describes a disk of another length.
    #[error("bitmap is for a disk of {found} bytes, not {expected}")]
    OtherLength {
        /// The file's length.
        found: u64,
        /// This mirror's length.
        expected: u64,
    },
    /// The bitmap has another granularity.
    #[error("bitmap has granularity {found}, not {expected} (resume with the granularity it was made with)")]
    OtherGranularity {
        /// The file's granularity.
        found: u64,
        /// This mirror's granularity.
        expected: u64,
    },
    /// The bitmap is for another source.
    #[error("bitmap is for another source ({found}), not {expected}")]
    OtherSource {
        /// The file's source.
        found: String,
        /// This mirror's source.
        expected: String,
    },
    /// The bitmap is for another target.
    #[error("bitmap is for another target ({found}), not {expected}")]
    OtherTarget {
        /// The file's target.
        found: String,
        /// This mirror's target.
        expected: String,
    },
    /// The bitmap is older than the caller knows it must be (a stale copy of the file).
    #[error("bitmap generation {found} is older than the expected {expected_at_least} (a stale copy)")]
    StaleGeneration {
        /// The file's newest valid generation.
        found: u64,
        /// The least the caller accepts.
        expected_at_least: u64,
    },
    /// A bitmap file exists and resuming was not asked for.
    #[error(
        "bitmap file {} exists: a previous mirror of this target did not finish; pass resume=True \
         (--resume) to copy only what it left to do, or remove the file to start over",
        path.display()
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Resuming was asked for, but there is no bitmap file.
    #[error("no bitmap file {} to resume from (start without resume to create it)", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// Resuming needs the target as it was left: `reuse` must be on.
    #[error("resuming needs the existing target: pass reuse=True (--reuse) with resume")]
    ResumeNeedsReuse,
    /// The bitmap's granularity is not a power of two at least the job's.
    #[error("bitmap granularity {requested} must be a power of two and at least the job's granularity {job}")]
    Granularity {
        /// What was asked for.
        requested: u64,
        /// The job's granularity.
        job: u64,
    },
    /// Resuming with `sync=none` would copy nothing the bitmap marks.
    #[error("resuming needs sync full or top (sync none ignores the bitmap)")]
    ResumeWithSyncNone,
    /// An NBD target has no local path to put the bitmap beside: one must be named.
    #[error("an NBD target needs an explicit bitmap path (bitmap=PATH, --bitmap PATH)")]
    NeedsPath,
    /// Reading, writing or syncing the file failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}
