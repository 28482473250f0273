//! [`Chain`]: an image opened through imago with its backing files.
//!
//! The chain is opened here layer by layer (imago is told not to open anything by
//! itself), so that every file of it is known: its resolved path, its format, and its
//! device and inode, for the loop check while opening and for the target checks of
//! [`plan`](super::plan). Only the top layer may be writable; backing files are opened
//! read-only, as QEMU opens them, and (when asked) locked as QEMU locks a backing file:
//! consistent reads held, writes and resizes not shared, so a program writing a backing
//! file refuses to start while the chain is open, and a backing file such a program
//! writes refuses the chain. The top layer's lock is its opener's business.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{FormatAccess, StorageOpenOptions};

use super::{ImageError, ImageFormat, MAX_CHAIN_LENGTH};
use crate::locks::{mirror_perms, ImageLock};

/// One file of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Its path: as given for the top layer; for a backing file, the header's name
    /// resolved against the directory of the image naming it (as QEMU resolves it).
    pub path: PathBuf,
    /// Its format.
    pub format: ImageFormat,
    /// Device and inode of the open file: which file it is, whatever the path.
    pub key: (u64, u64),
    /// The backing file name exactly as this layer's header gives it, if any.
    pub header_backing: Option<String>,
}

/// Whether the backing file named in the top layer's header is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenBacking {
    /// Open the chain the header names (and that chain's own backing files).
    FromHeader,
    /// Open the top layer alone: unallocated ranges read as zero (their data belongs to a
    /// backing file this mirror reads another way, or that is opened later).
    Without,
}

/// An image and its backing chain, readable (and writable in its top layer) as the disk
/// the guest sees. Safe to share between threads: imago locks its own metadata.
#[derive(Debug)]
pub struct Chain {
    access: FormatAccess<ImagoFile>,
    layers: Vec<Layer>,
    cluster_size: Option<u64>,
    /// The backing files' locks (released when their descriptors, held by imago, close).
    _locks: Vec<ImageLock>,
}

/// The top layer's cluster size, from the qcow2 header's `cluster_bits` field (big-endian
/// u32 at byte 20), which imago does not expose; `None` when it cannot be read or is out of
/// qcow2's range (512 B to 2 MiB).
fn header_cluster_size(file: &File) -> Option<u64> {
    let mut bits = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut bits, 20).ok()?;
    let bits = u32::from_be_bytes(bits);
    (9..=21).contains(&bits).then(|| 1u64 << bits)
}

/// Device and inode of an open file.
pub fn file_key(file: &File) -> io::Result<(u64, u64)> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

/// Where a backing file name points: absolute as given, else relative to the directory
/// of the image whose header names it.
pub fn resolve_backing(image: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_owned();
    }
    match image.parent() {
        Some(dir) => dir.join(name),
        None => name.to_owned(),
    }
}

impl Chain {
    /// Opens `file` (already open, at `path`) as an image of `format`, writable in its top
    /// layer when `writable`, with its backing chain as `backing` says; with
    /// `lock_backing`, each backing file is locked (see the module doc).
    pub fn open(
        path: &Path,
        file: File,
        format: ImageFormat,
        writable: bool,
        backing: OpenBacking,
        lock_backing: bool,
    ) -> Result<Self, ImageError> {
        let mut walk = Walk {
            layers: Vec::new(),
            locks: Vec::new(),
            lock_backing,
        };
        let cluster_size = if format == ImageFormat::Qcow2 {
            header_cluster_size(&file)
        } else {
            None
        };
        let access = open_layer(
            path,
            file,
            format,
            writable,
            backing == OpenBacking::FromHeader,
            &mut walk,
        )?;
        Ok(Chain {
            access,
            layers: walk.layers,
            _locks: walk.locks,
            cluster_size,
        })
    }

    /// The layers, top first (only the top one when opened [`OpenBacking::Without`]).
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The top layer.
    pub fn top(&self) -> &Layer {
        &self.layers[0]
    }

    /// The top layer's cluster size (qcow2 only).
    pub fn cluster_size(&self) -> Option<u64> {
        self.cluster_size
    }

    /// The virtual size in bytes (the disk's length).
    pub fn size(&self) -> u64 {
        self.access.size()
    }

    /// imago's access to the image (mappings).
    pub fn access(&self) -> &FormatAccess<ImagoFile> {
        &self.access
    }

