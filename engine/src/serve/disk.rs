//! The served disk: where each client request of the export goes, and the moves of the
//! disk between files when a mirror job starts, switches over or ends.
//!
//! Invariants:
//! - While no job runs, requests go straight to the file that holds the disk.
//! - While a job runs, every request goes through its [`FileMirror`], which tracks writes
//!   (or mirrors them, write-blocking) and, after the switch-over, sends them to the target.
//! - A route changes only under the write lock, so no request is half on one route and half
//!   on the other: a job starts with no request in flight, and when it ends the disk stays
//!   on the file the job left it on (the target after a switch-over, else the source).
//! - With a bitmap file (`keep_bitmap`), the file's invariant holds between jobs too: while
//!   a file left by a job that did not switch over exists, every write is marked in it
//!   before it reaches the disk, so the job that resumes from it copies what changed.
//! - The file that holds the disk keeps its image locks for as long as it holds the disk:
//!   the source's lock is taken here once, and a job started here does not lock the source
//!   again (two lock holders in one process would refuse each other).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::backing::{Backing, NotFast};
use crate::image::chain::OpenBacking;
use crate::image::{Chain, ImageFormat};
use crate::engine::{FileMirror, GuestIoError, MirrorSetup, StartError};
use crate::locks::{self, ImageLock};
use crate::nbd::{Extent, NbdError};
use crate::persist::{self, BitmapSetup, IntentTicket, PersistError, WriteIntent};
use crate::target::MirrorTarget;

/// What a client's write or write-zeroes changes.
enum Change {
    Data(Vec<u8>),
    Zeroes { length: u64, unmap: bool },
}

/// A running job and the target it mirrors to.
struct RunningJob {
    mirror: Arc<FileMirror>,
    target: MirrorTarget,
}

struct Route {
    /// What holds the disk; while a job runs, what the job started from, kept open (and
    /// locked) so the disk can fall back to it when the job ends without a switch-over.
    held: Backing,
    /// `None`: requests go straight to `held`.
    job: Option<RunningJob>,
    /// While no job runs: the bitmap file a job left behind (it stopped short of the
    /// switch-over, or the process died), in which writes to `held` are marked first.
    left_behind: Option<Arc<WriteIntent>>,
}

/// Why a served disk could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Opening the file failed.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another program holds the image.
    #[error(transparent)]
    Locked(#[from] locks::LockError),
    /// Not a regular file or block device, or empty.
    #[error("{0}")]
    Invalid(String),
    /// The bitmap file beside the disk was refused or could not be opened.
    #[error("bitmap file {}: {source}", path.display())]
    Bitmap {
        /// The file.
        path: PathBuf,
        /// Why.
        source: PersistError,
    },
}

/// Why a job could not be started on the disk.
#[derive(Debug, thiserror::Error)]
pub enum StartMirrorError {
    /// A job already runs on this disk.
    #[error("a mirror job is already running on this disk")]
    Busy,
    /// The mirror refused to start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Resuming was asked for, and the disk keeps no bitmap file.
    #[error("resuming, or a minimum bitmap generation, needs a bitmap file: serve the disk with a bitmap path (--bitmap PATH)")]
    NoBitmap,
    /// The disk lives on an NBD export or a qcow2 image (after a switch-over to one): a job
    /// needs a local raw source.
    #[error("the disk now lives on {0}: a new job needs a local raw source")]
    RemoteSource(String),
}

/// The disk behind an export.
pub struct ServedDisk {
    length: u64,
    read_only: bool,
    /// Where jobs keep their write-intent bitmap, if they keep one.
    bitmap: Option<PathBuf>,
    route: RwLock<Route>,
}

