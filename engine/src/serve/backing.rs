//! What holds the served disk's data while no job runs: a local file (the source, or a
//! file target after a switch-over), an NBD export (an NBD target after a switch-over) or
//! a qcow2 image (a qcow2 target after a switch-over, read through its backing chain).

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustix::fs::FallocateFlags;
use rustix::io::Errno;

use crate::image::chain::OpenBacking;
use crate::image::{Chain, ImageFormat};
use crate::io_ops;
use crate::locks::ImageLock;
use crate::target::{ImageTarget, NbdTarget};

const PUNCH_HOLE: FallocateFlags = FallocateFlags::PUNCH_HOLE.union(FallocateFlags::KEEP_SIZE);
const ZERO_RANGE: FallocateFlags = FallocateFlags::ZERO_RANGE.union(FallocateFlags::KEEP_SIZE);

/// The disk's data (see the module doc).
pub(super) enum Backing {
    /// A local file or block device, open (and image-locked) for as long as it holds the disk.
    File {
        file: File,
        path: PathBuf,
        /// Released when the file closes; kept here so it is visibly owned.
        _lock: Option<ImageLock>,
    },
    /// A remote export, reconnected after a failure as the job's target was.
    Nbd(Arc<NbdTarget>),
    /// A served qcow2 image, read and written through its backing chain. `file` is the
    /// locked top layer, kept to open the chain again after a job wrote the image through
    /// an opening of its own.
    Chain {
        chain: Chain,
        file: File,
        path: PathBuf,
        writable: bool,
        _lock: Option<ImageLock>,
    },
    /// A qcow2 image: the mirror's own opening of its target (with the target's image lock
    /// on its file), kept after the mirror is gone.
    Image {
        target: Arc<ImageTarget>,
        path: PathBuf,
    },
}

/// A fast zeroing the backing cannot do: the client's FAST_ZERO request is refused.
pub(super) struct NotFast;

impl Backing {
    /// The file or the URI, for messages and for a new job's source.
    pub(super) fn describe(&self) -> String {
        match self {
            Backing::File { path, .. } | Backing::Image { path, .. } | Backing::Chain { path, .. } => {
                path.display().to_string()
            }
            Backing::Nbd(target) => target.uri().to_string(),
        }
    }

    /// The local path, if the disk lives in a local raw file (a new job's source).
    /// The local file that holds the disk (the top layer of a qcow2 chain), if it is one.
    pub(super) fn local_file(&self) -> Option<&File> {
        match self {
            Backing::File { file, .. } | Backing::Chain { file, .. } => Some(file),
            Backing::Nbd(_) | Backing::Image { .. } => None,
        }
    }

    pub(super) fn path(&self) -> Option<&PathBuf> {
        match self {
            Backing::File { path, .. } | Backing::Chain { path, .. } => Some(path),
            Backing::Nbd(_) | Backing::Image { .. } => None,
        }
    }

    /// The format a new job's source has (qcow2 for a served image, else raw).
    pub(super) fn format(&self) -> ImageFormat {
        match self {
            Backing::Chain { .. } | Backing::Image { .. } => ImageFormat::Qcow2,
            Backing::File { .. } | Backing::Nbd(_) => ImageFormat::Raw,
        }
    }

    /// Opens a served image's chain again: a job wrote the image through its own opening,
    /// so this one's cached metadata is stale (it wrote nothing meanwhile: every request went
    /// through the job, and it was flushed before the job started).
    pub(super) fn reopen(&mut self) -> io::Result<()> {
        if let Backing::Chain { chain, file, path, writable, .. } = self {
            let fresh = Chain::open(path, file.try_clone()?, ImageFormat::Qcow2, *writable, OpenBacking::FromHeader, true)
                .map_err(io::Error::other)?;
            *chain = fresh;
        }
        Ok(())
    }

    pub(super) fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Backing::File { file, .. } => io_ops::read_exact(file, buf, offset),
            Backing::Nbd(target) => target.read(offset, buf),
            Backing::Chain { chain, .. } => chain.read(buf, offset),
            Backing::Image { target, .. } => target.read(buf, offset),
        }
    }

    pub(super) fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        match self {
            Backing::File { file, .. } => io_ops::write_all(file, data, offset),
            Backing::Nbd(target) => target.write(offset, data),
            Backing::Chain { chain, .. } => chain.write(data, offset),
            Backing::Image { target, .. } => target.write(data, offset),
        }
    }

    /// Makes the range read as zeroes; `unmap` lets it be deallocated.
    pub(super) fn zero(&self, offset: u64, length: u64, unmap: bool) -> io::Result<()> {
        match self {
            Backing::File { file, .. } => {
                io_ops::zero_range(file, offset, length, unmap).map(|_| ())
            }
            Backing::Nbd(target) => target.write_zeroes(offset, length, unmap),
            Backing::Chain { chain, .. } => chain.write_zeroes(offset, length),
            Backing::Image { target, .. } => target.write_zeroes(offset, length),
        }
    }

    /// Zeroes only where the filesystem does it without writing the range.
    pub(super) fn zero_fast(
        &self,
        offset: u64,
        length: u64,
        unmap: bool,
    ) -> Result<io::Result<()>, NotFast> {
        let Backing::File { file, .. } = self else {
            return Err(NotFast);
        };
        let mode = if unmap { PUNCH_HOLE } else { ZERO_RANGE };
        match rustix::fs::fallocate(file, mode, offset, length) {
            Ok(()) => Ok(Ok(())),
            Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => Err(NotFast),
            Err(e) => Ok(Err(e.into())),
        }
    }

    pub(super) fn flush(&self) -> io::Result<()> {
        match self {
            Backing::File { file, .. } => io_ops::datasync(file),
            Backing::Nbd(target) => target.flush(),
            Backing::Chain { chain, .. } => chain.flush(),
            Backing::Image { target, .. } => target.flush(),
        }
    }

    /// The holes inside `range` (none known for an export: all of it counts as data).
    pub(super) fn holes_within(
        &self,
        range: std::ops::Range<u64>,
    ) -> io::Result<Vec<std::ops::Range<u64>>> {
        match self {
            Backing::File { file, .. } => crate::extents::holes_within(file, range),
            Backing::Nbd(_) | Backing::Image { .. } | Backing::Chain { .. } => Ok(Vec::new()),
        }
    }
}
