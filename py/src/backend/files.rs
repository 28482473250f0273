//! Opening the source and the target: sizes, block devices, sparse creation, O_DIRECT.
//!
//! Each side gets two handles: `copy` (used by the mirror's copy path; O_DIRECT when asked,
//! the source's one read-only) and `buffered` (no O_DIRECT: guest I/O, and copy I/O whose
//! offset or length is not 4096-aligned, such as the tail of an odd-sized image).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::buffers::ALIGN_BYTES;

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
        opts.custom_flags(libc::O_DIRECT);
    }
    opts.open(path).map_err(|e| {
        if direct && e.raw_os_error() == Some(libc::EINVAL) {
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

/// Opens the source and checks it; returns its two handles and its length.
fn open_source(path: &Path, spec: &OpenOptionsSpec) -> Result<(Side, u64), OpenError> {
    let ft = file_type(path, "source")?
        .ok_or_else(|| OpenError::os(path, io::Error::from_raw_os_error(libc::ENOENT)))?;
    // The mirror's copy path never writes the source: its handle is read-only.
    let mut copy = open_handle(path, false, false, spec.direct)?;
    let length = size_of(&mut copy, path)?;
    let buffered = open_handle(path, spec.guest_writes, false, false)?;
    Ok((Side { copy, buffered, direct: spec.direct, is_block_device: ft.is_block_device() }, length))
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
    Ok((Side { copy, buffered, direct: spec.direct, is_block_device }, created))
}

/// Opens both sides. Nothing is written before every check has passed, except the creation
/// of a new sparse target (which is removed again if a later step fails).
pub fn open_files(source: &Path, target: &Path, spec: &OpenOptionsSpec) -> Result<OpenedFiles, OpenError> {
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(source), std::fs::canonicalize(target)) {
        if a == b {
            return Err(OpenError::Invalid(format!("source and target are the same file {}", a.display())));
        }
    }
    let (source_side, length) = open_source(source, spec)?;
    let (target_side, target_created) = open_target(target, length, spec)?;
    Ok(OpenedFiles { source: source_side, target: target_side, length, target_created })
}
