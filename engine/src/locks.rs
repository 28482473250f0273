//! Image locks that QEMU understands: the byte-range locks QEMU's file driver takes on an
//! image, so that blockmirror and QEMU (a VM, `qemu-nbd`, `qemu-io`, `qemu-img`) refuse
//! each other's conflicting use of one image.
//!
//! The protocol (QEMU's, kept byte for byte): every lock is a *read* lock of one byte, held
//! on the open file description (an OFD lock, `F_OFD_SETLK`), so it lasts as long as that
//! description: a `dup`ed descriptor keeps it, and it goes when the last descriptor of the
//! description closes (dropping an [`ImageLock`] releases nothing). Each permission has a
//! bit ([`Perm`]): consistent read 0, write 1, write-unchanged 2, resize 3. A user holding
//! permission P locks byte `100 + P`; one that refuses to share P with others locks byte
//! `200 + P`. Read locks never conflict with each other, so the locks themselves never
//! fail; the conflict is found by asking (`F_OFD_GETLK` with a write-lock probe, which
//! reports any other description's lock on the byte):
//! - before taking P: nobody may hold `200 + P` (nobody refuses to share it);
//! - before refusing to share P: nobody may hold `100 + P` (nobody has it).
//!
//! The bytes are locked first and checked afterwards, as QEMU does: of two users starting
//! at once, the later check sees the earlier lock, so at least one of them backs off. On a
//! refusal, every byte taken here is unlocked again.
//!
//! Locks of two descriptions conflict even inside one process: a program that opens an
//! image twice (a server holding it, then a mirror of it) must lock it on one of them only.
//!
//! blockmirror's choice ([`mirror_perms`]): a side the mirror writes (the target, and the
//! source when guest writes go through the mirror) holds consistent-read and write and
//! refuses to share write and resize (bytes 100, 101, 201, 203). So a QEMU, `qemu-nbd` or
//! `qemu-io` opening the image read-write is refused, and so is `qemu-img convert` reading
//! it without `-U` (it refuses to share write); blockmirror in turn refuses an image such
//! a program writes. A read-only source (no guest writes through the mirror) holds consistent-read
//! only and refuses to share write and resize (100, 201, 203): an outside writer would
//! change the source behind the mirror's back, and the target would silently differ.
//! Readers that share writes (`qemu-img info`, `qemu-img compare`, anything with `-U`)
//! work either way.
//!
//! A filesystem without OFD locks (the kernel answers EINVAL, ENOTSUP or ENOLCK, as some
//! network filesystems do) is used without locks, as QEMU does (with a warning):
//! [`ImageLock::unsupported`] says so.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// One permission of QEMU's block layer that its image locks stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Reading, expecting the data not to change unseen (bit 0).
    ConsistentRead,
    /// Writing (bit 1).
    Write,
    /// Writing data that leaves the disk's contents the same (bit 2).
    WriteUnchanged,
    /// Changing the image's size (bit 3).
    Resize,
}

impl Perm {
    /// Every permission, by bit.
    pub const ALL: [Perm; 4] = [Perm::ConsistentRead, Perm::Write, Perm::WriteUnchanged, Perm::Resize];

    /// The permission's bit: its lock bytes are `100 + bit` (held) and `200 + bit` (not shared).
    pub const fn bit(self) -> u8 {
        match self {
            Perm::ConsistentRead => 0,
            Perm::Write => 1,
            Perm::WriteUnchanged => 2,
            Perm::Resize => 3,
        }
    }

