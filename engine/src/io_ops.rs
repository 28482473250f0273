//! The system calls behind each action, and the mapping of OS errors to the job's kinds.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use blockmirror_core::job::IoErrorKind;
use rustix::fs::FallocateFlags;
use rustix::io::Errno;

/// The job's error kind for an OS error (ENOSPC → no space, EROFS/EBADF → read-only,
/// EIO → io, anything else by errno).
pub fn error_kind(err: &io::Error) -> IoErrorKind {
    match err.raw_os_error() {
        Some(errno) => IoErrorKind::from_errno(errno),
        // Errors without an errno come from std itself, e.g. a read that hit the end of file.
        None if err.kind() == io::ErrorKind::UnexpectedEof => IoErrorKind::Io,
        None => IoErrorKind::Io,
    }
}

/// Reads exactly `buf.len()` bytes at `offset`; a short read (the file shrank) is an error.
pub fn read_exact(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// Writes all of `buf` at `offset`.
pub fn write_all(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(buf, offset)
}

/// Deallocate, keeping the file size: the range then reads as zeroes.
const PUNCH_HOLE: FallocateFlags = FallocateFlags::PUNCH_HOLE.union(FallocateFlags::KEEP_SIZE);
/// Zeroes (allocated or unwritten extents), keeping the file size.
const ZERO_RANGE: FallocateFlags = FallocateFlags::ZERO_RANGE.union(FallocateFlags::KEEP_SIZE);

/// Whether an fallocate error means "this file or filesystem cannot do that mode".
fn unsupported(err: Errno) -> bool {
    matches!(err, Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL)
}

/// How a zero range was produced (for statistics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroMethod {
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`: deallocated, reads zero.
    PunchHole,
    /// `FALLOC_FL_ZERO_RANGE`: allocated (or unwritten) zeroes.
    ZeroRange,
    /// Plain writes of a zero buffer (the fallback).
    Written,
}

/// Makes `[offset, offset+length)` of `file` read as zeroes. With `unmap`, tries to
/// deallocate (punch a hole) first; then `ZERO_RANGE`; then writes zeroes.
pub fn zero_range(file: &File, offset: u64, length: u64, unmap: bool) -> io::Result<ZeroMethod> {
    if unmap {
        match rustix::fs::fallocate(file, PUNCH_HOLE, offset, length) {
            Ok(()) => return Ok(ZeroMethod::PunchHole),
            Err(e) if unsupported(e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match rustix::fs::fallocate(file, ZERO_RANGE, offset, length) {
        Ok(()) => return Ok(ZeroMethod::ZeroRange),
        Err(e) if unsupported(e) => {}
        Err(e) => return Err(e.into()),
    }
    write_zeroes(file, offset, length)?;
    Ok(ZeroMethod::Written)
}

/// Writes zeroes with plain writes, 1 MiB at a time.
pub fn write_zeroes(file: &File, offset: u64, length: u64) -> io::Result<()> {
    let zeroes = vec![0u8; length.min(1 << 20) as usize];
    let mut done = 0;
    while done < length {
        let n = (length - done).min(zeroes.len() as u64) as usize;
        file.write_all_at(&zeroes[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Copies `[offset, offset+length)` from `source` to the same range of `target` inside the
/// kernel (`copy_file_range`: no user-space copy). `Ok(false)` when this pair of files
/// cannot do it (another filesystem, an old kernel): the caller falls back to read + write.
pub fn copy_range(source: &File, target: &File, offset: u64, length: u64) -> io::Result<bool> {
    let mut done = 0u64;
    while done < length {
        // Explicit offsets: the files' own positions are neither used nor moved.
        let mut off_in = offset + done;
        let mut off_out = off_in;
        let rest = usize::try_from(length - done).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(source, Some(&mut off_in), target, Some(&mut off_out), rest) {
            // The source ended early: it shrank under the mirror.
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source shorter than expected")),
            Ok(n) => done += n as u64,
            Err(Errno::INTR) => continue,
            // Only before the first byte: a later failure is a real error of this copy.
            Err(Errno::XDEV | Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS) if done == 0 => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Starts writeback of a range without waiting for it (`sync_file_range(WRITE)`), so the
/// disk works while the copy goes on and the flush before READY has little left to do.
/// Advisory: an error here changes nothing (the flush reports real write errors).
pub fn start_writeback(file: &File, offset: u64, length: u64) {
    // rustix has no wrapper for sync_file_range, so this calls libc directly.
    // SAFETY: the call takes only integers (no pointers, so no memory it could touch), and
    // the descriptor stays open for the call's duration because `file` is borrowed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset as libc::off64_t, length as libc::off64_t, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Flushes the file's data to stable storage.
pub fn datasync(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// Whether punching a hole in this writable regular file works. The probe lies past the
/// end of file (with KEEP_SIZE), so it changes nothing. Block devices are never probed: a
/// probe there would have to touch real data.
pub fn punch_hole_supported(file: &File, is_block_device: bool) -> bool {
    if is_block_device {
        return false;
    }
    let len = match file.metadata() {
        Ok(m) => m.len(),
        Err(_) => return false,
    };
    rustix::fs::fallocate(file, PUNCH_HOLE, len, 4096).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> (std::path::PathBuf, File) {
        let dir = std::env::temp_dir().join(format!("bm-io-ops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("img");
        std::fs::write(&path, bytes).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        (dir, file)
    }

    #[test]
    fn zero_range_reads_zero_by_whichever_method() {
        let (dir, file) = temp_file("zero", &[9u8; 64 << 10]);
        for unmap in [true, false] {
            write_all(&file, &[9u8; 64 << 10], 0).unwrap();
            let method = zero_range(&file, 4096, 16384, unmap).unwrap();
            assert!(unmap || method != ZeroMethod::PunchHole, "no hole without unmap");
            let mut back = vec![1u8; 64 << 10];
            read_exact(&file, &mut back, 0).unwrap();
            assert!(back[..4096].iter().all(|&b| b == 9));
            assert!(back[4096..20480].iter().all(|&b| b == 0));
            assert!(back[20480..].iter().all(|&b| b == 9));
        }
        assert_eq!(file.metadata().unwrap().len(), 64 << 10, "the size is kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn copy_range_copies_in_the_kernel_or_says_it_cannot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (dir_a, source) = temp_file("copy-a", &data);
        let (dir_b, target) = temp_file("copy-b", &vec![0u8; data.len()]);
        if copy_range(&source, &target, 1000, 50_000).unwrap() {
            let mut back = vec![0u8; data.len()];
            read_exact(&target, &mut back, 0).unwrap();
            assert!(back[..1000].iter().all(|&b| b == 0));
            assert_eq!(back[1000..51_000], data[1000..51_000]);
            assert!(back[51_000..].iter().all(|&b| b == 0));
        }
        // Past the source's end: the source "shrank".
        let err = copy_range(&source, &target, 99_000, 4096);
        assert!(err.is_err() || !copy_range(&source, &target, 0, 1).unwrap(), "{err:?}");
        std::fs::remove_dir_all(&dir_a).unwrap();
        std::fs::remove_dir_all(&dir_b).unwrap();
    }
}