impl ServedDisk {
    /// Opens `path` (read-write unless `read_only`) and locks it as blockmirror's images are
    /// locked, so that no other program writes it behind the export's back.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, DiskError> {
        Self::open_as(path, read_only, None)
    }

    /// [`open`](Self::open) with the image's format: `None` probes it (a regular file with
    /// the qcow2 magic is qcow2). A qcow2 disk is served through its backing chain (its
    /// backing files locked as QEMU locks them).
    pub fn open_as(path: &Path, read_only: bool, format: Option<ImageFormat>) -> Result<Self, DiskError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| DiskError::Open {
                path: path.to_owned(),
                source,
            })?;
        let length = length_of(&file).map_err(|source| DiskError::Open {
            path: path.to_owned(),
            source,
        })?;
        if length == 0 {
            return Err(DiskError::Invalid(format!(
                "{} is empty: there is no disk to serve",
                path.display()
            )));
        }
        let (held, unshared) = locks::mirror_perms(!read_only);
        let lock = Some(ImageLock::acquire(&file, path, held, unshared)?);
        let is_file = file.metadata().is_ok_and(|m| m.is_file());
        let format = match format {
            Some(format) => format,
            None if is_file => ImageFormat::probe(&file).map_err(|source| DiskError::Open { path: path.to_owned(), source })?,
            None => ImageFormat::Raw,
        };
        if format == ImageFormat::Qcow2 {
            let top = file.try_clone().map_err(|source| DiskError::Open { path: path.to_owned(), source })?;
            let chain = Chain::open(path, top, format, !read_only, OpenBacking::FromHeader, true)
                .map_err(|e| DiskError::Invalid(e.to_string()))?;
            return Ok(Self {
                length: chain.size(),
                read_only,
                bitmap: None,
                route: RwLock::new(Route {
                    held: Backing::Chain { chain, file, path: path.to_owned(), writable: !read_only, _lock: lock },
                    job: None,
                    left_behind: None,
                }),
            });
        }
        Ok(Self {
            length,
            read_only,
            bitmap: None,
            route: RwLock::new(Route {
                held: Backing::File {
                    file,
                    path: path.to_owned(),
                    _lock: lock,
                },
                job: None,
                left_behind: None,
            }),
        })
    }

    /// Jobs on this disk keep their write-intent bitmap at `path` (and a job with
    /// `resume` resumes from it). A file already there, left by a job that did not finish,
    /// is opened now and every write is marked in it until a job resumes from it; a file
    /// for another disk, a damaged one, or one whose newest generation is below
    /// `min_generation` (an old copy of it; 0 accepts any) is refused.
    pub fn keep_bitmap(mut self, path: PathBuf, min_generation: u64) -> Result<Self, DiskError> {
        let route = self.route.get_mut().unwrap_or_else(PoisonError::into_inner);
        route.left_behind = open_left_behind(&path, &route.held, self.length, min_generation)?;
        self.bitmap = Some(path);
        Ok(self)
    }

    /// The bitmap file jobs keep, if any.
    pub fn bitmap_path(&self) -> Option<&Path> {
        self.bitmap.as_deref()
    }

    /// The bitmap file open now: the running job's, or the one an unfinished job left (its
    /// marks, newest generation and counters); `None` when there is no file (no bitmap
    /// kept, or the last job completed). A caller that remembers its generation can refuse
    /// a stale copy of the file later ([`start_mirror`](Self::start_mirror)'s
    /// `min_generation`).
    pub fn bitmap_intent(&self) -> Option<Arc<WriteIntent>> {
        let route = self.read_route();
        match &route.job {
            Some(job) => job.mirror.write_intent().cloned(),
            None => route.left_behind.clone(),
        }
    }

    /// Whether writes are being marked in a bitmap file left by an unfinished job (one to
    /// resume from).
    pub fn has_left_behind_bitmap(&self) -> bool {
        self.read_route().left_behind.is_some()
    }

    /// The disk length in bytes.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Whether clients may only read.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The format of the image that holds the disk now (a new job's source format).
    pub fn format(&self) -> ImageFormat {
        self.read_route().held.format()
    }

    fn read_route(&self) -> RwLockReadGuard<'_, Route> {
        self.route.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_route(&self) -> RwLockWriteGuard<'_, Route> {
        self.route.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file (or export URI) that holds the disk now: the target after a switch-over.
    pub fn current(&self) -> String {
        let route = self.read_route();
        match &route.job {
            Some(RunningJob {
                mirror,
                target: MirrorTarget::Path(path),
            }) if mirror.pivoted() => path.display().to_string(),
            Some(RunningJob {
                mirror,
                target: MirrorTarget::Nbd(uri),
            }) if mirror.pivoted() => uri.to_string(),
            _ => route.held.describe(),
        }
    }

    /// Reads `length` bytes at `offset`.
    pub fn read(&self, offset: u64, length: u32) -> Result<Vec<u8>, NbdError> {
        let route = self.read_route();
        match &route.job {
            None => {
                let mut buf = vec![0u8; length as usize];
                route
                    .held
                    .read(offset, &mut buf)
                    .map_err(|e| nbd_error(&e))?;
                Ok(buf)
            }
            Some(RunningJob { mirror, .. }) => mirror
                .guest_read(offset, u64::from(length))
                .map_err(|e| guest_error(&e)),
        }
    }

    /// Writes `data` at `offset`; with `fua`, durably before returning.
    pub fn write(&self, offset: u64, data: Vec<u8>, fua: bool) -> Result<(), NbdError> {
        self.change(offset, Change::Data(data), fua)
    }

    /// Makes a range read as zeroes; `unmap` lets it be deallocated (a hole).
    pub fn write_zeroes(
        &self,
        offset: u64,
        length: u64,
        unmap: bool,
        fua: bool,
    ) -> Result<(), NbdError> {
        self.change(offset, Change::Zeroes { length, unmap }, fua)
    }

    /// Applies a client's change where it belongs now (see the module doc); with `fua`, a
    /// flush of where the data lives follows before the reply.
    fn change(&self, offset: u64, change: Change, fua: bool) -> Result<(), NbdError> {
        let route = self.read_route();
        match &route.job {
            None => {
                let length = match &change {
                    Change::Data(data) => data.len() as u64,
                    Change::Zeroes { length, .. } => *length,
                };
                let _marked = mark_left_behind(&route, offset, length)?;
                let held = &route.held;
                match change {
                    Change::Data(data) => held.write(offset, &data),
                    Change::Zeroes { length, unmap } => held.zero(offset, length, unmap),
                }
                .and_then(|()| if fua { held.flush() } else { Ok(()) })
                .map_err(|e| nbd_error(&e))
            }
            Some(RunningJob { mirror, .. }) => match change {
                Change::Data(data) => mirror.guest_write(offset, data),
                Change::Zeroes { length, unmap } => {
                    mirror.guest_write_zeroes(offset, length, unmap)
                }
            }
            .and_then(|()| if fua { mirror.guest_flush() } else { Ok(()) })
            .map_err(|e| guest_error(&e)),
        }
    }

    /// `write_zeroes` only if it is fast (the filesystem zeroes or deallocates the range
    /// without writing it): `ENOTSUP` otherwise, and always while a job runs (the job would
    /// copy the range to the target too), as NBD's FAST_ZERO flag asks.
    pub fn fast_zeroes(
        &self,
        offset: u64,
        length: u64,
        unmap: bool,
        fua: bool,
    ) -> Result<(), NbdError> {
        let route = self.read_route();
        if route.job.is_some() {
            return Err(NbdError::NotSupported);
        }
        let _marked = mark_left_behind(&route, offset, length)?;
        match route.held.zero_fast(offset, length, unmap) {
            Ok(result) => result.map_err(|e| nbd_error(&e))?,
            Err(NotFast) => return Err(NbdError::NotSupported),
        }
        if fua {
            route.held.flush().map_err(|e| nbd_error(&e))?;
        }
        Ok(())
    }

    /// Makes every acknowledged write durable where the disk's data now lives.
    pub fn flush(&self) -> Result<(), NbdError> {
        let route = self.read_route();
        match &route.job {
            None => route.held.flush().map_err(|e| nbd_error(&e)),
            Some(RunningJob { mirror, .. }) => mirror.guest_flush().map_err(|e| guest_error(&e)),
        }
    }

    /// The allocation of `[offset, offset + length)` as NBD `base:allocation` extents.
    /// While a job runs every byte is reported as data: always true, and the job's files
    /// change under it.
    pub fn block_status(&self, offset: u64, length: u32) -> Result<Vec<Extent>, NbdError> {
        let route = self.read_route();
        match &route.job {
            None => {
                let end = offset + u64::from(length);
                let holes = route
                    .held
                    .holes_within(offset..end)
                    .map_err(|e| nbd_error(&e))?;
                Ok(extents_from_holes(offset..end, &holes))
            }
            Some(_) => Ok(vec![Extent { length, flags: 0 }]),
        }
    }

    /// Starts a mirror of the disk onto `target`. Waits for requests in flight to finish;
    /// from then on every request goes through the job. With a bitmap file (see
    /// [`keep_bitmap`](Self::keep_bitmap)) the job keeps it, and with `resume` copies only
    /// what it marks, refusing a file whose newest generation is below `min_generation`
    /// (0 accepts any).
    pub fn start_mirror(
        &self,
        target: MirrorTarget,
        mut setup: MirrorSetup,
        resume: bool,
        min_generation: u64,
    ) -> Result<Arc<FileMirror>, StartMirrorError> {
        let mut route = self.write_route();
        if route.job.is_some() {
            return Err(StartMirrorError::Busy);
        }
        if (resume || min_generation > 0) && self.bitmap.is_none() {
            return Err(StartMirrorError::NoBitmap);
        }
        // The served file already holds the source's lock on its own descriptor.
        setup.lock_source = false;
        setup.guest_writes = !self.read_only;
        let Some(source) = route.held.path().cloned() else {
            return Err(StartMirrorError::RemoteSource(route.held.describe()));
        };
        // The job opens the image itself: it must find this opening's metadata on disk.
        setup.format = Some(route.held.format());
        route.held.flush().map_err(|source| StartError::Os { what: "flushing the served image", source })?;
        if let Some(path) = &self.bitmap {
            // The file holds every mark made so far (each was durable before its write),
            // and no write is in flight: the job opens it afresh and takes over.
            let granularity = route.left_behind.take().filter(|_| resume).map(|intent| intent.granularity());
            setup.bitmap =
                Some(BitmapSetup { granularity, min_generation, ..BitmapSetup::new(path.clone(), resume) });
        }
        let mirror = match FileMirror::start_to(&source, target.clone(), setup) {
            Ok(mirror) => Arc::new(mirror),
            Err(e) => {
                if let Err(reopen) = self.reopen_left_behind(&mut route) {
                    eprintln!("blockmirror serve: {reopen}: writes are no longer marked in it");
                }
                return Err(e.into());
            }
        };
        route.job = Some(RunningJob {
            mirror: Arc::clone(&mirror),
            target,
        });
        Ok(mirror)
    }

    /// Called once the job has ended: the disk stays on the target after a switch-over,
    /// else on the file the job started from. Returns the mirror for the caller to close.
    pub fn end_mirror(&self) -> io::Result<Option<Arc<FileMirror>>> {
        let mut route = self.write_route();
        let Some(job) = route.job.take() else {
            return Ok(None);
        };
        if job.mirror.pivoted() {
            let next = match &job.target {
                // A duplicate of the mirror's own target descriptor: the same open file
                // description, so the target's image lock carries over to the served disk.
                // A qcow2 target is served through the mirror's own opening of it.
                MirrorTarget::Path(path) => match job.mirror.image_target() {
                    Some(target) => Ok(Backing::Image { target, path: path.clone() }),
                    None => job.mirror.target_handle().map(|file| Backing::File {
                        file,
                        path: path.clone(),
                        _lock: None,
                    }),
                },
                MirrorTarget::Nbd(_) => job
                    .mirror
                    .nbd_target()
                    .map(Backing::Nbd)
                    .ok_or_else(|| io::Error::other("the mirror lost its NBD target")),
            };
            match next {
                Ok(backing) => route.held = backing,
                Err(e) => {
                    route.job = Some(job);
                    return Err(e);
                }
            }
        } else if route.held.format() == ImageFormat::Qcow2 {
            // The job's own opening of the image writes its metadata out first.
            job.mirror.guest_flush().map_err(io::Error::other)?;
            route.held.reopen()?;
        }
        // A job that stopped short of the switch-over leaves its bitmap file: writes from
        // now on are marked in it (after a switch-over there is none).
        self.reopen_left_behind(&mut route).map_err(io::Error::other)?;
        Ok(Some(job.mirror))
    }

    /// Opens the bitmap file left behind, if there is one, to mark writes in it.
    fn reopen_left_behind(&self, route: &mut Route) -> Result<(), DiskError> {
        route.left_behind = None;
        if let Some(path) = &self.bitmap {
            // Files found from now on are this process's own: any generation is theirs.
            route.left_behind = open_left_behind(path, &route.held, self.length, 0)?;
        }
        Ok(())
    }
}

