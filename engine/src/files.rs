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

use rustix::fs::OFlags;
use rustix::io::Errno;

use crate::buffers::ALIGN_BYTES;
use crate::identity;
use crate::locks::{mirror_perms, ImageLock, LockError};

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
    /// The source length in bytes (the mirror's disk length).
    pub length: u64,
    /// Whether the target was created here (so it reads as zero everywhere).
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

/// Opens (or creates, sparse, with the source's length) the target.
fn open_target(path: &Path, length: u64, spec: &OpenOptionsSpec) -> Result<(Side, bool), OpenError> {
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
    if created {
        // A fresh sparse file: every byte reads as zero and nothing is allocated.
        if let Err(e) = buffered.set_len(length) {
            let _ = std::fs::remove_file(path);
            return Err(OpenError::os(path, e));
        }
    } else {
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

/// Opens both sides. Nothing is written before every check has passed, except the creation
/// of a new sparse target (which is removed again if a later step fails).
///
/// The same-storage check runs on the open descriptors, so a path swapped between a check
/// and an open cannot slip through; an existing target is opened read-only for it first, so
/// that the check (not the `reuse` advice) is what a caller hears about a link of the source.
pub fn open_files(source: &Path, target: &Path, spec: &OpenOptionsSpec) -> Result<OpenedFiles, OpenError> {
    let (source_side, length) = open_source(source, spec)?;
    if file_type(target, "target")?.is_some() {
        let probe = open_handle(target, false, false, false)?;
        refuse_same_storage((source, &source_side.copy), (target, &probe))?;
    }
    let (mut target_side, target_created) = open_target(target, length, spec)?;
    if spec.lock_target {
        let (held, unshared) = mirror_perms(true);
        match ImageLock::acquire(&target_side.buffered, target, held, unshared) {
            Ok(lock) => target_side.lock = Some(lock),
            Err(e) => {
                if target_created {
                    let _ = std::fs::remove_file(target);
                }
                return Err(e.into());
            }
        }
    }
    // The handles the mirror will use, checked again: the path may have changed meanwhile.
    for handle in [&target_side.buffered, &target_side.copy] {
        if let Err(e) = refuse_same_storage((source, &source_side.copy), (target, handle)) {
            if target_created {
                let _ = std::fs::remove_file(target);
            }
            return Err(e);
        }
    }
    Ok(OpenedFiles { source: source_side, target: target_side, length, target_created })
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
        OpenOptionsSpec { direct: false, reuse, guest_writes: true, lock_source: true, lock_target: true }
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
