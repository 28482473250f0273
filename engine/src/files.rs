//! Opening the source and the target: sizes, block devices, sparse creation, O_DIRECT.
//!
//! Each side gets two handles: `copy` (used by the mirror's copy path; O_DIRECT when asked,
//! the source's one read-only) and `buffered` (no O_DIRECT: guest I/O, and copy I/O whose
//! offset or length is not 4096-aligned, such as the tail of an odd-sized image).
//!
//! Image locks (see `locks`) are taken on the `buffered` handle of each side that asks for
//! them: the source's right after it is opened (before the target is created), the
//! target's right after it is opened or created (a created one is removed again if its
//! lock is refused). They last as long as that open file description.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use blockmirror_core::job::SyncMode;
use rustix::fs::OFlags;
use rustix::io::Errno;

use crate::buffers::ALIGN_BYTES;
use crate::identity;
use crate::image::chain::{file_key, OpenBacking};
use crate::image::{create, plan, Chain, ImageError, ImageFormat, Layer, TargetBacking};
use crate::locks::{mirror_perms, ImageLock, LockError};
use crate::target::Below;

/// Why the files could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The caller's input is wrong (reported as `InvalidArgument`).
    #[error("{0}")]
    Invalid(String),
    /// The OS refused (reported as `IoError` with errno, operation "open").
    #[error("cannot open {path}: {source}")]
    Os {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another program uses the image in a way that conflicts with the mirror's lock.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// An image or its backing chain cannot be used (see [`ImageError`]).
    #[error(transparent)]
    Image(ImageError),
}

impl From<ImageError> for OpenError {
    /// A backing file another program writes is refused as any locked image is.
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Locked(e) => OpenError::Locked(e),
            other => OpenError::Image(other),
        }
    }
}

impl OpenError {
    fn os(path: &Path, source: io::Error) -> Self {
        OpenError::Os { path: path.to_owned(), source }
    }
}

/// One side of the mirror.
#[derive(Debug)]
pub struct Side {
    /// Handle for the copy path (O_DIRECT when `direct`).
    pub copy: File,
    /// Handle without O_DIRECT (guest I/O and unaligned copy I/O).
    pub buffered: File,
    /// Whether `copy` was opened with O_DIRECT.
    pub direct: bool,
    /// Whether this is a block device (no SEEK_DATA scan, no resize).
    pub is_block_device: bool,
    /// The image lock on `buffered`'s open file description, when one was asked for.
    pub lock: Option<ImageLock>,
}

impl Side {
    /// The handle for copy I/O of this range: the O_DIRECT one only when aligned.
    pub fn handle_for(&self, offset: u64, length: usize, buffer_addr: usize) -> &File {
        let align = ALIGN_BYTES as u64;
        let aligned = offset % align == 0 && length as u64 % align == 0 && buffer_addr % ALIGN_BYTES == 0;
        if self.direct && aligned {
            &self.copy
        } else {
            &self.buffered
        }
    }
}

/// What was opened.
#[derive(Debug)]
pub struct OpenedFiles {
    /// The source (copy handle read-only; buffered handle writable when guest writes are on).
    pub source: Side,
    /// The target.
    pub target: Side,
    /// The source's image when it is qcow2.
    pub source_image: Option<Arc<Chain>>,
    /// The target's image when it is qcow2, and what it reads from the live source.
    pub target_image: Option<(Chain, Option<Below>)>,
    /// The source length in bytes (the mirror's disk length: the virtual size of an image).
    pub length: u64,
    /// Whether the target was created here (so it reads as zero everywhere, or as its
    /// backing file where it has one).
    pub target_created: bool,
}

/// How to open the files.
#[derive(Debug, Clone)]
pub struct OpenOptionsSpec {
    /// Open the copy handles with O_DIRECT.
    pub direct: bool,
    /// Use an existing target (its size must match).
    pub reuse: bool,
    /// Open the source writable for guest writes.
    pub guest_writes: bool,
    /// Lock the source (see `locks`).
    pub lock_source: bool,
    /// Lock the target.
    pub lock_target: bool,
    /// The source's format; `None` probes it (block devices are always raw).
    pub format: Option<ImageFormat>,
    /// The target's format; `None` probes an existing target and gives a created one the
    /// source's format.
    pub target_format: Option<ImageFormat>,
    /// The sync mode: it decides the target's backing file (see `image::plan`).
    pub sync: SyncMode,
}

