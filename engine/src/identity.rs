//! Which storage an open handle reaches, so the mirror can refuse to copy a disk onto itself.
//!
//! Paths cannot tell: a hard link, a bind mount or a second device node names the same
//! storage under another path, and a loop device reads and writes another file. So the
//! check works on the open file descriptors (fstat and an ioctl, never a second lookup of
//! the path, which could have changed since the open) and gives each handle a set of
//! [`StorageKey`]s; two handles reach the same storage when their sets share a key:
//!
//! - every handle: its inode, `(st_dev, st_ino)` (hard links and bind mounts);
//! - a block device: its device number `st_rdev` (two nodes of one device);
//! - a loop device: the inode of its backing file, `(lo_device, lo_inode)` from
//!   `LOOP_GET_STATUS64`, and the backing device's `lo_rdevice` when it is a block device
//!   (a loop over the other side's file, or two loops over one file).
//!
//! Not seen through (the kernel does not say, or only with more digging): loops over loops,
//! device-mapper and md stacks, and a partition against its whole disk.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// One fact that identifies storage a handle reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKey {
    /// A file by `(st_dev, st_ino)`.
    Inode {
        /// The filesystem's device number.
        dev: u64,
        /// The inode number.
        ino: u64,
    },
    /// A block device by its device number.
    Device {
        /// `st_rdev`.
        rdev: u64,
    },
}

/// `struct loop_info64` of `<linux/loop.h>` (the libc crate does not define it).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `LOOP_GET_STATUS64` of `<linux/loop.h>`.
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;

/// The backing file of a loop device as `(lo_device, lo_inode, lo_rdevice)`, or `None` when
/// `file` is no loop device, or one with nothing attached.
fn loop_backing(file: &File) -> Option<(u64, u64, u64)> {
    let mut info = std::mem::MaybeUninit::<LoopInfo64>::zeroed();
    // SAFETY: LOOP_GET_STATUS64 writes at most one `struct loop_info64`, whose layout
    // `LoopInfo64` repeats (size checked in the tests), into the buffer we own; on any
    // other device the ioctl fails (ENOTTY/EINVAL/ENXIO) without writing. The fd is open
    // for the whole call because `file` is borrowed.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_GET_STATUS64 as _, info.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: zero-initialised, so every field is a valid integer even if the kernel wrote less.
    let info = unsafe { info.assume_init() };
    Some((info.lo_device, info.lo_inode, info.lo_rdevice))
}

/// The keys of the storage behind an open handle (see the module doc).
pub fn storage_keys(file: &File) -> io::Result<Vec<StorageKey>> {
    // `File::metadata` is fstat on the descriptor, not a path lookup.
    let meta = file.metadata()?;
    let mut keys = vec![StorageKey::Inode { dev: meta.dev(), ino: meta.ino() }];
    if meta.file_type().is_block_device() {
        keys.push(StorageKey::Device { rdev: meta.rdev() });
        if let Some((dev, ino, rdev)) = loop_backing(file) {
            keys.push(StorageKey::Inode { dev, ino });
            if rdev != 0 {
                keys.push(StorageKey::Device { rdev });
            }
        }
    }
    Ok(keys)
}

/// Whether two handles reach the same storage.
pub fn same_storage(a: &File, b: &File) -> io::Result<bool> {
    let (a, b) = (storage_keys(a)?, storage_keys(b)?);
    Ok(a.iter().any(|k| b.contains(k)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("bm-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn loop_info_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
    }

    #[test]
    fn hard_link_is_the_same_storage_and_a_copy_is_not() {
        let dir = temp_dir("link");
        let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
        File::create(&a).unwrap().write_all(b"data").unwrap();
        std::fs::hard_link(&a, &b).unwrap();
        std::fs::copy(&a, &c).unwrap();
        let (fa, fb, fc) = (File::open(&a).unwrap(), File::open(&b).unwrap(), File::open(&c).unwrap());
        assert!(same_storage(&fa, &fb).unwrap());
        assert!(same_storage(&fa, &fa).unwrap());
        assert!(!same_storage(&fa, &fc).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_regular_file_has_only_its_inode() {
        let dir = temp_dir("plain");
        let a = dir.join("a");
        File::create(&a).unwrap();
        let keys = storage_keys(&File::open(&a).unwrap()).unwrap();
        assert!(matches!(keys.as_slice(), [StorageKey::Inode { .. }]));
        assert!(loop_backing(&File::open(&a).unwrap()).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
