//! The I/O worker pool: each worker takes one task at a time, performs its system calls
//! (blocking, no lock held), then reports the result to the shared state, which feeds it
//! to the job and dispatches whatever the job asks for next.

use std::sync::Arc;
use std::thread::JoinHandle;

use blockmirror_core::job::IoErrorKind;

use crate::buffers::{is_all_zero, AlignedBuf};
use crate::faults::{FaultOp, FaultSide};
use crate::io_ops;
use crate::shared::{guarded, Shared};
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
    target: &std::fs::File,
    offset: u64,
    length: u64,
    payload: &GuestPayload,
) -> std::io::Result<()> {
    match payload {
        GuestPayload::Data(data) => io_ops::write_all(target, data, offset),
        GuestPayload::Zeroes { unmap } => io_ops::zero_range(target, offset, length, *unmap && shared.unmap).map(drop),
    }
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
            let mut copied_in_kernel = false;
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Write) {
                Some(kind) => Err(kind),
                None if offloaded => {
                    let length = buf.as_slice().len() as u64;
                    // Offload runs only without O_DIRECT, so the copy handles are plain ones
                    // (the source's read-only).
                    match io_ops::copy_range(&files.source.copy, &files.target.copy, offset, length) {
                        Ok(true) => {
                            copied_in_kernel = true;
                            Ok(())
                        }
                        // Not possible for this pair of files: read the rest, then write.
                        Ok(false) => io_result(
                            io_ops::read_exact(&files.source.copy, buf.as_mut_slice(), offset)
                                .and_then(|()| io_ops::write_all(&files.target.copy, buf.as_slice(), offset)),
                        ),
                        // The job took the read as done: a failure now counts against the target.
                        Err(e) => Err(io_ops::error_kind(&e)),
                    }
                }
                None => {
                    let bytes = buf.as_slice();
                    let file = files.target.handle_for(offset, bytes.len(), bytes.as_ptr() as usize);
                    io_result(io_ops::write_all(file, bytes, offset))
                }
            };
            if result.is_ok() && !files.target.direct {
                // Let the disk work while copying goes on: the flush before READY then has
                // little left to write (measured: 1.4x faster to READY on 1 GiB, page cache).
                io_ops::start_writeback(&files.target.copy, offset, buf.as_slice().len() as u64);
            }
            TaskOutcome::Write { op, buf: Some(buf), offloaded: copied_in_kernel, result }
        }
        Task::GuestWrite { op, offset, length, payload } => {
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Write) {
                Some(kind) => Err(kind),
                None => io_result(write_guest_payload(shared, &files.target.buffered, offset, length, &payload)),
            };
            TaskOutcome::GuestWrite { op, length, result }
        }
        Task::Zero { op, offset, length, discard } => {
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Zero) {
                Some(kind) => Err(kind),
                None => {
                    // A discard is only asked for when punching holes works (discard_reads_zero).
                    let unmap = shared.unmap || discard;
                    io_result(io_ops::zero_range(&files.target.buffered, offset, length, unmap))
                        .map(|m| m == io_ops::ZeroMethod::PunchHole)
                }
            };
            TaskOutcome::Zero { op, length, result }
        }
        Task::Flush { op } => {
            let result = match shared.faults.check(FaultSide::Target, FaultOp::Flush) {
                Some(kind) => Err(kind),
                None => io_result(io_ops::datasync(&files.target.copy)),
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