    /// The name QEMU's messages use ("Failed to get \"write\" lock").
    pub const fn name(self) -> &'static str {
        match self {
            Perm::ConsistentRead => "consistent read",
            Perm::Write => "write",
            Perm::WriteUnchanged => "write unchanged",
            Perm::Resize => "resize",
        }
    }

    /// The byte locked by a user that holds this permission.
    pub const fn held_byte(self) -> u64 {
        HELD_BASE + self.bit() as u64
    }

    /// The byte locked by a user that refuses to share this permission.
    pub const fn unshared_byte(self) -> u64 {
        UNSHARED_BASE + self.bit() as u64
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// First byte of the "holds the permission" locks.
const HELD_BASE: u64 = 100;
/// First byte of the "refuses to share the permission" locks.
const UNSHARED_BASE: u64 = 200;

/// A set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perms(u8);

impl Perms {
    /// No permission.
    pub const NONE: Perms = Perms(0);

    /// The set holding `perm` only.
    pub const fn of(perm: Perm) -> Perms {
        Perms(1 << perm.bit())
    }

    /// This set and `perm`.
    pub const fn with(self, perm: Perm) -> Perms {
        Perms(self.0 | 1 << perm.bit())
    }

    /// Whether `perm` is in the set.
    pub const fn contains(self, perm: Perm) -> bool {
        self.0 & (1 << perm.bit()) != 0
    }

    /// The permissions in the set, by bit.
    pub fn iter(self) -> impl Iterator<Item = Perm> {
        Perm::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

/// What blockmirror holds and refuses to share on one side: consistent-read, plus write
/// when the mirror writes that side; write and resize are never shared (see the module
/// docs for why).
pub fn mirror_perms(writes: bool) -> (Perms, Perms) {
    let read = Perms::of(Perm::ConsistentRead);
    let held = if writes { read.with(Perm::Write) } else { read };
    (held, Perms::of(Perm::Write).with(Perm::Resize))
}

/// Why an image could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another user holds a permission blockmirror must not share.
    #[error(
        "{} is in use by another process (it holds the \"{perm}\" permission that blockmirror \
         needs to be exclusive): stop it or have it open the image read-only, then retry",
        path.display()
    )]
    HeldElsewhere {
        /// The image.
        path: PathBuf,
        /// The permission the other user holds.
        perm: Perm,
    },
    /// Another user refuses to share a permission blockmirror needs.
    #[error(
        "{} is in use by another process (it does not share the \"{perm}\" permission that \
         blockmirror needs): stop it, then retry",
        path.display()
    )]
    NotShared {
        /// The image.
        path: PathBuf,
        /// The permission the other user keeps to itself.
        perm: Perm,
    },
    /// The OS refused a lock call for another reason than missing support.
    #[error("cannot lock {}: {source}", path.display())]
    Os {
        /// The image.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// The locks taken on one open file description. They belong to the description, not to
/// this value: dropping it releases nothing; closing the description's last descriptor does.
#[derive(Debug)]
pub struct ImageLock {
    path: PathBuf,
    held: Perms,
    unshared: Perms,
    unsupported: Option<io::Error>,
}

impl ImageLock {
    /// Locks `file` (an open description of the image at `path`, which only names it in
    /// messages) as holding `held` and refusing to share `unshared`, after checking that no
    /// other description conflicts (see the module docs). On a filesystem without OFD locks
    /// nothing is locked and [`unsupported`](Self::unsupported) tells why.
    pub fn acquire(file: &File, path: &Path, held: Perms, unshared: Perms) -> Result<ImageLock, LockError> {
        let bytes: Vec<u64> = held
            .iter()
            .map(Perm::held_byte)
            .chain(unshared.iter().map(Perm::unshared_byte))
            .collect();
        let os = |source: io::Error| LockError::Os {
            path: path.to_owned(),
            source,
        };
        for (taken, &byte) in bytes.iter().enumerate() {
            if let Err(e) = set_lock(file, byte, libc::F_RDLCK as libc::c_short) {
                unlock(file, &bytes[..taken]);
                if lacks_ofd_locks(&e) {
                    return Ok(ImageLock {
                        path: path.to_owned(),
                        held: Perms::NONE,
                        unshared: Perms::NONE,
                        unsupported: Some(e),
                    });
                }
                // A read lock only fails on someone's write lock: QEMU never takes one, but
                // whoever did keeps the byte from us.
                if is_conflict(&e) {
                    let perm = Perm::ALL[(byte % 100) as usize];
                    return Err(if byte >= UNSHARED_BASE {
                        LockError::HeldElsewhere {
                            path: path.to_owned(),
                            perm,
                        }
                    } else {
                        LockError::NotShared {
                            path: path.to_owned(),
                            perm,
                        }
                    });
                }
                return Err(os(e));
            }
        }
        if let Err(e) = check(file, path, held, unshared) {
            unlock(file, &bytes);
            return Err(e);
        }
        Ok(ImageLock {
            path: path.to_owned(),
            held,
            unshared,
            unsupported: None,
        })
    }

    /// The permissions held (none when locks are unsupported).
    pub fn held(&self) -> Perms {
        self.held
    }

    /// The permissions refused to others (none when locks are unsupported).
    pub fn unshared(&self) -> Perms {
        self.unshared
    }

    /// Why nothing is locked: the filesystem does not support OFD locks.
    pub fn unsupported(&self) -> Option<&io::Error> {
        self.unsupported.as_ref()
    }

    /// A warning for a user when the image could not be locked, as QEMU prints one.
    pub fn warning(&self) -> Option<String> {
        self.unsupported.as_ref().map(|e| {
            format!(
                "{} is not locked: its filesystem does not support open file description locks ({e}); \
                 nothing stops another program from using it meanwhile",
                self.path.display()
            )
        })
    }
}

/// The conflict checks, in QEMU's order: the permissions to take, then those to refuse.
fn check(file: &File, path: &Path, held: Perms, unshared: Perms) -> Result<(), LockError> {
    let os = |source: io::Error| LockError::Os {
        path: path.to_owned(),
        source,
    };
    for perm in held.iter() {
        if locked_elsewhere(file, perm.unshared_byte()).map_err(os)? {
            return Err(LockError::NotShared {
                path: path.to_owned(),
                perm,
            });
        }
    }
    for perm in unshared.iter() {
        if locked_elsewhere(file, perm.held_byte()).map_err(os)? {
            return Err(LockError::HeldElsewhere {
                path: path.to_owned(),
                perm,
            });
        }
    }
    Ok(())
}

/// Whether an errno means "this filesystem has no OFD locks".
fn lacks_ofd_locks(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | libc::ENOLCK))
}

