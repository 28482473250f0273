//! The I/O worker pool: each worker takes one task at a time, performs its system calls
//! (blocking, no lock held), then reports the result to the shared state, which feeds it
//! to the job and dispatches whatever the job asks for next.

use std::sync::Arc;
use std::thread::JoinHandle;

use blockmirror_core::job::IoErrorKind;

use crate::buffers::{is_all_zero, AlignedBuf};
use crate::faults::{FaultOp, FaultSide};
use crate::files::Side;
use crate::io_ops;
use crate::shared::{guarded, Shared};
use crate::target::TargetSide;
use crate::task::{CopyWritten, GuestPayload, ReadDone, Task, TaskOutcome, TaskReceiver};
use crate::zero_runs::{self, ZeroRuns};

/// Bytes a read probes of each piece before deciding to offload its copy: all-zero pieces
/// are still found exactly (a piece whose first block is zero is read in full and checked).
const OFFLOAD_PROBE_BYTES: usize = 4096;

fn io_result<T>(r: std::io::Result<T>) -> Result<T, IoErrorKind> {
    r.map_err(|e| io_ops::error_kind(&e))
}

/// Reads a copy range. With offload on, probes each piece and reads in full only those
/// whose first block is zero (the write copies the others in the kernel); otherwise reads
/// everything and finds its zero pieces.
fn read_or_probe(shared: &Shared, offset: u64, mut buf: AlignedBuf) -> Result<ReadDone, IoErrorKind> {
    let files = &shared.files;
    if let Some(image) = &files.source_image {
        // An image's guest view exists only through imago (never offloaded).
        io_result(image.read(buf.as_mut_slice(), offset))?;
        return Ok(full_read_done(buf, offset, shared.zero_piece));
    }
    let len = buf.as_slice().len();
    if shared.offload && len > OFFLOAD_PROBE_BYTES {
        return probe_pieces(shared, offset, buf);
    }
    let addr = buf.as_slice().as_ptr() as usize;
    let file = files.source.handle_for(offset, len, addr);
    io_result(io_ops::read_exact(file, buf.as_mut_slice(), offset))?;
    Ok(full_read_done(buf, offset, shared.zero_piece))
}

/// A read that brought the whole range into `buf`: its zero pieces, or all zero.
pub(crate) fn full_read_done(buf: AlignedBuf, offset: u64, piece: usize) -> ReadDone {
    let len = buf.as_slice().len();
    let runs = zero_runs::find_in(buf.as_slice(), offset, piece);
    let zero = runs.covers(len);
    let zero_runs = if zero { ZeroRuns::none() } else { runs };
    ReadDone { buf, zero, offloaded: false, zero_runs, bytes_read: len as u64 }
}

/// The offload read: the first block of each piece, and the whole of a piece whose first
/// block is zero (a zero piece, or data after a zero block: copied in the kernel anyway).
fn probe_pieces(shared: &Shared, offset: u64, mut buf: AlignedBuf) -> Result<ReadDone, IoErrorKind> {
    let source = &shared.files.source.copy;
    let len = buf.as_slice().len();
    let mut runs = ZeroRuns::none();
    let mut bytes_read = 0;
    for piece in zero_runs::pieces(offset, len, shared.zero_piece) {
        let at = offset + piece.start as u64;
        let bytes = &mut buf.as_mut_slice()[piece.clone()];
        let probe = bytes.len().min(OFFLOAD_PROBE_BYTES);
        io_result(io_ops::read_exact(source, &mut bytes[..probe], at))?;
        if !is_all_zero(&bytes[..probe]) {
            continue;
        }
        io_result(io_ops::read_exact(source, &mut bytes[probe..], at + probe as u64))?;
        bytes_read += bytes.len() as u64;
        if is_all_zero(bytes) {
            runs.push(piece);
        }
    }
    if runs.covers(len) {
        return Ok(ReadDone { buf, zero: true, offloaded: false, zero_runs: ZeroRuns::none(), bytes_read });
    }
    Ok(ReadDone { buf, zero: false, offloaded: true, zero_runs: runs, bytes_read })
}

/// Puts a guest write's payload on a target range: its bytes, or zeroes made by the zero
/// range calls (deallocating only when both the guest and the mirror's setup allow it).
pub(crate) fn write_guest_payload(
    shared: &Shared,
    target: &TargetSide,
    offset: u64,
    length: u64,
    payload: &GuestPayload,
) -> std::io::Result<()> {
    match payload {
        GuestPayload::Data(data) => target.write_all(data, offset),
        GuestPayload::Zeroes { unmap } => target.zero_range(offset, length, *unmap && shared.unmap).map(drop),
    }
}