impl OpenOptionsSpec {
    /// The raw-file defaults for the image choices: formats probed, `sync=full`.
    pub fn raw(direct: bool, reuse: bool, guest_writes: bool, lock_source: bool, lock_target: bool) -> Self {
        OpenOptionsSpec { direct, reuse, guest_writes, lock_source, lock_target, format: None, target_format: None, sync: SyncMode::Full }
    }
}

fn size_of(file: &mut File, path: &Path) -> Result<u64, OpenError> {
    // Seeking to the end gives the size of regular files and block devices alike.
    let end = file.seek(SeekFrom::End(0)).map_err(|e| OpenError::os(path, e))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| OpenError::os(path, e))?;
    Ok(end)
}

fn open_handle(path: &Path, write: bool, create: bool, direct: bool) -> Result<File, OpenError> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(write);
    if create {
        opts.create_new(true);
    }
    if direct {
        // `custom_flags` takes an i32; O_DIRECT lies below bit 31 on every Linux architecture.
        opts.custom_flags(OFlags::DIRECT.bits() as i32);
    }
    opts.open(path).map_err(|e| {
        if direct && Errno::from_io_error(&e) == Some(Errno::INVAL) {
            OpenError::Invalid(format!("{} does not support direct I/O (O_DIRECT)", path.display()))
        } else {
            OpenError::os(path, e)
        }
    })
}

fn file_type(path: &Path, what: &str) -> Result<Option<std::fs::FileType>, OpenError> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let ft = meta.file_type();
            if ft.is_dir() {
                return Err(OpenError::Invalid(format!("{what} {} is a directory", path.display())));
            }
            if !ft.is_file() && !ft.is_block_device() {
                return Err(OpenError::Invalid(format!(
                    "{what} {} is neither a regular file nor a block device",
                    path.display()
                )));
            }
            Ok(Some(ft))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(OpenError::os(path, e)),
    }
}

/// Opens the source and checks it (and takes its lock when asked); returns its two handles
/// and its length. [`open_files`] calls it first; a mirror onto a remote target calls it
/// alone.
pub fn open_source(path: &Path, spec: &OpenOptionsSpec) -> Result<(Side, u64), OpenError> {
    let ft = file_type(path, "source")?
        .ok_or_else(|| OpenError::os(path, io::Error::from(Errno::NOENT)))?;
    // The mirror's copy path never writes the source: its handle is read-only.
    let mut copy = open_handle(path, false, false, spec.direct)?;
    let length = size_of(&mut copy, path)?;
    let buffered = open_handle(path, spec.guest_writes, false, false)?;
    let lock = if spec.lock_source {
        let (held, unshared) = mirror_perms(spec.guest_writes);
        Some(ImageLock::acquire(&buffered, path, held, unshared)?)
    } else {
        None
    };
    Ok((Side { copy, buffered, direct: spec.direct, is_block_device: ft.is_block_device(), lock }, length))
}

