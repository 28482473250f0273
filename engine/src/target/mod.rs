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
//! - [`image`]: [`ImageTarget`], a qcow2 target written through imago (no io_uring, no
//!   O_DIRECT, no in-kernel copies: its data goes where imago maps it).

pub mod image;
pub mod nbd;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::files::{OpenedFiles, Side};
use crate::image::Chain;
use crate::io_ops;
use crate::nbd::NbdUri;

pub use image::{Below, ImageTarget};
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
    /// A local qcow2 image.
    Image(Arc<ImageTarget>),
}

impl TargetSide {
    /// The local side, if the target is one.
    pub fn file(&self) -> Option<&Side> {
        match self {
            TargetSide::File(side) => Some(side),
            TargetSide::Nbd(_) | TargetSide::Image(_) => None,
        }
    }

    /// The local file under the target, raw or image (for its lock and descriptors).
    pub fn local_file(&self) -> Option<&Side> {
        match self {
            TargetSide::File(side) => Some(side),
            TargetSide::Image(image) => Some(&image.side),
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
            TargetSide::Image(image) => image.write(data, offset),
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_exact(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            TargetSide::File(side) => io_ops::read_exact(&side.buffered, buf, offset),
            TargetSide::Nbd(nbd) => nbd.read(offset, buf),
            TargetSide::Image(image) => image.read(buf, offset),
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
            // Zero clusters whatever `unmap` says: nothing is deallocated.
            TargetSide::Image(image) => image.write_zeroes(offset, length).map(|()| false),
        }
    }

    /// Makes every completed write durable: fdatasync, or `NBD_CMD_FLUSH`.
    pub fn flush(&self) -> io::Result<()> {
        match self {
            TargetSide::File(side) => io_ops::datasync(&side.copy),
            TargetSide::Nbd(nbd) => nbd.flush(),
            TargetSide::Image(image) => image.flush(),
        }
    }

    /// Whether a discard (hole punch) is known to leave zeroes here. A remote export is
    /// never assumed to: `NBD_CMD_TRIM` promises nothing about what reads back.
    pub fn discard_reads_zero(&self) -> bool {
        match self {
            TargetSide::File(side) => {
                io_ops::punch_hole_supported(&side.buffered, side.is_block_device)
            }
            TargetSide::Nbd(_) | TargetSide::Image(_) => false,
        }
    }
}

/// Both sides of a running mirror and the disk's length.
#[derive(Debug)]
pub struct Sides {
    /// The source (copy handle read-only; buffered handle writable when guest writes are on).
    /// For a qcow2 source these are the top layer's file: its data is read and written
    /// through `source_image` only.
    pub source: Side,
    /// The source's image when it is qcow2 (`None`: the source is raw).
    pub source_image: Option<Arc<Chain>>,
    /// The target.
    pub target: TargetSide,
    /// The source's length in bytes (the mirror's disk length).
    pub length: u64,
    /// Whether the target was created here (so it reads as zero everywhere).
    pub target_created: bool,
}

impl From<OpenedFiles> for Sides {
    fn from(files: OpenedFiles) -> Self {
        let target = match files.target_image {
            Some((chain, below)) => TargetSide::Image(Arc::new(ImageTarget::new(files.target, chain, below))),
            None => TargetSide::File(files.target),
        };
        Sides {
            source: files.source,
            source_image: files.source_image,
            target,
            length: files.length,
            target_created: files.target_created,
        }
    }
}

impl Sides {
    /// Reads the source's guest view (through its chain when it is an image).
    pub fn source_read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match &self.source_image {
            Some(chain) => chain.read(buf, offset),
            None => io_ops::read_exact(&self.source.buffered, buf, offset),
        }
    }

    /// Writes the guest's data to the source (its top layer when it is an image).
    pub fn source_write(&self, data: &[u8], offset: u64) -> io::Result<()> {
        match &self.source_image {
            Some(chain) => chain.write(data, offset),
            None => io_ops::write_all(&self.source.buffered, data, offset),
        }
    }

    /// Makes a source range read as zeroes (zero clusters on an image, see
    /// [`io_ops::zero_range`] on a raw file).
    pub fn source_zero_range(&self, offset: u64, length: u64, unmap: bool) -> io::Result<()> {
        match &self.source_image {
            Some(chain) => chain.write_zeroes(offset, length),
            None => io_ops::zero_range(&self.source.buffered, offset, length, unmap).map(drop),
        }
    }

    /// Makes the guest's source writes durable.
    pub fn source_flush(&self) -> io::Result<()> {
        match &self.source_image {
            Some(chain) => chain.flush(),
            None => io_ops::datasync(&self.source.buffered),
        }
    }
}