/// [`persist::open_left_behind`] for the file that holds the disk (a remote or image disk,
/// there only after a switch-over, has none to mark).
fn open_left_behind(
    path: &Path,
    held: &Backing,
    length: u64,
    min_generation: u64,
) -> Result<Option<Arc<WriteIntent>>, DiskError> {
    let Some(file) = held.local_file() else { return Ok(None) };
    persist::open_left_behind(path, file, length, min_generation).map_err(|source| DiskError::Bitmap { path: path.to_owned(), source })
}

/// Marks a write's chunks in the left-behind bitmap file, durably, before the write; the
/// ticket is kept until the write is done.
fn mark_left_behind(route: &Route, offset: u64, length: u64) -> Result<Option<IntentTicket>, NbdError> {
    match &route.left_behind {
        Some(intent) if length > 0 => intent.mark(offset, length).map(Some).map_err(|e| {
            eprintln!("blockmirror serve: a write was refused: marking it in the bitmap file failed: {e}");
            NbdError::Io
        }),
        _ => Ok(None),
    }
}

/// The file's length (a block device's too: its metadata says 0, seeking to the end does not).
fn length_of(file: &File) -> io::Result<u64> {
    use std::io::Seek;
    let mut handle = file;
    handle.seek(io::SeekFrom::End(0))
}