/// Opens (or creates, sparse, with the source's length) the target. With `raw` false the
/// target is an image: a created file stays empty (it is formatted later) and an existing
/// one's file size is not its disk size (its virtual size is checked when it is opened).
fn open_target(path: &Path, length: u64, raw: bool, spec: &OpenOptionsSpec) -> Result<(Side, bool), OpenError> {
    let existing = file_type(path, "target")?;
    let created = existing.is_none();
    let is_block_device = existing.is_some_and(|ft| ft.is_block_device());
    if !created && !spec.reuse {
        return Err(OpenError::Invalid(format!(
            "target {} exists; pass reuse=True (--reuse) to mirror into it",
            path.display()
        )));
    }
    let buffered = open_handle(path, true, created, false)?;
    let mut buffered = buffered;
    if created && raw {
        // A fresh sparse file: every byte reads as zero and nothing is allocated.
        if let Err(e) = buffered.set_len(length) {
            let _ = std::fs::remove_file(path);
            return Err(OpenError::os(path, e));
        }
    } else if !created && raw {
        let target_length = size_of(&mut buffered, path)?;
        let fits = if is_block_device { target_length >= length } else { target_length == length };
        if !fits {
            return Err(OpenError::Invalid(format!(
                "target {} is {target_length} bytes but the source is {length} bytes{}",
                path.display(),
                if is_block_device { " (a block device target must be at least as large)" } else { "" }
            )));
        }
    }
    let copy = match open_handle(path, true, false, spec.direct) {
        Ok(f) => f,
        Err(e) => {
            if created {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };
    Ok((Side { copy, buffered, direct: spec.direct, is_block_device, lock: None }, created))
}

/// Refuses two handles that reach the same storage (see `identity`): mirroring a disk onto
/// itself writes stale copy data over the guest's writes.
fn refuse_same_storage(source: (&Path, &File), target: (&Path, &File)) -> Result<(), OpenError> {
    let same = identity::same_storage(source.1, target.1).map_err(|e| OpenError::os(target.0, e))?;
    if same {
        return Err(OpenError::Invalid(format!(
            "source {} and target {} are the same file or device (a link, bind mount, second \
             device node or loop device of it); mirroring it onto itself would destroy it",
            source.0.display(),
            target.0.display()
        )));
    }
    Ok(())
}

/// The source's format: as asked, or probed; a block device is raw.
fn source_format(path: &Path, side: &Side, spec: &OpenOptionsSpec) -> Result<ImageFormat, OpenError> {
    if side.is_block_device {
        return match spec.format {
            Some(ImageFormat::Qcow2) => Err(ImageError::Unsupported(format!(
                "source {} is a block device: block devices are mirrored as raw",
                path.display()
            ))
            .into()),
            _ => Ok(ImageFormat::Raw),
        };
    }
    match spec.format {
        Some(format) => Ok(format),
        None => ImageFormat::probe(&side.buffered).map_err(|e| OpenError::os(path, e)),
    }
}

/// Opens the source's image and backing chain when its format is qcow2 (through a new
/// descriptor of its buffered handle, writable when guest writes are on); `None` for a
/// raw source.
pub fn open_source_image(path: &Path, side: &Side, spec: &OpenOptionsSpec) -> Result<Option<Chain>, OpenError> {
    match source_format(path, side, spec)? {
        ImageFormat::Raw => Ok(None),
        format => {
            let top = side.buffered.try_clone().map_err(|e| OpenError::os(path, e))?;
            let chain = Chain::open(path, top, format, spec.guest_writes, OpenBacking::FromHeader, spec.lock_source)?;
            Ok(Some(chain))
        }
    }
}

/// The source's chain as layers, top first (a raw source is one raw layer).
fn source_layers(path: &Path, side: &Side, image: Option<&Chain>) -> Result<Vec<Layer>, OpenError> {
    match image {
        Some(chain) => Ok(chain.layers().to_vec()),
        None => {
            let key = file_key(&side.buffered).map_err(|e| OpenError::os(path, e))?;
            Ok(vec![Layer { path: path.to_owned(), format: ImageFormat::Raw, key, header_backing: None }])
        }
    }
}

/// The target's format: as asked; else an existing target's probed format (a block
/// device's is raw); else, for a created target, the source's.
fn target_format(
    path: &Path,
    existing: Option<&File>,
    is_block_device: bool,
    source: ImageFormat,
    spec: &OpenOptionsSpec,
) -> Result<ImageFormat, OpenError> {
    if is_block_device {
        if spec.target_format == Some(ImageFormat::Qcow2) {
            return Err(ImageError::Unsupported(format!(
                "target {} is a block device: block devices are mirrored as raw",
                path.display()
            ))
            .into());
        }
        return Ok(ImageFormat::Raw);
    }
    match (spec.target_format, existing) {
        (Some(format), _) => Ok(format),
        (None, Some(file)) => ImageFormat::probe(file).map_err(|e| OpenError::os(path, e)),
        (None, None) => Ok(source),
    }
}

/// Opens both sides. Nothing is written before every check has passed, except the creation
/// of a new target (which is removed again if a later step fails).
///
/// The same-storage check runs on the open descriptors, so a path swapped between a check
/// and an open cannot slip through; an existing target is opened read-only for it first, so
/// that the check (not the `reuse` advice) is what a caller hears about a link of the source.
///
/// Images: the source's chain is opened first (a missing, unreadable, looping or corrupt
/// backing file refuses the mirror); the target is refused when it is a file of that
/// chain; the sync mode decides the target's backing file (see `image::plan`): a created
/// qcow2 target gets it in its header, an existing one must already name it.
pub fn open_files(source: &Path, target: &Path, spec: &OpenOptionsSpec) -> Result<OpenedFiles, OpenError> {
    let (source_side, file_length) = open_source(source, spec)?;
    let source_image = open_source_image(source, &source_side, spec)?;
    let length = source_image.as_ref().map_or(file_length, Chain::size);
    let source_fmt = if source_image.is_some() { ImageFormat::Qcow2 } else { ImageFormat::Raw };
    let layers = source_layers(source, &source_side, source_image.as_ref())?;
    let existing_type = file_type(target, "target")?;
    let probe = match existing_type {
        Some(_) => {
            let probe = open_handle(target, false, false, false)?;
            refuse_same_storage((source, &source_side.copy), (target, &probe))?;
            let key = file_key(&probe).map_err(|e| OpenError::os(target, e))?;
            plan::refuse_target_in_chain(target, key, &layers)?;
            Some(probe)
        }
        None => None,
    };
    let is_block_device = existing_type.is_some_and(|ft| ft.is_block_device());
    let target_fmt = target_format(target, probe.as_ref(), is_block_device, source_fmt, spec)?;
    drop(probe);
    let images = source_fmt == ImageFormat::Qcow2 || target_fmt == ImageFormat::Qcow2;
    let backing = TargetBacking::for_sync(spec.sync);
    let needed = backing.layer(&layers);
    if images && existing_type.is_none() {
        plan::refuse_raw_without_backing(target, target_fmt, needed, spec.sync)?;
    }
    let raw_target = target_fmt == ImageFormat::Raw;
    let (mut target_side, target_created) = open_target(target, length, raw_target, spec)?;
    let remove_created = |e: OpenError| {
        if target_created {
            let _ = std::fs::remove_file(target);
        }
        e
    };
    let target_image = if raw_target {
        None
    } else {
        open_target_image(target, &target_side, target_created, length, needed, spec).map_err(remove_created)?
    };
    if spec.lock_target {
        let (held, unshared) = mirror_perms(true);
        match ImageLock::acquire(&target_side.buffered, target, held, unshared) {
            Ok(lock) => target_side.lock = Some(lock),
            Err(e) => return Err(remove_created(e.into())),
        }
    }
    // The handles the mirror will use, checked again: the path may have changed meanwhile.
    for handle in [&target_side.buffered, &target_side.copy] {
        refuse_same_storage((source, &source_side.copy), (target, handle)).map_err(remove_created)?;
    }
    let source_image = source_image.map(Arc::new);
    let target_image = match target_image {
        Some((chain, true)) => {
            let below = match &source_image {
                Some(image) => Below::Image(Arc::clone(image)),
                None => match source_side.buffered.try_clone() {
                    Ok(file) => Below::Raw(Arc::new(file)),
                    Err(e) => return Err(remove_created(OpenError::os(source, e))),
                },
            };
            Some((chain, Some(below)))
        }
        Some((chain, false)) => Some((chain, None)),
        None => None,
    };
    Ok(OpenedFiles {
        source: source_side,
        source_image,
        target: target_side,
        target_image,
        length,
        target_created,
    })
}

/// Formats a created qcow2 target (or checks an existing one) and opens its chain as the
/// sync mode needs it: `needed` is the backing file the target must have. Says whether
/// the target reads what it lacks from the live source (`sync=none`).
#[allow(clippy::too_many_arguments)]
fn open_target_image(
    path: &Path,
    side: &Side,
    created: bool,
    length: u64,
    needed: Option<&Layer>,
    spec: &OpenOptionsSpec,
) -> Result<Option<(Chain, bool)>, OpenError> {
    let dup = |file: &File| file.try_clone().map_err(|e| OpenError::os(path, e));
    if created {
        let backing = match needed {
            Some(layer) => Some((plan::absolute(&layer.path)?, layer.format)),
            None => None,
        };
        create::format_qcow2(path, dup(&side.buffered)?, length, backing.as_ref().map(|(p, f)| (p.as_path(), *f)))?;
    }
    // With `none` the backing file is the live source: read through the mirror's own
    // opening of it (see `target::image`), never a second one.
    let below = spec.sync == SyncMode::None && needed.is_some();
    let open_backing = if below { OpenBacking::Without } else { OpenBacking::FromHeader };
    let chain = Chain::open(path, dup(&side.buffered)?, ImageFormat::Qcow2, true, open_backing, spec.lock_target)?;
    if !created && spec.sync != SyncMode::Full {
        plan::check_existing_backing(path, chain.top(), needed, spec.sync)?;
    }
    if chain.size() != length {
        return Err(ImageError::SizeMismatch { target: path.to_owned(), target_size: chain.size(), source_size: length }.into());
    }
    Ok(Some((chain, below)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("bm-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src.img");
        std::fs::write(&src, vec![7u8; 8192]).unwrap();
        (dir, src)
    }

    fn spec(reuse: bool) -> OpenOptionsSpec {
        OpenOptionsSpec::raw(false, reuse, true, true, true)
    }

    fn assert_same_file_refused(r: Result<OpenedFiles, OpenError>) {
        match r {
            Err(OpenError::Invalid(msg)) => assert!(msg.contains("same file"), "{msg}"),
            other => panic!("expected the same-file refusal, got {other:?}"),
        }
    }

    #[test]
    fn hard_link_of_the_source_is_refused_with_or_without_reuse() {
        let (dir, src) = setup("link");
        let link = dir.join("link.img");
        std::fs::hard_link(&src, &link).unwrap();
        assert_same_file_refused(open_files(&src, &link, &spec(true)));
        assert_same_file_refused(open_files(&src, &link, &spec(false)));
        assert_same_file_refused(open_files(&link, &src, &spec(true)));
        assert_eq!(std::fs::read(&src).unwrap(), vec![7u8; 8192]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn symlink_of_the_source_is_refused() {
        let (dir, src) = setup("symlink");
        let sym = dir.join("sym.img");
        std::os::unix::fs::symlink(&src, &sym).unwrap();
        assert_same_file_refused(open_files(&src, &sym, &spec(true)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_copy_of_the_source_is_accepted() {
        let (dir, src) = setup("copy");
        let copy = dir.join("copy.img");
        std::fs::copy(&src, &copy).unwrap();
        let files = open_files(&src, &copy, &spec(true)).unwrap();
        assert!(!files.target_created);
        assert_eq!(files.length, 8192);
        // The source's lock goes with its descriptors: a second mirror of it may start now.
        drop(files);
        let created = open_files(&src, &dir.join("new.img"), &spec(false)).unwrap();
        assert!(created.target_created);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_locked_source_or_target_is_refused_and_an_existing_target_kept() {
        let (dir, src) = setup("locked");
        let (held, unshared) = mirror_perms(true);
        let holder = File::options().read(true).write(true).open(&src).unwrap();
        let _lock = ImageLock::acquire(&holder, &src, held, unshared).unwrap();
        let target = dir.join("new.img");
        assert!(matches!(open_files(&src, &target, &spec(false)), Err(OpenError::Locked(_))));
        assert!(!target.exists(), "the target was created although the source was refused");
        // Without the source's lock the same call works (a server holding it itself).
        let unlocked = OpenOptionsSpec { lock_source: false, ..spec(false) };
        drop(open_files(&src, &target, &unlocked).unwrap());
        // Now lock the existing target elsewhere: refused, and the target stays.
        drop(_lock);
        drop(holder);
        let holder = File::options().read(true).write(true).open(&target).unwrap();
        let _lock = ImageLock::acquire(&holder, &target, held, unshared).unwrap();
        assert!(matches!(open_files(&src, &target, &spec(true)), Err(OpenError::Locked(_))));
        assert!(target.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