    /// Reads the guest's view of `buf.len()` bytes at `offset` (through the chain).
    pub fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.access.read(buf, offset)
    }

    /// Writes `data` at `offset` into the top layer (allocating clusters there).
    pub fn write(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.access.write(data, offset)
    }

    /// Makes the range read as zeroes: zero clusters where whole clusters are covered,
    /// written zeroes at unaligned edges (imago's `write_zeroes`).
    pub fn write_zeroes(&self, offset: u64, length: u64) -> io::Result<()> {
        self.access.write_zeroes(offset, length)
    }

    /// Writes imago's cached metadata out and syncs the top layer's file.
    pub fn flush(&self) -> io::Result<()> {
        self.access.flush()?;
        self.access.sync()
    }
}

/// What opening a chain has gathered so far.
struct Walk {
    layers: Vec<Layer>,
    locks: Vec<ImageLock>,
    lock_backing: bool,
}

fn open_layer(
    path: &Path,
    file: File,
    format: ImageFormat,
    writable: bool,
    open_backing: bool,
    walk: &mut Walk,
) -> Result<FormatAccess<ImagoFile>, ImageError> {
    let layers = &mut walk.layers;
    let os = |source| ImageError::Os {
        path: path.to_owned(),
        source,
    };
    let key = file_key(&file).map_err(os)?;
    if format == ImageFormat::Qcow2 {
        let found = ImageFormat::probe(&file).map_err(os)?;
        if found != ImageFormat::Qcow2 {
            return Err(ImageError::FormatMismatch {
                path: path.to_owned(),
                expected: format,
                found,
            });
        }
    }
    let opts = StorageOpenOptions::new().write(writable).filename(path);
    let storage = ImagoFile::from_open_file(file, opts).map_err(os)?;
    layers.push(Layer {
        path: path.to_owned(),
        format,
        key,
        header_backing: None,
    });
    match format {
        ImageFormat::Raw => Ok(FormatAccess::new(
            Raw::open_image(storage, writable).map_err(os)?,
        )),
        ImageFormat::Qcow2 => {
            let corrupt = |source| ImageError::Corrupt {
                path: path.to_owned(),
                source,
            };
            let mut qcow2 = Qcow2::<ImagoFile>::open_image(storage, writable).map_err(corrupt)?;
            if qcow2.requires_external_data_file() {
                return Err(ImageError::Unsupported(format!(
                    "{} uses an external data file, which is not supported",
                    path.display()
                )));
            }
            qcow2.set_data_file(None);
            let header_backing = qcow2.implicit_backing_file().cloned();
            let header_format = qcow2.implicit_backing_format().cloned();
            let index = layers.len() - 1;
            layers[index].header_backing = header_backing.clone();
            let backing = match header_backing.filter(|_| open_backing) {
                Some(name) => Some(open_backing_file(
                    path,
                    &name,
                    header_format.as_deref(),
                    walk,
                )?),
                None => None,
            };
            qcow2.set_backing(backing);
            Ok(FormatAccess::new(qcow2))
        }
    }
}

/// Opens the backing file `name` of the image at `image` (read-only) with its own chain.
fn open_backing_file(
    image: &Path,
    name: &str,
    header_format: Option<&str>,
    walk: &mut Walk,
) -> Result<FormatAccess<ImagoFile>, ImageError> {
    let layers = &walk.layers;
    let backing = resolve_backing(image, name);
    if layers.len() >= MAX_CHAIN_LENGTH {
        return Err(ImageError::ChainTooLong(layers[0].path.clone()));
    }
    let file = File::open(&backing).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            ImageError::MissingBacking {
                image: image.to_owned(),
                backing: backing.clone(),
            }
        } else {
            ImageError::UnreadableBacking {
                image: image.to_owned(),
                backing: backing.clone(),
                source,
            }
        }
    })?;
    let meta = file.metadata().map_err(|source| ImageError::Os {
        path: backing.clone(),
        source,
    })?;
    if !meta.is_file() && !meta.file_type().is_block_device() {
        let source = io::Error::other("not a regular file or block device");
        return Err(ImageError::UnreadableBacking {
            image: image.to_owned(),
            backing,
            source,
        });
    }
    let key = (meta.dev(), meta.ino());
    if layers.iter().any(|layer| layer.key == key) {
        return Err(ImageError::BackingLoop {
            image: image.to_owned(),
            backing,
        });
    }
    let format = match header_format {
        Some(name) => ImageFormat::parse(name).map_err(|_| {
            ImageError::Unsupported(format!(
                "backing file {} of {} has format {name:?}; only raw and qcow2 are supported",
                backing.display(),
                image.display()
            ))
        })?,
        None => ImageFormat::probe(&file).map_err(|source| ImageError::Os {
            path: backing.clone(),
            source,
        })?,
    };
    if walk.lock_backing {
        let (held, unshared) = mirror_perms(false);
        walk.locks
            .push(ImageLock::acquire(&file, &backing, held, unshared)?);
    }
    open_layer(&backing, file, format, false, true, walk)
}
