//! Where the mirror writes: a local file or block device, or a remote NBD export.
//!
//! [`MirrorTarget`] is what a caller names; [`TargetSide`] is what the running mirror
//! holds. The copy path, the write-blocking guest path, zero writes, flushes and guest I/O
//! after the switch-over all go through a `TargetSide`: one `match` per operation, no
//! dynamic dispatch, and the local arm is the same system calls as before any remote
//! target existed (the copy write's O_DIRECT handle choice, in-kernel offload and
//! writeback hints stay in the worker's local arm, see `workers`).
//!
//! Only a local target can use io_uring and `copy_file_range`; with an NBD target,
//! O_DIRECT (when asked for) applies to the source alone.
//!
//! - [`nbd`]: [`NbdTarget`], the export behind a connection that is made again after it
//!   failed.

pub mod nbd;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::files::{OpenedFiles, Side};
use crate::io_ops;
use crate::nbd::NbdUri;

pub use nbd::{NbdTarget, NbdTargetError};

/// What a mirror writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorTarget {
    /// A local file or block device (created sparse unless `reuse`).
    Path(PathBuf),
    /// An export of a running NBD server, used as it is: it must exist, be writable and
    /// have the source's size. It is never created, resized or locked here (the server
    /// holds its own image's locks).
    Nbd(NbdUri),
}

/// The target of a running mirror.
#[derive(Debug)]
pub enum TargetSide {
    /// A local file or block device.
    File(Side),
    /// A remote NBD export.
    Nbd(Arc<NbdTarget>),
}

impl TargetSide {
    /// The local side, if the target is one.
    pub fn file(&self) -> Option<&Side> {
        match self {
            TargetSide::File(side) => Some(side),
            TargetSide::Nbd(_) => None,
        }
    }

    /// Whether this is a block device (never for an export).
    pub fn is_block_device(&self) -> bool {
        self.file().is_some_and(|side| side.is_block_device)
    }

    /// Writes all of `data` at `offset` (a guest write; the copy path's own local write
    /// picks its handle itself).
    pub fn write_all(&self, data: &[u8], offset: u64) -> io::Result<()> {
        match self {
            TargetSide::File(side) => io_ops::write_all(&side.buffered, data, offset),
            TargetSide::Nbd(nbd) => nbd.write(offset, data),
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_exact(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            TargetSide::File(side) => io_ops::read_exact(&side.buffered, buf, offset),
            TargetSide::Nbd(nbd) => nbd.read(offset, buf),
        }
    }

    /// Makes the range read as zeroes, deallocating it only when `unmap` (see
    /// [`io_ops::zero_range`] and [`NbdTarget::write_zeroes`]). Returns whether the range is
    /// known to be deallocated now (a hole was punched locally; a remote server never says).
    pub fn zero_range(&self, offset: u64, length: u64, unmap: bool) -> io::Result<bool> {
        match self {
            TargetSide::File(side) => io_ops::zero_range(&side.buffered, offset, length, unmap)
                .map(|m| m == io_ops::ZeroMethod::PunchHole),
            TargetSide::Nbd(nbd) => nbd.write_zeroes(offset, length, unmap).map(|()| false),
        }
    }

    /// Makes every completed write durable: fdatasync, or `NBD_CMD_FLUSH`.
    pub fn flush(&self) -> io::Result<()> {
        match self {
            TargetSide::File(side) => io_ops::datasync(&side.copy),
            TargetSide::Nbd(nbd) => nbd.flush(),
        }
    }

    /// Whether a discard (hole punch) is known to leave zeroes here. A remote export is
    /// never assumed to: `NBD_CMD_TRIM` promises nothing about what reads back.
    pub fn discard_reads_zero(&self) -> bool {
        match self {
            TargetSide::File(side) => {
                io_ops::punch_hole_supported(&side.buffered, side.is_block_device)
            }
            TargetSide::Nbd(_) => false,
        }
    }
}

/// Both sides of a running mirror and the disk's length.
#[derive(Debug)]
pub struct Sides {
    /// The source (copy handle read-only; buffered handle writable when guest writes are on).
    pub source: Side,
    /// The target.
    pub target: TargetSide,
    /// The source's length in bytes (the mirror's disk length).
    pub length: u64,
    /// Whether the target was created here (so it reads as zero everywhere).
    pub target_created: bool,
}

impl From<OpenedFiles> for Sides {
    fn from(files: OpenedFiles) -> Self {
        Sides {
            source: files.source,
            target: TargetSide::File(files.target),
            length: files.length,
            target_created: files.target_created,
        }
    }
}
