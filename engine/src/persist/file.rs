//! [`BitmapFile`]: a bitmap file of two alternating slots, each written whole and synced
//! before the next write goes to the other one.
//!
//! A write goes to the slot that does not hold the newest generation, then `fdatasync`s. A
//! crash in mid-write can tear only that slot; the other still holds the previous
//! generation whole, and loading takes the newest slot whose checksums hold. So a write
//! that was not synced is as if it never happened, and one that was is never lost: the
//! order callers rely on (a mark is durable before the guest write it protects).
//!
//! Slot `k` starts at `k * slot_size`, where `slot_size` is the slot's bytes rounded up to
//! 4096 (both slots have the same size for one identity).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use blockmirror_core::bitmap::HBitmap;

use super::format::{self, BitmapIdentity, DecodedSlot};
use super::PersistError;
use crate::io_ops;

/// Slots start on this boundary.
const SLOT_ALIGN: u64 = 4096;

/// An open bitmap file.
#[derive(Debug)]
pub struct BitmapFile {
    path: PathBuf,
    file: File,
    identity: BitmapIdentity,
    slot_size: u64,
    /// The generation of the newest slot on disk (the next write is one more).
    generation: u64,
}

/// Bytes of a slot for `identity`, rounded up to [`SLOT_ALIGN`].
fn slot_size(identity: &BitmapIdentity) -> Result<u64, PersistError> {
    let bitmap = identity.new_bitmap()?;
    let body = bitmap.serialization_size(0, bitmap.size()).expect("whole bitmap");
    Ok((identity.header_len() as u64 + body).div_ceil(SLOT_ALIGN) * SLOT_ALIGN)
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PersistError + 'a {
    move |source| PersistError::Io { what, path: path.to_owned(), source }
}

/// Reads the slot at `start` of `file` (of `file_len` bytes): its header, then, once its
/// identity is accepted (`expected`), its body. A slot of another identity is refused
/// before its body is read, so a foreign file's sizes never decide an allocation.
fn read_slot(
    file: &File,
    file_len: u64,
    start: u64,
    expected: &BitmapIdentity,
    path: &Path,
) -> Result<DecodedSlot, PersistError> {
    let read = |offset: u64, len: u64| -> Result<Vec<u8>, PersistError> {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset).map_err(io_error("reading the bitmap file", path))?;
        Ok(buf)
    };
    let available = file_len.saturating_sub(start);
    let head = read(start, available.min(format::MAX_HEADER_BYTES as u64))?;
    let header = format::decode_header(&head)?;
    check_identity(&header.identity, expected)?;
    let body_start = start + header.header_len as u64;
    let body = read(body_start, file_len.saturating_sub(body_start).min(header.body_len))?;
    let bitmap = format::decode_body(&header, &body)?;
    Ok(DecodedSlot { generation: header.generation, identity: header.identity, bitmap })
}

/// Whether a slot's refusal is about what the bitmap describes (not about damage): such a
/// refusal stands even when the other slot is readable.
fn is_identity_refusal(e: &PersistError) -> bool {
    matches!(
        e,
        PersistError::OtherLength { .. }
            | PersistError::OtherGranularity { .. }
            | PersistError::OtherSource { .. }
            | PersistError::OtherTarget { .. }
    )
}

/// The largest body [`inspect`] reads (a bitmap of 2^31 chunks): a header claiming more
/// is refused before anything is allocated.
const MAX_INSPECT_BODY: u64 = 256 << 20;

/// Opens an existing bitmap file; a missing one is [`PersistError::Missing`].
fn open_existing(options: &OpenOptions, path: &Path) -> Result<File, PersistError> {
    options.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            PersistError::Missing { path: path.to_owned() }
        } else {
            PersistError::Io { what: "opening the bitmap file", path: path.to_owned(), source: e }
        }
    })
}

/// What a bitmap file holds (its newest valid slot), read without comparing it with any
/// mirror: for tools and tests. Refuses damage as [`BitmapFile::open`] does.
pub fn inspect(path: &Path) -> Result<DecodedSlot, PersistError> {
    let file = open_existing(OpenOptions::new().read(true), path)?;
    let file_len = file.metadata().map_err(io_error("reading the bitmap file's size", path))?.len();
    let mut head = vec![0u8; file_len.min(format::MAX_HEADER_BYTES as u64) as usize];
    file.read_exact_at(&mut head, 0).map_err(io_error("reading the bitmap file", path))?;
    let identity = match format::decode_header(&head) {
        Ok(header) => header.identity,
        // Slot 0 is damaged: slot 1 lies beyond the middle of the file (both slots are
        // the same size).
        Err(e) => {
            let half = file_len / 2;
            let mut head = vec![0u8; (file_len - half).min(format::MAX_HEADER_BYTES as u64) as usize];
            file.read_exact_at(&mut head, half).map_err(io_error("reading the bitmap file", path))?;
            format::decode_header(&head).map_err(|second| telling(e, second))?.identity
        }
    };
    if identity.length / identity.granularity.max(1) / 8 > MAX_INSPECT_BODY {
        return Err(PersistError::Malformed("a bitmap too large to inspect"));
    }
    // Read-only: `open` would ask for write access the caller may not have.
    let slot_size = slot_size(&identity)?;
    let newest = [0, slot_size]
        .into_iter()
        .map(|start| read_slot(&file, file_len, start, &identity, path))
        .reduce(|a, b| match (a, b) {
            (Ok(a), Ok(b)) => Ok(if b.generation > a.generation { b } else { a }),
            (Ok(a), Err(_)) | (Err(_), Ok(a)) => Ok(a),
            (Err(a), Err(b)) => Err(telling(a, b)),
        })
        .expect("two slots");
    let DecodedSlot { generation, bitmap, .. } = newest?;
    Ok(DecodedSlot { generation, identity, bitmap })
}