/// `range` as consecutive extents: data (flags 0) and holes (which read as zeroes).
fn extents_from_holes(range: std::ops::Range<u64>, holes: &[std::ops::Range<u64>]) -> Vec<Extent> {
    let mut extents = Vec::new();
    let mut push = |length: u64, flags: u32| {
        if length > 0 {
            // Every extent lies within one request, whose length fits in 32 bits.
            extents.push(Extent {
                length: length as u32,
                flags,
            });
        }
    };
    let mut pos = range.start;
    for hole in holes {
        push(hole.start - pos, 0);
        push(hole.end - hole.start, Extent::HOLE | Extent::ZERO);
        pos = hole.end;
    }
    push(range.end - pos, 0);
    extents
}

/// The NBD error for an OS error: ENOSPC, EPERM/EROFS and EINVAL keep their meaning for the
/// client; anything else is EIO.
fn nbd_error(e: &io::Error) -> NbdError {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => NbdError::NoSpace,
        Some(libc::EPERM) | Some(libc::EROFS) | Some(libc::EACCES) => NbdError::Perm,
        Some(libc::EINVAL) => NbdError::Invalid,
        _ => NbdError::Io,
    }
}

fn guest_error(e: &GuestIoError) -> NbdError {
    match e {
        GuestIoError::OutOfRange { .. } | GuestIoError::TooLong { .. } => NbdError::Invalid,
        GuestIoError::Closed => NbdError::Shutdown,
        GuestIoError::Os { source } => nbd_error(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_cover_the_range_with_holes_marked() {
        let e = extents_from_holes(100..1000, &[(200..300), (900..1000)]);
        let lengths: Vec<_> = e.iter().map(|x| (x.length, x.flags)).collect();
        let hole = Extent::HOLE | Extent::ZERO;
        assert_eq!(lengths, vec![(100, 0), (100, hole), (600, 0), (100, hole)]);
        assert_eq!(extents_from_holes(0..10, &[]).len(), 1);
    }
}
