//! Opening or creating the bitmap file of a starting mirror, and seeding the job from it.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use blockmirror_core::job::{MirrorConfig, MirrorJob, RangeState, SyncMode};

use super::intent::dirty_runs;
use super::{inspect, BitmapFile, BitmapIdentity, PersistError, SideIdentity, WriteIntent};
use crate::target::{MirrorTarget, Sides};

/// How often the cleaning thread clears chunks when the caller names nothing: also the
/// activity window (a chunk written within it stays marked).
pub const DEFAULT_CLEAN_INTERVAL: Duration = Duration::from_secs(1);

/// The least bytes per bit of the file when the caller names none: a coarser bitmap than
/// the job's keeps more of a guest's working set marked (a write into a marked chunk costs
/// no I/O), at the price of copying whole bitmap chunks on resume.
pub const DEFAULT_BITMAP_GRANULARITY: u64 = 1 << 20;

/// A mirror's persistent bitmap: where it lives and whether to resume from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapSetup {
    /// The bitmap file.
    pub path: PathBuf,
    /// Resume from an existing file: copy only the chunks it marks (the target must be the
    /// one it was made for, reused). Without it an existing file is refused.
    pub resume: bool,
    /// Refuse a file whose newest generation is below this (0 accepts any): for callers
    /// that remember the generation they last saw.
    pub min_generation: u64,
    /// Time between cleaning rounds (and the activity window's length).
    pub clean_interval: Duration,
    /// Bytes per bit of the file: a power of two, at least the job's granularity. `None`:
    /// the job's granularity or [`DEFAULT_BITMAP_GRANULARITY`], whichever is larger.
    pub granularity: Option<u64>,
}

impl BitmapSetup {
    /// A bitmap at `path`, resumed from when `resume`, with the default clean interval.
    pub fn new(path: impl Into<PathBuf>, resume: bool) -> Self {
        Self { path: path.into(), resume, min_generation: 0, clean_interval: DEFAULT_CLEAN_INTERVAL, granularity: None }
    }
}

/// The default bitmap path of a target: `TARGET.bmbitmap` beside a local target; an NBD
/// target has none ([`PersistError::NeedsPath`]).
pub fn default_bitmap_path(target: &MirrorTarget) -> Result<PathBuf, PersistError> {
    match target {
        MirrorTarget::Path(path) => {
            let mut name = path.clone().into_os_string();
            name.push(".bmbitmap");
            Ok(name.into())
        }
        MirrorTarget::Nbd(_) => Err(PersistError::NeedsPath),
    }
}

/// What a bitmap header records of a local image: its inode, or a block device's number.
pub(crate) fn file_identity(file: &File) -> std::io::Result<SideIdentity> {
    let meta = file.metadata()?;
    Ok(if meta.file_type().is_block_device() {
        SideIdentity::BlockDevice { rdev: meta.rdev() }
    } else {
        SideIdentity::Inode { dev: meta.dev(), ino: meta.ino() }
    })
}

/// What the bitmap of this mirror must be about.
fn identity(
    files: &Sides,
    target: &MirrorTarget,
    granularity: u64,
    path: &std::path::Path,
) -> Result<BitmapIdentity, PersistError> {
    let io = |source| PersistError::Io {
        what: "reading the images' identity for the bitmap",
        path: path.to_owned(),
        source,
    };
    let source = file_identity(&files.source.copy).map_err(io)?;
    let target = match (files.target.file(), target) {
        (Some(side), _) => file_identity(&side.copy).map_err(io)?,
        (None, MirrorTarget::Nbd(uri)) => SideIdentity::Nbd { uri: uri.to_string() },
        (None, MirrorTarget::Path(_)) => return Err(PersistError::Malformed("a local target without a file")),
    };
    Ok(BitmapIdentity { length: files.length, granularity, source, target })
}

/// Opens (resuming) or creates the bitmap file for a mirror about to start, and with
/// `resume` declares the chunks the file does not mark as needing no copy. Called after
/// the job is made and before it starts. A new file marks every chunk (nothing is copied
/// yet); cleaning rounds then clear what the job copies.
pub(crate) fn attach(
    setup: &BitmapSetup,
    files: &Sides,
    target: &MirrorTarget,
    reuse: bool,
    job: &mut MirrorJob,
    config: &MirrorConfig,
) -> Result<Arc<WriteIntent>, PersistError> {
    let granularity = setup.granularity.unwrap_or(DEFAULT_BITMAP_GRANULARITY.max(config.granularity));
    // A bit must cover whole job chunks, so a clean bit never hides part of a dirty chunk.
    if !granularity.is_power_of_two() || granularity < config.granularity {
        return Err(PersistError::Granularity { requested: granularity, job: config.granularity });
    }
    let identity = identity(files, target, granularity, &setup.path)?;
    let (file, bitmap) = if setup.resume {
        if !reuse && matches!(target, MirrorTarget::Path(_)) {
            return Err(PersistError::ResumeNeedsReuse);
        }
        if config.sync == SyncMode::None {
            return Err(PersistError::ResumeWithSyncNone);
        }
        let (file, bitmap) = BitmapFile::open(&setup.path, &identity, setup.min_generation)?;
        let mut clean = identity.new_bitmap()?;
        if clean.size() > 0 {
            clean.set(0, clean.size()).expect("whole bitmap");
        }
        for run in dirty_runs(&bitmap) {
            clean.reset(run.start, run.end - run.start).expect("whole chunks");
        }
        for run in dirty_runs(&clean) {
            // Equal on both sides already: the job skips it as it skips a zero range.
            job.declare(run.start, run.end - run.start, RangeState::Zero)
                .map_err(|_| PersistError::Malformed("a bitmap range outside the disk"))?;
        }
        (file, bitmap)
    } else {
        let mut all = identity.new_bitmap()?;
        if all.size() > 0 {
            all.set(0, all.size()).expect("whole bitmap");
        }
        let file = BitmapFile::create(&setup.path, identity, &all)?;
        (file, all)
    };
    Ok(Arc::new(WriteIntent::new(file, bitmap, granularity)))
}

/// The bitmap file an unfinished mirror of `source` (a disk of `length` bytes) left at
/// `path`, opened to go on marking the disk's writes while no job runs: a served disk
/// between a job that stopped short of the switch-over and the job that resumes it, or
/// after a restart. `None` when there is no file. A file for another disk is refused, as
/// is a damaged one (its marks can no longer be trusted, so writes must not go on as if
/// they were recorded), as is one whose newest generation is below `min_generation` (an
/// old copy of the file).
///
/// Why: a write that reaches the source while no job runs changes a chunk the file may
/// hold clean; a resume that trusts the file would skip it. Marking it keeps the file's
/// invariant (every chunk that may differ is marked) with no job there.
pub(crate) fn open_left_behind(
    path: &Path,
    source: &File,
    length: u64,
    min_generation: u64,
) -> Result<Option<Arc<WriteIntent>>, PersistError> {
    let found = match inspect(path) {
        Ok(found) => found.identity,
        Err(PersistError::Missing { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if found.length != length {
        return Err(PersistError::OtherLength { found: found.length, expected: length });
    }
    let io = |source| PersistError::Io { what: "reading the disk's identity for the bitmap", path: path.to_owned(), source };
    let expected = file_identity(source).map_err(io)?;
    if found.source != expected {
        return Err(PersistError::OtherSource { found: found.source.to_string(), expected: expected.to_string() });
    }
    let granularity = found.granularity;
    let (file, bitmap) = BitmapFile::open(path, &found, min_generation)?;
    Ok(Some(Arc::new(WriteIntent::new(file, bitmap, granularity))))
}
