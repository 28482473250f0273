//! The system calls behind each action, and the mapping of OS errors to the job's kinds.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use blockmirror_core::job::IoErrorKind;

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

fn fallocate(file: &File, mode: libc::c_int, offset: u64, length: u64) -> io::Result<()> {
    // SAFETY: fallocate on a valid fd has no memory-safety preconditions.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as libc::off_t, length as libc::off_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether an fallocate error means "this file or filesystem cannot do that mode".
fn unsupported(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL))
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
        match fallocate(file, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, length) {
            Ok(()) => return Ok(ZeroMethod::PunchHole),
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(e),
        }
    }
    match fallocate(file, libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE, offset, length) {
        Ok(()) => return Ok(ZeroMethod::ZeroRange),
        Err(e) if unsupported(&e) => {}
        Err(e) => return Err(e),
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
        let mut off_in = (offset + done) as libc::loff_t;
        let mut off_out = off_in;
        // SAFETY: both fds are valid; the offset pointers point to live locals.
        let r = unsafe {
            libc::copy_file_range(
                source.as_raw_fd(),
                &mut off_in,
                target.as_raw_fd(),
                &mut off_out,
                (length - done) as usize,
                0,
            )
        };
        if r < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EXDEV) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
                    if done == 0 =>
                {
                    return Ok(false)
                }
                _ => return Err(err),
            }
        }
        if r == 0 {
            // The source ended early: it shrank under the mirror.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source shorter than expected"));
        }
        done += r as u64;
    }
    Ok(true)
}

/// Starts writeback of a range without waiting for it (`sync_file_range(WRITE)`), so the
/// disk works while the copy goes on and the flush before READY has little left to do.
/// Advisory: an error here changes nothing (the flush reports real write errors).
pub fn start_writeback(file: &File, offset: u64, length: u64) {
    // SAFETY: sync_file_range on a valid fd has no memory-safety preconditions.
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
    fallocate(file, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, len, 4096).is_ok()
}