/// Writes a copy range to a local target: in the kernel when the read only probed
/// (`offloaded`), else from `bytes` through the handle its alignment allows; then starts
/// writeback. Returns whether the kernel copied.
fn write_copy_local(
    shared: &Shared,
    target: &Side,
    offset: u64,
    bytes: &mut [u8],
    offloaded: bool,
) -> Result<bool, IoErrorKind> {
    let files = &shared.files;
    let mut copied_in_kernel = false;
    let length = bytes.len() as u64;
    let result = if offloaded {
        // Offload runs only without O_DIRECT, so the copy handles are plain ones
        // (the source's read-only).
        match io_ops::copy_range(&files.source.copy, &target.copy, offset, length) {
            Ok(true) => {
                copied_in_kernel = true;
                Ok(())
            }
            // Not possible for this pair of files: read the rest, then write.
            Ok(false) => io_result(
                io_ops::read_exact(&files.source.copy, bytes, offset)
                    .and_then(|()| io_ops::write_all(&target.copy, bytes, offset)),
            ),
            // The job took the read as done: a failure now counts against the target.
            Err(e) => Err(io_ops::error_kind(&e)),
        }
    } else {
        let file = target.handle_for(offset, bytes.len(), bytes.as_ptr() as usize);
        io_result(io_ops::write_all(file, bytes, offset))
    };
    if result.is_ok() && !target.direct {
        // Let the disk work while copying goes on: the flush before READY then has
        // little left to write (measured: 1.4x faster to READY on 1 GiB, page cache).
        io_ops::start_writeback(&target.copy, offset, length);
    }
    result.map(|()| copied_in_kernel)
}

/// Puts a copy's range on the target: its data pieces written (or copied in the kernel),
/// its zero pieces made zero, in order. A failure leaves the rest undone: the job copies
/// the whole range again.
fn write_copy(
    shared: &Shared,
    offset: u64,
    buf: &mut AlignedBuf,
    offloaded: bool,
    zero_runs: &ZeroRuns,
) -> Result<CopyWritten, IoErrorKind> {
    let target = &shared.files.target;
    let mut written = CopyWritten::default();
    for (range, zero) in zero_runs.segments(buf.as_slice().len()) {
        let at = offset + range.start as u64;
        let length = range.len() as u64;
        if zero {
            if let Some(kind) = shared.faults.check(FaultSide::Target, FaultOp::Zero) {
                return Err(kind);
            }
            if io_result(target.zero_range(at, length, shared.unmap))? {
                written.punched += length;
            }
            written.zeroed += length;
            continue;
        }
        let bytes = &mut buf.as_mut_slice()[range];
        let in_kernel = match target {
            TargetSide::File(side) => write_copy_local(shared, side, at, bytes, offloaded)?,
            // Offload is never on with a remote target: the buffer holds the range.
            TargetSide::Nbd(nbd) => io_result(nbd.write(at, bytes)).map(|()| false)?,
            TargetSide::Image(image) => io_result(image.write_copy(bytes, at)).map(|()| false)?,
        };
        written.data += length;
        if in_kernel {
            written.in_kernel += length;
        }
    }
    Ok(written)
}

/// Performs one task with blocking system calls (also the io_uring thread's fallback).
pub(crate) fn run(shared: &Shared, task: Task) -> TaskOutcome {
    let files = &shared.files;
    match task {
        Task::Read { op, offset, buf } => {
            let result = match shared.faults.check(FaultSide::Source, FaultOp::Read) {
                Some(kind) => Err(kind),
                None => read_or_probe(shared, offset, buf),
            };
            TaskOutcome::Read { op, result }
        }
        Task::Write { op, offset, mut buf, offloaded, zero_runs } => {
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Write) {
                Some(kind) => Err(kind),
                None => write_copy(shared, offset, &mut buf, offloaded, &zero_runs),
            };
            TaskOutcome::Write { op, buf: Some(buf), result }
        }
        Task::GuestWrite { op, offset, length, payload } => {
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Write) {
                Some(kind) => Err(kind),
                None => io_result(write_guest_payload(shared, &files.target, offset, length, &payload)),
            };
            TaskOutcome::GuestWrite { op, length, result }
        }
        Task::Zero { op, offset, length, discard } => {
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Zero) {
                Some(kind) => Err(kind),
                None => {
                    // A discard is only asked for when punching holes works (discard_reads_zero).
                    let unmap = shared.unmap || discard;
                    io_result(files.target.zero_range(offset, length, unmap))
                }
            };
            TaskOutcome::Zero { op, length, result }
        }
        Task::Flush { op } => {
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Flush) {
                Some(kind) => Err(kind),
                None => io_result(files.target.flush()),
            };
            TaskOutcome::Flush { op, result }
        }
    }
}

/// Starts `count` workers taking tasks from `tasks`. They exit when every sender is gone.
pub fn spawn(shared: &Arc<Shared>, tasks: TaskReceiver, count: usize) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..count.max(1))
        .map(|i| {
            let shared = Arc::clone(shared);
            let tasks = tasks.clone();
            std::thread::Builder::new().name(format!("blockmirror-io-{i}")).spawn(move || {
                guarded(&shared, "I/O worker", || {
                    // The I/O runs with no lock held; the queue itself needs none.
                    while let Ok(mut task) = tasks.recv() {
                        // Run what this task's completion caused next (a read's write) right here.
                        while let Some(follow_up) = shared.finish_task(run(&shared, task)) {
                            task = follow_up;
                        }
                    }
                })
            })
        })
        .collect()
}
