//! Disk image formats: raw files and qcow2 images with their backing chains, read and
//! written through the `imago` crate (no qcow2 code of our own).
//!
//! A raw source or target keeps the engine's own fast paths (O_DIRECT, io_uring,
//! in-kernel copies); an image goes through [`Chain`], whose guest view (virtual size,
//! reads through the backing chain, writes allocating clusters in the top layer) is what
//! the mirror copies and what its guest sees.
//!
//! - [`format`]: [`ImageFormat`] and the probe of a file's format.
//! - [`chain`]: [`Chain`], an image opened with its backing files, layer by layer, each
//!   layer's identity (device and inode) kept for the checks below.
//! - [`create`]: a new qcow2 target, standalone or with a backing file in its header.
//! - [`allocation`]: which ranges a sync mode needs, from imago's mapping.
//! - [`plan`]: what a sync mode asks of the target's backing file, and the checks
//!   that refuse a target whose chain is wrong, before anything is written.

pub mod allocation;
pub mod chain;
pub mod create;
pub mod format;
pub mod plan;

use std::io;
use std::path::PathBuf;

pub use chain::{Chain, Layer};
pub use format::ImageFormat;
pub use plan::TargetBacking;

/// The longest backing chain opened: a longer one is refused rather than followed (a
/// crafted chain must not exhaust descriptors or the stack).
pub const MAX_CHAIN_LENGTH: usize = 64;

/// Why an image (or its chain) cannot be used. Every check runs before the mirror writes
/// anything.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A backing file named in an image's header does not exist.
    #[error("backing file {backing} of {image} does not exist")]
    MissingBacking {
        /// The image whose header names it.
        image: PathBuf,
        /// The backing file, resolved against the image's directory.
        backing: PathBuf,
    },
    /// A backing file exists but cannot be opened for reading.
    #[error("backing file {backing} of {image} cannot be read: {source}")]
    UnreadableBacking {
        /// The image whose header names it.
        image: PathBuf,
        /// The backing file.
        backing: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The format asked for (or named in a header) is not the file's.
    #[error("{path} is not a {expected} image (its contents say {found})")]
    FormatMismatch {
        /// The file.
        path: PathBuf,
        /// The format asked for.
        expected: ImageFormat,
        /// The format found.
        found: ImageFormat,
    },
    /// A format name that is not known.
    #[error("unknown image format {0:?} (known: raw, qcow2)")]
    UnknownFormat(String),
    /// The qcow2 header or metadata cannot be read as qcow2.
    #[error("{path} is a corrupt or unsupported qcow2 image: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What imago reported.
        source: io::Error,
    },
    /// The chain names a file that is already in it (a loop).
    #[error("backing chain of {image} loops: {backing} is already in the chain")]
    BackingLoop {
        /// The image whose header closes the loop.
        image: PathBuf,
        /// The file named again.
        backing: PathBuf,
    },
    /// The chain is longer than [`MAX_CHAIN_LENGTH`].
    #[error("backing chain of {0} is longer than {MAX_CHAIN_LENGTH} images")]
    ChainTooLong(PathBuf),
    /// The target is a file of the source's chain: writing it would corrupt the source.
    #[error("target {target} is part of the source's backing chain ({layer})")]
    TargetInChain {
        /// The target.
        target: PathBuf,
        /// The layer of the source's chain that is the same file.
        layer: PathBuf,
    },
    /// An existing target's backing file is not the one the sync mode needs.
    #[error("target {target} has backing file {found}, but sync={sync} needs {expected}")]
    WrongBacking {
        /// The target.
        target: PathBuf,
        /// What its header names ("none" when nothing).
        found: String,
        /// What it must be ("none" when nothing).
        expected: String,
        /// The sync mode.
        sync: &'static str,
    },
    /// The sync mode needs a target with a backing file, which this target cannot have.
    #[error("sync={sync} needs a qcow2 target with {needs} as its backing file; {target} would be a {format} image without one")]
    NeedsBackingTarget {
        /// The target.
        target: PathBuf,
        /// Its format.
        format: ImageFormat,
        /// The backing file it would need.
        needs: PathBuf,
        /// The sync mode.
        sync: &'static str,
    },
    /// The virtual sizes differ.
    #[error("target {target} has a virtual size of {target_size} bytes but the source has {source_size}")]
    SizeMismatch {
        /// The target.
        target: PathBuf,
        /// Its virtual size.
        target_size: u64,
        /// The source's.
        source_size: u64,
    },
    /// Something this engine does not support for images.
    #[error("{0}")]
    Unsupported(String),
    /// Another program uses a backing file in a way that conflicts with the mirror's
    /// shared read lock on it (it writes or resizes it).
    #[error(transparent)]
    Locked(#[from] crate::locks::LockError),
    /// The OS failed while opening or creating an image.
    #[error("{path}: {source}")]
    Os {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl ImageError {
    /// A stable short name of the error's kind (for bindings and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            ImageError::MissingBacking { .. } => "missing_backing",
            ImageError::UnreadableBacking { .. } => "unreadable_backing",
            ImageError::FormatMismatch { .. } => "format_mismatch",
            ImageError::UnknownFormat(_) => "unknown_format",
            ImageError::Corrupt { .. } => "corrupt",
            ImageError::BackingLoop { .. } => "backing_loop",
            ImageError::ChainTooLong(_) => "chain_too_long",
            ImageError::TargetInChain { .. } => "target_in_chain",
            ImageError::WrongBacking { .. } => "wrong_backing",
            ImageError::NeedsBackingTarget { .. } => "needs_backing_target",
            ImageError::SizeMismatch { .. } => "size_mismatch",
            ImageError::Unsupported(_) => "unsupported",
            ImageError::Locked(_) => "locked",
            ImageError::Os { .. } => "os",
        }
    }
}