/// Whether an errno of `F_OFD_SETLK` means another description's lock is in the way.
fn is_conflict(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES))
}

fn one_byte(byte: u64, kind: libc::c_short) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = byte as libc::off_t;
    lock.l_len = 1;
    // `l_pid` stays 0, as OFD lock calls require.
    lock
}

fn set_lock(file: &File, byte: u64, kind: libc::c_short) -> io::Result<()> {
    let lock = one_byte(byte, kind);
    // SAFETY: F_OFD_SETLK reads the `flock` passed by pointer, which lives across the call;
    // the descriptor stays open because `file` is borrowed.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock as *const libc::flock) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unlock(file: &File, bytes: &[u64]) {
    for &byte in bytes {
        // Best effort: the locks go with the description anyway.
        let _ = set_lock(file, byte, libc::F_UNLCK as libc::c_short);
    }
}

/// Whether another open file description holds a lock on `byte` (a write-lock probe
/// conflicts with any lock; this description's own locks never count).
fn locked_elsewhere(file: &File, byte: u64) -> io::Result<bool> {
    let mut lock = one_byte(byte, libc::F_WRLCK as libc::c_short);
    // SAFETY: F_OFD_GETLK reads and rewrites the `flock` passed by pointer, which lives
    // across the call; the descriptor stays open because `file` is borrowed.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock as *mut libc::flock) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

/// Whether another open file description than `file`'s holds a lock on QEMU's byte for
/// `perm` (`unshared`: the "refuses to share" byte, else the "holds" byte): for tests and
/// diagnostics.
pub fn probe(file: &File, perm: Perm, unshared: bool) -> io::Result<bool> {
    locked_elsewhere(
        file,
        if unshared {
            perm.unshared_byte()
        } else {
            perm.held_byte()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("bm-locks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        (dir, path)
    }

    fn open(path: &Path) -> File {
        File::options().read(true).write(true).open(path).unwrap()
    }

    #[test]
    fn the_bytes_are_qemus() {
        let (held, unshared) = mirror_perms(true);
        let held: Vec<u64> = held.iter().map(Perm::held_byte).collect();
        let unshared: Vec<u64> = unshared.iter().map(Perm::unshared_byte).collect();
        assert_eq!((held, unshared), (vec![100, 101], vec![201, 203]));
        let (read_only, _) = mirror_perms(false);
        assert_eq!(read_only.iter().collect::<Vec<_>>(), vec![Perm::ConsistentRead]);
    }

    #[test]
    fn a_second_writer_is_refused_until_the_first_description_closes() {
        let (dir, path) = image("second");
        let (held, unshared) = mirror_perms(true);
        let first = open(&path);
        let lock = ImageLock::acquire(&first, &path, held, unshared).unwrap();
        assert!(lock.unsupported().is_none(), "tmp has OFD locks");
        let other = open(&path);
        assert!(probe(&other, Perm::Write, false).unwrap());
        assert!(probe(&other, Perm::Write, true).unwrap());
        assert!(!probe(&other, Perm::Resize, false).unwrap());
        match ImageLock::acquire(&other, &path, held, unshared) {
            Err(e @ LockError::NotShared { perm: Perm::Write, .. }) => {
                assert!(e.to_string().contains("\"write\""), "{e}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // The refusal unlocked what it had taken: the first user sees nothing of it.
        assert!(!probe(&first, Perm::ConsistentRead, false).unwrap());
        // A dup keeps the description (and its locks) alive after the original closes.
        let dup = first.try_clone().unwrap();
        drop(first);
        assert!(ImageLock::acquire(&other, &path, held, unshared).is_err());
        drop(dup);
        ImageLock::acquire(&other, &path, held, unshared).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_holder_of_write_is_named_to_one_that_would_refuse_it() {
        let (dir, path) = image("holder");
        // Like `qemu-nbd`: holds read and write, shares write, keeps resize.
        let peer = open(&path);
        let peer_held = Perms::of(Perm::ConsistentRead).with(Perm::Write);
        ImageLock::acquire(&peer, &path, peer_held, Perms::of(Perm::Resize)).unwrap();
        let mine = open(&path);
        let (held, unshared) = mirror_perms(true);
        let err = ImageLock::acquire(&mine, &path, held, unshared).unwrap_err();
        assert!(
            matches!(err, LockError::HeldElsewhere { perm: Perm::Write, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("it holds the \"write\" permission"), "{err}");
        // A reader that shares everything is no conflict.
        let reader = File::open(&path).unwrap();
        ImageLock::acquire(&reader, &path, Perms::of(Perm::ConsistentRead), Perms::NONE).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