impl BitmapFile {
    /// Creates a new bitmap file holding `bitmap` (generation 1 in slot 1; slot 0 empty),
    /// synced, and the directory entry synced too so the file survives a crash. Refuses an
    /// existing file ([`PersistError::Exists`]).
    pub fn create(path: &Path, identity: BitmapIdentity, bitmap: &HBitmap) -> Result<Self, PersistError> {
        let slot_size = slot_size(&identity)?;
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                PersistError::Exists { path: path.to_owned() }
            } else {
                PersistError::Io { what: "creating the bitmap file", path: path.to_owned(), source: e }
            }
        })?;
        let mut this = Self { path: path.to_owned(), file, identity, slot_size, generation: 0 };
        let created = (|| {
            this.file.set_len(2 * slot_size).map_err(io_error("sizing the bitmap file", path))?;
            this.write(bitmap)?;
            sync_parent(path)
        })();
        if let Err(e) = created {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(this)
    }

    /// Opens an existing bitmap file and returns it with the bitmap of its newest valid
    /// slot. Refuses (each with its own error): a file too short for a slot, bad magic or
    /// version, checksum failures (when no slot is valid: see [`telling`]), a bitmap
    /// of another identity (size, granularity, source or target, checked in that order),
    /// and a generation below `min_generation`.
    pub fn open(path: &Path, expected: &BitmapIdentity, min_generation: u64) -> Result<(Self, HBitmap), PersistError> {
        let file = open_existing(OpenOptions::new().read(true).write(true), path)?;
        let file_len = file.metadata().map_err(io_error("reading the bitmap file's size", path))?.len();
        let slot_size = slot_size(expected)?;
        let first = read_slot(&file, file_len, 0, expected, path);
        let second = read_slot(&file, file_len, slot_size, expected, path);
        let (first, second) = match (first, second) {
            (Err(e), _) if is_identity_refusal(&e) => return Err(e),
            (_, Err(e)) if is_identity_refusal(&e) => return Err(e),
            pair => pair,
        };
        let newest = match (first, second) {
            (Ok(a), Ok(b)) => {
                if b.generation > a.generation {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) => b,
            (Err(a), Err(b)) => return Err(telling(a, b)),
        };
        if newest.generation < min_generation {
            return Err(PersistError::StaleGeneration { found: newest.generation, expected_at_least: min_generation });
        }
        let this =
            Self { path: path.to_owned(), file, identity: expected.clone(), slot_size, generation: newest.generation };
        Ok((this, newest.bitmap))
    }

    /// Writes `bitmap` as the next generation into the older slot and syncs it. Returns
    /// the generation written. On error the file still holds the previous generation.
    pub fn write(&mut self, bitmap: &HBitmap) -> Result<u64, PersistError> {
        let generation = self.generation + 1;
        let bytes = format::encode(&self.identity, generation, bitmap);
        let offset = (generation % 2) * self.slot_size;
        let what = "writing the bitmap file";
        self.file.write_all_at(&bytes, offset).map_err(io_error(what, &self.path))?;
        io_ops::datasync(&self.file).map_err(io_error("syncing the bitmap file", &self.path))?;
        self.generation = generation;
        Ok(generation)
    }

    /// The generation of the newest slot on disk.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file (the mirror completed: nothing is left to resume) and syncs the
    /// directory.
    pub fn remove(self) -> Result<(), PersistError> {
        std::fs::remove_file(&self.path).map_err(io_error("removing the bitmap file", &self.path))?;
        sync_parent(&self.path)
    }
}

/// Of two slots' refusals, the one that says what happened: a slot never written (no
/// magic: a new file's first write goes to slot 1) says less than a damaged one.
fn telling(first: PersistError, second: PersistError) -> PersistError {
    match (&first, &second) {
        (PersistError::BadMagic, e) if !matches!(e, PersistError::BadMagic) => second,
        _ => first,
    }
}

/// Refuses a bitmap of another identity, naming what differs.
fn check_identity(found: &BitmapIdentity, expected: &BitmapIdentity) -> Result<(), PersistError> {
    if found.length != expected.length {
        return Err(PersistError::OtherLength { found: found.length, expected: expected.length });
    }
    if found.granularity != expected.granularity {
        return Err(PersistError::OtherGranularity { found: found.granularity, expected: expected.granularity });
    }
    if found.source != expected.source {
        return Err(PersistError::OtherSource {
            found: found.source.to_string(),
            expected: expected.source.to_string(),
        });
    }
    if found.target != expected.target {
        return Err(PersistError::OtherTarget {
            found: found.target.to_string(),
            expected: expected.target.to_string(),
        });
    }
    Ok(())
}

/// Syncs the directory holding `path`, so a created or removed entry survives a crash.
fn sync_parent(path: &Path) -> Result<(), PersistError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("syncing the bitmap file's directory", path))
}
