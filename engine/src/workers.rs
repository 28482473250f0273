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
use crate::task::{GuestPayload, ReadDone, Task, TaskOutcome, TaskReceiver};

/// Bytes a read probes before deciding to offload the copy: all-zero ranges are still found
/// exactly (a range whose first block is zero is read in full and checked).
const OFFLOAD_PROBE_BYTES: usize = 4096;

fn io_result<T>(r: std::io::Result<T>) -> Result<T, IoErrorKind> {
    r.map_err(|e| io_ops::error_kind(&e))
}

/// Reads a copy range. With offload on, reads only the first block when it holds data (the
/// write will copy in the kernel); otherwise reads everything and checks for zeroes.
fn read_or_probe(shared: &Shared, offset: u64, mut buf: AlignedBuf) -> Result<ReadDone, IoErrorKind> {
    let files = &shared.files;
    if let Some(image) = &files.source_image {
        // An image's guest view exists only through imago (never offloaded).
        io_result(image.read(buf.as_mut_slice(), offset))?;
        let zero = is_all_zero(buf.as_slice());
        return Ok(ReadDone { buf, zero, offloaded: false });
    }
    let len = buf.as_slice().len();
    if shared.offload && len > OFFLOAD_PROBE_BYTES {
        let probe = &mut buf.as_mut_slice()[..OFFLOAD_PROBE_BYTES];
        io_result(io_ops::read_exact(&files.source.copy, probe, offset))?;
        if !is_all_zero(probe) {
            return Ok(ReadDone { buf, zero: false, offloaded: true });
        }
    }
    let addr = buf.as_slice().as_ptr() as usize;
    let file = files.source.handle_for(offset, len, addr);
    io_result(io_ops::read_exact(file, buf.as_mut_slice(), offset))?;
    let zero = is_all_zero(buf.as_slice());
    Ok(ReadDone { buf, zero, offloaded: false })
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
/// (`offloaded`), else from `buf` through the handle its alignment allows; then starts
/// writeback. Returns whether the kernel copied.
fn write_copy_local(
    shared: &Shared,
    target: &Side,
    offset: u64,
    buf: &mut AlignedBuf,
    offloaded: bool,
) -> Result<bool, IoErrorKind> {
    let files = &shared.files;
    let mut copied_in_kernel = false;
    let result = if offloaded {
        let length = buf.as_slice().len() as u64;
        // Offload runs only without O_DIRECT, so the copy handles are plain ones
        // (the source's read-only).
        match io_ops::copy_range(&files.source.copy, &target.copy, offset, length) {
            Ok(true) => {
                copied_in_kernel = true;
                Ok(())
            }
            // Not possible for this pair of files: read the rest, then write.
            Ok(false) => io_result(
                io_ops::read_exact(&files.source.copy, buf.as_mut_slice(), offset)
                    .and_then(|()| io_ops::write_all(&target.copy, buf.as_slice(), offset)),
            ),
            // The job took the read as done: a failure now counts against the target.
            Err(e) => Err(io_ops::error_kind(&e)),
        }
    } else {
        let bytes = buf.as_slice();
        let file = target.handle_for(offset, bytes.len(), bytes.as_ptr() as usize);
        io_result(io_ops::write_all(file, bytes, offset))
    };
    if result.is_ok() && !target.direct {
        // Let the disk work while copying goes on: the flush before READY then has
        // little left to write (measured: 1.4x faster to READY on 1 GiB, page cache).
        io_ops::start_writeback(&target.copy, offset, buf.as_slice().len() as u64);
    }
    result.map(|()| copied_in_kernel)
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
        Task::Write { op, offset, mut buf, offloaded } => {
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Write) {
                Some(kind) => Err(kind),
                None => match &files.target {
                    TargetSide::File(target) => write_copy_local(shared, target, offset, &mut buf, offloaded),
                    // Offload is never on with a remote target: the buffer holds the range.
                    TargetSide::Nbd(nbd) => io_result(nbd.write(offset, buf.as_slice())).map(|()| false),
                    TargetSide::Image(image) => io_result(image.write_copy(buf.as_slice(), offset)).map(|()| false),
                },
            };
            let copied_in_kernel = matches!(result, Ok(true));
            TaskOutcome::Write { op, buf: Some(buf), offloaded: copied_in_kernel, result: result.map(drop) }
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
